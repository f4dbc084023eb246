#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: postgres_dump
short_description: Back up one PostgreSQL database into an open backup set
version_added: 0.1.0
description:
  - Writes the dump of one PostgreSQL database (any application's) into an open backup set (see
    M(idp.recovery.backup_set)); finalize the set afterwards with O(idp.recovery.backup_set#module:state=finalized).
  - "The whole database (every schema) as one C(pg_dump) of a REPEATABLE READ snapshot, streamed through the
    compressor and the encryption into the set. Nothing is held in memory and no plaintext touches the disk."
  - The exact row count of every table is taken in the same snapshot as the dump and recorded in the set's
    metadata under C(postgres.database), with the PostgreSQL server version, the encoding, the owner, the schemas
    and the database size.
  - "A dump is refused (the task fails and the set cannot be finalized with it) when C(pg_dump) exits non-zero,
    reports an error, produces nothing or a truncated stream, or when C(pg_restore --list) cannot read it."
  - For Authentik use M(idp.recovery.authentik_dump), which also checks that the database is Authentik's and
    records its version, and captures its files and C(.env).
  - Idempotent within one set - a set that already holds a database dump keeps it unless O(force=true).
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.postgres
  - idp.recovery.docker
  - idp.recovery.postgres.DUMP
  - idp.recovery.encryption.ENCRYPT
attributes:
  check_mode:
    support: full
    details: Connects, imports O(snapshot) when given, reports the server version and database size, and writes
      nothing.
  diff_mode:
    support: none
options:
  set_dir:
    description:
      - The open backup set to write into (created with O(idp.recovery.backup_set#module:state=present)).
    type: path
    required: true
  user:
    description:
      - Database role to connect as. It needs to read every table (the database owner does).
    type: str
    default: postgres
  database:
    description:
      - The database to dump.
    type: str
    required: true
  format:
    description:
      - V(custom) is C(pg_dump --format=custom) (restores in parallel, checkable with C(pg_restore --list)).
      - V(plain) is SQL text, restored with C(psql) in one transaction.
    type: str
    choices: [custom, plain]
    default: custom
  compression:
    description:
      - Compression in the pipeline, before encryption. C(pg_dump)'s own compression is never used.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description:
      - Level for O(compression) (zstd 1-19, default 1; gzip 1-9, default 6).
      - The zstd default is 1 because on a small server the dump shares the CPU with the server's COPY.
        On the benchmark's Authentik-shaped database of 303 MiB (custom-format dump of 245 MiB, mostly
        repetitive JSON), zstd used 0.53 s of CPU at level 1 against 0.88 s at level 3 and the payload was
        36.5 MB against 39.3 MB; on less repetitive data level 1 usually compresses less well than level 3.
        Set 3 (or higher) to trade CPU for a smaller payload.
    type: int
  passphrase:
    description:
      - Passphrase with O(encryption=passphrase).
    type: str
  gpg_homedir:
    description:
      - GnuPG home with O(encryption=gpg).
    type: path
  force:
    description:
      - Dump the database again even when the set already holds a database dump.
    type: bool
    default: false
notes:
  - Run the module on the Docker host (O(container)) or on a host with PostgreSQL client tools (O(host)).
  - The payload is C(database.pgdump) (custom) or C(database.sql) (plain), with C(.zst)/C(.gz) and C(.age)/C(.gpg)
    suffixes for the compression and encryption, readable with stock tools (C(age -d | zstd -d | pg_restore)).
seealso:
  - module: idp.recovery.backup_set
  - module: idp.recovery.authentik_dump
'''

EXAMPLES = r'''
- name: Open a backup set
  idp.recovery.backup_set:
    root: /var/backups/idp
    service: billing-db
    kind: postgres
    state: present
  register: backup

- name: Dump the database from its container
  idp.recovery.postgres_dump:
    set_dir: "{{ backup.path }}"
    container: billing-postgres
    user: billing
    database: billing
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Dump over TCP as plain SQL
  idp.recovery.postgres_dump:
    set_dir: "{{ backup.path }}"
    host: db.internal
    user: backup
    password: "{{ vault_backup_pg_pass }}"
    database: billing
    format: plain
    recipients_file: /etc/idp-recovery/recipients.txt

- name: Finalize the set
  idp.recovery.backup_set:
    path: "{{ backup.path }}"
    state: finalized

# A process that holds "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT pg_export_snapshot();" open in
# database billing (and reads other data in the same transaction) passes the snapshot it got.
- name: Dump the instant another reader sees
  idp.recovery.postgres_dump:
    set_dir: "{{ coordinated_backup.path }}"
    container: billing-postgres
    user: billing
    database: billing
    snapshot: "{{ billing_snapshot }}"
    recipients_file: /etc/idp-recovery/recipients.txt
'''

RETURN = r'''
set_dir:
  description: The backup set written into.
  returned: always
  type: str
database:
  description: The database dump.
  returned: always
  type: dict
  contains:
    payload:
      description: Path of the payload inside the set.
      type: str
    changed:
      description: Whether a dump was written by this run.
      type: bool
    format:
      description: C(custom) or C(plain).
      type: str
    size:
      description: Bytes of the encrypted payload (not in check mode).
      type: int
    dump_bytes:
      description: Bytes C(pg_dump) produced (not in check mode).
      type: int
    seconds:
      description: Duration of the dump (not in check mode).
      type: float
    stage_seconds:
      description: Wall seconds of the dump's stages when this run dumped (not recorded in the set), with the keys
        described under C(database.stage_seconds) of M(idp.recovery.authentik_dump).
      type: dict
      returned: when the database was dumped
    tables:
      description: Number of tables counted in the snapshot (not in check mode).
      type: int
    rows_total:
      description: Sum of the exact row counts (not in check mode).
      type: int
    snapshot:
      description: The snapshot the dump and the row counts are of (O(snapshot) when given, else the one the module
        exported); also recorded in the metadata with C(snapshot_given).
      type: str
    server_version:
      description: PostgreSQL server version.
      type: str
    database_size:
      description: Size of the database on the server, in bytes.
      type: int
  sample:
    payload: database.pgdump.zst.age
    changed: true
    format: custom
    size: 48211
    dump_bytes: 1210312
    seconds: 0.81
    tables: 12
    rows_total: 13021
    snapshot: 00000004-0000002A-1
    server_version: "15.18"
    database_size: 9123456
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._postgres.payload import database_step, dump_compression, open_set
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    check_encryption_allowed,
    encrypt_argument_spec,
    encrypt_stages,
    encryption_backend,
)
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    DATABASE_MUTUALLY_EXCLUSIVE,
    DATABASE_REQUIRED_ONE_OF,
    database_argument_spec,
    database_from_params,
)

