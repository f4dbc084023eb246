# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: what Authentik's database tells about Authentik.

Authentik keeps its state in PostgreSQL (every schema: tenants get their own). A dump of an
Authentik database (``_postgres.payload.dump_database``) reads these facts in its snapshot: the
server's facts, and Authentik's version and migration heads.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.facts import SERVER_SQL

REQUIRED_TABLE = 'public.authentik_core_user'

# The newest row of authentik_version_history: Authentik writes one row per version and build it
# starts (lifecycle/system_migrations/version_history_update.py) into a table with a serial id
# (version_history_create.py); rows written in one transaction share their timestamp, and of those
# the one with the higher id was written last.
VERSION_SQL = r"""
SELECT json_build_object(
  'version', (SELECT json_build_object('version', version, 'build', build, 'timestamp', timestamp)
                FROM authentik_version_history ORDER BY timestamp DESC, id DESC LIMIT 1),
  'migrations', (SELECT coalesce(json_object_agg(app, head ORDER BY app), '{}'::json)
                   FROM (SELECT app, max(name) AS head FROM django_migrations GROUP BY app) m))
"""


def read_facts(snapshot, require_authentik=True):
    """Server and Authentik facts, read inside the dump's snapshot."""
    facts = snapshot.query_json(SERVER_SQL) or {}
    present = snapshot.query_json(
        "SELECT json_build_object('history', to_regclass('public.authentik_version_history') IS NOT NULL, "
        "'migrations', to_regclass('public.django_migrations') IS NOT NULL, "
        "'users', to_regclass('public.authentik_core_user') IS NOT NULL)") or {}
    if require_authentik and not present.get('users'):
        raise RecoveryError('database %s has no table authentik_core_user: this is not an Authentik database '
                            '(or the wrong database name)' % snapshot.db.where)
    authentik = {'version': None, 'migrations': {}}
    if present.get('history') and present.get('migrations'):
        authentik = snapshot.query_json(VERSION_SQL) or authentik
    return facts, authentik
