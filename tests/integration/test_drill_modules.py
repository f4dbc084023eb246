# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""scratch_postgres and postgres_check against real PostgreSQL containers on the local Docker
engine: scratch containers are created, found ready, reused, refused when they are not the
module's own, and removed; SQL checks pass and fail for real, writes fail in their read-only
transaction, and the target guard refuses the "live" database however it is spelled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import authentik_support as ak
import conftest

PREFIX = 'idp-test-drillmod-%s' % uuid.uuid4().hex[:6]
IMAGE = 'idp-recovery/postgres:17'
IMAGE_15 = 'idp-recovery/postgres:15'
PASSWORD = 'drill-%s' % uuid.uuid4().hex[:10]
SCHEMA = """
CREATE TABLE account (id serial PRIMARY KEY, name text NOT NULL, admin boolean NOT NULL DEFAULT false);
INSERT INTO account (name, admin) SELECT 'user ' || n, n <= 2 FROM generate_series(1, 40) AS n;
CREATE TABLE setting (key text PRIMARY KEY, value text);
INSERT INTO setting VALUES ('version', '2025.10.1'), ('empty', ''), ('nothing', NULL);
"""


def _docker(*argv, check=True):
    return subprocess.run(['docker'] + list(argv), capture_output=True, check=check, timeout=120)


