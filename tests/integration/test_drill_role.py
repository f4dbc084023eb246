# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The drill playbook (idp.recovery.drill) run for real with ansible-playbook on sets made by the
real modules: an Ory set drilled into a second Ory stand-in (token, Keto and identity checks) while
the live stand-in is left alone; staging targets that are the live Ory project or the live
PostgreSQL database, however spelled, refused before anything is written, and a staging database
that is not the live one restored after its safety set; a set with a flipped byte failing at
verify; check mode naming the set it would restore (local and offsite) and changing nothing; a
failing SQL check failing the drill and still removing the disposable container; and a drill from
the offsite copy with drill_scratch_keep leaving the container for inspection. No staging
password or API key appears in any task result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

import authentik_support as ak
import conftest
from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import

PREFIX = 'idp-test-drillrole-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'drillrole-%s' % uuid.uuid4().hex[:10]
IMAGE_15 = os.environ.get('IDP_POSTGRES_15_IMAGE', 'idp-recovery/postgres:15')
SERVICE = 'ledger'
DATABASE = 'ledger'
ENTRIES = 5000
SCHEMA = """
CREATE TABLE public.account (id serial PRIMARY KEY, name text NOT NULL);
CREATE SCHEMA books;
CREATE TABLE books.entry (id bigserial PRIMARY KEY, account integer REFERENCES public.account(id), cents bigint);
INSERT INTO public.account (name) SELECT 'account ' || n FROM generate_series(1, 40) AS n;
INSERT INTO books.entry (account, cents) SELECT 1 + n % 40, n * 3 FROM generate_series(1, {entries}) AS n;
""".format(entries=ENTRIES)
SCRATCH_FILTER = 'label=io.idp-recovery.scratch=true'
# a benchmark of the stock tools in the schema of docs/performance.json
BENCHMARK = Path(__file__).resolve().parents[1] / 'fixtures' / 'drill' / 'performance.json'
THROUGHPUT_TASK = ": Show what limits each service's recovery time and each step's throughput against the stock tools"
ORY_IDENTITIES = 24


# ---------------------------------------------------------------------------------------------
# helpers

def _docker(*argv, check=True):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check, timeout=120)


def _psql(container, sql, database=DATABASE):
    return ak.psql(container, sql, database=database, user='postgres').strip()


def _counts(container, database=DATABASE):
    return ak.table_counts(container, database=database, user='postgres')


def _databases(container):
    """{name: oid} of the server's databases: a dropped and recreated database gets a new oid."""
    return json.loads(_psql(container, "SELECT json_object_agg(datname, oid) FROM pg_database", database='postgres'))


def _scratch_containers(name):
    """IDs of the scratch containers (running or not) called ``name``."""
    out = _docker('ps', '-a', '-q', '--filter', SCRATCH_FILTER, '--filter', 'name=^/%s$' % name).stdout.decode()
    return out.split()


def _unique(tag):
    return '%s-%s-%s' % (PREFIX, tag, uuid.uuid4().hex[:4])


class Drill(object):
    """One run of ``ansible-playbook -i <inventory> idp.recovery.drill`` with the drill_* variables in the
    inventory, as an operator runs it; ``results`` are the json callback's task results."""

    def __init__(self, rc, stdout, stderr, report_dir):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.report_dir = Path(report_dir)
        self.results = conftest.PlaybookRunner.results(stdout)

    def task(self, suffix):
        return [r for r in self.results if r['task'].endswith(suffix)]

    @property
    def report(self):
        return json.loads((self.report_dir / 'latest.json').read_text(encoding='utf-8'))

    def service(self, name):
        return next(s for s in self.report['services'] if s['name'] == name)

    def __repr__(self):
        failed = [dict((k, r.get(k)) for k in ('task', 'msg', 'results') if k in r)
                  for r in self.results if r.get('failed') or r.get('task', '').endswith(': Record the failure')]
        report = self.report if (self.report_dir / 'latest.json').exists() else None
        return 'rc %s\nfailed tasks: %s\nreport: %s\nstderr: %s' % (
            self.rc, json.dumps(failed, indent=1)[-6000:], json.dumps(report, indent=1)[-6000:], self.stderr[-3000:])


