# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Round trip through the Ory stand-in: project A (5,000 identities with bcrypt and argon2
hashes, OIDC links, TOTP, lookup secrets, WebAuthn, OAuth2 clients, three JWK sets, relation tuples
that name identities) -> ory_export -> a finalized, encrypted backup set -> ory_import into the
empty project B -> every identity is there with its hash, tuples point at the new IDs, a restored
client mints a token, and a second import changes nothing."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from ory_support import read_json_payload_cli, remapped_tuples
from ory_standin import seed as seeding

IDENTITIES = int(os.environ.get("ORY_TEST_IDENTITIES", "5000"))


def _open_set(run_module, root):
    result = run_module('backup_set', root=str(root), service='ory', kind='ory', state='present')
    assert not result.get('failed'), result
    return result['path']


@pytest.fixture
def projects(ory_standin_factory):
    source = ory_standin_factory(seed_identities=IDENTITIES, seed_clients=3, jwk_sets=['app.signing'],
                                 default_jwk_sets=True)
    # clients without a shared secret (two private_key_jwt, one public) and a set of an RSA and an EC private key
    source.control('seed-hydra', {'keyed_clients': True, 'mixed_jwk_set': 'app.mixed'})
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    return source, target


def test_round_trip(projects, run_module, keys, tmp_path, ory_specs):
    source, target = projects
    before = source.summary()
    assert before['identities'] == IDENTITIES

    set_dir = _open_set(run_module, tmp_path / 'backups')
    exported = run_module('ory_export', set_dir=set_dir, jwk_sets=['app.signing', 'app.mixed'],
                          recipients=[keys.age_recipient], **source.connection())
    assert not exported.get('failed'), exported
    assert exported['changed'] is True
    ory = exported['ory']
    assert ory['counts']['identities'] == IDENTITIES
    assert ory['counts']['oauth2_clients'] == 6
    assert ory['counts']['jwk_sets'] == 4
    assert ory['counts']['relationships'] == before['tuples']
    assert ory['credentials']['exported']['password'] == IDENTITIES
    assert ory['credentials']['password_hashes_missing'] == 0
    assert ory['credentials']['exported']['totp'] == len(range(0, IDENTITIES, 7))
    assert any('client secrets cannot be exported' in w for w in ory['warnings'])
    assert any('TOTP' in w for w in ory['warnings'])
    assert ory['api_versions']['kratos']

    again = run_module('ory_export', set_dir=set_dir, jwk_sets=['app.signing', 'app.mixed'],
                       recipients=[keys.age_recipient], **source.connection())
    assert again['changed'] is False, again

    final = run_module('backup_set', path=set_dir, state='finalized')
    assert not final.get('failed'), final
    verified = run_module('backup_set', path=set_dir, state='verified', identity=str(keys.age_identity))
    assert not verified.get('failed'), verified

    # nothing secret in plaintext: every payload is age, metadata holds no hash or config secret
    for current, _dirs, files in os.walk(set_dir):
        for name in files:
            path = Path(current) / name
            if name in ('metadata.json', 'MANIFEST.sha256'):
                continue
            assert path.read_bytes()[:20].startswith(b'age-encryption.org/'), path
            assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    metadata = (Path(set_dir) / 'metadata.json').read_text()
    for secret in ('$2b$', '$argon2id$', 'smtp-password', 'google-provider-secret', source.api_key,
                   source.workspace_key, 'otpauth://'):
        assert secret not in metadata

    # the import-ready files decrypt with stock tools and pass the strict decoders of the spec
    bodies = read_json_payload_cli(Path(set_dir) / 'ory' / 'restore' / 'identities.json.zst.age', keys.age_identity)
    assert len(bodies) == IDENTITIES
    kratos = ory_specs['kratos']
    for body in bodies:
        kratos.validate(body, kratos.schema('createIdentityBody'), strict=True)
    from ory_client.models.create_identity_body import CreateIdentityBody
    for body in bodies[:50]:
        assert CreateIdentityBody.from_dict(body).schema_id == 'person'
    clients = read_json_payload_cli(Path(set_dir) / 'ory' / 'restore' / 'oauth2-clients.json.zst.age', keys.age_identity)
    hydra = ory_specs['hydra']
    for client in clients:
        assert 'client_secret' not in client and 'created_at' not in client
        hydra.validate(client, hydra.schema('oAuth2Client'), strict=True)
    tuples = read_json_payload_cli(Path(set_dir) / 'ory' / 'restore' / 'relationships.json.zst.age', keys.age_identity)
    keto = ory_specs['keto']
    for item in tuples:
        keto.validate(item, keto.schema('relationship'), strict=True)
    project = read_json_payload_cli(Path(set_dir) / 'ory' / 'restore' / 'project.json.zst.age', keys.age_identity)
    ory_specs['console'].validate(project, ory_specs['console'].schema('setProject'), strict=True)
    assert project['services']['identity']['config']['identity']['schemas'][0]['url'].startswith('base64://')
    assert project['services']['permission']['config']['namespaces']['location'].startswith('base64://')

    # the plan: writes nothing
    common = dict(set_dir=set_dir, identity=str(keys.age_identity), **target.connection())
    supplied = {'svc-1': 'vault-secret-for-svc-1'}
    plan = run_module('ory_import', check_mode=True, client_secrets=supplied, return_secrets=True, **common)
    assert not plan.get('failed'), plan
    assert plan['changed'] is True
    assert plan['plan']['identities'] == {'create': IDENTITIES, 'existing': 0, 'conflicts': 0}
    assert plan['plan']['oauth2_clients']['create'] == 6
    assert plan['plan']['oauth2_clients']['secrets_to_generate'] == 2  # every secret client but svc-1
    assert plan['plan']['oauth2_clients']['without_secret'] == {'keys': 2, 'none': 1}
    assert plan['plan']['config'] == 'update'
    assert plan['plan']['jwk_sets'] == {'app.signing': 'create', 'app.mixed': 'create', 'hydra.jwt.access-token': 'replace',
                                        'hydra.openid.id-token': 'replace'}
    assert plan['validated']['identities'] == IDENTITIES
    assert target.summary()['identities'] == 0

    state_dir = tmp_path / 'import-state'
    done = run_module('ory_import', client_secrets=supplied, return_secrets=True, encryption='age',
                      recipients=[keys.age_recipient], state_dir=str(state_dir), **common)
    assert not done.get('failed'), done
    assert done['changed'] is True
    assert done['created']['identities'] == IDENTITIES
    assert done['created']['oauth2_clients'] == 6
    assert done['created']['relationships'] == before['tuples']
    assert oct(state_dir.stat().st_mode & 0o777) == oct(0o700)
    assert done['secrets_file'] and Path(done['secrets_file']).read_bytes().startswith(b'age-encryption.org/')
    generated = done['client_secrets']
    report = dict((r['client_id'], r['secret']) for r in done['rotation_report'])
    assert report['svc-1'] == 'supplied'
    assert (report['svc-keys-inline'], report['svc-keys-uri'], report['spa-public']) == ('keys', 'keys', 'none')
    assert len(generated) == 2
    for cid in ('svc-keys-inline', 'svc-keys-uri', 'spa-public'):
        # the auth method and the client's keys are kept, and no secret was made up for it
        kept, was = target.api('GET', '/admin/clients/%s' % cid)[2], source.api('GET', '/admin/clients/%s' % cid)[2]
        for field in ('token_endpoint_auth_method', 'token_endpoint_auth_signing_alg', 'jwks', 'jwks_uri'):
            assert kept.get(field) == was.get(field), (cid, field)
    assert sorted(generated) == sorted(cid for cid, how in report.items() if how == 'generated')
    assert not any(s in (state_dir / 'rotation-report.json').read_text() for s in generated.values())

    # every identity is there, with its hash and credentials, under a new ID that keeps the old one
    old = dict((i['id'], i) for i in source.all_identities())
    new = target.all_identities()
    assert len(new) == IDENTITIES
    id_map = json.loads((state_dir / 'id-map.json').read_text())
    assert len(id_map) == IDENTITIES
    for identity in new:
        original = old[identity['external_id']]
        assert identity['id'] != original['id']
        assert id_map[original['id']] == identity['id']
        assert identity['traits'] == original['traits']
        assert identity['state'] == original['state']
        assert identity['metadata_public'] == original['metadata_public']
        assert identity['metadata_admin'] == original['metadata_admin']
        ocreds, ncreds = original['credentials'], identity['credentials']
        assert ncreds['password']['config']['hashed_password'] == ocreds['password']['config']['hashed_password']
        assert ncreds['password']['identifiers'] == ocreds['password']['identifiers']
        assert sorted(ncreds) == sorted(ocreds)
        if 'oidc' in ocreds:
            assert [(p['provider'], p['subject']) for p in ncreds['oidc']['config']['providers']] == \
                [(p['provider'], p['subject']) for p in ocreds['oidc']['config']['providers']]
            assert not any(k.startswith('initial_') for p in ncreds['oidc']['config']['providers'] for k in p)
        if 'totp' in ocreds:
            assert ncreds['totp']['config'] == ocreds['totp']['config']
        if 'lookup_secret' in ocreds:
            assert ncreds['lookup_secret']['config'] == ocreds['lookup_secret']['config']
        if 'webauthn' in ocreds:
            assert ncreds['webauthn']['config'] == ocreds['webauthn']['config']
    # the restored hashes still check the original passwords (both algorithms)
    sample = random.Random(7).sample(range(IDENTITIES), 40) + [0, 1]
    by_email = dict((i['traits']['email'], i) for i in new)
    for index in sample:
        hashed = by_email['user%06d@example.org' % index]['credentials']['password']['config']['hashed_password']
        assert hashed.startswith('$2b$04$' if index % 2 == 0 else '$argon2id$')
        assert seeding.check_password(seeding.password_for(index), hashed)
        assert not seeding.check_password('wrong password', hashed)

    # tuples point at the new IDs: subjects, objects (User:<id>#delegates) and subject-set objects
    source_tuples = source.all_tuples()
    assert any(t.get('subject_set', {}).get('namespace') == 'User' for t in source_tuples)
    assert any(t['namespace'] == 'Group' and t.get('subject_set') for t in source_tuples)
    wanted = remapped_tuples(source_tuples, id_map)
    got = set(json.dumps(t, sort_keys=True) for t in target.all_tuples())
    assert got == wanted
    assert not (set(id_map) & set(t.get('subject_id') for t in target.all_tuples()))
    assert not (set(id_map) & set(t['object'] for t in target.all_tuples()))
    assert not (set(id_map) & set(t.get('subject_set', {}).get('object') for t in target.all_tuples()))

    # JWK sets carry the source keys (private parts included)
    for name in ('hydra.openid.id-token', 'hydra.jwt.access-token', 'app.signing', 'app.mixed'):
        assert target.api('GET', '/admin/keys/%s' % name)[2] == source.api('GET', '/admin/keys/%s' % name)[2]
    assert sorted(k['kty'] for k in target.api('GET', '/admin/keys/app.mixed')[2]['keys']) == ['EC', 'RSA']

    # the drill helpers: a restored client mints a token, one allowed and one denied tuple, a look-up
    owner_old = next(t for t in source.all_tuples() if t['namespace'] == 'Document' and t.get('subject_id'))
    checks = run_module(
        'ory_check', token={'client_id': 'svc-1', 'client_secret': supplied['svc-1'], 'method': 'client_secret_post'},
        permissions=[
            dict(namespace='Document', object=owner_old['object'], relation='view',
                 subject_id=id_map[owner_old['subject_id']], allowed=True),
            dict(namespace='Document', object=owner_old['object'], relation='view',
                 subject_id=owner_old['subject_id'], allowed=False),
        ],
        identities=[{'identifier': 'user000000@example.org',
                     'external_id': by_email['user000000@example.org']['external_id']}],
        **target.connection())
    assert not checks.get('failed'), checks
    assert checks['token']['issued'] is True and 'access_token' not in checks['token']
    generated_id = sorted(generated)[0]
    method = next(c for c in clients if c['client_id'] == generated_id)['token_endpoint_auth_method']
    minted = run_module('ory_check', token={'client_id': generated_id, 'client_secret': generated[generated_id],
                                            'method': method}, **target.connection())
    assert minted['token']['issued'] is True, minted
    old_secret = next(c['client_secret'] for c in seeding.client_records(3) if c['client_id'] == generated_id)
    works = run_module('ory_check', token={'client_id': generated_id, 'client_secret': old_secret, 'method': method},
                       **source.connection())
    assert works['token']['issued'] is True, works
    stale = run_module('ory_check', token={'client_id': generated_id, 'client_secret': old_secret,
                                           'method': method, 'expect': 'failure'}, **target.connection())
    assert not stale.get('failed') and stale['token']['issued'] is False, stale

    # a second run finds everything in place
    second = run_module('ory_import', client_secrets=supplied, return_secrets=True, encryption='age',
                        recipients=[keys.age_recipient], state_dir=str(state_dir), **common)
    assert not second.get('failed'), second
    assert second['changed'] is False, second['plan']
    assert second['plan']['identities'] == {'create': 0, 'existing': IDENTITIES, 'conflicts': 0}
    assert target.summary()['identities'] == IDENTITIES

    # the stand-ins saw only requests the spec allows, and answered only what the spec describes
    for standin in (source, target):
        stats = standin.stats()
        assert stats['contract_violations'] == []
        assert stats['request_rejections'] == []
        assert stats['concurrent_writes'] == 0


