# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Kotauth tenant archives against the Kotauth admin API stand-in, over HTTP on 127.0.0.1:
export of several tenants into a set, import as new tenants, the version gate, and the offline
verification of bkp1 payloads by backup_set."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from kotauth_support import connection, failed as _failed, ok as _ok, start_kotauth_standin
from recovery_support import kill_tree, reseal

PASSPHRASE = 'kotauth-archive-pass-%s' % os.urandom(8).hex()
SEED = ('acme:30', 'globex:12', 'broken:5', 'tampered:4')


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    server = start_kotauth_standin(tmp_path_factory.mktemp('kotauth-standin'), seed=SEED)
    yield server
    server.stop()


def _connection(standin, **extra):
    return connection(standin, PASSPHRASE, **extra)


@pytest.fixture(scope='module')
def exported(tmp_path_factory, module_runner, standin, keys):
    """A set with acme, globex, broken and tampered, exported in two runs: the first fails for the
    two faulty tenants and keeps the others, the second (faults cleared) completes it."""
    set_dir = tmp_path_factory.mktemp('kotauth-sets') / 'kotauth' / '20260112T030000Z'
    _ok(module_runner('backup_set', path=set_dir, kind='kotauth'))
    standin.control('fault', {'broken': 'fail', 'tampered': 'tamper'})
    slugs = ['acme', 'globex', 'broken', 'tampered']
    first = module_runner('kotauth_export', set_dir=set_dir, slugs=slugs, recipients=[keys.age_recipient],
                          **_connection(standin))
    refused = module_runner('backup_set', path=set_dir, state='finalized')
    kept = sorted(os.listdir(str(set_dir / 'kotauth')))
    standin.control('fault', {'broken': None, 'tampered': None})
    second = _ok(module_runner('kotauth_export', set_dir=set_dir, slugs=slugs, recipients=[keys.age_recipient],
                               **_connection(standin)))
    final = _ok(module_runner('backup_set', path=set_dir, state='finalized'))
    return {'set_dir': set_dir, 'first': first, 'refused': refused, 'kept': kept, 'second': second, 'final': final}


def test_one_failing_tenant_fails_the_run_and_the_others_stay(exported):
    first = _failed(exported['first'])
    assert 'failed for 2 of 4' in first['msg']
    assert 'broken: Kotauth POST /admin/api/v1/tenants/broken/export failed with HTTP 500' in first['msg']
    assert 'tampered: the archive Kotauth sent for tenant tampered does not open' in first['msg']
    assert 'wrong passphrase' in first['msg']
    assert first['tenants']['acme']['changed'] and first['tenants']['globex']['changed']
    assert exported['kept'] == ['acme.bkp1.zst.age', 'globex.bkp1.zst.age']
    # the failed tenants stay recorded as started: the set cannot look complete
    refused = _failed(exported['refused'])
    assert 'kotauth-broken' in refused['msg'] and 'kotauth-tampered' in refused['msg']
    second = exported['second']
    assert second['tenants']['acme'] == {'changed': False, 'payload': 'kotauth/acme.bkp1.zst.age',
                                         'msg': 'the set already holds this tenant'}
    assert second['tenants']['broken']['changed'] and second['tenants']['tampered']['changed']


