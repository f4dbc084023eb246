# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Kotauth's admin backup API as its source defines it (tests/kotauth_standin/FIDELITY.md), and the
collection's modules against each of those behaviours: the JSON-only export and import bodies, the
bearer check, key scopes, the problem bodies and their order, the envelope rules, and what an import
changes in the new tenant."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kotauth_support import connection, failed as _failed, ok as _ok, start_kotauth_standin

PASSPHRASE = 'kotauth-fidelity-pass-%s' % os.urandom(8).hex()
EXPORT = '/admin/api/v1/tenants/%s/export'
IMPORT = '/admin/api/v1/tenants/import'


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    server = start_kotauth_standin(tmp_path_factory.mktemp('kotauth-fidelity'), seed=('acme:9', 'globex:4'))
    yield server
    server.stop()


def _connection(standin, **extra):
    return connection(standin, PASSPHRASE, **extra)


def _requests(standin, name):
    return standin.stats()['requests'].get(name, 0)


def _http(standin, path, body=None, key=None, ctype='application/json', raw=None):
    """(status, headers, body) of one request to the stand-in's admin API, as any HTTP client sends it."""
    data = raw if raw is not None else json.dumps(body).encode('utf-8')
    headers = {'Content-Type': ctype}
    if key is not False:
        headers['Authorization'] = 'Bearer %s' % (key or standin.api_key)
    req = urllib.request.Request(standin.url + path, data=data, method='POST', headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _problem(response, status, title):
    code, headers, body = response
    assert code == status, (code, body)
    assert headers['Content-Type'].startswith('application/problem+json')
    problem = json.loads(body.decode('utf-8'))
    assert problem['type'] == 'https://kotauth.dev/errors/%d' % status and problem['status'] == status
    assert problem['title'] == title, problem
    return problem['detail']


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _seal(document, passphrase=PASSPHRASE, salt_size=16):
    """A bkp1 envelope from the format's description (16-byte salt, 12-byte nonce, AES-256-GCM, no padding)."""
    salt, nonce = os.urandom(salt_size), os.urandom(12)
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, 600000, 32)
    plaintext = document if isinstance(document, bytes) else json.dumps(document).encode('utf-8')
    return 'bkp1.%s.%s.%s' % (_b64(salt), _b64(nonce), _b64(AESGCM(key).encrypt(nonce, plaintext, None)))


def _unseal(envelope, passphrase=PASSPHRASE):
    _version, salt, nonce, sealed = envelope.split('.')
    parts = [base64.urlsafe_b64decode(p + '=' * (-len(p) % 4)) for p in (salt, nonce, sealed)]
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), parts[0], 600000, 32)
    return json.loads(AESGCM(key).decrypt(parts[1], parts[2], None).decode('utf-8')), parts


def _export_answer(standin, slug='acme', **flags):
    code, headers, body = _http(standin, EXPORT % slug, dict({'passphrase': PASSPHRASE}, **flags))
    assert code == 200 and headers['Content-Type'].startswith('application/json'), (code, body)
    return json.loads(body.decode('utf-8'))


@pytest.fixture(scope='module')
def exported(tmp_path_factory, module_runner, standin, keys):
    set_dir = tmp_path_factory.mktemp('kotauth-fidelity-sets') / 'kotauth' / '20260201T030000Z'
    _ok(module_runner('backup_set', path=set_dir, kind='kotauth'))
    result = _ok(module_runner('kotauth_export', set_dir=set_dir, slugs=['acme'], recipients=[keys.age_recipient],
                               include_signing_keys=True, **_connection(standin)))
    _ok(module_runner('backup_set', path=set_dir, state='finalized'))
    return {'set_dir': set_dir, 'result': result}


def _stored_envelope(set_dir, keys, slug='acme'):
    path = set_dir / 'kotauth' / ('%s.bkp1.zst.age' % slug)
    age = subprocess.run(['age', '-d', '-i', str(keys.age_identity), str(path)], stdout=subprocess.PIPE, check=True)
    return subprocess.run(['zstd', '-d', '-c', '-q'], input=age.stdout, stdout=subprocess.PIPE,
                          check=True).stdout.decode('ascii')


def _import(run_module, exported, standin, keys, check_mode=False, **extra):
    args = _connection(standin, set_dir=exported['set_dir'], identity=keys.age_identity, slug='acme')
    args.update(extra)
    return run_module('kotauth_import', check_mode=check_mode, **args)


# ---------------------------------------------------------------------------------------------
# export

