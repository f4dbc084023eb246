# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: PostgreSQL dump, restore, row counts and versions.

The stock client tools do the work (``pg_dump``, ``pg_restore``, ``psql``), either inside the
database container through the Docker engine API (the tools then always match the server) or
on this host over TCP (libpq; the password goes to the child's environment only). Both ways run
the same commands through one small process interface (``LocalRunner`` / ``ContainerRunner``),
so the two give the same result.

Consistency: a ``psql`` session holds a REPEATABLE READ transaction and exports its snapshot;
``pg_dump --snapshot`` dumps exactly that snapshot while the session counts every table's rows in
it, so the counts recorded with a dump are the counts of the dump. Given a snapshot exported by the
caller, the session imports it first (``SET TRANSACTION SNAPSHOT``) and exports it again for
``pg_dump``: the dump and the counts are then of the caller's instant.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import uuid

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._stream import grow_pipe, pump

STDERR_KEEP = 64 * 1024
# how much of a custom-format dump the TOC check may read before giving up on it
LIST_CHECK_LIMIT = 256 * 1024 * 1024
CUSTOM_TRAILER = b'\0' * 5
TAIL_KEEP = 1024
PLAIN_TRAILER = b'PostgreSQL database dump complete'
# pg_dump / pg_restore / psql lines that mean the run failed, whatever the exit code says
_FAILURE_LINE = re.compile(r'(^|: )(error|fatal|panic):|could not |aborting because of', re.I | re.M)

# what PostgreSQL itself accepts as a snapshot identifier (SET TRANSACTION SNAPSHOT)
_SNAPSHOT_CHARS = frozenset('0123456789ABCDEF-')
SNAPSHOT_ID_MAX = 64

# every ordinary and partitioned table outside the system schemas, with its exact row count
COUNT_ROWS_SQL = r"""
SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}'::json) FROM (
  SELECT format('%s.%s', n.nspname, c.relname) AS name,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),
                                             false, true, '')))[1]::text::bigint AS n
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
) t
"""

SERVER_SQL = r"""
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'database_size', pg_database_size(current_database()),
  'encoding', pg_encoding_to_char(d.encoding),
  'owner', pg_get_userbyid(d.datdba),
  'schemas', (SELECT coalesce(json_agg(nspname ORDER BY nspname), '[]'::json) FROM pg_namespace
               WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%'
                 AND nspname NOT LIKE 'pg\_temp\_%'))
FROM pg_database d WHERE d.datname = current_database()
"""


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


def check_snapshot_id(snapshot):
    """The identifier of an exported snapshot, as given; RecoveryError when it cannot be one."""
    text = snapshot if isinstance(snapshot, str) else ''
    if not text or len(text) > SNAPSHOT_ID_MAX or not set(text) <= _SNAPSHOT_CHARS or '-' not in text.strip('-'):
        raise RecoveryError('snapshot %r is not a snapshot identifier: give the value pg_export_snapshot() returned '
                            '(upper-case hexadecimal digits and dashes, such as 00000003-0000001B-1)'
                            % (snapshot if not isinstance(snapshot, str) else snapshot[:80],))
    return text


def failure_lines(stderr):
    """stderr lines of a client tool that say something failed."""
    return [line for line in stderr.splitlines() if _FAILURE_LINE.search(line)]


# ---------------------------------------------------------------------------------------------
# processes: on this host or in a container, behind one interface

class LocalProcess(object):
    """A client tool on this host (stdout read in chunks, stderr kept in a temporary file)."""

    def __init__(self, argv, env=None, stdin=False):
        self.name = os.path.basename(argv[0])
        self._stderr = tempfile.TemporaryFile()
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=self._stderr, env=full_env, close_fds=True)
        except OSError as exc:
            self._stderr.close()
            raise RecoveryError('cannot run %s on this host: %s (is the PostgreSQL client installed?)' % (
                argv[0], exc.strerror or exc))
        grow_pipe(self.proc.stdout)
        self._fd = self.proc.stdout.fileno()

    def write(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (OSError, IOError, ValueError) as exc:
            raise RecoveryError('%s stopped reading its input: %s' % (self.name, getattr(exc, 'strerror', None) or exc))

    def write_while(self, data, keep_going):
        """Write unless keep_going() is false; a reader that ended is not an error here."""
        if keep_going():
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, IOError, ValueError):
                pass

    def close_stdin(self):
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except (OSError, IOError):
                pass

    def read_stdout(self):
        try:
            return os.read(self._fd, CHUNK_SIZE)
        except OSError as exc:
            raise RecoveryError('cannot read the output of %s: %s' % (self.name, exc.strerror or exc))

    def read_all(self, write):
        return pump(self.read_stdout, write)

    def stderr_text(self):
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - STDERR_KEEP))
        return self._stderr.read().decode('utf-8', 'replace').strip()

    def wait(self, timeout=None):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RecoveryError('%s did not finish' % self.name)

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def close(self):
        self.close_stdin()
        try:
            self.proc.stdout.close()
        except (OSError, IOError):
            pass


