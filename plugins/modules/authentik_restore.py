#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: authentik_restore
short_description: Restore Authentik from a complete backup set, with a safety dump and a rollback
version_added: 0.1.0
description:
  - Restores a complete backup set written by M(idp.recovery.authentik_dump) into a target database (in its
    container or over TCP), in this order, each step timed and returned (together they are the recovery time).
  - 1. Verify the set (checksums and a full decrypt test of every payload) before touching anything.
  - "2. Version gate: refuse a dump whose Authentik release line is newer than the target's, or more than one
    release line older, unless O(force_version=true)."
  - 3. Stop the app containers (never the database container).
  - 4. Safety dump of the current database (and of the file directories about to be replaced) into a backup set
    of its own.
  - 5. Terminate the connections, drop the database and create it again, empty, with its owner.
  - 6. Restore - C(pg_restore --exit-on-error), in parallel for custom dumps, from a 0700 temporary directory
    removed afterwards; C(psql) with C(ON_ERROR_STOP=1) in one transaction for plain dumps.
  - 7. Compare every table's row count with the counts recorded at backup time; any difference fails, naming
    the tables.
  - 8. Restore the files (safe extraction) and, when asked, the C(.env).
  - 9. Start the app containers (each must then be running) and wait until the health URL answers 200 while they
    keep running.
  - If anything fails after step 5 - including app containers that do not start, or exit (for example Authentik
    refusing the restored database), or a health URL that does not answer 200 within O(health_timeout) - the
    restore is rolled back - the app containers are stopped, the safety set is restored (database and file
    directories) and its row counts compared, the app containers are started again on it and the health URL is
    checked again. The task fails with a message saying why it rolled back, what the health check answered and
    whether Authentik is healthy again on the safety copy (if it is not, the message says so and where the safety
    set is kept).
  - Without a safety set (O(safety_backup=false), or a target database that did not exist) nothing can be rolled
    back; the task fails and the restored data stays.
  - Check mode reports the plan (what would stop, what would be dropped, what would be restored) after
    checking the set's checksums and the version gate, and changes nothing.
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
    details: Verifies checksums and the version gate, returns the plan, changes nothing.
  diff_mode:
    support: none
