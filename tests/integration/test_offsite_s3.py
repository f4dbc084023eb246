# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""offsite_upload against a real S3 endpoint (rclone serve s3 on 127.0.0.1) with rclone's S3 client."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
import time

from offsite_support import (  # noqa: F401  pylint: disable=unused-import
    SECRET_KEY,
    corrupt,
    make_set,
    module_json,
    rclone,
    rclone_env,
    s3_server,
    sha256sum_check,
    tree_state,
    visible_files,
)

SERVICE = 'authentik'
STAMP = '20261122T030000Z'


def _set(tmp_path, keys, **kwargs):
    return make_set(tmp_path / 'backups', SERVICE, kwargs.pop('stamp', STAMP), keys.age_recipient, **kwargs)


def test_upload_check_apply_check_apply(tmp_path, keys, s3_server, run_module):
    set_dir = _set(tmp_path, keys, sizes=(300 * 1024, 5000))
    before = tree_state(set_dir)
    args = dict(s3_server.args(), path=set_dir)
    remote_dir = s3_server.path() / SERVICE / STAMP

    checked = run_module('offsite_upload', check_mode=True, **args)
    assert not checked.get('failed'), checked
    assert checked['changed'] is True
    assert checked['uploaded'] == ['metadata.json', 'payload-0.bin.age', 'payload-1.bin.age', 'MANIFEST.sha256']
    assert checked['bytes'] == sum(size for size, _digest, _mode in before.values())
    assert not remote_dir.exists(), 'check mode wrote to the target'

    done = run_module('offsite_upload', **args)
    assert not done.get('failed'), done
    assert done['changed'] is True
    assert done['remote'] == 'offsite:idp-offsite/prod/%s/%s' % (SERVICE, STAMP)
    assert done['uploaded'][-1] == 'MANIFEST.sha256'
    assert sorted(done['uploaded']) == sorted(before)
    assert done['bytes'] == checked['bytes'] and done['bytes_per_second'] > 0
    verification = done['verification']
    assert verification['ok'] is True and verification['methods'] == ['remote md5']
    assert sorted(item['path'] for item in verification['files']) == sorted(set(before) - {'MANIFEST.sha256'})
    # the remote layout mirrors the local one and checks out with stock tools
    assert visible_files(remote_dir) == sorted(before)
    assert sha256sum_check(remote_dir).returncode == 0
    assert tree_state(set_dir) == before, 'the local set changed'

    again = run_module('offsite_upload', check_mode=True, **args)
    assert not again.get('failed') and again['changed'] is False and again['uploaded'] == [], again
    last = run_module('offsite_upload', **args)
    assert not last.get('failed') and last['changed'] is False and last['uploaded'] == [], last
    assert last['verification']['ok'] is True

    # download mode reads every file back and compares SHA-256 with the manifest
    read_back = run_module('offsite_upload', state='verified', verify='download', **args)
    assert not read_back.get('failed'), read_back
    assert read_back['verification']['methods'] == ['read back (sha256)']


def test_restore_from_s3_with_stock_tools(tmp_path, keys, s3_server, run_module):
    """What docs/offsite.md tells an operator: rclone copy back, sha256sum -c, age -d."""
    set_dir = _set(tmp_path, keys)
    assert not run_module('offsite_upload', path=set_dir, **s3_server.args()).get('failed')
    restore = tmp_path / 'restore'
    rclone(['copy', 'offsite:idp-offsite/prod/%s/%s' % (SERVICE, STAMP), restore], rclone_env(s3_server))
    assert sha256sum_check(restore).returncode == 0
    plain = subprocess.run(['age', '-d', '-i', str(keys.age_identity), str(restore / 'payload-0.bin.age')],
                           stdout=subprocess.PIPE, check=True).stdout
    assert len(plain) == 64 * 1024


