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
  - idp.recovery.docker
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import restore
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import config_argument_spec, server_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.target import TARGET_TYPES


def main():
    argument_spec = server_argument_spec()
    argument_spec.update(config_argument_spec())
    argument_spec.update(
        target_type=dict(type='str', choices=list(TARGET_TYPES), default='latest'),
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
    run_module(module, restore.run_pgbackrest_restore)


if __name__ == '__main__':
    main()
