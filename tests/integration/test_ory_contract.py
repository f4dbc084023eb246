# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Ory stand-in against Ory's published contract, so that it cannot drift from it.

Every answer the stand-in gives is parsed with the official generated models of the ``ory-client``
package (and, with ``--validate-responses``, checked against the spec before it is sent); every
request body the collection writes is parsed with those models without leaving unknown fields;
routes, rate-limit buckets and thresholds come from the spec files in ``../shared/specs/ory``."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from ory_client import models

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from ory_standin.spec import load_bucket_endpoints, load_thresholds
from ory_standin.server import SERVICE_OF_PREFIX, Limiter, minimum_duration

# the operations the collection's client calls, with the service whose spec defines them
USED = [
    ('kratos', 'GET', '/admin/identities'), ('kratos', 'PATCH', '/admin/identities'),
    ('kratos', 'GET', '/admin/identities/by/external/{externalID}'), ('kratos', 'GET', '/schemas'),
    ('kratos', 'GET', '/version'),
    ('hydra', 'GET', '/admin/clients'), ('hydra', 'POST', '/admin/clients'), ('hydra', 'GET', '/admin/clients/{id}'),
    ('hydra', 'GET', '/admin/keys/{set}'), ('hydra', 'PUT', '/admin/keys/{set}'), ('hydra', 'POST', '/oauth2/token'),
    ('keto', 'GET', '/namespaces'), ('keto', 'GET', '/relation-tuples'), ('keto', 'PATCH', '/admin/relation-tuples'),
    ('keto', 'GET', '/relation-tuples/check/openapi'),
    ('console', 'GET', '/projects/{project_id}'), ('console', 'PUT', '/projects/{project_id}'),
]


def no_extras(model, where='body'):
    """True when a parsed ory-client model (and every nested one) kept no unknown field."""
    if isinstance(model, BaseModel):
        extra = getattr(model, 'additional_properties', None) or {}
        assert not extra, '%s: fields unknown to the ory-client model: %s' % (where, sorted(extra))
        for name in type(model).model_fields:
            no_extras(getattr(model, name), '%s.%s' % (where, name))
    elif isinstance(model, list):
        for index, item in enumerate(model):
            no_extras(item, '%s[%d]' % (where, index))
    elif isinstance(model, dict):
        for key, item in model.items():
            no_extras(item, '%s.%s' % (where, key))


def test_operations_and_buckets_come_from_the_specs(ory_specs):
    buckets = load_bucket_endpoints()
    for service, method, template in USED:
        found = ory_specs[service].operation(method, template.replace('{', '').replace('}', ''))
        assert found is not None and found[0] == template, (service, method, template)
        if service != 'console' and template != '/version':
            assert found[1]['x-ory-ratelimit-bucket'] == buckets[(method, template)], (method, template)
    # the stand-in routes each path to the service whose spec holds it
    for prefix, service in SERVICE_OF_PREFIX:
        assert any(path.startswith(prefix) for path in ory_specs[service].doc['paths']), prefix


def test_production_thresholds_are_the_published_ones():
    table = load_thresholds()
    assert table[('kratos-admin-medium', 'Production', 'prod')] == (90, 5)
    assert table[('kratos-admin-low', 'Production', 'prod')] == (175, 8)


def test_limiter_counts_windows_and_tells_when_to_come_back():
    now = [1000.25]
    limiter = Limiter({'b': (3, 2)}, clock=lambda: now[0])
    assert limiter.hit('b')[0] and limiter.hit('b')[0]
    allowed, headers = limiter.hit('b')
    assert not allowed and headers['x-ratelimit-remaining'] == '0' and headers['x-ratelimit-reset'] == '1'
    now[0] = 1001.1
    assert limiter.hit('b')[0]
    allowed, headers = limiter.hit('b')
    # the minute window (3 a minute) is spent until the next whole minute, 1020.0
    assert not allowed and int(headers['x-ratelimit-reset']) == 19
    # 90 requests in the first minute at 5 a second, the last 10 in the first two seconds of the next
    assert minimum_duration(100, 90, 5, 1020.0) == pytest.approx(61.0, abs=0.01)


def _get(standin, path, query=None):
    status, headers, body = standin.api('GET', path, query)
    assert status == 200, body
    return headers, body