options:
  user:
    description:
      - Database role to connect as. It must be allowed to drop and create the database (the Authentik
        compose deployment's role is).
    type: str
    default: authentik
  database:
    description:
      - The database to replace.
    type: str
    default: authentik
  owner:
    description:
      - Owner of the recreated database and of the restored objects. Defaults to O(user).
    type: str
  app_containers:
    description:
      - Containers to stop before the restore and to start afterwards (only those that were running).
      - The database container is never stopped; naming it is an error.
      - Set to an empty list when no app container runs on this Docker host.
    type: list
    elements: str
    default: [authentik-server, authentik-worker]
  compose_project:
    description:
      - Instead of O(app_containers), every container of this compose project except the database container and
        those of O(keep_services).
    type: str
  keep_services:
    description:
      - With O(compose_project), compose services that keep running (the database, a Redis).
    type: list
    elements: str
    default: [postgresql, postgres, db, redis]
  target_version:
    description:
      - Authentik version of the target. Defaults to the C(org.opencontainers.image.version) label (else the tag)
        of the image of the first app container.
    type: str
  force_version:
    description:
      - Restore even when the version gate refuses. Authentik does not support downgrades; use only with a
        reason.
    type: bool
    default: false
  safety_backup:
    description:
      - Dump the current target into a backup set of its own before dropping anything.
    type: bool
    default: true
  restore_files:
    description:
      - Restore the file directories of the set.
    type: bool
    default: true
  compose_dir:
    description:
      - The Authentik deployment directory; gives the default destinations of the files and of the C(.env).
    type: path
  files:
    description:
      - Destinations of the file payloads by name (as in M(idp.recovery.authentik_dump)). A payload of the set
        without a destination fails the task before anything changes, unless O(restore_files=false).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the payload.
        type: str
        required: true
      path:
        description: Directory on the host.
        type: path
      container_path:
        description: Directory inside O(files_container), resolved through its mounts.
        type: str
      required:
        description: Ignored on restore.
        type: bool
        default: false
  files_container:
    description:
      - Container whose mounts resolve O(files[].container_path).
    type: str
  restore_env:
    description:
      - Restore the C(.env) of the set (mode 0600). Off by default - the target usually has its own.
    type: bool
    default: false
  env_file:
    description:
      - Where the C(.env) goes with O(restore_env=true). Defaults to C(.env) in O(compose_dir).
    type: path
  health_url:
    description:
      - URL that answers 200 once Authentik is ready. Defaults to
        C(http://IP:9000/-/health/ready/) with the address of the first app container. An empty string skips
        the health check.
    type: str
  health_timeout:
    description:
      - Seconds to wait for O(health_url), after the restore and again after a rollback. An Authentik that is not
        ready by then is taken as not healthy on the restored data, and the restore is rolled back; raise it when
        Authentik runs long migrations on start.
    type: int
    default: 300
notes:
  - Run the module on the Docker host of the app containers.
  - A safety set is a complete backup set (kind C(authentik-safety)); restore it with this module like any other.
  - A set written by M(idp.recovery.postgres_dump) is refused before anything changes; restore it with
    M(idp.recovery.postgres_restore).
seealso:
  - module: idp.recovery.authentik_dump
  - module: idp.recovery.postgres_restore
  - module: idp.recovery.backup_set_info
'''

EXAMPLES = r'''
- name: Find the newest complete Authentik set
  idp.recovery.backup_set_info:
    root: /var/backups/idp
    service: authentik
  register: sets

- name: Show the plan
  idp.recovery.authentik_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: authentik-postgres
    compose_dir: /opt/authentik
    identity: /etc/idp-recovery/age.key
  check_mode: true

- name: Restore
  idp.recovery.authentik_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: authentik-postgres
    compose_dir: /opt/authentik
    identity: /etc/idp-recovery/age.key
  register: restored

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
  sample: [{name: verify, seconds: 1.2}, {name: restore_database, seconds: 8.4}]
recovery_seconds:
  description: Total duration of the steps.
  returned: always
  type: float
plan:
  description: What the restore does (or did) - containers to stop, database to replace, files, safety set.
  returned: always
  type: dict
version_gate:
  description: The decision of the version gate (dump and target versions and lines, ok, reason, forced).
  returned: always
  type: dict
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
      C(rollback_recreate), C(rollback_restore), C(rollback_compare), C(rollback_files), C(rollback_start_apps),
      C(rollback_health)).
  returned: on failure after the drop
  type: bool
healthy_after_rollback:
  description:
    - After a rollback, whether the app containers started again on the safety copy and answered the health URL.
      C(true) healthy again; C(false) not, or the app containers did not start (the message says why and where the
      safety set is kept); null when no health check ran.
  returned: on failure after the drop, when a safety set was taken
  type: bool
rollback_health:
  description: The health check on the safety copy after a rollback (url, status, seconds waited).
  returned: when Authentik answered its health check again after a rollback
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._authentik.deployment import DEFAULT_APP_CONTAINERS
from ansible_collections.idp.recovery.plugins.module_utils._crypto import decrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    DATABASE_MUTUALLY_EXCLUSIVE,
    DATABASE_REQUIRED_ONE_OF,
    database_argument_spec,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.database_restore import (
    restore_argument_spec,
    run_authentik,
)


def main():
    file_options = dict(
        name=dict(type='str', required=True),
        path=dict(type='path'),
        container_path=dict(type='str'),
        required=dict(type='bool', default=False),
    )
    argument_spec = restore_argument_spec(
        app_containers=DEFAULT_APP_CONTAINERS,
        compose_project=dict(type='str'),
        keep_services=dict(type='list', elements='str', default=['postgresql', 'postgres', 'db', 'redis']),
        target_version=dict(type='str'),
        force_version=dict(type='bool', default=False),
        restore_files=dict(type='bool', default=True),
        compose_dir=dict(type='path'),
        files=dict(type='list', elements='dict', options=file_options),
        files_container=dict(type='str'),
        restore_env=dict(type='bool', default=False),
        env_file=dict(type='path'),
    )
    argument_spec.update(database_argument_spec(user='authentik', database='authentik'))
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=DATABASE_MUTUALLY_EXCLUSIVE + [('app_containers', 'compose_project')],
                           required_one_of=DATABASE_REQUIRED_ONE_OF)
    run_module(module, run_authentik)


if __name__ == '__main__':
    main()
