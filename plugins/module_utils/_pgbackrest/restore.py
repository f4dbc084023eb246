# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the engine of the pgbackrest_restore module - a point-in-time restore of a stanza
into a staging PostgreSQL (a new container, or a data directory of its own where the live server runs).

Every refusal (the live server as the target under any spelling of its data directory, a repository the staging
copy cannot reach) is decided before anything is created or written. A posix repository of the live container
reaches a staging container mounted read-only (its volume or host directory) or copied (plan_repo_mount). The
configuration a staging restore writes holds no secret: they reach pgBackRest and the staging server in the
environment (config.secret_env).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import posixpath
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._docker.scratch import (
    CREATED_LABEL, PITR_LABEL, SCRATCH_LABEL, config_env, image_pgdata, is_scratch)
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import (
    DEFAULT_REPO_PATH, ca_files, log_path, render_config, secret_env)
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.hosts import (
    COMMAND_TIMEOUT, ContainerHost, PgBackRest, host_from_params, server_database)
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.info import (
    explain_recovery_failure, read_recovery_log, restored_backup_set)
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.target import target_args

LOG_FILE = 'idp-recovery-restore.log'
MIB = 1024 * 1024
# what a copy of a repository must leave free on the Docker engine's disk (the live server writes there too)
REPO_COPY_RESERVE = 1024 * MIB
# where pgBackRest and PostgreSQL write in a staging container: a repository mounted read-only must not cover them
STAGING_WRITE_PATHS = ('/run/postgresql', '/tmp', '/var/spool/pgbackrest')
STATE_SQL = ("SELECT json_build_object('in_recovery', pg_is_in_recovery(), "
             "'timeline', (SELECT timeline_id FROM pg_control_checkpoint()), "
             "'last_replay', to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
             "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
             "'server_version_num', current_setting('server_version_num')::int)")


# ---------------------------------------------------------------------------------------------
# paths: the live server's data directory, repositories seen from a staging container

def normalise_path(path, what='path'):
    """An absolute path without ".", "..", repeated or trailing "/" (lexically, as posixpath.normpath)."""
    text = str(path or '')
    if not text.startswith('/'):
        raise RecoveryError('%s must be an absolute path, got %r' % (what, path))
    # normpath keeps a leading "//" (POSIX leaves its meaning open); on Linux it is "/"
    return '/' + posixpath.normpath(text).lstrip('/')


def path_within(path, parent):
    """Whether normalised ``path`` is ``parent`` or below it."""
    return path == parent or parent == '/' or path.startswith(parent.rstrip('/') + '/')


