# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set, _storage
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError


def _params(**extra):
    params = dict((name, spec.get('default')) for name, spec in _storage.storage_argument_spec().items())
    params.update(extra)
    return params


def _local(tmp_path, **extra):
    target = tmp_path / 'target'
    target.mkdir(exist_ok=True)
    return _storage.storage_from_params(_params(backend='local', target=str(target), **extra))


def _finalized(root, service='authentik', stamp='20261122T030000Z', encryption='age'):
    set_dir = str(root / service / stamp)
    _backup_set.create(set_dir, service, 'authentik')
    with open(os.path.join(set_dir, 'payload.bin'), 'wb') as handle:
        handle.write(os.urandom(4096))
    _backup_set.write_fragment(set_dir, 'payload.bin', {'payloads': {'payload.bin': {'encryption': encryption}}})
    _backup_set.finalize(set_dir)
    return set_dir


def test_retry_backs_off_and_stops_on_permanent_errors(tmp_path):
    storage = _local(tmp_path, retries=3, retry_delay=0.5)
    slept = []
    storage.sleep = slept.append
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _storage.StorageError('connection refused', transient=True, file='a' if len(calls) == 1 else None)
        return 'done'

    assert storage.retry('upload', flaky) == 'done'
    assert slept == [0.5, 1.0] and [item['attempt'] for item in storage.retried] == [1, 2]

    def refused():
        calls.append(1)
        raise _storage.StorageError('AccessDenied', transient=False)

    calls[:] = []
    with pytest.raises(_storage.StorageError, match='^AccessDenied$'):
        storage.retry('upload', refused)
    assert len(calls) == 1


def test_retry_gives_up_and_names_the_first_file(tmp_path):
    storage = _local(tmp_path, retries=2, retry_delay=100.0)
    storage.sleep = lambda delay: None
    attempts = []

    def down():
        attempts.append(1)
        raise _storage.StorageError('attempt %d failed' % len(attempts), transient=True,
                                    file='payload.bin' if len(attempts) == 1 else None)

    with pytest.raises(_storage.StorageError) as caught:
        storage.retry('upload', down)
    assert len(attempts) == 3
    assert 'gave up after 3 attempts' in caught.value.msg and 'attempt 1 failed' in caught.value.msg
    assert caught.value.details['file'] == 'payload.bin'
    assert [item['delay'] for item in storage.retried] == [60.0, 60.0]


def test_local_upload_verify_and_list(tmp_path):
    set_dir = _finalized(tmp_path / 'backups')
    storage = _local(tmp_path)
    local = _storage.LocalSet(set_dir)
    result = _storage.upload_set(storage, local)
    assert result['changed'] and result['uploaded'][-1] == 'MANIFEST.sha256'
    assert result['verification']['ok']
    assert _storage.upload_set(storage, local)['changed'] is False
    assert _storage.list_remote_sets(storage) == [{'service': 'authentik', 'stamp': '20261122T030000Z', 'complete': True,
                                                   'files': 3, 'size_bytes': sum(local.sizes.values()) + len(local.manifest)}]
    _storage.remove_remote_set(storage, 'authentik', '20261122T030000Z')
    assert _storage.list_remote_sets(storage) == []


def test_local_set_refusals(tmp_path):
    plain = _finalized(tmp_path / 'backups', encryption='none')
    with pytest.raises(RecoveryError, match='unencrypted payloads'):
        _storage.LocalSet(plain)
    assert _storage.LocalSet(plain, allow_unencrypted=True).unencrypted == ['payload.bin']
    open_set = str(tmp_path / 'backups' / 'authentik' / '20261123T030000Z')
    _backup_set.create(open_set)
    with pytest.raises(RecoveryError, match='incomplete'):
        _storage.LocalSet(open_set)
    with pytest.raises(RecoveryError, match='not a UTC stamp'):
        _storage.LocalSet(str(tmp_path / 'backups' / 'authentik'))


