# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""postgres_dump against a real PostgreSQL container: a generic (non-Authentik) database with
two schemas is dumped into a set, the set is finalized and read back with stock tools, and the
recorded row counts are compared with the database's own."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

import authentik_support as ak

PREFIX = 'idp-test-pgdump-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'pgdump-%s' % uuid.uuid4().hex[:8]
DATABASE = 'billing'
SCHEMA = """
CREATE TABLE public.customer (id serial PRIMARY KEY, name text NOT NULL);
CREATE SCHEMA ledger;
CREATE TABLE ledger.entry (id bigserial PRIMARY KEY, customer integer REFERENCES public.customer(id), cents bigint);
INSERT INTO public.customer (name) SELECT 'customer ' || n FROM generate_series(1, 250) AS n;
INSERT INTO ledger.entry (customer, cents) SELECT 1 + n % 250, n * 7 FROM generate_series(1, 1200) AS n;
"""


@pytest.fixture(scope='module')
def postgres():
    name = PREFIX + '-postgres'
    ak.run_postgres(name, PASSWORD)
    try:
        subprocess.run(['docker', 'exec', name, 'createdb', '-U', ak.DB_USER, DATABASE], check=True, capture_output=True)
        ak.psql(name, SCHEMA, database=DATABASE)
        yield name
    finally:
        ak.remove_containers(name)


def _open(run_module, root, service='billing'):
    opened = run_module('backup_set', root=str(root), service=service, kind='postgres', state='present')
    assert opened.get('failed') is not True, opened
    return opened['path']


def _dump(run_module, set_dir, postgres, keys, check_mode=False, **extra):
    args = dict(set_dir=set_dir, container=postgres, user=ak.DB_USER, database=DATABASE,
                recipients=[keys.age_recipient])
    args.update(extra)
    return run_module('postgres_dump', check_mode=check_mode, **args)


def test_dump_records_exact_counts_and_restores_with_stock_tools(run_module, postgres, keys, tmp_path):
    set_dir = _open(run_module, tmp_path / 'backups')

    planned = _dump(run_module, set_dir, postgres, keys, check_mode=True)
    assert planned['changed'] is True
    assert planned['database']['payload'] == 'database.pgdump.zst.age'
    assert planned['database']['server_version']
    assert not [p.name for p in (tmp_path / 'backups' / 'billing').glob('*/database.*')], 'check mode wrote a payload'

    dumped = _dump(run_module, set_dir, postgres, keys)
    assert dumped['changed'] is True, dumped
    database = dumped['database']
    assert database['tables'] == 2
    assert database['rows_total'] == 250 + 1200
    assert database['size'] > 0

    again = _dump(run_module, set_dir, postgres, keys)
    assert again['changed'] is False
    assert again['database']['rows_total'] == 1450

    finalized = run_module('backup_set', path=set_dir, state='finalized')
    assert finalized.get('failed') is not True, finalized
    metadata = json.loads(open(set_dir + '/metadata.json', encoding='utf-8').read())
    assert 'authentik' not in metadata
    recorded = metadata['postgres']['database']
    assert recorded['tables'] == ak.table_counts(postgres, database=DATABASE)
    assert recorded['tables'] == {'public.customer': 250, 'ledger.entry': 1200}
    assert sorted(recorded['schemas']) == ['ledger', 'public']
    assert recorded['name'] == DATABASE

    verified = run_module('backup_set', path=set_dir, state='verified', identity=str(keys.age_identity), decrypt='always')
    assert verified['complete'] and not [f for f in verified['files'] if not f['ok']], verified

    listing = subprocess.run(
        ['bash', '-euo', 'pipefail', '-c',
         'age -d -i "$1" "$2" | zstd -dc | docker exec -i "$3" sh -c "pg_restore --list && cat > /dev/null"',
         'bash', str(keys.age_identity), set_dir + '/database.pgdump.zst.age', postgres],
        capture_output=True, text=True, check=True).stdout
    assert ' TABLE DATA ledger entry ' in listing
    assert ' TABLE DATA public customer ' in listing


def test_plain_format_with_gzip(run_module, postgres, keys, tmp_path):
    set_dir = _open(run_module, tmp_path / 'backups')
    dumped = _dump(run_module, set_dir, postgres, keys, format='plain', compression='gzip')
    assert dumped['database']['payload'] == 'database.sql.gz.age'
    sql = subprocess.run(['bash', '-euo', 'pipefail', '-c', 'age -d -i "$1" "$2" | gzip -dc', 'bash',
                          str(keys.age_identity), set_dir + '/database.sql.gz.age'],
                         capture_output=True, text=True, check=True).stdout
    assert 'CREATE TABLE ledger.entry' in sql


def test_a_missing_database_fails_and_the_set_cannot_be_finalized(run_module, postgres, keys, tmp_path):
    set_dir = _open(run_module, tmp_path / 'backups')
    failed = _dump(run_module, set_dir, postgres, keys, database='no_such_database')
    assert failed['failed'] is True
    assert 'no_such_database' in failed['msg']
    finalized = run_module('backup_set', path=set_dir, state='finalized')
    assert finalized.get('failed') is True, finalized


def test_a_finalized_set_is_refused(run_module, postgres, keys, tmp_path):
    set_dir = _open(run_module, tmp_path / 'backups')
    assert run_module('backup_set', path=set_dir, state='finalized').get('failed') is not True
    refused = _dump(run_module, set_dir, postgres, keys)
    assert refused['failed'] is True
    assert 'already finalized' in refused['msg']


def test_plaintext_is_refused_without_allow_unencrypted(run_module, postgres, tmp_path):
    set_dir = _open(run_module, tmp_path / 'backups')
    refused = run_module('postgres_dump', set_dir=set_dir, container=postgres, user=ak.DB_USER, database=DATABASE,
                         encryption='none')
    assert refused['failed'] is True
    assert 'allow_unencrypted' in refused['msg']
