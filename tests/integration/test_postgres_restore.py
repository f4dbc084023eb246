# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""postgres_restore against real PostgreSQL containers.

A generic database (its own owner role, two schemas) in PostgreSQL 15 is dumped with
postgres_dump and restored into PostgreSQL 17 with identical row counts; a restore over an
existing database takes a safety set that postgres_restore itself restores; a pg_restore killed
after the drop is answered by the rollback to the safety set; check mode changes nothing;
authentik_restore refuses a PostgreSQL set; the database of an Authentik set restores as a plain
database. The "app container" is a real container that is stopped and started around the restore.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import authentik_support as ak

PREFIX = 'idp-test-pgrestore-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'pgrestore-%s' % uuid.uuid4().hex[:8]
DATABASE = 'billing'
OWNER = 'billing'
IMAGE_17 = os.environ.get('IDP_POSTGRES_17_IMAGE', 'idp-recovery/postgres:17')
# large enough that pg_restore runs for a moment (the fault test kills it)
ENTRIES = 300000
SCHEMA = """
CREATE TABLE public.customer (id serial PRIMARY KEY, name text NOT NULL);
CREATE SCHEMA ledger;
CREATE TABLE ledger.entry (id bigserial PRIMARY KEY, customer integer REFERENCES public.customer(id), cents bigint,
                           memo text);
CREATE INDEX entry_customer ON ledger.entry (customer);
INSERT INTO public.customer (name) SELECT 'customer ' || n FROM generate_series(1, 250) AS n;
INSERT INTO ledger.entry (customer, cents, memo)
  SELECT 1 + n %% 250, n * 7, md5(n::text) || md5((n * 3)::text) FROM generate_series(1, %d) AS n;
""" % ENTRIES


def _docker(*argv, check=True):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check)


def _running(name):
    return _docker('inspect', '-f', '{{.State.Running}}', name).stdout.decode().strip() == 'true'


def _counts(container, database=DATABASE):
    return ak.table_counts(container, database=database, user='postgres')


def _sql(container, sql, database=DATABASE):
    return ak.psql(container, sql, database=database, user='postgres').strip()


def _run_target(name, image=IMAGE_17):
    """A PostgreSQL server whose superuser is postgres (the owner role of the source is not there)."""
    return ak.run_postgres(name, PASSWORD, image=image, user='postgres', database='postgres')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('pgrestore')


@pytest.fixture(scope='module')
def source():
    """PostgreSQL 15 with the database billing, owned (with all its objects) by the role billing."""
    name = PREFIX + '-pg15'
    _run_target(name, image=ak.POSTGRES_IMAGE)
    try:
        _sql(name, "CREATE ROLE %s LOGIN PASSWORD '%s'" % (OWNER, PASSWORD), database='postgres')
        _docker('exec', name, 'createdb', '-U', 'postgres', '-O', OWNER, DATABASE)
        ak.psql(name, SCHEMA, database=DATABASE, user=OWNER)
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def app():
    """A container that stands for an application using the database (stopped during a restore)."""
    name = PREFIX + '-app'
    _docker('run', '-d', '--name', name, ak.POSTGRES_IMAGE, 'sh', '-c',
            'trap "exit 0" TERM INT; while :; do sleep 0.2; done')
    try:
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture
def target():
    names = []

    def start(suffix='pg17', image=IMAGE_17):
        name = '%s-%s-%s' % (PREFIX, suffix, uuid.uuid4().hex[:4])
        names.append(name)
        return _run_target(name, image=image)
    yield start
    ak.remove_containers(*names)


@pytest.fixture(scope='module')
def backup(module_runner, source, keys, workdir):
    """A complete postgres set of the source database, and the source's counts."""
    opened = module_runner('backup_set', root=str(workdir / 'backups'), service='billing', kind='postgres',
                           state='present')
    assert opened.get('failed') is not True, opened
    dumped = module_runner('postgres_dump', set_dir=opened['path'], container=source, user='postgres',
                           database=DATABASE, recipients=[keys.age_recipient])
    assert dumped.get('failed') is not True, dumped
    finalized = module_runner('backup_set', path=opened['path'], state='finalized')
    assert finalized.get('failed') is not True, finalized
    counts = _counts(source)
    assert counts == {'public.customer': 250, 'ledger.entry': ENTRIES}
    return opened['path'], counts


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server calls
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'ok')

    def log_message(self, *args):
        pass


