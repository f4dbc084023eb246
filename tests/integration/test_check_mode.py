# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``ansible-playbook --check`` (and ``--check --diff``) changes nothing, for every playbook.

Each playbook of the collection (``idp.recovery.backup``, ``restore``, ``drill``, ``schedule`` and
``pitr``) runs for real with ``ansible-playbook -i <inventory> idp.recovery.<name> --check``
against real targets - PostgreSQL containers, an Authentik stand-in stack, an Ory stand-in, sets
and offsite copies, installed timer units, a pgBackRest repository - with the variables that make
a run without ``--check`` destructive (``restore_confirm``, ``restore_target_scratch``, app
containers to stop, safety sets, retention, pings, a staging database to overwrite, a user to
create, units to remove). Before and after each run the test takes content digests of everything
the run could change: ``pg_dumpall`` and the databases' OIDs, every file below the directories the
roles write (path, type, mode, owner, size, SHA-256, link target), the containers of the test
(ID, state, start time, restart count), the offsite copies, the Ory project, the pgBackRest
configuration and repository, ``/etc/passwd``, ``/etc/group`` and ``/etc/cron.d``, and the
requests a ping URL received. They must be equal, and the run must have gone as far as its plan
(so that a run failing early cannot pass). The PostgreSQL restore case holds a table created
after the backup, which a real restore would drop.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import authentik_support as ak
import conftest
from ory_support import start_standin
from prerequisites import not_installed
from recovery_support import snapshot

SUFFIX = uuid.uuid4().hex[:6]
PREFIX = 'idp-test-check-%s' % SUFFIX
IMAGE = os.environ.get('IDP_POSTGRES_15_IMAGE', 'idp-recovery/postgres:15')
PASSWORD = 'check-%s' % uuid.uuid4().hex[:10]
SERVICE = 'ledger'
DATABASE = 'ledger'
SCHEMA = """
CREATE TABLE public.account (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO public.account (name) SELECT 'account ' || n FROM generate_series(1, 50) AS n;
CREATE TABLE public.entry (id bigserial PRIMARY KEY, account integer REFERENCES public.account(id), cents bigint);
INSERT INTO public.entry (account, cents) SELECT 1 + n % 50, n * 7 FROM generate_series(1, 2000) AS n;
"""
# written after every backup of the test: a real restore of any set drops it
AFTER_BACKUP = """
CREATE TABLE public.after_backup (id int PRIMARY KEY, note text);
INSERT INTO public.after_backup SELECT n, 'written after the backup' FROM generate_series(1, 25) AS n;
"""
# what a confirmed, destructive run of the restore playbook is given on the command line
DESTRUCTIVE = ['-e', 'restore_confirm=true', '-e', 'idp_restore_confirm=true', '-e', 'restore_target_scratch=true']
MODES = (('--check',), ('--check', '--diff'))


# ---------------------------------------------------------------------------------------------
# digests

