# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The plan of an Ory import, against an in-memory target that answers like the admin APIs.

The bundle items are made the way ory_export makes them (import_identity, identity_identifiers,
import_client) from listings shaped like Kratos, Hydra and Keto answers: identities with the empty
password credential of the schema extension (social sign-in, passkey), private_key_jwt and public
clients, and relation tuples with subject sets whose object is an identity.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

import pytest

from ansible.module_utils.six.moves.urllib.parse import parse_qs, urlsplit

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._ory.apply import Importer
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import KINDS, OryBundle
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryConnection
from ansible_collections.idp.recovery.plugins.module_utils._ory.export import identity_identifiers, import_client, import_identity
from ansible_collections.idp.recovery.plugins.module_utils._ory.plan import ImportPlanner, ory_version_gate, work_left

OLD_ALICE = '3f1c0d3a-0f55-4d9e-8a4c-0e2b7a9d6c11'
OLD_BOB = '9b2e6f10-1d2c-4e3f-8a9b-7c6d5e4f3a21'
OLD_CAROL = 'c0ffee00-0000-4000-8000-000000000001'
STAMP = '2026-02-03T04:05:06Z'
BCRYPT = '$2b$04$abcdefghijklmnopqrstuu0cV1Rg5yB0dDkQYz7kS8eR2bJ1i6fW.'


def cred(kind, identifiers, config):
    """A credential as GET /admin/identities?include_credential=... lists it."""
    return {'type': kind, 'identifiers': identifiers, 'config': config, 'version': 0, 'created_at': STAMP, 'updated_at': STAMP}


def listed(identity_id, email, credentials, schema_id='default'):
    return {'id': identity_id, 'schema_id': schema_id, 'schema_url': 'http://kratos.test/schemas/ZGVmYXVsdA',
            'state': 'active', 'traits': {'email': email, 'name': {'first': 'A', 'last': 'B'}},
            'verifiable_addresses': [{'id': 'x', 'value': email, 'via': 'email', 'verified': True, 'status': 'completed',
                                      'verified_at': STAMP, 'created_at': STAMP, 'updated_at': STAMP}],
            'recovery_addresses': [{'id': 'y', 'value': email, 'via': 'email', 'created_at': STAMP, 'updated_at': STAMP}],
            'metadata_public': None, 'metadata_admin': {'team': 'platform'}, 'created_at': STAMP, 'updated_at': STAMP,
            'credentials': credentials}


def source_identities():
    """Alice has a password; Bob signs in with Google only (the empty password credential of the schema
    extension stays); Carol has a passkey only, in a second schema."""
    return [
        listed(OLD_ALICE, 'alice@example.org', {
            'password': cred('password', ['alice@example.org'], {'hashed_password': BCRYPT}),
            'totp': cred('totp', [], {'totp_url': 'otpauth://totp/Example:alice@example.org?secret=JBSWY3DPEHPK3PXP'}),
        }),
        listed(OLD_BOB, 'bob@example.org', {
            'password': cred('password', ['bob@example.org'], {}),
            'oidc': cred('oidc', ['google:g-bob'], {'providers': [{'provider': 'google', 'subject': 'g-bob',
                                                                  'initial_id_token': 'ey...'}]}),
            'code': cred('code', ['bob@example.org'], {'addresses': [{'channel': 'email', 'address': 'bob@example.org'}]}),
        }),
        listed(OLD_CAROL, 'carol@example.org', {
            'passkey': cred('passkey', [], {'credentials': [{'id': [1, 2, 3], 'public_key': [4, 5, 6], 'attestation_type': 'none',
                                                             'display_name': 'passkey', 'is_passwordless': True,
                                                             'added_at': STAMP}], 'user_handle': [7, 8]}),
        }, schema_id='customer'),
    ]


