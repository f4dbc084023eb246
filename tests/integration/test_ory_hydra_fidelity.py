# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hydra as it really behaves, through the collection's modules: clients that authenticate with their
keys (private_key_jwt, jwks inline or by jwks_uri) and public clients (none) carry no secret to rotate;
what a client read returns; JWK sets with private keys (RSA and EC) survive the round trip; and the
version gate of ory_import against the versions the target's /version endpoints report.

Each behaviour of the stand-in used here is listed in tests/ory_standin/FIDELITY.md (## Hydra)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from ory_support import read_json_payload_cli
from ory_standin import seed as seeding
from recovery_support import reseal

HYDRA = ['oauth2_clients', 'jwks']
SECRET_CLIENTS = tuple(c['client_id'] for c in seeding.client_records(2))  # client_secret_basic, client_secret_post
BASIC_CLIENT = SECRET_CLIENTS[0]
KEYED_CLIENTS = ('svc-keys-inline', 'svc-keys-uri')
PUBLIC_CLIENT = 'spa-public'
WRITES = ('POST /admin/clients', 'PUT /admin/keys/{set}')


def _open_set(run_module, root):
    result = run_module('backup_set', root=str(root), service='ory', kind='ory', state='present')
    assert not result.get('failed'), result
    return result['path']


def _export(run_module, keys, source, root, include=None):
    set_dir = _open_set(run_module, root)
    exported = run_module('ory_export', set_dir=set_dir, include=include or HYDRA, jwk_sets=['app.mixed'],
                          recipients=[keys.age_recipient], **source.connection())
    assert not exported.get('failed'), exported
    final = run_module('backup_set', path=set_dir, state='finalized')
    assert not final.get('failed'), final
    return set_dir, exported['ory']


def _warnings(result):
    """The warnings of a module result as text (Ansible wraps those of module.warn)."""
    return [w['event']['msg'] if isinstance(w, dict) else w for w in result.get('warnings') or []]


def _writes(standin, before):
    after = standin.stats()['by_operation']
    return dict((op, after.get(op, 0) - before.get(op, 0)) for op in WRITES)


@pytest.fixture
def hydra_source(ory_standin_factory):
    """A project with two secret clients, two private_key_jwt clients, a public client and a JWK set
    holding an RSA and an EC key with their private parts."""
    source = ory_standin_factory(seed_clients=2, default_jwk_sets=True)
    made = source.control('seed-hydra', {'keyed_clients': True, 'mixed_jwk_set': 'app.mixed'})
    assert sorted(made['clients']) == sorted(KEYED_CLIENTS + (PUBLIC_CLIENT,))
    return source


@pytest.fixture
def hydra_set(hydra_source, run_module, keys, tmp_path):
    set_dir, ory = _export(run_module, keys, hydra_source, tmp_path / 'backups')
    return hydra_source, set_dir, ory


def test_client_reads_blank_the_secret_and_the_export_warns_only_for_secret_clients(hydra_set, ory_specs, keys):
    source, set_dir, ory = hydra_set
    # create answers the secret Hydra made up, unless the client is public; every read blanks it
    status, _h, created = source.api('POST', '/admin/clients', body={
        'client_id': 'svc-keys-extra', 'token_endpoint_auth_method': 'private_key_jwt', 'grant_types': ['client_credentials'],
        'jwks_uri': 'https://extra.example.org/jwks.json'})
    assert status == 201 and len(created['client_secret']) >= 26, created
    status, _h, public = source.api('POST', '/admin/clients', body={
        'client_id': 'spa-extra', 'token_endpoint_auth_method': 'none', 'grant_types': ['authorization_code'],
        'redirect_uris': ['https://app.example.org/cb']})
    assert status == 201 and public['client_secret'] == '', public
    status, _h, read = source.api('GET', '/admin/clients/svc-keys-extra')
    assert status == 200 and read['client_secret'] == ''
    status, _h, listed = source.api('GET', '/admin/clients', {'page_size': 500})
    assert status == 200 and listed and all(c['client_secret'] == '' for c in listed)
    # the export keeps each client's method and keys, holds no secret, and warns for the 2 secret clients only
    assert ory['counts']['oauth2_clients'] == 5
    warning = next(w for w in ory['warnings'] if 'client secrets cannot be exported' in w)
    assert 'the 2 clients that use one' in warning, warning
    clients = dict((c['client_id'], c) for c in read_json_payload_cli(
        Path(set_dir) / 'ory' / 'restore' / 'oauth2-clients.json.zst.age', keys.age_identity))
    assert clients['svc-keys-inline']['token_endpoint_auth_method'] == 'private_key_jwt'
    assert clients['svc-keys-inline']['jwks']['keys'][0]['kty'] == 'RSA'
    assert 'd' not in clients['svc-keys-inline']['jwks']['keys'][0]
    assert clients['svc-keys-uri']['jwks_uri'] == 'https://reporting.example.org/.well-known/jwks.json'
    assert clients[PUBLIC_CLIENT]['token_endpoint_auth_method'] == 'none'
    hydra = ory_specs['hydra']
    for client in clients.values():
        assert 'client_secret' not in client
        hydra.validate(client, hydra.schema('oAuth2Client'), strict=True)


def test_keyed_and_public_clients_need_no_secret_and_no_recipients(hydra_set, ory_standin_factory, run_module, keys,
                                                                   tmp_path):
    source, set_dir, _ory = hydra_set
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    supplied = dict((cid, 'vault-secret-%s' % cid) for cid in SECRET_CLIENTS)
    common = dict(set_dir=set_dir, identity=str(keys.age_identity), include=HYDRA, client_secrets=supplied,
                  state_dir=str(tmp_path / 'state'), **target.connection())

    # the plan: nothing to generate, so neither recipients nor return_secrets are needed
    plan = run_module('ory_import', check_mode=True, **common)
    assert not plan.get('failed'), plan
    clients = plan['plan']['oauth2_clients']
    assert clients['create'] == 5 and clients['secrets_supplied'] == 2 and clients['secrets_to_generate'] == 0, clients
    assert clients['without_secret'] == {'keys': 2, 'none': 1}
    assert target.summary()['clients'] == 0

    done = run_module('ory_import', **common)
    assert not done.get('failed'), done
    assert done['created']['oauth2_clients'] == 5
    report = dict((r['client_id'], r) for r in done['rotation_report'])
    assert dict((cid, r['secret']) for cid, r in report.items()) == {
        SECRET_CLIENTS[0]: 'supplied', SECRET_CLIENTS[1]: 'supplied', 'svc-keys-inline': 'keys', 'svc-keys-uri': 'keys',
        'spa-public': 'none'}
    assert report['svc-keys-inline']['token_endpoint_auth_method'] == 'private_key_jwt'
    assert done['secrets_file'] is None and 'client_secrets' not in done
    assert not list(Path(done['state_dir']).glob('client-secrets-*'))

    # the target holds each client with its method and keys, and no secret was sent for the keyed ones
    for cid in KEYED_CLIENTS + (PUBLIC_CLIENT,):
        _s, _h, old = source.api('GET', '/admin/clients/%s' % cid)
        _s, _h, new = target.api('GET', '/admin/clients/%s' % cid)
        assert new['client_secret'] == ''
        for field in ('token_endpoint_auth_method', 'token_endpoint_auth_signing_alg', 'jwks', 'jwks_uri', 'grant_types',
                      'redirect_uris', 'scope'):
            assert new.get(field) == old.get(field), (cid, field)

    # the supplied secrets work; a secret sent for a private_key_jwt client is refused, whatever it is
    ok = run_module('ory_check', token={'client_id': BASIC_CLIENT, 'client_secret': supplied[BASIC_CLIENT],
                                        'method': 'client_secret_basic'}, **target.connection())
    assert not ok.get('failed') and ok['token']['issued'] is True, ok
    refused = run_module('ory_check', token={'client_id': 'svc-keys-inline', 'client_secret': 'any-secret-at-all',
                                             'method': 'client_secret_basic', 'expect': 'failure'}, **target.connection())
    assert not refused.get('failed') and refused['token']['issued'] is False, refused
    assert refused['token']['status'] == 401 and 'private_key_jwt' in refused['token']['error'], refused

    # a public client cannot use client_credentials at all (invalid_grant, not an authentication failure)
    public = run_module('ory_check', token={'client_id': PUBLIC_CLIENT, 'client_secret': '',
                                            'method': 'client_secret_post'}, **target.connection())
    assert public.get('failed') and public['token']['issued'] is False, public
    assert public['token']['status'] == 400 and 'public' in public['token']['error'], public

    # a second run creates nothing and reports the keyed clients as such
    again = run_module('ory_import', **common)
    assert not again.get('failed') and again['changed'] is False, again
    for standin in (source, target):
        stats = standin.stats()
        assert stats['contract_violations'] == [] and stats['request_rejections'] == []


def test_secret_clients_still_need_recipients(hydra_set, ory_standin_factory, run_module, keys):
    """The refusal stays for the clients that do need a new secret, and names only them."""
    _source, set_dir, _ory = hydra_set
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    before = target.stats()['by_operation']
    result = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=HYDRA,
                        **target.connection())
    assert result.get('failed'), result
    assert result['msg'].startswith('2 OAuth2 clients need a new secret'), result['msg']
    assert sorted(result['clients']) == sorted(SECRET_CLIENTS)
    assert not any(_writes(target, before).values())


