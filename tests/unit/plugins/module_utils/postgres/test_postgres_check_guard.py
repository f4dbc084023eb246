# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import socket

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._guard import locations as _locations
from ansible_collections.idp.recovery.plugins.module_utils._postgres import sql_checks as _sql_checks
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

LOCAL = {'192.0.2.10'}


def _is_local(address):
    return address in LOCAL


def _resolver(table):
    """A getaddrinfo over a fixed table of names (a name missing from it does not resolve)."""
    def resolve(host, port, family=0, kind=0):
        if host not in table and host.replace('.', '').isdigit():
            # an address resolves to itself, as with getaddrinfo
            return [(socket.AF_INET, kind, 6, '', (host, port))]
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
        return [(socket.AF_INET6 if ':' in addr else socket.AF_INET, kind, 6, '', (addr, port)) for addr in table[host]]
    return resolve


NAMES = {
    'localhost': ['127.0.0.1', '::1'],
    '127.0.0.1': ['127.0.0.1'],
    '127.0.0.2': ['127.0.0.2'],
    '::1': ['::1'],
    'db.internal': ['10.0.0.5'],
    'db-alias.internal': ['10.0.0.5', '10.0.0.6'],
    'replica.internal': ['10.0.0.7'],
    'me.internal': ['192.0.2.10'],
    '10.0.0.5': ['10.0.0.5'],
}


def _tcp(text):
    return _locations.resolve_tcp(_locations.parse_location(text), _resolver(NAMES), _is_local)


def _container(text, infos):
    return _locations.resolve_container(_locations.parse_location(text), infos.get, _is_local)


def _info(cid, addresses, published=None, mode='bridge'):
    ports = {}
    if published:
        ports['5432/tcp'] = [{'HostIp': ip, 'HostPort': str(port)} for ip, port in published]
    return {'Id': cid, 'HostConfig': {'NetworkMode': mode},
            'NetworkSettings': {'Networks': dict(('net%d' % n, {'IPAddress': a, 'GlobalIPv6Address': ''})
                                                 for n, a in enumerate(addresses)), 'Ports': ports}}


# ----- parsing

@pytest.mark.parametrize('text, kind, host, port, database, container', [
    ('db.internal:5433/authentik', 'tcp', 'db.internal', 5433, 'authentik', None),
    ('db.internal/authentik', 'tcp', 'db.internal', 5432, 'authentik', None),
    ('db.internal:6432', 'tcp', 'db.internal', 6432, None, None),
    ('[::1]:5432/app', 'tcp', '::1', 5432, 'app', None),
    ('::1:5432/app', 'tcp', '::1', 5432, 'app', None),
    ('fd00::5:5432/my db', 'tcp', 'fd00::5', 5432, 'my db', None),
    ('10.0.0.5:5432/a/b', 'tcp', '10.0.0.5', 5432, 'a/b', None),
    ('container authentik-postgres (database authentik)', 'container', None, 5432, 'authentik', 'authentik-postgres'),
    ('container pg (database we (ird))', 'container', None, 5432, 'we (ird)', 'pg'),
    ('container:authentik-postgres/authentik', 'container', None, 5432, 'authentik', 'authentik-postgres'),
    ('container:4f1c2a9e0b7d', 'container', None, 5432, None, '4f1c2a9e0b7d'),
    ('  db.internal:5432/x  ', 'tcp', 'db.internal', 5432, 'x', None),
])
def test_parse_location(text, kind, host, port, database, container):
    found = _locations.parse_location(text)
    assert (found.kind, found.host, found.port, found.database, found.container) == (kind, host, port, database,
                                                                                     container)
    assert found.text == text.strip()


@pytest.mark.parametrize('text', ['', '   ', 'this host (database x)', 'container', 'container pg', 'db:99999/x',
                                  'db:0/x', 'container:/x', 'has space:5432/db', None, 5432])
def test_parse_location_refuses_what_it_cannot_read(text):
    with pytest.raises(RecoveryError):
        _locations.parse_location(text)


def test_where_strings_read_back():
    for text in ('db.internal:5432/authentik', 'container pg (database authentik)'):
        assert _locations.parse_location(text).where == text
    assert _locations.parse_location('[::1]:5432/x').where == '[::1]:5432/x'
    assert _locations.parse_location('container:pg').where == 'container pg (database *)'