def _docker(*argv, check=True, stdin=None):
    proc = subprocess.run(['docker'] + [str(a) for a in argv], input=stdin, capture_output=True, timeout=180,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError('docker %s: %s' % (' '.join(str(a) for a in argv[:3]), proc.stderr.decode('utf-8', 'replace')))
    return proc.stdout.decode('utf-8', 'replace')


def _sql(container, text, database=DATABASE, user='postgres'):
    return ak.psql(container, text, database=database, user=user).strip()


def containers():
    """The containers of this test (all of them carry PREFIX): name -> ID, image, state, start, restarts."""
    ids = _docker('ps', '-a', '-q', '--no-trunc', '--filter', 'name=%s' % PREFIX).split()
    found = {}
    for info in (json.loads(_docker('inspect', *ids)) if ids else []):
        found[info['Name'].lstrip('/')] = (info['Id'], info['Config']['Image'], info['State']['Status'],
                                           info['State']['StartedAt'], info['State']['FinishedAt'],
                                           info['RestartCount'])
    return found


def database_digest(container, user='postgres'):
    """SHA-256 of pg_dumpall (every database, role and row) and the OID of every database (a
    database dropped and recreated with the same content has a new OID)."""
    dump = subprocess.run(['docker', 'exec', container, 'pg_dumpall', '-U', user], capture_output=True,
                          timeout=180, check=True).stdout
    # the random key of psql's \restrict guard differs in every dump
    dump = b'\n'.join(line for line in dump.split(b'\n') if not line.startswith((b'\\restrict ', b'\\unrestrict ')))
    oids = _sql(container, "SELECT string_agg(datname || '=' || oid, ',' ORDER BY datname) FROM pg_database",
                database='postgres', user=user)
    return hashlib.sha256(dump).hexdigest(), oids


def tree(root):
    """Every entry below root: recovery_support.snapshot (type, mode, size, SHA-256, link target,
    hard links) plus owner and group."""
    root = Path(root)
    if not root.exists():
        return None
    owners = {}
    for current, dirs, files in os.walk(str(root)):
        for name in ['.'] + dirs + files:
            full = current if name == '.' else os.path.join(current, name)
            st = os.lstat(full)
            owners[os.path.relpath(full, str(root))] = (st.st_uid, st.st_gid)
    return {'entries': snapshot(root), 'owners': owners}


def host_files():
    """The system files a role could change on this host: users, groups, cron.d."""
    found = {}
    for path in ('/etc/passwd', '/etc/group', '/etc/shadow', '/etc/gshadow'):
        if os.path.exists(path):
            with open(path, 'rb') as handle:
                found[path] = hashlib.sha256(handle.read()).hexdigest()
    found['/etc/cron.d'] = tree('/etc/cron.d')
    return found


class PingServer(object):
    """A Healthchecks-style ping endpoint on 127.0.0.1 that records every request it gets."""

    def __init__(self):
        self.requests = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                seen.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'OK')

            do_POST = do_HEAD = do_GET

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# running the playbooks as an operator does

class Run(object):
    def __init__(self, argv, rc, stdout, stderr):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        try:
            self.results = conftest.PlaybookRunner.results(stdout)
        except AssertionError:
            self.results = []

    def task(self, suffix):
        return [r for r in self.results if r['task'].endswith(suffix)]

    def ran(self, suffix):
        """The task ran (was not skipped) at least once."""
        return [r for r in self.task(suffix) if not r.get('skipped') and r.get('results') != []
                and not all(i.get('skipped') for i in r.get('results') or [{}])]

    def shown(self, suffix):
        """The messages of the debug tasks called ``... suffix`` that ran."""
        return [r['msg'] for r in self.ran(suffix) if 'msg' in r]

    @property
    def failed(self):
        return [(r['task'], r.get('msg'), [i.get('msg') for i in r.get('results') or [] if i.get('failed')])
                for r in self.results if r.get('failed')]

    def assert_ok(self, label=''):
        """The run ended with rc 0 and no failed task."""
        if self.rc != 0 or self.failed:
            raise AssertionError('%s%r' % (label and label + ': ', self))
        return self

    def __repr__(self):
        return 'rc %s, failed: %s\nargv: %s\ntasks: %s\nstderr: %s' % (
            self.rc, json.dumps(self.failed, indent=1, default=str)[-5000:], ' '.join(self.argv[-6:]),
            [r['task'].rpartition(' : ')[2] for r in self.results][-30:], self.stderr[-3000:])


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    return tmp_path_factory.mktemp('checkmode')


