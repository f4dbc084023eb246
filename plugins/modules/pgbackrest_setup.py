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

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _pgbackrest, _postgres
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module

SETTINGS_SQL = ("SELECT json_build_object('data_directory', current_setting('data_directory'), "
                "'server_version_num', current_setting('server_version_num')::int, "
                "'settings', (SELECT json_object_agg(name, setting) FROM pg_settings WHERE name = ANY(%s)), "
                "'pending', (SELECT coalesce(json_agg(name), '[]'::json) FROM pg_settings WHERE pending_restart))")


def _setting_text(value):
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value)


def wait_ready(db, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            if db.run_sql('SELECT 1').strip() == '1':
                return
        except RecoveryError as exc:
            last = exc.msg
        if time.monotonic() > deadline:
            raise RecoveryError('the server did not answer within %s s after its restart (last: %s)' % (timeout, last))
        time.sleep(0.5)


def run(module):
    params = module.params
    host, engine = _pgbackrest.host_from_params(params)
    db = _pgbackrest.server_database(host, params['os_user'], params['pg_user'], params['pg_port'])
    wanted = {}
    if params['archiving']:
        wanted['archive_mode'] = 'on'
        wanted['archive_command'] = _pgbackrest.archive_command(params['stanza'], params['config_path'])
    for key, value in sorted((params['archive_settings'] or {}).items()):
        wanted[str(key)] = _setting_text(value)
    names = 'ARRAY[%s]::text[]' % ', '.join(_postgres.quote_literal(k) for k in sorted(wanted) or ['archive_mode'])
    with db.session() as session:
        facts = session.query_json(SETTINGS_SQL % names)
    pg_path = params['pg_path'] or facts['data_directory']
    text = _pgbackrest.config_from_params(params, pg_path)
    ca = _pgbackrest.ca_files(params)
    backrest = _pgbackrest.PgBackRest(host, params['stanza'], params['os_user'], params['config_path'])
    current = dict((path, host.read_file(path)) for path in list(ca) + [params['config_path']])
    config_changed = any(current[path] != data for path, data in list(ca.items()) + [(params['config_path'], text)])
    have = facts.get('settings') or {}
    # archive_mode reads back as "on"; a setting the server normalises (60s -> 60) compares on its raw value
    changed_settings = [k for k in sorted(wanted) if have.get(k) != wanted[k] and
                        not _same_unit_value(have.get(k), wanted[k])]
    pending = facts.get('pending') or []
    needs_restart = 'archive_mode' in changed_settings or 'archive_mode' in pending
    result = {'config_path': params['config_path'], 'config_changed': config_changed, 'pg_path': pg_path,
              'settings_changed': changed_settings, 'restart_required': False, 'restarted': False,
              'server_version_num': facts['server_version_num']}
    if params['archiving']:
        result['archive_command'] = wanted['archive_command']
    result['changed'] = bool(config_changed or changed_settings or needs_restart)
    if module.check_mode:
        result['restart_required'] = needs_restart
        return result
    if config_changed:
        backrest.write_config(text, ca)
    log_path = (params['options'] or {}).get('log-path') or _pgbackrest.LOG_PATH
    host.ensure_dir(str(log_path), params['os_user'], 0o750)
    if changed_settings:
        with db.session() as session:
            for key in changed_settings:
                session.query('ALTER SYSTEM SET %s = %s' % (_postgres.quote_ident(key), _postgres.quote_literal(wanted[key])))
            session.query('SELECT pg_reload_conf()')
    if needs_restart:
        if engine is not None:
            engine.stop(params['container'], timeout=60)
            engine.start(params['container'])
            wait_ready(db, params['ready_timeout'])
            result['restarted'] = True
        elif params['restart_command']:
            code, out, err = host.run(params['restart_command'])
            if code != 0:
                raise RecoveryError('restart_command failed (exit code %s): %s' % (code, err or out))
            wait_ready(db, params['ready_timeout'])
            result['restarted'] = True
        else:
            result['restart_required'] = True
            module.warn('archive_mode changed: restart the PostgreSQL server for it to take effect (or give restart_command)')
    return result


def _same_unit_value(have, want):
    """'60s' wanted, '60' reported (pg_settings.setting is in the setting's base unit)."""
    if have is None:
        return False
    return want.rstrip('s') == have and want.endswith('s') and have.isdigit()


def main():
    argument_spec = _pgbackrest.server_argument_spec()
    argument_spec.update(_pgbackrest.config_argument_spec())
    argument_spec.update(
        archiving=dict(type='bool', default=True),
        archive_settings=dict(type='dict', default={}),
        restart_command=dict(type='list', elements='str', default=[]),
        ready_timeout=dict(type='int', default=120),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