class LocalRunner(object):
    where = 'this host'

    def spawn(self, argv, env=None, stdin=False, bulk_output=False):
        return LocalProcess(argv, env=env, stdin=stdin)


class ContainerRunner(object):
    """Client tools inside a container, through the Docker engine API."""

    def __init__(self, engine, container, user='postgres', output='auto'):
        self.engine = engine
        self.container = container
        self.user = user
        self.output = output
        self.where = 'container %s' % container

    def spawn(self, argv, env=None, stdin=False, bulk_output=False):
        """bulk_output: the command writes much (a dump); read it through a FIFO when this host can."""
        if bulk_output and not stdin and self.output == 'auto':
            from ansible_collections.idp.recovery.plugins.module_utils._docker import open_fifo_exec
            proc = open_fifo_exec(self.engine, self.container, argv, env=env, user=self.user)
            if proc is not None:
                return proc
        proc = self.engine.exec(self.container, argv, env=env, user=self.user, stdin=stdin)
        proc.write_while = lambda data, keep_going: _socket_write_while(proc, data, keep_going)
        return proc


def _socket_write_while(proc, data, keep_going):
    """Write to an exec's stdin, giving up as soon as keep_going() turns false (the command ended)."""
    view = memoryview(data)
    sock = proc._sock  # pylint: disable=protected-access
    while view and keep_going():
        _unused, writable, _unused2 = select.select([], [sock], [], 0.2)
        if not writable:
            continue
        try:
            sent = sock.send(view)
        except (OSError, IOError):
            return
        view = view[sent:]


# ---------------------------------------------------------------------------------------------
# a database to dump from or restore into

class Database(object):
    """Where a database lives and how to reach it (container or TCP)."""

    def __init__(self, runner, database, user, password=None, host=None, port=None, sslmode=None):
        self.runner = runner
        self.database = database
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.sslmode = sslmode

    @property
    def where(self):
        if self.host:
            return '%s:%s/%s' % (self.host, self.port, self.database)
        return '%s (database %s)' % (self.runner.where, self.database)

    def env(self, appname='idp-recovery'):
        env = {'PGAPPNAME': appname, 'PGCONNECT_TIMEOUT': '15'}
        if self.password:
            env['PGPASSWORD'] = self.password
        if self.sslmode:
            env['PGSSLMODE'] = self.sslmode
        return env

    def conn_args(self, database=None):
        args = ['--username=%s' % self.user, '--dbname=%s' % (database or self.database)]
        if self.host:
            args += ['--host=%s' % self.host, '--port=%s' % (self.port or 5432)]
        return args

    def spawn(self, argv, stdin=False, bulk_output=False):
        # the application name tells the tool in pg_stat_activity: idp-recovery-pg_dump, ...
        return self.runner.spawn(argv, env=self.env('idp-recovery-%s' % os.path.basename(argv[0])), stdin=stdin,
                                 bulk_output=bulk_output)

    def session(self, database=None):
        return PsqlSession(self, database)

    def run_sql(self, sql, database=None):
        """Run SQL in its own session (autocommit); return the output text."""
        with self.session(database) as session:
            return session.query(sql)


