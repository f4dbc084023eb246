# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Point-in-time restores into staging from posix repositories (pgBackRest's default type).

A PostgreSQL 15 container from the local image archives its WAL with pgBackRest into two encrypted
posix repositories: one on a Docker volume mounted at ``/var/lib/pgbackrest``, one in the
container's own file system at ``/srv/pgbackrest``. Staging restores from either must reach the
repository (the volume mounted read-only, the other copied), bring back exactly the rows up to the
target, and leave no file holding a passphrase behind - in the staging container, in the live one,
after success, after a refusal and after a failure. The live data directory under other spellings
(``/.``, ``//``, ``..``, a symbolic link) is refused as a target.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pitr_support import IMAGE, docker, have_prerequisites, remove, sql, wait_archived, wait_sql

STANZA = 'ledger'
SUFFIX = os.urandom(3).hex()
LIVE = 'idp-pitrst-live-%s' % SUFFIX
STAGING = 'idp-pitrst-staging-%s' % SUFFIX
VOLUME = 'idp-pitrst-repo-%s' % SUFFIX
CIPHER_VOLUME = 'pitr-volume-cipher-%s' % os.urandom(8).hex()
CIPHER_LAYER = 'pitr-layer-cipher-%s' % os.urandom(8).hex()
ON_VOLUME = {'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_pass': CIPHER_VOLUME, 'retention_full': 2}
IN_LAYER = {'type': 'posix', 'path': '/srv/pgbackrest', 'cipher_pass': CIPHER_LAYER, 'retention_full': 2}
# pgBackRest's own log files stay on (log-level-file info): they must not hold a secret either
OPTIONS = {'start-fast': True}
LIVE_DATA = '/var/lib/postgresql/data'
LIVE_CONFIG = '/etc/pgbackrest/pgbackrest.conf'


def ok(result):
    assert not result.get('failed'), result.get('msg')
    return result


def common(repos):
    return {'stanza': STANZA, 'container': LIVE, 'pg_user': 'authentik', 'repos': repos, 'options': OPTIONS}


def restore_args(repos, **extra):
    args = common(repos)
    args.update({'staging_container': STAGING, 'image': IMAGE, 'ready_timeout': 120})
    args.update(extra)
    return args


def staged(text):
    return sql(STAGING, text)


def staging_exists():
    return docker('ps', '-aq', '--filter', 'name=^%s$' % STAGING).strip() != ''


def files_holding(container, *secrets):
    """Files of the container's file system (not /proc, /sys, /dev) that contain any of the strings."""
    proc = subprocess.run(['docker', 'exec', '-i', container, 'grep', '-rlsF', '-f', '-', '/', '--exclude-dir=proc',
                           '--exclude-dir=sys', '--exclude-dir=dev'], input='\n'.join(secrets).encode('utf-8'),
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode in (0, 1, 2), proc.stderr
    return sorted(proc.stdout.decode('utf-8', 'replace').split())


def staging_configs():
    return docker('exec', LIVE, 'sh', '-c', 'ls -a /etc/pgbackrest').split()


def assert_no_secret_left():
    """Only the live server's own configuration holds the passphrases; nothing of a staging restore does."""
    assert files_holding(LIVE, CIPHER_VOLUME, CIPHER_LAYER) == [LIVE_CONFIG]
    assert staging_configs() == ['.', '..', 'pgbackrest.conf'], staging_configs()


@pytest.fixture(scope='module')
def live(module_runner):
    have_prerequisites()
    try:
        env = dict(os.environ, POSTGRES_PASSWORD='pitr-live-password')
        proc = subprocess.run(['docker', 'run', '-d', '--name', LIVE, '--hostname', LIVE, '-v',
                               '%s:/var/lib/pgbackrest' % VOLUME, '-e', 'POSTGRES_USER=authentik',
                               '-e', 'POSTGRES_DB=authentik', '-e', 'POSTGRES_PASSWORD', IMAGE],
                              env=env, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode('utf-8', 'replace')
        wait_sql(LIVE)
        docker('exec', LIVE, 'install', '-d', '-o', 'postgres', '-g', 'postgres', '-m', '0750', '/srv/pgbackrest')
        sql(LIVE, "CREATE TABLE items (id int PRIMARY KEY, note text)")
        ok(module_runner('pgbackrest_setup', **common([ON_VOLUME, IN_LAYER])))
        ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, pg_user='authentik', command='stanza-create'))
        for repo in ('1', '2'):
            docker('exec', '-u', 'postgres', LIVE, 'pgbackrest', '--stanza=%s' % STANZA, '--repo=%s' % repo,
                   '--type=full', 'backup', timeout=300)
        info = ok(module_runner('pgbackrest', stanza=STANZA, container=LIVE, command='info'))['info']
        assert sorted(b['repo'] for b in info['backups']) == [1, 2], info['backups']
        yield LIVE
    finally:
        remove(LIVE, STAGING)
        subprocess.run(['docker', 'volume', 'rm', '-f', VOLUME], capture_output=True, check=False)


@pytest.fixture(scope='module')
def history(live):
    """Rows before a target time and rows after it, all archived in both repositories."""
    sql(live, "INSERT INTO items SELECT g, 'before' FROM generate_series(1, 100) g")
    wait_archived(live)
    time.sleep(1.1)
    target = sql(live, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.1)
    sql(live, "INSERT INTO items SELECT g, 'after' FROM generate_series(101, 150) g")
    wait_archived(live)
    return {'target': target, 'before': 100, 'all': 150}


def check_time_and_latest(module_runner, repos, history):
    """Restore to the target time, then to the end of the archive; return both results."""
    args = restore_args(repos, target_type='time', target=history['target'])
    by_time = ok(module_runner('pgbackrest_restore', **args))
    assert by_time['target_reached'] and by_time['recovery_stop'].startswith('recovery stopping before commit')
    assert staged("SELECT count(*), count(*) FILTER (WHERE note = 'after') FROM items") == '%d|0' % history['before']
    assert staged('SELECT pg_is_in_recovery()') == 'f'
    assert files_holding(STAGING, CIPHER_VOLUME, CIPHER_LAYER) == []
    latest = ok(module_runner('pgbackrest_restore', **restore_args(repos)))
    assert latest['target_reached'] and latest['target']['type'] == 'latest'
    assert staged("SELECT count(*), count(*) FILTER (WHERE note = 'after') FROM items") == '%d|50' % history['all']
    assert files_holding(STAGING, CIPHER_VOLUME, CIPHER_LAYER) == []
    return by_time, latest


def test_restore_from_a_repository_on_a_volume(live, history, module_runner):
    """The volume that holds the repository is mounted read-only into the staging container."""
    by_time, latest = check_time_and_latest(module_runner, [ON_VOLUME], history)
    for result in (by_time, latest):
        repo = result['repositories'][0]
        assert repo['access'] == 'mount' and repo['type'] == 'posix' and repo['mount_type'] == 'volume', repo
        assert repo['source'] == VOLUME and repo['destination'] == '/var/lib/pgbackrest', repo
    mounts = json.loads(docker('inspect', '-f', '{{ json .Mounts }}', STAGING))
    assert [(m['Name'], m['Destination'], m['RW']) for m in mounts] == [(VOLUME, '/var/lib/pgbackrest', False)]
    # read-only: nothing of the staging side can change the live repository
    probe = subprocess.run(['docker', 'exec', '-u', 'postgres', STAGING, 'touch', '/var/lib/pgbackrest/probe'],
                           capture_output=True, check=False)
    assert probe.returncode != 0 and b'Read-only' in probe.stderr
    assert sql(live, 'SELECT count(*) FROM items') == str(history['all'])
    assert_no_secret_left()


def test_restore_from_a_repository_in_the_containers_own_file_system(live, history, module_runner):
    """A repository on no volume: the stanza's part of it is copied into the staging container."""
    by_time, latest = check_time_and_latest(module_runner, [IN_LAYER], history)
    for result in (by_time, latest):
        repo = result['repositories'][0]
        assert repo['access'] == 'copy' and repo['path'] == '/srv/pgbackrest', repo
        assert repo['copy_bytes'] > 0 and repo['copied_bytes'] > 0, repo
    listing = docker('exec', STAGING, 'sh', '-c', 'ls /srv/pgbackrest/archive /srv/pgbackrest/backup').split()
    assert listing.count(STANZA) == 2
    assert docker('exec', STAGING, 'stat', '-c', '%U', '/srv/pgbackrest/backup/%s/backup.info' % STANZA).strip() == \
        'postgres'
    print('copy of the repository: %d bytes in %.2f s' % (latest['repositories'][0]['copied_bytes'],
                                                          latest['repositories'][0]['copy_seconds']))
    # the copy lives and goes with the staging container (no volume is left)
    volumes = docker('volume', 'ls', '-q').split()
    remove(STAGING)
    assert not staging_exists() and docker('volume', 'ls', '-q').split() == volumes
    assert_no_secret_left()


def test_restore_while_the_live_container_is_stopped(live, history, module_runner):
    """The incident case: the live server is down. Its volume is still mounted, its own files still copied."""
    docker('stop', '-t', '30', live)
    try:
        restored = ok(module_runner('pgbackrest_restore', **restore_args([ON_VOLUME, IN_LAYER])))
        assert [r['access'] for r in restored['repositories']] == ['mount', 'copy'], restored['repositories']
        assert restored['repositories'][1]['copied_bytes'] > 0
        assert staged("SELECT count(*) FROM items") == str(history['all'])
        assert files_holding(STAGING, CIPHER_VOLUME, CIPHER_LAYER) == []
    finally:
        remove(STAGING)
        docker('start', live)
        wait_sql(live)


def test_a_repository_the_staging_container_cannot_reach_is_refused_up_front(live, module_runner):
    args = restore_args([ON_VOLUME])
    del args['container']
    refused = module_runner('pgbackrest_restore', **args)
    assert refused['failed'] and refused['refused'] and 'give container' in refused['msg'], refused['msg']
    no_copy = module_runner('pgbackrest_restore', **restore_args([IN_LAYER], repo_copy=False))
    assert no_copy['failed'] and no_copy['refused'] and 'on a volume' in no_copy['msg'], no_copy['msg']
    missing = module_runner('pgbackrest_restore', **restore_args([dict(ON_VOLUME, path='/srv/elsewhere')]))
    assert missing['failed'] and missing['refused'] and 'does not exist' in missing['msg'], missing['msg']
    planned = ok(module_runner('pgbackrest_restore', check_mode=True, **restore_args([ON_VOLUME, IN_LAYER])))
    assert [r['access'] for r in planned['repositories']] == ['mount', 'copy'], planned['repositories']
    assert not staging_exists()
    for result in (refused, no_copy, missing, planned):
        assert CIPHER_VOLUME not in repr(result) and CIPHER_LAYER not in repr(result)


LIVE_SPELLINGS = [
    LIVE_DATA + '/.', LIVE_DATA + '/', LIVE_DATA + '/./', '/var/lib/postgresql//data', '//var/lib/postgresql/data',
    '/var/lib/postgresql/nowhere/../data', LIVE_DATA + '/../data', '/var/lib/pg-live-link',
]


def test_the_live_data_directory_under_any_spelling_is_refused(live, module_runner):
    docker('exec', LIVE, 'ln', '-sfn', LIVE_DATA, '/var/lib/pg-live-link')
    before = sql(live, 'SELECT count(*) FROM items')
    try:
        for spelling in LIVE_SPELLINGS:
            args = common([ON_VOLUME])
            args.update(data_dir=spelling, target_type='latest')
            for check_mode in (True, False):
                refused = module_runner('pgbackrest_restore', check_mode=check_mode, **args)
                assert refused['failed'] and refused['refused'], (spelling, refused)
                assert 'confirm_live' in refused['msg'], (spelling, refused['msg'])
        # none of the refused runs wrote anything
        assert_no_secret_left()
        for spelling, what in ((LIVE_DATA + '/pitr-staging', 'inside'), ('/var/lib/postgresql', 'holds')):
            args = common([ON_VOLUME])
            args.update(data_dir=spelling, target_type='latest')
            refused = module_runner('pgbackrest_restore', **args)
            assert refused['failed'] and refused['refused'] and what in refused['msg'], (spelling, refused['msg'])
        assert docker('exec', LIVE, 'sh', '-c', 'test -e %s/pitr-staging || echo absent' % LIVE_DATA).strip() == 'absent'
    finally:
        docker('exec', LIVE, 'rm', '-f', '/var/lib/pg-live-link', check=False)
    assert sql(live, 'SELECT count(*) FROM items') == before
    assert sql(live, 'SELECT pg_is_in_recovery()') == 'f'
    assert_no_secret_left()


def test_a_failed_or_successful_restore_beside_the_live_server_leaves_no_secret(live, history, module_runner):
    data_dir = '/var/lib/postgresql/pitr-beside'
    args = common([ON_VOLUME])
    args.update(data_dir=data_dir, port=5498, ready_timeout=120)
    try:
        # no backup ends before that time: pgBackRest fails after the configuration was written
        failed = module_runner('pgbackrest_restore', **dict(args, target_type='time', target='2001-01-01T00:00:00Z'))
        assert failed['failed'] and not failed.get('refused'), failed
        assert 'unable to find backup set' in failed['msg'], failed['msg']
        assert CIPHER_VOLUME not in repr(failed)
        assert_no_secret_left()
        restored = ok(module_runner('pgbackrest_restore', **dict(args, target_type='time', target=history['target'])))
        assert restored['repositories'][0]['access'] == 'direct'
        count = docker('exec', '-u', 'postgres', live, 'psql', '-XAt', '-p', '5498', '-U', 'authentik', '-d',
                       'authentik', '-c', 'SELECT count(*) FROM items').strip()
        assert count == str(history['before'])
        assert_no_secret_left()
    finally:
        docker('exec', '-u', 'postgres', live, 'pg_ctl', '-D', data_dir, '-m', 'fast', 'stop', check=False)
        docker('exec', live, 'rm', '-rf', data_dir, check=False)