def test_self_hosted_round_trip(ory_standin_factory, run_module, keys, tmp_path):
    """Self-hosted Ory: separate admin URLs, no keys, no project configuration to carry."""
    source = ory_standin_factory(seed_identities=120, seed_clients=2, default_jwk_sets=True, auth=False)
    target = ory_standin_factory(default_jwk_sets=True, auth=False)

    def urls(standin):
        return {'deployment': 'self_hosted', 'kratos_admin_url': standin.url, 'hydra_admin_url': standin.url,
                'hydra_public_url': standin.url, 'keto_read_url': standin.url, 'keto_write_url': standin.url,
                'max_backoff': 2.0}
    set_dir = _open_set(run_module, tmp_path / 'backups')
    exported = run_module('ory_export', set_dir=set_dir, recipients=[keys.age_recipient], **urls(source))
    assert not exported.get('failed'), exported
    assert exported['ory']['deployment'] == 'self_hosted'
    assert exported['ory']['counts']['identity_schemas'] == 1 and 'project_config' not in exported['ory']['counts']
    assert any('configuration in files' in w for w in exported['ory']['warnings'])
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), return_secrets=True,
                      state_dir=str(tmp_path / 'state'), **urls(target))
    assert not done.get('failed'), done
    assert 'config' not in done['plan']
    assert done['created']['identities'] == 120 and done['created']['oauth2_clients'] == 2
    assert target.summary()['tuples'] == source.summary()['tuples']
    again = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), return_secrets=True,
                       state_dir=str(tmp_path / 'state'), **urls(target))
    assert again['changed'] is False, again
    for standin in (source, target):
        stats = standin.stats()
        assert stats['unexpected_authorization'] == 0
        assert stats['contract_violations'] == [] and stats['request_rejections'] == []


