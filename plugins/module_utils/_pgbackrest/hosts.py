# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: where pgBackRest runs - the hosts, and pgBackRest and SQL on them.

pgBackRest itself does the work (continuous WAL archiving, full/differential/incremental backups, ``verify``,
``restore``); the collection runs it where the PostgreSQL server runs and reads its JSON. A server runs either in a
container (commands through the Docker engine API's exec, as the operating system user ``postgres``) or on this
host (as that user through ``runuser`` when the module runs as root). Both are a ``Host``: run a command, write a
file, read a file.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import grp
import os
import pwd
import subprocess
# These helpers run without an AnsibleModule at hand and stream (pipes between stages, secrets and
# data on stdin, outputs read as they come): AnsibleModule.run_command cannot do that.
# pylint: disable=ansible-bad-function
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, write_file_atomic
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import ContainerRunner, Database, LocalProcess
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import CONFIG_PATH, check_stanza
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.info import describe_failure, parse_info, pgbackrest_errors

# a backup or restore of a large database runs for hours: the engine connection must not time out first
COMMAND_TIMEOUT = 24 * 3600


class ContainerHost(object):
    """A container, through the Docker engine API."""

    def __init__(self, engine, container):
        self.engine = engine
        self.container = container
        self.where = 'container %s' % container

    def run(self, argv, user=None, env=None, input_data=None):
        code, out, err = self.engine.run(self.container, list(argv), env=env, user=user, input_data=input_data)
        return code, out.decode('utf-8', 'replace'), err

    def runner(self, user):
        return ContainerRunner(self.engine, self.container, user, 'api')

    def write_file(self, path, data, mode=0o640, owner='postgres', group=None):
        code, _out, err = self.run([
            'sh', '-c', 'umask 022 && mkdir -p "$(dirname "$1")" && umask 077 && cat > "$1.idp-new" && chown "$2:$3" "$1.idp-new" && '
            'chmod "$4" "$1.idp-new" && mv "$1.idp-new" "$1"', 'sh', path, owner, group or owner, '%o' % mode],
            user='root', input_data=data)
        if code != 0:
            raise RecoveryError('cannot write %s in %s: %s' % (path, self.where, err), path=path)

    def read_file(self, path):
        code, out, _err = self.run(['sh', '-c', '[ -e "$1" ] || exit 3; cat "$1"', 'sh', path], user='root')
        if code == 3:
            return None
        if code != 0:
            raise RecoveryError('cannot read %s in %s' % (path, self.where), path=path)
        return out

    def ensure_dir(self, path, owner, mode=0o750):
        code, _out, err = self.run(['install', '-d', '-o', owner, '-g', owner, '-m', '%o' % mode, path], user='root')
        if code != 0:
            raise RecoveryError('cannot create %s in %s: %s' % (path, self.where, err), path=path)

    def path_facts(self, path):
        """(the path with every symbolic link resolved, "device:inode" of what it names or None when missing)."""
        code, out, err = self.run(['sh', '-c', 'realpath -m -- "$1" && { stat -L -c %d:%i -- "$1" 2>/dev/null || echo -; }',
                                   'sh', path], user='root')
        lines = out.splitlines()
        if code != 0 or len(lines) != 2 or not lines[0].startswith('/'):
            raise RecoveryError('cannot resolve %s in %s: %s' % (path, self.where, err or out), path=path)
        return lines[0], (None if lines[1] == '-' else lines[1])

    def remove_files(self, paths):
        """Remove files (missing ones are fine)."""
        if paths:
            self.run(['rm', '-f', '--'] + list(paths), user='root')


class LocalUserRunner(object):
    """Client tools on this host as ``user`` (through runuser when this process is root)."""

    def __init__(self, user):
        self.user = user
        self.where = 'this host'

    def spawn(self, argv, env=None, stdin=False, bulk_output=False):
        return LocalProcess(as_user(self.user, argv, env), env=env, stdin=stdin)


def as_user(user, argv, env=None):
    """argv run as ``user``: unchanged when this process already is that user, else through runuser."""
    if not user or pwd.getpwuid(os.geteuid()).pw_name == user:
        return list(argv)
    if os.geteuid() != 0:
        raise RecoveryError('commands must run as %s, and this module runs as %s without the right to switch user '
                            '(become root or that user)' % (user, pwd.getpwuid(os.geteuid()).pw_name))
    keep = ['--whitelist-environment=%s' % ','.join(sorted(env))] if env else []
    return ['runuser', '-u', user] + keep + ['--'] + list(argv)


class LocalHost(object):
    """This host."""

    where = 'this host'

    def run(self, argv, user=None, env=None, input_data=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            proc = subprocess.run(as_user(user, argv, env), input=input_data, capture_output=True, env=full_env,
                                  check=False)
        except OSError as exc:
            raise RecoveryError('cannot run %s on this host: %s' % (argv[0], exc.strerror or exc))
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace').strip()

    def runner(self, user):
        return LocalUserRunner(user)

    def write_file(self, path, data, mode=0o640, owner='postgres', group=None):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        write_file_atomic(path, data, mode)
        try:
            os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group or owner).gr_gid)
        except (KeyError, OSError) as exc:
            raise RecoveryError('cannot give %s to %s: %s' % (path, owner, exc), path=path)

    def read_file(self, path):
        try:
            with open(path, 'rb') as handle:
                return handle.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)

    def path_facts(self, path):
        try:
            found = os.stat(path)
        except OSError:
            return os.path.realpath(path), None
        return os.path.realpath(path), '%d:%d' % (found.st_dev, found.st_ino)

    def remove_files(self, paths):
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RecoveryError('cannot remove %s: %s' % (path, exc.strerror or exc), path=path)

    def ensure_dir(self, path, owner, mode=0o750):
        if not os.path.isdir(path):
            os.makedirs(path, mode)
        try:
            os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(owner).gr_gid)
            os.chmod(path, mode)
        except (KeyError, OSError) as exc:
            raise RecoveryError('cannot prepare %s for %s: %s' % (path, owner, exc), path=path)


