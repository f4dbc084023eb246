# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _pgbackrest
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

# `pgbackrest info --output=json` of pgBackRest 2.45 (an S3 repository, one full backup)
INFO = json.loads(r'''[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003",
"min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002",
"stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},
"error":false,"info":{"delta":22992615,"repository":{"delta":3069680,"size":3069680},"size":22992615},
"label":"20261123-005843F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,
"timestamp":{"start":1795395523,"stop":1795395526},"type":"full"}],"cipher":"aes-256-cbc",
"db":[{"id":1,"repo-key":1,"system-id":7711165012838133780,"version":"15"}],"name":"main",
"repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],
"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]''')

S3 = {'type': 's3', 'path': '/pgbackrest', 's3_bucket': 'wal', 's3_endpoint': 's3.example.net', 's3_key': 'AK',
      's3_key_secret': 'SK', 's3_uri_style': 'path', 'storage_port': 9443, 'storage_verify_tls': True,
      'storage_ca': '-----BEGIN CERTIFICATE-----', 'cipher_type': 'aes-256-cbc', 'cipher_pass': 'secret pass',
      'retention_full': 2, 'options': {'bundle': True}}


def test_render_config_s3_and_posix():
    posix = {'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_type': 'none', 'retention_full': 4}
    text = _pgbackrest.render_config('authentik', '/var/lib/postgresql/data', [S3, posix],
                                     {'start-fast': True, 'process-max': 2}, pg_port=5433, pg_user='authentik',
                                     command_options={'archive-push': {'io-timeout': 10}})
    lines = text.splitlines()
    assert lines[1] == '[global]'
    for line in ('repo1-type=s3', 'repo1-s3-bucket=wal', 'repo1-s3-uri-style=path', 'repo1-storage-port=9443',
                 'repo1-storage-ca-file=/etc/pgbackrest/repo1-ca.pem', 'repo1-cipher-type=aes-256-cbc',
                 'repo1-cipher-pass=secret pass', 'repo1-retention-full=2', 'repo1-bundle=y',
                 'repo2-type=posix', 'repo2-retention-full=4', 'start-fast=y', 'process-max=2',
                 '[global:archive-push]', 'io-timeout=10', '[authentik]', 'pg1-path=/var/lib/postgresql/data',
                 'pg1-port=5433', 'pg1-user=authentik'):
        assert line in lines, line
    assert not any(line.startswith('repo2-cipher') for line in lines)
    assert 'repo1-storage-verify-tls=n' not in lines
    assert lines.index('[global:archive-push]') < lines.index('[authentik]')


@pytest.mark.parametrize('repo, message', [
    (dict(S3, cipher_pass=None), 'needs cipher_pass'),
    (dict(S3, s3_bucket=None), 'needs s3_bucket'),
    (dict(S3, cipher_pass='two\nlines'), 'one line'),
    (dict(S3, storage_ca_file='/etc/ca.pem'), 'not both'),
    (dict(S3, options={'Bad Name': 1}), 'not a pgBackRest option name'),
    (dict(S3, retention_full=0), '1 or more'),
])
def test_render_config_rejects_bad_repositories(repo, message):
    with pytest.raises(RecoveryError, match=message):
        _pgbackrest.render_config('authentik', '/data', [repo])


def test_render_config_rejects_bad_stanza_and_path():
    with pytest.raises(RecoveryError, match='not a valid stanza'):
        _pgbackrest.render_config('bad stanza', '/data', [S3])
    with pytest.raises(RecoveryError, match='absolute path'):
        _pgbackrest.render_config('ok', 'relative', [S3])
    with pytest.raises(RecoveryError, match='at least one repository'):
        _pgbackrest.render_config('ok', '/data', [])


def test_archive_command():
    assert _pgbackrest.archive_command('authentik') == 'pgbackrest --stanza=authentik archive-push %p'
    assert _pgbackrest.archive_command('a', '/etc/x.conf') == 'pgbackrest --config=/etc/x.conf --stanza=a archive-push %p'