def _finalized_export(run_module, keys, source, root):
    """A finalized backup set under ``root`` holding an export of ``source``; returns its path."""
    set_dir = _open_set(run_module, root)
    exported = run_module('ory_export', set_dir=set_dir, recipients=[keys.age_recipient], **source.connection())
    assert not exported.get('failed'), exported
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    return set_dir


def _restore_role(run_playbook, standin, keys, root, state_dir, **extra):
    """The restore role into ``standin`` (confirmed), then restore_report; returns (rc, results, stdout)."""
    role_vars = {
        'restore_backup_root': str(root), 'restore_service': 'ory', 'restore_identity': str(keys.age_identity),
        'restore_confirm': True, 'restore_ory_project_url': standin.url, 'restore_ory_project_api_key': standin.api_key,
        'restore_ory_project_id': standin.project_id, 'restore_ory_workspace_api_key': standin.workspace_key,
        'restore_ory_console_url': standin.url, 'restore_ory_state_dir': str(state_dir),
        'restore_ory_secrets_recipients': [keys.age_recipient],
    }
    role_vars.update(extra)
    tasks = [{'name': 'Restore', 'ansible.builtin.include_role': {'name': 'idp.recovery.restore'}, 'vars': role_vars},
             {'name': 'Show the report', 'ansible.builtin.debug': {'var': 'restore_report'}}]
    rc, stdout, _stderr = run_playbook(tasks)
    from conftest import PlaybookRunner  # pylint: disable=import-outside-toplevel
    return rc, PlaybookRunner.results(stdout), stdout


