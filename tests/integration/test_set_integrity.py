# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Set integrity against real PostgreSQL containers: what the manifest does not cover is never used.

Two real postgres sets of one database (an older and a newer state) are made with postgres_dump.
Each case copies the newer set, tampers with it in exactly one way, and then asserts that
``backup_set state=verified`` fails naming the problem, that ``postgres_restore`` refuses it both in
check mode and for real, that no safety set was taken, and that the target database - which holds
other data - is exactly as it was. Where the payload itself is in question, ``encrypted_archive
state=extracted`` refuses it too. One case runs the drill playbook on a set whose payload line was
removed from the manifest: the drill fails at verify, its staging database is untouched, and its
report records the SHA-256 of the manifest it saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import authentik_support as ak
import conftest

PREFIX = 'idp-test-integrity-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'integrity-%s' % uuid.uuid4().hex[:8]
SERVICE = 'ledger'
DATABASE = 'ledger'
OLDER = '20260101T030000Z'
NEWER = '20260102T030000Z'
SCHEMA = """
CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO public.item (name) SELECT 'older ' || n FROM generate_series(1, 40) AS n;
"""
NEWER_ROWS = "INSERT INTO public.item (name) SELECT 'newer ' || n FROM generate_series(1, 25) AS n;"
TARGET_SCHEMA = """
CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.target_only (note text);
INSERT INTO public.item (name) VALUES ('target 1'), ('target 2'), ('target 3');
INSERT INTO public.target_only VALUES ('written after the backup: a refused restore must keep this');
"""


def _docker(*argv, check=True):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check, timeout=120)


def _ok(result):
    assert result.get('failed') is not True, result
    return result


def _state(container):
    """Everything a restore would change: the tables, their rows, and the database's oid."""
    return {
        'counts': ak.table_counts(container, database=DATABASE, user='postgres'),
        'items': ak.psql(container, "SELECT md5(string_agg(id || ':' || name, ',' ORDER BY id)) FROM public.item",
                         database=DATABASE, user='postgres').strip(),
        'oid': ak.psql(container, "SELECT oid FROM pg_database WHERE datname = '%s'" % DATABASE,
                       database='postgres', user='postgres').strip(),
    }


@pytest.fixture(scope='module')
def source():
    name = PREFIX + '-source'
    ak.run_postgres(name, PASSWORD, user='postgres', database='postgres')
    try:
        _docker('exec', name, 'createdb', '-U', 'postgres', DATABASE)
        ak.psql(name, SCHEMA, database=DATABASE, user='postgres')
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def target():
    """A server whose database ledger holds other data than either set; every case leaves it as it is."""
    name = PREFIX + '-target'
    ak.run_postgres(name, PASSWORD, user='postgres', database='postgres')
    try:
        _docker('exec', name, 'createdb', '-U', 'postgres', DATABASE)
        ak.psql(name, TARGET_SCHEMA, database=DATABASE, user='postgres')
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def sets(module_runner, source, keys, tmp_path_factory):
    """The older and the newer set of the source database: {'older': path, 'newer': path, 'payload': rel}."""
    root = tmp_path_factory.mktemp('integrity') / 'backups'
    made = {}
    for label, stamp in (('older', OLDER), ('newer', NEWER)):
        if label == 'newer':
            ak.psql(source, NEWER_ROWS, database=DATABASE, user='postgres')
        path = root / SERVICE / stamp
        _ok(module_runner('backup_set', path=str(path), kind='postgres'))
        _ok(module_runner('postgres_dump', set_dir=str(path), container=source, user='postgres', database=DATABASE,
                          recipients=[keys.age_recipient]))
        _ok(module_runner('backup_set', path=str(path), state='finalized'))
        made[label] = path
    metadata = json.loads((made['newer'] / 'metadata.json').read_text())
    made['payload'] = metadata['postgres']['database']['payload']
    assert (made['older'] / made['payload']).read_bytes() != (made['newer'] / made['payload']).read_bytes()
    return made


# ---------------------------------------------------------------------------------------------
# the tampering, each exactly one fault

def _manifest_lines(set_dir):
    return (set_dir / 'MANIFEST.sha256').read_text().splitlines()


def _write_manifest(set_dir, lines):
    (set_dir / 'MANIFEST.sha256').write_text('\n'.join(lines) + '\n')


def _rehash(set_dir, *rels):
    """Recompute the manifest lines of rels, as whoever can write the manifest can."""
    lines = []
    for line in _manifest_lines(set_dir):
        rel = line.split('  ', 1)[1]
        if rel in rels:
            line = '%s  %s' % (hashlib.sha256((set_dir / rel).read_bytes()).hexdigest(), rel)
        lines.append(line)
    _write_manifest(set_dir, lines)


def _change_metadata(set_dir, change):
    path = set_dir / 'metadata.json'
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + '\n')
    _rehash(set_dir, 'metadata.json')


def _set_payload(payload):
    def change(metadata):
        metadata['postgres']['database']['payload'] = payload
    return change