@pytest.fixture
def drill(test_env, tmp_path, keys):
    """``drill(services, check=False, **variables) -> Drill``: the playbook with the test's own work, report and
    metrics directories and the age identity of the ``keys`` fixture."""
    def run(services, check=False, **variables):
        base = Path(str(tmp_path / 'drill'))
        base.mkdir(exist_ok=True)
        directory = Path(conftest._private_dir(base, 'run-'))  # pylint: disable=protected-access
        host = {
            'ansible_connection': 'local',
            'ansible_python_interpreter': str(conftest.PYTHON),
            'drill_services': services,
            'drill_identity': str(keys.age_identity),
            'drill_workdir': str(directory / 'work'),
            'drill_report_dir': str(directory / 'reports'),
            'drill_metrics_dir': str(directory / 'metrics'),
            'drill_scratch_image_pattern': 'idp-recovery/postgres:{major}',
            'drill_scratch_tmpfs': True,
            'drill_scratch_ready_timeout': 90,
        }
        host.update(variables)
        inventory = directory / 'inventory.yml'
        conftest._write_private(inventory, json.dumps(  # pylint: disable=protected-access
            {'all': {'hosts': {'localhost': host}}}, indent=2, default=str))
        argv = [str(conftest.TOOL_BIN / 'ansible-playbook'), '-i', str(inventory), 'idp.recovery.drill']
        if check:
            argv.append('--check')
        env = dict(test_env, ANSIBLE_STDOUT_CALLBACK=conftest.JSON_CALLBACK)
        proc = subprocess.run(argv, env=env, cwd=str(directory), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=600, check=False)
        return Drill(proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'),
                     directory / 'reports')
    return run


# ---------------------------------------------------------------------------------------------
# a PostgreSQL set