@pytest.fixture(scope='module')
def playbook(test_env, base):
    """``playbook(name, host_vars, *options, groups=()) -> Run``: ``ansible-playbook -i <inventory>
    idp.recovery.<name> <options>`` with the variables in the inventory (the inventory lives outside
    the directories the digests cover)."""
    def run(name, host_vars, *options, groups=()):
        directory = Path(conftest._private_dir(base, 'run-'))  # pylint: disable=protected-access
        host = {'ansible_connection': 'local', 'ansible_python_interpreter': str(conftest.PYTHON),
                # the pitr and schedule playbooks become root; the tests run as root already
                'ansible_become': False}
        host.update(host_vars)
        inventory = {'all': {'hosts': {'localhost': host},
                             'children': dict((group, {'hosts': {'localhost': {}}}) for group in groups)}}
        path = directory / 'inventory.yml'
        conftest._write_private(path, json.dumps(inventory, indent=2, default=str))  # pylint: disable=protected-access
        argv = [str(conftest.TOOL_BIN / 'ansible-playbook'), '-i', str(path), 'idp.recovery.%s' % name] + list(options)
        env = dict(test_env, ANSIBLE_STDOUT_CALLBACK=conftest.JSON_CALLBACK)
        started = time.monotonic()
        proc = subprocess.run(argv, env=env, cwd=str(directory), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=600, check=False)
        print('%s %s: %.1f s' % (name, ' '.join(options), time.monotonic() - started))
        return Run(argv, proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'))
    return run


def unchanged(state, run_playbook_once, modes=MODES):
    """Run once per mode; after each run the state must equal the state before the first."""
    before = state()
    runs = []
    for options in modes:
        found = run_playbook_once(options)
        runs.append(found)
        after = state()
        assert after == before, 'the %s run changed something:\n%s\n%r' % (
            ' '.join(options), _difference(before, after), found)
    return runs


def _difference(before, after, path=''):
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) != after.get(key):
                lines.extend(_difference(before.get(key), after.get(key), '%s/%s' % (path, key)))
        return lines if path else '\n'.join(lines[:40])
    return ['%s: %r -> %r' % (path or '/', before, after)]


# ---------------------------------------------------------------------------------------------
# the shared targets: a live database, two complete sets of it, their offsite copies

def _have_docker():
    if shutil.which('docker') is None or subprocess.run(['docker', 'info'], capture_output=True,
                                                        check=False).returncode != 0:
        not_installed('the Docker engine is not reachable')
    if subprocess.run(['docker', 'image', 'inspect', IMAGE], capture_output=True, check=False).returncode != 0:
        not_installed('image %s is missing (tests/images/build.sh --if-needed)' % IMAGE)


@pytest.fixture(scope='module')
def live():
    """The live PostgreSQL 15 server with the database ledger, and an app container that uses it."""
    _have_docker()
    name = PREFIX + '-live'
    app = PREFIX + '-app'
    try:
        ak.run_postgres(name, PASSWORD, image=IMAGE, user='postgres', database='postgres')
        _docker('exec', name, 'createdb', '-U', 'postgres', DATABASE)
        _sql(name, SCHEMA)
        # an application container of the database: a real restore stops it and starts it again
        _docker('run', '-d', '--name', app, '--entrypoint', 'sleep', IMAGE, 'infinity')
        yield {'name': name, 'app': app}
    finally:
        ak.remove_containers(name, app)


@pytest.fixture(scope='module')
def sets(live, module_runner, keys, base):
    """Two complete age-encrypted sets of the live database (the backup root), their offsite copies
    (backend local), and then the table after_backup in the live database."""
    root = base / 'sets' / 'backups'
    offsite = base / 'sets' / 'offsite'
    offsite.mkdir(parents=True, mode=0o700)
    made = []
    for number in range(2):
        if number:
            time.sleep(1.1)  # one set per second and service
        opened = module_runner('backup_set', root=str(root), service=SERVICE, kind='postgres', state='present')
        assert opened.get('failed') is not True, opened
        dumped = module_runner('postgres_dump', set_dir=opened['path'], container=live['name'], user='postgres',
                               database=DATABASE, recipients=[keys.age_recipient])
        assert dumped.get('failed') is not True, dumped
        finalized = module_runner('backup_set', path=opened['path'], state='finalized')
        assert finalized.get('failed') is not True, finalized
        uploaded = module_runner('offsite_upload', path=opened['path'], backend='local', target=str(offsite))
        assert uploaded.get('failed') is not True, uploaded
        made.append(Path(opened['path']))
    _sql(live['name'], AFTER_BACKUP)
    return {'root': root, 'offsite': offsite, 'sets': made}


def _world(base, name):
    """The directory below which a role under test may write (everything in it is digested)."""
    world = base / ('world-' + name)
    world.mkdir(mode=0o755)
    return world