def test_responses_parse_with_the_official_models(ory_standin_factory):
    standin = ory_standin_factory(seed_identities=30, seed_clients=3, jwk_sets=['app.signing'], default_jwk_sets=True)
    headers, page = _get(standin, '/admin/identities', {'page_size': 7, 'include_credential': ['password', 'oidc', 'totp',
                                                                                               'lookup_secret', 'webauthn']})
    assert len(page) == 7 and 'rel="next"' in headers['Link']
    for item in page:
        identity = models.Identity.from_dict(item)
        assert identity.id and identity.schema_url and identity.credentials['password'].config['hashed_password']
    _h, one = _get(standin, '/admin/identities/%s' % page[0]['id'])
    assert 'config' not in one['credentials']['password']  # credentials only on request
    for client in _get(standin, '/admin/clients')[1]:
        parsed = models.OAuth2Client.from_dict(client)
        assert parsed.client_secret == ''  # secrets are never readable
    models.JsonWebKeySet.from_dict(_get(standin, '/admin/keys/app.signing')[1])
    models.RelationshipNamespaces.from_dict(_get(standin, '/namespaces')[1])
    tuples = models.Relationships.from_dict(_get(standin, '/relation-tuples', {'namespace': 'Group', 'page_size': 2})[1])
    assert tuples.next_page_token and len(tuples.relation_tuples) == 2
    for container in _get(standin, '/schemas')[1]:
        models.IdentitySchemaContainer.from_dict(container)
    project = models.Project.from_dict(_get(standin, '/projects/%s' % standin.project_id)[1])
    assert project.services.identity.config['identity']['schemas'][0]['url'].startswith('http')
    check = _get(standin, '/relation-tuples/check/openapi', {'namespace': 'Group', 'object': 'group-0',
                                                             'relation': 'members', 'subject_id': 'nobody'})[1]
    assert models.CheckPermissionResult.from_dict(check).allowed is False
    status, _h, error = standin.api('GET', '/admin/identities/%s' % ('0' * 8 + '-0000-4000-8000-' + '0' * 12))
    assert status == 404 and models.ErrorGeneric.from_dict(error).error.message
    status, _h, error = standin.api('GET', '/admin/keys/not-there')
    assert status == 404 and models.ErrorOAuth2.from_dict(error).error
    assert standin.stats()['contract_violations'] == []


@pytest.mark.parametrize('body, reason', [
    ({'schema_id': 'person', 'traits': {'email': 'a@example.org'}, 'id': 'b7e9a6f0-0000-4000-8000-000000000000'},
     'unknown field id'),
    ({'schema_id': 'person', 'traits': {'email': 'a@example.org'}, 'created_at': '2026-01-01T00:00:00Z'},
     'unknown field created_at'),
    ({'schema_id': 'person', 'traits': {'email': 'a@example.org'},
      'credentials': {'password': {'config': {'hashed_password': '$2b$04$x'}, 'identifiers': ['a@example.org']}}},
     'unknown field identifiers'),
    ({'schema_id': 'person', 'traits': {'email': 'a@example.org'}, 'credentials': {'oidc': {'config': {'providers': [
        {'provider': 'google', 'subject': 's', 'initial_id_token': 'eyJ'}]}}}}, 'unknown field initial_id_token'),
    ({'traits': {'email': 'a@example.org'}}, 'required field schema_id'),
])
def test_strict_decoding(ory_standin_factory, body, reason):
    standin = ory_standin_factory()
    status, _h, error = standin.api('POST', '/admin/identities', body=body)
    assert status == 400
    assert reason in error['error']['reason']
    assert standin.summary()['identities'] == 0