def test_parse_info():
    info = _pgbackrest.parse_info(json.dumps(INFO), 'main')
    assert info['ok'] and info['status_code'] == 0 and info['cipher'] == 'aes-256-cbc'
    assert info['latest_backup'] == info['latest_full'] == '20261123-005843F'
    assert info['archive_min'] == '000000010000000000000001' and info['archive_max'] == '000000010000000000000003'
    backup = info['backups'][0]
    assert backup['type'] == 'full' and backup['stop'] == '2026-11-23T00:58:46Z' and backup['repo_size'] == 3069680
    assert backup['lsn_start'] == '0/2000028' and backup['archive_stop'] == '000000010000000000000003'
    assert info['repos'] == [{'key': 1, 'cipher': 'aes-256-cbc', 'status_code': 0, 'status_message': 'ok'}]


def test_parse_info_failures_and_empty_stanza():
    with pytest.raises(RecoveryError, match='knows no stanza other'):
        _pgbackrest.parse_info(json.dumps(INFO), 'other')
    with pytest.raises(RecoveryError, match='did not return JSON'):
        _pgbackrest.parse_info('ERROR: nothing', 'main')
    empty = [{'name': 'main', 'status': {'code': 2, 'message': 'no valid backups'}, 'backup': [], 'archive': []}]
    info = _pgbackrest.parse_info(json.dumps(empty), 'main')
    assert not info['ok'] and info['latest_backup'] is None and info['archive_max'] is None


def test_target_args():
    args, text = _pgbackrest.target_args('time', '2026-03-01T09:14:00.5+01:00')
    assert text == '2026-03-01 08:14:00.500000+00'
    assert args == ['--type=time', '--target=2026-03-01 08:14:00.500000+00', '--target-action=promote']
    assert _pgbackrest.target_args('time', '2026-03-01 09:14:00')[1] == '2026-03-01 09:14:00.000000+00'
    assert _pgbackrest.target_args('name', 'before-upgrade')[0] == ['--type=name', '--target=before-upgrade',
                                                                    '--target-action=promote']
    assert _pgbackrest.target_args('latest', backup_set='20260301-020304F')[0] == [
        '--set=20260301-020304F', '--type=default']
    assert _pgbackrest.target_args('lsn', '0/3000028', exclusive=True)[0] == [
        '--type=lsn', '--target=0/3000028', '--target-exclusive', '--target-action=promote']
    assert _pgbackrest.target_args('immediate')[0] == ['--type=immediate', '--target-action=promote']


@pytest.mark.parametrize('kind, target, extra, message', [
    ('time', None, {}, 'needs a target'),
    ('time', 'yesterday', {}, 'not an ISO-8601 time'),
    ('name', 'x' * 64, {}, 'at most 63 bytes'),
    ('lsn', '3000028', {}, 'not of the form'),
    ('xid', 'abc', {}, 'not a number'),
    ('latest', 'now', {}, 'takes no target'),
    ('latest', None, {'exclusive': True}, 'exclusive applies'),
    ('name', 'point', {'exclusive': True}, 'exclusive applies'),
    ('latest', None, {'backup_set': '2026-03-01'}, 'not a pgBackRest backup label'),
    ('sometime', None, {}, 'target_type must be one of'),
])
def test_target_args_rejects(kind, target, extra, message):
    with pytest.raises(RecoveryError, match=message):
        _pgbackrest.target_args(kind, target, **extra)


def test_next_segment():
    assert _pgbackrest.next_segment('000000010000000000000004') == '000000010000000000000005'
    assert _pgbackrest.next_segment('0000000200000001000000FF') == '000000020000000200000000'
    with pytest.raises(RecoveryError):
        _pgbackrest.next_segment('nope')


LOG_GAP = '''2026-11-23 00:59:00.073 UTC [44] LOG:  restored log file "000000010000000000000002" from archive
2026-11-23 00:59:00.141 UTC [44] LOG:  restored log file "000000010000000000000003" from archive
2026-11-23 00:59:00.271 UTC [44] LOG:  redo done at 0/4019588 system usage: CPU: user: 0.00 s
2026-11-23 00:59:00.271 UTC [44] LOG:  last completed transaction was at log time 2026-11-23 00:58:53.319237+00
2026-11-23 00:59:00.271 UTC [44] FATAL:  recovery ended before configured recovery target was reached
'''