class PsqlSession(object):
    """One psql process kept open: statements in, output read up to a marker after each."""

    def __init__(self, db, database=None):
        self.db = db
        self.database = database or db.database
        self.marker = '__idp_recovery_%s__' % uuid.uuid4().hex
        self.proc = db.spawn(['psql', '--no-psqlrc', '--quiet', '--no-align', '--tuples-only',
                              '--set=ON_ERROR_STOP=1'] + db.conn_args(self.database), stdin=True)
        self._buffer = b''
        self._sent = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def send(self, sql):
        """Send a statement without waiting for its output (receive() reads it)."""
        text = sql.strip().rstrip(';') + ';\n\\echo %s\n' % self.marker
        self.proc.write(text.encode('utf-8'))
        self._sent += 1

    def receive(self):
        """The output of the oldest statement sent and not yet received."""
        marker = ('%s\n' % self.marker).encode('ascii')
        while True:
            index = self._buffer.find(marker)
            if index >= 0 and (index == 0 or self._buffer[index - 1:index] == b'\n'):
                out = self._buffer[:index]
                self._buffer = self._buffer[index + len(marker):]
                self._sent -= 1
                return out.decode('utf-8', 'replace').strip()
            data = self.proc.read_stdout()
            if not data:
                self.proc.close_stdin()
                code = self.proc.wait()
                raise RecoveryError(self._describe_failure(code), database=self.database)
            self._buffer += bytes(data)

    def _describe_failure(self, code):
        stderr = self.proc.stderr_text()
        lines = [line for line in stderr.splitlines() if line.strip()]
        detail = ' / '.join(lines[-3:]) if lines else 'psql exited with %s' % code
        return 'PostgreSQL at %s: %s' % (self.db.where if self.database == self.db.database
                                         else '%s, database %s' % (self.db.runner.where, self.database), detail)

    def query(self, sql):
        self.send(sql)
        return self.receive()

    def query_json(self, sql):
        text = self.query(sql)
        try:
            return json.loads(text) if text else None
        except ValueError:
            raise RecoveryError('unexpected answer from PostgreSQL at %s: %s' % (self.db.where, text[:200]))

    def close(self):
        try:
            self.proc.close_stdin()
            self.proc.read_all(lambda data: None)
            self.proc.wait()
        except RecoveryError:
            pass
        finally:
            self.proc.close()


# ---------------------------------------------------------------------------------------------
# dump

class DumpSanity(object):
    """Watches a dump stream go by: keeps its tail and checks its table of contents.

    For the custom format a ``pg_restore --list`` reads the head of the stream (it needs only the
    table of contents and stops there), so a dump without the data of a required table fails
    without a second pass over the payload.
    """

    def __init__(self, db, fmt, required_tables):
        self.db = db
        self.fmt = fmt
        self.required = list(required_tables or [])
        self.tail = b''
        self.bytes = 0
        self.toc = None
        self._lister = None
        self._list_out = []
        self._list_done = threading.Event()
        self._reader = None
        self._fed = 0
        self._plain_seen = set()
        self._plain_carry = b''
        if fmt == 'custom':
            self._lister = db.spawn(['pg_restore', '--list'], stdin=True)
            self._reader = threading.Thread(target=self._read_list, name='idp-recovery-toc')
            self._reader.daemon = True
            self._reader.start()

    def _read_list(self):
        try:
            self._lister.read_all(self._list_out.append)
        except RecoveryError:
            pass
        finally:
            self._list_done.set()

    def feed(self, data):
        size = len(data)
        self.bytes += size
        if size >= TAIL_KEEP:
            self.tail = bytes(data[-TAIL_KEEP:])
        else:
            self.tail = (self.tail + bytes(data))[-TAIL_KEEP:]
        if self._lister is not None and not self._list_done.is_set():
            if self._fed < LIST_CHECK_LIMIT:
                self._lister.write_while(data, lambda: not self._list_done.is_set())
                self._fed += size
            else:
                self._lister.close_stdin()
        elif self.fmt == 'plain' and len(self._plain_seen) < len(self.required):
            text = self._plain_carry + bytes(data)
            for table in self.required:
                if table not in self._plain_seen and ('\nCOPY %s ' % _qualified(table)).encode('utf-8') in text:
                    self._plain_seen.add(table)
            self._plain_carry = text[-256:]

    def finish(self):
        """Raise when the stream that went by is not a complete dump with the required data."""
        problems = []
        if self.bytes == 0:
            raise RecoveryError('pg_dump produced no output at all (0 bytes)')
        if self.fmt == 'custom':
            if not self.tail.endswith(CUSTOM_TRAILER):
                problems.append('the custom-format dump is truncated (its last data block is not terminated)')
            self._lister.close_stdin()
            self._list_done.wait(60)
            code = self._lister.wait()
            listing = b''.join(bytes(part) for part in self._list_out).decode('utf-8', 'replace')
            self._lister.close()
            if code != 0 or not listing.strip():
                raise RecoveryError('pg_restore --list cannot read the dump: %s' % (
                    self._lister.stderr_text() or 'exit code %s' % code))
            self.toc = listing
            for table in self.required:
                schema, name = _split(table)
                if not re.search(r'^\d+; \d+ \d+ TABLE DATA %s %s ' % (re.escape(schema), re.escape(name)), listing, re.M):
                    problems.append('the dump holds no data for table %s (pg_restore --list)' % table)
        else:
            # PostgreSQL 17.6 / 15.14 and later put an \unrestrict line after the marker
            if PLAIN_TRAILER not in self.tail:
                problems.append('the plain dump is truncated (no "dump complete" line at its end)')
            for table in self.required:
                if table not in self._plain_seen:
                    problems.append('the dump holds no data for table %s' % table)
        if problems:
            raise RecoveryError('the dump is not usable: %s' % '; '.join(problems))

    def abort(self):
        if self._lister is not None:
            self._lister.kill()
            self._lister.close()


