#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pgbackrest
short_description: Run a pgBackRest operation for a stanza and return its parsed state
version_added: 0.1.0
description:
  - Runs one pgBackRest command where the PostgreSQL server runs (see M(idp.recovery.pgbackrest_setup) for the
    configuration) and returns the stanza's state from C(pgbackrest info --output=json) afterwards.
  - V(restore-point) records a named restore point (C(pg_create_restore_point)), switches to a new WAL segment and
    waits until the segment holding the point is archived, so that a later restore can reach it - the checkpoint
    before a risky change such as a schema migration.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.pgbackrest
attributes:
  check_mode:
    support: full
    details: V(info) runs; every other command is reported as a change and not run.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: V(stanza-create) and V(info) are idempotent; a backup, check, verify or restore point is a new event each time.
options:
  command:
    description:
      - V(info) - the stanza's state only.
      - V(stanza-create) - create the stanza in every repository (unchanged when it exists).
      - V(check) - check the configuration and that WAL archiving works (archives one segment).
      - V(backup) - a backup of O(backup_type).
      - V(verify) - verify the backups and WAL in the repository (checksums, missing files); fails on a problem.
      - V(expire) - apply the retention settings now.
      - V(restore-point) - record the restore point O(restore_point) and wait until it is archived.
    type: str
    choices: [info, stanza-create, check, backup, verify, expire, restore-point]
    default: info
  backup_type:
    description: The type of backup with O(command=backup).
    type: str
    choices: [full, diff, incr]
    default: full
  restore_point:
    description: The restore point's name with O(command=restore-point) (at most 63 bytes).
    type: str
  pg_user:
    description: The database role that runs the SQL of V(restore-point).
    type: str
    default: postgres
  pg_port:
    description: The server's port.
    type: int
    default: 5432
  archive_timeout:
    description: Seconds V(restore-point) waits for its WAL segment to be archived.
    type: int
    default: 120
'''

EXAMPLES = r'''
- name: Create the stanza
  idp.recovery.pgbackrest:
    stanza: authentik
    container: authentik-postgres
    command: stanza-create

- name: Take a differential backup
  idp.recovery.pgbackrest:
    stanza: authentik
    container: authentik-postgres
    command: backup
    backup_type: diff
  register: backup

- name: Checkpoint before the migration
  idp.recovery.pgbackrest:
    stanza: authentik
    container: authentik-postgres
    pg_user: authentik
    command: restore-point
    restore_point: before-upgrade-2025.12
  register: checkpoint
'''

RETURN = r'''
command:
  description: The command run.
  returned: always
  type: str
seconds:
  description: How long the command took (null when nothing ran).
  returned: always
  type: float
backup_label:
  description: The label of the backup taken by V(backup).
  returned: with O(command=backup)
  type: str
  sample: 20260301-020304F
restore_point:
  description: The restore point recorded by V(restore-point), with its LSN, WAL segment, server time and whether
    the segment was archived.
  returned: with O(command=restore-point)
  type: dict
  sample:
    name: before-upgrade
    lsn: 0/4017968
    wal_segment: "000000010000000000000004"
    time: "2026-03-01T02:03:04.123456Z"
    archived: true
info:
  description:
    - The stanza's state after the command (from C(pgbackrest info --output=json)) - C(ok), C(status_code),
      C(status_message), C(backups) (label, type, start, stop, sizes, WAL range, LSNs), C(latest_backup),
      C(latest_backup_stop), C(latest_full), C(archive_min), C(archive_max), C(repos).
    - Null in check mode for a command that was not run when the stanza does not exist yet.
  returned: always
  type: dict
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _pgbackrest, _postgres
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module

MISSING_STANZA = (1, 3)
POINT_SQL = ("SELECT json_build_object('lsn', p::text, 'wal_segment', pg_walfile_name(p), "
             "'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) "
             "FROM pg_create_restore_point(%s) AS p")
ARCHIVER_SQL = "SELECT coalesce(last_archived_wal, '') || '|' || failed_count FROM pg_stat_archiver"


def _info_or_none(backrest):
    try:
        return backrest.info()
    except RecoveryError:
        return None


def restore_point(module, host, backrest):
    params = module.params
    name = params['restore_point']
    _pgbackrest.target_args('name', name)
    db = _pgbackrest.server_database(host, params['os_user'], params['pg_user'], params['pg_port'])
    started = time.monotonic()
    with db.session() as session:
        point = session.query_json(POINT_SQL % _postgres.quote_literal(name))
        session.query('SELECT pg_switch_wal()')
        deadline = time.monotonic() + params['archive_timeout']
        archived = False
        while True:
            last, _sep, failed = session.query(ARCHIVER_SQL).strip().partition('|')
            # same timeline: segment names order like their positions
            if last and last[8:] >= point['wal_segment'][8:] and last[:8] >= point['wal_segment'][:8]:
                archived = True
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    point['name'] = name
    point['archived'] = archived
    if not archived:
        raise RecoveryError('restore point %s was recorded at %s, but its WAL segment %s was not archived within %s s '
                            '(last archived: %s, failed attempts: %s): a restore cannot reach it until archiving works'
                            % (name, point['lsn'], point['wal_segment'], params['archive_timeout'], last or 'none',
                               failed), restore_point=point)
    return point, round(time.monotonic() - started, 3)


def run(module):
    params = module.params
    host, _engine = _pgbackrest.host_from_params(params)
    backrest = _pgbackrest.PgBackRest(host, params['stanza'], params['os_user'], params['config_path'])
    command = params['command']
    result = {'command': command, 'seconds': None, 'changed': False}
    if command == 'restore-point' and not params['restore_point']:
        raise RecoveryError('command restore-point needs restore_point (its name)')
    if command == 'info':
        result['info'] = backrest.info()
        return result
    if command == 'stanza-create':
        before = _info_or_none(backrest)
        if before is not None and before['status_code'] not in MISSING_STANZA:
            result['info'] = before
            return result
    if module.check_mode:
        result['changed'] = command not in ('check', 'verify')
        result['info'] = _info_or_none(backrest)
        return result
    if command == 'restore-point':
        result['restore_point'], result['seconds'] = restore_point(module, host, backrest)
        result['changed'] = True
        result['info'] = backrest.info()
        return result
    args = []
    if command == 'backup':
        args.append('--type=%s' % params['backup_type'])
        before = set(b['label'] for b in (_info_or_none(backrest) or {}).get('backups') or [])
    _out, _err, result['seconds'] = backrest.run(command, *args)
    result['info'] = backrest.info()
    result['changed'] = command in ('stanza-create', 'backup', 'expire')
    if command == 'backup':
        new = [b['label'] for b in result['info']['backups'] if b['label'] not in before]
        if not new:
            raise RecoveryError('pgbackrest backup ended without error, but info shows no new backup', info=result['info'])
        result['backup_label'] = new[-1]
    return result


def main():
    argument_spec = _pgbackrest.server_argument_spec()
    argument_spec.update(
        command=dict(type='str', default='info',
                     choices=['info', 'stanza-create', 'check', 'backup', 'verify', 'expire', 'restore-point']),
        backup_type=dict(type='str', choices=list(_pgbackrest.BACKUP_TYPES), default='full'),
        restore_point=dict(type='str'),
        pg_user=dict(type='str', default='postgres'),
        pg_port=dict(type='int', default=5432),
        archive_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
