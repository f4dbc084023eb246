# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Kratos behaviours of the Ory stand-in (see tests/ory_standin/FIDELITY.md, section Kratos) and
what ory_export and ory_import make of them: the empty password credential the schema extension
gives every user, include_credential on the list and on a read by ID, passkey and SAML
credentials, TOTP identifiers, and the batch import's 400 and 409 answers per identity."""

from __future__ import annotations

import uuid

import pytest

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import

PASSWORD_USERS = 20
PASSWORDLESS = 12
IDENTITY_KINDS = ['config', 'identities']


def _open_set(run_module, root):
    result = run_module('backup_set', root=str(root), service='ory', kind='ory', state='present')
    assert not result.get('failed'), result
    return result['path']


def _export(run_module, keys, tmp_path, source, **extra):
    set_dir = _open_set(run_module, tmp_path / ('backups-%s' % uuid.uuid4().hex[:6]))
    result = run_module('ory_export', set_dir=set_dir, include=IDENTITY_KINDS, recipients=[keys.age_recipient],
                        **source.connection(**extra))
    return set_dir, result


def _import(run_module, keys, tmp_path, set_dir, target):
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    return run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=IDENTITY_KINDS,
                      state_dir=str(tmp_path / ('state-%s' % uuid.uuid4().hex[:6])), **target.connection())


def _by_email(identities):
    return dict((i['traits']['email'], i) for i in identities)


@pytest.fixture
def social_project(ory_standin_factory):
    """20 people with a password, 12 without (social sign-in, passkey, code, SAML)."""
    return ory_standin_factory(seed_identities=PASSWORD_USERS, seed_passwordless=PASSWORDLESS)


# -- the empty password credential of the schema extension (and defect: it is not a withheld hash)

def test_schema_extension_gives_passwordless_users_an_empty_password_credential(social_project):
    listed = _by_email(social_project.all_identities(credentials=('password', 'oidc', 'passkey', 'saml')))
    assert len(listed) == PASSWORD_USERS + PASSWORDLESS
    for email, identity in listed.items():
        password = identity['credentials']['password']
        assert password['identifiers'] == [email]
        if email.startswith('pwless'):
            assert password['config'] == {}
        else:
            assert password['config']['hashed_password'].startswith(('$2b$', '$argon2id$'))
        # the schema marks the e-mail as code identifier too
        assert identity['credentials']['code']['identifiers'] == [email]
    # created through the API without any credential: the same shape
    status, _h, made = social_project.api('POST', '/admin/identities', body={
        'schema_id': 'person', 'traits': {'email': 'New.Person@Example.org'}})
    assert status == 201, made
    assert made['credentials']['password']['identifiers'] == ['new.person@example.org']
    _s, _h, one = social_project.api('GET', '/admin/identities/%s' % made['id'], {'include_credential': 'password'})
    assert one['credentials']['password']['config'] == {}


def test_export_of_social_login_users_passes_require_password_hashes(social_project, run_module, keys, tmp_path):
    set_dir, result = _export(run_module, keys, tmp_path, social_project, require_password_hashes=True)
    assert not result.get('failed'), result
    report = result['ory']['credentials']
    assert report['identities'] == PASSWORD_USERS + PASSWORDLESS
    assert report['password_hashes'] == PASSWORD_USERS
    assert report['exported']['password'] == PASSWORD_USERS
    assert report['without_password'] == PASSWORDLESS
    assert report['empty_password_credentials'] == PASSWORDLESS
    assert report['password_hashes_withheld'] == 0 and report['password_hashes_missing'] == 0
    assert report['withheld'] == {} and report['withheld_cause'] is None
    assert not any('withheld' in w for w in result['ory']['warnings'])
    assert report['exported']['passkey'] == PASSWORDLESS // 4
    assert report['exported']['saml'] == PASSWORDLESS // 4


