# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the engine of the pgbackrest module - one pgBackRest operation for a stanza
(info, stanza-create, check, backup, verify, expire) or a restore point, with the stanza's state afterwards."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import quote_literal
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.hosts import PgBackRest, host_from_params, server_database
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest.target import target_args

COMMANDS = ('info', 'stanza-create', 'check', 'backup', 'verify', 'expire', 'restore-point')
BACKUP_TYPES = ('full', 'diff', 'incr')
MISSING_STANZA = (1, 3)
POINT_SQL = ("SELECT json_build_object('lsn', p::text, 'wal_segment', pg_walfile_name(p), "
             "'time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) "
             "FROM pg_create_restore_point(%s) AS p")
ARCHIVER_SQL = "SELECT coalesce(last_archived_wal, '') || '|' || failed_count FROM pg_stat_archiver"


def restore_point(params, host):
    """Record the restore point params['restore_point'] and wait until its WAL segment is archived:
    (the point, seconds)."""
    name = params['restore_point']
    target_args('name', name)
    db = server_database(host, params['os_user'], params['pg_user'], params['pg_port'])
    started = time.monotonic()
    with db.session() as session:
        point = session.query_json(POINT_SQL % quote_literal(name))
        session.query('SELECT pg_switch_wal()')
        deadline = time.monotonic() + params['archive_timeout']
        archived = False
        while True:
            last, _sep, failed = session.query(ARCHIVER_SQL).strip().partition('|')
            # same timeline: segment names order like their positions
            if last and last[8:] >= point['wal_segment'][8:] and last[:8] >= point['wal_segment'][:8]:
                archived = True
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    point['name'] = name
    point['archived'] = archived
    if not archived:
        raise RecoveryError('restore point %s was recorded at %s, but its WAL segment %s was not archived within %s s '
                            '(last archived: %s, failed attempts: %s): a restore cannot reach it until archiving works'
                            % (name, point['lsn'], point['wal_segment'], params['archive_timeout'], last or 'none',
                               failed), restore_point=point)
    return point, round(time.monotonic() - started, 3)


def run_pgbackrest(module):
    """The pgbackrest module's result for module.params."""
    params = module.params
    host, _engine = host_from_params(params)
    backrest = PgBackRest(host, params['stanza'], params['os_user'], params['config_path'])
    command = params['command']
    result = {'command': command, 'seconds': None, 'changed': False}
    if command == 'restore-point' and not params['restore_point']:
        raise RecoveryError('command restore-point needs restore_point (its name)')
    if command == 'info':
        result['info'] = backrest.info()
        return result
    if command == 'stanza-create':
        before = backrest.info_or_none()
        if before is not None and before['status_code'] not in MISSING_STANZA:
            result['info'] = before
            return result
    if module.check_mode:
        result['changed'] = command not in ('check', 'verify')
        result['info'] = backrest.info_or_none()
        return result
    if command == 'restore-point':
        result['restore_point'], result['seconds'] = restore_point(params, host)
        result['changed'] = True
        result['info'] = backrest.info()
        return result
    args = []
    if command == 'backup':
        args.append('--type=%s' % params['backup_type'])
        before = set(b['label'] for b in (backrest.info_or_none() or {}).get('backups') or [])
    _out, _err, result['seconds'] = backrest.run(command, *args)
    result['info'] = backrest.info()
    result['changed'] = command in ('stanza-create', 'backup', 'expire')
    if command == 'backup':
        new = [b['label'] for b in result['info']['backups'] if b['label'] not in before]
        if not new:
            raise RecoveryError('pgbackrest backup ended without error, but info shows no new backup', info=result['info'])
        result['backup_label'] = new[-1]
    return result
