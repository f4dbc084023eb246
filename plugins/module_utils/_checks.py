# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: read-only SQL checks of a restored database, and the guard that
refuses a target which is the live database.

Locations are the ``where`` strings that dumps record (``HOST:PORT/DB`` for TCP,
``container NAME (database DB)`` for containers) or ``container:NAME/DB``. Two locations are the
same database when their database names are equal and they reach the same server: the same
container (by ID), or a common endpoint, an (address, port) pair. Every loopback address, every
address of the host that runs the module and the unspecified address of a published port count
as one address, "this host".

The parsing and comparing functions are pure; resolving names (``getaddrinfo``) and containers
(the Docker engine) happens in ``resolve_tcp`` / ``resolve_container``, which take their
resolvers as arguments.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import csv
import decimal
import io
import ipaddress
import re
import socket
import time
import uuid

from ansible.module_utils.six.moves.urllib.parse import urlsplit

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

THIS_HOST = 'this host'
POSTGRES_PORT = 5432
COMPARES = ('eq', 'ne', 'lt', 'le', 'gt', 'ge')
CHECK_KEYS = ('name', 'sql', 'expect', 'compare', 'expect_rows')
TRUE_TEXT = ('t', 'true')
FALSE_TEXT = ('f', 'false')

_CONTAINER_WHERE = re.compile(r'^container (?P<name>\S+) \(database (?P<database>.+)\)$')
_CONTAINER_SHORT = re.compile(r'^container:(?P<name>[^/\s]+)(?:/(?P<database>.+))?$')
_TCP = re.compile(r'^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^/]+?))(?::(?P<port>\d+))?(?:/(?P<database>.+))?$')


# ---------------------------------------------------------------------------------------------
# locations

class Location(object):
    """A database somewhere: a container's (``kind='container'``) or a server's over TCP (``'tcp'``).

    ``database`` None (a refuse entry without one) means any database of that server.
    After resolving: ``container_id``, ``addresses`` (what the names resolved to) and
    ``endpoints``, a set of (address or THIS_HOST or 'name:HOST', port).
    """

    def __init__(self, kind, database=None, host=None, port=None, container=None, text=None):
        self.kind = kind
        self.database = database
        self.host = host
        self.port = port
        self.container = container
        self.text = text
        self.container_id = None
        self.addresses = []
        self.endpoints = set()
        self.note = None

    @property
    def where(self):
        """The location as dumps record it (see _postgres.Database.where)."""
        if self.kind == 'container':
            return 'container %s (database %s)' % (self.container, self.database if self.database is not None else '*')
        host = '[%s]' % self.host if ':' in (self.host or '') else self.host
        return '%s:%s/%s' % (host, self.port, self.database if self.database is not None else '*')

    def describe(self):
        return {'where': self.where, 'addresses': sorted(self.addresses), 'port': self.port,
                'database': self.database, 'container_id': self.container_id}


def parse_location(text):
    """A Location from a where string; RecoveryError when it is none of the known forms."""
    if not isinstance(text, str) or not text.strip():
        raise RecoveryError('a location must be a non-empty string, not %r' % (text,))
    value = text.strip()
    match = _CONTAINER_WHERE.match(value) or _CONTAINER_SHORT.match(value)
    if match:
        return Location('container', database=match.group('database'), container=match.group('name'), port=POSTGRES_PORT,
                        text=value)
    if value.startswith('container'):
        raise RecoveryError('cannot read location %r: write a container as "container:NAME/DB" or '
                            '"container NAME (database DB)"' % value)
    match = _TCP.match(value)
    # an IPv6 address without brackets (as Database.where writes it) needs the port after it
    host = match and (match.group('v6') or match.group('host'))
    if not match or not host or ' ' in host:
        raise RecoveryError('cannot read location %r: expected HOST:PORT/DB, [IPV6]:PORT/DB, container:NAME/DB or '
                            '"container NAME (database DB)"' % value)
    port = int(match.group('port')) if match.group('port') else POSTGRES_PORT
    if not 0 < port < 65536:
        raise RecoveryError('cannot read location %r: port %s is out of range' % (value, port))
    return Location('tcp', database=match.group('database'), host=host, port=port, text=value)