def test_hydra_refuses_keyed_clients_without_their_keys(hydra_source, run_module, keys, tmp_path, ory_standin_factory):
    # the stand-in, like Hydra's client validator
    for body, message in (
            ({'client_id': 'k1', 'token_endpoint_auth_method': 'private_key_jwt'}, 'either jwks or jwks_uri must be set'),
            ({'client_id': 'k2', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks': {'keys': []},
              'jwks_uri': 'https://k2.example.org/jwks.json'}, 'jwks and jwks_uri can not both be set'),
            ({'client_id': 'k3', 'token_endpoint_auth_method': 'private_key_jwt', 'jwks_uri': 'https://k3.example.org/j',
              'token_endpoint_auth_signing_alg': 'HS256'}, 'are supported as algorithms for private key authentication'),
            ({'client_id': 'k4', 'client_secret': 'short'}, 'at least 6 characters long')):
        status, _h, answer = hydra_source.api('POST', '/admin/clients', body=body)
        assert status == 400 and message in answer['error_description'], (body, answer)
    # ory_import finds such a client in a bundle before it writes anything
    set_dir, _ory = _export(run_module, keys, hydra_source, tmp_path / 'backups')
    rel = 'ory/restore/oauth2-clients.json.zst.age'
    path = Path(set_dir) / rel
    clients = read_json_payload_cli(path, keys.age_identity)
    for client in clients:
        if client['client_id'] == 'svc-keys-uri':
            del client['jwks_uri']
    plain = json.dumps(clients).encode('utf-8')
    zstd = subprocess.run(['zstd', '-q', '-c'], input=plain, stdout=subprocess.PIPE, check=True).stdout
    path.write_bytes(subprocess.run(['age', '-e', '-r', keys.age_recipient], input=zstd, stdout=subprocess.PIPE,
                                    check=True).stdout)
    reseal(set_dir, rel)
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    result = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=HYDRA,
                        return_secrets=True, **target.connection())
    assert result.get('failed'), result
    assert 'client svc-keys-uri authenticates with private_key_jwt but has neither jwks nor jwks_uri' in result['msg']
    assert target.summary()['clients'] == 0


