# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage import transfer
from ansible_collections.idp.recovery.plugins.module_utils._storage.sets import list_remote_sets, remove_remote_set


def test_local_upload_verify_and_list(tmp_path, finalized_set, local_storage):
    set_dir = finalized_set(tmp_path / 'backups')
    storage = local_storage()
    local = transfer.LocalSet(set_dir)
    result = transfer.upload_set(storage, local)
    assert result['changed'] and result['uploaded'][-1] == 'MANIFEST.sha256'
    assert result['verification']['ok']
    assert transfer.upload_set(storage, local)['changed'] is False
    assert list_remote_sets(storage) == [{'service': 'authentik', 'stamp': '20261122T030000Z', 'complete': True,
                                         'files': 3, 'size_bytes': sum(local.sizes.values()) + len(local.manifest)}]
    remove_remote_set(storage, 'authentik', '20261122T030000Z')
    assert list_remote_sets(storage) == []


def test_local_set_refusals(tmp_path, finalized_set):
    plain = finalized_set(tmp_path / 'backups', encryption='none')
    with pytest.raises(RecoveryError, match='unencrypted payloads'):
        transfer.LocalSet(plain)
    assert transfer.LocalSet(plain, allow_unencrypted=True).unencrypted == ['payload.bin']
    open_set = str(tmp_path / 'backups' / 'authentik' / '20261123T030000Z')
    _backup_set.create(open_set)
    with pytest.raises(RecoveryError, match='incomplete'):
        transfer.LocalSet(open_set)
    with pytest.raises(RecoveryError, match='not a UTC stamp'):
        transfer.LocalSet(str(tmp_path / 'backups' / 'authentik'))


def test_local_upload_refuses_a_damaged_local_file(tmp_path, finalized_set, local_storage):
    set_dir = finalized_set(tmp_path / 'backups')
    local = transfer.LocalSet(set_dir)
    with open(os.path.join(set_dir, 'payload.bin'), 'r+b') as handle:
        handle.write(b'X')
    storage = local_storage()
    with pytest.raises(RecoveryError, match='local set is damaged'):
        transfer.upload_set(storage, local)
    remote = tmp_path / 'target' / 'authentik' / '20261122T030000Z'
    assert not (remote / 'MANIFEST.sha256').exists()
    assert not [name for name in os.listdir(str(remote)) if '.partial-' in name]


def test_manifest_digest_helper(tmp_path, finalized_set):
    set_dir = finalized_set(tmp_path / 'backups')
    local = transfer.LocalSet(set_dir)
    found, damaged = transfer._local_hashes(local, local.files, ('md5',))
    assert damaged == {}
    with open(os.path.join(set_dir, 'payload.bin'), 'rb') as handle:
        assert found['payload.bin']['md5'] == hashlib.md5(handle.read()).hexdigest()


def _uploaded(tmp_path, finalized_set, local_storage):
    """A local target holding a verified copy of one set, and that storage."""
    local = transfer.LocalSet(finalized_set(tmp_path / 'backups'))
    storage = local_storage()
    transfer.upload_set(storage, local)
    return storage, local


def test_verify_remote_set_names_a_damaged_remote_file(tmp_path, finalized_set, local_storage):
    storage, local = _uploaded(tmp_path, finalized_set, local_storage)
    assert transfer.verify_remote_set(storage, local)['ok']
    remote = tmp_path / 'target' / 'authentik' / '20261122T030000Z' / 'payload.bin'
    remote.write_bytes(b'Y' * remote.stat().st_size)
    with pytest.raises(RecoveryError, match='verification of .* failed: payload.bin: checksum mismatch') as caught:
        transfer.verify_remote_set(storage, local)
    assert caught.value.details['failed_files'] == ['payload.bin']


def test_fetch_set_check_mode_fetch_and_rerun(tmp_path, finalized_set, local_storage):
    storage, local = _uploaded(tmp_path, finalized_set, local_storage)
    dest = tmp_path / 'fetched'
    checked = transfer.fetch_set(storage, 'authentik', str(dest), check_mode=True)
    assert checked['changed'] and checked['downloaded'] == local.files + ['MANIFEST.sha256']
    assert not dest.exists()
    done = transfer.fetch_set(storage, 'authentik', str(dest))
    assert done['changed'] and done['stamp'] == local.stamp and done['available'] == [local.stamp]
    assert done['bytes'] == local.total_bytes and all(item['ok'] for item in done['files'])
    assert transfer.local_copy_ok(done['path'])[0]
    again = transfer.fetch_set(storage, 'authentik', str(dest), stamp=local.stamp)
    assert not again['changed'] and again['downloaded'] == []


