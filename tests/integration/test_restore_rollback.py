# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A restore ends healthy or rolls back: postgres_restore and authentik_restore against real
PostgreSQL containers and real app containers that refuse the restored data.

Each backup set holds a marker the application does not accept; the live database does not. The
"application" of postgres_restore is a small HTTP service in a container (APP below) whose
``/health`` answers 200 only while its database holds no row in ``app_marker``, or which exits
on start when it finds one; the one of authentik_restore is the authentik-server / worker
stand-in with its test knob AUTHENTIK_STANDIN_UNREADY_SQL (not ready while a marker group
exists), or a set from a newer Authentik, which the stand-in refuses to start on. After each
failed restore the live database must hold exactly its content from before (a digest of every
row), the app containers must run and answer their health check again, and the safety set must be
kept. One app container cannot be started at all (its bind-mount source is gone), and one
application answers nothing at all: the database is rolled back and the message says loudly that
the app did not start, or is not healthy, on the safety copy either, and where the safety set is.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import authentik_support as ak

PREFIX = 'idp-test-rollback-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'rollback-%s' % uuid.uuid4().hex[:8]
MARKER_GROUP = 'standin-refuses-this-data'
UNREADY_SQL = "SELECT 1 FROM authentik_core_group WHERE name = '%s'" % MARKER_GROUP
PG_IMAGE = ak.POSTGRES_IMAGE
SCHEMA = """
CREATE TABLE public.item (id serial PRIMARY KEY, name text NOT NULL, cents bigint);
CREATE TABLE public.app_marker (name text PRIMARY KEY);
INSERT INTO public.item (name, cents) SELECT 'item ' || n, n * 13 FROM generate_series(1, 2000) AS n;
"""

# The application of the postgres_restore tests: /health is 200 only while app_marker is empty;
# with APP_REFUSE_START=1 it exits (status 3) on start when app_marker holds a row.
APP = r'''
import http.server
import os
import signal
import sys
import time

import psycopg2


def marked():
    conn = psycopg2.connect(host=os.environ['DB_HOST'], dbname=os.environ['DB_NAME'], user='postgres',
                            password=os.environ['DB_PASSWORD'], connect_timeout=3)
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT count(*) FROM app_marker')
            return cursor.fetchone()[0] > 0
    finally:
        conn.close()


signal.signal(signal.SIGTERM, lambda *_args: sys.exit(0))
if os.environ.get('APP_REFUSE_START') == '1':
    for _attempt in range(60):
        try:
            refused = marked()
            break
        except psycopg2.Error:
            time.sleep(0.5)
    else:
        sys.exit(4)
    if refused:
        print('refusing to start: the database holds a row in app_marker', file=sys.stderr, flush=True)
        sys.exit(3)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            ok = not marked()
        except psycopg2.Error:
            ok = False
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b'ok\n' if ok else b'not ready\n')

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['APP_PORT'])), Health).serve_forever()
'''


def _docker(*argv, check=True):
    return subprocess.run(['docker'] + [str(a) for a in argv], capture_output=True, check=check)


def _running(name):
    return _docker('inspect', '-f', '{{.State.Running}}', name).stdout.decode().strip() == 'true'


