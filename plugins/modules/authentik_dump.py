#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: authentik_dump
short_description: Back up Authentik (database, files, .env) into an open backup set
version_added: 0.1.0
description:
  - Writes the payloads of an Authentik backup into an open backup set (see M(idp.recovery.backup_set)); finalize
    the set afterwards with O(idp.recovery.backup_set#module:state=finalized).
  - "Database: the whole database (every schema: tenants live in schemas of their own) as one C(pg_dump) of a
    REPEATABLE READ snapshot, streamed through C(zstd) and the encryption into the set. Nothing is held in memory
    and no plaintext touches the disk."
  - The exact row count of every table is taken in the same snapshot as the dump and recorded in the set's
    metadata, with the Authentik version (C(authentik_version_history)), the newest C(django_migrations) entry per
    app, the PostgreSQL server version and the database size. A restore compares them table by table.
  - "A dump is refused (the task fails and the set cannot be finalized with it) when C(pg_dump) exits non-zero,
    reports an error, produces nothing or a truncated stream, or when C(pg_restore --list) cannot read it or finds
    no data for C(authentik_core_user)."
  - "Files: the data/media, custom templates, certificates and blueprints directories, each as an encrypted tar
    payload under C(files/). A missing optional directory is recorded as C(files/NAME.skip); a missing required
    one fails the task."
  - The C(.env) (secret key, database password) is captured only encrypted and never returned or logged.
  - Idempotent within one set - a set that already holds a database dump keeps it unless O(force=true);
    file payloads are rewritten only when their content changed.
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
    details: Reports what would be dumped (database facts, files found and missing), imports O(snapshot) when given,
      and writes nothing.
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
      - Database role to connect as.
    type: str
    default: authentik
  database:
    description:
      - Authentik's database.
    type: str
    default: authentik
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
      - Level for O(compression) (zstd 1-19, default 1; gzip 1-9, default 6). The level applies to the database
        dump and the file archives; when it is not given, the file archives use zstd's archive default 3.
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
  compose_dir:
    description:
      - The Authentik deployment directory (where C(docker-compose.yml) and C(.env) live). Gives the default
        O(files) (V(data), V(media), V(custom-templates), V(certs), V(blueprints) below it) and O(env_file)
        (C(.env) in it).
    type: path
  files:
    description:
      - Directories to capture, each an encrypted tar payload C(files/NAME.tar...).
      - Defaults to the directories of O(compose_dir), else to the mounts of O(files_container) at C(/data),
        C(/media), C(/templates), C(/certs) and C(/blueprints), else nothing.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the payload (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      path:
        description: Directory on the host. One of O(files[].path) and O(files[].container_path) is required.
        type: path
      container_path:
        description: Directory inside O(files_container), resolved to the host through that container's mounts.
        type: str
      required:
        description: Fail when the directory is missing (instead of writing a C(NAME.skip) marker).
        type: bool
        default: false
  files_container:
    description:
      - Container whose mounts resolve O(files[].container_path), for example C(authentik-worker).
    type: str
  env_file:
    description:
      - The C(.env) to capture, encrypted (refused with O(encryption=none)). Defaults to C(.env) in O(compose_dir)
        when that file exists.
    type: path
  force:
    description:
      - Dump the database again even when the set already holds a database dump.
    type: bool
    default: false
notes:
  - Run the module on the Docker host (O(container)) or on a host with PostgreSQL client tools (O(host)).
  - The role needs to read every table (the Authentik database owner does).
seealso:
  - module: idp.recovery.authentik_restore
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Open a backup set
  idp.recovery.backup_set:
    root: /var/backups/idp
    service: authentik
    state: present
  register: backup

- name: Dump Authentik from its containers
  idp.recovery.authentik_dump:
    set_dir: "{{ backup.path }}"
    container: authentik-postgres
    compose_dir: /opt/authentik
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Dump over TCP, with the files behind the worker's mounts
  idp.recovery.authentik_dump:
    set_dir: "{{ backup.path }}"
    host: db.internal
    password: "{{ vault_authentik_pg_pass }}"
    files_container: authentik-worker
    files:
      - name: data
        container_path: /data
        required: true
      - name: custom-templates
        container_path: /templates
    recipients_file: /etc/idp-recovery/recipients.txt

- name: Finalize the set
  idp.recovery.backup_set:
    path: "{{ backup.path }}"
    state: finalized
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
      description: Bytes of the encrypted payload.
      type: int
    dump_bytes:
      description: Bytes C(pg_dump) produced.
      type: int
    seconds:
      description: Duration of the dump.
      type: float
    stage_seconds:
      description:
        - Wall seconds of the dump's stages, when this run dumped; not recorded in the set.
        - C(snapshot_facts) the session, its snapshot and the facts; C(pg_dump) pg_dump from its start to its exit
          (the row counts, compression and encryption run alongside); C(list_check_wait) the wait for the
          C(pg_restore --list) check after pg_dump's end; C(drain_fsync) the rest of writing the payload (the
          compressor's and encryptor's tail, fsync, rename); C(counts_wait) the wait for the row counts after that;
          C(counts_wall) from the count query's start to its answer (an upper bound of its time).
      type: dict
      returned: when the database was dumped
    tables:
      description: Number of tables counted in the snapshot.
      type: int
    rows_total:
      description: Sum of the exact row counts.
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
authentik_version:
  description:
    - The newest entry of C(authentik_version_history) (version, build, timestamp), or null.
    - The newest is the one with the latest C(timestamp); of entries with the same timestamp, the one with the highest C(id).
  returned: always
  type: dict
  sample: {version: 2025.10.1, build: abc123, timestamp: "2025-11-02T10:11:12+00:00"}
files:
  description: Per directory name, the payload written (C(payload), C(changed), C(files)) or the skip (C(skipped), C(reason)).
  returned: always
  type: dict
  sample: {media: {payload: files/media.tar.zst.age, changed: true, files: 12}, certs: {skipped: true, reason: /opt/authentik/certs does not exist}}
env:
  description: The C(.env) payload (C(payload), C(changed)); never its content.
  returned: when an env_file was captured
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._authentik.dump import dump_authentik
from ansible_collections.idp.recovery.plugins.module_utils._crypto import encrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    DATABASE_MUTUALLY_EXCLUSIVE,
    DATABASE_REQUIRED_ONE_OF,
    database_argument_spec,
)


def main():
    argument_spec = dict(
        set_dir=dict(type='path', required=True),
        format=dict(type='str', choices=['custom', 'plain'], default='custom'),
        compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
        compression_level=dict(type='int'),
        passphrase=dict(type='str', no_log=True),
        gpg_homedir=dict(type='path'),
        compose_dir=dict(type='path'),
        files=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True),
            path=dict(type='path'),
            container_path=dict(type='str'),
            required=dict(type='bool', default=False),
        )),
        files_container=dict(type='str'),
        env_file=dict(type='path'),
        force=dict(type='bool', default=False),
        snapshot=dict(type='str'),
    )
    argument_spec.update(database_argument_spec(user='authentik', database='authentik'))
    argument_spec.update(encrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=DATABASE_MUTUALLY_EXCLUSIVE,
                           required_one_of=DATABASE_REQUIRED_ONE_OF)
    run_module(module, lambda m: dump_authentik(m.params, check_mode=m.check_mode))


if __name__ == '__main__':
    main()