def source_clients():
    return [
        {'client_id': 'svc-0', 'client_name': 'Service 0', 'token_endpoint_auth_method': 'client_secret_basic',
         'grant_types': ['client_credentials'], 'scope': 'read write', 'created_at': STAMP, 'updated_at': STAMP},
        {'client_id': 'svc-1', 'client_name': 'Service 1', 'token_endpoint_auth_method': 'client_secret_post',
         'grant_types': ['client_credentials'], 'scope': 'read', 'created_at': STAMP, 'updated_at': STAMP},
        {'client_id': 'svc-keys-inline', 'token_endpoint_auth_method': 'private_key_jwt', 'grant_types': ['client_credentials'],
         'token_endpoint_auth_signing_alg': 'RS256', 'jwks': {'keys': [{'kty': 'RSA', 'kid': 'k1', 'n': 'AQAB', 'e': 'AQAB'}]}},
        {'client_id': 'svc-keys-uri', 'token_endpoint_auth_method': 'private_key_jwt', 'grant_types': ['client_credentials'],
         'jwks_uri': 'https://reporting.example.org/.well-known/jwks.json'},
        {'client_id': 'spa-public', 'token_endpoint_auth_method': 'none', 'grant_types': ['authorization_code'],
         'redirect_uris': ['https://app.example.org/callback']},
    ]


def source_tuples():
    """Nested subject sets, an identity as subject, as object and as the object of a subject set."""
    return [
        {'namespace': 'Group', 'object': 'group-0', 'relation': 'members',
         'subject_set': {'namespace': 'Group', 'object': 'team-0', 'relation': 'members'}},
        {'namespace': 'Group', 'object': 'team-0', 'relation': 'members', 'subject_id': OLD_ALICE},
        {'namespace': 'User', 'object': OLD_ALICE, 'relation': 'delegates', 'subject_id': OLD_BOB},
        {'namespace': 'Document', 'object': 'doc-1', 'relation': 'viewers',
         'subject_set': {'namespace': 'User', 'object': OLD_ALICE, 'relation': 'delegates'}},
        {'namespace': 'Document', 'object': 'doc-2', 'relation': 'viewers', 'subject_id': 'service-account-7'},
    ]


JWK_A = {'kty': 'EC', 'kid': 'id-token-1', 'crv': 'P-256', 'x': 'xx', 'y': 'yy', 'd': 'dd', 'use': 'sig', 'alg': 'ES256'}
JWK_B = {'kty': 'RSA', 'kid': 'access-1', 'n': 'nn', 'e': 'AQAB', 'd': 'dd', 'use': 'sig', 'alg': 'RS256'}


class MemoryBundle(OryBundle):
    """An OryBundle whose payloads are in memory (the files as ory_export writes them)."""

    def __init__(self, identities=None, clients=None, tuples=None, jwk_sets=None, versions=None):  # pylint: disable=super-init-not-called
        self.set_dir = '/backups/ory/20260203T040506Z'
        self.prefix = 'ory'
        self.keys = None
        self.files = {}
        included = []
        counts = {}
        if identities is not None:
            included.append('identities')
            self.files['restore/identities.json'] = [import_identity(i)[0] for i in identities]
            self.files['restore/identity-index.json'] = [
                {'id': i['id'], 'external_id': i.get('external_id') or i['id'], 'identifiers': identity_identifiers(i)}
                for i in identities]
            counts['identities'] = len(identities)
        if clients is not None:
            included.append('oauth2_clients')
            self.files['restore/oauth2-clients.json'] = [import_client(c) for c in clients]
            counts['oauth2_clients'] = len(clients)
        if tuples is not None:
            included.append('relationships')
            self.files['restore/relationships.json'] = list(tuples)
            counts['relationships'] = len(tuples)
        if jwk_sets is not None:
            included.append('jwks')
            self.files['resources/jwk-sets.json'] = jwk_sets
            counts['jwk_sets'] = len(jwk_sets)
        self.ory = {'format': 1, 'prefix': 'ory', 'deployment': 'self_hosted', 'included': sorted(included), 'counts': counts,
                    'api_versions': versions or {'kratos': 'v1.3.1', 'hydra': 'v2.3.0', 'keto': 'v0.14.0'},
                    'files': dict((name, None) for name in self.files)}
        self.payloads = {}
        self.counts = counts

    def rel(self, name):
        return name if name in self.files else None

    def stream(self, name, handle):
        items = self.files[self.need(name)]
        for item in items:
            handle(json.loads(json.dumps(item)))
        return len(items)

    def load(self, name):
        return json.loads(json.dumps(self.files[self.need(name)]))