def test_restore_role_proves_old_secrets_are_refused(ory_standin_factory, run_module, run_playbook, keys, tmp_path):
    """The role's claim about old secrets is proven with a token request per rotated client, and the play
    fails when a token endpoint still accepts an old secret."""
    source = ory_standin_factory(seed_identities=12, seed_clients=3)
    root = tmp_path / 'backups'
    _finalized_export(run_module, keys, source, root)
    old = dict((c['client_id'], c['client_secret']) for c in seeding.client_records(3))
    # the old secrets work at the source project
    for client in seeding.client_records(3):
        if 'client_credentials' in client['grant_types']:
            works = run_module('ory_check', token={'client_id': client['client_id'], 'client_secret': old[client['client_id']],
                                                   'method': client['token_endpoint_auth_method']}, **source.connection())
            assert works['token']['issued'] is True, works

    # every client gets a new secret; each old one is tried at the new project and refused
    target = ory_standin_factory(preset='blank')
    rc, results, stdout = _restore_role(run_playbook, target, keys, root, tmp_path / 'state-a',
                                        restore_ory_old_client_secrets=old)
    assert rc == 0, [r for r in results if r.get('failed')] or stdout[-3000:]
    report = next(r for r in results if r['task'] == 'Show the report')['restore_report']
    assert sorted(p['client_id'] for p in report['secret_proof']) == sorted(old)
    assert all(p['old_secret'] == 'refused' for p in report['secret_proof']), report['secret_proof']
    shown = '\n'.join(next(r for r in results if r['task'].endswith('Print the secret rotation report'))['msg'])
    assert 'old secrets no longer work' not in shown
    assert '"old_secret": "refused"' in shown, shown
    assert not [s for s in old.values() if s in stdout]  # no secret in the output
    assert target.summary()['clients'] == 3

    # without the old secrets nothing is claimed
    target_b = ory_standin_factory(preset='blank')
    rc, results, stdout = _restore_role(run_playbook, target_b, keys, root, tmp_path / 'state-b')
    assert rc == 0, [r for r in results if r.get('failed')] or stdout[-3000:]
    report = next(r for r in results if r['task'] == 'Show the report')['restore_report']
    assert [p['old_secret'] for p in report['secret_proof']] == ['not checked'] * 3, report['secret_proof']
    assert 'old secrets no longer work' not in stdout

    # the token endpoint given is the old project's, which still accepts the old secrets: the play fails
    target_c = ory_standin_factory(preset='blank')
    rc, results, stdout = _restore_role(run_playbook, target_c, keys, root, tmp_path / 'state-c',
                                        restore_ory_old_client_secrets=old, restore_ory_hydra_public_url=source.url)
    assert rc != 0
    failed = [r for r in results if r.get('failed')]
    assert failed and failed[-1]['task'].endswith('Stop - an old client secret still works'), failed or stdout[-3000:]
    accepted = sorted(c['client_id'] for c in seeding.client_records(3) if 'client_credentials' in c['grant_types'])
    for client_id in accepted:
        assert client_id in failed[-1]['msg'], failed[-1]['msg']
    assert 'still accepts the old secret' in failed[-1]['msg']
    assert not [s for s in old.values() if s in stdout]


