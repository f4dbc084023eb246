#!/usr/bin/env python
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""authentik stand-in: plays the authentik-server and authentik-worker containers in tests.

This is NOT Authentik. The real images cannot be pulled where the tests run, so this small
service follows the part of Authentik's behaviour that a backup and restore of Authentik depend
on, against the real PostgreSQL database. FIDELITY.md (next to this file) names the upstream
source (goauthentik/authentik) of each behaviour and where the stand-in simplifies:

- configuration from AUTHENTIK_POSTGRESQL__HOST / __PORT / __NAME / __USER / __PASSWORD
  (a value ``file:///path`` or ``env://NAME`` is read from there, as Authentik does);
- on start, in both modes (``server`` and ``worker``), what ``ak`` does before it starts either:
  wait for the database, then the migration pass under the advisory lock 1000: the version
  check (exit 1, with a log line saying why, when the newest ``authentik_version_history`` row is
  of a release line other than its own or the previous one; a newer patch of its own line only
  logs a warning), a row for its version in ``authentik_version_history`` unless one is there,
  and the migrations it knows that ``django_migrations`` does not list (KNOWN_MIGRATIONS);
- ``server``: HTTP on AUTHENTIK_LISTEN__HTTP (default 0.0.0.0:9000); ``/-/health/live/`` 200
  while the process runs; ``/-/health/ready/`` 503 until the migration pass is done, then 200
  only while a new connection to the database can be opened right then, else 503;
- ``worker``: the same database check every few seconds;
- ``healthcheck``: like ``ak healthcheck``, exit 0 when healthy, 1 otherwise (the image's
  HEALTHCHECK).

The stand-in creates no schema: on a database without ``authentik_core_user`` it waits (a real
Authentik would create every table).

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
SCHEMA_SQL = "SELECT to_regclass('public.authentik_core_user') IS NOT NULL"
# Newest row first; of rows sharing a timestamp, the one written last (higher id).
VERSION_SQL = 'SELECT version, build FROM authentik_version_history ORDER BY "timestamp" DESC, id DESC LIMIT 1'
ADVISORY_LOCK = 1000
# The migrations this stand-in's code knows, as (app, name, forward SQL) in the order they apply:
# like Django's migrate, it applies each one that django_migrations does not list, and records it.
# Names follow the fixture's migration heads (tests/fixtures/authentik/seed.sql), not Authentik's
# migration history: they give a database of the previous release line something to migrate.
KNOWN_MIGRATIONS = (
    ('authentik_tenants', '0005_tenant_event_retention',
     "ALTER TABLE public.authentik_tenants_tenant ADD COLUMN event_retention text NOT NULL DEFAULT 'days=365'; "
     'ALTER TABLE public.authentik_tenants_tenant ALTER COLUMN event_retention DROP DEFAULT'),
)
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
    """An AUTHENTIK_* setting; ``file://`` and ``env://`` values are resolved.

    Upstream: authentik/lib/config.py, ConfigLoader.parse_uri."""
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


def version_key(version):
    """A comparable key of a version such as 2025.10.1 (missing parts count as 0), or None."""
    match = re.match(r'^\s*(\d{4})\.(\d{1,2})(?:\.(\d+))?', version or '')
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def check_version(own, found):
    """None when an Authentik of version ``own`` may run on a database last used by
    ``found``, else the reason why not.

    Upstream: lifecycle/migrate.py, ensure_allowed_version - the database's major.minor (here:
    the release line) must be the running one or the previous one; anything else stops the
    migration pass, a newer line too. Releases come every two months (YYYY.2 ... YYYY.12); the
    previous line is the one up to two months before."""
    own_line, found_line = version_line(own), version_line(found)
    if own_line is None:
        return 'this stand-in has no valid AUTHENTIK_VERSION (%r)' % (own,)
    if found_line is None:
        return 'the database reports an unreadable version %r' % (found,)
    months = (own_line[0] * 12 + own_line[1]) - (found_line[0] * 12 + found_line[1])
    if months < 0:
        return ('the database was last used by authentik %s, newer than this authentik %s; '
                'downgrades are not supported. Major version skips are not allowed.' % (found, own))
    if months > 2:
        return ('the database is at authentik %s; authentik %s upgrades only from the %d.%d or the previous '
                'release line; upgrade through the releases in between. Major version skips are not allowed.'
                % (found, own, own_line[0], own_line[1]))
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

    def connect_new(self):
        """A new connection of its own (not the shared one); raises psycopg2.Error."""
        settings = dict(self.settings, connect_timeout=3)
        return psycopg2.connect(**settings)

    def close(self):
        with self.lock:
            self._drop()


def wait_for_schema(db):
    """Wait for a reachable database that holds an Authentik schema; False when stopped.

    Upstream: lifecycle/ak, wait_for_db runs lifecycle/wait_for_db.py (retry until PostgreSQL
    answers) before the migration pass. Unlike Authentik, the stand-in cannot create the schema
    of an empty database, so it also waits until authentik_core_user is there."""
    said = None
    while not STOP.is_set():
        try:
            if db.query(SCHEMA_SQL)[0][0]:
                return True
            reason = 'no Authentik schema yet (a stand-in creates no tables)'
        except psycopg2.Error as exc:
            reason = 'PostgreSQL connection failed, retrying: %s' % (str(exc).strip().splitlines() or [''])[0]
        if reason != said:
            log('info', 'waiting for the database', reason=reason, database=db.where())
            said = reason
        STOP.wait(RETRY_SECONDS)
    return False


class MigrationError(Exception):
    """The migration pass stopped; the message says why."""


def _newest_version(cursor):
    cursor.execute("SELECT to_regclass('public.authentik_version_history') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return None
    cursor.execute(VERSION_SQL)
    row = cursor.fetchone()
    return row[0] if row else None


def migration_pass(conn, own, build):
    """What lifecycle/migrate.py (run_migrations) does, on one connection holding the lock.

    Upstream order: take the session advisory lock 1000 (wait_for_lock), check the version
    (ensure_allowed_version), run the system migrations in file name order - among them
    version_history_create.py and version_history_update.py - then Django's migrate, and release
    the lock (release_lock). Returns the database's version before the pass."""
    with conn.cursor() as cursor:
        log('info', 'waiting to acquire database lock')
        # pg_advisory_lock upstream; polled here so that a stop signal is not held up by the wait
        while True:
            cursor.execute('SELECT pg_try_advisory_lock(%s)', (ADVISORY_LOCK,))
            if cursor.fetchone()[0]:
                break
            conn.rollback()
            if STOP.wait(0.5):
                raise MigrationError('stopped while waiting for the database lock')
        try:
            found = _newest_version(cursor)
            if found is not None:
                if version_key(found) and version_key(own) and version_key(found) > version_key(own):
                    # ensure_allowed_version: a downgrade is only warned about; a line skip stops below
                    log('warning', 'Unsupported downgrade detected', downgrading_from=found, downgrading_to=own)
                reason = check_version(own, found)
                if reason:
                    raise MigrationError(reason)
            # version_history_create.py: the table, when it is not there
            cursor.execute('CREATE TABLE IF NOT EXISTS authentik_version_history (id bigserial PRIMARY KEY, '
                           '"timestamp" timestamptz NOT NULL, version text NOT NULL, build text NOT NULL)')
            # version_history_update.py: a row for this version unless one exists, then keep the newest 1000
            cursor.execute('SELECT 1 FROM authentik_version_history WHERE version = %s LIMIT 1', (own,))
            if cursor.fetchone() is None:
                cursor.execute('INSERT INTO authentik_version_history ("timestamp", version, build) '
                               'VALUES (now(), %s, %s)', (own, build))
                cursor.execute('DELETE FROM authentik_version_history WHERE id NOT IN (SELECT id FROM '
                               'authentik_version_history ORDER BY "timestamp" DESC, id DESC LIMIT 1000)')
                log('info', 'recorded this version in authentik_version_history', version=own, previous=found)
            conn.commit()
            log('info', 'applying django migrations')
            apply_migrations(conn, cursor)
        except psycopg2.Error as exc:
            conn.rollback()
            raise MigrationError('the migration pass failed: %s' % (str(exc).strip().splitlines() or [''])[0])
        finally:
            try:
                conn.rollback()
                log('info', 'releasing database lock')
                cursor.execute('SELECT pg_advisory_unlock(%s)', (ADVISORY_LOCK,))
                conn.commit()
            except psycopg2.Error:
                pass  # a lost connection released the session lock with it
    return found


def apply_migrations(conn, cursor):
    """Django's migrate (migrate_schemas, public schema): each known migration that django_migrations
    does not list is applied and recorded in one transaction, in order."""
    cursor.execute("SELECT to_regclass('public.django_migrations') IS NOT NULL")
    if not cursor.fetchone()[0]:
        conn.commit()
        log('warning', 'no django_migrations table: no migrations applied (a stand-in creates no tables)')
        return
    for app, name, sql in KNOWN_MIGRATIONS:
        cursor.execute('SELECT 1 FROM public.django_migrations WHERE app = %s AND name = %s', (app, name))
        if cursor.fetchone() is not None:
            continue
        log('info', 'Applying migration', app=app, migration=name)
        cursor.execute(sql)
        cursor.execute('INSERT INTO public.django_migrations (app, name, applied) VALUES (%s, %s, now())',
                       (app, name))
        conn.commit()
    conn.commit()


def startup(db, mode):
    """Wait for the database, then the migration pass; False when the process must exit.

    Upstream: lifecycle/ak runs wait_for_db (wait_for_db.py, then migrate.py) for ``server`` and
    for ``worker`` alike, before either starts."""
    own = os.environ.get('AUTHENTIK_VERSION', '')
    build = os.environ.get('AUTHENTIK_BUILD', '')
    if not wait_for_schema(db):
        return False
    while not STOP.is_set():
        try:
            conn = db.connect_new()
        except psycopg2.Error as exc:
            log('info', 'waiting for the database', reason=str(exc).strip().splitlines()[0], database=db.where())
            STOP.wait(RETRY_SECONDS)
            continue
        try:
            found = migration_pass(conn, own, build)
        except MigrationError as exc:
            if STOP.is_set():
                return False
            log('error', 'refusing to start: %s' % exc, version=own, mode=mode)
            return False
        finally:
            conn.close()
        log('info', 'Bootstrap completed', version=own, database_version=found, mode=mode)
        return True
    return False


def ready(db):
    """Upstream: authentik/root/monitoring.py, ReadyView - every database connection is opened anew
    (check_db), and an OperationalError answers 503; up to 2025.8 Redis was pinged too. No table
    is read: a database that lost its data but accepts connections is ready."""
    try:
        conn = db.connect_new()
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT 1')
            unready = os.environ.get(UNREADY_ENV)
            if unready:
                cursor.execute(unready)
                if cursor.fetchall():
                    return False
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


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
        # authentik/root/monitoring.py, LiveView: 200 while the process runs
        if path in ('/-/health/live/', '/-/health/live'):
            self._reply(200, {'status': 'live', 'standin': True})
        elif path in ('/-/health/ready/', '/-/health/ready'):
            # until the migration pass is done the router answers every path but live with an error
            # (internal/web/proxy.go, configureProxy: "authentik starting")
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
            try:
                db.query('SELECT 1')  # keeps one connection open, re-established after a drop
            except psycopg2.Error:
                pass
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