def test_metadata_holds_safe_facts_only(exported, keys):
    metadata = json.loads((exported['set_dir'] / 'metadata.json').read_text())
    acme = metadata['kotauth']['tenants']['acme']
    # Kotauth's exportVersion is a string (BackupExportV1.CURRENT_EXPORT_VERSION)
    assert acme['schema_version'] == 42 and acme['kotauth_version'] == '1.4.2' and acme['export_version'] == '1.0.0'
    assert acme['counts']['users'] == 30 and acme['counts']['applications'] == 3
    assert 'applications.clientSecret' in acme['redacted_fields'] and 'signingKeys' in acme['redacted_fields']
    assert acme['exported_at'].endswith('Z')
    payload = metadata['payloads']['kotauth/acme.bkp1.zst.age']
    assert payload['content'] == 'kotauth-bkp1' and payload['recipients'] == [keys.age_recipient]
    # the stored archive is Kotauth's envelope inside age: the recorded digest is that of the envelope
    envelope = _envelope(exported['set_dir'] / 'kotauth' / 'acme.bkp1.zst.age', keys)
    assert envelope.startswith(b'bkp1.') and envelope.count(b'.') == 3
    assert hashlib.sha256(envelope).hexdigest() == acme['envelope_sha256'] == payload['envelope']['sha256']
    text = json.dumps(metadata)
    assert PASSPHRASE not in text and 'passwordHash' not in text and '$2a$' not in text


def _envelope(path, keys):
    age = subprocess.run(['age', '-d', '-i', str(keys.age_identity), str(path)], stdout=subprocess.PIPE, check=True)
    return subprocess.run(['zstd', '-d', '-c', '-q'], input=age.stdout, stdout=subprocess.PIPE, check=True).stdout


def _import(run_module, exported, standin, keys, check_mode=False, **extra):
    args = _connection(standin, set_dir=exported['set_dir'], identity=keys.age_identity)
    args.update(extra)
    return run_module('kotauth_import', check_mode=check_mode, **args)


def _content(standin, slug):
    """A tenant's content without what Kotauth's import sets anew (BackupImporterService.performImport: the slug,
    mail disabled, social providers disabled, MFA off; tests/integration/test_kotauth_fidelity.py checks those)."""
    content = standin.tenant(slug)
    content['tenant'] = dict(content['tenant'], slug=None, smtp=dict(content['tenant']['smtp'], enabled=None))
    content['socialProviders'] = [dict(item, enabled=None) for item in content['socialProviders']]
    content['users'] = [dict(item, mfaEnabled=None) for item in content['users']]
    return content


def test_round_trip_equal_by_content(run_module, exported, standin, keys):
    before = standin.imports()
    plan = _ok(_import(run_module, exported, standin, keys, check_mode=True, slug='acme', new_slug='acme-restored'))
    assert plan['changed'] and plan['plan']['schema']['decision'] == 'same'
    assert plan['plan']['schema']['target_source'] == 'instance'
    assert standin.imports() == before and 'acme-restored' not in standin.stats()['tenants']
    done = _ok(_import(run_module, exported, standin, keys, slug='acme', new_slug='acme-restored'))
    assert done['changed'] and done['tenant']['slug'] == 'acme-restored'
    assert done['tenant']['summary']['users'] == 30
    assert standin.stats()['imports'][-1] == {'newSlug': 'acme-restored', 'format': 'json'}
    assert _content(standin, 'acme-restored') == _content(standin, 'acme')
    actions = {item['id']: item['action'] for item in done['post_restore_actions']}
    assert {'client_secrets', 'social_login_secrets', 'smtp', 'mfa_reenrolment', 'sessions', 'signing_keys'} <= set(actions)
    assert '3 application(s)' in actions['client_secrets'] and '10 user(s) with MFA' in actions['mfa_reenrolment']


def test_existing_slug_is_refused(run_module, exported, standin, keys):
    before = standin.imports()
    refused = _failed(_import(run_module, exported, standin, keys, slug='globex', target_schema_version=42))
    assert 'tenant globex already exists' in refused['msg'] and 'give new_slug' in refused['msg']
    assert standin.imports() == before


def test_newer_schema_refused_before_upload_older_warns(run_module, exported, standin, keys):
    before = standin.imports()
    standin.control('config', {'schema_version': 41})
    try:
        refused = _failed(_import(run_module, exported, standin, keys, slug='globex', new_slug='globex-new'))
        assert 'schema version 42, newer than the target\'s 41' in refused['msg']
        assert refused['plan']['schema']['decision'] == 'newer'
        assert standin.imports() == before
        standin.control('config', {'schema_version': 43})
        older = _ok(_import(run_module, exported, standin, keys, slug='globex', new_slug='globex-new',
                            request_format='json'))
    finally:
        standin.control('config', {'schema_version': 42})
    assert older['plan']['schema']['decision'] == 'older'
    assert 'older than the target\'s 43' in older['plan']['schema']['message']
    assert standin.stats()['imports'][-1] == {'newSlug': 'globex-new', 'format': 'json'}
    assert _content(standin, 'globex-new') == _content(standin, 'globex')


