# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The authentik stand-in behaves like Authentik where a backup and restore depend on it
(tests/images/authentik-standin/FIDELITY.md cites the upstream source of each behaviour), and
the collection reads ``authentik_version_history`` the way its rows are written.

Everything runs against real PostgreSQL containers and the stand-in image: the database is
really stopped, the role's password really changed, the advisory lock really held by another
session, and a database of the previous release line really migrated.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import pytest

import authentik_support as ak

PREFIX = 'idp-test-akfid-%s' % uuid.uuid4().hex[:6]
OWN_LINE_PREVIOUS = '2025.8.3'    # the release line before the stand-in's 2025.10
ADVISORY_LOCK = 1000              # lifecycle/migrate.py: ADV_LOCK_UID


def _docker(*argv, check=True, timeout=120):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check, timeout=timeout)


@pytest.fixture(scope='module', autouse=True)
def standin_image():
    """The stand-in image, rebuilt when its recipe (Dockerfile, script, base image) changed."""
    ak.ensure_standin_image()


class Deployment(object):
    """PostgreSQL with the Authentik-shaped fixture on its own network; stand-ins on demand."""

    def __init__(self, name, version=ak.VERSION, users=60):
        self.name = name
        self.network = name
        self.db = name + '-postgres'
        self.password = 'pw-' + uuid.uuid4().hex
        self.apps = []
        _docker('network', 'create', self.network)
        ak.run_postgres(self.db, self.password, network=self.network)
        self.counts = ak.load_fixture(self.db, users=users, version=version)

    def start(self, mode='server', suffix=None):
        name = '%s-%s' % (self.name, suffix or mode)
        ak.run_standin(name, mode, self.db, self.password, self.network)
        self.apps.append(name)
        return name

    def url(self, server, path='/-/health/ready/'):
        return 'http://%s:9000%s' % (ak.container_ip(server, self.network), path)

    def sql(self, statement):
        return ak.psql(self.db, statement).strip()

    def history(self):
        """[(id, version, build)] of authentik_version_history, in id order."""
        rows = self.sql("SELECT coalesce(json_agg(json_build_array(id, version, build) ORDER BY id), '[]') "
                        'FROM authentik_version_history')
        return [tuple(row) for row in json.loads(rows)]

    def remove(self):
        ak.remove_containers(*(self.apps + [self.db]))
        _docker('network', 'rm', self.network, check=False)


@pytest.fixture
def deployment():
    created = []

    def make(**kwargs):
        found = Deployment('%s-%s' % (PREFIX, uuid.uuid4().hex[:6]), **kwargs)
        created.append(found)
        return found
    yield make
    for found in created:
        found.remove()