def test_restore_role_applies_the_version_gate(ory_standin_factory, run_module, run_playbook, keys, tmp_path):
    """The restore role refuses an export from a newer release line in its plan, names the override, writes
    nothing; restore_ory_force_version=true imports with the gate's warning in the report."""
    source = ory_standin_factory(seed_identities=6, seed_clients=2)
    root = tmp_path / 'backups'
    _finalized_export(run_module, keys, source, root)

    target = ory_standin_factory(preset='blank')
    target.control('version', {'version': 'v26.1.4'})
    before = target.summary()
    rc, results, stdout = _restore_role(run_playbook, target, keys, root, tmp_path / 'state-a')
    assert rc != 0
    failed = [r for r in results if r.get('failed')]
    assert failed and failed[-1]['task'].endswith('Stop - the plan was refused'), failed or stdout[-3000:]
    msg = failed[-1]['msg']
    assert 'version gate: the export comes from kratos v26.2.0 (line 26.2), newer than the target v26.1.4 (line 26.1)' in msg, msg
    assert 'restore_ory_force_version=true' in msg, msg
    assert target.summary() == before

    rc, results, stdout = _restore_role(run_playbook, target, keys, root, tmp_path / 'state-b',
                                        restore_ory_force_version=True)
    assert rc == 0, [r for r in results if r.get('failed')] or stdout[-3000:]
    report = next(r for r in results if r['task'] == 'Show the report')['restore_report']
    assert any(w.startswith('version gate overridden by force_version: the export comes from kratos v26.2.0')
               for w in report['warnings']), report['warnings']
    plan = '\n'.join(next(r['msg'] for r in results if r['task'].endswith('Print the plan') and 'msg' in r))
    assert 'kratos export v26.2.0, target v26.1.4 - forced' in plan, plan
    assert target.summary()['identities'] == 6 and target.summary()['clients'] == 2