def _copy_sets(sets, world):
    """A private copy of the backup root and the offsite target in world."""
    shutil.copytree(str(sets['root']), str(world / 'backups'), symlinks=True)
    shutil.copytree(str(sets['offsite']), str(world / 'offsite'), symlinks=True)
    return world / 'backups', world / 'offsite'


def _after_backup_rows(container, user='postgres', database=DATABASE):
    """The rows of the table written after the backup, or 'missing' when it is gone."""
    return _sql(container, "SELECT CASE WHEN to_regclass('public.after_backup') IS NULL THEN 'missing' ELSE "
                           "(xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM public.after_backup', "
                           "false, true, '')))[1]::text END", database=database, user=user)


# ---------------------------------------------------------------------------------------------
# backup

def test_backup_check_mode_changes_nothing(live, sets, playbook, keys, base):
    world = _world(base, 'backup')
    root, offsite = _copy_sets(sets, world)
    status_dir = world / 'status'
    metrics_dir = world / 'metrics'
    for directory, name, text in ((status_dir, 'last-backup.json', '{"format_version": 1, "services": {}}\n'),
                                  (metrics_dir, 'idp_recovery_backup.prom', 'idp_recovery_backup_success 1\n')):
        directory.mkdir(mode=0o700)
        (directory / name).write_text(text)
    ping = PingServer()
    try:
        host_vars = {
            'backup_services': [{'name': SERVICE, 'kind': 'postgres', 'container': live['name'], 'user': 'postgres',
                                 'database': DATABASE}],
            'backup_root': str(root),
            'backup_recipients': [keys.age_recipient],
            'backup_verify_identity': str(keys.age_identity),
            'backup_offsite_enabled': True,
            'backup_offsite': {'backend': 'local', 'target': str(offsite)},
            # a real run would remove the older set, here and offsite
            'backup_retention_enabled': True,
            'backup_retention_offsite': True,
            'backup_retention_policy': {'keep_last': 1, 'keep_daily': 0, 'keep_weekly': 0, 'keep_monthly': 0,
                                        'min_keep': 1},
            'backup_status_dir': str(status_dir),
            'backup_metrics_dir': str(metrics_dir),
            'backup_ping_start_url': ping.url + '/start',
            'backup_ping_success_url': ping.url + '/success',
            'backup_ping_fail_url': ping.url + '/fail',
        }

        def state():
            return {'world': tree(world), 'database': database_digest(live['name']), 'containers': containers(),
                    'pings': list(ping.requests)}

        runs = unchanged(state, lambda options: playbook('backup', host_vars, *options))
    finally:
        ping.stop()
    for run in runs:
        run.assert_ok()
        plan = run.ran(': Show what a run would back up')
        assert plan and plan[0]['results'][0]['msg'].startswith('%s (postgres): a new set under' % SERVICE), str(run)
        assert not run.ran(': Open a new set (%s)' % SERVICE), str(run)
    assert sorted(p.name for p in (root / SERVICE).iterdir()) == sorted(p.name for p in sets['sets'])
    assert ping.requests == []


# ---------------------------------------------------------------------------------------------
# restore

def _restore_vars(live, keys, world, **extra):
    found = {
        'restore_backup_root': str(world / 'backups'),
        'restore_service': SERVICE,
        'restore_identity': str(keys.age_identity),
        'restore_postgres_container': live['name'],
        'restore_postgres_database': DATABASE,
        'restore_postgres_app_containers': [live['app']],
        'restore_postgres_safety_backup': True,
        'restore_postgres_safety_root': str(world / 'safety'),
    }
    found.update(extra)
    return found


def _restore_state(live, world):
    return {'world': tree(world), 'database': database_digest(live['name']), 'containers': containers(),
            'after_backup': _after_backup_rows(live['name'])}