def test_recovery_log_and_gap_explanation():
    log = _pgbackrest.read_recovery_log(LOG_GAP)
    assert log['restored_segments'] == 2 and log['last_restored_segment'] == '000000010000000000000003'
    assert log['redo_done_lsn'] == '0/4019588' and log['stop_line'] is None
    assert log['last_transaction_log_time'] == '2026-11-23 00:58:53.319237+00'
    message, missing = _pgbackrest.explain_recovery_failure(log, '000000010000000000000009')
    assert missing == '000000010000000000000004'
    assert 'gap' in message and '000000010000000000000004 is missing' in message and '0/4019588' in message
    message, missing = _pgbackrest.explain_recovery_failure(log, '000000010000000000000003')
    assert missing == '000000010000000000000004' and 'later than anything archived' in message
    other = _pgbackrest.read_recovery_log('x FATAL:  could not locate required checkpoint record\n')
    assert _pgbackrest.explain_recovery_failure(other) == ('could not locate required checkpoint record', None)


def test_stop_line_and_backup_set():
    log = _pgbackrest.read_recovery_log('LOG:  recovery stopping at restore point "before", time 2026-03-01 09:14:00+00\n')
    assert log['stop_line'] == 'recovery stopping at restore point "before", time 2026-03-01 09:14:00+00'
    out = 'P00   INFO: repo1: restore backup set 20261123-011335F_20261124-011335D, recovery will start at x\n'
    assert _pgbackrest.restored_backup_set(out) == '20261123-011335F_20261124-011335D'
    assert _pgbackrest.restored_backup_set('nothing') is None


def test_describe_failure_names_a_wrong_passphrase_without_garbage():
    output = ('P00   WARN: repo1: [FormatError] unable to load info file \'/r/backup/a/backup.info\' or '
              '\'/r/backup/a/backup.info.copy\':\n'
              '                                    FormatError: key/value found outside of section at line 1: \x8dj|*q\n'
              '                                    HINT: backup.info cannot be opened\n'
              'P00  ERROR: [075]: no backup set found to restore\n')
    message = _pgbackrest.describe_failure('restore', 75, output)
    assert message.startswith('restore failed (exit code 75): [75] no backup set found to restore')
    assert 'cipher passphrase' in message and '\x8d' not in message and 'at line 1 ' in message
    assert _pgbackrest.pgbackrest_errors(output) == [(75, 'no backup set found to restore')]


def test_render_config_without_secrets_and_their_environment():
    posix = {'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_pass': 'posix pass'}
    plain = {'type': 'posix', 'path': '/srv/plain', 'cipher_type': 'none', 'cipher_pass': 'unused'}
    text = _pgbackrest.render_config('authentik', '/data', [S3, posix, plain], config_path='/etc/pgbackrest/x.conf',
                                     secrets=False, own_ca=True)
    for secret in ('secret pass', 'posix pass', 'AK', 'SK', 'unused'):
        assert secret not in text.replace('BACK', ''), secret
    lines = text.splitlines()
    for line in ('repo1-cipher-type=aes-256-cbc', 'repo2-cipher-type=aes-256-cbc', 'repo1-s3-bucket=wal',
                 'repo1-storage-ca-file=/etc/pgbackrest/x.conf.repo1-ca.pem'):
        assert line in lines, line
    assert _pgbackrest.secret_env([S3, posix, plain]) == {
        'PGBACKREST_REPO1_CIPHER_PASS': 'secret pass', 'PGBACKREST_REPO1_S3_KEY': 'AK',
        'PGBACKREST_REPO1_S3_KEY_SECRET': 'SK', 'PGBACKREST_REPO2_CIPHER_PASS': 'posix pass'}
    full = _pgbackrest.render_config('authentik', '/data', [S3, posix]).splitlines()
    assert 'repo1-s3-key=AK' in full and 'repo2-cipher-pass=posix pass' in full
    assert full.index('repo1-s3-key=AK') < full.index('repo1-s3-uri-style=path')
    assert _pgbackrest.ca_files({'repos': [S3], 'config_path': '/etc/pgbackrest/x.conf.staging-5433'}, own=True) == {
        '/etc/pgbackrest/x.conf.staging-5433.repo1-ca.pem': '-----BEGIN CERTIFICATE-----\n'}
    with pytest.raises(RecoveryError, match='one line'):
        _pgbackrest.secret_env([dict(posix, cipher_pass='a\nb')])


