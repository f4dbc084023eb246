# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: reaching a PostgreSQL database with its stock client tools.

The tools (``pg_dump``, ``pg_restore``, ``psql``) run either inside the database container through
the Docker engine API (the tools then always match the server) or on this host over TCP (libpq;
the password goes to the child's environment only). Both ways run the same commands through one
small process interface (``LocalRunner`` / ``ContainerRunner``), so the two give the same result.
A ``Database`` says where a database lives; a ``PsqlSession`` keeps one ``psql`` open for several
statements. The module options are ``database_argument_spec()`` (doc fragments ``idp.recovery.postgres``
and ``idp.recovery.docker``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import select
import subprocess
# These helpers run without an AnsibleModule at hand and stream (pipes between stages, secrets and
# data on stdin, outputs read as they come): AnsibleModule.run_command cannot do that.
# pylint: disable=ansible-bad-function
import tempfile
import uuid

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine, docker_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._docker.exec import open_fifo_exec
from ansible_collections.idp.recovery.plugins.module_utils._stream import grow_pipe, pump

STDERR_KEEP = 64 * 1024
# pg_dump / pg_restore / psql lines that mean the run failed, whatever the exit code says
_FAILURE_LINE = re.compile(r'(^|: )(error|fatal|panic):|could not |aborting because of', re.I | re.M)


def quote_ident(name):
    return '"%s"' % name.replace('"', '""')


def quote_literal(text):
    return "'%s'" % text.replace("'", "''")


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
# module options (see the doc fragments idp.recovery.postgres and idp.recovery.docker)

def database_argument_spec(user='postgres', database='postgres'):
    return dict(
        container=dict(type='str'),
        container_user=dict(type='str', default='postgres'),
        container_output=dict(type='str', choices=['auto', 'api'], default='auto'),
        host=dict(type='str'),
        port=dict(type='int', default=5432),
        user=dict(type='str', default=user),
        password=dict(type='str', no_log=True),
        database=dict(type='str', default=database),
        sslmode=dict(type='str', choices=['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']),
        **docker_argument_spec()
    )


DATABASE_MUTUALLY_EXCLUSIVE = [('container', 'host')]
DATABASE_REQUIRED_ONE_OF = [('container', 'host')]


def database_from_params(params, engine=None):
    """(Database, DockerEngine or None) from the module options."""
    if params.get('container'):
        engine = engine or DockerEngine(params.get('docker_host'))
        engine.require_running(params['container'])
        runner = ContainerRunner(engine, params['container'], params.get('container_user') or 'postgres',
                                 params.get('container_output') or 'auto')
        return Database(runner, params['database'], params['user'], password=params.get('password')), engine
    db = Database(LocalRunner(), params['database'], params['user'], password=params.get('password'),
                  host=params['host'], port=params.get('port') or 5432, sslmode=params.get('sslmode'))
    return db, engine