def _split(table):
    if '.' in table:
        return table.split('.', 1)
    return 'public', table


def _qualified(table):
    schema, name = _split(table)
    return '%s.%s' % (schema, name)


class SnapshotDump(object):
    """Open a REPEATABLE READ snapshot, read facts in it, then dump exactly it.

    Use as a context manager; ``query_json(sql)`` runs queries in the snapshot, ``start_counts`` /
    ``counts_result`` count every table's rows in it, ``produce`` is the producer for
    ``_stream.run_to_file`` (pg_dump of the snapshot, with the sanity checks).

    ``snapshot``: the identifier of a snapshot exported by the caller (``pg_export_snapshot()`` in
    the same database, in a transaction the caller keeps open until this session has imported it).
    The session imports it and exports it again, so ``pg_dump`` depends on this session only.
    Without it the session exports a snapshot of its own.
    """

    def __init__(self, db, fmt='custom', required_tables=None, snapshot=None):
        if fmt not in ('custom', 'plain'):
            raise RecoveryError('unknown dump format %s' % fmt)
        self.db = db
        self.fmt = fmt
        self.required_tables = required_tables or []
        self.given = check_snapshot_id(snapshot) if snapshot is not None else None
        self.session = None
        self.snapshot = None
        self.counts = None
        self.sanity = None
        self.dump_stderr = ''

    def __enter__(self):
        self.session = self.db.session()
        try:
            self.session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
            if self.given:
                self._import()
            self.snapshot = self.session.query('SELECT pg_export_snapshot()').strip()
        except RecoveryError:
            self.session.close()
            raise
        return self

    def _import(self):
        try:
            self.session.query('SET TRANSACTION SNAPSHOT %s' % quote_literal(self.given))
        except RecoveryError as exc:
            raise RecoveryError('cannot dump from snapshot %s: %s. Export it with pg_export_snapshot() in database '
                                '%s itself and keep that transaction open until the dump has begun'
                                % (self.given, exc.msg, self.db.database), database=self.db.database)

    @property
    def source(self):
        """The snapshot the dump and the counts are of: the caller's when given, else this session's."""
        return self.given or self.snapshot

    def __exit__(self, exc_type, exc, tb):
        try:
            self.session.query('ROLLBACK')
        except RecoveryError:
            pass
        self.session.close()
        return False

    def query_json(self, sql):
        return self.session.query_json(sql)

    def start_counts(self):
        """Count every table's rows in the snapshot while the dump runs (read by counts_result)."""
        self.session.send(COUNT_ROWS_SQL)

    def counts_result(self):
        text = self.session.receive()
        try:
            self.counts = json.loads(text) if text else {}
        except ValueError:
            raise RecoveryError('unexpected answer to the row count query: %s' % text[:200])
        return self.counts

    def argv(self):
        argv = ['pg_dump', '--snapshot=%s' % self.snapshot, '--format=%s' % self.fmt, '--no-sync']
        if self.fmt == 'custom':
            # compression happens later in the pipeline (zstd), much faster than pg_dump's zlib
            argv.append('--compress=0')
        return argv + self.db.conn_args()

    def produce(self, sink):
        """Producer for run_to_file: stream pg_dump's output into sink, then check it."""
        self.sanity = DumpSanity(self.db, self.fmt, self.required_tables)
        proc = None
        try:
            proc = self.db.spawn(self.argv(), bulk_output=True)
            sanity = self.sanity
            write = sink.write
            while True:
                data = proc.read_stdout()
                if not data:
                    break
                sanity.feed(data)
                write(data)
            code = proc.wait()
            self.dump_stderr = proc.stderr_text()
            failed = failure_lines(self.dump_stderr)
            if code != 0 or failed:
                raise RecoveryError('pg_dump failed in %s (exit code %s): %s' % (
                    self.db.runner.where, code, ' / '.join((failed or self.dump_stderr.splitlines())[-3:]) or 'no message'))
            sanity.finish()
        except BaseException:
            if proc is not None:
                proc.kill()
            self.sanity.abort()
            raise
        finally:
            if proc is not None:
                proc.close()