def test_wrong_passphrase_refused_before_upload(run_module, exported, standin, keys):
    before = standin.imports()
    refused = _failed(_import(run_module, exported, standin, keys, slug='globex', new_slug='globex-x',
                              target_schema_version=42, kotauth_passphrase='not-the-right-passphrase'))
    assert refused['reason'] == 'wrong_passphrase' and 'wrong passphrase' in refused['msg']
    assert standin.imports() == before


def _copy_set(exported, name):
    target = exported['set_dir'].parent / name
    shutil.copytree(str(exported['set_dir']), str(target))
    return target


def _replace_envelope(set_dir, rel, keys, change):
    """Change the envelope inside one payload and re-encrypt it; the manifest and metadata are rewritten to match
    (what a copy made before the manifest, or a re-encryption, would look like)."""
    path = set_dir / rel
    envelope = change(_envelope(path, keys))
    zstd = subprocess.run(['zstd', '-q', '-c'], input=envelope, stdout=subprocess.PIPE, check=True).stdout
    sealed = subprocess.run(['age', '-r', keys.age_recipient], input=zstd, stdout=subprocess.PIPE, check=True).stdout
    path.write_bytes(sealed)
    reseal(set_dir, rel)


def _flip(envelope):
    index = len(envelope) - 30
    return envelope[:index] + (b'A' if envelope[index:index + 1] != b'A' else b'B') + envelope[index + 1:]


def _verify(run_module, set_dir, keys, passphrase=PASSPHRASE):
    return run_module('backup_set', path=set_dir, state='verified', identity=keys.age_identity,
                      kotauth_passphrase=passphrase)


def test_verified_opens_bkp1_payloads_and_tells_the_errors_apart(run_module, exported, keys):
    good = _ok(_verify(run_module, exported['set_dir'], keys))
    bkp1 = [item for item in good['files'] if item.get('bkp1')]
    assert sorted(item['path'] for item in bkp1) == ['kotauth/acme.bkp1.zst.age', 'kotauth/broken.bkp1.zst.age',
                                                     'kotauth/globex.bkp1.zst.age', 'kotauth/tampered.bkp1.zst.age']
    assert all(item['decrypted'] and item['schema_version'] == 42 for item in bkp1)

    cases = {
        'wrong_passphrase': (exported['set_dir'], 'another-passphrase-entirely'),
        'unsupported_version': (_copy_set(exported, '20260112T030001Z'), PASSPHRASE),
        'malformed': (_copy_set(exported, '20260112T030002Z'), PASSPHRASE),
        'altered': (_copy_set(exported, '20260112T030003Z'), PASSPHRASE),
    }
    rel = 'kotauth/globex.bkp1.zst.age'
    _replace_envelope(cases['unsupported_version'][0], rel, keys, lambda e: b'bkp2' + e[4:])
    _replace_envelope(cases['malformed'][0], rel, keys, lambda e: e.rsplit(b'.', 1)[0])
    _replace_envelope(cases['altered'][0], rel, keys, _flip)
    messages = {}
    for reason, (set_dir, passphrase) in cases.items():
        result = _failed(_verify(run_module, set_dir, keys, passphrase))
        failed = [item for item in result['files'] if not item['ok']]
        assert [item['reason'] for item in failed] == [reason] * len(failed), failed
        expected = 4 if reason == 'wrong_passphrase' else 1
        assert len(failed) == expected and (expected == 4 or failed[0]['path'] == rel)
        messages[reason] = failed[0]['error']
    assert 'wrong passphrase' in messages['wrong_passphrase']
    assert 'version bkp2 is not supported' in messages['unsupported_version']
    assert 'malformed bkp1 envelope' in messages['malformed']
    assert 'was altered' in messages['altered']