def _exit_status(container, timeout=90):
    """The exit code of a container once it stopped (None when it still runs after timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(_docker('inspect', '-f', '{{ json .State }}', container).stdout)
        if not state['Running']:
            return state['ExitCode']
        time.sleep(0.5)
    return None


def _logs(container):
    proc = _docker('logs', container, check=False)
    return (proc.stdout + proc.stderr).decode('utf-8', 'replace')


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError('%s: not within %s s' % (what, timeout))


# authentik_version_history ordering -----------------------------------------------------------

def test_equal_timestamps_the_later_row_is_the_version(run_module, deployment, tmp_path, keys):
    """Rows written in one transaction share now(); the row with the higher id was written last."""
    dep = deployment()
    dep.sql("INSERT INTO authentik_version_history (\"timestamp\", version, build) "
            "VALUES (now(), '2025.10.1', 'written-first'), (now(), '2025.10.2', 'written-last')")
    root = tmp_path / 'backups'
    opened = run_module('backup_set', root=str(root), service='authentik', state='present')
    dumped = run_module('authentik_dump', set_dir=opened['path'], container=dep.db, recipients=[keys.age_recipient])
    assert not dumped.get('failed'), dumped
    assert dumped['authentik_version']['version'] == '2025.10.2', dumped['authentik_version']
    assert dumped['authentik_version']['build'] == 'written-last'
    assert ak.newest_version(dep.db) == ('2025.10.2', 'written-last')


# /-/health/ready/ ------------------------------------------------------------------------------

def test_ready_follows_the_database_connection_not_its_tables(deployment):
    """ReadyView opens every connection anew: a stopped database and a password that no longer works
    answer 503, live stays 200; a database that lost a table still accepts connections and is ready."""
    dep = deployment()
    server = dep.start('server')
    url = ak.wait_ready(server, dep.network)
    live = dep.url(server, '/-/health/live/')

    # the server's open connection keeps working; only a new one is refused
    dep.sql("ALTER ROLE %s PASSWORD 'not-the-deployment-password'" % ak.DB_USER)
    try:
        _wait_for(lambda: ak.health(url) == 503, 30, 'ready answers 503 once new connections are refused')
        assert ak.health(live) == 200
    finally:
        dep.sql("ALTER ROLE %s PASSWORD '%s'" % (ak.DB_USER, dep.password))
    _wait_for(lambda: ak.health(url) == 200, 30, 'ready answers 200 with the password back')

    dep.sql('DROP TABLE authentik_core_user CASCADE')
    time.sleep(1)
    assert ak.health(url) == 200, 'readiness reads no table: it must stay 200 without authentik_core_user'

    # the database's data is on tmpfs: it comes back as an empty cluster, which is just as ready
    _docker('stop', '-t', '5', dep.db)
    _wait_for(lambda: ak.health(url) == 503, 30, 'ready answers 503 while PostgreSQL is stopped')
    assert ak.health(live) == 200
    _docker('start', dep.db)
    ak.wait_for_postgres(dep.db)
    _wait_for(lambda: ak.health(url) == 200, 60, 'ready answers 200 once PostgreSQL is back')


# start on a database of another version ---------------------------------------------------------

def _previous_line_database(deployment):
    """A database of the previous release line: its newest history row is 2025.8.3 and the stand-in's
    migration authentik_tenants.0005_tenant_event_retention is not applied yet."""
    dep = deployment(version=OWN_LINE_PREVIOUS)
    dep.sql("ALTER TABLE authentik_tenants_tenant DROP COLUMN event_retention; "
            "DELETE FROM django_migrations WHERE app = 'authentik_tenants' AND name = '0005_tenant_event_retention'")
    return dep


def test_a_previous_line_database_is_migrated_once_by_server_and_worker(deployment):
    dep = _previous_line_database(deployment)
    before = dep.history()
    started = []
    threads = [threading.Thread(target=lambda mode=mode: started.append(dep.start(mode))) for mode in ('server', 'worker')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server = [name for name in started if name.endswith('-server')][0]
    worker = [name for name in started if name.endswith('-worker')][0]
    ak.wait_ready(server, dep.network, timeout=90)
    _wait_for(lambda: _docker('exec', worker, 'ak', 'healthcheck', check=False).returncode == 0, 60,
              'the worker is healthy')

    # the migration ran exactly once and did what it says
    assert dep.sql("SELECT count(*) FROM django_migrations WHERE app = 'authentik_tenants' "
                   "AND name = '0005_tenant_event_retention' AND applied > now() - interval '5 minutes'") == '1'
    assert dep.sql('SELECT string_agg(event_retention, \',\' ORDER BY schema_name) FROM authentik_tenants_tenant') \
        == 'days=365,days=365'
    assert dep.sql("SELECT column_default IS NULL FROM information_schema.columns "
                   "WHERE table_name = 'authentik_tenants_tenant' AND column_name = 'event_retention'") == 't'
    # one row for this version, by whichever came first; the other found it there
    after = dep.history()
    assert after[:len(before)] == before
    added = after[len(before):]
    assert [row[1] for row in added] == [ak.VERSION], added
    assert ak.newest_version(dep.db)[0] == ak.VERSION
    logs = _logs(server) + _logs(worker)
    assert logs.count('"Applying migration"') == 1, logs
    assert logs.count('recorded this version in authentik_version_history') == 1, logs

    # a restart finds nothing to do
    _docker('restart', '-t', '5', server)
    ak.wait_ready(server, dep.network, timeout=90)
    assert dep.history() == after


def test_the_migration_pass_waits_for_the_advisory_lock(deployment):
    dep = _previous_line_database(deployment)
    before = dep.history()
    holder = subprocess.Popen(['docker', 'exec', dep.db, 'psql', '-X', '-q', '-U', ak.DB_USER, '-d', ak.DB_NAME,
                               '-c', 'SELECT pg_advisory_lock(%d)' % ADVISORY_LOCK, '-c', 'SELECT pg_sleep(12)'],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: dep.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %d "
                                  "AND granted" % ADVISORY_LOCK) == '1', 20, 'the other session holds the lock')
        server = dep.start('server')
        url = dep.url(server)
        _wait_for(lambda: 'waiting to acquire database lock' in _logs(server), 30, 'the server waits for the lock')
        for _attempt in range(6):
            assert ak.health(url) in (0, 503), 'ready before the migration pass could run'
            assert dep.history() == before, 'history written without the lock'
            time.sleep(0.5)
    finally:
        holder.wait(timeout=60)
    ak.wait_ready(server, dep.network, timeout=60)
    assert [row[1] for row in dep.history()[len(before):]] == [ak.VERSION]


@pytest.mark.parametrize('version, phrase', [
    ('2025.12.1', 'newer than this authentik'),
    ('2025.6.2', 'upgrade through the releases in between'),
])
def test_a_database_of_another_line_stops_the_start_and_is_left_alone(deployment, version, phrase):
    dep = deployment(version=version)
    before = dep.history()
    migrations = dep.sql('SELECT count(*) FROM django_migrations')
    server = dep.start('server')
    assert _exit_status(server) == 1
    logs = _logs(server)
    assert 'refusing to start' in logs and phrase in logs and 'Major version skips are not allowed' in logs, logs
    assert dep.history() == before
    assert dep.sql('SELECT count(*) FROM django_migrations') == migrations


def test_a_newer_patch_of_the_same_line_starts_with_a_warning(deployment):
    dep = deployment(version='2025.10.4')
    before = dep.history()
    server = dep.start('server')
    ak.wait_ready(server, dep.network, timeout=90)
    logs = _logs(server)
    assert 'Unsupported downgrade detected' in logs, logs
    # its own version had no row: it gets one, and is now the newest
    assert [row[1] for row in dep.history()[len(before):]] == [ak.VERSION]
    assert ak.newest_version(dep.db)[0] == ak.VERSION