def test_write_rules(ory_standin_factory):
    standin = ory_standin_factory(seed_identities=3, seed_clients=1)
    body = {'schema_id': 'person', 'traits': {'email': 'user000001@example.org'},
            'credentials': {'password': {'config': {'hashed_password': '$2b$04$abcdefghijklmnopqrstuuyvPXIbu7xe6/CED2DzX8z6Si09MlzlW'}}}}
    status, _h, error = standin.api('POST', '/admin/identities', body=body)
    assert status == 409 and 'already in use' in error['error']['reason']
    body['traits']['email'] = 'new@example.org'
    body['external_id'] = 'old-1'
    status, _h, created = standin.api('POST', '/admin/identities', body=body)
    assert status == 201 and created['id'] and created['external_id'] == 'old-1'
    body['traits']['email'] = 'other@example.org'
    status, _h, error = standin.api('POST', '/admin/identities', body=body)
    assert status == 409 and 'external_id' in error['error']['reason']
    status, _h, _b = standin.api('GET', '/admin/identities', {'page_size': 501})
    assert status == 400
    status, _h, error = standin.api('GET', '/admin/identities', {'page_token': 'forged'})
    assert status == 400 and 'page token' in error['error']['message']
    status, _h, error = standin.api('PATCH', '/admin/identities', body={'identities': [
        {'patch_id': '00000000-0000-4000-8000-%012d' % n, 'create': {'schema_id': 'person', 'traits': {'email': 'b%d@x' % n}}}
        for n in range(1001)]})
    assert status == 400
    # a created client shows its secret once; reads never do
    status, _h, client = standin.api('POST', '/admin/clients', body={'client_id': 'new-client', 'grant_types': ['client_credentials']})
    assert status == 201 and len(client['client_secret']) >= 6
    assert standin.api('GET', '/admin/clients/new-client')[2]['client_secret'] == ''
    status, _h, error = standin.api('POST', '/admin/clients', body={'client_id': 'short', 'client_secret': '12345'})
    assert status == 400 and models.ErrorOAuth2.from_dict(error).error
    status, _h, _b = standin.api('GET', '/admin/identities', key=False)
    assert status == 401


def test_rate_limits_and_concurrent_identity_writes(ory_standin_factory):
    standin = ory_standin_factory(tier='Production')
    statuses = []
    for _n in range(7):
        status, headers, _b = standin.api('GET', '/admin/identities')
        statuses.append((status, headers.get('x-ratelimit-remaining'), headers.get('x-ratelimit-reset')))
    assert statuses[0][0] == 200 and statuses[0][1] is not None
    limited = [s for s in statuses if s[0] == 429]
    assert limited and all(s[1] == '0' and int(s[2]) >= 1 for s in limited)
    standin.control('limits', {})
    standin.control('faults', [{'method': 'PATCH', 'path': '/admin/identities', 'kind': 'delay', 'delay': 1.5}])

    def write(number):
        return standin.api('PATCH', '/admin/identities', body={'identities': [
            {'patch_id': '00000000-0000-4000-8000-%012d' % number,
             'create': {'schema_id': 'person', 'traits': {'email': 'c%d@example.org' % number}}}]})[0]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(write, 1)
        time.sleep(0.5)
        second = pool.submit(write, 2)
        results = sorted([first.result(), second.result()])
    assert results == [200, 429]
    assert standin.stats()['concurrent_writes'] == 1


def test_collection_request_bodies_parse_without_unknown_fields(ory_standin_factory, run_module, keys, tmp_path):
    """The bodies ory_import sends, read back from the export, parse with the official request models."""
    source = ory_standin_factory(seed_identities=60, seed_clients=3, default_jwk_sets=True)
    set_dir = run_module('backup_set', root=str(tmp_path / 'b'), service='ory', kind='ory', state='present')['path']
    result = run_module('ory_export', set_dir=set_dir, recipients=[keys.age_recipient], **source.connection())
    assert not result.get('failed'), result
    restore = Path(set_dir) / 'ory' / 'restore'
    bodies = read_json_payload_cli(restore / 'identities.json.zst.age', keys.age_identity)
    patch = models.PatchIdentitiesBody.from_dict({'identities': [
        {'patch_id': '00000000-0000-4000-8000-%012d' % n, 'create': b} for n, b in enumerate(bodies)]})
    no_extras(patch, 'patchIdentitiesBody')
    for client in read_json_payload_cli(restore / 'oauth2-clients.json.zst.age', keys.age_identity):
        no_extras(models.OAuth2Client.from_dict(client), 'oAuth2Client')
    for item in read_json_payload_cli(restore / 'relationships.json.zst.age', keys.age_identity):
        no_extras(models.RelationshipPatch.from_dict({'action': 'insert', 'relation_tuple': item}), 'relationshipPatch')
    no_extras(models.SetProject.from_dict(read_json_payload_cli(restore / 'project.json.zst.age', keys.age_identity)),
              'setProject')
