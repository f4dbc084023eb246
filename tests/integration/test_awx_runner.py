# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup and drill playbooks run as AWX runs them: ``ansible-runner run`` on a private data
directory laid out as AWX lays it out (project, inventory script, env/extravars, env/envvars,
env/settings, env/passwords, env/ssh_key), with the secrets of the credential types of
extensions/awx/credential_types/ injected as files and environment, and the job templates, survey
and inventory variables of extensions/awx/ (which docs/awx.md shows as they are).

The "idp offsite" job backs up a real PostgreSQL 15 (over TCP, with a password) to a real S3
endpoint (rclone serve s3) with a full read test; the "idp drill" job restores the offsite set
into a disposable PostgreSQL container and passes. Their artifacts say successful, rc 0, no failed
host in playbook_on_stats; no secret (age identity, S3 secret key, database password, SSH key)
appears in the job events, the stdout, the extra variables or the inventory. A drill with the
wrong age identity, and a backup of a database that is not there, end failed with the failure
named in the events."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid

import pytest

import authentik_support as ak
import awx_support as awx
import conftest
from offsite_support import ACCESS_KEY, SECRET_KEY, BUCKET, S3Endpoint, free_port, _need_rclone

PREFIX = 'idp-test-awx-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'awx-db-%s' % uuid.uuid4().hex[:12]
IMAGE_15 = os.environ.get('IDP_POSTGRES_15_IMAGE', 'idp-recovery/postgres:15')
SERVICE = 'ledger'
DATABASE = 'ledger'
ROWS = 3000
SCHEMA = """
CREATE TABLE public.entry (id bigserial PRIMARY KEY, note text NOT NULL);
INSERT INTO public.entry (note) SELECT 'entry ' || n FROM generate_series(1, {rows}) AS n;
""".format(rows=ROWS)
RUNNER = conftest.TOOL_BIN / 'ansible-runner'


def _runner():
    assert RUNNER.exists(), 'ansible-runner is not installed in %s (make setup installs tests/requirements.txt)' % RUNNER.parent
    return RUNNER