def test_hashes_the_list_withholds_fail_require_password_hashes(social_project, run_module, keys, tmp_path):
    # a Kratos that lists credentials without their configuration whatever include_credential says
    social_project.control('quirks', {'list_ignores_include_credential': True})
    _set, failed = _export(run_module, keys, tmp_path, social_project, require_password_hashes=True)
    assert failed.get('failed'), failed
    total = PASSWORD_USERS + PASSWORDLESS
    assert '%d identities have a password credential whose hash the API withheld' % total in failed['msg']
    assert 'ory/kratos#3190' in failed['msg'] and 'require_password_hashes=true' in failed['msg']

    # without the flag: a warning, and the report tells the withheld apart from the absent
    _set, result = _export(run_module, keys, tmp_path, social_project)
    assert not result.get('failed'), result
    report = result['ory']['credentials']
    assert report['password_hashes_withheld'] == total and report['password_hashes'] == 0
    assert report['without_password'] == 0
    assert report['withheld_cause'] == 'list_ignored_include_credential'
    assert report['withheld']['password'] == total and report['withheld']['oidc'] == PASSWORD_USERS // 5 + PASSWORDLESS // 4
    assert any('%d identities have a password credential whose hash the API withheld' % total in w
               for w in result['ory']['warnings'])
    assert any('oidc (%d)' % report['withheld']['oidc'] in w for w in result['ory']['warnings'])


def test_require_password_hashes_needs_the_password_credential(social_project, run_module, keys, tmp_path):
    _set, failed = _export(run_module, keys, tmp_path, social_project, require_password_hashes=True,
                           identity_credentials=['oidc'])
    assert failed.get('failed') and 'needs password in identity_credentials' in failed['msg'], failed
    # not asked for, a password credential is neither a hash nor a missing password
    _set, result = _export(run_module, keys, tmp_path, social_project, identity_credentials=['oidc'])
    assert not result.get('failed'), result
    report = result['ory']['credentials']
    assert report['password_not_requested'] == PASSWORD_USERS + PASSWORDLESS
    assert report['without_password'] == 0 and report['password_hashes_withheld'] == 0


# -- include_credential on the list and on a read by ID

def test_include_credential_on_list_and_get(social_project):
    status, _h, plain = social_project.api('GET', '/admin/identities', {'page_size': 50})
    assert status == 200
    assert all('config' not in c for i in plain for c in i['credentials'].values())
    _s, _h, some = social_project.api('GET', '/admin/identities', {'page_size': 50, 'include_credential': ['password']})
    for identity in some:
        for kind, cred in identity['credentials'].items():
            assert ('config' in cred) == (kind == 'password'), (kind, cred)
    _s, _h, one = social_project.api('GET', '/admin/identities/%s' % some[0]['id'], {'include_credential': ['code']})
    assert 'config' in one['credentials']['code'] and 'config' not in one['credentials']['password']
    status, _h, refused = social_project.api('GET', '/admin/identities', {'include_credential': ['secret']})
    assert status == 400 and 'include_credential' in refused['error']['reason']

    social_project.control('quirks', {'list_ignores_include_credential': True})
    _s, _h, ignored = social_project.api('GET', '/admin/identities', {'page_size': 50, 'include_credential': ['password']})
    assert all('config' not in c for i in ignored for c in i['credentials'].values())
    _s, _h, by_id = social_project.api('GET', '/admin/identities/%s' % ignored[0]['id'], {'include_credential': ['password']})
    assert isinstance(by_id['credentials']['password']['config'], dict)


# -- passkey, SAML and TOTP through export and import