def _inspect(name):
    proc = _docker('inspect', name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def _exists(name):
    return _inspect(name) is not None


def _psql_in(container, sql, user='postgres', database='postgres'):
    proc = _docker('exec', '-u', 'postgres', container, 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
                   '-U', user, '-d', database, '-c', sql)
    return proc.stdout.decode().strip()


@pytest.fixture
def names():
    """Container names for one test; whatever is left of them is removed afterwards."""
    made = []

    def make(tag):
        made.append('%s-%s-%s' % (PREFIX, tag, uuid.uuid4().hex[:4]))
        return made[-1]
    yield make
    ak.remove_containers(*made)


@pytest.fixture(scope='module')
def live():
    """The "live" database: PostgreSQL with a password, its port published on 127.0.0.1 only."""
    name = PREFIX + '-live'
    argv = ['docker', 'run', '-d', '--name', name, '-e', 'POSTGRES_USER=%s' % ak.DB_USER, '-e',
            'POSTGRES_DB=%s' % ak.DB_NAME, '-e', 'POSTGRES_PASSWORD', '--tmpfs', '/var/lib/postgresql/data',
            '-p', '127.0.0.1::5432', IMAGE_15]
    proc = subprocess.run(argv, env=dict(os.environ, POSTGRES_PASSWORD=PASSWORD), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    try:
        ak.wait_for_postgres(name)
        ak.psql(name, SCHEMA)
        _docker('exec', name, 'createdb', '-U', ak.DB_USER, 'staging')
        info = _inspect(name)
        port = int(info['NetworkSettings']['Ports']['5432/tcp'][0]['HostPort'])
        yield {'name': name, 'id': info['Id'], 'port': port, 'ip': ak.container_ip(name)}
    finally:
        ak.remove_containers(name)


# ---------------------------------------------------------------------------------------------
# scratch_postgres

def _scratch(run_module, check_mode=False, **args):
    """Run scratch_postgres as run_module does (whose own first parameter is called ``name``, like the
    module's container name option)."""
    args['_ansible_check_mode'] = bool(check_mode)
    directory = Path(tempfile.mkdtemp(prefix='module-', dir=str(run_module.workdir)))
    try:
        args_file = directory / 'args.json'
        fd = os.open(str(args_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            handle.write(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
        proc = subprocess.run([str(conftest.PYTHON), '-m', '%s.scratch_postgres' % conftest.MODULE_PACKAGE,
                               str(args_file)], env=dict(run_module.env, PYTHONPATH=str(conftest.COLLECTIONS)),
                              cwd=str(directory), capture_output=True, stdin=subprocess.DEVNULL, timeout=300,
                              check=False)
    finally:
        shutil.rmtree(str(directory), ignore_errors=True)
    result = conftest.parse_module_output(proc.stdout.decode('utf-8', 'replace'))
    assert result is not None, 'no result (rc %s): %s' % (proc.returncode, proc.stderr.decode('utf-8', 'replace'))
    assert proc.returncode == 0 or result.get('failed'), result
    return result


def test_scratch_lifecycle(run_module, names):
    name = names('scratch')
    args = dict(name=name, image=IMAGE, tmpfs=True, shm_size='128m', roles=['authentik', 'reader'],
                labels={'io.idp-recovery.drill': 'lifecycle'})

    planned = _scratch(run_module, check_mode=True, **args)
    assert planned['changed'] is True and planned['created'] is True, planned
    assert not _exists(name), 'check mode created the container'

    made = _scratch(run_module, **args)
    assert made.get('failed') is not True, made
    assert made['changed'] is True and made['created'] is True
    info = _inspect(name)
    assert made['id'] == info['Id']
    assert made['ip_address'] == info['NetworkSettings']['Networks']['bridge']['IPAddress']
    assert made['network'] == 'bridge'
    assert made['server_version'].startswith('17.')
    assert 170000 <= made['server_version_num'] < 180000
    assert sorted(made['roles_created']) == ['authentik', 'reader']
    labels = info['Config']['Labels']
    assert labels['io.idp-recovery.scratch'] == 'true'
    assert re.match(r'^\d{8}T\d{6}Z$', labels['io.idp-recovery.scratch.created'])
    assert labels['io.idp-recovery.drill'] == 'lifecycle'
    assert made['labels'] == labels
    # no port on the host, data on tmpfs, /dev/shm as asked
    assert not info['HostConfig'].get('PortBindings')
    assert '/var/lib/postgresql/data' in (info['HostConfig'].get('Tmpfs') or {})
    assert info['HostConfig']['ShmSize'] == 128 * 1024 * 1024

    # psql works inside; the roles exist and can log in; nobody has a password; only local trust is left
    assert _psql_in(name, 'SELECT 1') == '1'
    assert _psql_in(name, 'SELECT current_user', user='authentik') == 'authentik'
    assert _psql_in(name, "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
                          "WHERE rolname IN ('authentik', 'reader') AND rolcanlogin") == 'authentik,reader'
    assert _psql_in(name, 'SELECT count(*) FROM pg_authid WHERE rolpassword IS NOT NULL') == '0'
    assert _psql_in(name, "SELECT string_agg(type || ' ' || auth_method, ',') FROM pg_hba_file_rules") == 'local trust'
    # over TCP, even with the very password the entrypoint was given, the server says no
    env_password = [item.split('=', 1)[1] for item in info['Config']['Env'] if item.startswith('POSTGRES_PASSWORD=')]
    tcp = subprocess.run(['psql', '-X', '-h', made['ip_address'], '-U', 'postgres', '-d', 'postgres', '-c', 'SELECT 1'],
                         env=dict(os.environ, PGPASSWORD=env_password[0] if env_password else 'x', PGCONNECT_TIMEOUT='10'),
                         capture_output=True, check=False, timeout=60)
    assert tcp.returncode != 0
    assert 'no pg_hba.conf entry' in tcp.stderr.decode(), tcp.stderr.decode()

    again = _scratch(run_module, **args)
    assert again.get('failed') is not True, again
    assert again['changed'] is False and again['created'] is False
    assert again['id'] == made['id'] and again['roles_created'] == []
    assert _scratch(run_module, check_mode=True, **args)['changed'] is False

    # a dropped role is created again; other labels replace the container
    _psql_in(name, 'DROP ROLE reader')
    restored = _scratch(run_module, **args)
    assert restored['changed'] is True and restored['roles_created'] == ['reader'] and restored['id'] == made['id']
    relabelled = dict(args)
    relabelled['labels'] = {'io.idp-recovery.drill': 'other'}
    assert _scratch(run_module, check_mode=True, **relabelled)['replaced']
    assert _inspect(name)['Id'] == made['id'], 'check mode replaced the container'
    replaced = _scratch(run_module, **relabelled)
    assert replaced['changed'] is True and replaced['created'] is True and replaced['replaced']
    assert replaced['id'] != made['id'] and _inspect(name)['Id'] == replaced['id']

    assert _scratch(run_module, check_mode=True, name=name, state='absent')['changed'] is True
    assert _exists(name), 'check mode removed the container'
    removed = _scratch(run_module, name=name, state='absent')
    assert removed['changed'] is True and removed['removed'] == [name]
    assert not _exists(name)
    assert _scratch(run_module, name=name, state='absent')['changed'] is False


def test_scratch_superuser_and_network(run_module, names):
    name = names('su')
    network = names('net')
    _docker('network', 'create', network)
    try:
        made = _scratch(run_module, name=name, image=IMAGE_15, superuser='drill', network=network)
        assert made.get('failed') is not True, made
        assert made['superuser'] == 'drill' and made['network'] == network
        assert made['server_version'].startswith('15.')
        info = _inspect(name)
        assert list(info['NetworkSettings']['Networks']) == [network]
        assert made['ip_address'] == info['NetworkSettings']['Networks'][network]['IPAddress']
        assert _psql_in(name, 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user', user='drill') == 't'
    finally:
        ak.remove_containers(name)
        _docker('network', 'rm', network, check=False)
    missing = _scratch(run_module, name=name, image=IMAGE_15, network=network)
    assert missing['failed'] is True and 'network %s does not exist' % network in missing['msg']
    assert not _exists(name)


def _tcp_login(address, user, password):
    return subprocess.run(['psql', '-X', '-A', '-t', '-h', address, '-U', user, '-d', 'postgres', '-c', 'SELECT current_user'],
                          env=dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT='10'),
                          capture_output=True, check=False, timeout=60)


def test_scratch_password_opens_tcp_for_the_superuser_only(run_module, names):
    name = names('pw')
    password = 'scratch-%s' % os.urandom(8).hex()
    try:
        made = _scratch(run_module, name=name, image=IMAGE_15, superuser='authentik', roles=['reader'], password=password)
        assert made.get('failed') is not True, made
        assert password not in json.dumps(made)
        info = _inspect(name)
        assert password not in json.dumps(info['Config']), 'the password is in the container configuration'
        good = _tcp_login(made['ip_address'], 'authentik', password)
        assert good.returncode == 0 and good.stdout.decode().strip() == 'authentik', good.stderr.decode()
        wrong = _tcp_login(made['ip_address'], 'authentik', password + 'x')
        assert wrong.returncode != 0 and 'password authentication failed' in wrong.stderr.decode(), wrong.stderr.decode()
        other = _tcp_login(made['ip_address'], 'reader', password)
        assert other.returncode != 0 and 'no pg_hba.conf entry' in other.stderr.decode(), other.stderr.decode()
        # a container made without a password is not reused for one with a password, and the reverse
        again = _scratch(run_module, name=name, image=IMAGE_15, superuser='authentik', roles=['reader'], password=password)
        assert again['changed'] is False, again
        plain = _scratch(run_module, name=name, image=IMAGE_15, superuser='authentik', roles=['reader'])
        assert plain['created'] is True and plain['replaced'], plain
        refused = _tcp_login(plain['ip_address'], 'authentik', password)
        assert refused.returncode != 0 and 'no pg_hba.conf entry' in refused.stderr.decode(), refused.stderr.decode()
    finally:
        ak.remove_containers(name)


def test_scratch_refuses_a_container_that_is_not_its_own(run_module, names):
    name = names('foreign')
    _docker('run', '-d', '--name', name, '-e', 'POSTGRES_PASSWORD=%s' % PASSWORD, '--tmpfs',
            '/var/lib/postgresql/data', IMAGE)
    before = _inspect(name)

    adopted = _scratch(run_module, name=name, image=IMAGE)
    assert adopted['failed'] is True
    assert 'io.idp-recovery.scratch=true' in adopted['msg'] and 'not reused' in adopted['msg'], adopted['msg']
    removed = _scratch(run_module, name=name, state='absent')
    assert removed['failed'] is True and 'not removed' in removed['msg'], removed['msg']
    pruned = _scratch(run_module, state='absent', prune_labels={'org.idp-recovery.postgresql': '17'})
    assert pruned.get('failed') is not True and name not in pruned['removed']

    after = _inspect(name)
    assert after['Id'] == before['Id'] and after['State']['Running'] is True


def test_scratch_missing_image_leaves_nothing(run_module, names):
    name = names('noimage')
    image = 'idp-recovery/no-such-image:%s' % uuid.uuid4().hex[:6]
    for check_mode in (True, False):
        failed = _scratch(run_module, check_mode=check_mode, name=name, image=image)
        assert failed['failed'] is True
        assert image in failed['msg'] and 'never pulls' in failed['msg'] and 'unix://' in failed['msg'], failed['msg']
    assert not _exists(name)


def test_scratch_that_dies_at_startup_is_removed_with_its_log(run_module, names):
    name = names('dies')
    failed = _scratch(run_module, name=name, image=IMAGE, tmpfs=True,
                      settings={'no_such_setting_of_postgres': 'on'})
    assert failed['failed'] is True
    assert 'stopped while starting' in failed['msg'] and 'it was removed' in failed['msg'], failed['msg']
    assert 'no_such_setting_of_postgres' in failed['msg'], failed['msg']
    assert not _exists(name)


def test_scratch_that_is_not_ready_in_time_is_removed(run_module, names):
    name = names('slow')
    # probed once, right after the start: the cluster is still being initialised then
    failed = _scratch(run_module, name=name, image=IMAGE, ready_timeout=0)
    assert failed['failed'] is True
    assert 'did not become ready within 0 s' in failed['msg'] and 'it was removed' in failed['msg'], failed['msg']
    assert not _exists(name)


def test_scratch_stale_and_prune(run_module, names):
    old = names('stale')
    other = names('otherdrill')
    new = names('fresh')
    label = 'io.idp-recovery.drill'
    for container, drill in ((old, 'monthly'), (other, 'weekly')):
        made = _scratch(run_module, name=container, image=IMAGE, tmpfs=True, labels={label: drill})
        assert made.get('failed') is not True, made

    planned = _scratch(run_module, check_mode=True, name=new, image=IMAGE, tmpfs=True,
                       labels={label: 'monthly'}, remove_stale=True)
    assert planned['removed'] == [old] and _exists(old)
    fresh = _scratch(run_module, name=new, image=IMAGE, tmpfs=True, labels={label: 'monthly'},
                     remove_stale=True)
    assert fresh.get('failed') is not True, fresh
    assert fresh['removed'] == [old]
    assert not _exists(old) and _exists(other) and _exists(new)

    pruned = _scratch(run_module, state='absent', prune_labels={label: 'monthly'})
    assert pruned['changed'] is True and pruned['removed'] == [new]
    assert not _exists(new) and _exists(other)


# ---------------------------------------------------------------------------------------------
# postgres_check

def _check(run_module, live, check_mode=False, **args):
    base = dict(container=live['name'], user=ak.DB_USER, database=ak.DB_NAME)
    base.update(args)
    return run_module('postgres_check', check_mode=check_mode, **base)


def test_checks_pass_and_fail(run_module, live):
    checks = [
        {'name': 'count eq', 'sql': 'SELECT count(*) FROM account', 'expect': 40},
        {'name': 'admins ge', 'sql': 'SELECT count(*) FROM account WHERE admin', 'expect': '2.0', 'compare': 'ge'},
        {'name': 'version text', 'sql': "SELECT value FROM setting WHERE key = 'version'", 'expect': '2025.10.1'},
        {'name': 'rows', 'sql': 'SELECT name FROM account WHERE admin', 'expect_rows': 2},
        {'name': 'boolean', 'sql': 'SELECT count(*) = 40 FROM account'},
        {'name': 'bool expect', 'sql': 'SELECT bool_or(admin) FROM account', 'expect': True},
        {'name': 'empty text', 'sql': "SELECT value FROM setting WHERE key = 'empty'", 'expect': '', 'expect_rows': 1},
    ]
    for check_mode in (True, False):
        passed = _check(run_module, live, check_mode=check_mode, checks=checks)
        assert passed.get('failed') is not True, passed
        assert passed['changed'] is False and passed['failed_checks'] == 0 and passed['passed_checks'] == len(checks)
        assert [item['ok'] for item in passed['checks']] == [True] * len(checks)
        assert passed['checks'][0]['actual'] == '40' and passed['checks'][3]['rows'] == 2

    failing = [
        {'name': 'count wrong', 'sql': 'SELECT count(*) FROM account', 'expect': 41},
        {'name': 'too few', 'sql': 'SELECT count(*) FROM account', 'expect': 100, 'compare': 'ge'},
        {'name': 'rows wrong', 'sql': 'SELECT 1 FROM account', 'expect_rows': 39},
        {'name': 'false', 'sql': 'SELECT admin FROM account ORDER BY id'},
        {'name': 'no rows', 'sql': 'SELECT true WHERE false'},
        {'name': 'null', 'sql': "SELECT value FROM setting WHERE key = 'nothing'", 'expect': ''},
        {'name': 'missing table', 'sql': 'SELECT count(*) FROM no_such_table', 'expect': 0},
    ]
    failed = _check(run_module, live, checks=failing)
    assert failed['failed'] is True
    assert failed['failed_checks'] == len(failing) and failed['passed_checks'] == 0
    assert '%d of %d checks failed' % (len(failing), len(failing)) in failed['msg']
    results = {item['name']: item for item in failed['checks']}
    assert results['count wrong']['actual'] == '40' and not results['count wrong']['ok']
    assert results['rows wrong']['rows'] == 40
    assert results['null']['actual'] is None
    assert 'no_such_table' in results['missing table']['error']


def test_writes_fail_in_the_read_only_transaction(run_module, live):
    writes = [
        {'name': 'insert', 'sql': "INSERT INTO setting VALUES ('written', 'x') RETURNING true"},
        {'name': 'commit first', 'sql': "COMMIT; INSERT INTO setting VALUES ('written2', 'x')"},
        {'name': 'ddl', 'sql': 'CREATE TABLE written (a int)'},
        {'name': 'psql command', 'sql': "SELECT true \\! touch /tmp/idp-check-escape"},
    ]
    result = _check(run_module, live, checks=writes, fail_on_failure=False)
    assert result.get('failed') is not True, result
    assert result['failed_checks'] == len(writes)
    for item in result['checks'][:3]:
        assert 'read-only transaction' in item['error'], item
    assert ak.psql(live['name'], "SELECT count(*) FROM setting WHERE key LIKE 'written%'").strip() == '0'
    assert ak.psql(live['name'], "SELECT to_regclass('written') IS NULL").strip() == 't'
    assert _docker('exec', live['name'], 'test', '-e', '/tmp/idp-check-escape', check=False).returncode != 0


def test_fail_on_failure_false_reports(run_module, live):
    checks = [{'name': 'good', 'sql': 'SELECT true'}, {'name': 'bad', 'sql': 'SELECT false'}]
    reported = _check(run_module, live, checks=checks, fail_on_failure=False)
    assert reported.get('failed') is not True and reported['_rc'] == 0
    assert reported['failed_checks'] == 1 and reported['passed_checks'] == 1
    assert [item['ok'] for item in reported['checks']] == [True, False]
    assert 'bad' in reported['msg']


def test_refuses_the_same_container(run_module, live, names):
    where = 'container %s (database %s)' % (live['name'], ak.DB_NAME)
    spellings = [where, 'container:%s/%s' % (live['name'], ak.DB_NAME), 'container:%s/%s' % (live['id'], ak.DB_NAME),
                 'container:%s' % live['id'][:12], '%s:5432/%s' % (live['ip'], ak.DB_NAME),
                 'localhost:%d/%s' % (live['port'], ak.DB_NAME)]
    for entry in spellings:
        refused = _check(run_module, live, refuse_targets=[entry], checks=[{'name': 'x', 'sql': 'SELECT true'}])
        assert refused['failed'] is True, (entry, refused)
        assert 'refusing target %s' % where in refused['msg'] and 'live database %s' % entry in refused['msg'], \
            refused['msg']
        assert 'checks' not in refused, 'checks ran on a refused target'

    other = names('other')
    made = _scratch(run_module, name=other, image=IMAGE_15, tmpfs=True)
    assert made.get('failed') is not True, made
    accepted = _check(run_module, live, refuse_targets=[
        'container:%s/%s' % (other, ak.DB_NAME), 'container %s (database staging)' % live['name'],
        'localhost:%d/%s' % (live['port'] + 1, ak.DB_NAME), 'container:no-such-container-%s/authentik' % PREFIX])
    assert accepted.get('failed') is not True, accepted
    assert accepted['target']['connected'] is True and accepted['target']['container_id'] == live['id']
    assert len(accepted['refuse_checked']) == 4
    # the scratch container, guarded against the live one, is accepted; the reverse is refused
    guard = run_module('postgres_check', container=other, database='postgres', refuse_targets=[
        'container %s (database postgres)' % live['name']])
    assert guard.get('failed') is not True, guard
    reverse = run_module('postgres_check', container=other, database='postgres', refuse_targets=[
        'container:%s/postgres' % made['id']])
    assert reverse['failed'] is True and 'same container' in reverse['msg']


def test_refuses_the_same_tcp_target_however_spelled(run_module, live):
    port = live['port']
    tcp = dict(host='127.0.0.1', port=port, user=ak.DB_USER, password=PASSWORD, database=ak.DB_NAME)
    for entry in ('localhost:%d/%s' % (port, ak.DB_NAME), '[::1]:%d/%s' % (port, ak.DB_NAME),
                  '127.0.0.2:%d/%s' % (port, ak.DB_NAME), 'localhost:%d' % port,
                  'container %s (database %s)' % (live['name'], ak.DB_NAME)):
        refused = run_module('postgres_check', refuse_targets=[entry], **tcp)
        assert refused['failed'] is True, (entry, refused)
        assert 'it is the live database %s' % entry in refused['msg'], refused['msg']
        assert PASSWORD not in json.dumps(refused)

    # refused before any connection: nothing listens on the target, yet the message is the refusal
    nowhere = dict(tcp, host='localhost', port=1)
    refused = run_module('postgres_check', refuse_targets=['127.0.0.1:1/%s' % ak.DB_NAME], **nowhere)
    assert refused['failed'] is True and 'refusing target localhost:1/%s' % ak.DB_NAME in refused['msg']

    accepted = run_module('postgres_check', refuse_targets=[
        'localhost:%d/%s' % (port + 1, ak.DB_NAME), 'localhost:%d/staging' % port], **tcp)
    assert accepted.get('failed') is not True, accepted
    assert accepted['target']['connected'] is True and accepted['target']['where'] == '127.0.0.1:%d/%s' % (
        port, ak.DB_NAME)

    staging = run_module('postgres_check', refuse_targets=['localhost:%d/%s' % (port, ak.DB_NAME)],
                         **dict(tcp, host='localhost', database='staging'))
    assert staging.get('failed') is not True, staging


def test_guard_before_the_database_exists(run_module, live):
    args = dict(container=live['name'], user=ak.DB_USER, database='not_created_yet',
                refuse_targets=['container:%s/%s' % (live['name'], ak.DB_NAME)])
    strict = run_module('postgres_check', **args)
    assert strict['failed'] is True and 'cannot connect' in strict['msg'] and 'not_created_yet' in strict['msg']
    relaxed = run_module('postgres_check', must_connect=False, **args)
    assert relaxed.get('failed') is not True, relaxed
    assert relaxed['target']['connected'] is False and relaxed['target']['database_exists'] is False
    bad = run_module('postgres_check', **dict(args, refuse_targets=['this host (database x)']))
    assert bad['failed'] is True and 'cannot read location' in bad['msg']