def test_export_answers_json_and_the_module_stores_its_envelope(exported, standin, keys):
    answer = _export_answer(standin)
    assert sorted(answer) == ['envelope', 'exportedAt', 'kotauthVersion', 'manifest', 'schemaVersion', 'summary']
    assert sorted(answer['summary']) == ['applications', 'auditEvents', 'claimMappers', 'groups', 'roles',
                                         'signingKeys', 'socialProviders', 'users']
    assert sorted(answer['manifest']) == ['includedExtras', 'notes', 'redactedFields']
    tenant = exported['result']['tenants']['acme']
    assert tenant['changed'] and tenant['schema_version'] == 42 and tenant['kotauth_version'] == '1.4.2'
    assert tenant['counts']['users'] == 9 == answer['summary']['users']
    assert tenant['counts']['signing_keys'] == 1 and tenant['included_extras'] == ['signingKeys']
    assert 'signingKeys' not in tenant['redacted_fields'] and 'auditLog' in tenant['redacted_fields']


def test_the_stored_archive_is_kotauths_envelope(exported, keys):
    envelope = _stored_envelope(exported['set_dir'], keys)
    assert envelope.startswith('bkp1.') and '=' not in envelope and '\n' not in envelope
    document, (salt, nonce, sealed) = _unseal(envelope)
    assert len(salt) == 16 and len(nonce) == 12 and len(sealed) > 16
    assert document['exportVersion'] == '1.0.0' and document['schemaVersion'] == 42
    assert document['reserved'] == {'totpSeeds': None, 'scheduledExports': None}
    assert document['auditLog'] is None and len(document['signingKeys']) == 1
    assert {'publicKeyPem', 'privateKeyPem', 'active'} <= set(document['signingKeys'][0])
    user = document['users'][0]
    assert {'requiredActions', 'lastPasswordChangeAt', 'createdAt', 'groupPaths', 'roleNames'} <= set(user)
    metadata = json.loads((exported['set_dir'] / 'metadata.json').read_text())
    assert metadata['kotauth']['tenants']['acme']['export_version'] == '1.0.0'


def test_audit_log_only_when_asked(tmp_path, run_module, standin, keys):
    set_dir = tmp_path / 'kotauth' / '20260201T040000Z'
    _ok(run_module('backup_set', path=set_dir, kind='kotauth'))
    done = _ok(run_module('kotauth_export', set_dir=set_dir, slugs=['globex'], recipients=[keys.age_recipient],
                          include_audit_log=True, **_connection(standin)))
    globex = done['tenants']['globex']
    assert globex['included_extras'] == ['auditLog'] and globex['counts']['audit_events'] == 1
    assert 'signingKeys' in globex['redacted_fields'] and globex['counts']['signing_keys'] == 0


def test_export_request_errors(tmp_path, run_module, standin, keys):
    detail = _problem(_http(standin, EXPORT % 'acme', raw=b'passphrase=x'), 400, 'Invalid request body')
    assert detail == "Body must be a JSON object with 'passphrase'."
    detail = _problem(_http(standin, EXPORT % 'acme', {'passphrase': 'short'}), 422, 'Weak passphrase')
    assert detail == 'Passphrase must be at least 16 characters.'
    assert _problem(_http(standin, EXPORT % 'nope', {'passphrase': PASSPHRASE}), 404,
                    'Tenant not found') == "Tenant 'nope' not found"
    assert _problem(_http(standin, '/admin/api/v1/tenants', {}), 404, 'Not found')

    set_dir = tmp_path / 'kotauth' / '20260201T050000Z'
    _ok(run_module('backup_set', path=set_dir, kind='kotauth'))
    before = _requests(standin, 'export')
    short = _failed(run_module('kotauth_export', set_dir=set_dir, slugs=['acme'], recipients=[keys.age_recipient],
                               **_connection(standin, kotauth_passphrase='short')))
    assert 'at least 16 characters' in short['msg'] and _requests(standin, 'export') == before
    missing = _failed(run_module('kotauth_export', set_dir=set_dir, slugs=['nope'], recipients=[keys.age_recipient],
                                 **_connection(standin)))
    assert "HTTP 404: Tenant not found: Tenant 'nope' not found" in missing['msg']


# ---------------------------------------------------------------------------------------------
# the API key

def test_a_token_that_is_no_kotauth_key_gets_the_bare_bearer_challenge(tmp_path, run_module, standin, keys):
    code, headers, body = _http(standin, EXPORT % 'acme', {'passphrase': PASSPHRASE}, key='0123456789abcdef')
    assert code == 401 and body == b'' and headers['WWW-Authenticate'] == 'Bearer realm="KotAuth REST API"'
    code, _headers, body = _http(standin, EXPORT % 'acme', {'passphrase': PASSPHRASE}, key=False)
    assert code == 401 and body == b''

    set_dir = tmp_path / 'kotauth' / '20260201T060000Z'
    _ok(run_module('backup_set', path=set_dir, kind='kotauth'))
    before = _requests(standin, 'export')
    refused = _failed(run_module('kotauth_export', set_dir=set_dir, slugs=['acme'], recipients=[keys.age_recipient],
                                 **_connection(standin, api_key='0123456789abcdef')))
    assert 'kauth_' in refused['msg'] and 'not a Kotauth API key' in refused['msg']
    assert _requests(standin, 'export') == before, 'a key Kotauth cannot accept was sent'
    assert '0123456789abcdef' not in json.dumps(refused)


