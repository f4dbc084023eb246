# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: loading a dump into a PostgreSQL database.

``recreate_database`` drops a database and creates it empty; ``restore_dump`` streams a plain dump
into ``psql`` (one transaction, ON_ERROR_STOP) or lands a custom dump in a private temporary
directory for ``pg_restore`` (inside the container for container targets, written straight into
its filesystem from this host when it can), removed afterwards whatever happens. ``stage_dump``
lands a custom dump ahead of time (while the set is still being verified, before anything changes).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shutil
import tempfile

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._docker.exec import container_root, open_in_container
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    ContainerRunner,
    LocalProcess,
    failure_lines,
    quote_ident,
    quote_literal,
)


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


def restore_dump(db, fmt, feed, jobs=2, owner=None, tmpdir=None, staged=None):
    """Restore a dump into db (which must exist, empty).

    ``feed(write)`` streams the plaintext dump into write(data). A custom dump lands first in a 0700
    temporary directory (pg_restore --jobs needs a file; inside the container for container
    targets) that is removed afterwards whatever happens; a plain dump streams straight into psql,
    in one transaction with ON_ERROR_STOP. ``staged``: a custom dump already landed by
    ``stage_dump`` (``feed`` is then not read; the caller removes it).
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
    if staged is not None:
        return _pg_restore(db, staged.path, jobs, owner)
    staged = stage_dump(db, feed, tmpdir)
    try:
        return _pg_restore(db, staged.path, jobs, owner)
    finally:
        staged.remove()


def _pg_restore(db, path, jobs, owner):
    proc = db.spawn(restore_argv(db, 'custom', path, jobs, owner))
    try:
        proc.read_all(lambda data: None)
        return check_finished(proc, 'pg_restore')
    finally:
        proc.close()


class StagedDump(object):
    """A custom dump landed in a private temporary directory, for pg_restore; ``remove()`` removes the directory."""

    def __init__(self, path, remover):
        self.path = path
        self._remover = remover

    def remove(self):
        remover, self._remover = self._remover, None
        if remover is not None:
            remover()


def stage_dump(db, feed, tmpdir=None):
    """Land the custom dump that ``feed(write)`` streams in a 0700 temporary directory (inside the container for
    container targets) as a 0600 file; the StagedDump. On failure the directory is removed and the error raised.
    """
    if isinstance(db.runner, ContainerRunner):
        return _stage_in_container(db, feed, tmpdir)
    return _stage_here(feed, tmpdir)


def _stage_here(feed, tmpdir):
    workdir = tempfile.mkdtemp(prefix='idp-restore.', dir=tmpdir)
    staged = StagedDump(os.path.join(workdir, 'database.pgdump'), lambda: shutil.rmtree(workdir, ignore_errors=True))
    try:
        os.chmod(workdir, 0o700)
        fd = os.open(staged.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as out:
            def write(data):
                try:
                    out.write(data)
                except (OSError, IOError) as exc:
                    raise RecoveryError('cannot write the decrypted dump to %s: %s' % (workdir, exc.strerror or exc))
            feed(write)
    except BaseException:
        staged.remove()
        raise
    return staged


def _write_through_root(runner, workdir, path, feed):
    """Write the dump straight into the container's filesystem from this host; False when not possible."""
    if runner.output != 'auto':
        return False
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


def _stage_in_container(db, feed, tmpdir):
    engine = db.runner.engine
    container = db.runner.container
    user = db.runner.user
    base = tmpdir or '/tmp'
    code, out, err = engine.run(container, ['mktemp', '-d', '%s/idp-restore.XXXXXXXX' % base.rstrip('/')], user=user)
    workdir = out.decode('utf-8', 'replace').strip()
    if code != 0 or not workdir.startswith(base.rstrip('/') + '/idp-restore.'):
        raise RecoveryError('cannot create a temporary directory in %s of container %s: %s' % (base, container, err))
    staged = StagedDump(workdir + '/database.pgdump', lambda: engine.run(container, ['rm', '-rf', workdir], user=user))
    try:
        path = staged.path
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
    except BaseException:
        staged.remove()
        raise
    return staged
