# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""offsite_fetch against a real S3 endpoint (rclone serve s3 on 127.0.0.1) and a local directory target."""

from __future__ import annotations

import os
import shutil
import stat

from offsite_support import (  # noqa: F401  pylint: disable=unused-import
    SECRET_KEY,
    corrupt,
    make_set,
    module_json,
    s3_server,
    sha256sum_check,
    tree_state,
)

SERVICE = 'authentik'
OLD = '20261121T030000Z'
NEW = '20261122T030000Z'


def _publish(tmp_path, keys, server_dir, stamp, complete=True, sizes=(300 * 1024, 5000)):
    """A local set, and its copy in the target's directory (as an earlier offsite upload left it)."""
    set_dir = make_set(tmp_path / 'backups', SERVICE, stamp, keys.age_recipient, sizes=sizes)
    remote = server_dir / SERVICE / stamp
    shutil.copytree(str(set_dir), str(remote))
    if not complete:
        (remote / 'MANIFEST.sha256').unlink()
    return set_dir, remote


def _contents(root):
    """{path: (size, sha256)} without the modes."""
    return dict((rel, state[:2]) for rel, state in tree_state(root).items())


def test_fetch_check_apply_check(tmp_path, keys, s3_server, run_module):
    original, _remote = _publish(tmp_path, keys, s3_server.path(), NEW)
    dest = tmp_path / 'fetched'
    args = dict(s3_server.args(), service=SERVICE, dest=str(dest))
    local = dest / SERVICE / NEW

    checked = run_module('offsite_fetch', check_mode=True, **args)
    assert not checked.get('failed'), checked
    assert checked['changed'] is True
    assert checked['stamp'] == NEW and checked['available'] == [NEW]
    assert checked['downloaded'][-1] == 'MANIFEST.sha256'
    assert sorted(checked['downloaded']) == sorted(tree_state(original))
    assert not dest.exists(), 'check mode wrote on this host'

    done = run_module('offsite_fetch', **args)
    assert not done.get('failed'), done
    assert done['changed'] is True
    assert done['path'] == str(local)
    assert done['source'] == 'offsite:idp-offsite/prod/%s/%s' % (SERVICE, NEW)
    assert done['downloaded'][-1] == 'MANIFEST.sha256'
    assert done['bytes'] == sum(size for size, _digest, _mode in tree_state(original).values())
    assert all(item['ok'] for item in done['files'])
    assert _contents(local) == _contents(original)
    assert sha256sum_check(local).returncode == 0
    assert stat.S_IMODE(local.stat().st_mode) == 0o700
    assert set(mode for _size, _digest, mode in tree_state(local).values()) == {0o600}
    assert SECRET_KEY not in module_json(done)

    again = run_module('offsite_fetch', **args)
    assert not again.get('failed'), again
    assert again['changed'] is False
    assert again['downloaded'] == [] and again['bytes'] == 0

    checked_again = run_module('offsite_fetch', check_mode=True, **args)
    assert checked_again['changed'] is False


def test_latest_complete_is_picked_and_an_incomplete_set_is_refused(tmp_path, keys, s3_server, run_module):
    _publish(tmp_path, keys, s3_server.path(), OLD)
    _publish(tmp_path, keys, s3_server.path(), NEW, complete=False)
    dest = tmp_path / 'fetched'
    args = dict(s3_server.args(), service=SERVICE, dest=str(dest))

    latest = run_module('offsite_fetch', **args)
    assert not latest.get('failed'), latest
    assert latest['stamp'] == OLD and latest['available'] == [OLD]

    refused = run_module('offsite_fetch', stamp=NEW, **args)
    assert refused.get('failed')
    assert 'incomplete' in refused['msg'] and NEW in refused['msg'] and OLD in refused['msg']
    assert not (dest / SERVICE / NEW).exists()

    missing = run_module('offsite_fetch', stamp='20200101T000000Z', **args)
    assert missing.get('failed') and 'holds no set' in missing['msg']


def test_a_damaged_offsite_copy_never_looks_complete_locally(tmp_path, keys, s3_server, run_module):
    _original, remote = _publish(tmp_path, keys, s3_server.path(), NEW)
    corrupt(remote / 'payload-0.bin.age')
    dest = tmp_path / 'fetched'
    local = dest / SERVICE / NEW

    failed = run_module('offsite_fetch', **dict(s3_server.args(), service=SERVICE, dest=str(dest)))
    assert failed.get('failed')
    assert 'payload-0.bin.age' in failed['msg'] and 'damaged' in failed['msg']
    assert failed['file'] == 'payload-0.bin.age'
    assert not (local / 'MANIFEST.sha256').exists()
    assert not (local / 'payload-0.bin.age').exists()
    # nothing half-written is left beside the files
    assert [name for name in os.listdir(str(local)) if name.startswith('.')] == []

    info = run_module('backup_set_info', root=str(dest), service=SERVICE)
    assert info['latest_complete'] == {} and info['incomplete'] == [str(local)]


def test_a_damaged_local_copy_is_fetched_again(tmp_path, keys, s3_server, run_module):
    original, _remote = _publish(tmp_path, keys, s3_server.path(), NEW)
    dest = tmp_path / 'fetched'
    args = dict(s3_server.args(), service=SERVICE, dest=str(dest))
    local = dest / SERVICE / NEW
    assert not run_module('offsite_fetch', **args).get('failed')

    corrupt(local / 'payload-1.bin.age', offset=10)
    repaired = run_module('offsite_fetch', **args)
    assert not repaired.get('failed'), repaired
    assert repaired['changed'] is True
    assert repaired['downloaded'] == ['payload-1.bin.age', 'MANIFEST.sha256']
    assert _contents(local) == _contents(original)


def test_local_directory_target(tmp_path, keys, run_module):
    target = tmp_path / 'mounted'
    target.mkdir()
    original, _remote = _publish(tmp_path, keys, target, NEW, sizes=(70 * 1024,))
    dest = tmp_path / 'fetched'

    done = run_module('offsite_fetch', backend='local', target=str(target), service=SERVICE, dest=str(dest))
    assert not done.get('failed'), done
    assert done['changed'] is True
    assert _contents(dest / SERVICE / NEW) == _contents(original)
    assert sha256sum_check(dest / SERVICE / NEW).returncode == 0