def test_local_upload_refuses_a_damaged_local_file(tmp_path):
    set_dir = _finalized(tmp_path / 'backups')
    local = _storage.LocalSet(set_dir)
    with open(os.path.join(set_dir, 'payload.bin'), 'r+b') as handle:
        handle.write(b'X')
    storage = _local(tmp_path)
    with pytest.raises(RecoveryError, match='local set is damaged'):
        _storage.upload_set(storage, local)
    remote = tmp_path / 'target' / 'authentik' / '20261122T030000Z'
    assert not (remote / 'MANIFEST.sha256').exists()
    assert not [name for name in os.listdir(str(remote)) if '.partial-' in name]


def test_list_remote_sets_ignores_foreign_names(tmp_path):
    target = tmp_path / 'target'
    for rel in ('authentik/20261122T030000Z/MANIFEST.sha256', 'authentik/20261121T030000Z/x',
                'authentik/latest/MANIFEST.sha256', '.hidden/20261122T030000Z/MANIFEST.sha256', 'README'):
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')
    (target / 'ory' / '20261120T030000Z').mkdir(parents=True)
    storage = _local(tmp_path)
    found = [(item['service'], item['stamp'], item['complete']) for item in _storage.list_remote_sets(storage)]
    assert found == [('authentik', '20261121T030000Z', False), ('authentik', '20261122T030000Z', True),
                     ('ory', '20261120T030000Z', False)]
    only = _storage.list_remote_sets(storage, 'ory')
    assert [(item['service'], item['stamp']) for item in only] == [('ory', '20261120T030000Z')]
    with pytest.raises(RecoveryError, match='not a set stamp'):
        _storage.remove_remote_set(storage, 'authentik', 'latest')


def test_local_target_must_exist(tmp_path):
    with pytest.raises(RecoveryError, match='mounted'):
        _storage.storage_from_params(_params(backend='local', target=str(tmp_path / 'nowhere')))


def test_rsync_listing_lines():
    line = '-rw-------          4,096 2026/11/22 03:00:00 authentik/20261122T030000Z/na\\#303\\#251me'
    match = _storage._LIST_LINE.match(line)
    assert match and match.group(1) == '-' and match.group(2) == '4,096'
    assert _storage._rsync_unescape(match.group(3)) == u'authentik/20261122T030000Z/na\u00e9me'
    assert _storage._rsync_unescape('a\\#040b') == 'a b'
    assert _storage._rsync_pattern('20261122T030000Z') == '20261122T030000Z'
    assert _storage._rsync_pattern('we*ird') == 'we\\*ird'


def test_rclone_log_classification():
    refused = json.dumps({'level': 'error', 'msg': 'operation error S3: ListObjectsV2, https response error StatusCode: 403, '
                          'api error SignatureDoesNotMatch: The request signature we calculated does not match'})
    entries = _storage._parse_json_log(refused + '\nnot json\n')
    assert entries[1] == {'level': '', 'msg': 'not json'}
    assert _storage._is_permanent(entries[0]['msg'])
    assert _storage._short_rclone_message(entries[0]['msg']).startswith('api error SignatureDoesNotMatch')
    refused_conn = 'Put "http://x/": dial tcp 127.0.0.1:9: connect: connection refused'
    assert not _storage._is_permanent(refused_conn)
    assert _storage._short_rclone_message(refused_conn) == 'dial tcp 127.0.0.1:9: connect: connection refused'


def test_manifest_digest_helper(tmp_path):
    set_dir = _finalized(tmp_path / 'backups')
    local = _storage.LocalSet(set_dir)
    found, damaged = _storage._local_hashes(local, local.files, ('md5',))
    assert damaged == {}
    with open(os.path.join(set_dir, 'payload.bin'), 'rb') as handle:
        assert found['payload.bin']['md5'] == hashlib.md5(handle.read()).hexdigest()