def test_restore_check_mode_with_confirm_restores_nothing(live, sets, playbook, keys, base):
    world = _world(base, 'restore')
    _copy_sets(sets, world)
    host_vars = _restore_vars(live, keys, world)
    assert _after_backup_rows(live['name']) == '25'

    runs = unchanged(lambda: _restore_state(live, world),
                     lambda options: playbook('restore', host_vars, *(list(options) + DESTRUCTIVE), groups=['idp_restore']))
    for run in runs:
        run.assert_ok()
        plan = run.shown(': Print the plan')
        assert plan and plan[0][0] == 'RESTORE PLAN (PostgreSQL) - nothing has changed yet', str(run)
        assert any('drop and recreate: database %s' % DATABASE in line for line in plan[0]), plan
        assert run.ran(': Say that check mode restores nothing'), str(run)
        assert not run.ran(': Restore the PostgreSQL database'), str(run)
        assert not run.task(': Report the restore'), str(run)
    # the table written after the backup is still there, with its rows, and the app still runs
    assert _after_backup_rows(live['name']) == '25'
    assert containers()[live['app']][2] == 'running'
    assert not (world / 'safety').exists()


def test_restore_check_mode_from_offsite_fetches_nothing(live, sets, playbook, keys, base):
    world = _world(base, 'restore-offsite')
    _copy_sets(sets, world)
    host_vars = _restore_vars(live, keys, world, restore_source='offsite',
                              restore_offsite={'backend': 'local', 'target': str(world / 'offsite')},
                              restore_offsite_dest=str(world / 'fetched'))

    runs = unchanged(lambda: _restore_state(live, world),
                     lambda options: playbook('restore', host_vars, *(list(options) + DESTRUCTIVE), groups=['idp_restore']))
    for run in runs:
        run.assert_ok()
        fetched = run.shown(': Show what a run would fetch (check mode)')
        assert fetched and sets['sets'][-1].name in fetched[0], str(run)
        assert not run.ran(': Print the plan'), str(run)
    assert not (world / 'fetched').exists()
    assert _after_backup_rows(live['name']) == '25'


@pytest.fixture(scope='module')
def authentik(module_runner, keys, base):
    """An Authentik-shaped stack (PostgreSQL, the server stand-in, files, .env) and a complete set of it;
    after the backup a table is added to its database and a file to its media."""
    _have_docker()
    name = PREFIX + '-ak'
    network = name
    db = name + '-postgres'
    server = name + '-server'
    compose = base / 'authentik' / 'compose'
    password = 'ak-' + uuid.uuid4().hex
    try:
        _docker('network', 'create', network)
        ak.make_files(compose)
        ak.write_env(compose / '.env', pg_pass=password)
        ak.run_postgres(db, password, network=network)
        ak.load_fixture(db, users=150)
        ak.run_standin(server, 'server', db, password, network)
        health_url = ak.wait_ready(server, network)
        root = base / 'authentik' / 'backups'
        opened = module_runner('backup_set', root=str(root), service='authentik', kind='authentik', state='present')
        assert opened.get('failed') is not True, opened
        dumped = module_runner('authentik_dump', set_dir=opened['path'], container=db, compose_dir=str(compose),
                               env_file=str(compose / '.env'), recipients=[keys.age_recipient])
        assert dumped.get('failed') is not True, dumped
        finalized = module_runner('backup_set', path=opened['path'], state='finalized')
        assert finalized.get('failed') is not True, finalized
        ak.psql(db, AFTER_BACKUP)
        (compose / 'data' / 'media' / 'public' / 'uploaded-after-the-backup.svg').write_text('<svg/>\n')
        yield {'db': db, 'server': server, 'compose': compose, 'root': root, 'set': Path(opened['path']),
               'health_url': health_url}
    finally:
        ak.remove_containers(server, db)
        _docker('network', 'rm', network, check=False)