class Target(object):
    """The admin APIs of a target project (Kratos, Hydra, Keto), as a transport for OryClient."""

    def __init__(self, identities=(), clients=(), tuples=(), jwk_sets=None, namespaces=('Group', 'User', 'Document'),
                 schemas=('default', 'customer'), versions=None, page_size=2):
        self.identities = list(identities)
        self.clients = list(clients)
        self.tuples = list(tuples)
        self.jwk_sets = dict(jwk_sets or {})
        self.namespaces = list(namespaces)
        self.schemas = list(schemas)
        self.versions = versions or {'kratos': 'v1.3.1', 'hydra': 'v2.3.0', 'keto': 'v0.14.0'}
        self.page_size = page_size
        self.calls = []

    def __call__(self, method, url, data, headers, timeout):
        split = urlsplit(url)
        service = split.netloc.split('.')[0]
        query = dict((k, v[-1]) for k, v in parse_qs(split.query).items())
        self.calls.append((method, service, split.path))
        if method != 'GET':
            return 405, {}, b'{"error": {"code": 405, "message": "the plan only reads"}}'
        path = split.path
        if path == '/version':
            return self.answer({'version': self.versions[service]})
        if service == 'kratos' and path == '/admin/identities':
            return self.linked(url, self.identities, query)
        if service == 'kratos' and path == '/schemas':
            return self.answer([{'id': s, 'schema': {'type': 'object'}} for s in self.schemas])
        if service == 'hydra' and path == '/admin/clients':
            return self.linked(url, self.clients, query)
        if service == 'hydra' and path.startswith('/admin/keys/'):
            name = path[len('/admin/keys/'):]
            if name not in self.jwk_sets:
                return 404, {}, b'{"error": {"code": 404, "status": "Not Found", "message": "Unable to locate the resource"}}'
            return self.answer({'keys': self.jwk_sets[name]})
        if service == 'keto' and path == '/namespaces':
            return self.answer({'namespaces': [{'name': n} for n in self.namespaces]})
        if service == 'keto' and path == '/relation-tuples':
            found = [t for t in self.tuples if t['namespace'] == query.get('namespace')]
            start = int(query.get('page_token') or 0)
            end = start + self.page_size
            return self.answer({'relation_tuples': found[start:end], 'next_page_token': str(end) if end < len(found) else ''})
        return 404, {}, b'{"error": {"code": 404, "message": "no such route"}}'

    @staticmethod
    def answer(body, headers=None):
        return 200, dict(headers or {}), json.dumps(body).encode('utf-8')

    def linked(self, url, items, query):
        start = int(query.get('page_token') or 0)
        size = int(query.get('page_size') or 250)
        end = start + min(size, self.page_size)
        headers = {}
        if end < len(items):
            headers['link'] = '<%s?page_size=%d&page_token=%d>; rel="next"' % (url.split('?')[0], size, end)
        return self.answer(items[start:end], headers)

    def writes(self):
        return [call for call in self.calls if call[0] != 'GET']


def connection(target):
    params = {'deployment': 'self_hosted', 'kratos_admin_url': 'http://kratos.test', 'hydra_admin_url': 'http://hydra.test',
              'keto_read_url': 'http://keto.test', 'keto_write_url': 'http://keto.test'}
    return OryConnection(params, opener=target, sleep=lambda seconds: None)


def planner(target, cls=ImportPlanner, check_mode=False, **params):
    params.setdefault('include', list(KINDS))
    return cls(connection(target), params, None, check_mode=check_mode)


def restored(old_id, new_id, email, credentials):
    """An identity in the target, imported before (old ID in external_id)."""
    out = listed(new_id, email, credentials)
    out['external_id'] = old_id
    return out


