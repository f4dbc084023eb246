#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: postgres_restore
short_description: Restore one PostgreSQL database from a complete backup set, with a safety dump and a rollback
version_added: 0.1.0
description:
  - Restores the database of a complete backup set written by M(idp.recovery.postgres_dump) into a target database
    (in its container or over TCP), in this order, each step timed and returned (together they are the recovery
    time).
  - 1. Verify the set (checksums and a full decrypt test of every payload) before touching anything.
  - 2. Stop the app containers of O(app_containers) (for example the Kratos, Hydra or Keto containers whose database
    is replaced; never the database container).
  - 3. Safety dump of the current database into a backup set of its own (kind C(postgres-safety)).
  - 4. Terminate the connections, drop the database and create it again, empty, with its owner.
  - 5. Restore - C(pg_restore --exit-on-error), in parallel for custom dumps, from a 0700 temporary directory
    removed afterwards; C(psql) with C(ON_ERROR_STOP=1) in one transaction for plain dumps.
  - 6. Compare every table's row count with the counts recorded at backup time; any difference fails, naming
    the tables.
  - 7. Start the app containers again (each must then be running) and, with O(health_url), wait until it answers
    200 while they keep running.
  - If anything fails after step 4 - including app containers that do not start, or exit, or an O(health_url) that
    does not answer 200 within O(health_timeout) - the restore is rolled back - the app containers are stopped, the
    safety set is restored and its row counts compared, the app containers are started again on it and, with
    O(health_url), their health is checked again. The task fails with a message saying why it rolled back, what the
    health check answered and whether the application is healthy again on the safety copy (if it is not, the
    message says so and where the safety set is kept).
  - Without a safety set (O(safety_backup=false), or a target database that did not exist) nothing can be rolled
    back; the task fails and the restored data stays.
  - There is no version gate - the set records no application version, only the PostgreSQL server version
    (shown in the plan). A dump restores into the same or a newer PostgreSQL major version.
  - "The database of a set written by M(idp.recovery.authentik_dump) is accepted too: only its database is restored,
    without Authentik's version gate, files or C(.env) (what a drill into a scratch database needs). To restore
    Authentik itself use M(idp.recovery.authentik_restore); a warning says so when O(app_containers) are stopped and
    started around such a restore."
  - Check mode reports the plan (what would stop, what would be dropped, the owner, what would be restored, the
    safety set) after checking the set's checksums, and changes nothing.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.postgres
  - idp.recovery.docker
  - idp.recovery.restore
  - idp.recovery.encryption.DECRYPT
attributes:
  check_mode:
    support: full
    details: Verifies the checksums, returns the plan, changes nothing.
  diff_mode:
    support: none
options:
  user:
    description:
      - Database role to connect as. It must be allowed to drop and create the database (a superuser, or the owner
        of the database with C(CREATEDB)), and to C(SET ROLE) to O(owner).
    type: str
    default: postgres
  database:
    description:
      - The database to replace. Defaults to the name of the database recorded in the set.
    type: str
  owner:
    description:
      - Owner of the recreated database and of the restored objects (C(pg_restore --role) for custom dumps).
      - Defaults to the owner recorded in the set when that role exists on the target, else O(user). The plan
        says which (C(plan.database.owner_source)).
      - The roles themselves are not part of a database dump; create them on a new server before the restore when
        the applications connect as their own role.
    type: str
  app_containers:
    description:
      - Containers to stop before the restore and to start afterwards (only those that were running), on the Docker
        engine of O(docker_host).
      - The database container is never stopped; naming it is an error.
    type: list
    elements: str
    default: []
  safety_backup:
    description:
      - Dump the current target into a backup set of its own before dropping anything. Skipped (and said so in the
        plan) when the target database does not exist.
    type: bool
    default: true
  health_url:
    description:
      - URL that answers 200 once the application is ready again after the restore. By default (and with an empty
        string) there is no health check.
    type: str
  health_timeout:
    description:
      - Seconds to wait for O(health_url), after the restore and again after a rollback. An application that is not
        ready by then is taken as not healthy on the restored data, and the restore is rolled back.
    type: int
    default: 300
notes:
  - Run the module on the Docker host of the database container (O(container)) and of the app containers, or on a
    host with PostgreSQL client tools (O(host)).
  - A safety set is a complete backup set (kind C(postgres-safety)); restore it with this module like any other.
  - Roles, tablespaces and other cluster-wide objects are not in a database dump and are not restored.
