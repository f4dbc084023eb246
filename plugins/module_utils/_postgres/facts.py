# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: what a PostgreSQL server says about a database.

Its server facts (version, size, encoding, owner, schemas), the exact row count of every table,
the comparison of two sets of counts, and whether a database or a role exists.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import quote_literal

# every ordinary and partitioned table outside the system schemas, with its exact row count
COUNT_ROWS_SQL = r"""
SELECT coalesce(json_object_agg(t.name, t.n ORDER BY t.name), '{}'::json) FROM (
  SELECT format('%s.%s', n.nspname, c.relname) AS name,
         (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),
                                             false, true, '')))[1]::text::bigint AS n
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
) t
"""

SERVER_SQL = r"""
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'database_size', pg_database_size(current_database()),
  'encoding', pg_encoding_to_char(d.encoding),
  'owner', pg_get_userbyid(d.datdba),
  'schemas', (SELECT coalesce(json_agg(nspname ORDER BY nspname), '[]'::json) FROM pg_namespace
               WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%'
                 AND nspname NOT LIKE 'pg\_temp\_%'))
FROM pg_database d WHERE d.datname = current_database()
"""


def database_exists(db, name):
    out = db.run_sql('SELECT 1 FROM pg_database WHERE datname = %s' % quote_literal(name), database='postgres')
    return out.strip() == '1'


def count_rows(db):
    with db.session() as session:
        return session.query_json(COUNT_ROWS_SQL) or {}


def server_facts(db):
    with db.session() as session:
        return session.query_json(SERVER_SQL) or {}


def compare_counts(expected, actual):
    """Tables whose row count differs: [{table, expected, actual}] (a missing table has actual None)."""
    problems = []
    for table in sorted(expected):
        got = actual.get(table)
        if got != expected[table]:
            problems.append({'table': table, 'expected': expected[table], 'actual': got})
    for table in sorted(set(actual) - set(expected)):
        if actual[table]:
            problems.append({'table': table, 'expected': None, 'actual': actual[table]})
    return problems


def role_exists(db, role):
    """Whether a role of that name exists on the server of db."""
    out = db.run_sql('SELECT 1 FROM pg_roles WHERE rolname = %s' % quote_literal(role), database='postgres')
    return out.strip() == '1'
