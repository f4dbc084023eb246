#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pgbackrest_restore
short_description: Point-in-time restore of a pgBackRest stanza into a staging PostgreSQL
version_added: 0.1.0
description:
  - Restores a backup of O(stanza) plus WAL up to a target - the end of the archive, a time, a restore point, an
    LSN, a transaction or just the backup's consistency point - with C(pgbackrest restore), starts PostgreSQL on
    the result, waits until recovery reached the target and the server is promoted (a new timeline) and answers,
    and returns the recovered timeline, the last replayed transaction's time and the durations.
  - "The target is always a staging copy: either a new container O(staging_container) from O(image) (the same
    image as the live server, so that the server and pgBackRest versions match), or a separate data directory
    O(data_dir) where the live server runs (in O(container) or on this host) with its own O(port)."
  - A staging restore never archives into the repository - C(archive_mode) is off in the copy (pgBackRest's
    C(--archive-mode=off)) - so the new timeline of the copy cannot mix with the live server's WAL.
  - Refused when the staging target is the live server - the container O(container), or the data directory of the
    live server - unless O(confirm_live) is given for a restore into that data directory (the incident decision;
    the live server must be stopped, pgBackRest refuses otherwise). The live data directory is every one known -
    O(live_pg_path), what the server in O(container) reports, the container's E(PGDATA) (on this host O(pg_path)).
    O(data_dir) is compared after normalising it (C(.), C(..), repeated and trailing C(/)), after resolving its
    symbolic links where the restore runs, and by device and inode, so that no other spelling of the live
    directory passes; a O(data_dir) inside the live data directory, or holding it, is always refused.
  - "Every refusal is decided before anything is created or written, in check mode too."
  - "A posix repository (the default type) is read where the live server keeps it. With O(staging_container) the
    module looks the repository path up in the live container O(container) (symbolic links resolved): on a volume
    or bind mount of that container, the volume (or the host directory of the repository) is mounted read-only at
    the same path into the staging container; in the live container's own file system, the stanza's part of the
    repository (C(archive/STANZA), C(backup/STANZA)) is copied into the staging container through the Docker
    engine (its size is measured first and must leave 1 GiB free on the engine's disk; the copy goes with the
    staging container), unless O(repo_copy=false). A volume is copied instead of mounted when mounting it whole
    would cover the staging container's data directory, configuration or log directory. A posix repository
    without O(container), a path missing there, or a repository without the stanza is refused up front, naming
    what is needed. RV(repositories) says how each repository was reached."
  - "Secrets: the configuration a staging restore writes (in the staging container, or beside the live one as
    C(CONFIG_PATH.staging-PORT), mode 0600, removed after the run, also after a failure) holds no passphrase and
    no key; they reach C(pgbackrest restore) and the staging server (whose C(restore_command) runs pgBackRest) in
    the environment (C(PGBACKREST_REPO1_CIPHER_PASS), C(PGBACKREST_REPO1_S3_KEY), ...). Only a restore into the live
    data directory with O(confirm_live) writes the live configuration with its secrets, as
    M(idp.recovery.pgbackrest_setup) does, since the live server archives again with it."
  - The live server's O(container) is where the restore runs with O(data_dir); with O(staging_container) it is
    only used to refuse that container as the target and to learn the live data directory.
  - The staging container carries the labels C(io.idp-recovery.scratch=true) and C(io.idp-recovery.pitr=STANZA);
    remove it with M(idp.recovery.scratch_postgres) O(idp.recovery.scratch_postgres#module:state=absent). An
    existing container of that name is replaced only when it carries the scratch label.
  - "A failed restore (wrong passphrase, unreachable repository, a gap in the WAL archive, a target beyond the
    archive) fails with pgBackRest's or PostgreSQL's message naming the cause (for a WAL gap the missing segment
    and the LSN where redo stopped) and removes the staging container."
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.pgbackrest
  - idp.recovery.pgbackrest.CONFIG