def tamper_unlisted(set_dir, sets, outside):
    _write_manifest(set_dir, [line for line in _manifest_lines(set_dir) if not line.endswith('  ' + sets['payload'])])


def tamper_absolute(set_dir, sets, outside):
    # a real, decryptable dump outside the set (the older state)
    evil = outside / 'x' / 'evil.dump.zst.age'
    evil.parent.mkdir(parents=True)
    shutil.copy(str(sets['older'] / sets['payload']), str(evil))
    _change_metadata(set_dir, _set_payload(str(evil)))


def tamper_dotdot(set_dir, sets, outside):
    shutil.copytree(str(sets['older']), str(set_dir.parent / OLDER))
    _change_metadata(set_dir, _set_payload('../%s/%s' % (OLDER, sets['payload'])))


def tamper_swapped(set_dir, sets, outside):
    shutil.copy(str(sets['older'] / sets['payload']), str(set_dir / sets['payload']))
    _rehash(set_dir, sets['payload'])


def tamper_payload_link(set_dir, sets, outside):
    identical = outside / sets['payload']
    shutil.move(str(set_dir / sets['payload']), str(identical))
    os.symlink(str(identical), str(set_dir / sets['payload']))


def tamper_parent_link(set_dir, sets, outside):
    # the payload moves into a directory outside the set, reached through the link "sub"
    directory = outside / 'payloads'
    directory.mkdir()
    shutil.move(str(set_dir / sets['payload']), str(directory / sets['payload']))
    os.symlink(str(directory), str(set_dir / 'sub'))
    rel = 'sub/' + sets['payload']
    _write_manifest(set_dir, [line.replace('  ' + sets['payload'], '  ' + rel) for line in _manifest_lines(set_dir)])

    def change(metadata):
        metadata['payloads'][rel] = metadata['payloads'].pop(sets['payload'])
        metadata['postgres']['database']['payload'] = rel
    _change_metadata(set_dir, change)


def tamper_linked_entry(set_dir, sets, outside):
    secret = outside / 'secret.txt'
    secret.write_text('not part of any backup\n')
    os.symlink(str(secret), str(set_dir / 'notes.txt'))
    lines = _manifest_lines(set_dir) + ['%s  notes.txt' % hashlib.sha256(secret.read_bytes()).hexdigest()]
    _write_manifest(set_dir, sorted(lines, key=lambda line: line.split('  ', 1)[1]))


def tamper_metadata_link(set_dir, sets, outside):
    identical = outside / 'metadata.json'
    shutil.move(str(set_dir / 'metadata.json'), str(identical))
    os.symlink(str(identical), str(set_dir / 'metadata.json'))


def tamper_manifest_link(set_dir, sets, outside):
    identical = outside / 'MANIFEST.sha256'
    shutil.move(str(set_dir / 'MANIFEST.sha256'), str(identical))
    os.symlink(str(identical), str(set_dir / 'MANIFEST.sha256'))


def tamper_format_99(set_dir, sets, outside):
    _change_metadata(set_dir, lambda metadata: metadata.update(format_version=99))


# case: (tamper, phrase the verification names, phrase the restore names, is the payload itself refused)
CASES = {
    'manifest line removed': (tamper_unlisted, 'not listed in the manifest', 'not listed in', True),
    'absolute payload path': (tamper_absolute, 'not a relative path inside the set',
                              'not a relative path inside the set', False),
    'dotdot payload path': (tamper_dotdot, 'not a relative path inside the set',
                            'not a relative path inside the set', False),
    'payload from an older set': (tamper_swapped, 'not the payload this set wrote', 'not the payload this set wrote',
                                  True),
    'payload replaced by a link': (tamper_payload_link, 'is a symbolic link', 'is a symbolic link', True),
    'payload behind a linked directory': (tamper_parent_link, 'sub is a symbolic link', 'sub is a symbolic link',
                                          True),
    'manifest entry that is a link': (tamper_linked_entry, 'notes.txt is a symbolic link',
                                      'notes.txt is a symbolic link', False),
    'metadata.json is a link': (tamper_metadata_link, 'metadata.json is a symbolic link',
                                'metadata.json is a symbolic link', True),
    'manifest is a link': (tamper_manifest_link, 'MANIFEST.sha256 is a symbolic link',
                           'MANIFEST.sha256 is a symbolic link', True),
    'format_version 99': (tamper_format_99, 'format_version 99', 'format_version 99', True),
}