def address_token(address, is_local=None):
    """THIS_HOST for loopback, unspecified and (with ``is_local``) this host's own addresses, else the address."""
    try:
        ip = ipaddress.ip_address(address.split('%', 1)[0])
    except ValueError:
        return 'name:%s' % address.lower()
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified or (is_local is not None and is_local(str(ip))):
        return THIS_HOST
    return str(ip)


def is_local_address(address):
    """Whether this host holds the address (a socket can be bound to it)."""
    try:
        family = socket.AF_INET6 if ':' in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        sock.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def resolve_tcp(location, resolver=socket.getaddrinfo, is_local=is_local_address):
    """Fill addresses and endpoints of a TCP location; an unresolvable host keeps its name as endpoint."""
    try:
        infos = resolver(location.host, location.port, 0, socket.SOCK_STREAM)
        addresses = sorted(set(info[4][0] for info in infos))
    except (socket.gaierror, OSError, UnicodeError) as exc:
        addresses = []
        location.note = 'host %s does not resolve here (%s): compared by name' % (location.host, exc)
    location.addresses = addresses
    if addresses:
        location.endpoints = set((address_token(a, is_local), location.port) for a in addresses)
    else:
        location.endpoints = {('name:%s' % location.host.lower(), location.port)}
    return location


URL_PORTS = {'http': 80, 'https': 443}


def url_endpoints(url, resolver=socket.getaddrinfo, is_local=is_local_address):
    """The (address token, port) pairs an API base URL reaches - so that two spellings of one server
    (a name and its address, localhost and 127.0.0.1, a trailing slash) compare equal."""
    parsed = urlsplit(str(url).strip())
    if parsed.scheme.lower() not in URL_PORTS or not parsed.hostname:
        raise RecoveryError('cannot read the URL %r: give scheme://host[:port][/path]' % url)
    try:
        port = parsed.port or URL_PORTS[parsed.scheme.lower()]
    except ValueError:
        raise RecoveryError('cannot read the URL %r: bad port' % url)
    return resolve_tcp(Location('tcp', host=parsed.hostname, port=port, text=url), resolver, is_local).endpoints


def url_refusal(targets, refused, resolver=socket.getaddrinfo, is_local=is_local_address):
    """(target URL, refused URL) of the first target that reaches the same server as a refused URL, else None."""
    refused_endpoints = [(entry, url_endpoints(entry, resolver, is_local)) for entry in refused if entry]
    for target in targets:
        if not target:
            continue
        reached = url_endpoints(target, resolver, is_local)
        for entry, endpoints in refused_endpoints:
            if reached & endpoints:
                return target, entry
    return None


def container_endpoints(info, is_local=None):
    """(addresses, endpoints) of a container from its inspect data: its addresses on every network with
    PostgreSQL's port inside, plus the host side of a published 5432/tcp."""
    settings = info.get('NetworkSettings') or {}
    host_config = info.get('HostConfig') or {}
    addresses = set()
    endpoints = set()
    if host_config.get('NetworkMode') == 'host':
        endpoints.add((THIS_HOST, POSTGRES_PORT))
    for network in (settings.get('Networks') or {}).values():
        for key in ('IPAddress', 'GlobalIPv6Address'):
            address = (network or {}).get(key)
            if address:
                addresses.add(address)
                endpoints.add((address_token(address, is_local), POSTGRES_PORT))
    for binding in (settings.get('Ports') or {}).get('%d/tcp' % POSTGRES_PORT) or []:
        try:
            port = int(binding.get('HostPort'))
        except (TypeError, ValueError):
            continue
        endpoints.add((address_token(binding.get('HostIp') or '0.0.0.0', is_local), port))
    return sorted(addresses), endpoints


def resolve_container(location, inspect, is_local=is_local_address):
    """Fill a container location from ``inspect(name)`` (inspect data, or None when there is no such
    container: it then matches nothing but its own name)."""
    info = inspect(location.container)
    if info is None:
        location.note = 'container %s does not exist on this Docker engine' % location.container
        return location
    location.container_id = info.get('Id')
    location.addresses, location.endpoints = container_endpoints(info, is_local)
    return location