attributes:
  check_mode:
    support: full
    details: Validates the target and the refusal rules and reports what would be restored and how each repository
      would be reached (RV(repositories)); nothing is created or written.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run makes a new staging copy.
options:
  target_type:
    description:
      - V(latest) - all archived WAL (the end of the archive).
      - V(time) - up to O(target) as a time (ISO-8601; without a zone UTC; or epoch seconds).
      - V(name) - up to the restore point O(target) (see M(idp.recovery.pgbackrest) V(restore-point)).
      - V(lsn), V(xid) - up to an LSN or a transaction ID.
      - V(immediate) - only the backup itself, up to its consistency point.
    type: str
    choices: [latest, time, name, lsn, xid, immediate]
    default: latest
  target:
    description: The recovery target for O(target_type) V(time), V(name), V(lsn) or V(xid).
    type: str
  target_exclusive:
    description: Stop just before the target instead of just after it (time, LSN, transaction).
    type: bool
    default: false
  backup_set:
    description:
      - The backup label to restore from (for example C(20260301-020304F)). Default - pgBackRest picks the newest
        backup that ends before a time target, else the newest.
    type: str
  staging_container:
    description:
      - Restore into a new container of this name (one of O(staging_container) and O(data_dir) is required).
    type: str
  image:
    description: The image of O(staging_container), never pulled. Required with O(staging_container).
    type: str
  network:
    description: The network of O(staging_container) (default - the engine's default bridge network).
    type: str
  extra_hosts:
    description: Host names and addresses added to O(staging_container)'s C(/etc/hosts), for example the S3
      endpoint's name.
    type: dict
    default: {}
  labels:
    description: More labels of O(staging_container), for example C(io.idp-recovery.drill).
    type: dict
    default: {}
  tmpfs:
    description: Keep O(staging_container)'s data directory in memory.
    type: bool
    default: false
  data_dir:
    description:
      - Restore into this data directory where the live server runs (in O(container) or on this host); it must be
        empty or missing unless O(confirm_live).
    type: path
  port:
    description: The port of the server started on O(data_dir) (with O(confirm_live) over the live data directory,
      O(pg_port)).
    type: int
    default: 5433
  live_pg_path:
    description:
      - The live server's data directory, for the refusal. Default - what the server in O(container) reports (or,
        on this host, O(pg_path)).
    type: path
  confirm_live:
    description:
      - Allow O(data_dir) to be the live data directory - the explicit incident decision to overwrite the live
        server's data with the restored state. The live server must be stopped; archiving stays on in the result.
    type: bool
    default: false
  repo_copy:
    description:
      - Allow copying a posix repository that lives in the live container's own file system (on no volume) into
        O(staging_container). V(false) refuses such a restore instead (put the repository on a volume, then it is
        mounted read-only).
    type: bool
    default: true
  ready_timeout:
    description: Seconds to wait for recovery to reach the target and the server to be promoted.
    type: int
    default: 3600
'''

EXAMPLES = r'''
- name: Restore the authentik database as it was before the migration, into staging
  idp.recovery.pgbackrest_restore:
    stanza: authentik
    container: authentik-postgres
    staging_container: authentik-pitr-staging
    image: idp-recovery/postgres:15
    pg_user: authentik
    target_type: name
    target: "{{ checkpoint.restore_point.name }}"
    repos: "{{ pitr_repos }}"
  register: restored

- name: Restore to a time from the posix repository on the live container's volume (mounted read-only)
  idp.recovery.pgbackrest_restore:
    stanza: authentik
    container: authentik-postgres
    staging_container: authentik-pitr-staging
    image: idp-recovery/postgres:15
    pg_user: authentik
    target_type: time
    target: "2026-03-01T09:14:00Z"
    repos:
      - type: posix
        path: /var/lib/pgbackrest
        cipher_pass: "{{ vault_pgbackrest_cipher_pass }}"

