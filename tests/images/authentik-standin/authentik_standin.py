#!/usr/bin/env python
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""authentik stand-in: plays the authentik-server and authentik-worker containers in tests.

This is NOT Authentik. The real images cannot be pulled where the tests run, so this small
service follows the part of Authentik's documented contract that a backup and restore of
Authentik depend on, against the real PostgreSQL database:

- configuration from AUTHENTIK_POSTGRESQL__HOST / __PORT / __NAME / __USER / __PASSWORD
  (a value ``file:///path`` or ``env://NAME`` is read from there, as Authentik does);
- one database connection held open while running, re-established after it drops;
- on start, the version gate: it waits until the schema is there (a stand-in runs no
  migrations), then refuses to run (exit 1, with a log line saying why) when the newest
  ``authentik_version_history`` release line is newer than its own or older than the
  previous line; when the database was last used by another version it records its own,
  as Authentik does on start (the server only);
- ``server``: HTTP on AUTHENTIK_LISTEN__HTTP (default 0.0.0.0:9000), ``/-/health/live/``
  200 while the process runs, ``/-/health/ready/`` 200 only when
  ``SELECT 1 FROM authentik_core_user LIMIT 1`` succeeds right then, else 503;
- ``worker``: the same database check every few seconds;
- ``healthcheck``: like ``ak healthcheck``, exit 0 when healthy, 1 otherwise (the image's
  HEALTHCHECK).

Test knob (not part of Authentik's contract, unset in the image): AUTHENTIK_STANDIN_UNREADY_SQL,
when set, is a query run with every readiness check; while it returns a row (or fails), the
stand-in is not ready (``/-/health/ready/`` 503, the worker's check fails). Tests use it to make a
given database content - a marker row in a backup set - one the application does not accept.

Its own version comes from AUTHENTIK_VERSION (and AUTHENTIK_BUILD), baked into the image,
which also carries the label org.opencontainers.image.version like the real images.
Logs are JSON lines on stderr.
"""

import datetime
import http.server
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2

PROGRAM = 'authentik-standin'
MODE_FILE = '/tmp/authentik-standin.mode'
WORKER_STATE = '/tmp/authentik-standin-worker.json'
READY_SQL = 'SELECT 1 FROM authentik_core_user LIMIT 1'
VERSION_SQL = 'SELECT version, build FROM authentik_version_history ORDER BY "timestamp" DESC LIMIT 1'
RECORD_SQL = 'INSERT INTO authentik_version_history ("timestamp", version, build) VALUES (now(), %s, %s)'
UNREADY_ENV = 'AUTHENTIK_STANDIN_UNREADY_SQL'
RETRY_SECONDS = 2
WORKER_INTERVAL = 5

STOP = threading.Event()


def log(level, event, **fields):
    record = {
        'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds'),
        'level': level,
        'logger': PROGRAM,
        'event': event,
    }
    record.update(fields)
    sys.stderr.write(json.dumps(record, sort_keys=False) + '\n')
    sys.stderr.flush()


def config_value(name, default=None):
    """An AUTHENTIK_* setting; ``file://`` and ``env://`` values are resolved."""
    value = os.environ.get(name, default)
    if value is None:
        return None
    if value.startswith('file://'):
        with open(value[len('file://'):], encoding='utf-8') as handle:
            return handle.read().strip()
    if value.startswith('env://'):
        return os.environ.get(value[len('env://'):], '')
    return value


def version_line(version):
    """(year, minor) of a version such as 2025.10.1, or None."""
    match = re.match(r'^\s*(\d{4})\.(\d{1,2})(?:\.|$|-)', version or '')
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def check_version(own, found):
    """None when an Authentik of version ``own`` may run on a database last used by
    ``found``, else the reason why not. Releases come every two months (YYYY.2 … YYYY.12);
    the previous line is the one up to two months before."""
    own_line, found_line = version_line(own), version_line(found)
    if own_line is None:
        return 'this stand-in has no valid AUTHENTIK_VERSION (%r)' % (own,)
    if found_line is None:
        return 'the database reports an unreadable version %r' % (found,)
    months = (own_line[0] * 12 + own_line[1]) - (found_line[0] * 12 + found_line[1])
    if months < 0:
        return ('the database was last used by authentik %s, newer than this authentik %s; '
                'downgrades are not supported' % (found, own))
    if months > 2:
        return ('the database is at authentik %s; authentik %s upgrades only from the %d.%d or the previous '
                'release line; upgrade through the releases in between' % (found, own, own_line[0], own_line[1]))
    return None


class Database:
    """One connection, held open and re-established after it drops (thread safe)."""

    def __init__(self, mode):
        self.settings = {
            'host': config_value('AUTHENTIK_POSTGRESQL__HOST', 'localhost'),
            'port': int(config_value('AUTHENTIK_POSTGRESQL__PORT', '5432')),
            'dbname': config_value('AUTHENTIK_POSTGRESQL__NAME', 'authentik'),
            'user': config_value('AUTHENTIK_POSTGRESQL__USER', 'authentik'),
            'password': config_value('AUTHENTIK_POSTGRESQL__PASSWORD', ''),
            'connect_timeout': 5,
            'application_name': '%s %s' % (PROGRAM, mode),
            'keepalives': 1,
            'keepalives_idle': 10,
            'keepalives_interval': 5,
            'keepalives_count': 3,
        }
        self.lock = threading.Lock()
        self.conn = None
        self.connected = False

    def where(self):
        return '%(host)s:%(port)s/%(dbname)s' % self.settings

    def _drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
        self.conn = None

    def query(self, sql, params=None, fetch=True):
        """Run one statement (autocommit); reconnect once when the connection is gone.
        Raises psycopg2.Error when it still fails."""
        with self.lock:
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = psycopg2.connect(**self.settings)
                        self.conn.autocommit = True
                        if not self.connected:
                            log('info', 'PostgreSQL connection established', database=self.where())
                        self.connected = True
                    with self.conn.cursor() as cursor:
                        cursor.execute(sql, params)
                        return cursor.fetchall() if fetch else None
                except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                    self._drop()
                    if self.connected:
                        log('warning', 'PostgreSQL connection lost', database=self.where(),
                            error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
                    self.connected = False
                    if attempt == 2:
                        raise
        return None

    def close(self):
        with self.lock:
            self._drop()


def wait_for_schema(db):
    """Wait for a reachable database with an Authentik schema; return its (version, build)."""
    said = None
    while not STOP.is_set():
        try:
            rows = db.query(VERSION_SQL)
            if rows:
                return rows[0]
            reason = 'authentik_version_history is empty'
        except psycopg2.errors.UndefinedTable:
            reason = 'no Authentik schema yet (a stand-in runs no migrations)'
        except psycopg2.Error as exc:
            reason = 'PostgreSQL connection failed, retrying: %s' % (str(exc).strip().splitlines() or [''])[0]
        if reason != said:
            log('info', 'waiting for the database', reason=reason, database=db.where())
            said = reason
        STOP.wait(RETRY_SECONDS)
    return None


def startup(db, mode):
    """The version gate; exits the process when the database's version does not fit."""
    own = os.environ.get('AUTHENTIK_VERSION', '')
    build = os.environ.get('AUTHENTIK_BUILD', '')
    found = wait_for_schema(db)
    if found is None:
        return False
    reason = check_version(own, found[0])
    if reason:
        log('error', 'refusing to start: %s' % reason, version=own, database_version=found[0])
        return False
    if mode == 'server' and found[0] != own:
        db.query(RECORD_SQL, (own, build), fetch=False)
        log('info', 'recorded this version in authentik_version_history', version=own, previous=found[0])
    log('info', 'database version accepted', version=own, database_version=found[0])
    return True


def ready(db):
    try:
        db.query(READY_SQL)
        unready = os.environ.get(UNREADY_ENV)
        if unready and db.query(unready):
            return False
        return True
    except psycopg2.Error:
        return False


class HealthHandler(http.server.BaseHTTPRequestHandler):
    server_version = 'authentik-standin'
    sys_version = ''
    db = None
    started = None

    def _reply(self, status, body):
        data = (json.dumps(body) + '\n').encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - name given by BaseHTTPRequestHandler
        path = self.path.split('?', 1)[0]
        if path in ('/-/health/live/', '/-/health/live'):
            self._reply(200, {'status': 'live', 'standin': True})
        elif path in ('/-/health/ready/', '/-/health/ready'):
            if self.started.is_set() and ready(self.db):
                self._reply(200, {'status': 'ready', 'standin': True})
            else:
                self._reply(503, {'status': 'not ready', 'standin': True})
        else:
            self._reply(404, {'detail': 'not found: this is an authentik stand-in with health endpoints only'})

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        if len(args) > 1 and str(args[1]) != '200':
            log('info', 'http request', request=args[0], status=str(args[1]))


def listen_address():
    value = config_value('AUTHENTIK_LISTEN__HTTP', '0.0.0.0:9000')
    host, _sep, port = value.rpartition(':')
    return host.strip('[]') or '0.0.0.0', int(port)


def run_server(db):
    started = threading.Event()
    handler = type('Handler', (HealthHandler,), {'db': db, 'started': started})
    address = listen_address()
    httpd = http.server.ThreadingHTTPServer(address, handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name='http', daemon=True)
    thread.start()
    log('info', 'listening', address='%s:%d' % address)
    status = 0
    if startup(db, 'server'):
        started.set()
        log('info', 'server ready to serve health checks')
        while not STOP.wait(10):
            ready(db)  # keeps the connection open, re-establishes it after a drop
    else:
        status = 0 if STOP.is_set() else 1
    httpd.shutdown()
    return status


def write_worker_state(ok):
    tmp = WORKER_STATE + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        json.dump({'ok': ok, 'time': time.time()}, handle)
    os.replace(tmp, WORKER_STATE)


def run_worker(db):
    if not startup(db, 'worker'):
        return 0 if STOP.is_set() else 1
    log('info', 'worker running')
    last = None
    while not STOP.is_set():
        ok = ready(db)
        write_worker_state(ok)
        if ok != last:
            log('info' if ok else 'warning', 'database check %s' % ('passed' if ok else 'failed'))
            last = ok
        STOP.wait(WORKER_INTERVAL)
    return 0


def healthcheck():
    """Exit status like `ak healthcheck`: 0 healthy, 1 not."""
    try:
        with open(MODE_FILE, encoding='utf-8') as handle:
            mode = handle.read().strip()
    except OSError:
        print('not running', file=sys.stderr)
        return 1
    if mode == 'server':
        host, port = listen_address()
        if host in ('0.0.0.0', '::', ''):
            host = '127.0.0.1'
        url = 'http://%s:%d/-/health/ready/' % (host, port)
        try:
            with urllib.request.urlopen(url, timeout=4) as response:
                return 0 if response.status == 200 else 1
        except (urllib.error.URLError, OSError) as exc:
            print('%s: %s' % (url, exc), file=sys.stderr)
            return 1
    db = Database('healthcheck')
    ok = ready(db)
    db.close()
    return 0 if ok else 1


def stop(signum, _frame):
    log('info', 'stopping', signal=signal.Signals(signum).name)
    STOP.set()


def main(argv):
    mode = argv[1] if len(argv) > 1 else 'server'
    if mode == 'healthcheck':
        return healthcheck()
    if mode not in ('server', 'worker'):
        print('usage: %s server|worker|healthcheck' % PROGRAM, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(MODE_FILE, 'w', encoding='utf-8') as handle:
        handle.write(mode + '\n')
    log('info', 'starting authentik %s stand-in' % mode, version=os.environ.get('AUTHENTIK_VERSION', ''),
        build=os.environ.get('AUTHENTIK_BUILD', ''), standin=True)
    db = Database(mode)
    try:
        status = run_server(db) if mode == 'server' else run_worker(db)
    finally:
        db.close()
    log('info' if status == 0 else 'error', 'exiting', status=status)
    return status


if __name__ == '__main__':
    sys.exit(main(sys.argv))