def test_refuses_incomplete_and_unencrypted_sets(tmp_path, keys, s3_server, run_module):
    incomplete = _set(tmp_path, keys, stamp='20261122T020000Z', complete=False)
    result = run_module('offsite_upload', path=incomplete, **s3_server.args())
    assert result.get('failed') and 'incomplete' in result['msg'] and 'MANIFEST.sha256' in result['msg'], result

    plain = _set(tmp_path, keys, stamp='20261122T010000Z', encryption='none')
    result = run_module('offsite_upload', path=plain, **s3_server.args())
    assert result.get('failed'), result
    assert 'unencrypted' in result['msg'] and 'payload-0.bin' in result['msg'], result['msg']
    assert not (s3_server.path() / SERVICE).exists(), 'a refused set reached the target'

    allowed = run_module('offsite_upload', path=plain, allow_unencrypted=True, **s3_server.args())
    assert not allowed.get('failed') and allowed['changed'], allowed
    assert (s3_server.path() / SERVICE / '20261122T010000Z' / 'MANIFEST.sha256').is_file()


def test_wrong_credentials(tmp_path, keys, s3_server, run_module):
    set_dir = _set(tmp_path, keys)
    wrong = 'not-the-secret-%s' % os.urandom(4).hex()
    started = time.time()
    result = run_module('offsite_upload', path=set_dir, **s3_server.args(secret=wrong))
    assert result.get('failed'), result
    assert 'refused the credentials' in result['msg'] and 'SignatureDoesNotMatch' in result['msg'], result['msg']
    assert 'gave up after' not in result['msg'], 'refused credentials must not be retried: %s' % result['msg']
    assert wrong not in module_json(result) and SECRET_KEY not in module_json(result)
    assert time.time() - started < 60
    assert not (s3_server.path() / SERVICE).exists()


def test_secrets_stay_out_of_argv_and_results(tmp_path, keys, s3_server, run_module):
    """A wrapper records the argv and environment names of every rclone child."""
    record = tmp_path / 'rclone-calls'
    wrapper = tmp_path / 'rclone-wrapper'
    wrapper.write_text('#!/bin/sh\n'
                       'printf "%%s\\n" "ARGV $*" >> %s\n'
                       'env | grep "^RCLONE_CONFIG_" | cut -d= -f1 | sed "s/^/ENV /" >> %s\n'
                       'exec %s "$@"\n' % (record, record, s3_server.argv[0]))
    wrapper.chmod(stat.S_IRWXU)
    set_dir = _set(tmp_path, keys)
    result = run_module('offsite_upload', path=set_dir, rclone_binary=wrapper, **s3_server.args())
    assert not result.get('failed'), result
    calls = record.read_text()
    assert 'ARGV copy' in calls and 'ENV RCLONE_CONFIG_OFFSITE_SECRET_ACCESS_KEY' in calls, calls
    assert SECRET_KEY not in calls
    assert SECRET_KEY not in module_json(result)