- name: Restore to a time into a separate data directory on the database host
  idp.recovery.pgbackrest_restore:
    stanza: authentik
    data_dir: /var/lib/postgresql/15/pitr-staging
    port: 5499
    live_pg_path: /var/lib/postgresql/15/main
    target_type: time
    target: "2026-03-01T09:14:00Z"
    repos: "{{ pitr_repos }}"
'''

RETURN = r'''
staging_container:
  description: The staging container (null with O(data_dir)).
  returned: always
  type: str
ip_address:
  description: The staging container's address on its network.
  returned: with O(staging_container)
  type: str
data_dir:
  description: The restored data directory.
  returned: always
  type: str
port:
  description: The port the restored server listens on.
  returned: always
  type: int
target:
  description: The recovery target as given to pgBackRest (type, normalised target, exclusive, backup set).
  returned: always
  type: dict
repositories:
  description:
    - How the restore reaches each repository of O(repos), in order. C(access) is V(network) (s3), V(direct) (a
      posix repository where the restore runs, with O(data_dir)), V(mount) (mounted read-only into the staging
      container - C(mount_type) V(volume) or V(bind), C(source) the volume name or host directory, C(destination)
      the path in the container) or V(copy) (copied into the staging container - C(reason), C(copy_bytes) as
      measured before, C(copied_bytes) and C(copy_seconds) of the copy's stream). C(path) is the repository path
      with symbolic links resolved.
  returned: always
  type: list
  elements: dict
  sample:
    - {repo: 1, type: posix, path: /var/lib/pgbackrest, access: mount, mount_type: volume, source: pgbackrest-repo,
       destination: /var/lib/pgbackrest}
backup_set:
  description: The backup pgBackRest restored.
  returned: success
  type: str
  sample: 20260301-020304F
target_reached:
  description: Whether recovery stopped at the target (always true for V(latest), which ends with the archive).
  returned: success
  type: bool
recovery_stop:
  description: PostgreSQL's log line saying where recovery stopped (null for V(latest)).
  returned: success
  type: str
  sample: recovery stopping before commit of transaction 726, time 2026-03-01 09:14:00.628719+00
timeline:
  description: The restored server's timeline after promotion.
  returned: success
  type: int
last_replayed_transaction:
  description: The commit time of the last transaction replayed (UTC, ISO-8601; null when none was replayed).
  returned: success
  type: str
restored_segments:
  description: WAL segments fetched from the repository during recovery.
  returned: success
  type: int
server_version_num:
  description: The restored server's C(server_version_num).
  returned: success
  type: int
restore_seconds:
  description: Duration of C(pgbackrest restore) (the files).
  returned: success
  type: float
recovery_seconds:
  description: Duration from the server's start to its promotion (WAL replay).
  returned: success
  type: float
total_seconds:
  description: The whole restore, from the container's creation to a promoted server.
  returned: success
  type: float
'''

import posixpath
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _pgbackrest
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module

LOG_FILE = 'idp-recovery-restore.log'
MIB = 1024 * 1024
# what a copy of a repository must leave free on the Docker engine's disk (the live server writes there too)
REPO_COPY_RESERVE = 1024 * MIB
STATE_SQL = ("SELECT json_build_object('in_recovery', pg_is_in_recovery(), "
             "'timeline', (SELECT timeline_id FROM pg_control_checkpoint()), "
             "'last_replay', to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', "
             "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
             "'server_version_num', current_setting('server_version_num')::int)")


class Restore(object):
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
            found.append(_pgbackrest.normalise_path(self.params['live_pg_path'], 'live_pg_path'))
        live = self.params['container']
        if live and self.engine.exists(live):
            info = self.engine.inspect(live)
            if self.engine.is_running(live):
                host = _pgbackrest.ContainerHost(self.engine, live)
                db = _pgbackrest.server_database(host, self.params['os_user'], self.params['pg_user'])
                try:
                    found.append(_pgbackrest.normalise_path(db.run_sql('SHOW data_directory').strip()))
                except RecoveryError:
                    pass  # the server is down: its container's PGDATA says where its data is
            for item in (info.get('Config') or {}).get('Env') or []:
                if item.startswith('PGDATA=') and item[7:].startswith('/'):
                    found.append(_pgbackrest.normalise_path(item[7:]))
        elif not live and self.params['pg_path']:
            found.append(_pgbackrest.normalise_path(self.params['pg_path'], 'pg_path'))
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
        data_dir = _pgbackrest.normalise_path(self.params['data_dir'], 'data_dir')
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
                if _pgbackrest.path_within(mine, theirs):
                    raise RecoveryError('data_dir %s lies inside the live server\'s data directory %s: refused. Restore '
                                        'into a directory of its own, beside the live one' % (self.params['data_dir'], live),
                                        refused=True)
                if _pgbackrest.path_within(theirs, mine):
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
        options = params['options'] or {}
        write_paths = [posixpath.dirname(_pgbackrest.normalise_path(params['config_path'])),
                       _pgbackrest.normalise_path(str(options.get('log-path') or _pgbackrest.LOG_PATH))]
        write_paths += list(_pgbackrest.STAGING_WRITE_PATHS)
        plans = []
        live_info = live_host = None
        for index, repo in enumerate(params['repos'], 1):
            what = 'repos[%d]' % (index - 1)
            path = _pgbackrest.normalise_path(repo.get('path') or '/var/lib/pgbackrest', what + '.path')
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
                    live_host = _pgbackrest.ContainerHost(self.engine, live)
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
            plan.update(_pgbackrest.plan_repo_mount(plan['path'], live_info.get('Mounts'), pgdata, write_paths))
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
    def image_pgdata(self, image):
        info = self.engine.image_info(image)
        if info is None:
            raise RecoveryError('image %s is not on the Docker engine at %s and is never pulled: build or load it '
                                'there first' % (image, self.engine.base_url), image=image)
        for item in (info.get('Config') or {}).get('Env') or []:
            if item.startswith('PGDATA='):
                return _pgbackrest.normalise_path(item.split('=', 1)[1] or _pgbackrest.DEFAULT_PGDATA)
        return _pgbackrest.DEFAULT_PGDATA

    def refuse_existing(self):
        name = self.params['staging_container']
        if self.engine.exists(name):
            labels = (self.engine.inspect(name).get('Config') or {}).get('Labels') or {}
            if labels.get(_pgbackrest.SCRATCH_LABEL) != 'true':
                raise RecoveryError('container %s exists and has no label %s=true: it was not made by idp.recovery, '
                                    'so it is not replaced; choose another staging_container' % (
                                        name, _pgbackrest.SCRATCH_LABEL), container=name, refused=True)
            return True
        return False

    def make_container(self, pgdata, binds):
        name = self.params['staging_container']
        if self.refuse_existing():
            self.engine.remove_container(name)
        labels = dict((str(k), str(v)) for k, v in (self.params['labels'] or {}).items())
        labels.update({_pgbackrest.SCRATCH_LABEL: 'true', _pgbackrest.CREATED_LABEL: make_stamp(),
                       _pgbackrest.PITR_LABEL: self.params['stanza']})
        hosts = dict((str(k), str(v)) for k, v in (self.params['extra_hosts'] or {}).items())
        self.engine.create_container(name, self.params['image'], command=['sleep', 'infinity'], labels=labels,
                                     network=self.params['network'], tmpfs={pgdata: ''} if self.params['tmpfs'] else None,
                                     extra_hosts=hosts or None, binds=binds or None)
        self.created = name
        self.engine.start(name)
        self.host = _pgbackrest.ContainerHost(self.engine, name)
        log_path = str((self.params['options'] or {}).get('log-path') or _pgbackrest.LOG_PATH)
        code, _out, err = self.host.run(['sh', '-c', 'install -d -o "$1" -g "$1" -m 0700 "$2" && '
                                         'install -d -o "$1" -g "$1" -m 2775 /run/postgresql && '
                                         'install -d -o "$1" -g "$1" -m 0750 "$3"', 'sh',
                                         self.params['os_user'], pgdata, log_path], user='root')
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
        db = _pgbackrest.server_database(host, user, self.params['pg_user'], port)
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
        log = _pgbackrest.read_recovery_log(text)
        archive_max = None
        try:
            archive_max = backrest.info()['archive_max']
        except RecoveryError:
            pass
        message, missing = _pgbackrest.explain_recovery_failure(log, archive_max)
        tail = [line for line in text.splitlines() if line.strip()][-15:]
        raise RecoveryError('point-in-time recovery of stanza %s failed: %s%s' % (
            self.params['stanza'], message, ' (%s)' % extra if extra else ''), missing_segment=missing,
            redo_done_lsn=log['redo_done_lsn'], last_restored_segment=log['last_restored_segment'], log=tail)

    # ----- the whole run
    def run(self):
        params = self.params
        started = time.monotonic()
        args, text = _pgbackrest.target_args(params['target_type'], params['target'], params['backup_set'],
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
            self.engine = DockerEngine(params['docker_host'], timeout=_pgbackrest.COMMAND_TIMEOUT)
            self.refuse_container()
            self.refuse_existing()
            pgdata = self.image_pgdata(params['image'])
            port = 5432
        else:
            self.host, self.engine = _pgbackrest.host_from_params(params)
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
        config = _pgbackrest.render_config(params['stanza'], pgdata, repos, params['options'], port,
                                           params['pg_user'], params['pg_socket_path'], config_path,
                                           params['command_options'], secrets=live_in_place,
                                           own_ca=config_path != params['config_path'])
        ca = _pgbackrest.ca_files(dict(params, repos=repos), config_path, own=config_path != params['config_path'])
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
            backrest = _pgbackrest.PgBackRest(self.host, params['stanza'], params['os_user'], config_path,
                                              env=_pgbackrest.secret_env(repos))
            backrest.write_config(config, ca, 0o640 if live_in_place else 0o600)
            extra = ['--log-level-console=info'] + args
            if live_in_place:
                extra.append('--delta')
            else:
                extra.append('--archive-mode=off')
            out, err, result['restore_seconds'] = backrest.run('restore', *extra)
            result['backup_set'] = _pgbackrest.restored_backup_set(out + '\n' + err)
            logfile = '%s/%s' % (pgdata, LOG_FILE)
            begin = time.monotonic()
            facts = self.start_and_wait(backrest, pgdata, port, logfile)
            result['recovery_seconds'] = round(time.monotonic() - begin, 3)
            found = _pgbackrest.read_recovery_log(self.read_log(logfile))
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


def run(module):
    return Restore(module).run()


def main():
    argument_spec = _pgbackrest.server_argument_spec()
    argument_spec.update(_pgbackrest.config_argument_spec())
    argument_spec.update(
        target_type=dict(type='str', choices=list(_pgbackrest.TARGET_TYPES), default='latest'),
        target=dict(type='str'),
        target_exclusive=dict(type='bool', default=False),
        backup_set=dict(type='str'),
        staging_container=dict(type='str'),
        image=dict(type='str'),
        network=dict(type='str'),
        extra_hosts=dict(type='dict', default={}),
        labels=dict(type='dict', default={}),
        tmpfs=dict(type='bool', default=False),
        data_dir=dict(type='path'),
        port=dict(type='int', default=5433),
        live_pg_path=dict(type='path'),
        confirm_live=dict(type='bool', default=False),
        repo_copy=dict(type='bool', default=True),
        ready_timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('staging_container', 'data_dir')],
                           required_one_of=[('staging_container', 'data_dir')],
                           required_by={'staging_container': 'image'})
    run_module(module, run)


if __name__ == '__main__':
    main()