def plan_repo_mount(repo_path, mounts, pgdata, write_paths):
    """How a staging container reaches the posix repository at ``repo_path`` of the live container.

    ``mounts`` is the live container's inspect ``Mounts``; ``pgdata`` is the staging container's data directory
    (nothing may be mounted in or over it), ``write_paths`` the other directories it writes (its configuration,
    logs; nothing read-only may cover them). Returns
    ``{'access': 'mount', 'mount_type', 'source', 'destination', 'bind'}`` - the live container's volume or host
    directory mounted read-only at the same path - or ``{'access': 'copy', 'reason'}`` when the repository is
    only in the live container's own file system (or on a mount that cannot be shared without covering the
    staging container's own directories).
    """
    repo_path = normalise_path(repo_path, 'repository path')

    def covers(path):
        return path_within(path, pgdata) or any(path_within(own, path) for own in [pgdata] + list(write_paths))
    if covers(repo_path):
        raise RecoveryError('the posix repository %s overlaps the staging container\'s own directories (%s): it can be '
                            'neither mounted nor copied there; restore with data_dir where the live server runs, or '
                            'keep the repository at a path of its own' % (
                                repo_path, ', '.join([pgdata] + sorted(write_paths))), refused=True)
    found = None
    for mount in mounts or []:
        destination = mount.get('Destination')
        if not destination or not destination.startswith('/'):
            continue
        destination = normalise_path(destination)
        if path_within(repo_path, destination) and (found is None or len(destination) > len(found[0])):
            found = (destination, mount)
    if found is None:
        return {'access': 'copy', 'reason': 'in the container\'s own file system, on no volume or bind mount'}
    destination, mount = found
    kind = mount.get('Type')
    rest = repo_path[len(destination):].lstrip('/')
    if kind == 'bind' and mount.get('Source'):
        # exactly the repository's directory of the host
        source = posixpath.join(mount['Source'], rest) if rest else mount['Source']
        return {'access': 'mount', 'mount_type': 'bind', 'source': source, 'destination': repo_path,
                'bind': '%s:%s:ro' % (source, repo_path)}
    if kind == 'volume' and mount.get('Name'):
        # a volume mounts whole: at its own path, unless that covers the staging container's own directories
        if not covers(destination):
            return {'access': 'mount', 'mount_type': 'volume', 'source': mount['Name'], 'destination': destination,
                    'bind': '%s:%s:ro' % (mount['Name'], destination)}
        return {'access': 'copy', 'reason': 'on volume %s mounted at %s, which would cover the staging container\'s '
                                            'own directories' % (mount['Name'], destination)}
    return {'access': 'copy', 'reason': 'on a %s mount at %s that cannot be shared' % (kind or 'unknown', destination)}


# ---------------------------------------------------------------------------------------------
# the restore