# ----- addresses

@pytest.mark.parametrize('address, token', [
    ('127.0.0.1', _locations.THIS_HOST), ('127.8.9.10', _locations.THIS_HOST), ('::1', _locations.THIS_HOST),
    ('0.0.0.0', _locations.THIS_HOST), ('::', _locations.THIS_HOST), ('::ffff:127.0.0.1', _locations.THIS_HOST),
    ('192.0.2.10', _locations.THIS_HOST), ('::ffff:10.0.0.5', '10.0.0.5'), ('10.0.0.5', '10.0.0.5'),
    ('fe80::1%eth0', 'fe80::1'), ('FD00:0:0::5', 'fd00::5'), ('not-an-ip', 'name:not-an-ip'),
])
def test_address_token(address, token):
    assert _locations.address_token(address, _is_local) == token


def test_is_local_address_on_this_host():
    assert _locations.is_local_address('127.0.0.1') is True
    # TEST-NET-3 is never assigned to a host
    assert _locations.is_local_address('203.0.113.77') is False


# ----- same database

@pytest.mark.parametrize('target, entry, same', [
    ('127.0.0.1:5432/app', 'localhost:5432/app', True),
    ('localhost:5432/app', '[::1]:5432/app', True),
    ('127.0.0.2:5432/app', '127.0.0.1:5432/app', True),
    ('me.internal:5432/app', 'localhost:5432/app', True),
    ('db.internal:5432/app', '10.0.0.5:5432/app', True),
    ('db-alias.internal:5432/app', 'db.internal:5432/app', True),
    ('db.internal:5432/app', 'db.internal:5432', True),
    ('db.internal:5432/app', 'db.internal:5433/app', False),
    ('db.internal:5432/app', 'db.internal:5432/App', False),
    ('db.internal:5432/app', 'replica.internal:5432/app', False),
    ('db.internal:5432/app', 'localhost:5432/app', False),
    ('unknown.internal:5432/app', 'UNKNOWN.internal:5432/app', True),
    ('unknown.internal:5432/app', 'other-unknown.internal:5432/app', False),
    ('unknown.internal:5432/app', 'db.internal:5432/app', False),
])
def test_same_tcp_database(target, entry, same):
    reason = _locations.same_database(_tcp(target), _tcp(entry))
    assert bool(reason) is same, reason


INFOS = {
    'live': _info('a' * 64, ['172.17.0.3'], published=[('127.0.0.1', 15432)]),
    'a' * 64: _info('a' * 64, ['172.17.0.3'], published=[('127.0.0.1', 15432)]),
    'scratch': _info('b' * 64, ['172.17.0.4']),
    'public': _info('c' * 64, ['172.18.0.2', '10.9.0.2'], published=[('0.0.0.0', 25432)]),
    'hostnet': _info('d' * 64, [], mode='host'),
}


@pytest.mark.parametrize('target, entry, same', [
    ('container live (database app)', 'container:live/app', True),
    ('container live (database app)', 'container:%s/app' % ('a' * 64), True),
    ('container live (database app)', 'container live (database other)', False),
    ('container live (database app)', 'container:live', True),
    ('container scratch (database app)', 'container live (database app)', False),
    ('container scratch (database app)', 'container:gone/app', False),
    ('container live (database app)', 'localhost:15432/app', True),
    ('container live (database app)', 'localhost:15433/app', False),
    ('container live (database app)', '172.17.0.3:5432/app', True),
    ('container scratch (database app)', '172.17.0.3:5432/app', False),
    ('container public (database app)', 'me.internal:25432/app', True),
    ('container public (database app)', '10.9.0.2:5432/app', True),
    ('container hostnet (database app)', 'localhost:5432/app', True),
    ('localhost:15432/app', 'container live (database app)', True),
    ('db.internal:15432/app', 'container live (database app)', False),
])
def test_same_database_with_containers(target, entry, same):
    def resolve(text):
        location = _locations.parse_location(text)
        if location.kind == 'container':
            return _locations.resolve_container(location, INFOS.get, _is_local)
        return _locations.resolve_tcp(location, _resolver(NAMES), _is_local)
    reason = _locations.same_database(resolve(target), resolve(entry))
    assert bool(reason) is same, reason