# -- identities

def test_new_identities_are_all_created_and_the_index_keeps_the_old_ids():
    bundle = MemoryBundle(identities=source_identities())
    made = planner(Target())
    plan = made.plan(bundle)
    assert plan == {'identities': {'create': 3, 'existing': 0, 'conflicts': 0}}
    assert made.index == {OLD_ALICE: OLD_ALICE, OLD_BOB: OLD_BOB, OLD_CAROL: OLD_CAROL}
    assert made.result['conflicts']['identities'] == []


def test_social_login_identity_exports_no_password_but_keeps_its_identifiers():
    body, kinds, state = import_identity(source_identities()[1])
    assert state == 'none' and kinds == ['oidc']
    assert body['credentials'] == {'oidc': {'config': {'providers': [{'provider': 'google', 'subject': 'g-bob'}]}}}
    assert identity_identifiers(source_identities()[1]) == {'password': ['bob@example.org'], 'oidc': ['google:g-bob']}


def test_identities_imported_before_are_existing_and_map_to_their_new_ids():
    target = Target(identities=[restored(OLD_ALICE, 'new-alice', 'alice@example.org',
                                         {'password': cred('password', ['alice@example.org'], None)})])
    made = planner(target)
    plan = made.plan(MemoryBundle(identities=source_identities()))
    assert plan['identities'] == {'create': 2, 'existing': 1, 'conflicts': 0}
    assert made.new_id_of(OLD_ALICE) == 'new-alice'
    assert made.new_id_of(OLD_BOB) is None          # an identity of the bundle, not in the target yet
    assert made.new_id_of('service-account-7') is False   # not an identity of the bundle


def test_identifiers_held_by_another_identity_are_conflicts():
    others = [
        listed('other-1', 'alice@example.org', {'password': cred('password', ['alice@example.org'], None)}),
        listed('other-2', 'someone@example.org', {'password': cred('password', ['someone@example.org'], None),
                                                  'oidc': cred('oidc', ['google:g-bob'], None)}),
    ]
    made = planner(Target(identities=others))
    plan = made.plan(MemoryBundle(identities=source_identities()))
    conflicts = made.result['conflicts']['identities']
    assert plan['identities'] == {'create': 3, 'existing': 0, 'conflicts': 2}
    assert sorted((c['old_id'], c['credential'], c['identifier']) for c in conflicts) == [
        (OLD_ALICE, 'password', 'alice@example.org'), (OLD_BOB, 'oidc', 'google:g-bob')]
    assert all(c['reason'] == 'identifier in use by another identity' for c in conflicts)


def test_a_schema_missing_in_the_target_is_a_conflict():
    bundle = MemoryBundle(identities=source_identities())
    bundle.validate(set(KINDS), network=False)   # collects the schema IDs of the bundle
    assert bundle.schema_ids == set(['default', 'customer'])
    made = planner(Target(schemas=('default',)))
    plan = made.plan(bundle)
    assert plan['identities']['conflicts'] == 1
    assert made.result['conflicts']['identities'][0]['schema_id'] == 'customer'


# -- OAuth2 clients

def test_clients_plan_secrets_only_for_clients_that_authenticate_with_one():
    target = Target(clients=[dict(source_clients()[1], client_secret=None)])
    made = planner(target, client_secrets={'svc-0': 'from-the-vault', 'svc-keys-inline': 'unused'})
    plan = made.plan(MemoryBundle(clients=source_clients()))
    assert plan['oauth2_clients'] == {'create': 4, 'existing': 1, 'conflicts': 0, 'secrets_supplied': 1,
                                      'secrets_to_generate': 0, 'without_secret': {'keys': 2, 'none': 1}}
    assert made.target_clients == set(['svc-1'])
    assert any('client_secrets names 1 clients' in w and 'svc-keys-inline' in w for w in made.warnings)


