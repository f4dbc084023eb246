# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""authentik_dump and authentik_restore against real PostgreSQL containers.

The app containers are the authentik-server / authentik-worker stand-ins (their readiness
endpoint really queries the database). Faults are real: a pg_dump backend terminated while it
copies, a container that is not there, a wrong password, a flipped byte, a pg_restore killed
after the drop, a dump from a newer Authentik, and a restore from PostgreSQL 15 into 17.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import authentik_support as ak

PREFIX = 'idp-test-ak-%s' % uuid.uuid4().hex[:6]


def _docker(*argv, check=True):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check)


def _compose(project, service):
    """The labels docker compose puts on the containers of a project."""
    if not project:
        return None
    return {'com.docker.compose.project': project, 'com.docker.compose.service': service}


class Stack(object):
    """One Authentik-shaped deployment: PostgreSQL, server and worker stand-ins, files, .env."""

    def __init__(self, name, workdir, image=ak.POSTGRES_IMAGE, users=ak.USERS, version=ak.VERSION, apps=True,
                 project=None):
        self.name = name
        self.network = name
        self.db = name + '-postgres'
        self.server = name + '-server'
        self.worker = name + '-worker'
        self.password = 'pw-' + uuid.uuid4().hex
        self.compose = Path(workdir) / name
        self.compose.mkdir(parents=True)
        self.files = ak.make_files(self.compose)
        self.env = ak.write_env(self.compose / '.env', pg_pass=self.password)
        _docker('network', 'create', self.network)
        ak.run_postgres(self.db, self.password, network=self.network, image=image, labels=_compose(project, 'postgresql'))
        self.counts = ak.load_fixture(self.db, users=users, version=version)
        self.apps = []
        if apps:
            volumes = ['%s:%s' % (self.compose / sub, mount) for _name, sub, mount in ak.FILE_MOUNTS]
            ak.run_standin(self.server, 'server', self.db, self.password, self.network,
                           labels=_compose(project, 'server'))
            ak.run_standin(self.worker, 'worker', self.db, self.password, self.network, volumes=volumes,
                           labels=_compose(project, 'worker'))
            self.apps = [self.server, self.worker]
            self.health_url = ak.wait_ready(self.server, self.network)

    @property
    def ip(self):
        return ak.container_ip(self.db, self.network)

    def running(self, name):
        out = _docker('inspect', '-f', '{{.State.Running}}', name).stdout.decode().strip()
        return out == 'true'

    def remove(self):
        ak.remove_containers(self.server, self.worker, self.db)
        _docker('network', 'rm', self.network, check=False)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('authentik')


@pytest.fixture(scope='module')
def stack(workdir):
    created = Stack(PREFIX + '-main', workdir)
    yield created
    created.remove()


@pytest.fixture
def new_set(run_module, workdir):
    def opener(service='authentik'):
        root = workdir / ('backups-%s' % uuid.uuid4().hex[:8])
        result = run_module('backup_set', root=str(root), service=service, state='present')
        assert result['changed'], result
        return result['path']
    return opener


def _dump(run_module, stack, set_dir, keys, **extra):
    args = dict(set_dir=set_dir, container=stack.db, compose_dir=str(stack.compose),
                recipients=[keys.age_recipient])
    args.update(extra)
    return run_module('authentik_dump', **args)


def _finalize(run_module, set_dir):
    return run_module('backup_set', path=set_dir, state='finalized')


def _restore_args(stack, set_dir, keys, **extra):
    args = dict(set_dir=set_dir, container=stack.db, identity=str(keys.age_identity),
                app_containers=stack.apps, compose_dir=str(stack.compose), health_timeout=60)
    args.update(extra)
    return args


