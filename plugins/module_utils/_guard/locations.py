# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the live-target guard's view of where a database or a service is.

Locations are the ``where`` strings that dumps record (``HOST:PORT/DB`` for TCP,
``container NAME (database DB)`` for containers) or ``container:NAME/DB``. Two locations are the
same database when their database names are equal and they reach the same server: the same
container (by ID), or a common endpoint, an (address, port) pair. Every loopback address, every
address of the host that runs the module and the unspecified address of a published port count
as one address, "this host". ``url_refusal`` applies the same test to HTTP endpoints.

The parsing and comparing functions are pure; resolving names (``getaddrinfo``) and containers
(the Docker engine) happens in ``resolve_tcp`` / ``resolve_container``, which take their
resolvers as arguments. ``_postgres.check.guard`` is the guard that uses them.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ipaddress
import re
import socket

from ansible.module_utils.six.moves.urllib.parse import urlsplit

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

THIS_HOST = 'this host'
POSTGRES_PORT = 5432

_CONTAINER_WHERE = re.compile(r'^container (?P<name>\S+) \(database (?P<database>.+)\)$')
_CONTAINER_SHORT = re.compile(r'^container:(?P<name>[^/\s]+)(?:/(?P<database>.+))?$')
_TCP = re.compile(r'^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^/]+?))(?::(?P<port>\d+))?(?:/(?P<database>.+))?$')


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
        """The location as dumps record it (see _postgres.connection.Database.where)."""
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