# ---------------------------------------------------------------------------------------------
# restore

def database_exists(db, name):
    out = db.run_sql('SELECT 1 FROM pg_database WHERE datname = %s' % quote_literal(name), database='postgres')
    return out.strip() == '1'


def recreate_database(db, owner, encoding=None):
    """Terminate every connection to the database, drop it and create it empty with its owner."""
    name = db.database
    with db.session('postgres') as session:
        session.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s "
                      "AND pid <> pg_backend_pid()" % quote_literal(name))
        # FORCE (PostgreSQL 13+) also ends a connection that arrived after the terminate above
        session.query('DROP DATABASE IF EXISTS %s WITH (FORCE)' % quote_ident(name))
        create = 'CREATE DATABASE %s OWNER %s TEMPLATE template0' % (quote_ident(name), quote_ident(owner))
        if encoding:
            create += ' ENCODING %s' % quote_literal(encoding)
        session.query(create)


def count_rows(db):
    with db.session() as session:
        return session.query_json(COUNT_ROWS_SQL) or {}


def server_facts(db):
    with db.session() as session:
        return session.query_json(SERVER_SQL) or {}


def compare_counts(expected, actual):
    """Tables whose row count differs: [{table, expected, actual}] (a missing table has actual None)."""
    problems = []
    for table in sorted(expected):
        got = actual.get(table)
        if got != expected[table]:
            problems.append({'table': table, 'expected': expected[table], 'actual': got})
    for table in sorted(set(actual) - set(expected)):
        if actual[table]:
            problems.append({'table': table, 'expected': None, 'actual': actual[table]})
    return problems


def restore_argv(db, fmt, path=None, jobs=1, owner=None):
    """The restore command: pg_restore for custom dumps (from a file), psql for plain ones (stdin)."""
    if fmt == 'custom':
        argv = ['pg_restore', '--exit-on-error', '--no-owner', '--no-privileges']
        if jobs and jobs > 1:
            argv.append('--jobs=%d' % jobs)
        else:
            argv.append('--single-transaction')
        if owner and owner != db.user:
            argv.append('--role=%s' % owner)
        return argv + db.conn_args() + [path]
    return ['psql', '--no-psqlrc', '--quiet', '--set=ON_ERROR_STOP=1', '--single-transaction',
            '--output=/dev/null'] + db.conn_args()


def check_finished(proc, what):
    """Wait for a restore command; raise with its stderr when it failed in any way."""
    code = proc.wait() if isinstance(proc, LocalProcess) else proc.wait(timeout=3600)
    stderr = proc.stderr_text()
    failed = failure_lines(stderr)
    if code != 0 or failed:
        raise RecoveryError('%s failed (exit code %s): %s' % (
            what, code, ' / '.join((failed or stderr.splitlines())[-3:]) or 'no message'))
    return stderr


# ---------------------------------------------------------------------------------------------
# module options (see doc fragment idp.recovery.postgres)

def database_argument_spec(user='postgres', database='postgres'):
    return dict(
        container=dict(type='str'),
        container_user=dict(type='str', default='postgres'),
        container_output=dict(type='str', choices=['auto', 'api'], default='auto'),
        docker_host=dict(type='str'),
        host=dict(type='str'),
        port=dict(type='int', default=5432),
        user=dict(type='str', default=user),
        password=dict(type='str', no_log=True),
        database=dict(type='str', default=database),
        sslmode=dict(type='str', choices=['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']),
    )


DATABASE_MUTUALLY_EXCLUSIVE = [('container', 'host')]
DATABASE_REQUIRED_ONE_OF = [('container', 'host')]