def test_round_trip_with_app_stand_ins(run_module, stack, new_set, keys):
    set_dir = new_set()
    dumped = _dump(run_module, stack, set_dir, keys)
    assert not dumped.get('failed'), dumped
    assert dumped['database']['tables'] == len(stack.counts)
    assert dumped['authentik_version']['version'] == ak.VERSION
    assert stack.env['PG_PASS'] not in json.dumps(dumped)
    assert stack.env['AUTHENTIK_SECRET_KEY'] not in json.dumps(dumped)
    finalized = _finalize(run_module, set_dir)
    assert not finalized.get('failed'), finalized
    metadata = json.loads((Path(set_dir) / 'metadata.json').read_text())
    assert metadata['authentik']['database']['tables'] == stack.counts
    assert metadata['authentik']['migrations'] == ak.migration_heads(stack.db)
    assert metadata['authentik']['database']['server_version'].startswith('15.')
    # the .env is in the set only encrypted
    env_payload = Path(set_dir) / metadata['authentik']['env']['payload']
    assert stack.env['AUTHENTIK_SECRET_KEY'].encode() not in env_payload.read_bytes()
    # its size is recorded, so that an extraction of it is bounded like every other payload's
    env_source = metadata['payloads'][metadata['authentik']['env']['payload']]['source']
    assert env_source['bytes'] == (stack.compose / '.env').stat().st_size
    before_files = {name: ak.snapshot(path) for name, path in stack.files.items()}

    # disaster: the users and the media are gone
    ak.psql(stack.db, 'DROP TABLE authentik_core_user CASCADE')
    subprocess.run(['rm', '-rf', stack.files['data']], check=True)
    # like Authentik's, the readiness check opens a connection and reads no table: it cannot see the loss
    assert ak.health(stack.health_url) == 200

    plan = run_module('authentik_restore', check_mode=True, **_restore_args(stack, set_dir, keys))
    assert not plan.get('failed'), plan
    assert sorted(plan['plan']['stop']) == sorted(stack.apps)
    assert stack.running(stack.server) and stack.running(stack.worker)
    assert not os.path.exists(stack.files['data'])

    restored = run_module('authentik_restore', **_restore_args(stack, set_dir, keys))
    assert not restored.get('failed'), restored
    names = [step['name'] for step in restored['steps']]
    assert names == ['verify', 'stop_apps', 'safety_backup', 'recreate_database', 'restore_database',
                     'compare_counts', 'restore_files', 'start_apps', 'health']
    assert restored['recovery_seconds'] > 0
    assert restored['tables']['mismatched'] == []
    assert ak.table_counts(stack.db) == stack.counts
    assert {name: ak.snapshot(path) for name, path in stack.files.items()} == before_files
    assert stack.running(stack.server) and stack.running(stack.worker)
    assert ak.health(stack.health_url) == 200
    # the safety set is a complete set holding the broken state from before the restore
    safety = restored['safety_set']
    assert (Path(safety) / 'MANIFEST.sha256').is_file()
    safety_tables = json.loads((Path(safety) / 'metadata.json').read_text())['authentik']['database']['tables']
    assert 'public.authentik_core_user' not in safety_tables


def test_tcp_dump_matches_container_dump(run_module, stack, new_set, keys):
    by_container = _dump(run_module, stack, new_set(), keys, compose_dir=None)
    # the same through the engine API's output stream instead of the FIFO
    by_api = _dump(run_module, stack, new_set(), keys, compose_dir=None, container_output='api')
    assert not by_api.get('failed'), by_api
    by_tcp = run_module('authentik_dump', set_dir=new_set(), host=stack.ip, password=stack.password,
                        recipients=[keys.age_recipient])
    assert not by_tcp.get('failed'), by_tcp
    assert stack.password not in json.dumps(by_tcp)
    for key in ('tables', 'rows_total', 'server_version', 'dump_bytes'):
        assert by_tcp['database'][key] == by_container['database'][key] == by_api['database'][key]


def test_plain_format_round_trip_over_tcp(run_module, workdir, new_set, keys):
    other = Stack(PREFIX + '-plain', workdir, users=500, apps=False)
    try:
        set_dir = new_set()
        dumped = run_module('authentik_dump', set_dir=set_dir, host=other.ip, password=other.password,
                            format='plain', passphrase='correct horse', encryption='passphrase')
        assert not dumped.get('failed'), dumped
        assert dumped['database']['payload'] == 'database.sql.zst.gpg'
        assert not _finalize(run_module, set_dir).get('failed')
        ak.psql(other.db, 'DELETE FROM authentik_core_token')
        restored = run_module('authentik_restore', set_dir=set_dir, host=other.ip, password=other.password,
                              passphrase='correct horse', app_containers=[], restore_files=False,
                              target_version=ak.VERSION, health_url='')
        assert not restored.get('failed'), restored
        assert ak.table_counts(other.db) == other.counts
    finally:
        other.remove()