def test_authentik_restore_check_mode_with_confirm_restores_nothing(authentik, playbook, keys, base):
    world = _world(base, 'restore-authentik')
    shutil.copytree(str(authentik['root']), str(world / 'backups'), symlinks=True)
    host_vars = {
        'restore_backup_root': str(world / 'backups'),
        'restore_service': 'authentik',
        'restore_identity': str(keys.age_identity),
        'restore_authentik_container': authentik['db'],
        'restore_authentik_app_containers': [authentik['server']],
        'restore_authentik_compose_dir': str(authentik['compose']),
        'restore_authentik_restore_files': True,
        'restore_authentik_restore_env': True,
        'restore_authentik_env_file': str(authentik['compose'] / '.env'),
        'restore_authentik_safety_root': str(world / 'safety'),
        'restore_authentik_health_url': authentik['health_url'],
        'restore_authentik_health_timeout': 30,
    }

    def state():
        return {'world': tree(world), 'compose': tree(authentik['compose']),
                'database': database_digest(authentik['db'], user=ak.DB_USER), 'containers': containers(),
                'after_backup': _after_backup_rows(authentik['db'], user=ak.DB_USER, database=ak.DB_NAME)}

    runs = unchanged(state, lambda options: playbook('restore', host_vars, *(list(options) + DESTRUCTIVE),
                                                     groups=['idp_restore']))
    for run in runs:
        run.assert_ok()
        plan = run.shown(': Print the plan')
        assert plan and plan[0][0] == 'RESTORE PLAN (Authentik) - nothing has changed yet', str(run)
        assert any(line.startswith('stop:') and authentik['server'] in line for line in plan[0]), plan
        assert run.ran(': Say that check mode restores nothing'), str(run)
        assert not run.ran(': Restore Authentik'), str(run)
    assert containers()[authentik['server']][2] == 'running'
    assert ak.health(authentik['health_url']) == 200


def _ory_state(standin):
    """Everything a write could change in an Ory stand-in."""
    status, _h, clients = standin.api('GET', '/admin/clients', {'page_size': 500})
    assert status == 200, clients
    status, _h, project = standin.api('GET', '/projects/%s' % standin.project_id)
    assert status == 200, project
    summary = dict(standin.summary())
    summary.pop('tokens_issued', None)
    return {'summary': summary, 'identities': sorted(standin.all_identities(), key=lambda i: i['id']),
            'clients': sorted(clients, key=lambda c: c['client_id']),
            'tuples': sorted(json.dumps(t, sort_keys=True) for t in standin.all_tuples()), 'project': project}


def test_ory_restore_check_mode_with_confirm_imports_nothing(module_runner, playbook, keys, base):
    world = _world(base, 'restore-ory')
    live_ory = start_standin(base / 'ory', seed_identities=12, seed_clients=2, default_jwk_sets=True)
    target = start_standin(base / 'ory', preset='blank', default_jwk_sets=True)
    try:
        opened = module_runner('backup_set', root=str(world / 'backups'), service='ory', kind='ory', state='present')
        assert opened.get('failed') is not True, opened
        exported = module_runner('ory_export', set_dir=opened['path'], recipients=[keys.age_recipient],
                                 **live_ory.connection())
        assert exported.get('failed') is not True, exported
        assert module_runner('backup_set', path=opened['path'], state='finalized').get('failed') is not True
        host_vars = {
            'restore_backup_root': str(world / 'backups'),
            'restore_service': 'ory',
            'restore_identity': str(keys.age_identity),
            'restore_ory_project_url': target.url,
            'restore_ory_project_api_key': target.api_key,
            'restore_ory_project_id': target.project_id,
            'restore_ory_workspace_api_key': target.workspace_key,
            'restore_ory_console_url': target.url,
            'restore_ory_state_dir': str(world / 'ory-state'),
            'restore_ory_secrets_recipients': [keys.age_recipient],
        }

        def state():
            return {'world': tree(world), 'target': _ory_state(target)}

        runs = unchanged(state, lambda options: playbook('restore', host_vars, *(list(options) + DESTRUCTIVE),
                                                         groups=['idp_restore']))
        for run in runs:
            run.assert_ok()
            plan = run.shown(': Print the plan')
            assert plan and plan[0][0] == 'RESTORE PLAN (Ory) - nothing has been written yet', str(run)
            assert run.ran(': Say that check mode restores nothing'), str(run)
            assert not run.ran(': Import the Ory export into the project'), str(run)
        assert target.summary()['identities'] == 0
    finally:
        live_ory.stop()
        target.stop()


# ---------------------------------------------------------------------------------------------
# drill