@pytest.mark.parametrize('spelling', [
    '/var/lib/postgresql/data', '/var/lib/postgresql/data/', '/var/lib/postgresql/data/.', '/var/lib/postgresql//data',
    '//var/lib/postgresql/data', '///var/lib/postgresql/data/./', '/var/lib/postgresql/x/../data',
    '/var/lib/postgresql/data/../data'])
def test_normalise_path(spelling):
    assert _pgbackrest.normalise_path(spelling) == '/var/lib/postgresql/data'


def test_normalise_path_and_within():
    assert _pgbackrest.normalise_path('/') == '/' and _pgbackrest.normalise_path('//') == '/'
    with pytest.raises(RecoveryError, match='data_dir must be an absolute path'):
        _pgbackrest.normalise_path('var/lib', 'data_dir')
    assert _pgbackrest.path_within('/a/b', '/a') and _pgbackrest.path_within('/a', '/a')
    assert _pgbackrest.path_within('/a', '/') and not _pgbackrest.path_within('/ab', '/a')
    assert not _pgbackrest.path_within('/a', '/a/b')


PGDATA = '/var/lib/postgresql/data'
STAGING_PATHS = ['/etc/pgbackrest', '/var/log/pgbackrest', '/run/postgresql', '/tmp']
VOLUME_MOUNT = {'Type': 'volume', 'Name': 'repo', 'Source': '/var/lib/docker/volumes/repo/_data',
                'Destination': '/var/lib/pgbackrest', 'RW': True}


def test_plan_repo_mount():
    plan = _pgbackrest.plan_repo_mount('/var/lib/pgbackrest', [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
    assert plan == {'access': 'mount', 'mount_type': 'volume', 'source': 'repo', 'destination': '/var/lib/pgbackrest',
                    'bind': 'repo:/var/lib/pgbackrest:ro'}
    # below the volume's mount point: the whole volume at its own path
    below = dict(VOLUME_MOUNT, Destination='/backup')
    assert _pgbackrest.plan_repo_mount('/backup/pgbackrest/', [below], PGDATA, STAGING_PATHS)['bind'] == 'repo:/backup:ro'
    # the deepest mount holding the path wins; a bind mount gives exactly the repository's host directory
    bind = {'Type': 'bind', 'Source': '/srv/host-backup', 'Destination': '/backup/pg', 'RW': True}
    plan = _pgbackrest.plan_repo_mount('/backup/pg/repo', [below, bind], PGDATA, STAGING_PATHS)
    assert plan['mount_type'] == 'bind' and plan['bind'] == '/srv/host-backup/repo:/backup/pg/repo:ro'
    # no mount: a copy
    plan = _pgbackrest.plan_repo_mount('/srv/pgbackrest', [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
    assert plan['access'] == 'copy' and 'own file system' in plan['reason']
    # a volume whose mount point would cover the staging data directory is copied, not mounted
    parent = dict(VOLUME_MOUNT, Destination='/var/lib/postgresql')
    plan = _pgbackrest.plan_repo_mount('/var/lib/postgresql/backrest', [parent], PGDATA, STAGING_PATHS)
    assert plan['access'] == 'copy' and 'cover' in plan['reason']
    # below a directory the staging container writes is fine; over it is not
    assert _pgbackrest.plan_repo_mount('/tmp/repo', [], PGDATA, STAGING_PATHS)['access'] == 'copy'
    tmpfs = {'Type': 'tmpfs', 'Destination': '/var/lib/pgbackrest'}
    assert _pgbackrest.plan_repo_mount('/var/lib/pgbackrest', [tmpfs], PGDATA, STAGING_PATHS)['access'] == 'copy'


@pytest.mark.parametrize('path', ['/var/lib/postgresql/data/repo', '/var/lib/postgresql', '/etc', '/'])
def test_plan_repo_mount_refuses_a_repository_over_the_staging_directories(path):
    with pytest.raises(RecoveryError, match='overlaps the staging container'):
        _pgbackrest.plan_repo_mount(path, [VOLUME_MOUNT], PGDATA, STAGING_PATHS)