def host_from_params(params, engine=None):
    """(Host, DockerEngine or None) from container/docker_host."""
    if params.get('container'):
        from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
        engine = engine or DockerEngine(params.get('docker_host'), timeout=COMMAND_TIMEOUT)
        engine.require_running(params['container'])
        return ContainerHost(engine, params['container']), engine
    return LocalHost(), engine


# ---------------------------------------------------------------------------------------------
# pgBackRest and the server

class PgBackRest(object):
    """pgBackRest for one stanza, run as the server's operating system user on a Host."""

    def __init__(self, host, stanza, os_user='postgres', config_path=CONFIG_PATH, env=None):
        self.host = host
        self.stanza = check_stanza(stanza)
        self.os_user = os_user
        self.config_path = config_path
        # secrets of a configuration written without them (config.secret_env)
        self.env = dict(env or {})

    def argv(self, command, *args):
        base = ['pgbackrest']
        if self.config_path != CONFIG_PATH:
            base.append('--config=%s' % self.config_path)
        return base + ['--stanza=%s' % self.stanza] + list(args) + [command]

    def run(self, command, *args):
        """Run a command; return (stdout, stderr, seconds); a failure raises with pgBackRest's message."""
        started = time.monotonic()
        code, out, err = self.host.run(self.argv(command, *args), user=self.os_user, env=self.env or None)
        seconds = round(time.monotonic() - started, 3)
        if code != 0:
            text = '\n'.join(part for part in (out, err) if part)
            raise RecoveryError(describe_failure('pgbackrest %s for stanza %s in %s' % (
                command, self.stanza, self.host.where), code, text), stanza=self.stanza,
                pgbackrest_errors=[{'code': c, 'message': m} for c, m in pgbackrest_errors(text)])
        return out, err, seconds

    def info(self):
        out, _err, _seconds = self.run('info', '--output=json')
        return parse_info(out, self.stanza)

    def info_or_none(self):
        """info(), or None when pgBackRest cannot give it (no stanza yet, no configuration)."""
        try:
            return self.info()
        except RecoveryError:
            return None

    def write_config(self, text, ca=None, mode=0o640):
        """Write the configuration (and CA files) when they differ; return True when something changed."""
        changed = False
        files = dict(ca or {})
        files[self.config_path] = text
        for path, data in sorted(files.items()):
            if self.host.read_file(path) == data:
                continue
            self.host.write_file(path, data.encode('utf-8'), mode, self.os_user)
            changed = True
        return changed


def server_database(host, os_user, user='postgres', port=None, database='postgres'):
    """A Database for SQL on the server over its Unix socket, as os_user."""
    db = Database(host.runner(os_user), database, user)
    if port and int(port) != 5432:
        db.port = int(port)
        original = db.conn_args

        def conn_args(database=None):
            return original(database) + ['--port=%d' % int(port)]
        db.conn_args = conn_args
    return db