@pytest.mark.parametrize('source', ['local', 'offsite'])
def test_drill_check_mode_changes_nothing(live, sets, playbook, keys, base, source):
    world = _world(base, 'drill-' + source)
    root, offsite = _copy_sets(sets, world)
    staging = PREFIX + '-staging-' + source
    try:
        # a staging database a real drill would drop and restore over (it saves it first, in safety_root)
        ak.run_postgres(staging, PASSWORD, image=IMAGE, user='postgres', database='postgres')
        _docker('exec', staging, 'createdb', '-U', 'postgres', DATABASE)
        _sql(staging, 'CREATE TABLE staging_only (id int); INSERT INTO staging_only VALUES (1), (2)')
        services = [
            {'name': SERVICE, 'kind': 'postgres', 'scratch_name': PREFIX + '-scratch-' + source},
            {'name': 'ledger-staging', 'kind': 'postgres',
             'staging': {'container': staging, 'user': 'postgres', 'database': DATABASE,
                         'safety_root': str(world / 'safety')}},
        ]
        shutil.copytree(str(root / SERVICE), str(root / 'ledger-staging'), symlinks=True)
        shutil.copytree(str(offsite / SERVICE), str(offsite / 'ledger-staging'), symlinks=True)
        host_vars = {
            'drill_services': services,
            'drill_source': source,
            'drill_backup_root': str(root),
            'drill_offsite': {'backend': 'local', 'target': str(offsite)},
            'drill_identity': str(keys.age_identity),
            'drill_workdir': str(world / 'work'),
            'drill_report_dir': str(world / 'reports'),
            'drill_metrics_dir': str(world / 'metrics'),
            'drill_scratch_image_pattern': 'idp-recovery/postgres:{major}',
            'drill_scratch_tmpfs': True,
        }

        def state():
            return {'world': tree(world), 'live': database_digest(live['name']), 'staging': database_digest(staging),
                    'containers': containers()}

        runs = unchanged(state, lambda options: playbook('drill', host_vars, *options))
    finally:
        ak.remove_containers(staging)
    for run in runs:
        run.assert_ok()
        plan = run.shown(': Show the plan')
        assert plan and 'Nothing was changed' in plan[0][0], str(run)
        assert len(plan[0]) == 3, plan
        assert not run.ran(': Start the scratch container (%s)' % SERVICE), str(run)


# ---------------------------------------------------------------------------------------------
# schedule

def test_schedule_check_mode_changes_nothing(playbook, base):
    world = _world(base, 'schedule')
    unit_dir = world / 'units'
    unit_dir.mkdir()
    cron_file = 'idp-check-%s' % SUFFIX
    common = {
        'schedule_ansible_playbook': str(conftest.TOOL_BIN / 'ansible-playbook'),
        'schedule_inventory': str(world / 'inventory.yml'),
        'schedule_state_dir': str(world / 'state'),
        'schedule_backup_root': str(world / 'backups'),
        'schedule_config_dir': str(world / 'config'),
        'schedule_log_dir': str(world / 'log'),
        'schedule_unit_dir': str(unit_dir),
        'schedule_unit_prefix': 'idp-check-%s' % SUFFIX,
        'schedule_cron_file': cron_file,
        'schedule_user': 'root',
        'schedule_group': 'root',
        'schedule_create_user': False,
    }
    installed = playbook('schedule', dict(common, schedule_verify=False))
    installed.assert_ok()
    timers = sorted(p.name for p in unit_dir.glob('*.timer'))
    assert len(timers) == 3 and len(list((unit_dir / 'timers.target.wants').iterdir())) == 3, timers

    def state():
        return {'world': tree(world), 'host': host_files()}

    variants = {
        # other calendars, the drill job dropped, and a new user and group to create
        'changed': dict(common, schedule_backup_on_calendar='*-*-* 03:17:00', schedule_drill_enabled=False,
                        schedule_offsite_extra_vars={'backup_offsite_enabled': True, 'changed': True},
                        schedule_user='idpchk%s' % SUFFIX, schedule_group='idpchk%s' % SUFFIX,
                        schedule_create_user=True),
        # every unit, cron file and setting removed
        'absent': dict(common, schedule_state='absent'),
    }
    for label, host_vars in sorted(variants.items()):
        runs = unchanged(state, lambda options, host_vars=host_vars: playbook('schedule', host_vars, *options))
        for run in runs:
            run.assert_ok(label)
            assert any(r.get('changed') for r in run.results), '%s: %r' % (label, run)
    assert not os.path.exists('/etc/cron.d/%s' % cron_file)
    for name in ('passwd', 'group'):
        with open('/etc/%s' % name) as handle:
            assert 'idpchk%s:' % SUFFIX not in handle.read()


