# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import io
import json
import socket

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import (
    OryAPIError,
    OryClient,
    OryConnection,
    backoff_delay,
    error_message,
    parse_limit_policies,
    parse_link_header,
    parse_reset,
)
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import check_identity, check_tuple, iter_json_array, tuple_key
from ansible_collections.idp.recovery.plugins.module_utils._ory.export import import_client, import_identity


class Script(object):
    """A scripted transport: each call pops one answer (status, headers, body) or raises an exception."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, method, url, data, headers, timeout):
        self.calls.append({'method': method, 'url': url, 'data': data, 'headers': dict(headers)})
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        status, resp_headers, body = answer
        if not isinstance(body, bytes):
            body = json.dumps(body).encode('utf-8')
        return status, dict((k.lower(), v) for k, v in resp_headers.items()), body


class Clock(object):
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self):
        return self.now


def client(answers, token='secret-token', **options):
    clock = Clock()
    script = Script(answers)
    options.setdefault('retries', 3)
    made = OryClient('kratos', 'https://example.projects.oryapis.com/', token=token, opener=script, sleep=clock.sleep,
                     clock=clock, rng=lambda: 0.5, **options)
    return made, script, clock


def test_parse_link_header():
    value = ('<https://x/admin/identities?page_size=2&page_token=abc%3D%3D>; rel="next", '
             '<https://x/admin/identities?page_size=2>; rel="first"')
    links = parse_link_header(value)
    assert links['next'] == 'https://x/admin/identities?page_size=2&page_token=abc%3D%3D'
    assert links['first'] == 'https://x/admin/identities?page_size=2'
    assert parse_link_header('') == {}
    assert parse_link_header('<https://x/a,b>; rel="next"') == {'next': 'https://x/a,b'}


def test_parse_reset():
    assert parse_reset('7') == 7.0
    assert parse_reset('0.5') == 0.5
    assert parse_reset(None) is None
    assert parse_reset('soon') is None
    assert parse_reset('-3') is None
    assert parse_reset('2000000010', now=2000000000) == pytest.approx(10.0)


def test_backoff_is_capped_with_jitter():
    assert backoff_delay(0, rng=lambda: 0.0) == 0.25
    assert backoff_delay(0, rng=lambda: 1.0) == 0.5
    assert backoff_delay(20, cap=30, rng=lambda: 1.0) == 30
    assert backoff_delay(20, cap=30, rng=lambda: 0.0) == 15
    delays = [backoff_delay(n, cap=30) for n in range(12)]
    assert all(0 < d <= 30 for d in delays)


def test_error_messages_of_every_shape():
    kratos = json.dumps({'error': {'code': 409, 'status': 'Conflict', 'message': 'exists', 'reason': 'email taken',
                                   'id': 'conflict'}}).encode()
    assert error_message(409, kratos) == ('exists: email taken (conflict)', 'conflict')
    hydra = json.dumps({'error': 'invalid_client', 'error_description': 'no such client'}).encode()
    assert error_message(401, hydra) == ('invalid_client: no such client', 'invalid_client')
    assert error_message(502, b'<html>bad gateway</html>')[0] == '<html>bad gateway</html>'
    assert error_message(500, b'')[0] == 'no message'


def test_link_pagination_follows_opaque_tokens():
    pages = [
        (200, {'Link': '<https://example/admin/identities?page_size=2&page_token=T1>; rel="next"'}, [{'id': 1}, {'id': 2}]),
        (200, {'Link': '<https://example/admin/identities?page_size=2&page_token=T2>; rel="next"'}, [{'id': 3}, {'id': 4}]),
        (200, {}, [{'id': 5}]),
    ]
    made, script, _clock = client(pages)
    got = [i['id'] for page in made.pages_by_link('/admin/identities', {'include_credential': ['password', 'oidc']}, 2)
           for i in page]
    assert got == [1, 2, 3, 4, 5]
    assert 'page_token' not in script.calls[0]['url']
    assert 'page_token=T1' in script.calls[1]['url'] and 'include_credential=oidc' in script.calls[1]['url']
    assert script.calls[0]['headers']['Authorization'] == 'Bearer secret-token'


def test_repeated_page_token_is_refused():
    loop = (200, {'Link': '<https://example/x?page_token=SAME>; rel="next"'}, [{'id': 1}])
    made, _script, _clock = client([loop, loop, loop])
    with pytest.raises(RecoveryError, match='refusing to loop'):
        list(made.pages_by_link('/admin/identities'))


def test_body_token_pagination_and_guard():
    made, script, _clock = client([
        (200, {}, {'relation_tuples': [{'namespace': 'n'}], 'next_page_token': 'A'}),
        (200, {}, {'relation_tuples': [{'namespace': 'n'}], 'next_page_token': ''}),
    ])
    assert len(list(made.pages_by_token('/relation-tuples', {'namespace': 'n'}))) == 2
    assert 'page_token=A' in script.calls[1]['url']
    made, _script, _clock = client([(200, {}, {'relation_tuples': [], 'next_page_token': 'A'})] * 3)
    with pytest.raises(RecoveryError, match='refusing to loop'):
        list(made.pages_by_token('/relation-tuples'))


def test_429_waits_for_the_reset_header():
    made, _script, clock = client([
        (429, {'x-ratelimit-reset': '4', 'x-ratelimit-remaining': '0'}, {'error': {'message': 'slow down'}}),
        (200, {}, []),
    ])
    made.request('GET', '/admin/identities')
    assert sum(clock.sleeps) == pytest.approx(4 + 0.025)
    assert made.stats['rate_limited'] == 1


def test_429_without_headers_backs_off_exponentially_and_capped():
    answers = [(429, {}, {'error': {'message': 'slow down'}})] * 9 + [(200, {}, [])]
    made, _script, clock = client(answers, max_backoff=4)
    made.request('GET', '/admin/identities')
    assert clock.sleeps[:4] == [0.375, 0.75, 1.5, 3.0]
    assert max(clock.sleeps) == 3.0  # 0.75 of the 4 s cap (rng 0.5)


def test_remaining_zero_paces_the_next_request():
    made, _script, clock = client([
        (200, {'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '2'}, []),
        (200, {'x-ratelimit-remaining': '5', 'x-ratelimit-reset': '2'}, []),
        (200, {}, []),
    ])
    made.request('GET', '/admin/identities')
    assert clock.sleeps == []
    made.request('GET', '/admin/identities')
    assert clock.sleeps == [2.0]
    made.request('GET', '/admin/identities')
    assert clock.sleeps == [2.0]


def test_parse_limit_policies():
    assert parse_limit_policies('10, 10;w=1, 300;w=60') == (10, {1: 10, 60: 300})
    assert parse_limit_policies('175') == (175, {})
    assert parse_limit_policies(None) == (None, {})
    assert parse_limit_policies('many') == (None, {})


def _paced(limit, reset='1'):
    """Three answers that spend a one-second window of 3, each taking 0.05 s, then a fourth request."""
    made, script, clock = client([(200, {'x-ratelimit-limit': limit, 'x-ratelimit-remaining': str(left),
                                         'x-ratelimit-reset': reset}, []) for left in (2, 1, 0)] + [(200, {}, [])])
    opener = made._open

    def slow(*args):
        clock.now += 0.05
        return opener(*args)
    made._open = slow
    for _n in range(4):
        made.request('PATCH', '/admin/identities', json_body={})
    return clock.sleeps


def test_a_spent_burst_window_ends_one_second_after_its_first_answer():
    # the window began before the first request reached the server (answered at 100.05): the fourth goes at
    # 101.06, not a whole second (x-ratelimit-reset) after the third answer (100.15)
    assert _paced('3, 3;w=1, 175;w=60') == [pytest.approx(0.91)]
    # without the burst policy in the header, or when the sustained window is the one spent: the reset
    assert _paced('175') == [1.0]
    assert _paced('175, 3;w=1, 175;w=60') == [1.0]
    assert _paced('3, 3;w=1, 175;w=60', reset='7') == [pytest.approx(0.91)]


def test_5xx_and_timeouts_are_retried_then_give_up_clearly():
    made, _script, clock = client([(503, {}, b'unavailable'), socket.timeout('timed out'), (200, {}, [{'id': 1}])])
    assert made.request('GET', '/admin/identities').json() == [{'id': 1}]
    assert made.stats['retries'] == 2 and len(clock.sleeps) == 2
    made, _script, _clock = client([(500, {}, {'error': {'message': 'db down'}})] * 4)
    with pytest.raises(OryAPIError) as info:
        made.request('GET', '/admin/identities')
    assert 'HTTP 500: db down (gave up after 4 attempts)' in info.value.msg
    assert info.value.status == 500


def test_writes_are_not_repeated_after_an_ambiguous_failure():
    made, script, _clock = client([(504, {}, b'gateway timeout')])
    with pytest.raises(OryAPIError) as info:
        made.request('PATCH', '/admin/identities', json_body={'identities': []}, retry_errors=False)
    assert 'may have been applied' in info.value.msg and len(script.calls) == 1
    assert info.value.details['retryable'] is True


def test_auth_errors_name_the_key_never_its_value():
    made, _script, _clock = client([(401, {}, {'error': {'code': 401, 'message': 'The request could not be authorized'}})])
    with pytest.raises(OryAPIError) as info:
        made.request('GET', '/admin/identities')
    assert 'project API key' in info.value.msg and 'secret-token' not in info.value.msg
    made, script, _clock = client([(200, {}, [])], token=None)
    made.request('GET', '/admin/identities')
    assert 'Authorization' not in script.calls[0]['headers']


def test_connection_loads_each_key_only_for_its_api():
    conn = OryConnection({'deployment': 'network', 'project_url': 'https://p.projects.oryapis.com',
                          'project_api_key': 'pk', 'workspace_api_key': 'wk', 'console_url': 'https://api.console.ory.sh',
                          'project_id': 'x'})
    assert conn.client('kratos')._token == 'pk'
    assert conn.client('console')._token == 'wk'
    assert conn.client('hydra_public')._token is None
    no_workspace = OryConnection({'deployment': 'network', 'project_url': 'https://p', 'project_api_key': 'pk',
                                  'console_url': 'https://api.console.ory.sh'})
    with pytest.raises(RecoveryError, match='workspace API key'):
        no_workspace.client('console')
    with pytest.raises(RecoveryError, match='project_url'):
        OryConnection({'deployment': 'network'})
    hosted = OryConnection({'deployment': 'self_hosted', 'kratos_admin_url': 'http://kratos:4434',
                            'keto_read_url': 'http://keto:4466'})
    assert hosted.client('kratos')._token is None
    assert hosted.client('keto_write').base_url == 'http://keto:4466'
    with pytest.raises(RecoveryError, match='hydra_admin_url'):
        hosted.client('hydra')


def test_identity_conversion_keeps_what_imports_and_drops_what_the_decoder_refuses():
    listed = {
        'id': 'old-id', 'schema_id': 'person', 'schema_url': 'https://x/schemas/cGVyc29u', 'state': 'active',
        'traits': {'email': 'a@example.org'}, 'created_at': '2026-01-01T00:00:00Z', 'metadata_public': None,
        'metadata_admin': {'crm': 1},
        'verifiable_addresses': [{'id': 'v1', 'value': 'a@example.org', 'via': 'email', 'verified': True,
                                  'status': 'completed', 'created_at': 'x'}],
        'recovery_addresses': [{'id': 'r1', 'value': 'a@example.org', 'via': 'email'}],
        'credentials': {
            'password': {'type': 'password', 'identifiers': ['a@example.org'], 'config': {'hashed_password': '$2b$04$h'}},
            'oidc': {'identifiers': ['google:1'], 'config': {'providers': [
                {'provider': 'google', 'subject': '1', 'initial_id_token': 'eyJ', 'initial_access_token': 'ya29'}]}},
            'lookup_secret': {'config': {'recovery_codes': [{'code': 'abc', 'used_at': None}]}},
            'code': {'identifiers': ['a@example.org'], 'config': {'addresses': []}},
        },
    }
    body, kinds, missing = import_identity(listed)
    assert body['external_id'] == 'old-id' and 'id' not in body and 'schema_url' not in body and 'created_at' not in body
    assert body['credentials']['password'] == {'config': {'hashed_password': '$2b$04$h'}}
    assert body['credentials']['oidc'] == {'config': {'providers': [{'provider': 'google', 'subject': '1'}]}}
    assert body['credentials']['lookup_secret'] == {'config': {'codes': [{'code': 'abc'}]}}
    assert 'code' not in body['credentials'] and 'metadata_public' not in body
    assert body['verifiable_addresses'] == [{'value': 'a@example.org', 'via': 'email', 'verified': True,
                                             'status': 'completed'}]
    assert body['recovery_addresses'] == [{'value': 'a@example.org', 'via': 'email'}]
    assert kinds == ['lookup_secret', 'oidc', 'password'] and missing == 'hashed'
    check_identity(body, 'restore/identities.json', 1)
    listed['external_id'] = 'kept'
    listed['credentials']['password'] = {'identifiers': ['a@example.org']}
    body, kinds, missing = import_identity(listed)
    assert body['external_id'] == 'kept' and missing == 'withheld' and 'password' not in kinds
    # the empty credential of the schema extension: no password, not a withheld hash
    listed['credentials']['password'] = {'identifiers': ['a@example.org'], 'config': {}}
    body, kinds, missing = import_identity(listed)
    assert missing == 'none' and 'password' not in kinds
    listed['credentials']['password'] = {'identifiers': ['a@example.org'], 'config': {'use_password_migration_hook': True}}
    body, kinds, missing = import_identity(listed)
    assert missing == 'migration_hook' and body['credentials']['password'] == {'config': {'use_password_migration_hook': True}}
    del listed['credentials']['password']
    assert import_identity(listed)[2] == 'none'


def test_bundle_checks_refuse_what_the_api_would_refuse():
    with pytest.raises(RecoveryError, match='refuses: id'):
        check_identity({'schema_id': 's', 'traits': {}, 'external_id': 'x', 'id': 'y'}, 'f', 1)
    with pytest.raises(RecoveryError, match='cannot be imported'):
        check_identity({'schema_id': 's', 'traits': {}, 'external_id': 'x', 'credentials': {'code': {'config': {}}}}, 'f', 1)
    with pytest.raises(RecoveryError, match='exactly one'):
        check_tuple({'namespace': 'n', 'object': 'o', 'relation': 'r'}, 'f', 1)
    assert tuple_key({'namespace': 'n', 'object': 'o', 'relation': 'r', 'subject_id': 's'}) == ('n', 'o', 'r', 's', ())
    assert import_client({'client_id': 'c', 'client_secret': '', 'created_at': 'x', 'scope': 'a', 'owner': None}) == \
        {'client_id': 'c', 'scope': 'a'}


@pytest.mark.parametrize('chunk', [1, 5, 4096])
def test_json_array_reader_streams_items(chunk):
    items = [{'n': n, 'text': u'\u00e9\u65e5' * n} for n in range(300)]
    data = json.dumps(items, indent=1).encode('utf-8')
    assert list(iter_json_array(io.BytesIO(data), chunk)) == items
    assert list(iter_json_array(io.BytesIO(b'[]'), chunk)) == []


@pytest.mark.parametrize('data, message', [
    (b'', 'empty'), (b'{}', 'does not hold a JSON array'), (b'[{"a": 1},', 'truncated'), (b'[{"a": 1}', 'truncated'),
    (b'[{"a": 1}] []', 'after the end'), (b'[{"a": 1} {"b": 2}]', 'expected'), (b'[{"a": }]', 'malformed'),
])
def test_json_array_reader_refuses_broken_files(data, message):
    with pytest.raises(RecoveryError, match=message):
        list(iter_json_array(io.BytesIO(data), 3))
