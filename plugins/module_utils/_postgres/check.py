# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: read-only checks of a PostgreSQL database, behind a guard against live ones.

``guard`` resolves the target and every entry of ``refuse_targets`` (``_guard.locations`` compares locations)
and refuses a target that is one of them, before anything connects; ``run_postgres_check`` then
tests the connection or runs the SQL checks, each in a read-only transaction of its own session.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._guard import locations as _locations
from ansible_collections.idp.recovery.plugins.module_utils._postgres import sql_checks as _sql_checks
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import database_from_params, quote_literal


class Engines(object):
    """The Docker engine of the module's options, opened only when a container must be looked up."""

    def __init__(self, docker_host):
        self.docker_host = docker_host
        self.engine = None

    def get(self):
        if self.engine is None:
            self.engine = DockerEngine(self.docker_host)
        return self.engine

    def inspect(self, name):
        engine = self.get()
        return engine.inspect(name) if engine.exists(name) else None


def target_location(params):
    if params.get('container'):
        return _locations.Location('container', database=params['database'], container=params['container'],
                                   port=_locations.POSTGRES_PORT)
    return _locations.Location('tcp', database=params['database'], host=params['host'], port=params.get('port') or 5432)


def resolve(location, engines):
    if location.kind == 'container':
        return _locations.resolve_container(location, engines.inspect)
    return _locations.resolve_tcp(location)


def guard(params, engines):
    """The resolved target and refuse entries; RecoveryError when the target is one of them."""
    entries = [_locations.parse_location(text) for text in params['refuse_targets']]
    target = target_location(params)
    if target.kind == 'container':
        # the target must exist: a container that is not there cannot be compared
        info = engines.get().inspect(target.container)
        target.container_id = info.get('Id')
        target.addresses, target.endpoints = _locations.container_endpoints(info, _locations.is_local_address)
    else:
        resolve(target, engines)
    for entry in entries:
        resolve(entry, engines)
    found = _locations.refusal(target, entries)
    if found:
        entry, reason = found
        raise RecoveryError('refusing target %s: it is the live database %s listed in refuse_targets (%s)' % (
            target.where, entry.text, reason), target=target.describe(), refused=entry.text)
    checked = []
    for entry in entries:
        item = entry.describe()
        item['where'] = entry.text
        item['note'] = entry.note
        checked.append(item)
    return target, checked


def connect_only(params, engines, target):
    """SELECT 1 in the database; with must_connect false, the maintenance database when that fails."""
    described = target.describe()
    described['connected'] = None
    described['database_exists'] = None
    try:
        db, _engine = database_from_params(params, engines.get() if params.get('container') else None)
    except RecoveryError as exc:
        if params['must_connect']:
            raise RecoveryError('cannot connect to %s: %s' % (target.where, exc.msg), target=described)
        described.update(connected=False, connect_error=exc.msg)
        return described
    try:
        described['connected'] = db.run_sql('SELECT 1').strip() == '1'
        described['database_exists'] = True
        return described
    except RecoveryError as exc:
        if params['must_connect']:
            raise RecoveryError('cannot connect to %s: %s' % (target.where, exc.msg), target=described)
        described.update(connected=False, connect_error=exc.msg)
    try:
        out = db.run_sql('SELECT count(*) FROM pg_database WHERE datname = %s' % quote_literal(
            params['database']), database=params['maintenance_database'])
        described['database_exists'] = out.strip() == '1'
    except RecoveryError as exc:
        described['maintenance_error'] = exc.msg
    return described


def run_postgres_check(module):
    """The guard, then the checks, of idp.recovery.postgres_check; the module result."""
    params = module.params
    checks = _sql_checks.normalize_checks(params['checks'])
    engines = Engines(params.get('docker_host'))
    target, checked = guard(params, engines)
    result = {'changed': False, 'refuse_checked': checked, 'checks': [], 'failed_checks': 0, 'passed_checks': 0}
    if not checks:
        result['target'] = connect_only(params, engines, target)
        return result
    db, _engine = database_from_params(params, engines.get() if params.get('container') else None)
    described = target.describe()
    try:
        described['connected'] = db.run_sql('SELECT 1').strip() == '1'
    except RecoveryError as exc:
        raise RecoveryError('cannot connect to %s: %s' % (target.where, exc.msg), target=described,
                            refuse_checked=checked)
    results = [_sql_checks.run_check(db, check, params['statement_timeout']) for check in checks]
    result.update(target=described, checks=results, failed_checks=sum(1 for item in results if not item['ok']),
                  passed_checks=sum(1 for item in results if item['ok']))
    message = _sql_checks.checks_summary(results)
    if message:
        result['msg'] = message
        if params['fail_on_failure']:
            details = dict(result)
            details.pop('changed')
            details.pop('msg')
            raise RecoveryError(message, **details)
    return result