SECTION = 'postgres'


def run(module):
    params = module.params
    set_dir = os.path.abspath(params['set_dir'])
    encryption = params['encryption'] or 'age'
    check_encryption_allowed(encryption, params['allow_unencrypted'])
    backend = encryption_backend(encryption, recipients=params['recipients'], recipients_file=params['recipients_file'],
                                 passphrase=params['passphrase'], gpg_homedir=params['gpg_homedir'])
    compressor = dump_compression(params['compression'], params['compression_level'])
    # keys and levels are validated before anything is read or written
    encrypt_stages(compressor, backend)
    open_set(set_dir)
    db, _engine = database_from_params(params)
    result = {'changed': False, 'set_dir': set_dir}

    result['database'], _metadata = database_step(
        db, set_dir, params['format'], backend, compressor, force=params['force'], check_mode=module.check_mode,
        section=SECTION, snapshot=params['snapshot'])
    result['changed'] = result['database']['changed']
    return result


def main():
    argument_spec = dict(
        set_dir=dict(type='path', required=True),
        format=dict(type='str', choices=['custom', 'plain'], default='custom'),
        compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
        compression_level=dict(type='int'),
        passphrase=dict(type='str', no_log=True),
        gpg_homedir=dict(type='path'),
        force=dict(type='bool', default=False),
        snapshot=dict(type='str'),
    )
    argument_spec.update(database_argument_spec(user='postgres', database=None))
    argument_spec['database'] = dict(type='str', required=True)
    argument_spec.update(encrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=DATABASE_MUTUALLY_EXCLUSIVE,
                           required_one_of=DATABASE_REQUIRED_ONE_OF)
    run_module(module, run)


if __name__ == '__main__':
    main()