def test_missing_container_entry_is_noted_and_matches_only_its_name():
    entry = _container('container:gone/app', INFOS)
    assert entry.container_id is None and 'does not exist' in entry.note
    target = _locations.parse_location('container gone (database app)')
    assert _locations.same_database(target, entry)


def test_refusal_names_the_first_matching_entry():
    target = _tcp('127.0.0.1:5432/app')
    entries = [_tcp('db.internal:5432/app'), _tcp('localhost:5432/app'), _tcp('[::1]:5432/app')]
    entry, reason = _locations.refusal(target, entries)
    assert entry.text == 'localhost:5432/app' and 'this host port 5432' in reason
    assert _locations.refusal(target, entries[:1]) is None


def test_unresolvable_host_is_noted():
    location = _tcp('nowhere.invalid:5432/x')
    assert location.addresses == [] and 'does not resolve' in location.note
    assert location.endpoints == {('name:nowhere.invalid', 5432)}


# ----- comparisons

@pytest.mark.parametrize('actual, expect, compare, ok', [
    ('40', 40, 'eq', True), ('40', '40.0', 'eq', True), ('40', 41, 'eq', False), ('40', 41, 'ne', True),
    ('5', 3, 'ge', True), ('3', 3, 'ge', True), ('2', 3, 'ge', False), ('2', 3, 'lt', True), ('3', 3, 'lt', False),
    ('3', 3, 'le', True), ('4', 3, 'gt', True), ('-1.5', '-1.25', 'lt', True),
    ('123456789012345678901234567890', '123456789012345678901234567889', 'gt', True),
    ('2025.10.1', '2025.10.1', 'eq', True), ('2025.10.1', '2025.8.0', 'eq', False), (' abc ', 'abc', 'eq', True),
    ('', '', 'eq', True), ('t', True, 'eq', True), ('true', True, 'eq', True), ('f', True, 'eq', False),
    ('f', False, 'eq', True), ('t', False, 'ne', True), ('yes', True, 'eq', False), ('1', True, 'eq', False),
    (None, 0, 'eq', False), (None, '', 'eq', False), ('abc', 3, 'ge', False), ('NaN', 'NaN', 'eq', True),
    ('NaN', 1, 'lt', False), ('1e3', 1000, 'eq', True),
])
def test_compare_values(actual, expect, compare, ok):
    got, reason = _sql_checks.compare_values(actual, expect, compare)
    assert got is ok
    assert (reason is None) is ok


def test_compare_values_reasons():
    assert _sql_checks.compare_values('2', 3, 'ge') == (False, '2 is not ge 3')
    assert 'not a number' in _sql_checks.compare_values('abc', 3, 'ge')[1]
    assert 'NULL' in _sql_checks.compare_values(None, 3)[1]
    assert 'only with eq or ne' in _sql_checks.compare_values('t', True, 'lt')[1]
    with pytest.raises(RecoveryError):
        _sql_checks.compare_values('1', 1, 'like')


# ----- check definitions and results

def test_normalize_checks_fills_defaults():
    found = _sql_checks.normalize_checks([{'name': 'a', 'sql': ' SELECT 1; '}, {'name': 'b', 'sql': 'SELECT 2',
                                                                                'expect_rows': '3', 'compare': 'ge'}])
    assert found == [
        {'name': 'a', 'sql': 'SELECT 1;', 'expect': None, 'compare': 'eq', 'expect_rows': None},
        {'name': 'b', 'sql': 'SELECT 2', 'expect': None, 'compare': 'ge', 'expect_rows': 3},
    ]
    assert _sql_checks.normalize_checks(None) == []


@pytest.mark.parametrize('checks, message', [
    (['SELECT 1'], 'not a dictionary'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'expected': 1}], 'unknown keys: expected'),
    ([{'sql': 'SELECT 1'}], 'needs a name'),
    ([{'name': 'a', 'sql': 'SELECT 1'}, {'name': 'a', 'sql': 'SELECT 2'}], 'used twice'),
    ([{'name': 'a', 'sql': ' ; '}], 'needs an SQL statement'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'compare': 'like'}], 'compare must be one of'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'compare': 'ge', 'expect': 'many'}], 'needs a number'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'expect': [1]}], 'single value'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'expect_rows': -1}], 'whole number'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'expect_rows': 1.5}], 'whole number'),
    ([{'name': 'a', 'sql': 'SELECT 1', 'expect_rows': True}], 'whole number'),
])
def test_normalize_checks_refuses(checks, message):
    with pytest.raises(RecoveryError) as caught:
        _sql_checks.normalize_checks(checks)
    assert message in caught.value.msg