# ---------------------------------------------------------------------------------------------
# pitr

PITR_STANZA = 'checkmode'


def _pitr_vars(container, world, **extra):
    (world / 'units').mkdir(exist_ok=True)  # the unit directory exists, as /etc/systemd/system does
    found = {
        'pitr_stanza': PITR_STANZA,
        'pitr_container': container,
        'pitr_repos': [{'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_pass': 'cipher-%s' % SUFFIX,
                        'retention_full': 2}],
        'pitr_options': {'start-fast': True, 'log-level-file': 'off'},
        'pitr_unit_dir': str(world / 'units'),
        'pitr_unit_prefix': 'idp-check-pitr-%s' % SUFFIX,
        'pitr_metrics_dir': str(world / 'metrics'),
    }
    found.update(extra)
    return found


def _pitr_server(container):
    """What the pitr role could change on the server: its configuration files, its settings, the
    pgBackRest configuration and repository, its start time (a restart), and its contents."""
    listing = _docker('exec', container, 'sh', '-c',
                      'cd / && for f in /etc/pgbackrest/* "$PGDATA/postgresql.auto.conf" "$PGDATA/postgresql.conf"; '
                      'do [ -e "$f" ] && sha256sum "$f"; done; '
                      'find /var/lib/pgbackrest /etc/pgbackrest -printf "%p %y %s %m %u\\n" 2>/dev/null | sort; true')
    settings = _sql(container, "SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings "
                               "WHERE name LIKE 'archive%' OR name = 'wal_level'", database='postgres')
    return {'files': listing, 'settings': settings, 'database': database_digest(container)}


@pytest.fixture(scope='module')
def pitr_servers(playbook, base):
    """A PostgreSQL server that was never set up, and one set up for real by the pitr playbook."""
    _have_docker()
    fresh = PREFIX + '-pitr-fresh'
    ready = PREFIX + '-pitr-ready'
    try:
        for name in (fresh, ready):
            # data on the image's volume, not a tmpfs: the setup restarts the server
            _docker('run', '-d', '--name', name, '-e', 'POSTGRES_PASSWORD=%s' % PASSWORD, IMAGE)
            ak.wait_for_postgres(name)
            _docker('exec', name, 'createdb', '-U', 'postgres', DATABASE)
            _sql(name, SCHEMA)
        world = base / 'pitr-setup'
        world.mkdir()
        setup = playbook('pitr', _pitr_vars(ready, world, pitr_verify_units=False))
        setup.assert_ok()
        assert setup.ran(': Take the first full backup'), setup
        yield {'fresh': fresh, 'ready': ready}
    finally:
        ak.remove_containers(fresh, ready)


@pytest.mark.parametrize('server', ['fresh', 'ready'])
def test_pitr_check_mode_changes_nothing(pitr_servers, playbook, base, server):
    container = pitr_servers[server]
    world = _world(base, 'pitr-' + server)
    # a real run would rewrite the configuration, change archive settings and restart the server
    host_vars = _pitr_vars(container, world, pitr_options={'start-fast': True, 'log-level-file': 'off',
                                                           'process-max': 2},
                           pitr_archive_settings={'archive_timeout': '120s'})

    def state():
        return {'world': tree(world), 'server': _pitr_server(container), 'containers': containers()}

    runs = unchanged(state, lambda options: playbook('pitr', host_vars, *options))
    for run in runs:
        run.assert_ok()
        setup = run.ran(': Write the pgBackRest configuration and turn on WAL archiving')
        assert setup and setup[0]['changed'] and setup[0]['config_changed'], str(run)
        assert run.ran(': Install the backup timer units'), str(run)