class PitrRestore(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.engine = None
        self.host = None
        self.created = None

    # ----- target and refusal
    def live_dirs(self):
        """The live server's data directories (normalised): live_pg_path, what the server in container reports and
        its container's PGDATA; on this host pg_path."""
        found = []
        if self.params['live_pg_path']:
            found.append(normalise_path(self.params['live_pg_path'], 'live_pg_path'))
        live = self.params['container']
        if live and self.engine.exists(live):
            info = self.engine.inspect(live)
            if self.engine.is_running(live):
                host = ContainerHost(self.engine, live)
                db = server_database(host, self.params['os_user'], self.params['pg_user'])
                try:
                    found.append(normalise_path(db.run_sql('SHOW data_directory').strip()))
                except RecoveryError:
                    pass  # the server is down: its container's PGDATA says where its data is
            pgdata = config_env(info, 'PGDATA')
            if pgdata and pgdata.startswith('/'):
                found.append(normalise_path(pgdata))
        elif not live and self.params['pg_path']:
            found.append(normalise_path(self.params['pg_path'], 'pg_path'))
        return sorted(set(found))

    def refuse_container(self):
        name = self.params['staging_container']
        live = self.params['container']
        if not live:
            return
        if name == live:
            raise RecoveryError('staging_container %s is the live server\'s container: a point-in-time restore goes into '
                                'a new staging container (for the live data directory use data_dir with confirm_live)'
                                % name, refused=True)
        if self.engine.exists(name) and self.engine.exists(live) and \
                self.engine.inspect(name).get('Id') == self.engine.inspect(live).get('Id'):
            raise RecoveryError('staging_container %s is the live server\'s container %s' % (name, live), refused=True)

    def refuse_data_dir(self):
        """(the data directory to restore into, whether it is the live one); refuses before anything is written."""
        data_dir = normalise_path(self.params['data_dir'], 'data_dir')
        lives = self.live_dirs()
        if not lives and not self.params['confirm_live']:
            raise RecoveryError('cannot tell the live data directory: give live_pg_path (or container) so that data_dir '
                                'can be checked against it', refused=True)
        real, ident = self.host.path_facts(data_dir)
        facts = [(live,) + self.host.path_facts(live) for live in lives]
        for live, live_real, live_ident in facts:
            if data_dir == live or real == live_real or (ident is not None and ident == live_ident):
                if not self.params['confirm_live']:
                    raise RecoveryError(
                        'data_dir %s is the live server\'s data directory %s%s: refused. Restore into a staging '
                        'directory or container; overwriting the live server needs confirm_live: true (the incident '
                        'decision) with the live server stopped' % (
                            self.params['data_dir'], live, '' if real == data_dir else ' (it resolves to %s)' % real),
                        refused=True)
                return live, True
        for live, live_real, _ident in facts:
            for mine, theirs in ((data_dir, live), (real, live_real)):
                if path_within(mine, theirs):
                    raise RecoveryError('data_dir %s lies inside the live server\'s data directory %s: refused. Restore '
                                        'into a directory of its own, beside the live one' % (self.params['data_dir'], live),
                                        refused=True)
                if path_within(theirs, mine):
                    raise RecoveryError('data_dir %s holds the live server\'s data directory %s: refused. Restore into '
                                        'a directory of its own, beside the live one' % (self.params['data_dir'], live),
                                        refused=True)
        return data_dir, False

    # ----- repositories seen from the staging container
    def plan_repositories(self, pgdata):
        """[{repo, type, path, access, ...}]: how the restore reaches each repository. A posix repository of the live
        container is mounted read-only into the staging container (its volume or host directory) or copied into
        it; what cannot be reached is refused here, before anything is created."""
        params = self.params
        write_paths = [posixpath.dirname(normalise_path(params['config_path'])),
                       normalise_path(log_path(params['options']))]
        write_paths += list(STAGING_WRITE_PATHS)
        plans = []
        live_info = live_host = None
        for index, repo in enumerate(params['repos'], 1):
            what = 'repos[%d]' % (index - 1)
            path = normalise_path(repo.get('path') or DEFAULT_REPO_PATH, what + '.path')
            plan = {'repo': index, 'type': repo['type'], 'path': path}
            plans.append(plan)
            if repo['type'] != 'posix':
                plan['access'] = 'network'
                continue
            if not params['staging_container']:
                plan['access'] = 'direct'  # the restore runs where the live server and its repository are
                continue
            live = params['container']
            if not live:
                raise RecoveryError(
                    '%s is a posix repository (%s): a staging container reaches it only through the live server\'s '
                    'container - give container (the live server\'s container, whose volume or file system holds the '
                    'repository), restore with data_dir where the repository is, or use an s3 repository'
                    % (what, path), refused=True)
            if live_info is None:
                live_info = self.engine.inspect(live)
                if self.engine.is_running(live):
                    live_host = ContainerHost(self.engine, live)
            if live_host is not None:
                real, ident = live_host.path_facts(path)
                if ident is None:
                    raise RecoveryError('%s.path %s does not exist in the live server\'s container %s: the staging '
                                        'restore reads the repository from there; give the path the live server '
                                        'archives to' % (what, path, live), refused=True)
                code, _out, _err = live_host.run(['sh', '-c', 'test -d "$1/archive/$2" && test -d "$1/backup/$2"', 'sh',
                                                  real, params['stanza']], user='root')
                if code != 0:
                    raise RecoveryError('the posix repository %s in container %s holds no stanza %s (no archive/%s and '
                                        'backup/%s there): nothing to restore from - is %s.path the path the live '
                                        'server archives to?' % (path, live, params['stanza'], params['stanza'],
                                                                 params['stanza'], what), refused=True)
                plan['path'] = real
            plan.update(plan_repo_mount(plan['path'], live_info.get('Mounts'), pgdata, write_paths))
            if plan['access'] == 'copy':
                self.plan_copy(plan, what, live_host)
        return plans

    def plan_copy(self, plan, what, live_host):
        """Check that the stanza's part of a repository in the live container's own file system may be copied."""
        live = self.params['container']
        stanza = self.params['stanza']
        if not self.params['repo_copy']:
            raise RecoveryError('%s (posix, %s) is %s of container %s: a staging container can only get a copy of it, '
                                'and repo_copy is false. Put the repository on a volume (it is then mounted read-only), '
                                'allow the copy with repo_copy: true, or restore with data_dir in the live container'
                                % (what, plan['path'], plan['reason'], live), refused=True)
        plan['copy_bytes'] = None
        if live_host is None:
            return  # a stopped container: the engine still copies its files, the size is known afterwards
        code, out, err = live_host.run(['sh', '-c', 'du -sk -- "$1/archive/$2" "$1/backup/$2" && df -Pk /', 'sh',
                                        plan['path'], stanza], user='root')
        lines = out.splitlines()
        try:
            if code != 0:
                raise ValueError(err)
            used = sum(int(line.split()[0]) for line in lines[:2]) * 1024
            free = int(lines[-1].split()[3]) * 1024
        except (IndexError, ValueError):
            raise RecoveryError('cannot measure the repository %s in container %s: %s' % (plan['path'], live, err or out))
        plan['copy_bytes'] = used
        if free - used < REPO_COPY_RESERVE:
            raise RecoveryError('%s (posix, %s) is %s of container %s; copying stanza %s of it (%d MiB) into the staging '
                                'container would leave %d MiB free on the Docker engine\'s disk, less than %d MiB. Put '
                                'the repository on a volume (it is then mounted read-only) or free space first' % (
                                    what, plan['path'], plan['reason'], live, stanza, used // MIB,
                                    max(free - used, 0) // MIB, REPO_COPY_RESERVE // MIB), refused=True)

    def copy_repositories(self, plans):
        stanza = self.params['stanza']
        owner = self.params['os_user']
        for plan in plans:
            if plan.get('access') != 'copy':
                continue
            repo = plan['path']
            code, _out, err = self.host.run(['sh', '-c', 'install -d -o "$1" -g "$1" -m 0750 "$2" "$2/archive" "$2/backup"',
                                             'sh', owner, repo], user='root')
            if code != 0:
                raise RecoveryError('cannot prepare %s in staging container %s: %s' % (repo, self.created, err))
            started = time.monotonic()
            plan['copied_bytes'] = sum(
                self.engine.copy_tree(self.params['container'], '%s/%s/%s' % (repo, part, stanza), self.created,
                                      '%s/%s' % (repo, part)) for part in ('archive', 'backup'))
            plan['copy_seconds'] = round(time.monotonic() - started, 3)
            # the engine unpacks as root: the copy belongs to the server's user, as the original does
            code, _out, err = self.host.run(['chown', '-R', '%s:%s' % (owner, owner), '--', repo], user='root')
            if code != 0:
                raise RecoveryError('cannot give the copied repository %s to %s: %s' % (repo, owner, err))

    # ----- staging container
    def staging_pgdata(self, image):
        """The data directory of the staging container: its image's PGDATA (the image must be there)."""
        info = self.engine.image_info(image)
        if info is None:
            raise RecoveryError('image %s is not on the Docker engine at %s and is never pulled: build or load it '
                                'there first' % (image, self.engine.base_url), image=image)
        return normalise_path(image_pgdata(info))

    def refuse_existing(self):
        name = self.params['staging_container']
        if self.engine.exists(name):
            if not is_scratch(self.engine.inspect(name)):
                raise RecoveryError('container %s exists and has no label %s=true: it was not made by idp.recovery, '
                                    'so it is not replaced; choose another staging_container' % (
                                        name, SCRATCH_LABEL), container=name, refused=True)
            return True
        return False

    def make_container(self, pgdata, binds):
        name = self.params['staging_container']
        if self.refuse_existing():
            self.engine.remove_container(name)
        labels = dict((str(k), str(v)) for k, v in (self.params['labels'] or {}).items())
        labels.update({SCRATCH_LABEL: 'true', CREATED_LABEL: make_stamp(),
                       PITR_LABEL: self.params['stanza']})
        hosts = dict((str(k), str(v)) for k, v in (self.params['extra_hosts'] or {}).items())
        self.engine.create_container(name, self.params['image'], command=['sleep', 'infinity'], labels=labels,
                                     network=self.params['network'], tmpfs={pgdata: ''} if self.params['tmpfs'] else None,
                                     extra_hosts=hosts or None, binds=binds or None)
        self.created = name
        self.engine.start(name)
        self.host = ContainerHost(self.engine, name)
        code, _out, err = self.host.run(['sh', '-c', 'install -d -o "$1" -g "$1" -m 0700 "$2" && '
                                         'install -d -o "$1" -g "$1" -m 2775 /run/postgresql && '
                                         'install -d -o "$1" -g "$1" -m 0750 "$3"', 'sh',
                                         self.params['os_user'], pgdata, log_path(self.params['options'])], user='root')
        if code != 0:
            raise RecoveryError('cannot prepare %s in staging container %s: %s' % (pgdata, name, err))

    def cleanup(self):
        if self.created:
            try:
                self.engine.remove_container(self.created)
            except RecoveryError:
                pass

    # ----- the server
    def start_and_wait(self, backrest, pgdata, port, logfile):
        host = self.host
        user = self.params['os_user']
        options = '-p %d' % port
        # the server's restore_command runs pgBackRest: it gets the repositories' secrets from the environment
        code, out, err = host.run(['pg_ctl', '-D', pgdata, '-l', logfile, '-o', options, '-w', '-t', '600', 'start'],
                                  user=user, env=backrest.env or None)
        db = server_database(host, user, self.params['pg_user'], port)
        deadline = time.monotonic() + self.params['ready_timeout']
        while True:
            running, _o, _e = host.run(['pg_ctl', '-D', pgdata, 'status'], user=user)
            if running != 0:
                self.fail_recovery(backrest, logfile, 'pg_ctl start: %s' % (err or out).strip() if code else None)
            try:
                with db.session() as session:
                    facts = session.query_json(STATE_SQL)
                if facts and not facts['in_recovery']:
                    return facts
            except RecoveryError:
                pass
            if time.monotonic() > deadline:
                raise RecoveryError('recovery did not reach its target and promote within %s s; the staging server '
                                    'is left running for inspection' % self.params['ready_timeout'])
            time.sleep(0.5)

    def read_log(self, logfile):
        return self.host.read_file(logfile) or ''

    def fail_recovery(self, backrest, logfile, extra=None):
        text = self.read_log(logfile)
        log = read_recovery_log(text)
        archive_max = None
        try:
            archive_max = backrest.info()['archive_max']
        except RecoveryError:
            pass
        message, missing = explain_recovery_failure(log, archive_max)
        tail = [line for line in text.splitlines() if line.strip()][-15:]
        raise RecoveryError('point-in-time recovery of stanza %s failed: %s%s' % (
            self.params['stanza'], message, ' (%s)' % extra if extra else ''), missing_segment=missing,
            redo_done_lsn=log['redo_done_lsn'], last_restored_segment=log['last_restored_segment'], log=tail)

    # ----- the whole run
    def run(self):
        params = self.params
        started = time.monotonic()
        args, text = target_args(params['target_type'], params['target'], params['backup_set'],
                                 params['target_exclusive'])
        if bool(params['staging_container']) == bool(params['data_dir']):
            raise RecoveryError('give exactly one of staging_container and data_dir')
        if params['staging_container'] and not params['image']:
            raise RecoveryError('staging_container needs image (the live server\'s image)')
        result = {'staging_container': params['staging_container'], 'changed': True,
                  'target': {'type': params['target_type'], 'target': text, 'exclusive': params['target_exclusive'],
                             'backup_set': params['backup_set']}}
        live_in_place = False
        # every refusal comes first: nothing is created or written before all of them passed
        if params['staging_container']:
            self.engine = DockerEngine(params['docker_host'], timeout=COMMAND_TIMEOUT)
            self.refuse_container()
            self.refuse_existing()
            pgdata = self.staging_pgdata(params['image'])
            port = 5432
        else:
            self.host, self.engine = host_from_params(params)
            pgdata, live_in_place = self.refuse_data_dir()
            # over the live data directory the server comes back on its own port
            port = params['pg_port'] if live_in_place else params['port']
        plans = self.plan_repositories(pgdata)
        repos = [dict(repo, path=plan['path']) if plan['type'] == 'posix' else repo
                 for repo, plan in zip(params['repos'], plans)]
        result.update(data_dir=pgdata, port=port, repositories=public(plans))
        config_path = params['config_path']
        own_files = []
        if params['data_dir'] and not live_in_place:
            # a configuration of its own beside the live one (which stays as it is), removed after the run
            config_path = '%s.staging-%d' % (params['config_path'], port)
        # only the live server's own configuration holds secrets; a staging restore gets them in its environment
        config = render_config(params['stanza'], pgdata, repos, params['options'], port,
                               params['pg_user'], params['pg_socket_path'], config_path,
                               params['command_options'], secrets=live_in_place,
                               own_ca=config_path != params['config_path'])
        ca = ca_files(dict(params, repos=repos), config_path, own=config_path != params['config_path'])
        if config_path != params['config_path']:
            own_files = [config_path] + sorted(ca)
        if self.module.check_mode:
            return result
        try:
            if params['staging_container']:
                self.make_container(pgdata, sorted(set(p['bind'] for p in plans if p.get('access') == 'mount')))
                self.copy_repositories(plans)
            else:
                self.host.ensure_dir(pgdata, params['os_user'], 0o700)
            backrest = PgBackRest(self.host, params['stanza'], params['os_user'], config_path,
                                  env=secret_env(repos))
            backrest.write_config(config, ca, 0o640 if live_in_place else 0o600)
            extra = ['--log-level-console=info'] + args
            if live_in_place:
                extra.append('--delta')
            else:
                extra.append('--archive-mode=off')
            out, err, result['restore_seconds'] = backrest.run('restore', *extra)
            result['backup_set'] = restored_backup_set(out + '\n' + err)
            logfile = '%s/%s' % (pgdata, LOG_FILE)
            begin = time.monotonic()
            facts = self.start_and_wait(backrest, pgdata, port, logfile)
            result['recovery_seconds'] = round(time.monotonic() - begin, 3)
            found = read_recovery_log(self.read_log(logfile))
        except RecoveryError:
            self.cleanup()
            raise
        finally:
            # the staging configuration beside the live one is needed only until the copy is promoted
            if own_files:
                self.host.remove_files(own_files)
        result['repositories'] = public(plans)
        result.update(timeline=facts['timeline'], last_replayed_transaction=facts['last_replay'],
                      server_version_num=facts['server_version_num'], recovery_stop=found['stop_line'],
                      restored_segments=found['restored_segments'],
                      target_reached=params['target_type'] == 'latest' or bool(found['stop_line']),
                      total_seconds=round(time.monotonic() - started, 3))
        if params['staging_container']:
            info = self.engine.inspect(params['staging_container'])
            networks = (info.get('NetworkSettings') or {}).get('Networks') or {}
            network = networks.get(params['network'] or 'bridge') or next(iter(networks.values()), {})
            result['ip_address'] = network.get('IPAddress') or None
        if not result['target_reached']:
            self.module.warn('recovery promoted without a log line saying it stopped at the target')
        return result


def public(plans):
    """The repository plans as returned (without the engine's mount specification)."""
    return [dict((k, v) for k, v in plan.items() if k != 'bind') for plan in plans]


def run_pgbackrest_restore(module):
    """The pgbackrest_restore module's result for module.params."""
    return PitrRestore(module).run()