@pytest.fixture
def health_url():
    server = http.server.HTTPServer(('127.0.0.1', 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d/ready' % server.server_address[1]
    server.shutdown()
    server.server_close()


def _restore_args(set_dir, container, keys, **extra):
    args = dict(set_dir=set_dir, container=container, identity=str(keys.age_identity))
    args.update(extra)
    return args


def _safety_sets(set_dir):
    root = Path(set_dir).parents[1] / ('%s-pre-restore' % Path(set_dir).parent.name)
    return sorted(root.iterdir()) if root.is_dir() else []


def test_pg15_set_restores_into_pg17_with_identical_counts(run_module, backup, target, keys):
    set_dir, counts = backup
    new = target()

    planned = run_module('postgres_restore', check_mode=True, **_restore_args(set_dir, new, keys))
    assert planned.get('failed') is not True, planned
    assert planned['changed'] is True
    database = planned['plan']['database']
    assert database['name'] == DATABASE and database['recorded_name'] == DATABASE
    assert database['exists'] is False and database['drop'] is False
    assert database['owner'] == 'postgres'
    assert 'does not exist on the target' in database['owner_source']
    assert database['tables'] == 2 and database['rows'] == 250 + ENTRIES
    assert database['server_version'].startswith('15.')
    assert 'nothing to save' in planned['plan']['safety_set']
    assert 'version_gate' not in planned
    assert _sql(new, "SELECT count(*) FROM pg_database WHERE datname = '%s'" % DATABASE, database='postgres') == '0'

    restored = run_module('postgres_restore', **_restore_args(set_dir, new, keys))
    assert restored.get('failed') is not True, restored
    assert [s['name'] for s in restored['steps']] == ['verify', 'stop_apps', 'recreate_database', 'restore_database',
                                                      'compare_counts', 'start_apps']
    assert restored['tables'] == {'checked': 2, 'mismatched': []}
    assert restored['recovery_seconds'] > 0
    assert 'safety_set' not in restored
    assert _counts(new) == counts
    assert _sql(new, 'SHOW server_version').startswith('17.')
    assert _sql(new, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '%s'" % DATABASE) == 'postgres'


def test_restore_over_an_existing_database_takes_a_safety_set(run_module, backup, target, app, health_url, keys):
    set_dir, counts = backup
    new = target()
    # the target holds the owner role and an older state of the database
    _sql(new, "CREATE ROLE %s LOGIN PASSWORD '%s'" % (OWNER, PASSWORD), database='postgres')
    _docker('exec', new, 'createdb', '-U', 'postgres', '-O', OWNER, DATABASE)
    ak.psql(new, 'CREATE TABLE public.customer (id int PRIMARY KEY, name text); '
                 "INSERT INTO public.customer SELECT n, 'old ' || n FROM generate_series(1, 7) AS n;",
            database=DATABASE, user=OWNER)
    before = _counts(new)
    assert before == {'public.customer': 7}
    safety_before = _safety_sets(set_dir)

    restored = run_module('postgres_restore', **_restore_args(set_dir, new, keys, app_containers=[app],
                                                              health_url=health_url, health_timeout=30))
    assert restored.get('failed') is not True, restored
    steps = dict((s['name'], s) for s in restored['steps'])
    assert steps['stop_apps']['stopped'] == [app]
    assert steps['start_apps']['started'] == [app]
    assert steps['health']['status'] == 200 and steps['health']['url'] == health_url
    assert _running(app)
    assert restored['plan']['database']['owner'] == OWNER
    assert restored['plan']['database']['owner_source'] == 'recorded in the set'
    assert _counts(new) == counts
    # the objects belong to the recorded owner again
    assert _sql(new, "SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname IN ('public', 'ledger')") \
        == OWNER

    safety = restored['safety_set']
    assert sorted(set(_safety_sets(set_dir)) - set(safety_before)) == [Path(safety)]
    assert (Path(safety) / 'MANIFEST.sha256').is_file()
    metadata = json.loads((Path(safety) / 'metadata.json').read_text(encoding='utf-8'))
    assert metadata['set']['kind'] == 'postgres-safety'
    assert 'authentik' not in metadata
    assert metadata['postgres']['database']['tables'] == before
    assert metadata['restore_of'] == set_dir
    assert oct(os.stat(safety).st_mode & 0o777) == '0o700'

    # the safety set is a set like any other: it restores the state the restore replaced
    back = run_module('postgres_restore', **_restore_args(safety, new, keys, database='billing_before',
                                                          safety_backup=False))
    assert back.get('failed') is not True, back
    assert _counts(new, database='billing_before') == before


def test_pg_restore_killed_after_the_drop_rolls_back(run_module, module_runner, backup, target, app, keys):
    set_dir, counts = backup
    new = target()
    first = run_module('postgres_restore', **_restore_args(set_dir, new, keys, safety_backup=False))
    assert first.get('failed') is not True, first
    # the live database has moved on since the backup: the rollback must bring back this state
    _sql(new, "INSERT INTO public.customer (name) VALUES ('added after the backup')")
    live = _counts(new)
    assert live != counts

    args = _restore_args(set_dir, new, keys, app_containers=[app])
    command = module_runner.command('postgres_restore', **args)
    result, killed = ak.run_killing_in_container(command, new, '^pg_restore --exit-on-error')
    assert killed, 'pg_restore was never seen running'
    assert result.get('failed'), result
    assert 'pg_restore' in result['msg'] and 'rolled back' in result['msg'], result['msg']
    assert result['rolled_back'] is True
    names = [s['name'] for s in result['steps']]
    assert names[:5] == ['verify', 'stop_apps', 'safety_backup', 'recreate_database', 'restore_database']
    assert result['steps'][4]['failed'] is True
    assert names[5:] == ['rollback_recreate', 'rollback_restore', 'rollback_compare', 'rollback_start_apps']
    assert _counts(new) == live
    assert _running(app)
    safety = json.loads((Path(result['safety_set']) / 'metadata.json').read_text(encoding='utf-8'))
    assert safety['set']['kind'] == 'postgres-safety'
    assert safety['postgres']['database']['tables'] == live


def test_check_mode_changes_nothing(run_module, backup, target, app, keys):
    set_dir, _counts_of_set = backup
    new = target()
    _docker('exec', new, 'createdb', '-U', 'postgres', DATABASE)
    _sql(new, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)")
    safety_before = _safety_sets(set_dir)

    planned = run_module('postgres_restore', check_mode=True, **_restore_args(set_dir, new, keys, app_containers=[app]))
    assert planned.get('failed') is not True, planned
    plan = planned['plan']
    assert plan['stop'] == [app]
    assert plan['database']['exists'] is True and plan['database']['drop'] is True
    assert plan['safety_set'].startswith(str(Path(set_dir).parents[1] / 'billing-pre-restore') + '/')
    assert [s['name'] for s in planned['steps']] == ['verify']
    assert _counts(new) == {'public.kept': 2}
    assert _running(app)
    assert _safety_sets(set_dir) == safety_before
    assert not Path(plan['safety_set']).exists()


def test_authentik_restore_refuses_a_postgres_set(run_module, backup, target, keys):
    set_dir, _counts_of_set = backup
    new = target()
    _docker('exec', new, 'createdb', '-U', 'postgres', 'authentik')
    _sql(new, 'CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)', database='authentik')
    refused = run_module('authentik_restore', **_restore_args(set_dir, new, keys, user='postgres', app_containers=[],
                                                              restore_files=False, target_version=ak.VERSION))
    assert refused.get('failed') is True, refused
    assert 'idp.recovery.postgres_restore' in refused['msg'], refused['msg']
    assert 'kind postgres' in refused['msg']
    assert _counts(new, database='authentik') == {'public.kept': 1}


def test_the_database_of_an_authentik_set_restores_as_a_plain_database(run_module, target, keys, workdir):
    old = target('ak15', image=ak.POSTGRES_IMAGE)
    _docker('exec', old, 'createdb', '-U', 'postgres', ak.DB_NAME)
    counts = ak.load_fixture(old, users=60, user='postgres')
    opened = run_module('backup_set', root=str(workdir / 'ak-backups'), service='authentik', kind='authentik',
                        state='present')
    assert not run_module('authentik_dump', set_dir=opened['path'], container=old, user='postgres',
                          recipients=[keys.age_recipient]).get('failed')
    assert not run_module('backup_set', path=opened['path'], state='finalized').get('failed')

    scratch = target('scratch')
    restored = run_module('postgres_restore', **_restore_args(opened['path'], scratch, keys, database='authentik_drill'))
    assert restored.get('failed') is not True, restored
    assert restored['plan']['database']['set_section'] == 'authentik'
    assert restored['plan']['database']['recorded_name'] == ak.DB_NAME
    assert 'restore_files' not in [s['name'] for s in restored['steps']]
    assert _counts(scratch, database='authentik_drill') == counts


def _role_tasks(set_dir, container, keys, **extra):
    role_vars = dict(restore_set_path=set_dir, restore_identity=str(keys.age_identity),
                     restore_postgres_container=container)
    role_vars.update(extra)
    return [
        {'name': 'Restore with the role', 'ansible.builtin.include_role': {'name': 'idp.recovery.restore'},
         'vars': role_vars},
        {'name': 'Show the report', 'ansible.builtin.debug': {'var': 'restore_report'}},
    ]


def test_restore_role_plans_gates_and_restores_a_postgres_set(run_playbook, backup, target, keys):
    set_dir, counts = backup
    new = target()
    _docker('exec', new, 'createdb', '-U', 'postgres', DATABASE)
    _sql(new, 'CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2), (3)')

    rc, out, err = run_playbook(_role_tasks(set_dir, new, keys))
    assert rc != 0, out
    results = run_playbook.results(out)
    plan = [r for r in results if r['task'].endswith(' : Print the plan') and 'msg' in r]
    assert plan and 'RESTORE PLAN (PostgreSQL) - nothing has changed yet' in plan[0]['msg'], results
    assert any('drop and recreate: database billing' in line for line in plan[0]['msg'])
    assert 'restore NOT CONFIRMED: postgres target' in out, out + err
    assert _counts(new) == {'public.kept': 3}

    rc, out, err = run_playbook(_role_tasks(set_dir, new, keys, restore_confirm=True))
    assert rc == 0, out + err
    report = [r for r in run_playbook.results(out) if r['task'] == 'Show the report'][0]['restore_report']
    assert report['kind'] == 'postgres'
    assert report['database'] == DATABASE
    assert report['tables'] == {'checked': 2, 'mismatched': []}
    assert Path(report['safety_set']).is_dir()
    assert _counts(new) == counts
