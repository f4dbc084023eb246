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
  - idp.recovery.docker
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import operations
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import server_argument_spec


def main():
    argument_spec = server_argument_spec()
    argument_spec.update(
        command=dict(type='str', default='info', choices=list(operations.COMMANDS)),
        backup_type=dict(type='str', choices=list(operations.BACKUP_TYPES), default='full'),
        restore_point=dict(type='str'),
        pg_user=dict(type='str', default='postgres'),
        pg_port=dict(type='int', default=5432),
        archive_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, operations.run_pgbackrest)


if __name__ == '__main__':
    main()
