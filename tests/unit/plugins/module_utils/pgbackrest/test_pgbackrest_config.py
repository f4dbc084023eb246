# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import config


S3 = {'type': 's3', 'path': '/pgbackrest', 's3_bucket': 'wal', 's3_endpoint': 's3.example.net', 's3_key': 'AK',
      's3_key_secret': 'SK', 's3_uri_style': 'path', 'storage_port': 9443, 'storage_verify_tls': True,
      'storage_ca': '-----BEGIN CERTIFICATE-----', 'cipher_type': 'aes-256-cbc', 'cipher_pass': 'secret pass',
      'retention_full': 2, 'options': {'bundle': True}}


def test_render_config_s3_and_posix():
    posix = {'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_type': 'none', 'retention_full': 4}
    text = config.render_config('authentik', '/var/lib/postgresql/data', [S3, posix],
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
        config.render_config('authentik', '/data', [repo])


def test_render_config_rejects_bad_stanza_and_path():
    with pytest.raises(RecoveryError, match='not a valid stanza'):
        config.render_config('bad stanza', '/data', [S3])
    with pytest.raises(RecoveryError, match='absolute path'):
        config.render_config('ok', 'relative', [S3])
    with pytest.raises(RecoveryError, match='at least one repository'):
        config.render_config('ok', '/data', [])


def test_archive_command():
    assert config.archive_command('authentik') == 'pgbackrest --stanza=authentik archive-push %p'
    assert config.archive_command('a', '/etc/x.conf') == 'pgbackrest --config=/etc/x.conf --stanza=a archive-push %p'


def test_render_config_without_secrets_and_their_environment():
    posix = {'type': 'posix', 'path': '/var/lib/pgbackrest', 'cipher_pass': 'posix pass'}
    plain = {'type': 'posix', 'path': '/srv/plain', 'cipher_type': 'none', 'cipher_pass': 'unused'}
    text = config.render_config('authentik', '/data', [S3, posix, plain], config_path='/etc/pgbackrest/x.conf',
                                secrets=False, own_ca=True)
    for secret in ('secret pass', 'posix pass', 'AK', 'SK', 'unused'):
        assert secret not in text.replace('BACK', ''), secret
    lines = text.splitlines()
    for line in ('repo1-cipher-type=aes-256-cbc', 'repo2-cipher-type=aes-256-cbc', 'repo1-s3-bucket=wal',
                 'repo1-storage-ca-file=/etc/pgbackrest/x.conf.repo1-ca.pem'):
        assert line in lines, line
    assert config.secret_env([S3, posix, plain]) == {
        'PGBACKREST_REPO1_CIPHER_PASS': 'secret pass', 'PGBACKREST_REPO1_S3_KEY': 'AK',
        'PGBACKREST_REPO1_S3_KEY_SECRET': 'SK', 'PGBACKREST_REPO2_CIPHER_PASS': 'posix pass'}
    full = config.render_config('authentik', '/data', [S3, posix]).splitlines()
    assert 'repo1-s3-key=AK' in full and 'repo2-cipher-pass=posix pass' in full
    assert full.index('repo1-s3-key=AK') < full.index('repo1-s3-uri-style=path')
    assert config.ca_files({'repos': [S3], 'config_path': '/etc/pgbackrest/x.conf.staging-5433'}, own=True) == {
        '/etc/pgbackrest/x.conf.staging-5433.repo1-ca.pem': '-----BEGIN CERTIFICATE-----\n'}
    with pytest.raises(RecoveryError, match='one line'):
        config.secret_env([dict(posix, cipher_pass='a\nb')])
