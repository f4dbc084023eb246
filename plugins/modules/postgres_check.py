#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: postgres_check
short_description: Read-only SQL checks of a PostgreSQL database, and a guard against the live database
version_added: 0.1.0
description:
  - Runs SQL assertions against a database, typically one just restored by a drill, each statement in a
    C(READ ONLY) transaction of its own session, and reports every result.
  - Before connecting at all, compares the target with O(refuse_targets), the locations of live databases,
    and fails when the target is one of them. With O(checks=[]) the module is only that guard, plus a
    connection test - run it before restoring into a staging database.
  - "Locations: the C(where) strings that dumps record in a set's C(metadata.json)
    (C(payloads.<name>.source.where)): C(HOST:PORT/DB) over TCP (an IPv6 address in brackets, or followed by
    the port) and C(container NAME (database DB)) for containers; also C(container:NAME/DB). An entry without
    a database (C(HOST:PORT), C(container:NAME)) refuses every database of that server."
  - "Two locations are the same database when the database names are equal and the server is the same:
    the same container (both names looked up on the Docker engine of O(docker_host), compared by container
    ID), or a common endpoint. A TCP location's endpoints are the addresses its host name resolves to
    (C(getaddrinfo)) with its port; a container's are its addresses on each of its networks with port 5432
    (PostgreSQL's port inside the container) and, when it publishes 5432/tcp, the host side of that binding.
    Every loopback address (C(localhost), 127.0.0.0/8, C(::1)), every address of the host that runs the
    module and C(0.0.0.0) count as one address, so C(localhost:5432/app) and C(127.0.0.1:5432/app) are the
    same, and a container publishing 5432 on the host is the same as C(localhost:PORT)."
  - A host name that does not resolve on the host that runs the module is compared by name. A container
    entry that does not exist on the engine matches nothing but a container target of the same name.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.INFO_MODULE
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.postgres
  - idp.recovery.docker
attributes:
  idempotent:
    support: full
options:
  user:
    description:
      - Database role to connect as.
    type: str
    default: postgres
  database:
    description:
      - The database to check.
    type: str
    required: true
  checks:
    description:
      - The SQL checks, run in order, each in its own session inside a C(READ ONLY) transaction (a statement
        that writes fails). The statement reaches the server unchanged; C(psql) does not interpret it (no
        meta-commands, no variables). Write one statement a check.
      - With O(checks[].expect) - the first column of the first row, as text, compared with it.
      - With O(checks[].expect_rows) - the number of rows returned compared with it.
      - With neither - the statement must return at least one row, and the first column of every row must
        be true (C(t) or C(true)).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Name of the check in the results (unique).
        type: str
        required: true
      sql:
        description:
          - The statement.
        type: str
        required: true
      expect:
        description:
          - The expected first column of the first row. Numbers compare as numbers when the value also reads
            as one (so V(3) equals C(3.0)); a boolean compares with C(t)/C(true) or C(f)/C(false); anything
            else compares as text (surrounding white space ignored). No row or NULL fails.
        type: raw
      compare:
        description:
          - How O(checks[].expect) and O(checks[].expect_rows) are compared, as C(actual <compare> expected).
            V(lt), V(le), V(gt) and V(ge) need numbers.
        type: str
        choices: [eq, ne, lt, le, gt, ge]
        default: eq
      expect_rows:
        description:
          - The expected number of rows. With O(checks[].expect) too, both must hold.
        type: int
  fail_on_failure:
    description:
      - Fail the task when a check fails or cannot run.
      - With V(false) the task succeeds and reports the failed checks in RV(checks) and their number in
        RV(failed_checks), so that a caller can record them first. A refused target and a failed connection
        still fail the task.
    type: bool
    default: true
  refuse_targets:
    description:
      - Locations the target must not be (the live databases), in the forms described above. A match fails
        the task before anything connects to the target, naming both.
      - An entry that cannot be read fails the task, and so does a container entry when the Docker engine
        cannot be reached to look it up.
    type: list
    elements: str
    default: []
  must_connect:
    description:
      - With O(checks=[]) - whether the task fails when the target database cannot be reached.
      - V(true) - a C(SELECT 1) in O(database) must succeed.
      - V(false) - for a guard that runs before the database exists. The module tries O(database), then the
        server's maintenance database O(maintenance_database), and reports what it found
        (RV(target.connected), RV(target.database_exists)) without failing.
      - With checks the target is always connected to.
    type: bool
    default: true
  maintenance_database:
    description:
      - The database tried with O(must_connect=false) when O(database) cannot be reached.
    type: str
    default: postgres
  statement_timeout:
    description:
      - C(statement_timeout) of each check's session, in seconds (V(0) for none).
    type: int
    default: 300
notes:
  - Run the module on the Docker host (O(container)) or on a host with PostgreSQL client tools 12 or newer
    (O(host)).
  - The comparison with O(refuse_targets) is about where the target is; it cannot tell two servers apart that
    share an address and port, which it treats as the same (the safe side).
seealso:
  - module: idp.recovery.scratch_postgres
  - module: idp.recovery.authentik_restore
'''

EXAMPLES = r'''
- name: Refuse to restore into the live database, before the staging database exists
  idp.recovery.postgres_check:
    host: staging-db.internal
    user: restore
    password: "{{ vault_staging_pg_pass }}"
    database: authentik
    refuse_targets:
      - "{{ set_info.metadata.payloads.database.source.where }}"
      - db.internal:5432/authentik
    must_connect: false

- name: Check the restored database
  idp.recovery.postgres_check:
    container: drill-scratch
    user: postgres
    database: authentik
    refuse_targets:
      - container authentik-postgres (database authentik)
    checks:
      - name: an administrator exists
        sql: SELECT count(*) FROM authentik_core_user WHERE is_superuser
        expect: 1
        compare: ge
      - name: the version is recorded
        sql: SELECT version FROM authentik_version_history ORDER BY "timestamp" DESC, id DESC LIMIT 1
        expect: "2025.10.1"
      - name: three brands
        sql: SELECT domain FROM authentik_brands_brand
        expect_rows: 3
      - name: no orphaned group memberships
        sql: >-
          SELECT count(*) = 0 FROM authentik_core_user_groups ug
          LEFT JOIN authentik_core_user u ON u.id = ug.user_id WHERE u.id IS NULL
    fail_on_failure: false
  register: checks

- name: Fail after recording the results
  ansible.builtin.assert:
    that: checks.failed_checks == 0
    fail_msg: "{{ checks.msg | default('') }}"
'''

RETURN = r'''
target:
  description: The target as resolved.
  returned: always
  type: dict
  contains:
    where:
      description: The target in the form dumps record.
      type: str
    addresses:
      description: Addresses its host resolved to, or the container's addresses.
      type: list
      elements: str
    port:
      description: TCP port (5432 inside a container).
      type: int
    database:
      description: Database name.
      type: str
    container_id:
      description: ID of the container, with O(container).
      type: str
    connected:
      description: Whether the target database answered C(SELECT 1) (null when no connection was tried).
      type: bool
    database_exists:
      description: With O(must_connect=false) and no checks, whether the database exists (null when the
        server could not be reached).
      type: bool
    connect_error:
      description: With O(must_connect=false), why the target database could not be reached.
      type: str
      returned: when the connection failed
    maintenance_error:
      description: With O(must_connect=false), why O(maintenance_database) could not be reached either.
      type: str
      returned: when that connection failed too
  sample:
    where: container drill-scratch (database authentik)
    addresses: [172.17.0.5]
    port: 5432
    database: authentik
    container_id: 4f1c2a9e0b7d3c6e8a5f2b1d9c7e6a4b3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c
    connected: true
    database_exists: true
refuse_checked:
  description: Every O(refuse_targets) entry as resolved; none matched (else the task failed).
  returned: always
  type: list
  elements: dict
  sample:
    - where: "container authentik-postgres (database authentik)"
      addresses: [172.17.0.3]
      port: 5432
      database: authentik
      container_id: 9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d
      note: null
checks:
  description: One result per check, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The check's name.
      type: str
    sql:
      description: The statement.
      type: str
    expect:
      description: The expected value, as given.
      type: raw
    expect_rows:
      description: The expected row count, as given.
      type: int
    compare:
      description: The comparison.
      type: str
    actual:
      description: First column of the first row as text (null for no row or NULL).
      type: str
    rows:
      description: Number of rows returned (null when the statement failed).
      type: int
    ok:
      description: Whether the check passed.
      type: bool
    error:
      description: The error of a statement that failed to run.
      type: str
      returned: when the statement failed
    message:
      description: Why the check failed.
      type: str
      returned: when the check failed
    seconds:
      description: Duration of the check.
      type: float
  sample:
    - name: an administrator exists
      sql: SELECT count(*) FROM authentik_core_user WHERE is_superuser
      expect: 1
      expect_rows: null
      compare: ge
      actual: "2"
      rows: 1
      ok: true
      seconds: 0.041
failed_checks:
  description: Number of checks that failed or could not run.
  returned: always
  type: int
  sample: 0
passed_checks:
  description: Number of checks that passed.
  returned: always
  type: int
  sample: 4
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._postgres import sql_checks as _sql_checks
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.check import run_postgres_check
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    DATABASE_MUTUALLY_EXCLUSIVE,
    DATABASE_REQUIRED_ONE_OF,
    database_argument_spec,
)


def main():
    argument_spec = dict(
        checks=dict(type='list', elements='dict', default=[], options=dict(
            name=dict(type='str', required=True),
            sql=dict(type='str', required=True),
            expect=dict(type='raw'),
            compare=dict(type='str', choices=list(_sql_checks.COMPARES), default='eq'),
            expect_rows=dict(type='int'),
        )),
        fail_on_failure=dict(type='bool', default=True),
        refuse_targets=dict(type='list', elements='str', default=[]),
        must_connect=dict(type='bool', default=True),
        maintenance_database=dict(type='str', default='postgres'),
        statement_timeout=dict(type='int', default=300),
    )
    argument_spec.update(database_argument_spec(user='postgres', database=None))
    argument_spec['database'] = dict(type='str', required=True)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=DATABASE_MUTUALLY_EXCLUSIVE,
                           required_one_of=DATABASE_REQUIRED_ONE_OF)
    run_module(module, run_postgres_check)


if __name__ == '__main__':
    main()