def _digest(container, database, user='postgres'):
    """{table: md5 of its rows in order} plus the column layout: the content of a database."""
    tables = ak.psql(container, "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                     database=database, user=user).split('\n')
    parts = ["SELECT '%s', (SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM %s AS t)"
             % (name.replace("'", "''"), name) for name in tables if name]
    parts.append("SELECT ' columns', md5(string_agg(concat_ws('.', table_schema, table_name, column_name, data_type), "
                 "',' ORDER BY table_schema, table_name, ordinal_position)) FROM information_schema.columns "
                 "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
    out = ak.psql(container, '\nUNION ALL\n'.join(parts), database=database, user=user)
    return dict(line.split('|', 1) for line in out.splitlines() if line)


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _wait_status(url, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        status = ak.health(url)
        if status == wanted:
            return
        if time.monotonic() > deadline:
            raise AssertionError('%s answered %s, not %s, for %s s' % (url, status, wanted, timeout))
        time.sleep(0.3)


def _step_names(result):
    return [step['name'] for step in result['steps']]


def _steps(result):
    return dict((step['name'], step) for step in result['steps'])


def _assert_safety_set_kept(result, kind, tables):
    safety = Path(result['safety_set'])
    assert (safety / 'MANIFEST.sha256').is_file(), safety
    metadata = json.loads((safety / 'metadata.json').read_text(encoding='utf-8'))
    assert metadata['set']['kind'] == kind
    assert metadata[kind.split('-')[0]]['database']['tables'] == tables


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('rollback')


def _open_set(module_runner, root, service, kind):
    opened = module_runner('backup_set', root=str(root), service=service, kind=kind, state='present')
    assert opened.get('failed') is not True, opened
    return opened['path']


def _finalize(module_runner, set_dir):
    finalized = module_runner('backup_set', path=set_dir, state='finalized')
    assert finalized.get('failed') is not True, finalized


# ---------------------------------------------------------------------------------------------
# postgres_restore

@pytest.fixture(scope='module')
def pg(module_runner, keys, workdir):
    """A PostgreSQL server with the database shop (the live content, used as the template of each test's
    live database) and a complete set of shop taken while app_marker held a row."""
    name = PREFIX + '-pg'
    ak.run_postgres(name, PASSWORD, image=PG_IMAGE, user='postgres', database='postgres')
    try:
        _docker('exec', name, 'createdb', '-U', 'postgres', 'shop')
        ak.psql(name, SCHEMA, database='shop', user='postgres')
        ak.psql(name, "INSERT INTO app_marker VALUES ('the application refuses this data')", database='shop',
                user='postgres')
        set_dir = _open_set(module_runner, workdir / 'pg-backups', 'shop', 'postgres')
        dumped = module_runner('postgres_dump', set_dir=set_dir, container=name, user='postgres', database='shop',
                               recipients=[keys.age_recipient])
        assert dumped.get('failed') is not True, dumped
        _finalize(module_runner, set_dir)
        # the live data: no marker, and it moved on since the backup
        ak.psql(name, "DELETE FROM app_marker; UPDATE item SET cents = cents + 1 WHERE id % 7 = 0; "
                      "INSERT INTO item (name, cents) VALUES ('added after the backup', 1)",
                database='shop', user='postgres')
        yield {'container': name, 'ip': ak.container_ip(name), 'set_dir': set_dir}
    finally:
        ak.remove_containers(name)


@pytest.fixture
def live(pg):
    """A live database of its own (a copy of shop, without the marker) for one test."""
    database = 'live_%s' % uuid.uuid4().hex[:8]
    _docker('exec', pg['container'], 'createdb', '-U', 'postgres', '-T', 'shop', database)
    return database


@pytest.fixture
def app(pg, live):
    """``app(refuse_start=False, mount=None) -> (name, health_url)``: the application on the live database."""
    names = []

    def start(refuse_start=False, mount=None):
        name = '%s-app-%s' % (PREFIX, uuid.uuid4().hex[:4])
        port = _free_port()
        argv = ['docker', 'run', '-d', '--name', name, '--network', 'host',
                '-e', 'DB_HOST=%s' % pg['ip'], '-e', 'DB_NAME=%s' % live, '-e', 'DB_PASSWORD',
                '-e', 'APP_PORT=%d' % port, '-e', 'APP_REFUSE_START=%s' % ('1' if refuse_start else '0')]
        if mount:
            argv += ['--mount', 'type=bind,source=%s,target=/srv/app' % mount]
        argv += [PG_IMAGE, 'python3', '-c', APP]
        proc = subprocess.run(argv, env=dict(os.environ, DB_PASSWORD=PASSWORD), capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode('utf-8', 'replace')
        names.append(name)
        url = 'http://127.0.0.1:%d/health' % port
        _wait_status(url, 200)
        return name, url
    yield start
    ak.remove_containers(*names)


def _pg_restore(run_module, pg, keys, live, app_name, health_url, **extra):
    args = dict(set_dir=pg['set_dir'], container=pg['container'], user='postgres', database=live,
                identity=str(keys.age_identity), app_containers=[app_name] if app_name else [],
                health_url=health_url, health_timeout=15)
    args.update(extra)
    return run_module('postgres_restore', **args)


def test_postgres_app_not_healthy_on_the_restored_data_rolls_back(run_module, pg, keys, live, app):
    name, url = app()
    before = _digest(pg['container'], live)
    tables = ak.table_counts(pg['container'], database=live, user='postgres')

    result = _pg_restore(run_module, pg, keys, live, name, url)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'the application did not become healthy on the restored database' in msg, msg
    assert 'did not become ready at %s within 15 s (last answer: HTTP 503)' % url in msg, msg
    assert 'rolled back to the safety set %s' % result['safety_set'] in msg, msg
    assert 'the application is healthy again' in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is True
    assert _step_names(result) == ['verify', 'stop_apps', 'safety_backup', 'recreate_database', 'restore_database',
                                   'compare_counts', 'start_apps', 'health', 'rollback_stop_apps',
                                   'rollback_recreate', 'rollback_restore', 'rollback_compare',
                                   'rollback_start_apps', 'rollback_health']
    steps = _steps(result)
    assert steps['health']['failed'] is True and 'HTTP 503' in steps['health']['error']
    assert steps['rollback_stop_apps']['stopped'] == [name]
    assert steps['rollback_start_apps']['started'] == [name]
    assert result['rollback_health']['status'] == 200 and result['rollback_health']['url'] == url
    # the live database holds exactly what it held before, and the application is up on it
    assert _digest(pg['container'], live) == before
    assert _running(name) and ak.health(url) == 200
    _assert_safety_set_kept(result, 'postgres-safety', tables)


def test_postgres_app_exiting_on_start_rolls_back(run_module, pg, keys, live, app):
    name, url = app(refuse_start=True)
    before = _digest(pg['container'], live)

    result = _pg_restore(run_module, pg, keys, live, name, url, health_timeout=120)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'the application did not become healthy on the restored database' in msg, msg
    assert 'app container %s is not running after it was started' % name in msg, msg
    assert 'exit code 3' in msg, msg
    assert 'the application is healthy again' in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is True
    names = _step_names(result)
    assert names[names.index('compare_counts') + 1:] == [
        'start_apps', 'health', 'rollback_stop_apps', 'rollback_recreate', 'rollback_restore', 'rollback_compare',
        'rollback_start_apps', 'rollback_health'] or names[names.index('compare_counts') + 1:] == [
        'start_apps', 'rollback_stop_apps', 'rollback_recreate', 'rollback_restore', 'rollback_compare',
        'rollback_start_apps', 'rollback_health'], names
    # the exit is noticed at once, not after health_timeout
    failed = [step for step in result['steps'] if step.get('failed')]
    assert len(failed) == 1 and failed[0]['seconds'] < 60, failed
    assert _digest(pg['container'], live) == before
    assert _running(name) and ak.health(url) == 200
    assert (Path(result['safety_set']) / 'MANIFEST.sha256').is_file()


def test_postgres_app_that_cannot_start_at_all_rolls_back_and_says_so_loudly(run_module, pg, keys, live, app,
                                                                             workdir):
    mount = workdir / ('app-mount-%s' % uuid.uuid4().hex[:6])
    mount.mkdir()
    name, url = app(mount=mount)
    before = _digest(pg['container'], live)
    # the running container keeps its mount; a new start of it fails (bind source missing)
    shutil.rmtree(str(mount))

    result = _pg_restore(run_module, pg, keys, live, name, url)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'the application did not become healthy on the restored database: cannot start container %s' % name \
        in msg, msg
    assert 'rolled back to the safety set %s' % result['safety_set'] in msg, msg
    assert 'the app containers did NOT start on the safety copy' in msg, msg
    assert 'the safety set is kept at %s' % result['safety_set'] in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is False
    names = _step_names(result)
    assert names[names.index('compare_counts') + 1:] == ['start_apps', 'rollback_stop_apps', 'rollback_recreate',
                                                         'rollback_restore', 'rollback_compare',
                                                         'rollback_start_apps'], names
    assert _steps(result)['start_apps']['failed'] is True
    assert _steps(result)['rollback_start_apps']['failed'] is True
    # the data is back even though the application could not be started on it
    assert _digest(pg['container'], live) == before
    assert not _running(name)
    assert (Path(result['safety_set']) / 'MANIFEST.sha256').is_file()


def test_postgres_app_not_healthy_on_the_safety_copy_either_says_so_loudly(run_module, pg, keys, live):
    """The application (not in app_containers here) answers nothing at all, before and after: the restore rolls
    back, checks health again on the safety copy, and says that even the safety copy is not healthy."""
    before = _digest(pg['container'], live)
    url = 'http://127.0.0.1:%d/health' % _free_port()
    assert ak.health(url) == 0

    result = _pg_restore(run_module, pg, keys, live, None, url, app_containers=[], health_timeout=3)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'the application did not become healthy on the restored database' in msg, msg
    assert 'rolled back to the safety set %s' % result['safety_set'] in msg, msg
    assert 'the application is NOT healthy on the safety copy either' in msg, msg
    assert 'the safety set is kept at %s' % result['safety_set'] in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is False
    names = _step_names(result)
    assert names[names.index('compare_counts') + 1:] == ['start_apps', 'health', 'rollback_recreate',
                                                         'rollback_restore', 'rollback_compare', 'rollback_health']
    assert _steps(result)['rollback_health']['failed'] is True
    assert _digest(pg['container'], live) == before
    assert (Path(result['safety_set']) / 'MANIFEST.sha256').is_file()


def test_check_mode_of_a_set_the_app_refuses_changes_nothing(run_module, pg, keys, live, app):
    name, url = app()
    before = _digest(pg['container'], live)
    planned = run_module('postgres_restore', check_mode=True, set_dir=pg['set_dir'], container=pg['container'],
                         user='postgres', database=live, identity=str(keys.age_identity), app_containers=[name],
                         health_url=url, health_timeout=15)
    assert planned.get('failed') is not True, planned
    assert _step_names(planned) == ['verify']
    assert 'rolled_back' not in planned
    assert _digest(pg['container'], live) == before
    assert _running(name) and ak.health(url) == 200


# ---------------------------------------------------------------------------------------------
# authentik_restore

class Authentik(object):
    """PostgreSQL, the server and worker stand-ins (with the test knob), the files and the .env."""

    def __init__(self, name, workdir):
        self.network = name
        self.db = name + '-postgres'
        self.server = name + '-server'
        self.worker = name + '-worker'
        self.password = 'pw-' + uuid.uuid4().hex
        self.compose = Path(workdir) / name
        self.compose.mkdir(parents=True)
        self.files = ak.make_files(self.compose)
        ak.write_env(self.compose / '.env', pg_pass=self.password)
        _docker('network', 'create', self.network)
        ak.run_postgres(self.db, self.password, network=self.network)
        ak.load_fixture(self.db, users=300)
        knob = {'AUTHENTIK_STANDIN_UNREADY_SQL': UNREADY_SQL}
        volumes = ['%s:%s' % (self.compose / sub, mount) for _name, sub, mount in ak.FILE_MOUNTS]
        ak.run_standin(self.server, 'server', self.db, self.password, self.network, environment=knob)
        ak.run_standin(self.worker, 'worker', self.db, self.password, self.network, volumes=volumes,
                       environment=knob)
        self.apps = [self.server, self.worker]
        self.health_url = ak.wait_ready(self.server, self.network)

    def files_snapshot(self):
        return dict((name, ak.snapshot(path)) for name, path in self.files.items())

    def remove(self):
        ak.remove_containers(self.server, self.worker, self.db)
        _docker('network', 'rm', self.network, check=False)


@pytest.fixture(scope='module')
def authentik(workdir):
    stack = Authentik(PREFIX + '-ak', workdir)
    try:
        # the knob works in this image: the marker makes the stand-in unready, and only the marker
        ak.psql(stack.db, "INSERT INTO authentik_core_group (group_uuid, name, is_superuser, attributes) "
                          "VALUES (gen_random_uuid(), '%s', false, '{}')" % MARKER_GROUP)
        try:
            _wait_status(stack.health_url, 503, timeout=10)
        except AssertionError:
            pytest.fail('%s ignores AUTHENTIK_STANDIN_UNREADY_SQL: rebuild it (tests/images/build.sh --if-needed '
                        'authentik-standin)' % ak.SERVER_IMAGE)
        ak.psql(stack.db, "DELETE FROM authentik_core_group WHERE name = '%s'" % MARKER_GROUP)
        _wait_status(stack.health_url, 200, timeout=10)
        yield stack
    finally:
        stack.remove()


def _authentik_set(module_runner, stack, keys, workdir, prepare_sql, undo_sql):
    """A complete set of the stack taken with ``prepare_sql`` applied; the live data has it undone and has moved on
    (one more group, one more template file). Returns the set directory."""
    ak.psql(stack.db, prepare_sql)
    try:
        set_dir = _open_set(module_runner, workdir / ('ak-backups-%s' % uuid.uuid4().hex[:6]), 'authentik',
                            'authentik')
        dumped = module_runner('authentik_dump', set_dir=set_dir, container=stack.db, compose_dir=str(stack.compose),
                               recipients=[keys.age_recipient])
        assert dumped.get('failed') is not True, dumped
        _finalize(module_runner, set_dir)
    finally:
        ak.psql(stack.db, undo_sql)
    ak.psql(stack.db, "INSERT INTO authentik_core_group (group_uuid, name, is_superuser, attributes) "
                      "VALUES (gen_random_uuid(), 'after-backup-%s', false, '{}')" % uuid.uuid4().hex[:6])
    template = Path(stack.files['custom-templates']) / ('after-backup-%s.html' % uuid.uuid4().hex[:6])
    template.write_text('<p>written after the backup</p>\n', encoding='utf-8')
    return set_dir


def _ak_restore(run_module, stack, set_dir, keys, **extra):
    args = dict(set_dir=set_dir, container=stack.db, identity=str(keys.age_identity), app_containers=stack.apps,
                compose_dir=str(stack.compose), health_timeout=20)
    args.update(extra)
    return run_module('authentik_restore', **args)


def _assert_authentik_back(stack, before, files_before):
    assert _digest(stack.db, ak.DB_NAME, user=ak.DB_USER) == before
    assert stack.files_snapshot() == files_before
    assert _running(stack.server) and _running(stack.worker)
    ak.wait_ready(stack.server, stack.network, timeout=60)


def test_authentik_not_ready_on_the_restored_data_rolls_back(run_module, module_runner, authentik, keys, workdir):
    stack = authentik
    set_dir = _authentik_set(
        module_runner, stack, keys, workdir,
        "INSERT INTO authentik_core_group (group_uuid, name, is_superuser, attributes) "
        "VALUES (gen_random_uuid(), '%s', false, '{}')" % MARKER_GROUP,
        "DELETE FROM authentik_core_group WHERE name = '%s'" % MARKER_GROUP)
    before = _digest(stack.db, ak.DB_NAME, user=ak.DB_USER)
    files_before = stack.files_snapshot()
    tables = ak.table_counts(stack.db)

    result = _ak_restore(run_module, stack, set_dir, keys)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'Authentik did not become healthy on the restored database' in msg, msg
    assert 'within 20 s (last answer: HTTP 503)' in msg, msg
    assert 'the restored data (database and file directories) was rolled back to the safety set %s' \
        % result['safety_set'] in msg, msg
    assert 'Authentik is healthy again' in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is True
    names = _step_names(result)
    assert names[names.index('restore_files'):] == [
        'restore_files', 'start_apps', 'health', 'rollback_stop_apps', 'rollback_recreate', 'rollback_restore',
        'rollback_compare', 'rollback_files', 'rollback_start_apps', 'rollback_health'], names
    assert sorted(_steps(result)['rollback_stop_apps']['stopped']) == sorted(stack.apps)
    assert result['rollback_health']['status'] == 200
    _assert_authentik_back(stack, before, files_before)
    _assert_safety_set_kept(result, 'authentik-safety', tables)


def test_authentik_refusing_to_start_on_the_restored_data_rolls_back(run_module, module_runner, authentik, keys,
                                                                     workdir):
    """A set from a newer Authentik, pushed through the version gate with force_version: the server refuses to
    start on it (Authentik does not downgrade), so the restore rolls back."""
    stack = authentik
    set_dir = _authentik_set(
        module_runner, stack, keys, workdir,
        "INSERT INTO authentik_version_history (\"timestamp\", version, build) VALUES (now(), '2025.12.1', 'newer')",
        "DELETE FROM authentik_version_history WHERE build = 'newer'")
    before = _digest(stack.db, ak.DB_NAME, user=ak.DB_USER)
    files_before = stack.files_snapshot()

    result = _ak_restore(run_module, stack, set_dir, keys, force_version=True, health_timeout=120)

    assert result.get('failed') is True, result
    msg = result['msg']
    assert 'Authentik did not become healthy on the restored database' in msg, msg
    assert 'is not running after it was started' in msg and 'exit code 1' in msg, msg
    assert 'Authentik is healthy again' in msg, msg
    assert result['rolled_back'] is True and result['healthy_after_rollback'] is True
    assert result['version_gate']['forced'] is True
    failed = [step for step in result['steps'] if step.get('failed')]
    assert [step['name'] for step in failed] in (['health'], ['start_apps']), failed
    assert failed[0]['seconds'] < 60, failed
    assert _step_names(result)[-2:] == ['rollback_start_apps', 'rollback_health']
    _assert_authentik_back(stack, before, files_before)
    assert (Path(result['safety_set']) / 'MANIFEST.sha256').is_file()
