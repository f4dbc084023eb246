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
    live server (O(live_pg_path), else what the server in O(container) reports) - unless O(confirm_live) is
    given for a restore into that data directory (the incident decision; the live server must be stopped,
    pgBackRest refuses otherwise).
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
    details: Validates the target and the refusal rules and reports what would be restored; nothing is created.
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

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _pgbackrest
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module

LOG_FILE = 'idp-recovery-restore.log'
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
    def live_pg_path(self):
        if self.params['live_pg_path']:
            return self.params['live_pg_path'].rstrip('/') or '/'
        if self.params['container'] and self.engine.is_running(self.params['container']):
            host = _pgbackrest.ContainerHost(self.engine, self.params['container'])
            db = _pgbackrest.server_database(host, self.params['os_user'], self.params['pg_user'])
            return db.run_sql('SHOW data_directory').strip().rstrip('/')
        return (self.params['pg_path'] or '').rstrip('/') or None

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
        data_dir = self.params['data_dir'].rstrip('/') or '/'
        live = self.live_pg_path()
        if live is None and not self.params['confirm_live']:
            raise RecoveryError('cannot tell the live data directory: give live_pg_path (or container) so that data_dir '
                                'can be checked against it', refused=True)
        if live is not None and data_dir == live and not self.params['confirm_live']:
            raise RecoveryError('data_dir %s is the live server\'s data directory: refused. Restore into a staging '
                                'directory or container; overwriting the live server needs confirm_live: true (the '
                                'incident decision) with the live server stopped' % data_dir, refused=True)
        return data_dir, live is not None and data_dir == live

    # ----- staging container
    def image_pgdata(self, image):
        info = self.engine.image_info(image)
        if info is None:
            raise RecoveryError('image %s is not on the Docker engine at %s and is never pulled: build or load it '
                                'there first' % (image, self.engine.base_url), image=image)
        for item in (info.get('Config') or {}).get('Env') or []:
            if item.startswith('PGDATA='):
                return item.split('=', 1)[1] or _pgbackrest.DEFAULT_PGDATA
        return _pgbackrest.DEFAULT_PGDATA

    def make_container(self, pgdata):
        name = self.params['staging_container']
        if self.engine.exists(name):
            labels = (self.engine.inspect(name).get('Config') or {}).get('Labels') or {}
            if labels.get(_pgbackrest.SCRATCH_LABEL) != 'true':
                raise RecoveryError('container %s exists and has no label %s=true: it was not made by idp.recovery, '
                                    'so it is not replaced; choose another staging_container' % (
                                        name, _pgbackrest.SCRATCH_LABEL), container=name, refused=True)
            self.engine.remove_container(name)
        labels = dict((str(k), str(v)) for k, v in (self.params['labels'] or {}).items())
        labels.update({_pgbackrest.SCRATCH_LABEL: 'true', _pgbackrest.CREATED_LABEL: make_stamp(),
                       _pgbackrest.PITR_LABEL: self.params['stanza']})
        hosts = dict((str(k), str(v)) for k, v in (self.params['extra_hosts'] or {}).items())
        self.engine.create_container(name, self.params['image'], command=['sleep', 'infinity'], labels=labels,
                                     network=self.params['network'], tmpfs={pgdata: ''} if self.params['tmpfs'] else None,
                                     extra_hosts=hosts or None)
        self.created = name
        self.engine.start(name)
        self.host = _pgbackrest.ContainerHost(self.engine, name)
        code, _out, err = self.host.run(['sh', '-c', 'install -d -o "$1" -g "$1" -m 0700 "$2" && '
                                         'install -d -o "$1" -g "$1" -m 2775 /run/postgresql', 'sh',
                                         self.params['os_user'], pgdata], user='root')
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
        code, out, err = host.run(['pg_ctl', '-D', pgdata, '-l', logfile, '-o', options, '-w', '-t', '600', 'start'],
                                  user=user)
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
        if params['staging_container']:
            self.engine = DockerEngine(params['docker_host'], timeout=_pgbackrest.COMMAND_TIMEOUT)
            self.refuse_container()
            pgdata = self.image_pgdata(params['image'])
            port = 5432
        else:
            self.host, self.engine = _pgbackrest.host_from_params(params)
            pgdata, live_in_place = self.refuse_data_dir()
            # over the live data directory the server comes back on its own port
            port = params['pg_port'] if live_in_place else params['port']
        result.update(data_dir=pgdata, port=port)
        config_path = params['config_path']
        config = _pgbackrest.render_config(params['stanza'], pgdata, params['repos'], params['options'], port,
                                           params['pg_user'], params['pg_socket_path'], config_path,
                                           params['command_options'])
        if self.module.check_mode:
            return result
        if params['data_dir'] and not live_in_place:
            # a configuration of its own, beside the live one, so that the live server's stays as it is
            config_path = '%s.%s' % (params['config_path'], 'staging-%d' % port)
            config = _pgbackrest.render_config(params['stanza'], pgdata, params['repos'], params['options'], port,
                                               params['pg_user'], params['pg_socket_path'], config_path,
                                               params['command_options'])
        try:
            if params['staging_container']:
                self.make_container(pgdata)
            else:
                self.host.ensure_dir(pgdata, params['os_user'], 0o700)
            backrest = _pgbackrest.PgBackRest(self.host, params['stanza'], params['os_user'], config_path)
            backrest.write_config(config, _pgbackrest.ca_files(params, config_path))
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
        ready_timeout=dict(type='int', default=3600),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('staging_container', 'data_dir')],
                           required_one_of=[('staging_container', 'data_dir')],
                           required_by={'staging_container': 'image'})
    run_module(module, run)


if __name__ == '__main__':
    main()