def test_clients_without_a_supplied_secret_get_a_new_one():
    made = planner(Target())
    plan = made.plan(MemoryBundle(clients=source_clients()))
    assert plan['oauth2_clients']['secrets_to_generate'] == 2
    assert sorted(made.secrets_to_generate) == ['svc-0', 'svc-1']
    assert made.warnings == []


def test_exported_clients_carry_no_secret_and_keep_their_keys():
    bodies = [import_client(c) for c in source_clients()]
    assert all('client_secret' not in b and 'created_at' not in b for b in bodies)
    assert bodies[2]['jwks'] == source_clients()[2]['jwks']
    assert bodies[3]['jwks_uri'].startswith('https://')


# -- JWK sets

@pytest.mark.parametrize('current, replace, action', [
    (None, True, 'create'),
    ([], True, 'create'),
    ([JWK_A], True, 'same'),
    ([JWK_B], True, 'replace'),
    ([JWK_B], False, 'conflict'),
])
def test_jwk_set_actions(current, replace, action):
    target = Target(jwk_sets={} if current is None else {'hydra.openid.id-token': current})
    made = planner(target, replace_jwk_sets=replace)
    plan = made.plan(MemoryBundle(jwk_sets={'hydra.openid.id-token': {'keys': [JWK_A]}}))
    assert plan['jwk_sets'] == {'hydra.openid.id-token': action}
    assert work_left(plan) == (action in ('create', 'replace'))


# -- relation tuples

def test_tuples_naming_identities_not_imported_yet_are_planned_as_created():
    bundle = MemoryBundle(identities=source_identities(), tuples=source_tuples())
    made = planner(Target())
    plan = made.plan(bundle)
    assert plan['relationships'] == {'create': 5, 'existing': 0, 'unmapped': 0, 'conflicts': 0}


def test_tuples_already_in_the_target_are_existing_after_remapping():
    target = Target(
        identities=[restored(OLD_ALICE, 'new-alice', 'alice@example.org', {}), restored(OLD_BOB, 'new-bob', 'bob@example.org', {})],
        tuples=[
            {'namespace': 'Group', 'object': 'group-0', 'relation': 'members',
             'subject_set': {'namespace': 'Group', 'object': 'team-0', 'relation': 'members'}},
            {'namespace': 'User', 'object': 'new-alice', 'relation': 'delegates', 'subject_id': 'new-bob'},
            {'namespace': 'Document', 'object': 'doc-1', 'relation': 'viewers',
             'subject_set': {'namespace': 'User', 'object': 'new-alice', 'relation': 'delegates'}},
        ])
    made = planner(target, include=['relationships'])
    plan = made.plan(MemoryBundle(identities=source_identities(), tuples=source_tuples()))
    # the tuples are paged through (page_size 2) and compared with the subjects remapped to the new IDs
    assert plan['relationships'] == {'create': 2, 'existing': 3, 'unmapped': 0, 'conflicts': 0}
    assert made.remap(source_tuples()[3])['subject_set'] == {'namespace': 'User', 'object': 'new-alice',
                                                             'relation': 'delegates'}


def test_tuples_naming_identities_outside_the_import_are_unmapped():
    made = planner(Target(), include=['relationships'])
    plan = made.plan(MemoryBundle(identities=source_identities(), tuples=source_tuples()))
    assert plan['relationships'] == {'create': 2, 'existing': 0, 'unmapped': 3, 'conflicts': 0}


def test_tuples_without_identities_in_the_export_keep_their_subjects():
    made = planner(Target())
    plan = made.plan(MemoryBundle(tuples=source_tuples()))
    assert plan['relationships']['create'] == 5
    assert any('not remapped' in w for w in made.warnings)


def test_a_namespace_missing_in_the_target_is_a_conflict():
    made = planner(Target(namespaces=('Group', 'User')))
    plan = made.plan(MemoryBundle(tuples=source_tuples()))
    assert plan['relationships']['conflicts'] == 1
    assert made.result['conflicts']['relationships'] == [
        {'namespace': 'Document', 'reason': 'namespace is not defined in the target (restore the config first)'}]


# -- the version gate