def _wait_for_upload_in_flight(directory, timeout=60):
    """Wait until the server holds part of a payload (its temporary object or the object itself).

    metadata.json goes first and is small: waiting for any object would sometimes stop the
    server between metadata.json and the first payload, and the run would then fail on
    metadata.json rather than in the middle of a payload.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if directory.exists():
            for current, _dirs, files in os.walk(str(directory)):
                for name in files:
                    if 'payload-' in name and os.path.getsize(os.path.join(current, name)) > 0:
                        return
        time.sleep(0.05)
    raise AssertionError('the upload never started')


def test_endpoint_killed_mid_upload_then_rerun(tmp_path, keys, s3_server, run_module):
    set_dir = _set(tmp_path, keys, sizes=(6 * 1024 * 1024, 6 * 1024 * 1024, 6 * 1024 * 1024))
    before = tree_state(set_dir)
    remote_dir = s3_server.path() / SERVICE / STAMP
    # slow enough to be caught in flight: 2 MiB/s for 18 MiB
    args = dict(s3_server.args(), path=set_dir, rclone_flags=['--bwlimit=2M'], retries=1, retry_delay=0.2, transfers=1)
    outcome = {}

    def upload():
        outcome['result'] = run_module('offsite_upload', **args)

    worker = threading.Thread(target=upload)
    worker.start()
    _wait_for_upload_in_flight(s3_server.path())
    s3_server.kill()
    worker.join(timeout=240)
    result = outcome['result']
    assert result.get('failed'), result
    assert 'payload-' in result['msg'], result['msg']
    assert re.search('connection refused|broken pipe|connection reset|closed network connection|unexpected EOF', result['msg']), result['msg']
    assert result.get('file', '').startswith('payload-'), result
    assert 'gave up after 2 attempts' in result['msg'], result['msg']
    assert not (remote_dir / 'MANIFEST.sha256').exists(), 'an interrupted upload looks complete'
    assert tree_state(set_dir) == before, 'the local set changed'

    s3_server.start()
    listed = rclone(['lsf', '-R', 'offsite:idp-offsite/prod'], rclone_env(s3_server)).stdout.decode()
    assert 'MANIFEST.sha256' not in listed
    again = run_module('offsite_upload', **dict(args, rclone_flags=[]))
    assert not again.get('failed'), again
    assert again['changed'] is True and again['verification']['ok'] is True
    assert visible_files(remote_dir) == sorted(before)
    assert sha256sum_check(remote_dir).returncode == 0
    assert tree_state(set_dir) == before


def test_endpoint_back_while_retrying(tmp_path, keys, s3_server, run_module):
    """The endpoint is down when the run starts and comes back during the backoff: the run succeeds."""
    set_dir = _set(tmp_path, keys)
    s3_server.kill()
    args = dict(s3_server.args(), path=set_dir, retries=5, retry_delay=1.0)

    def restart():
        time.sleep(4)
        s3_server.start()

    worker = threading.Thread(target=restart)
    worker.start()
    result = run_module('offsite_upload', **args)
    worker.join()
    assert not result.get('failed'), result
    assert result['changed'] is True and result['verification']['ok'] is True
    assert result['retries'], 'nothing was retried'
    assert all('connection refused' in item['error'] for item in result['retries']), result['retries']
    delays = [item['delay'] for item in result['retries']]
    assert delays == sorted(delays) and delays[0] == 1.0
    assert sha256sum_check(s3_server.path() / SERVICE / STAMP).returncode == 0


def test_corrupted_remote_object(tmp_path, keys, s3_server, run_module):
    set_dir = _set(tmp_path, keys, sizes=(200 * 1024, 10 * 1024))
    args = dict(s3_server.args(), path=set_dir)
    assert not run_module('offsite_upload', **args).get('failed')
    remote = s3_server.path() / SERVICE / STAMP / 'payload-1.bin.age'
    corrupt(remote)

    for verify in ('auto', 'download'):
        checked = run_module('offsite_upload', state='verified', verify=verify, **args)
        assert checked.get('failed'), checked
        assert 'payload-1.bin.age' in checked['msg'] and 'checksum mismatch' in checked['msg'], checked['msg']
        assert checked['file'] == 'payload-1.bin.age' and checked['failed_files'] == ['payload-1.bin.age']

    would = run_module('offsite_upload', check_mode=True, **args)
    assert would['changed'] is True and would['repaired'] == ['payload-1.bin.age'], would
    repaired = run_module('offsite_upload', **args)
    assert not repaired.get('failed'), repaired
    assert repaired['changed'] is True and repaired['repaired'] == ['payload-1.bin.age']
    assert repaired['uploaded'] == ['payload-1.bin.age', 'MANIFEST.sha256']
    assert sha256sum_check(remote.parent).returncode == 0
    assert not run_module('offsite_upload', state='verified', **args).get('failed')
    assert run_module('offsite_upload', **args)['changed'] is False


def test_different_set_under_the_same_name(tmp_path, keys, s3_server, run_module):
    first = _set(tmp_path, keys)
    assert not run_module('offsite_upload', path=first, **s3_server.args()).get('failed')
    other = make_set(tmp_path / 'other-root', SERVICE, STAMP, keys.age_recipient)
    result = run_module('offsite_upload', path=other, **s3_server.args())
    assert result.get('failed') and 'different set' in result['msg'], result
    remote_dir = s3_server.path() / SERVICE / STAMP
    assert (remote_dir / 'MANIFEST.sha256').read_bytes() == (first / 'MANIFEST.sha256').read_bytes()
    forced = run_module('offsite_upload', path=other, force=True, **s3_server.args())
    assert not forced.get('failed') and forced['changed'], forced
    assert (remote_dir / 'MANIFEST.sha256').read_bytes() == (other / 'MANIFEST.sha256').read_bytes()
    assert sha256sum_check(remote_dir).returncode == 0