def _tampered(tmp_path, sets, case):
    root = tmp_path / 'backups'
    set_dir = root / SERVICE / NEWER
    shutil.copytree(str(sets['newer']), str(set_dir), symlinks=True)
    outside = tmp_path / 'outside'
    outside.mkdir()
    CASES[case][0](set_dir, sets, outside)
    return root, set_dir


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_tampered_set_fails_verification_and_is_never_restored(case, tmp_path, sets, target, run_module, keys):
    _tamper, verify_phrase, restore_phrase, payload_refused = CASES[case]
    root, set_dir = _tampered(tmp_path, sets, case)
    before = _state(target)
    assert before['counts'] == {'public.item': 3, 'public.target_only': 1}

    verified = run_module('backup_set', path=str(set_dir), state='verified', identity=str(keys.age_identity))
    assert verified.get('failed') is True, verified
    assert verify_phrase in verified['msg'], verified['msg']
    if case == 'payload from an older set':
        assert sets['payload'] in verified['msg'] and 'metadata.json recorded' in verified['msg'], verified['msg']
    if case == 'format_version 99':
        assert 'reads format_version 1 and older' in verified['msg'], verified['msg']

    restore_args = dict(set_dir=str(set_dir), container=target, user='postgres', identity=str(keys.age_identity))
    planned = run_module('postgres_restore', check_mode=True, **restore_args)
    assert planned.get('failed') is True, planned
    assert restore_phrase in planned['msg'], planned['msg']

    restored = run_module('postgres_restore', **restore_args)
    assert restored.get('failed') is True, restored
    assert restore_phrase in restored['msg'], restored['msg']
    assert not restored.get('safety_set'), restored
    assert not (root / ('%s-pre-restore' % SERVICE)).exists()
    assert _state(target) == before

    if payload_refused:
        payload = set_dir / ('sub/' + sets['payload'] if case == 'payload behind a linked directory'
                             else sets['payload'])
        out = tmp_path / 'extracted'
        extracted = run_module('encrypted_archive', state='extracted', src=str(payload), dest=str(out / 'db.dump'),
                               identity=str(keys.age_identity))
        assert extracted.get('failed') is True, extracted
        assert not out.exists() or not os.listdir(str(out)), os.listdir(str(out))


def test_the_untampered_copy_verifies_and_restores(tmp_path, sets, target, run_module, keys):
    """The counterpart: the same copy, untouched, verifies; the check-mode restore plans it and changes nothing."""
    root = tmp_path / 'backups'
    set_dir = root / SERVICE / NEWER
    shutil.copytree(str(sets['newer']), str(set_dir), symlinks=True)
    before = _state(target)
    verified = _ok(run_module('backup_set', path=str(set_dir), state='verified', identity=str(keys.age_identity)))
    assert verified['unlisted'] == [] and all(item['ok'] for item in verified['files'])
    planned = _ok(run_module('postgres_restore', check_mode=True, set_dir=str(set_dir), container=target,
                             user='postgres', identity=str(keys.age_identity)))
    assert planned['plan']['database']['restore'] == sets['payload']
    assert _state(target) == before


def test_the_drill_refuses_a_set_with_an_unlisted_payload(tmp_path, sets, target, test_env, keys):
    """The drill playbook on the newest local set, whose payload line was removed: it fails at verify and the
    staging database is not touched."""
    root, set_dir = _tampered(tmp_path, sets, 'manifest line removed')
    before = _state(target)
    directory = tmp_path / 'drill'
    directory.mkdir(mode=0o700)
    host = {
        'ansible_connection': 'local',
        'ansible_python_interpreter': str(conftest.PYTHON),
        'drill_services': [{'name': SERVICE, 'kind': 'postgres', 'staging': {'container': target}}],
        'drill_source': 'local',
        'drill_backup_root': str(root),
        'drill_identity': str(keys.age_identity),
        'drill_workdir': str(directory / 'work'),
        'drill_report_dir': str(directory / 'reports'),
        'drill_metrics_dir': str(directory / 'metrics'),
    }
    inventory = directory / 'inventory.yml'
    inventory.write_text(json.dumps({'all': {'hosts': {'localhost': host}}}, indent=2))
    inventory.chmod(0o600)
    env = dict(test_env, ANSIBLE_STDOUT_CALLBACK=conftest.JSON_CALLBACK)
    proc = subprocess.run([str(conftest.TOOL_BIN / 'ansible-playbook'), '-i', str(inventory), 'idp.recovery.drill'],
                          env=env, cwd=str(directory), capture_output=True, stdin=subprocess.DEVNULL, timeout=600,
                          check=False)
    assert proc.returncode != 0, proc.stdout.decode()[-4000:]
    report = json.loads((directory / 'reports' / 'latest.json').read_text(encoding='utf-8'))
    found = next(s for s in report['services'] if s['name'] == SERVICE)
    assert report['result'] == 'failed' and found['result'] == 'failed', found
    assert found['steps'][-1]['name'] == 'Verify every checksum and decrypt every payload', found['steps']
    assert sets['payload'] in found['error'] and 'not listed in the manifest' in found['error'], found['error']
    # the report pins the manifest the drill saw
    assert found['manifest_sha256'] == hashlib.sha256((set_dir / 'MANIFEST.sha256').read_bytes()).hexdigest()
    assert _state(target) == before
    assert not (root / ('%s-pre-restore' % SERVICE)).exists()
    assert Path(set_dir / sets['payload']).is_file()