@pytest.mark.parametrize('export, target, ok, warned', [
    ('v1.3.1', 'v1.3.1', True, False),
    ('v1.3.0', 'v1.3.2', True, False),
    ('v1.2.0', 'v1.3.1', True, True),
    ('v1.3.1', 'v1.2.0', False, False),
    (None, 'v1.3.1', False, False),
    ('v1.3.1', None, False, False),
    ('master-abc', 'master-abc', True, False),
])
def test_ory_version_gate(export, target, ok, warned):
    gate = ory_version_gate('kratos', export, target)
    assert gate['ok'] is ok
    assert bool(gate['warning']) is warned
    assert ory_version_gate('kratos', export, target, force=True)['ok'] is True


def test_the_gate_reads_only_the_services_whose_data_is_restored_and_refuses_a_newer_export():
    target = Target(versions={'kratos': 'v1.2.0', 'hydra': 'v2.3.0', 'keto': 'v0.14.0'})
    made = planner(target, include=['oauth2_clients'])
    bundle = MemoryBundle(identities=source_identities(), clients=source_clients())
    gates = made.version_gates(bundle, network=False)
    assert sorted(gates) == ['hydra'] and gates['hydra']['ok']
    made = planner(target)
    with pytest.raises(RecoveryError, match='version gate: the export comes from kratos v1.3.1') as caught:
        made.version_gates(bundle, network=False)
    assert not caught.value.details['version_gate']['kratos']['ok']
    assert target.writes() == []


def test_a_forced_gate_passes_with_a_warning():
    target = Target(versions={'kratos': 'v1.2.0', 'hydra': 'v2.3.0', 'keto': 'v0.14.0'})
    made = planner(target, force_version=True)
    gates = made.version_gates(MemoryBundle(identities=source_identities()), network=False)
    assert gates['kratos']['forced']
    assert any(w.startswith('version gate overridden by force_version') for w in made.warnings)


# -- check mode and the whole run up to the first write

def test_check_mode_plans_everything_and_writes_nothing():
    bundle = MemoryBundle(identities=source_identities(), clients=source_clients(), tuples=source_tuples(),
                          jwk_sets={'hydra.openid.id-token': {'keys': [JWK_A]}})
    target = Target()
    result = planner(target, cls=Importer, check_mode=True, return_secrets=True).run(bundle)
    assert result['changed'] is True
    assert result['msg'] == 'check mode: nothing was written'
    assert result['validated'] == {'identities': 3, 'oauth2_clients': 5, 'jwk_sets': 1, 'relationships': 5}
    assert result['plan']['identities']['create'] == 3
    assert result['plan']['oauth2_clients']['secrets_to_generate'] == 2
    assert sorted(result['version_gate']) == ['hydra', 'keto', 'kratos']
    assert target.writes() == []
    assert 'state_dir' not in result


def test_nothing_to_do_when_the_target_holds_everything():
    bundle = MemoryBundle(identities=source_identities()[:1], clients=source_clients()[2:3])
    target = Target(identities=[restored(OLD_ALICE, 'new-alice', 'alice@example.org', {})], clients=source_clients()[2:3])
    result = planner(target, cls=Importer).run(bundle)
    assert result['changed'] is False and result['msg'] == 'nothing to do'
    assert result['plan']['identities'] == {'create': 0, 'existing': 1, 'conflicts': 0}
    assert target.writes() == []


def test_conflicts_stop_the_run_before_the_first_write():
    others = [listed('other-1', 'alice@example.org', {'password': cred('password', ['alice@example.org'], None)})]
    target = Target(identities=others)
    with pytest.raises(RecoveryError, match='conflicts with the export; nothing was written'):
        planner(target, cls=Importer).run(MemoryBundle(identities=source_identities()))
    assert target.writes() == []


def test_new_secrets_need_recipients_or_return_secrets():
    target = Target()
    with pytest.raises(RecoveryError, match='2 OAuth2 clients need a new secret'):
        planner(target, cls=Importer, check_mode=True).run(MemoryBundle(clients=source_clients()))
    assert target.writes() == []