def database_from_params(params, engine=None):
    """(Database, DockerEngine or None) from the module options."""
    if params.get('container'):
        from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
        engine = engine or DockerEngine(params.get('docker_host'))
        engine.require_running(params['container'])
        runner = ContainerRunner(engine, params['container'], params.get('container_user') or 'postgres',
                                 params.get('container_output') or 'auto')
        return Database(runner, params['database'], params['user'], password=params.get('password')), engine
    db = Database(LocalRunner(), params['database'], params['user'], password=params.get('password'),
                  host=params['host'], port=params.get('port') or 5432, sslmode=params.get('sslmode'))
    return db, engine


def restore_dump(db, fmt, feed, jobs=2, owner=None, tmpdir=None):
    """Restore a dump into db (which must exist, empty).

    ``feed(write)`` streams the plaintext dump into write(data). A custom dump lands first in a 0700
    temporary directory (pg_restore --jobs needs a file; inside the container for container
    targets) that is removed afterwards whatever happens; a plain dump streams straight into psql,
    in one transaction with ON_ERROR_STOP.
    """
    if fmt == 'plain':
        proc = db.spawn(restore_argv(db, 'plain'), stdin=True)
        try:
            try:
                feed(proc.write)
            finally:
                proc.close_stdin()
            proc.read_all(lambda data: None)
            return check_finished(proc, 'psql (plain restore)')
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.close()
    if isinstance(db.runner, ContainerRunner):
        return _restore_custom_in_container(db, feed, jobs, owner, tmpdir)
    return _restore_custom_here(db, feed, jobs, owner, tmpdir)


def _pg_restore(db, path, jobs, owner):
    proc = db.spawn(restore_argv(db, 'custom', path, jobs, owner))
    try:
        proc.read_all(lambda data: None)
        return check_finished(proc, 'pg_restore')
    finally:
        proc.close()


def _restore_custom_here(db, feed, jobs, owner, tmpdir):
    workdir = tempfile.mkdtemp(prefix='idp-restore.', dir=tmpdir)
    try:
        os.chmod(workdir, 0o700)
        path = os.path.join(workdir, 'database.pgdump')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as out:
            def write(data):
                try:
                    out.write(data)
                except (OSError, IOError) as exc:
                    raise RecoveryError('cannot write the decrypted dump to %s: %s' % (workdir, exc.strerror or exc))
            feed(write)
        return _pg_restore(db, path, jobs, owner)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_through_root(runner, workdir, path, feed):
    """Write the dump straight into the container's filesystem from this host; False when not possible."""
    if runner.output != 'auto':
        return False
    from ansible_collections.idp.recovery.plugins.module_utils._docker import container_root, open_in_container
    root = container_root(runner.engine, runner.container)
    if root is None:
        return False
    try:
        fd, owner = open_in_container(root, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except OSError:
        return False
    with os.fdopen(fd, 'wb') as out:
        # the file belongs to the user the restore runs as inside the container
        os.fchown(out.fileno(), owner.st_uid, owner.st_gid)

        def write(data):
            try:
                out.write(data)
            except (OSError, IOError) as exc:
                raise RecoveryError('cannot write the decrypted dump into container %s: %s' % (
                    runner.container, exc.strerror or exc))
        feed(write)
    return True


def _restore_custom_in_container(db, feed, jobs, owner, tmpdir):
    engine = db.runner.engine
    container = db.runner.container
    user = db.runner.user
    base = tmpdir or '/tmp'
    code, out, err = engine.run(container, ['mktemp', '-d', '%s/idp-restore.XXXXXXXX' % base.rstrip('/')], user=user)
    workdir = out.decode('utf-8', 'replace').strip()
    if code != 0 or not workdir.startswith(base.rstrip('/') + '/idp-restore.'):
        raise RecoveryError('cannot create a temporary directory in %s of container %s: %s' % (base, container, err))
    try:
        path = workdir + '/database.pgdump'
        if not _write_through_root(db.runner, workdir, path, feed):
            # mktemp -d made the directory 0700; the file gets 0600
            writer = engine.exec(container, ['sh', '-c', 'umask 077 && exec cat > "$1"', 'sh', path], user=user,
                                 stdin=True)
            try:
                try:
                    feed(writer.write)
                finally:
                    writer.close_stdin()
                writer.read_all(lambda data: None)
                check_finished(writer, 'writing the dump into container %s' % container)
            finally:
                writer.close()
        return _pg_restore(db, path, jobs, owner)
    finally:
        engine.run(container, ['rm', '-rf', workdir], user=user)