def same_database(target, entry):
    """Why target is the database of entry (a text), or None when it is not."""
    if entry.database is not None and target.database != entry.database:
        return None
    if target.container_id and entry.container_id:
        if target.container_id == entry.container_id:
            return 'the same container (%s)' % target.container_id[:12]
    elif target.kind == 'container' and entry.kind == 'container' and target.container == entry.container:
        return 'the same container name (%s)' % target.container
    common = target.endpoints & entry.endpoints
    if common:
        return 'the same server (%s)' % ', '.join('%s port %s' % (addr, port) for addr, port in sorted(common))
    return None


def refusal(target, entries):
    """(entry, reason) of the first entry target is the same database as, or None."""
    for entry in entries:
        reason = same_database(target, entry)
        if reason:
            return entry, reason
    return None


# ---------------------------------------------------------------------------------------------
# checks

def _number(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = decimal.Decimal(str(value).strip())
    except (decimal.InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _boolean(text):
    lowered = str(text).strip().lower()
    if lowered in TRUE_TEXT:
        return True
    if lowered in FALSE_TEXT:
        return False
    return None


_OPS = {
    'eq': lambda a, b: a == b, 'ne': lambda a, b: a != b,
    'lt': lambda a, b: a < b, 'le': lambda a, b: a <= b,
    'gt': lambda a, b: a > b, 'ge': lambda a, b: a >= b,
}


def compare_values(actual, expect, compare='eq'):
    """(ok, reason) for actual (text or None) against expect.

    Numbers when both read as numbers; booleans when expect is one (t/true, f/false); else text.
    lt/le/gt/ge need numbers on both sides.
    """
    if compare not in _OPS:
        raise RecoveryError('unknown comparison %r (one of %s)' % (compare, ', '.join(COMPARES)))
    if actual is None:
        return False, 'no value (no row, or NULL)'
    if isinstance(expect, bool):
        got = _boolean(actual)
        if got is None:
            return False, '%r is not a boolean' % actual
        if compare not in ('eq', 'ne'):
            return False, 'booleans compare only with eq or ne'
        ok = _OPS[compare](got, expect)
        return ok, None if ok else '%s is not %s %s' % (actual, compare, str(expect).lower())
    left, right = _number(actual), _number(expect)
    if left is not None and right is not None:
        ok = _OPS[compare](left, right)
        return ok, None if ok else '%s is not %s %s' % (actual, compare, expect)
    if compare not in ('eq', 'ne'):
        what = 'the value %r' % actual if left is None else 'the expected value %r' % (expect,)
        return False, '%s is not a number (needed by %s)' % (what, compare)
    ok = _OPS[compare](str(actual).strip(), str(expect).strip())
    return ok, None if ok else '%r is not %s %r' % (actual, compare, str(expect))


def normalize_checks(checks):
    """Validated copies of the check definitions; RecoveryError names the first bad one."""
    found = []
    names = set()
    for index, check in enumerate(checks or []):
        if not isinstance(check, dict):
            raise RecoveryError('check #%d is not a dictionary' % (index + 1))
        unknown = sorted(set(check) - set(CHECK_KEYS))
        if unknown:
            raise RecoveryError('check #%d has unknown keys: %s' % (index + 1, ', '.join(unknown)))
        name = check.get('name')
        sql = check.get('sql')
        if not isinstance(name, str) or not name.strip():
            raise RecoveryError('check #%d needs a name' % (index + 1))
        if name in names:
            raise RecoveryError('check name %r is used twice' % name)
        names.add(name)
        if not isinstance(sql, str) or not sql.strip().rstrip(';').strip():
            raise RecoveryError('check %s needs an SQL statement (sql)' % name)
        compare = check.get('compare') or 'eq'
        if compare not in COMPARES:
            raise RecoveryError('check %s: compare must be one of %s, not %r' % (name, ', '.join(COMPARES), compare))
        expect = check.get('expect')
        if isinstance(expect, (dict, list)):
            raise RecoveryError('check %s: expect must be a single value, not %s' % (name, type(expect).__name__))
        if expect is not None and compare not in ('eq', 'ne') and _number(expect) is None:
            raise RecoveryError('check %s: compare %s needs a number as expect, not %r' % (name, compare, expect))
        expect_rows = check.get('expect_rows')
        if expect_rows is not None:
            if isinstance(expect_rows, bool) or _number(expect_rows) is None or _number(expect_rows) < 0 \
                    or _number(expect_rows) != int(_number(expect_rows)):
                raise RecoveryError('check %s: expect_rows must be a whole number >= 0, not %r' % (name, expect_rows))
            expect_rows = int(_number(expect_rows))
        found.append({'name': name, 'sql': sql.strip(), 'expect': expect, 'compare': compare,
                      'expect_rows': expect_rows})
    return found


def evaluate(check, rows):
    """(ok, actual, reason) of a check over its rows (lists of text or None)."""
    actual = rows[0][0] if rows and rows[0] else None
    reasons = []
    if check.get('expect') is not None:
        ok, reason = compare_values(actual, check['expect'], check['compare'])
        if not ok:
            reasons.append(reason)
    if check.get('expect_rows') is not None:
        ok, reason = compare_values(str(len(rows)), check['expect_rows'], check['compare'])
        if not ok:
            reasons.append('%d rows, expected %s %s' % (len(rows), check['compare'], check['expect_rows']))
    if check.get('expect') is None and check.get('expect_rows') is None:
        if not rows:
            reasons.append('no row returned (a check without expect needs rows whose first column is true)')
        else:
            untrue = [row[0] if row else None for row in rows if not row or _boolean(row[0]) is not True]
            if untrue:
                reasons.append('%d of %d rows have a first column that is not true (first: %r)' % (
                    len(untrue), len(rows), untrue[0]))
    return not reasons, actual, '; '.join(reasons) or None


def parse_rows(text, null_text):
    """Rows of psql's csv output (without header); ``null_text`` marks NULL."""
    rows = []
    for row in csv.reader(io.StringIO(text + '\n')):
        # psql writes a lone empty field as an empty line
        cells = row if row else ['']
        rows.append([None if cell == null_text else cell for cell in cells])
    return rows


def _raw(session, text):
    """Send psql input as it is (meta-commands included) and read its output up to the marker."""
    session.proc.write(('%s\n\\echo %s\n' % (text, session.marker)).encode('utf-8'))
    return session.receive()


def _literal(text):
    return "'%s'" % text.replace("'", "''")


def query_rows(db, sql, timeout=None):
    """Rows of one statement run in a READ ONLY transaction of its own session.

    The statement reaches the server through psql's \\gexec from a string literal, so psql itself
    never interprets it (no meta-commands, no variables); the session's default is read-only too.
    """
    token = uuid.uuid4().hex
    null_text, begin, end = '__idp_null_%s__' % token, '__idp_begin_%s__' % token, '__idp_end_%s__' % token
    statement = sql.strip().rstrip(';').strip()
    setup = ['\\pset format csv', '\\pset null %s' % null_text,
             'SET default_transaction_read_only = on;', 'SET standard_conforming_strings = on;']
    if timeout:
        setup.append("SET statement_timeout = '%ds';" % int(timeout))
    setup.append('BEGIN TRANSACTION READ ONLY;')
    with db.session() as session:
        _raw(session, '\n'.join(setup))
        out = _raw(session, '\\echo %s\nSELECT %s \\gexec\n\\echo %s' % (begin, _literal(statement), end))
    start = out.find(begin + '\n')
    stop = out.rfind(end)
    if start < 0 or stop < 0:
        raise RecoveryError('unexpected psql output for check statement: %s' % out[:200])
    body = out[start + len(begin) + 1:stop]
    if not body:
        return []
    return parse_rows(body[:-1] if body.endswith('\n') else body, null_text)


def run_check(db, check, timeout=None):
    """The result of one check (never raises for a failing or failed statement)."""
    result = {'name': check['name'], 'sql': check['sql'], 'expect': check['expect'], 'compare': check['compare'],
              'expect_rows': check['expect_rows'], 'actual': None, 'rows': None, 'ok': False}
    started = time.monotonic()
    try:
        rows = query_rows(db, check['sql'], timeout)
    except RecoveryError as exc:
        result['error'] = exc.msg
        result['message'] = 'the statement failed: %s' % exc.msg
    else:
        ok, actual, reason = evaluate(check, rows)
        result.update(ok=ok, actual=actual, rows=len(rows))
        if reason:
            result['message'] = reason
    result['seconds'] = round(time.monotonic() - started, 3)
    return result


def summary(results):
    failed = [item for item in results if not item['ok']]
    if not failed:
        return None
    return '%d of %d checks failed: %s' % (len(failed), len(results), '; '.join(
        '%s (%s)' % (item['name'], item.get('message') or 'failed') for item in failed))