def _one(**check):
    base = {'name': 'c', 'sql': 'SELECT 1'}
    base.update(check)
    return _sql_checks.normalize_checks([base])[0]


@pytest.mark.parametrize('check, rows, ok', [
    (_one(expect=40), [['40']], True),
    (_one(expect=40), [['41']], False),
    (_one(expect=40), [], False),
    (_one(expect=40), [[None]], False),
    (_one(expect_rows=2), [['a'], ['b']], True),
    (_one(expect_rows=2), [['a']], False),
    (_one(expect_rows=0), [], True),
    (_one(expect_rows=1, compare='ge'), [['a'], ['b']], True),
    (_one(expect='a', expect_rows=2), [['a'], ['b']], True),
    (_one(expect='a', expect_rows=2), [['b'], ['a']], False),
    (_one(), [['t']], True),
    (_one(), [['true', 'x']], True),
    (_one(), [['t'], ['t']], True),
    (_one(), [['t'], ['f']], False),
    (_one(), [['f']], False),
    (_one(), [['1']], False),
    (_one(), [[None]], False),
    (_one(), [], False),
])
def test_evaluate(check, rows, ok):
    got, actual, reason = _sql_checks.evaluate(check, rows)
    assert got is ok
    assert actual == (rows[0][0] if rows else None)
    assert (reason is None) is ok


def test_parse_rows_of_psql_csv():
    null = '__null__'
    text = '1,__null__,,"x,y","a\nb",tr  \n2,3,"q""",__null__,\\,__null__'
    assert _sql_checks.parse_rows(text, null) == [
        ['1', None, '', 'x,y', 'a\nb', 'tr  '],
        ['2', '3', 'q"', None, '\\', None],
    ]
    # a lone empty field is an empty line
    assert _sql_checks.parse_rows('', null) == [['']]
    assert _sql_checks.parse_rows('a\n\nb', null) == [['a'], [''], ['b']]


def test_summary():
    assert _sql_checks.checks_summary([{'name': 'a', 'ok': True}]) is None
    text = _sql_checks.checks_summary([{'name': 'a', 'ok': True}, {'name': 'b', 'ok': False, 'message': '2 is not eq 3'},
                                       {'name': 'c', 'ok': False}])
    assert text == '2 of 3 checks failed: b (2 is not eq 3); c (failed)'


@pytest.mark.parametrize('target, refused, same', [
    ('http://127.0.0.1:4434', 'http://localhost:4434/', True),
    ('https://db.internal/admin', 'https://db-alias.internal', True),
    ('https://db.internal', 'https://db.internal:443/', True),
    ('http://db.internal', 'https://db.internal', False),
    ('http://db.internal:4434', 'http://db.internal:4445', False),
    ('https://replica.internal', 'https://db.internal', False),
    ('http://me.internal:4434', 'http://127.0.0.1:4434', True),
])
def test_url_refusal_compares_servers_not_spellings(target, refused, same):
    found = _locations.url_refusal([target], [refused], _resolver(NAMES), _is_local)
    assert (found == (target, refused)) is same


def test_url_refusal_names_the_first_target_that_matches():
    found = _locations.url_refusal(['https://replica.internal', '', 'http://localhost:4467'],
                                   ['https://db.internal', 'http://127.0.0.1:4467'], _resolver(NAMES), _is_local)
    assert found == ('http://localhost:4467', 'http://127.0.0.1:4467')
    assert _locations.url_refusal(['https://replica.internal'], [], _resolver(NAMES), _is_local) is None


@pytest.mark.parametrize('url', ['db.internal:4434', 'ftp://db.internal', 'http://', 'http://db.internal:99999'])
def test_url_endpoints_refuses_what_it_cannot_read(url):
    with pytest.raises(RecoveryError, match='cannot read the URL'):
        _locations.url_endpoints(url, _resolver(NAMES), _is_local)