def test_round_trip_keeps_passwordless_users_and_second_factors(ory_standin_factory, run_module, keys, tmp_path):
    """People who never set a password (social sign-in, passkey, code, SAML) beside password users with TOTP,
    lookup secrets and WebAuthn: the export passes require_password_hashes, the import keeps every credential."""
    source = ory_standin_factory(seed_identities=60, seed_passwordless=40, seed_clients=1, default_jwk_sets=True)
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    set_dir = _open_set(run_module, tmp_path / 'backups')
    exported = run_module('ory_export', set_dir=set_dir, require_password_hashes=True, recipients=[keys.age_recipient],
                          **source.connection())
    assert not exported.get('failed'), exported
    report = exported['ory']['credentials']
    assert (report['password_hashes'], report['without_password'], report['password_hashes_withheld']) == (60, 40, 0)
    assert report['exported']['passkey'] == 10 and report['exported']['saml'] == 10
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), return_secrets=True,
                      state_dir=str(tmp_path / 'state'), **target.connection())
    assert not done.get('failed'), done
    assert done['created']['identities'] == 100

    kinds = ('password', 'oidc', 'totp', 'lookup_secret', 'webauthn', 'passkey', 'saml', 'code')
    old = dict((i['traits']['email'], i) for i in source.all_identities(credentials=kinds))
    new = dict((i['traits']['email'], i) for i in target.all_identities(credentials=kinds))
    assert sorted(new) == sorted(old)
    for email, identity in new.items():
        ocreds, ncreds = old[email]['credentials'], identity['credentials']
        assert sorted(ncreds) == sorted(ocreds), email
        for kind in ('password', 'oidc', 'saml', 'passkey', 'webauthn', 'totp', 'lookup_secret', 'code'):
            if kind not in ocreds:
                continue
            oconfig, nconfig = ocreds[kind]['config'], ncreds[kind]['config']
            if kind == 'oidc':
                oconfig = {'providers': [dict((k, v) for k, v in p.items() if not k.startswith('initial_'))
                                         for p in oconfig['providers']]}
            assert nconfig == oconfig, (email, kind)
        # the empty password credential of people without a password comes back as such
        assert ncreds['password']['identifiers'] == [email]
        if email.startswith('pwless'):
            assert ncreds['password']['config'] == {}
    for standin in (source, target):
        stats = standin.stats()
        assert stats['contract_violations'] == [] and stats['request_rejections'] == []


def test_expect_failure_needs_a_refused_client_authentication(ory_standin_factory, run_module):
    """A refusal after the secret was accepted (a grant type the client may not use) proves nothing about the
    secret: ``expect: failure`` passes only on 401 invalid_client."""
    source = ory_standin_factory(seed_identities=1, seed_clients=3)
    code_client = next(c for c in seeding.client_records(3) if 'client_credentials' not in c['grant_types'])
    right = run_module('ory_check', token={'client_id': code_client['client_id'], 'client_secret': code_client['client_secret'],
                                           'method': code_client['token_endpoint_auth_method'], 'expect': 'failure'},
                       **source.connection())
    assert right.get('failed'), right
    assert right['token']['issued'] is False and right['token']['status'] == 400 and right['token']['ok'] is False, right
    assert 'secret may still be valid' in right['token']['note']
    wrong = run_module('ory_check', tokens=[{'client_id': code_client['client_id'], 'client_secret': 'not-the-secret',
                                             'method': code_client['token_endpoint_auth_method'], 'expect': 'failure'}],
                       **source.connection())
    assert not wrong.get('failed'), wrong
    assert wrong['tokens'][0]['status'] == 401 and wrong['tokens'][0]['ok'] is True, wrong
    assert 'not-the-secret' not in json.dumps(wrong) and code_client['client_secret'] not in json.dumps(right)