def test_jwk_sets_keep_their_private_keys(hydra_set, ory_standin_factory, run_module, keys, tmp_path):
    source, set_dir, ory = hydra_set
    # the admin API returns the private parts (RSA d/p/q..., EC d), so the export holds them
    _s, _h, mixed = source.api('GET', '/admin/keys/app.mixed')
    assert sorted(k['kty'] for k in mixed['keys']) == ['EC', 'RSA'] and all(k.get('d') for k in mixed['keys'])
    assert ory['counts']['jwk_sets'] == 3
    sets = read_json_payload_cli(Path(set_dir) / 'ory' / 'resources' / 'jwk-sets.json.zst.age', keys.age_identity)
    assert sets['app.mixed']['keys'] == mixed['keys']
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=['jwks'],
                      state_dir=str(tmp_path / 'state'), **target.connection())
    assert not done.get('failed'), done
    assert sorted(done['updated']['jwk_sets']) == ['app.mixed', 'hydra.jwt.access-token', 'hydra.openid.id-token']
    for name in ('app.mixed', 'hydra.jwt.access-token', 'hydra.openid.id-token'):
        assert target.api('GET', '/admin/keys/%s' % name)[2] == source.api('GET', '/admin/keys/%s' % name)[2]


# -- the version gate

def test_version_endpoint_answers_what_the_export_records(hydra_set):
    source, _set_dir, ory = hydra_set
    status, _h, body = source.api('GET', '/version')
    assert status == 200 and body == {'version': 'v26.2.0'}
    assert ory['api_versions'] == {'kratos': 'v26.2.0', 'hydra': 'v26.2.0', 'keto': 'v26.2.0'}