def test_unknown_key_and_missing_scopes(tmp_path, run_module, exported, standin, keys):
    set_dir = tmp_path / 'kotauth' / '20260201T070000Z'
    _ok(run_module('backup_set', path=set_dir, kind='kotauth'))
    unknown = _failed(run_module('kotauth_export', set_dir=set_dir, slugs=['acme'], recipients=[keys.age_recipient],
                                 **_connection(standin, api_key='kauth_unknown_' + os.urandom(8).hex())))
    assert 'HTTP 401: Invalid API key: The provided API key is not valid for the master tenant.' in unknown['msg']

    import_only = standin.add_api_key(['tenants:import'])
    refused = _failed(run_module('kotauth_export', set_dir=set_dir, slugs=['acme'], recipients=[keys.age_recipient],
                                 **_connection(standin, api_key=import_only)))
    assert "HTTP 403: Insufficient scope: API key must hold the 'tenants:export' scope." in refused['msg']
    # the import reads the target through exports: an import-only key cannot even plan it
    plan = _failed(_import(run_module, exported, standin, keys, check_mode=True, new_slug='acme-scope',
                           api_key=import_only))
    assert "'tenants:export' scope" in plan['msg']

    export_only = standin.add_api_key(['tenants:export'])
    before = standin.stats()['tenants']
    planned = _ok(_import(run_module, exported, standin, keys, check_mode=True, new_slug='acme-scope',
                          api_key=export_only))
    assert planned['changed']
    denied = _failed(_import(run_module, exported, standin, keys, new_slug='acme-scope', api_key=export_only))
    assert "HTTP 403: Insufficient scope: API key must hold the 'tenants:import' scope." in denied['msg']
    assert standin.stats()['tenants'] == before


# ---------------------------------------------------------------------------------------------
# import

def test_import_takes_json_only(run_module, exported, standin, keys):
    envelope = _stored_envelope(exported['set_dir'], keys)
    boundary = 'b' + os.urandom(8).hex()
    form = ('--{b}\r\nContent-Disposition: form-data; name="envelope"; filename="acme.bkp1"\r\n\r\n{e}\r\n'
            '--{b}\r\nContent-Disposition: form-data; name="passphrase"\r\n\r\n{p}\r\n'
            '--{b}\r\nContent-Disposition: form-data; name="newSlug"\r\n\r\nacme-form\r\n--{b}--\r\n').format(
                b=boundary, e=envelope, p=PASSPHRASE).encode('ascii')
    detail = _problem(_http(standin, IMPORT, raw=form, ctype='multipart/form-data; boundary=%s' % boundary), 400,
                      'Invalid request body')
    assert detail == "Body must be a JSON object with 'envelope', 'passphrase', and 'newSlug'."
    assert 'acme-form' not in standin.stats()['tenants']

    # the module's default is what Kotauth's admin API reads
    done = _ok(_import(run_module, exported, standin, keys, new_slug='acme-json'))
    assert done['tenant']['slug'] == 'acme-json' and done['tenant']['summary']['users'] == 9
    assert done['tenant']['summary']['signingKeys'] == 1 and done['tenant']['export_schema_version'] == 42
    assert standin.stats()['imports'][-1] == {'newSlug': 'acme-json', 'format': 'json'}

    before = standin.stats()['requests'].get('refused_multipart/form-data', 0)
    legacy = _failed(_import(run_module, exported, standin, keys, new_slug='acme-multipart', request_format='multipart'))
    assert 'HTTP 400: Invalid request body' in legacy['msg']
    assert standin.stats()['requests'].get('refused_multipart/form-data', 0) == before + 1
    assert 'request_format=multipart' in json.dumps(legacy.get('deprecations')), legacy


def test_import_changes_what_kotauth_changes_and_the_actions_say_so(run_module, exported, standin, keys):
    done = _ok(_import(run_module, exported, standin, keys, new_slug='acme-changed'))
    source, created = standin.tenant('acme'), standin.tenant('acme-changed')
    assert source['tenant']['smtp']['enabled'] and not created['tenant']['smtp']['enabled']
    assert any(u['mfaEnabled'] for u in source['users']) and not any(u['mfaEnabled'] for u in created['users'])
    assert source['socialProviders'][0]['enabled'] and not created['socialProviders'][0]['enabled']
    # everything else arrives as it was
    for content in (source, created):
        content['tenant'] = dict(content['tenant'], slug=None, smtp=None)
        content['socialProviders'] = [dict(p, enabled=None) for p in content['socialProviders']]
        content['users'] = [dict(u, mfaEnabled=None) for u in content['users']]
    assert created == source
    actions = {item['id']: item['action'] for item in done['post_restore_actions']}
    assert 'imports them disabled' in actions['social_login_secrets'] and 'enable' in actions['social_login_secrets']
    assert 'mail disabled' in actions['smtp']
    assert '3 user(s) with MFA' in actions['mfa_reenrolment'] and 'MFA off' in actions['mfa_reenrolment']