def test_passkey_saml_and_totp_survive_export_and_import(social_project, ory_standin_factory, run_module, keys, tmp_path):
    target = ory_standin_factory(preset='blank')
    set_dir, exported = _export(run_module, keys, tmp_path, social_project)
    assert not exported.get('failed'), exported
    assert any('TOTP' in w and 'ory/kratos#4561' in w for w in exported['ory']['warnings'])
    done = _import(run_module, keys, tmp_path, set_dir, target)
    assert not done.get('failed'), done
    assert done['created']['identities'] == PASSWORD_USERS + PASSWORDLESS

    wanted = ('password', 'oidc', 'passkey', 'saml', 'totp', 'webauthn', 'lookup_secret', 'code')
    old = _by_email(social_project.all_identities(credentials=wanted))
    new = _by_email(target.all_identities(credentials=wanted))
    assert sorted(new) == sorted(old)
    seen = set()
    for email, identity in new.items():
        ocreds, ncreds = old[email]['credentials'], identity['credentials']
        assert sorted(ncreds) == sorted(ocreds), email
        seen.update(ncreds)
        if 'passkey' in ocreds:
            # importPasskeyCredentials: the user handle (as text) is the identifier
            assert ncreds['passkey']['config'] == ocreds['passkey']['config']
            assert ncreds['passkey']['identifiers'] == [bytes(ocreds['passkey']['config']['user_handle']).decode()]
        if 'saml' in ocreds:
            assert ncreds['saml']['config'] == ocreds['saml']['config']
            assert ncreds['saml']['identifiers'] == ocreds['saml']['identifiers']
        if 'totp' in ocreds:
            assert ncreds['totp']['config'] == ocreds['totp']['config']
            # enrolled in settings: the identity ID; imported: no identifier (ory/kratos#4561)
            assert ocreds['totp']['identifiers'] == [old[email]['id']]
            assert ncreds['totp']['identifiers'] == []
        if email.startswith('pwless'):
            assert ncreds['password'] == dict(ncreds['password'], identifiers=[email], config={})
        else:
            assert ncreds['password']['config'] == ocreds['password']['config']
    assert {'passkey', 'saml', 'totp', 'oidc', 'code'} <= seen


# -- batch import: 400 and 409 per identity, 400 for the whole request

def _patch(standin, creates):
    patches = [{'patch_id': str(uuid.uuid4()), 'create': body} for body in creates]
    status, _h, answer = standin.api('PATCH', '/admin/identities', body={'identities': patches})
    return status, answer, [p['patch_id'] for p in patches]


def test_batch_import_answers_per_identity(ory_standin_factory):
    standin = ory_standin_factory(seed_identities=3)
    taken = standin.all_identities()[0]['traits']['email']
    status, answer, ids = _patch(standin, [
        {'schema_id': 'person', 'traits': {'email': 'fresh@example.org'}},
        {'schema_id': 'person', 'traits': {'email': taken}},  # the schema extension's password identifier is taken
        {'schema_id': 'nope', 'traits': {'email': 'other@example.org'}},  # schema error, no credentials: this one
        {'schema_id': 'person', 'traits': {'email': 'linked@example.org'}, 'external_id': 'ext-1',
         'credentials': {'oidc': {'config': {'providers': [{'provider': 'google', 'subject': 's-1'}]}}}},
    ])
    assert status == 200, answer
    entries = answer['identities']
    assert [e['patch_id'] for e in entries] == ids
    assert [e['action'] for e in entries] == ['create', 'error', 'error', 'create']
    assert entries[0]['identity'] and entries[3]['identity']
    assert 'identity' not in entries[1] and 'identity' not in entries[2]
    assert entries[1]['error']['code'] == 409 and 'exists already' in entries[1]['error']['message']
    assert entries[2]['error']['code'] == 400
    assert standin.summary()['identities'] == 5


def test_batch_import_refuses_the_request_for_an_unimportable_credential(ory_standin_factory):
    standin = ory_standin_factory(seed_identities=1)
    status, answer, _ids = _patch(standin, [
        {'schema_id': 'person', 'traits': {'email': 'good@example.org'}},
        {'schema_id': 'person', 'traits': {'email': 'bad@example.org'},
         'credentials': {'password': {'config': {'hashed_password': 'plain-text-is-no-hash'}}}},
    ])
    assert status == 400 and 'known hash format' in answer['error']['message'], answer
    assert standin.summary()['identities'] == 1  # nothing written, the good one neither
    # with credentials the schema is checked before the import: a schema error refuses the request too
    status, answer, _ids = _patch(standin, [
        {'schema_id': 'person', 'traits': {'email': 'good@example.org'}},
        {'schema_id': 'nope', 'traits': {'email': 'x@example.org'},
         'credentials': {'oidc': {'config': {'providers': [{'provider': 'google', 'subject': 's-2'}]}}}},
    ])
    assert status == 400, answer
    assert standin.summary()['identities'] == 1
    # every patch failing on a conflict: 409 for the request
    taken = standin.all_identities()[0]['traits']['email']
    status, answer, _ids = _patch(standin, [{'schema_id': 'person', 'traits': {'email': taken}}])
    assert status == 409, answer