def test_export_from_a_newer_release_line_is_refused(hydra_set, ory_standin_factory, run_module, keys):
    _source, set_dir, _ory = hydra_set
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    target.control('version', {'version': 'v26.1.4'})
    common = dict(set_dir=set_dir, identity=str(keys.age_identity), include=HYDRA, return_secrets=True,
                  **target.connection())
    before = target.stats()['by_operation']
    for check_mode in (True, False):
        result = run_module('ory_import', check_mode=check_mode, **common)
        assert result.get('failed'), result
        msg = result['msg']
        assert msg.startswith('version gate: the export comes from hydra v26.2.0 (line 26.2), newer than the target '
                              'v26.1.4 (line 26.1)'), msg
        assert 'set force_version=true to import anyway' in msg and 'kratos' not in msg and 'keto' not in msg
        assert result['version_gate']['hydra']['ok'] is False
    assert not any(_writes(target, before).values())
    assert target.summary()['clients'] == 0

    forced = run_module('ory_import', force_version=True, **common)
    assert not forced.get('failed'), forced
    assert forced['version_gate']['hydra']['forced'] is True
    assert any(w.startswith('version gate overridden by force_version: the export comes from hydra v26.2.0')
               for w in _warnings(forced)), forced['warnings']
    assert forced['created']['oauth2_clients'] == 5


def test_export_from_an_older_release_line_warns(hydra_set, ory_standin_factory, run_module, keys):
    _source, set_dir, _ory = hydra_set
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    target.control('version', {'version': 'v27.0.0'})
    done = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=HYDRA,
                      return_secrets=True, **target.connection())
    assert not done.get('failed'), done
    gate = done['version_gate']['hydra']
    assert gate['ok'] is True and gate['forced'] is False and gate['export_line'] == '26.2' and gate['target_line'] == '27.0'
    assert any('older than the target v27.0.0' in w for w in _warnings(done)), done['warnings']


def test_unknown_versions_are_refused_unless_forced(hydra_source, ory_standin_factory, run_module, keys, tmp_path):
    # the target's /version does not answer: its version is unknown
    set_dir, _ory = _export(run_module, keys, hydra_source, tmp_path / 'one')
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    target.control('faults', [{'method': 'GET', 'path': '/version', 'status': 404, 'times': 1000}])
    common = dict(identity=str(keys.age_identity), include=HYDRA, return_secrets=True, **target.connection())
    result = run_module('ory_import', set_dir=set_dir, check_mode=True, **common)
    assert result.get('failed'), result
    assert 'version gate: the hydra version of the target is unknown (GET /version:' in result['msg'], result['msg']
    forced = run_module('ory_import', set_dir=set_dir, check_mode=True, force_version=True, **common)
    assert not forced.get('failed'), forced
    assert forced['version_gate']['hydra']['forced'] is True
    assert target.summary()['clients'] == 0

    # the export recorded no version (the source's /version did not answer at export time)
    hydra_source.control('faults', [{'method': 'GET', 'path': '/version', 'status': 404, 'times': 1000}])
    blind_set, blind = _export(run_module, keys, hydra_source, tmp_path / 'two')
    assert blind['api_versions']['hydra'] is None
    target.control('faults', method='DELETE')
    result = run_module('ory_import', set_dir=blind_set, check_mode=True, **common)
    assert result.get('failed'), result
    assert 'the export records no hydra version (api_versions has none)' in result['msg'], result['msg']
    assert 'force_version=true' in result['msg']
