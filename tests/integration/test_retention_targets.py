# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_retention on a local root, on the S3 endpoint and over rsync/sshd, with incomplete sets."""

from __future__ import annotations

import json
import os
import subprocess
import time

from offsite_support import (  # noqa: F401  pylint: disable=unused-import
    BUCKET,
    make_set,
    rclone,
    rclone_env,
    s3_server,
    sshd,
    tree_state,
    visible_files,
)

# complete sets over three days; one old incomplete set (an interrupted run) and one newer than
# the newest complete set (a run that may still be writing)
COMPLETE = ['20261120T030000Z', '20261120T150000Z', '20261121T030000Z', '20261122T030000Z']
OLD_INCOMPLETE = '20261121T150000Z'
NEW_INCOMPLETE = '20261122T150000Z'


def _abandon(set_dir):
    """Make an open set look like an interrupted run: its writer gone, nothing written for an hour."""
    proc = subprocess.Popen(['true'])
    proc.wait()
    marker_path = set_dir / '.in-progress'
    marker = json.loads(marker_path.read_text())
    marker['pid'] = proc.pid
    marker['writer'] = dict(marker['writer'], pid=proc.pid, start_time=1)
    marker_path.write_text(json.dumps(marker))
    when = time.time() - 3600
    for current, dirs, files in os.walk(str(set_dir)):
        for name in dirs + files + ['.']:
            os.utime(os.path.join(current, name), (when, when))


def _root(tmp_path, keys, service='authentik'):
    root = tmp_path / 'backups'
    for stamp in COMPLETE:
        make_set(root, service, stamp, keys.age_recipient, sizes=(2048,))
    for stamp in (OLD_INCOMPLETE, NEW_INCOMPLETE):
        make_set(root, service, stamp, keys.age_recipient, sizes=(2048,), complete=False)
    _abandon(root / service / OLD_INCOMPLETE)
    return root


def _stamps(directory):
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def _apply_twice(run_module, args, listing):
    """check (with diff) -> apply -> check -> apply; returns the first apply's result."""
    before = listing()
    checked = run_module('backup_retention', check_mode=True, _ansible_diff=True, **args)
    assert not checked.get('failed'), checked
    assert checked['changed'] is True
    assert listing() == before, 'check mode removed something'
    assert checked['diff']['before'] != checked['diff']['after']

    applied = run_module('backup_retention', **args)
    assert not applied.get('failed'), applied
    assert applied['removed'] == checked['removed'] and applied['changed'] is True
    after = listing()

    again = run_module('backup_retention', check_mode=True, **args)
    assert again['changed'] is False and again['removed'] == [], again
    last = run_module('backup_retention', **args)
    assert last['changed'] is False and last['removed'] == [], last
    assert listing() == after
    return applied


def test_local_root(tmp_path, keys, run_module):
    root = _root(tmp_path, keys)
    args = {'backend': 'local', 'target': str(root), 'keep_daily': 2}
    result = _apply_twice(run_module, args, lambda: _stamps(root / 'authentik'))
    # daily 2: the newest of 2026-11-22 and of 2026-11-21; the old incomplete set goes, the new one stays
    assert result['removed'] == ['authentik/20261120T030000Z', 'authentik/20261120T150000Z',
                                 'authentik/%s' % OLD_INCOMPLETE]
    assert _stamps(root / 'authentik') == ['20261121T030000Z', '20261122T030000Z', NEW_INCOMPLETE]
    reasons = dict((item['stamp'], item['reasons']) for item in result['sets'])
    assert reasons['20261122T030000Z'] == ['daily 2026-11-22']
    assert reasons[OLD_INCOMPLETE] == ['incomplete, older than the newest complete set']


def test_policy_without_rules_is_refused(tmp_path, keys, run_module):
    root = _root(tmp_path, keys)
    before = tree_state(root)
    result = run_module('backup_retention', backend='local', target=str(root))
    assert result.get('failed') and 'refused' in result['msg'], result
    assert tree_state(root) == before


def test_s3_with_incomplete_sets(tmp_path, keys, s3_server, run_module):
    root = _root(tmp_path, keys)
    make_set(root, 'ory', '20261119T030000Z', keys.age_recipient, sizes=(1024,))
    # the offsite copy of the whole root, incomplete sets included, made with the stock rclone CLI
    rclone(['copy', root, 'offsite:%s/prod' % BUCKET], rclone_env(s3_server))
    remote = s3_server.path()

    def listing():
        return visible_files(remote)

    args = dict(s3_server.args(), keep_last=1, min_keep=2)
    result = _apply_twice(run_module, args, listing)
    assert result['removed'] == ['authentik/20261120T030000Z', 'authentik/20261120T150000Z',
                                 'authentik/%s' % OLD_INCOMPLETE]
    # ory has a single complete set: it is the newest, it stays
    assert 'ory/20261119T030000Z' in result['kept']
    remaining = sorted(set(path.split('/')[1] for path in listing() if path.startswith('authentik/')))
    assert remaining == ['20261121T030000Z', '20261122T030000Z', NEW_INCOMPLETE]
    for stamp in ('20261121T030000Z', '20261122T030000Z'):
        assert (remote / 'authentik' / stamp / 'MANIFEST.sha256').is_file()


def test_rsync_over_ssh(tmp_path, keys, sshd, run_module):
    root = _root(tmp_path, keys)
    remote_root = tmp_path / 'remote'
    remote_root.mkdir()
    rclone(['copy', root, remote_root], None)
    args = {'backend': 'rsync', 'target': str(remote_root), 'ssh_host': '127.0.0.1', 'ssh_port': sshd.port,
            'ssh_user': 'root', 'ssh_private_key': str(keys.ssh_identity), 'ssh_known_hosts': str(sshd.known_hosts),
            'service': 'authentik', 'keep_last': 3}
    result = _apply_twice(run_module, args, lambda: _stamps(remote_root / 'authentik'))
    assert result['removed'] == ['authentik/20261120T030000Z', 'authentik/%s' % OLD_INCOMPLETE]
    assert _stamps(remote_root / 'authentik') == ['20261120T150000Z', '20261121T030000Z', '20261122T030000Z',
                                                  NEW_INCOMPLETE]