def test_import_decrypt_errors(standin):
    envelope = _seal(json.dumps({'schemaVersion': 42}).encode())

    def post(env, passphrase=PASSPHRASE):
        return _http(standin, IMPORT, {'envelope': env, 'passphrase': passphrase, 'newSlug': 'never-made'})
    assert _problem(post(envelope, 'another-passphrase-here'), 422, 'Wrong passphrase').startswith(
        'The supplied passphrase did not decrypt the envelope.')
    for bad in (envelope + '\n', _seal(b'{}', salt_size=32), envelope.rsplit('.', 1)[0], 'bkp1', 'hello.world',
                envelope[:5] + '!' + envelope[6:]):
        assert _problem(post(bad), 422, 'Malformed envelope').startswith('The backup envelope is malformed.'), bad
    for version in ('bkp2', 'bkpx'):
        detail = _problem(post(version + envelope[4:]), 422, 'Unsupported envelope version')
        assert detail == ("Backup envelope version '%s' is newer than this build supports. Upgrade Kotauth and "
                          "retry." % version)
    assert 'never-made' not in standin.stats()['tenants']


def test_import_payload_errors(standin):
    document = _export_answer(standin, 'globex')
    plain, _parts = _unseal(document['envelope'])

    def post(doc, slug):
        return _http(standin, IMPORT, {'envelope': _seal(doc), 'passphrase': PASSPHRASE, 'newSlug': slug})
    detail = _problem(post({'schemaVersion': 42}, 'globex-partial'), 422, 'Invalid backup payload')
    assert detail.startswith('Decrypted backup body is not a valid v1 export: ')
    dangling = dict(plain, users=plain['users'] + [dict(plain['users'][0], username='lost', groupPaths=['gone'])])
    detail = _problem(post(dangling, 'globex-dangling'), 422, 'Invalid payload')
    assert detail == "Backup payload is invalid: User 'lost' references missing group path 'gone'"
    assert not {'globex-partial', 'globex-dangling'} & set(standin.stats()['tenants'])


def test_schema_rule_comes_before_the_slug_conflict(standin):
    document = _export_answer(standin, 'globex')
    plain, _parts = _unseal(document['envelope'])

    def post(doc, slug):
        return _http(standin, IMPORT, {'envelope': _seal(doc), 'passphrase': PASSPHRASE, 'newSlug': slug})
    detail = _problem(post(dict(plain, schemaVersion=43), 'globex'), 422, 'Schema too new')
    assert detail == 'Backup was taken at schema V43 but this build is at V42. Upgrade Kotauth on the destination ' \
                     'before importing.'
    detail = _problem(post(plain, 'globex'), 409, 'Slug conflict')
    assert detail == "Tenant slug 'globex' already exists. Choose a different --new-slug."
    code, _headers, body = post(dict(plain, schemaVersion=41), 'globex-older')
    answer = json.loads(body.decode('utf-8'))
    assert code == 201 and answer['schemaVersion'] == 42 and answer['exportSchemaVersion'] == 41
    assert sorted(answer) == ['exportSchemaVersion', 'manifest', 'newTenantSlug', 'schemaVersion', 'summary']


def test_kotauths_own_schema_refusal_reaches_the_operator(run_module, exported, standin, keys):
    standin.control('config', {'schema_version': 41})
    try:
        refused = _failed(_import(run_module, exported, standin, keys, new_slug='acme-claimed',
                                  target_schema_version=42))
    finally:
        standin.control('config', {'schema_version': 42})
    assert 'HTTP 422: Schema too new: Backup was taken at schema V42 but this build is at V41' in refused['msg']
    assert 'acme-claimed' not in standin.stats()['tenants']


def test_the_import_probes_are_audited_exports(run_module, exported, standin, keys):
    before = len(standin.audit())
    _ok(_import(run_module, exported, standin, keys, check_mode=True, new_slug='acme-probed'))
    events = standin.audit()[before:]
    # the schema probe exports the master tenant; the slug probe of a free slug is a 404, not recorded
    assert events == [{'eventType': 'ADMIN_TENANT_EXPORTED', 'sourceSlug': 'master'}]