def test_backend_terminated_mid_dump_leaves_an_incomplete_set(run_module, module_runner, workdir, new_set, keys):
    big = Stack(PREFIX + '-big', workdir, users=ak.USERS, apps=False)
    try:
        # enough rows that the copy lasts long enough to be caught in the act
        ak.psql(big.db, "INSERT INTO authentik_events_event (event_uuid, \"user\", action, app, context, client_ip, "
                        "created, expires, brand) SELECT gen_random_uuid(), '{}', 'x', 'y', "
                        "jsonb_build_object('pad', repeat(md5(g::text), 40)), '10.0.0.1', now(), now(), '{}' "
                        "FROM generate_series(1, 400000) g")
        set_dir = new_set()
        argv, env, directory = module_runner.command(
            'authentik_dump', set_dir=set_dir, container=big.db, recipients=[keys.age_recipient])
        proc = subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        terminated = ''
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            terminated = ak.psql(big.db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = 'idp-recovery-pg_dump' AND query LIKE 'COPY %'").strip()
            if terminated:
                break
            time.sleep(0.05)
        out, _err = proc.communicate(timeout=120)
        assert terminated == 't', 'the pg_dump backend was never seen copying'
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result.get('failed'), result
        assert 'pg_dump' in result['msg'], result['msg']
        assert not list(Path(set_dir).glob('database.*')), 'a payload of the failed dump was left behind'
        finalized = _finalize(run_module, set_dir)
        assert finalized.get('failed') and 'did not finish' in finalized['msg'], finalized
        assert not (Path(set_dir) / 'MANIFEST.sha256').exists()
        info = run_module('backup_set_info', root=str(Path(set_dir).parents[1]))
        assert not info['latest_complete']
        # a second run completes the same set
        again = run_module('authentik_dump', set_dir=set_dir, container=big.db, recipients=[keys.age_recipient])
        assert not again.get('failed'), again
        assert not _finalize(run_module, set_dir).get('failed')
    finally:
        big.remove()


def test_missing_container_and_wrong_password(run_module, stack, new_set, keys):
    set_dir = new_set()
    missing = run_module('authentik_dump', set_dir=set_dir, container=PREFIX + '-nope', recipients=[keys.age_recipient])
    assert missing.get('failed') and 'does not exist' in missing['msg'] and PREFIX + '-nope' in missing['msg']
    wrong = run_module('authentik_dump', set_dir=set_dir, host=stack.ip, password='not-the-password',
                       recipients=[keys.age_recipient])
    assert wrong.get('failed') and 'password authentication failed' in wrong['msg'], wrong
    assert 'not-the-password' not in json.dumps(wrong)
    assert not list(Path(set_dir).glob('database.*'))


def test_corrupted_set_is_refused_before_anything_stops(run_module, stack, new_set, keys):
    set_dir = new_set()
    assert not _dump(run_module, stack, set_dir, keys).get('failed')
    assert not _finalize(run_module, set_dir).get('failed')
    payload = Path(set_dir) / 'database.pgdump.zst.age'
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    result = run_module('authentik_restore', **_restore_args(stack, set_dir, keys))
    assert result.get('failed'), result
    assert 'database.pgdump.zst.age' in result['msg'] and 'checksum' in result['msg'], result['msg']
    assert [step['name'] for step in result['steps']] == ['verify']
    assert stack.running(stack.server) and stack.running(stack.worker)
    assert ak.table_counts(stack.db) == stack.counts
    assert not (Path(set_dir).parents[1] / 'authentik-pre-restore').exists()


def test_failure_after_the_drop_rolls_back_to_the_safety_set(run_module, module_runner, stack, new_set, keys):
    set_dir = new_set()
    assert not _dump(run_module, stack, set_dir, keys).get('failed')
    assert not _finalize(run_module, set_dir).get('failed')
    # the live database has moved on since the backup: the rollback must bring back this state
    ak.psql(stack.db, "INSERT INTO authentik_core_group (group_uuid, name, is_superuser, attributes) "
                      "VALUES (gen_random_uuid(), 'added-after-backup', false, '{}')")
    live = ak.table_counts(stack.db)
    command = module_runner.command('authentik_restore', **_restore_args(stack, set_dir, keys))
    result, killed = ak.run_killing_in_container(command, stack.db, '^pg_restore --exit-on-error')
    assert killed, 'pg_restore was never seen running'
    assert result.get('failed'), result
    assert 'pg_restore' in result['msg'] and 'rolled back' in result['msg'], result['msg']
    assert result['rolled_back'] is True
    assert ak.table_counts(stack.db) == live
    assert stack.running(stack.server) and stack.running(stack.worker)
    ak.wait_ready(stack.server, stack.network, timeout=60)


def test_newer_dump_is_refused_by_the_version_gate(run_module, workdir, stack, new_set, keys):
    newer = Stack(PREFIX + '-newer', workdir, users=200, version='2026.2.1', apps=False)
    try:
        set_dir = new_set()
        assert not run_module('authentik_dump', set_dir=set_dir, container=newer.db,
                              recipients=[keys.age_recipient]).get('failed')
        assert not _finalize(run_module, set_dir).get('failed')
        # the target's version comes from the stand-in image label (2025.10.1)
        refused = run_module('authentik_restore', **_restore_args(stack, set_dir, keys))
        assert refused.get('failed'), refused
        assert 'newer than the target' in refused['msg'] and '2026.2' in refused['msg'], refused['msg']
        assert refused['version_gate']['target_version_source'] == 'image of %s' % stack.server
        assert stack.running(stack.server)
        assert ak.table_counts(stack.db)['public.authentik_core_user'] == stack.counts['public.authentik_core_user']
        # two lines older than the target is refused too
        old = run_module('authentik_restore', check_mode=True,
                         **_restore_args(stack, set_dir, keys, target_version='2026.8.0'))
        assert old.get('failed') and 'more than one release line older' in old['msg'], old
    finally:
        newer.remove()


def test_postgres_15_dump_restores_into_17(run_module, workdir, new_set, keys):
    old = Stack(PREFIX + '-pg15', workdir, users=800, apps=False)
    new = Stack(PREFIX + '-pg17', workdir, users=10, apps=False, image='idp-recovery/postgres:17')
    try:
        set_dir = new_set()
        assert not run_module('authentik_dump', set_dir=set_dir, container=old.db,
                              recipients=[keys.age_recipient]).get('failed')
        assert not _finalize(run_module, set_dir).get('failed')
        restored = run_module('authentik_restore', set_dir=set_dir, container=new.db, identity=str(keys.age_identity),
                              app_containers=[], restore_files=False, target_version=ak.VERSION, health_url='')
        assert not restored.get('failed'), restored
        assert ak.table_counts(new.db) == old.counts
        server = ak.psql(new.db, 'SHOW server_version').strip()
        assert server.startswith('17.')
    finally:
        old.remove()
        new.remove()


def test_compose_project_stops_the_apps_and_never_the_database(run_module, workdir, new_set, keys):
    project = PREFIX.replace('-', '') + 'proj'
    stack = Stack(PREFIX + '-compose', workdir, users=300, project=project)
    try:
        set_dir = new_set()
        assert not _dump(run_module, stack, set_dir, keys).get('failed')
        assert not _finalize(run_module, set_dir).get('failed')
        args = _restore_args(stack, set_dir, keys, compose_project=project)
        del args['app_containers']
        plan = run_module('authentik_restore', check_mode=True, **args)
        assert not plan.get('failed'), plan
        assert sorted(plan['plan']['stop']) == sorted([stack.server, stack.worker])
        restored = run_module('authentik_restore', **args)
        assert not restored.get('failed'), restored
        stopped = [step for step in restored['steps'] if step['name'] == 'stop_apps'][0]['stopped']
        assert sorted(stopped) == sorted([stack.server, stack.worker])
        assert stack.running(stack.db) and stack.running(stack.server) and stack.running(stack.worker)
        assert ak.table_counts(stack.db) == stack.counts
        # naming the database container as an app is refused before anything happens
        refused = run_module('authentik_restore', **_restore_args(stack, set_dir, keys, app_containers=[stack.db]))
        assert refused.get('failed') and 'never stopped' in refused['msg'], refused
        assert stack.running(stack.db)
        # an app container that is not there is named, with what to do about it
        gone = run_module('authentik_restore', check_mode=True,
                          **_restore_args(stack, set_dir, keys, app_containers=[PREFIX + '-gone']))
        assert gone.get('failed') and PREFIX + '-gone does not exist' in gone['msg'], gone
        assert 'app_containers' in gone['msg']
    finally:
        stack.remove()
