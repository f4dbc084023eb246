# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the engine of the pgbackrest_setup module - the configuration file where the
server runs, continuous archiving through pgBackRest (ALTER SYSTEM), and the restart a changed archive_mode needs."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import quote_ident, quote_literal
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.config import archive_command, ca_files, config_from_params, log_path
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.hosts import PgBackRest, host_from_params, server_database

SETTINGS_SQL = ("SELECT json_build_object('data_directory', current_setting('data_directory'), "
                "'server_version_num', current_setting('server_version_num')::int, "
                "'settings', (SELECT json_object_agg(name, setting) FROM pg_settings WHERE name = ANY(%s)), "
                "'pending', (SELECT coalesce(json_agg(name), '[]'::json) FROM pg_settings WHERE pending_restart))")


def setting_text(value):
    """A server setting's value as ALTER SYSTEM takes it (booleans as on/off)."""
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return str(value)


def same_unit_value(have, want):
    """'60s' wanted, '60' reported (pg_settings.setting is in the setting's base unit)."""
    if have is None:
        return False
    return want.rstrip('s') == have and want.endswith('s') and have.isdigit()


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


def run_pgbackrest_setup(module):
    """The pgbackrest_setup module's result for module.params."""
    params = module.params
    host, engine = host_from_params(params)
    db = server_database(host, params['os_user'], params['pg_user'], params['pg_port'])
    wanted = {}
    if params['archiving']:
        wanted['archive_mode'] = 'on'
        wanted['archive_command'] = archive_command(params['stanza'], params['config_path'])
    for key, value in sorted((params['archive_settings'] or {}).items()):
        wanted[str(key)] = setting_text(value)
    names = 'ARRAY[%s]::text[]' % ', '.join(quote_literal(k) for k in sorted(wanted) or ['archive_mode'])
    with db.session() as session:
        facts = session.query_json(SETTINGS_SQL % names)
    pg_path = params['pg_path'] or facts['data_directory']
    text = config_from_params(params, pg_path)
    ca = ca_files(params)
    backrest = PgBackRest(host, params['stanza'], params['os_user'], params['config_path'])
    current = dict((path, host.read_file(path)) for path in list(ca) + [params['config_path']])
    config_changed = any(current[path] != data for path, data in list(ca.items()) + [(params['config_path'], text)])
    have = facts.get('settings') or {}
    # archive_mode reads back as "on"; a setting the server normalises (60s -> 60) compares on its raw value
    changed_settings = [k for k in sorted(wanted) if have.get(k) != wanted[k] and
                        not same_unit_value(have.get(k), wanted[k])]
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
    host.ensure_dir(log_path(params['options']), params['os_user'], 0o750)
    if changed_settings:
        with db.session() as session:
            for key in changed_settings:
                session.query('ALTER SYSTEM SET %s = %s' % (quote_ident(key), quote_literal(wanted[key])))
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