def test_flipped_character_in_the_set_is_refused_before_upload(run_module, exported, standin, keys):
    set_dir = _copy_set(exported, '20260112T030004Z')
    path = set_dir / 'kotauth' / 'globex.bkp1.zst.age'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    verified = _failed(_verify(run_module, set_dir, keys))
    assert 'globex.bkp1.zst.age: checksum mismatch' in verified['msg']
    before = standin.imports()
    refused = _failed(run_module('kotauth_import', set_dir=set_dir, identity=keys.age_identity, slug='globex',
                                 new_slug='globex-flipped', target_schema_version=42, **_connection(standin)))
    assert 'checksum mismatch' in refused['msg']
    assert standin.imports() == before


def _scan(secrets_):
    leaks, seen = [], 0
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        for part in ('cmdline', 'environ'):
            try:
                with open('/proc/%s/%s' % (entry, part), 'rb') as handle:
                    data = handle.read()
            except OSError:
                continue
            leaks += ['%s/%s' % (entry, part) for secret in secrets_ if secret in data]
            if part == 'cmdline' and b'kotauth_' in data and b'AnsiballZ' in data:
                seen += 1
    return leaks, seen


def test_passphrase_and_api_key_never_shown(tmp_path, run_playbook, standin, keys, test_env):
    set_dir = tmp_path / 'kotauth' / '20260113T030000Z'
    conn = _connection(standin)
    tasks = [
        {'name': 'open', 'idp.recovery.backup_set': {'path': str(set_dir), 'kind': 'kotauth'}},
        {'name': 'export', 'idp.recovery.kotauth_export': dict(conn, set_dir=str(set_dir), slugs=['globex'],
                                                               recipients=[keys.age_recipient])},
        {'name': 'finalize', 'idp.recovery.backup_set': {'path': str(set_dir), 'state': 'finalized'}},
        {'name': 'verify', 'idp.recovery.backup_set': {'path': str(set_dir), 'state': 'verified',
                                                       'identity': str(keys.age_identity),
                                                       'kotauth_passphrase': PASSPHRASE}},
        {'name': 'import', 'idp.recovery.kotauth_import': dict(conn, set_dir=str(set_dir), new_slug='globex-vvv',
                                                               identity=str(keys.age_identity))},
        {'name': 'import again, refused', 'ignore_errors': True, 'idp.recovery.kotauth_import': dict(
            conn, set_dir=str(set_dir), new_slug='globex-vvv', identity=str(keys.age_identity))},
    ]
    secrets_ = [PASSPHRASE.encode(), standin.api_key.encode()]
    proc = run_playbook.start(tasks, verbosity=3, callback='default')
    leaks, seen = [], 0
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            found, count = _scan(secrets_)
            leaks += found
            seen += count
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.returncode is None:
            kill_tree(proc.pid)
            proc.communicate()
    stdout, stderr = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, stdout[-3000:] + stderr
    assert leaks == []
    assert seen > 0, 'no Kotauth module process was seen while the playbook ran'
    assert 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' in stdout, 'the run was not verbose'
    assert 'already exists' in stdout and '"bkp1": true' in stdout
    for secret in (PASSPHRASE, standin.api_key):
        assert secret not in stdout and secret not in stderr
    for directory in (set_dir, test_env['ANSIBLE_HOME']):
        for current, _dirs, files in os.walk(str(directory)):
            for name in files:
                path = os.path.join(current, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    data = open(path, 'rb').read()
                    assert not any(secret in data for secret in secrets_), path
    assert _content_equal(standin, 'globex-vvv', 'globex')


def _content_equal(standin, left, right):
    return _content(standin, left) == _content(standin, right)