def test_fetch_set_refuses_a_damaged_offsite_copy(tmp_path, finalized_set, local_storage):
    storage, local = _uploaded(tmp_path, finalized_set, local_storage)
    remote = tmp_path / 'target' / 'authentik' / '20261122T030000Z' / 'payload.bin'
    remote.write_bytes(b'Y' * remote.stat().st_size)
    with pytest.raises(RecoveryError, match='the offsite copy of .*payload.bin is damaged') as caught:
        transfer.fetch_set(storage, 'authentik', str(tmp_path / 'fetched'))
    assert caught.value.details['file'] == 'payload.bin'
    assert not os.path.exists(os.path.join(str(tmp_path / 'fetched'), 'authentik', local.stamp, 'MANIFEST.sha256'))


def test_read_remote_manifest_refusals(tmp_path, finalized_set, local_storage):
    storage, local = _uploaded(tmp_path, finalized_set, local_storage)
    manifest = tmp_path / 'target' / 'authentik' / '20261122T030000Z' / 'MANIFEST.sha256'
    data, entries = transfer.read_remote_manifest(storage, local.rel_dir)
    assert data == local.manifest and entries == local.entries
    digest = hashlib.sha256(b'').hexdigest()
    for text, message in (('not a line\n', 'line 1 is not a sha256sum line: the offsite manifest is damaged'),
                          ('%s  MANIFEST.sha256\n' % digest, 'lists itself'),
                          ('%s  a\n%s  a\n' % (digest, digest), 'line 2 lists a a second time'),
                          ('\n', 'lists no file'),
                          ('%s  ../a\n' % digest, 'unsafe path')):
        manifest.write_text(text)
        with pytest.raises(RecoveryError, match=message):
            transfer.read_remote_manifest(storage, local.rel_dir)


def test_upload_and_fetch_from_the_module_options(tmp_path, finalized_set, storage_params):
    set_dir = finalized_set(tmp_path / 'backups')
    (tmp_path / 'target').mkdir()
    options = storage_params(backend='local', target=str(tmp_path / 'target'))
    warnings = []
    uploaded = transfer.upload(dict(options, path=set_dir, state='present', verify='auto', allow_unencrypted=False,
                                    force=False), warn=warnings.append)
    assert uploaded['changed'] and uploaded['retries'] == [] and warnings == []
    verified = transfer.upload(dict(options, path=set_dir, state='verified', verify='download', allow_unencrypted=False,
                                    force=False))
    assert not verified['changed'] and verified['verification']['methods'] == ['read back (sha256)']
    with pytest.raises(RecoveryError, match='not a set stamp'):
        transfer.fetch(dict(options, service='authentik', stamp='latest', dest=str(tmp_path / 'fetched')))
    fetched = transfer.fetch(dict(options, service='authentik', stamp=None, dest=str(tmp_path / 'fetched')))
    assert fetched['changed'] and fetched['retries'] == []


def test_upload_set_repairs_a_copy_that_does_not_verify(tmp_path, finalized_set, local_storage):
    storage, local = _uploaded(tmp_path, finalized_set, local_storage)
    remote = tmp_path / 'target' / 'authentik' / '20261122T030000Z' / 'payload.bin'
    remote.write_bytes(b'Y' * remote.stat().st_size)
    would = transfer.upload_set(storage, local, check_mode=True)
    assert would['changed'] and would['repaired'] == ['payload.bin'] and would['uploaded'] == ['payload.bin', 'MANIFEST.sha256']
    assert remote.read_bytes().startswith(b'YYYY') and (remote.parent / 'MANIFEST.sha256').exists()
    repaired = transfer.upload_set(storage, local)
    assert repaired['repaired'] == ['payload.bin'] and repaired['verification']['ok']
    assert transfer.verify_remote_set(storage, local)['ok']