@pytest.fixture(scope='module')
def live_pg():
    """The "live" database: PostgreSQL 15 with a password, its port published on 127.0.0.1 only."""
    name = PREFIX + '-live'
    argv = ['docker', 'run', '-d', '--name', name, '-e', 'POSTGRES_USER=postgres', '-e', 'POSTGRES_PASSWORD',
            '--tmpfs', '/var/lib/postgresql/data', '-p', '127.0.0.1::5432', IMAGE_15]
    proc = subprocess.run(argv, env=dict(os.environ, POSTGRES_PASSWORD=PASSWORD), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        ak.wait_for_postgres(name)
        _docker('exec', name, 'createdb', '-U', 'postgres', DATABASE)
        ak.psql(name, SCHEMA, database=DATABASE, user='postgres')
        info = json.loads(_docker('inspect', name).stdout)[0]
        port = int(info['NetworkSettings']['Ports']['5432/tcp'][0]['HostPort'])
        yield {'name': name, 'port': port, 'ip': ak.container_ip(name)}
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def pg_set(module_runner, live_pg, keys, tmp_path_factory):
    """A complete, age-encrypted postgres set of the live database: (backup root, set path, counts)."""
    root = tmp_path_factory.mktemp('drillrole') / 'backups'
    opened = module_runner('backup_set', root=str(root), service=SERVICE, kind='postgres', state='present')
    assert opened.get('failed') is not True, opened
    dumped = module_runner('postgres_dump', set_dir=opened['path'], container=live_pg['name'], user='postgres',
                           database=DATABASE, recipients=[keys.age_recipient])
    assert dumped.get('failed') is not True, dumped
    finalized = module_runner('backup_set', path=opened['path'], state='finalized')
    assert finalized.get('failed') is not True, finalized
    counts = _counts(live_pg['name'])
    assert counts == {'public.account': 40, 'books.entry': ENTRIES}
    return root, Path(opened['path']), counts


@pytest.fixture(scope='module')
def offsite(module_runner, pg_set, tmp_path_factory):
    """The offsite copy of the set (backend local, a directory standing for a mounted share): drill_offsite."""
    _root, set_dir, _counts_ = pg_set
    target = tmp_path_factory.mktemp('drillrole-offsite') / 'offsite'
    target.mkdir(mode=0o700)  # the mount point of the share
    uploaded = module_runner('offsite_upload', path=str(set_dir), backend='local', target=str(target))
    assert uploaded.get('failed') is not True, uploaded
    assert (target / SERVICE / set_dir.name / 'MANIFEST.sha256').is_file()
    return {'backend': 'local', 'target': str(target)}


# ---------------------------------------------------------------------------------------------
# Ory

def _ory_set(run_module, live, keys, root, service='ory'):
    opened = run_module('backup_set', root=str(root), service=service, kind='ory', state='present')
    assert not opened.get('failed'), opened
    exported = run_module('ory_export', set_dir=opened['path'], recipients=[keys.age_recipient], **live.connection())
    assert not exported.get('failed'), exported
    finalized = run_module('backup_set', path=opened['path'], state='finalized')
    assert not finalized.get('failed'), finalized
    return Path(opened['path']), exported['ory']


def _staging(standin, **extra):
    """The staging block of a drill service for this stand-in (as Ory Network)."""
    found = {'deployment': 'network', 'project_url': standin.url, 'project_api_key': standin.api_key,
             'project_id': standin.project_id, 'console_url': standin.url, 'workspace_api_key': standin.workspace_key}
    found.update(extra)
    return found


def _ory_state(standin):
    """Everything a write could change in a stand-in: identities, clients, keys, tuples, configuration."""
    summary = dict(standin.summary())
    summary.pop('tokens_issued', None)
    status, _h, clients = standin.api('GET', '/admin/clients', {'page_size': 500})
    assert status == 200, clients
    status, _h, project = standin.api('GET', '/projects/%s' % standin.project_id)
    assert status == 200, project
    return {'summary': summary, 'identities': sorted(standin.all_identities(), key=lambda i: i['id']),
            'clients': sorted(clients, key=lambda c: c['client_id']), 'tuples': sorted(
                json.dumps(t, sort_keys=True) for t in standin.all_tuples()), 'project': project}


def test_ory_drill_passes_against_the_staging_standin(ory_standin_factory, run_module, keys, tmp_path, drill):
    live = ory_standin_factory(seed_identities=ORY_IDENTITIES, seed_clients=2, default_jwk_sets=True)
    staging = ory_standin_factory(preset='blank', default_jwk_sets=True)
    root = tmp_path / 'backups'
    status, _h, clients = live.api('GET', '/admin/clients')
    assert status == 200
    # a client_credentials client authenticating with client_secret_basic (the drill's default method)
    client = next(c for c in clients if c['grant_types'] == ['client_credentials']
                  and c['token_endpoint_auth_method'] == 'client_secret_basic')
    person = next(i for i in live.all_identities() if i['traits']['email'] == 'user000004@example.org')
    # a tuple whose subject is not an identity (kept as it is), and one that names an identity (its ID changes)
    status, _h, body = live.api('PUT', '/admin/relation-tuples', body={
        'namespace': 'Document', 'object': 'doc-drill', 'relation': 'viewers', 'subject_id': 'service:billing'})
    assert status == 201, body
    owner = next(t for t in live.all_tuples() if t['namespace'] == 'Document' and t['object'] == 'doc-4')
    assert owner['subject_id'] == person['id']
    for subject in ('service:billing', person['id']):
        status, _h, body = live.api('GET', '/relation-tuples/check/openapi', {
            'namespace': 'Document', 'object': 'doc-drill' if subject == 'service:billing' else 'doc-4',
            'relation': 'view', 'subject_id': subject})
        assert status == 200 and body['allowed'] is True, body
    set_dir, exported = _ory_set(run_module, live, keys, root)
    assert exported['counts']['identities'] == ORY_IDENTITIES
    before = _ory_state(live)
    live.control('reset-stats', {})
    assert staging.summary()['identities'] == 0

    service = {
        'name': 'ory', 'kind': 'ory', 'staging': _staging(staging),
        'ory_token': {'client_id': client['client_id']},
        'ory_permissions': [
            {'namespace': 'Document', 'object': 'doc-drill', 'relation': 'view', 'subject_id': 'service:billing',
             'allowed': True},
            # the live ID of the owner of doc-4: in the staging project the tuple names the identity's new ID
            {'namespace': 'Document', 'object': 'doc-4', 'relation': 'view', 'subject_id': person['id'],
             'allowed': False},
            # through subject sets: squad-0 is inside team-0, inside group-0, whose members view shared-0
            {'namespace': 'Document', 'object': 'shared-0', 'relation': 'view',
             'subject_set': {'namespace': 'Group', 'object': 'squad-0', 'relation': 'members'}, 'allowed': True},
            {'namespace': 'Document', 'object': 'shared-1', 'relation': 'view',
             'subject_set': {'namespace': 'Group', 'object': 'squad-0', 'relation': 'members'}, 'allowed': False},
        ],
        'ory_identities': [{'identifier': 'user000004@example.org', 'external_id': person['id']}],
    }
    run = drill([service], drill_source='local', drill_backup_root=str(root))
    assert run.rc == 0, run
    assert run.task(': Show the result')[0]['msg'][0] == 'DRILL PASSED', run

    report = run.report
    assert report['result'] == 'passed', report
    ory = run.service('ory')
    assert ory['result'] == 'passed' and ory['kind'] == 'ory'
    assert ory['set'] == str(set_dir) and ory['source'] == 'local:%s' % set_dir
    assert ory['target'] == 'staging Ory project %s' % staging.url
    assert [s['name'] for s in ory['steps']] == ['pick', 'verify', 'check staging', 'restore', 'checks']
    checks = ory['checks']
    assert all(c['ok'] for c in checks), checks
    kinds = [c['kind'] for c in checks]
    assert kinds.count('keto') == 4 and kinds.count('ory_token') == 1 and kinds.count('identity') == 1, kinds
    assert {'verify', 'guard', 'row_counts'} <= set(kinds), kinds
    token = next(c for c in checks if c['kind'] == 'ory_token')
    assert token['name'] == 'token for %s' % client['client_id'] and token['actual'] == 'issued'
    keto = [c for c in checks if c['kind'] == 'keto']
    assert [(c['expected'], c['actual']) for c in keto] == [('allowed', 'allowed'), ('denied', 'denied')] * 2
    imported = next(c for c in checks if c['kind'] == 'row_counts')
    assert imported['actual']['identities'] == ORY_IDENTITIES, imported
    assert imported['expected']['identities'] == ORY_IDENTITIES

    metrics = (run.report_dir.parent / 'metrics' / 'idp_recovery_drill.prom').read_text()
    assert 'idp_recovery_drill_success 1' in metrics, metrics
    # the live stand-in was not even asked, and is unchanged
    assert live.stats()['requests'] == 0
    assert _ory_state(live) == before
    # the staging stand-in holds the identities (new IDs, the old ones kept as external IDs) and minted the token
    after = staging.all_identities()
    assert len(after) == ORY_IDENTITIES
    assert sorted(i['external_id'] for i in after) == sorted(i['id'] for i in before['identities'])
    assert sorted(i['traits']['email'] for i in after) == sorted(i['traits']['email'] for i in before['identities'])
    assert staging.summary()['tuples'] == before['summary']['tuples']
    assert staging.summary()['tokens_issued'] >= 1
    # no secret of either project in the report or the play's output
    text = (run.report_dir / 'latest.json').read_text() + (run.report_dir / 'latest.html').read_text() + run.stdout
    for secret in (live.api_key, live.workspace_key, staging.api_key, staging.workspace_key):
        assert secret not in text
    # the stand-ins saw only requests the spec allows
    for standin in (live, staging):
        stats = standin.stats()
        assert stats['contract_violations'] == [] and stats['request_rejections'] == []


def test_ory_staging_that_is_the_live_project_is_refused(ory_standin_factory, run_module, keys, tmp_path, drill):
    live = ory_standin_factory(seed_identities=6, seed_clients=1, default_jwk_sets=True)
    root = tmp_path / 'backups'
    _ory_set(run_module, live, keys, root, service='ory-url')
    _ory_set(run_module, live, keys, root, service='ory-project')
    _ory_set(run_module, live, keys, root, service='ory-address')
    before = _ory_state(live)
    live.control('reset-stats', {})
    port = live.url.rsplit(':', 1)[1]

    services = [
        # the live project's URL, spelled with capitals and a trailing slash
        {'name': 'ory-url', 'kind': 'ory',
         'staging': _staging(live, project_url=live.url.upper() + '/', project_id=str(uuid.uuid4()))},
        # another name for the same host, but the live project's ID
        {'name': 'ory-project', 'kind': 'ory', 'staging': _staging(live, project_url='http://localhost:%s' % port)},
        # another name for the same host and another project ID: refused by ory_import, by address, before any request
        {'name': 'ory-address', 'kind': 'ory',
         'staging': _staging(live, project_url='http://localhost:%s' % port, project_id=str(uuid.uuid4()))},
    ]
    for service in services:
        service.update({'ory_token': {'client_id': 'svc-1', 'method': 'client_secret_post'},
                        'ory_identities': [{'identifier': 'user000000@example.org'}]})
    run = drill(services, drill_source='local', drill_backup_root=str(root))
    assert run.rc != 0, run
    failure = run.task(': Fail the drill when a check failed or a target was missed')
    assert failure and failure[0]['msg'].startswith('DRILL FAILED'), run
    assert run.report['result'] == 'failed'
    for service in services[:2]:
        found = run.service(service['name'])
        assert found['result'] == 'failed'
        assert 'is the live project the set was exported from' in found['error'], found
        assert 'a drill never writes there' in found['error']
        assert found['steps'][-1]['name'] == 'Refuse a staging project that is the live one'
        assert found['steps'][-1]['ok'] is False
        assert [s['name'] for s in found['steps'][:2]] == ['pick', 'verify']
        assert not any(c['kind'] in ('ory_token', 'keto', 'identity') for c in found['checks'])
    assert 'project %s' % live.project_id in run.service('ory-project')['error']
    by_address = run.service('ory-address')
    assert by_address['result'] == 'failed'
    assert 'reaches the same server as' in by_address['error'] and 'nothing was written' in by_address['error'], by_address
    assert by_address['steps'][-1]['name'] == 'Import the export into the staging project'
    assert not any(c['kind'] in ('ory_token', 'keto', 'identity') for c in by_address['checks'])
    # the live stand-in received no request at all, and is as it was
    assert live.stats()['requests'] == 0
    assert _ory_state(live) == before


# ---------------------------------------------------------------------------------------------
# PostgreSQL

def _pg_service(**extra):
    found = {'name': SERVICE, 'kind': 'postgres'}
    found.update(extra)
    return found


@pytest.mark.parametrize('spelling', ['container', 'published port', 'container address'])
def test_staging_database_that_is_the_live_one_is_refused(pg_set, live_pg, drill, spelling):
    root, set_dir, counts = pg_set
    staging = {
        'container': {'container': live_pg['name']},
        'published port': {'host': '127.0.0.1', 'port': live_pg['port'], 'user': 'postgres', 'password': PASSWORD},
        'container address': {'host': live_pg['ip'], 'port': 5432, 'user': 'postgres', 'password': PASSWORD},
    }[spelling]
    before = (_counts(live_pg['name']), _databases(live_pg['name']))
    safety = root / ('%s-pre-restore' % SERVICE)
    sets_before = sorted(p.name for p in (root / SERVICE).iterdir())

    run = drill([_pg_service(staging=staging)], drill_source='local', drill_backup_root=str(root))
    assert run.rc != 0, run
    assert 'DRILL FAILED' in run.task(': Fail the drill when a check failed or a target was missed')[0]['msg']
    found = run.service(SERVICE)
    assert run.report['result'] == 'failed' and found['result'] == 'failed'
    assert found['steps'][-1]['name'] == 'Refuse a staging target that resolves to the live database'
    assert 'refusing target' in found['error'] and 'live database' in found['error'], found['error']
    assert 'container %s (database %s)' % (live_pg['name'], DATABASE) in found['error']
    assert PASSWORD not in json.dumps(run.report) and PASSWORD not in run.stdout
    # nothing touched: same rows, no database dropped or created, no safety set, no new set
    assert (_counts(live_pg['name']), _databases(live_pg['name'])) == before
    assert before[0] == counts
    assert not safety.exists()
    assert sorted(p.name for p in (root / SERVICE).iterdir()) == sets_before


def test_staging_database_that_is_not_the_live_one_is_restored(pg_set, live_pg, drill, tmp_path):
    root, set_dir, counts = pg_set
    staging = _unique('staging')
    safety_root = tmp_path / 'safety'
    try:
        ak.run_postgres(staging, PASSWORD, image=IMAGE_15, user='postgres', database='postgres')
        _docker('exec', staging, 'createdb', '-U', 'postgres', DATABASE)
        _psql(staging, 'CREATE TABLE old (id int); INSERT INTO old VALUES (1), (2)')
        live_before = (_counts(live_pg['name']), _databases(live_pg['name']))
        service = _pg_service(staging={'container': staging, 'user': 'postgres', 'password': PASSWORD,
                                       'safety_root': str(safety_root)})
        run = drill([service], drill_source='local', drill_backup_root=str(root))
        assert run.rc == 0, run
        found = run.service(SERVICE)
        assert found['result'] == 'passed'
        assert found['target'] == 'staging container %s (database %s)' % (staging, DATABASE)
        assert [s['name'] for s in found['steps']] == ['pick', 'verify', 'check staging', 'restore', 'checks']
        guard = next(c for c in found['checks'] if c['kind'] == 'guard')
        assert guard['ok'] and 'container %s (database %s)' % (live_pg['name'], DATABASE) in guard['detail'], guard
        assert _counts(staging) == counts
        # the staging database was saved before it was replaced; the live one was not touched
        saved = sorted(safety_root.iterdir())
        assert len(saved) == 1 and (saved[0] / 'MANIFEST.sha256').is_file()
        assert (_counts(live_pg['name']), _databases(live_pg['name'])) == live_before
        assert PASSWORD not in run.stdout and PASSWORD not in json.dumps(run.report)
    finally:
        ak.remove_containers(staging)


def test_corrupted_set_fails_at_verify(pg_set, drill, tmp_path):
    _root, set_dir, _counts_ = pg_set
    root = tmp_path / 'corrupt'
    copy = root / SERVICE / set_dir.name
    shutil.copytree(str(set_dir), str(copy))
    payload = max((p for p in copy.rglob('*.age') if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    scratch = _unique('corrupt')

    run = drill([_pg_service(scratch_name=scratch)], drill_source='local', drill_backup_root=str(root))
    assert run.rc != 0, run
    assert 'DRILL FAILED' in run.task(': Fail the drill when a check failed or a target was missed')[0]['msg']
    found = run.service(SERVICE)
    assert run.report['result'] == 'failed' and found['result'] == 'failed'
    assert [s['name'] for s in found['steps']] == ['pick', 'Verify every checksum and decrypt every payload']
    rel = str(payload.relative_to(copy))
    assert rel in found['error'] and 'checksum' in found['error'].lower(), found['error']
    assert not any(c['kind'] == 'row_counts' for c in found['checks'])
    assert _scratch_containers(scratch) == []
    # the corrupt set is left as it was found, for the investigation
    assert payload.read_bytes() == bytes(data)


@pytest.mark.parametrize('source', ['local', 'offsite'])
def test_check_mode_prints_the_plan_and_changes_nothing(pg_set, offsite, drill, source):
    root, set_dir, _counts_ = pg_set
    scratch = _unique('check')
    run = drill([_pg_service(scratch_name=scratch)], check=True, drill_source=source, drill_backup_root=str(root),
                drill_offsite=offsite)
    assert run.rc == 0, run
    plan = run.task(': Show the plan')
    assert plan, run
    message = plan[0]['msg']
    assert message[0].startswith('check mode: the drill would restore, for each of %s, the newest complete %s set'
                                 % (SERVICE, source)), message
    assert 'Nothing was changed' in message[0]
    # which set it would restore
    if source == 'local':
        assert message[1:] == ['%s: %s' % (SERVICE, set_dir)], message
    else:
        assert len(message) == 2 and message[1].startswith('%s: ' % SERVICE), message
        assert message[1].endswith('%s/%s/%s' % (offsite['target'], SERVICE, set_dir.name)), message
    # no report, no fetched copy, no container
    assert not run.report_dir.exists() or list(run.report_dir.iterdir()) == []
    assert not (run.report_dir.parent / 'work').exists()
    assert not (run.report_dir.parent / 'metrics').exists()
    assert _scratch_containers(scratch) == []
    assert not run.task(': Start the scratch container (%s)' % SERVICE)


def test_failing_sql_check_fails_the_drill_and_removes_the_container(pg_set, drill):
    root, set_dir, counts = pg_set
    scratch = _unique('sqlcheck')
    checks = [
        {'name': 'every entry has an account', 'sql': 'SELECT count(*) = 0 FROM books.entry WHERE account IS NULL'},
        {'name': 'entries', 'sql': 'SELECT count(*) FROM books.entry', 'expect': ENTRIES + 1},
    ]
    try:
        run = drill([_pg_service(scratch_name=scratch, sql_checks=checks)], drill_source='local',
                    drill_backup_root=str(root))
        assert run.rc != 0, run
        assert 'DRILL FAILED' in run.task(': Fail the drill when a check failed or a target was missed')[0]['msg']
        found = run.service(SERVICE)
        assert run.report['result'] == 'failed' and found['result'] == 'failed'
        assert found.get('error') is None, found
        assert [s['name'] for s in found['steps']] == ['pick', 'verify', 'start scratch database', 'restore', 'checks']
        # the benchmark shipped in the collection by default (a missing one is no benchmark on record)
        assert run.report['benchmark']['source'].endswith('/idp/recovery/docs/performance.json'), run.report['benchmark']
        assert found['steps'][3]['throughput']['mib_per_s'] > 0
        assert found['target'].startswith('scratch container %s (%s, PostgreSQL 15.' % (scratch, IMAGE_15))
        by_name = dict((c['name'], c) for c in found['checks'])
        assert by_name['row counts']['ok'] is True and by_name['row counts']['expected'] == sum(counts.values())
        assert by_name['every entry has an account']['ok'] is True
        wrong = by_name['entries']
        assert wrong['ok'] is False and wrong['kind'] == 'sql'
        assert str(wrong['expected']) == str(ENTRIES + 1) and str(wrong['actual']) == str(ENTRIES), wrong
        assert any('entries' in reason for reason in run.report['reasons']), run.report['reasons']
        assert _scratch_containers(scratch) == []
    finally:
        ak.remove_containers(scratch)


def test_scratch_keep_leaves_the_restored_container(pg_set, offsite, drill):
    """From the offsite copy this time: fetched, verified, restored, and the container left for inspection."""
    _root, set_dir, counts = pg_set
    scratch = _unique('keep')
    try:
        run = drill([_pg_service(scratch_name=scratch)], drill_offsite=offsite, drill_scratch_keep=True,
                    drill_benchmark_file=str(BENCHMARK))
        assert run.rc == 0, run
        assert run.report['result'] == 'passed'
        found = run.service(SERVICE)
        assert [s['name'] for s in found['steps']] == ['fetch', 'verify', 'start scratch database', 'restore', 'checks']
        # each step's throughput next to the stock tool's in the benchmark, and the step that limits the recovery
        throughput = dict((s['name'], s['throughput']) for s in found['steps'])
        for name, stock in (('fetch', 'upload'), ('verify', 'read_test'), ('restore', 'restore')):
            assert throughput[name]['bytes'] > 0 and throughput[name]['mib_per_s'] > 0, throughput[name]
            assert throughput[name]['stock_step'] == stock and throughput[name]['ratio'] > 0, throughput[name]
        assert throughput['restore']['stock']['tool'] == 'gunzip -c FILE | psql'
        assert throughput['restore']['bytes'] >= 1024 * 1024, throughput['restore']  # the database's size
        assert throughput['checks']['mib_per_s'] is None and throughput['checks']['note'] == 'no stock counterpart'
        assert [name for name, found_step in throughput.items() if found_step['limiting']] == [
            found['limiting_step']['name']]
        assert run.report['benchmark']['source'] == str(BENCHMARK) and run.report['benchmark']['problem'] is None
        page = (run.report_dir / 'latest.html').read_text(encoding='utf-8')
        assert 'Stock tool in the last benchmark' in page and 'gunzip -c FILE | psql: 40.0 MiB/s (1G)' in page
        lines = run.task(THROUGHPUT_TASK)[0]['results'][0]['msg']
        assert lines[0].startswith('%s: %s limits the recovery time' % (SERVICE, found['limiting_step']['name'])), lines
        restore_line = next(line for line in lines if line.lstrip().startswith('restore'))
        assert ' MiB/s; stock gunzip -c FILE | psql: 40.0 MiB/s (1G), ' in restore_line, lines
        assert found['stamp'] == set_dir.name and offsite['target'] in found['source'], found
        # the fetched copy is gone, the offsite copy is still there
        work = run.report_dir.parent / 'work'
        assert not list(work.rglob('MANIFEST.sha256')), list(work.rglob('*'))
        assert (Path(offsite['target']) / SERVICE / set_dir.name / 'MANIFEST.sha256').is_file()
        assert len(_scratch_containers(scratch)) == 1
        # the kept container holds the restored database, identical to the live one at backup time
        assert ak.table_counts(scratch, database=DATABASE, user='postgres') == counts
    finally:
        ak.remove_containers(scratch)
    assert _scratch_containers(scratch) == []
