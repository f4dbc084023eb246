#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pgbackrest_setup
short_description: Configure pgBackRest and continuous WAL archiving for a PostgreSQL server
version_added: 0.1.0
description:
  - Writes the pgBackRest configuration file (repositories, encryption, retention, the stanza's server) where the
    server runs, with mode 0640 owned by O(os_user), and the CA files of O(repos[].storage_ca).
  - With O(archiving), sets C(archive_mode=on) and C(archive_command=pgbackrest --stanza=STANZA archive-push %p)
    with C(ALTER SYSTEM) and reloads the server. A changed C(archive_mode) needs a restart - for a server in
    O(container) the module restarts the container through the Docker engine API (the server shuts down fast and
    comes back; clients are disconnected) and waits until it answers again; for a server on this host it runs
    O(restart_command), or reports RV(restart_required) when none is given.
  - It does not create the stanza or take backups (M(idp.recovery.pgbackrest) does).
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
    details: Reads the current configuration and settings and reports what would change.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  archiving:
    description:
      - Turn on continuous archiving through pgBackRest (C(archive_mode), C(archive_command)).
    type: bool
    default: true
  archive_settings:
    description:
      - "More server settings set with C(ALTER SYSTEM) together with the archiving ones, for example
        C({archive_timeout: 60s}) so that a quiet server still archives a segment a minute."
    type: dict
    default: {}
  restart_command:
    description:
      - "For a server on this host, the command (one argument per element) that restarts it when C(archive_mode)
        changed, for example C([systemctl, restart, postgresql@15-main])."
    type: list
    elements: str
    default: []
  ready_timeout:
    description: Seconds to wait for the server after a restart.
    type: int
    default: 120
'''

EXAMPLES = r'''
- name: Archive the authentik database's WAL to S3 with pgBackRest
  idp.recovery.pgbackrest_setup:
    stanza: authentik
    container: authentik-postgres
    pg_user: authentik
    repos:
      - type: s3
        path: /pgbackrest
        s3_bucket: idp-wal
        s3_endpoint: s3.example.net
        s3_key: "{{ vault_s3_key }}"
        s3_key_secret: "{{ vault_s3_secret }}"
        s3_uri_style: path
        cipher_pass: "{{ vault_pgbackrest_cipher_pass }}"
        retention_full: 4
    options:
      start-fast: true
      compress-type: zst
'''

RETURN = r'''
config_path:
  description: The configuration file.
  returned: always
  type: str
  sample: /etc/pgbackrest/pgbackrest.conf
config_changed:
  description: Whether the configuration file or a CA file was (or would be) written.
  returned: always
  type: bool
pg_path:
  description: The data directory written into the configuration.
  returned: always
  type: str
  sample: /var/lib/postgresql/data
archive_command:
  description: The archive_command set on the server.
  returned: when O(archiving)
  type: str
  sample: pgbackrest --stanza=authentik archive-push %p
settings_changed:
  description: Server settings changed (or to change) with C(ALTER SYSTEM).
  returned: always
  type: list
  elements: str
  sample: [archive_mode, archive_command]
restart_required:
  description: Whether C(archive_mode) changed and the server still needs a restart (no restart was possible).
  returned: always
  type: bool
restarted:
  description: Whether the server was restarted.
  returned: always
  type: bool
server_version_num:
  description: The server's C(server_version_num).
  returned: always
  type: int
  sample: 150010
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import setup
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import config_argument_spec, server_argument_spec


def main():
    argument_spec = server_argument_spec()
    argument_spec.update(config_argument_spec())
    argument_spec.update(
        archiving=dict(type='bool', default=True),
        archive_settings=dict(type='dict', default={}),
        restart_command=dict(type='list', elements='str', default=[]),
        ready_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, setup.run_pgbackrest_setup)


if __name__ == '__main__':
    main()