seealso:
  - module: idp.recovery.postgres_dump
  - module: idp.recovery.authentik_restore
  - module: idp.recovery.backup_set_info
'''

EXAMPLES = r'''
- name: Find the newest complete set of the Kratos database
  idp.recovery.backup_set_info:
    root: /var/backups/idp
    service: kratos-db
  register: sets

- name: Show the plan
  idp.recovery.postgres_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: ory-postgres
    app_containers: [kratos]
    identity: /etc/idp-recovery/age.key
  check_mode: true

- name: Restore, with Kratos stopped meanwhile, and wait for it to be ready again
  idp.recovery.postgres_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: ory-postgres
    app_containers: [kratos]
    health_url: http://127.0.0.1:4434/admin/health/ready
    identity: /etc/idp-recovery/age.key
  register: restored

- name: Restore into a scratch server over TCP under another name
  idp.recovery.postgres_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    host: 10.0.0.12
    user: postgres
    password: "{{ vault_scratch_pg_pass }}"
    database: kratos_drill
    safety_backup: false
    identity: /etc/idp-recovery/age.key

- name: Report the recovery time
  ansible.builtin.debug:
    msg: "restored in {{ restored.recovery_seconds }} s"
'''

RETURN = r'''
steps:
  description: Each step with its name, duration in seconds and details.
  returned: always
  type: list
  elements: dict
  sample: [{name: verify, seconds: 0.4}, {name: restore_database, seconds: 2.1}]
recovery_seconds:
  description: Total duration of the steps.
  returned: always
  type: float
plan:
  description: What the restore does (or did).
  returned: always
  type: dict
  contains:
    stop:
      description: App containers stopped (those of O(app_containers) that were running).
      type: list
      elements: str
    database:
      description:
        - The target (C(target), C(name), C(exists), C(drop)), the owner (C(owner), C(owner_source)), and what is
          restored (C(restore) payload, C(format), C(tables), C(rows), C(recorded_name), C(server_version) of the
          dump, C(set_section) - C(postgres), or C(authentik) for the database of an Authentik set).
      type: dict
    safety_set:
      description: The safety set to write, or why none is taken.
      type: str
    health_url:
      description: The URL waited for after the restore, or null.
      type: str
  sample:
    stop: [kratos]
    database: {target: "container ory-postgres (database kratos)", name: kratos, exists: true, drop: true,
               owner: kratos, owner_source: recorded in the set, restore: database.pgdump.zst.age, format: custom,
               tables: 41, rows: 12044, recorded_name: kratos, server_version: "15.18", set_section: postgres}
    safety_set: /var/backups/idp/kratos-db-pre-restore/20261122T081512Z
    health_url: null
tables:
  description: Tables compared after the restore (C(checked)) and those that differ (C(mismatched)).
  returned: when the database was restored
  type: dict
safety_set:
  description: The backup set holding the target's state from before the restore.
  returned: when a safety backup was taken
  type: str
health:
  description: The health check (url, status, seconds waited).
  returned: when a health check passed
  type: dict
rolled_back:
  description:
    - Whether a failure after the drop (including app containers that did not start or did not become healthy) was
      answered by restoring the safety set. The steps of the rollback are in RV(steps) (C(rollback_stop_apps),
      C(rollback_recreate), C(rollback_restore), C(rollback_compare), C(rollback_start_apps), C(rollback_health)).
  returned: on failure after the drop
  type: bool
healthy_after_rollback:
  description:
    - After a rollback, whether the app containers started again on the safety copy and answered O(health_url).
      C(true) healthy again; C(false) not, or the app containers did not start (the message says why and where the
      safety set is kept); null when no health check ran.
  returned: on failure after the drop, when a safety set was taken
  type: bool
rollback_health:
  description: The health check on the safety copy after a rollback (url, status, seconds waited).
  returned: when the application answered its health check again after a rollback
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import decrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    DATABASE_MUTUALLY_EXCLUSIVE,
    DATABASE_REQUIRED_ONE_OF,
    database_argument_spec,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.database_restore import (
    restore_argument_spec,
    run_postgres,
)


def main():
    argument_spec = restore_argument_spec(app_containers=[])
    argument_spec.update(database_argument_spec(user='postgres', database=None))
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=DATABASE_MUTUALLY_EXCLUSIVE,
                           required_one_of=DATABASE_REQUIRED_ONE_OF)
    run_module(module, run_postgres)


if __name__ == '__main__':
    main()