def test_import_reports_a_conflict_the_target_answers_with_409(social_project, ory_standin_factory, run_module, keys, tmp_path):
    target = ory_standin_factory(preset='blank')
    set_dir, exported = _export(run_module, keys, tmp_path, social_project)
    assert not exported.get('failed'), exported
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    # someone signed up in the target with the address of a passwordless user of the source
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=['config'],
                      state_dir=str(tmp_path / 'state-config'), **target.connection())
    assert not done.get('failed'), done
    status, _h, made = target.api('POST', '/admin/identities', body={
        'schema_id': 'person', 'traits': {'email': 'pwless000002@example.org'}})
    assert status == 201, made
    common = dict(set_dir=set_dir, identity=str(keys.age_identity), include=IDENTITY_KINDS, state_dir=str(tmp_path / 'state'),
                  **target.connection())
    # the plan finds it through the identifier of the empty password credential, before anything is written
    refused = run_module('ory_import', **common)
    assert refused.get('failed') and 'nothing was written' in refused['msg'], refused
    planned = refused['conflicts']['identities']
    assert [(c['credential'], c['identifier']) for c in planned] == [('password', 'pwless000002@example.org')]
    assert target.summary()['identities'] == 1
    # told to go on, the batch answers 409 for that identity and creates the others
    done = run_module('ory_import', fail_on_conflict=False, **common)
    assert not done.get('failed'), done
    assert done['created']['identities'] == PASSWORD_USERS + PASSWORDLESS - 1
    answered = [c for c in done['conflicts']['identities'] if c.get('code')]
    assert [c['code'] for c in answered] == [409], done['conflicts']


@pytest.mark.parametrize('every_failure_ok', [False, True], ids=['network-409', 'kratos-200'])
def test_a_batch_where_every_identity_conflicts(every_failure_ok, ory_standin_factory, run_module, keys, tmp_path):
    """A batch in which every patch fails: Ory Network answers 409 for the request (the handler's documentation),
    Kratos' handler code 200 with an error per patch; the import reports the same conflicts either way."""
    source = ory_standin_factory(seed_identities=3, seed_passwordless=2)
    target = ory_standin_factory(preset='blank')
    target.control('quirks', {'batch_ok_when_every_patch_fails': every_failure_ok})
    set_dir, exported = _export(run_module, keys, tmp_path, source)
    assert not exported.get('failed'), exported
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    assert not run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=['config'],
                          state_dir=str(tmp_path / 'state-config'), **target.connection()).get('failed')
    # everyone signed up again in the target before the restore
    for person in source.all_identities():
        status, _h, made = target.api('POST', '/admin/identities', body={
            'schema_id': 'person', 'traits': {'email': person['traits']['email']}})
        assert status == 201, made
    status, answer, _ids = _patch(target, [{'schema_id': 'person', 'traits': {'email': source.all_identities()[0]['traits']['email']}}])
    assert status == (200 if every_failure_ok else 409), answer
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=IDENTITY_KINDS,
                      state_dir=str(tmp_path / 'state'), fail_on_conflict=False, **target.connection())
    assert not done.get('failed'), done
    assert done['created']['identities'] == 0
    answered = [c for c in done['conflicts']['identities'] if c.get('code')]
    assert sorted(c['code'] for c in answered) == [409] * 5, done['conflicts']
    assert target.summary()['identities'] == 5