@pytest.fixture(scope='module')
def live_pg():
    """PostgreSQL 15 with a password, its port published on 127.0.0.1 only."""
    name = PREFIX + '-live'
    argv = ['docker', 'run', '-d', '--name', name, '-e', 'POSTGRES_USER=postgres', '-e', 'POSTGRES_PASSWORD',
            '--tmpfs', '/var/lib/postgresql/data', '-p', '127.0.0.1::5432', IMAGE_15]
    proc = subprocess.run(argv, env=dict(os.environ, POSTGRES_PASSWORD=PASSWORD), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        ak.wait_for_postgres(name)
        subprocess.run(['docker', 'exec', name, 'createdb', '-U', 'postgres', DATABASE], check=True, capture_output=True)
        ak.psql(name, SCHEMA, database=DATABASE, user='postgres')
        info = json.loads(subprocess.run(['docker', 'inspect', name], check=True, capture_output=True).stdout)[0]
        yield {'name': name, 'port': int(info['NetworkSettings']['Ports']['5432/tcp'][0]['HostPort'])}
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def s3(tmp_path_factory):
    _need_rclone()
    base = tmp_path_factory.mktemp('awx-s3')
    server = S3Endpoint(base / 's3', base / 's3.log').start()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def site(tmp_path_factory, keys, live_pg, s3):
    """The host's directories, the credentials an administrator creates, and the inventory: the variables of
    extensions/awx/group_vars.yml plus the host's own."""
    base = tmp_path_factory.mktemp('awx')
    base.chmod(0o700)
    offsite = {
        'backend': 'rclone',
        'target': 'offsite:%s/prod' % BUCKET,
        'rclone_remote_type': 's3',
        'rclone_remote_options': {
            'provider': 'Rclone', 'endpoint': s3.endpoint,
            'access_key_id': '{{ idp_s3_access_key_id }}',
            'secret_access_key': '{{ idp_s3_secret_access_key }}',
        },
        'retry_delay': 0.2,
    }
    host = {
        'ansible_connection': 'local',
        'ansible_python_interpreter': str(conftest.PYTHON),
        'backup_services': [{'name': SERVICE, 'kind': 'postgres', 'host': '127.0.0.1', 'port': live_pg['port'],
                             'user': 'postgres', 'database': DATABASE, 'password': '{{ idp_postgres_password }}'}],
        'backup_recipients': [keys.age_recipient],
        'backup_root': str(base / 'backups'),
        'backup_status_dir': str(base / 'status'),
        'backup_metrics_dir': str(base / 'metrics'),
        'backup_offsite': offsite,
        'drill_services': [{'name': SERVICE, 'kind': 'postgres', 'scratch_name': PREFIX + '-scratch'}],
        'drill_offsite': offsite,
        'drill_workdir': str(base / 'drill-work'),
        'drill_report_dir': str(base / 'drills'),
        'drill_metrics_dir': str(base / 'metrics'),
        'drill_scratch_image_pattern': 'idp-recovery/postgres:{major}',
        'drill_scratch_tmpfs': True,
        'drill_scratch_ready_timeout': 90,
    }
    inventory = {
        'all': {'children': ['idp'], 'vars': awx.load_yaml(awx.AWX / 'group_vars.yml')},
        'idp': {'hosts': ['localhost']},
        '_meta': {'hostvars': {'localhost': host}},
    }
    credentials = {
        'idp postgres': ('postgres', {'password': PASSWORD}),
        'idp offsite s3': ('offsite-s3', {'access_key_id': ACCESS_KEY, 'secret_access_key': SECRET_KEY}),
        'idp age identity': ('age-identity', {'age_identity': keys.age_identity_content}),
    }
    secrets = {
        'database password': PASSWORD,
        'S3 secret key': SECRET_KEY,
        'age identity': next(line for line in keys.age_identity_content.splitlines() if line.startswith('AGE-SECRET-KEY-')),
        'SSH private key': keys.ssh_identity.read_text().splitlines()[1],
    }
    return {'base': base, 'host': host, 'inventory': inventory, 'credentials': credentials, 'secrets': secrets,
            'ssh_key': keys.ssh_identity.read_text()}


def _launch(site, test_env, name, ident, credentials=None, host=None):
    """Launch job template ``name`` as a schedule does (survey defaults), with the template's credentials."""
    template = awx.job_template(name)
    chosen = dict(site['credentials'], **(credentials or {}))
    attached = [chosen[c] for c in template['credentials'] if c in chosen]
    inventory = json.loads(json.dumps(site['inventory']))
    inventory['_meta']['hostvars']['localhost'].update(host or {})
    pdd = awx.PrivateDataDir(site['base'], template, inventory, attached, ssh_key=site['ssh_key'])
    for path in pdd.injected_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return pdd.run(_runner(), test_env, ident)


def _assert_no_secret(job, secrets):
    """No secret in any artifact but ``command`` (ansible-runner's record of the job's environment, 0600, which AWX
    keeps only in the job's temporary directory and shows with the injected values hidden), nor in the extra
    variables or the inventory."""
    command = job.dir / 'command'
    assert command.is_file() and stat.S_IMODE(command.stat().st_mode) == 0o600
    scanned = [p for p in job.artifact_files() if p != command]
    assert any(p.parent.name == 'job_events' for p in scanned) and job.dir / 'stdout' in scanned, scanned
    scanned += [job.private_data_dir.path / 'env' / 'extravars', job.private_data_dir.path / 'inventory' / 'hosts']
    for path in scanned:
        text = path.read_text(encoding='utf-8', errors='replace')
        for what, value in secrets.items():
            assert value not in text, '%s appears in %s' % (what, path)


def _failures(job):
    stats = job.stats
    return dict((kind, stats.get(kind) or {}) for kind in ('failures', 'dark'))


@pytest.fixture(scope='module')
def offsite_job(site, test_env):
    return _launch(site, test_env, 'idp offsite', 'offsite-1')


def test_credential_types_inject_only_files_and_environment():
    """What an administrator imports: every type renders, and no secret field travels as an extra variable."""
    types = awx.credential_types()
    assert set(types) == {'age-identity', 'passphrase', 'offsite-s3', 'offsite-sftp', 'ory', 'kotauth', 'postgres'}
    for name, ctype in types.items():
        assert awx.check_credential_type(ctype) == [], name
        assert 'extra_vars' not in ctype['injectors'], name
        assert all(f['secret'] for f in ctype['inputs']['fields'] if f['id'] != 'access_key_id'), name


def test_docs_show_the_files_the_test_uses():
    """docs/awx.md shows each file of extensions/awx/ and the execution environment's definition as they are."""
    blocks = awx.doc_blocks()
    files = sorted(str(p.relative_to(awx.ROOT)) for p in awx.AWX.rglob('*') if p.is_file())
    files = sorted(files + ['extensions/ee/execution-environment.yml', 'extensions/ee/requirements.yml'])
    assert sorted(blocks) == files
    for name, text in blocks.items():
        assert text == (awx.ROOT / name).read_text(encoding='utf-8'), name


def test_offsite_job_backs_up_and_copies_offsite(offsite_job, site, s3):
    job = offsite_job
    assert job.status == 'successful' and job.rc == 0, job
    assert _failures(job) == {'failures': {}, 'dark': {}}, job
    assert job.stats['ok'].get('localhost', 0) > 0 and job.stats['changed'].get('localhost', 0) > 0
    assert job.private_data_dir.extra_vars == {'backup_offsite_enabled': True}
    sets = sorted((site['base'] / 'backups' / SERVICE).iterdir())
    assert len(sets) == 1 and (sets[0] / 'MANIFEST.sha256').is_file(), sets
    assert (s3.path() / SERVICE / sets[0].name / 'MANIFEST.sha256').is_file()
    # the status file says success; the full read test ran with the injected identity
    status = json.loads((site['base'] / 'status' / 'last-backup.json').read_text(encoding='utf-8'))
    assert status['result'] == 'ok', status
    verified = job.task_results('Verify the checksums of the set (%s)' % SERVICE)
    payloads = [f for f in verified[0]['files'] if f['path'].endswith('.age')] if len(verified) == 1 else []
    assert payloads and all(f['decrypted'] is True for f in payloads), verified
    _assert_no_secret(job, site['secrets'])


def test_drill_job_restores_the_offsite_set_and_passes(offsite_job, site, test_env):
    assert offsite_job.status == 'successful', offsite_job
    job = _launch(site, test_env, 'idp drill', 'drill-1')
    assert job.status == 'successful' and job.rc == 0, job
    assert _failures(job) == {'failures': {}, 'dark': {}}, job
    assert job.private_data_dir.extra_vars == {'drill_source': 'offsite', 'idp_drill_rto_target': '4h',
                                               'idp_drill_rpo_target': '24h'}
    report = json.loads((site['base'] / 'drills' / 'latest.json').read_text(encoding='utf-8'))
    assert report['result'] == 'passed', report
    service = next(s for s in report['services'] if s['name'] == SERVICE)
    assert service['result'] == 'passed', service
    assert [s['name'] for s in service['steps']][:2] == ['fetch', 'verify'], service
    sets = sorted((site['base'] / 'backups' / SERVICE).iterdir())
    assert service['stamp'] == sets[-1].name, service
    _assert_no_secret(job, site['secrets'])


def test_drill_with_the_wrong_identity_fails(offsite_job, site, test_env, keys):
    assert offsite_job.status == 'successful', offsite_job
    wrong = {'idp age identity': ('age-identity', {'age_identity': keys.age_other_identity.read_text()})}
    job = _launch(site, test_env, 'idp drill', 'drill-wrong-key', credentials=wrong)
    assert job.status == 'failed' and job.rc not in (0, None), job
    assert _failures(job)['failures'].get('localhost'), job
    assert any('DRILL FAILED' in json.dumps(r) for r in job.task_results('Fail the drill when a check failed or a target was missed')), job
    report = json.loads((site['base'] / 'drills' / 'latest.json').read_text(encoding='utf-8'))
    assert report['result'] == 'failed', report
    _assert_no_secret(job, site['secrets'])


def test_backup_of_an_unreachable_database_fails(site, test_env):
    service = dict(site['host']['backup_services'][0], port=free_port())
    job = _launch(site, test_env, 'idp backup', 'backup-unreachable', host={'backup_services': [service]})
    assert job.status == 'failed' and job.rc not in (0, None), job
    assert _failures(job)['failures'].get('localhost'), job
    failed = job.failed_tasks()
    assert failed, job
    assert any(SERVICE in json.dumps(e['event_data'].get('res', {})) or SERVICE in e['event_data'].get('task', '')
               for e in job.events_of('runner_on_failed')), job
    _assert_no_secret(job, site['secrets'])
