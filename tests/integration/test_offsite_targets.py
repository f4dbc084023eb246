# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""offsite_upload to the other targets: rclone SFTP (rclone serve sftp), rsync over a real sshd,
rsync to a local path, and a local (mounted) directory, including a full one."""

from __future__ import annotations

import os

from offsite_support import (  # noqa: F401  pylint: disable=unused-import
    corrupt,
    make_set,
    module_json,
    sftp_server,
    sha256sum_check,
    small_target,
    sshd,
    tree_state,
)

SERVICE = 'authentik'
STAMP = '20261122T030000Z'


def _set(tmp_path, keys, **kwargs):
    return make_set(tmp_path / 'backups', SERVICE, kwargs.pop('stamp', STAMP), keys.age_recipient, **kwargs)


def _upload_twice(run_module, args, expected_method):
    first = run_module('offsite_upload', **args)
    assert not first.get('failed'), first
    assert first['changed'] is True and first['uploaded'][-1] == 'MANIFEST.sha256'
    assert first['verification']['ok'] is True and first['verification']['methods'] == [expected_method], first
    second = run_module('offsite_upload', **args)
    assert not second.get('failed'), second
    assert second['changed'] is False and second['uploaded'] == [], second
    return first


def test_rclone_sftp_with_password(tmp_path, keys, sftp_server, run_module):
    set_dir = _set(tmp_path, keys)
    args = {
        'path': set_dir, 'backend': 'rclone', 'target': 'vault_sftp:offsite',
        'rclone_remote_type': 'sftp',
        'rclone_remote_options': {'host': '127.0.0.1', 'port': sftp_server.port, 'user': 'backup',
                                  'pass': sftp_server.password, 'known_hosts_file': 'none'},
        'retry_delay': 0.2,
    }
    # sftp offers md5 and sha1 (md5sum/sha1sum run by the server): sha1 is preferred
    result = _upload_twice(run_module, args, 'remote sha1')
    assert sftp_server.password not in module_json(result)
    remote_dir = sftp_server.root / 'offsite' / SERVICE / STAMP
    assert sha256sum_check(remote_dir).returncode == 0
    corrupt(remote_dir / 'payload-0.bin.age')
    checked = run_module('offsite_upload', state='verified', **args)
    assert checked.get('failed') and checked['file'] == 'payload-0.bin.age', checked

    wrong = dict(args, rclone_remote_options=dict(args['rclone_remote_options'], **{'pass': 'wrong password'}), retries=0)
    refused = run_module('offsite_upload', **wrong)
    assert refused.get('failed') and 'unable to authenticate' in refused['msg'], refused


def test_rclone_sftp_with_key(tmp_path, keys, sftp_server, run_module):
    set_dir = _set(tmp_path, keys)
    args = {
        'path': set_dir, 'backend': 'rclone', 'target': 'keyed:offsite',
        'rclone_remote_type': 'sftp',
        'rclone_remote_options': {'host': '127.0.0.1', 'port': sftp_server.port, 'user': 'backup',
                                  'key_file': str(keys.ssh_identity), 'known_hosts_file': 'none'},
    }
    _upload_twice(run_module, args, 'remote sha1')
    assert sha256sum_check(sftp_server.root / 'offsite' / SERVICE / STAMP).returncode == 0


def _ssh_args(sshd, keys):
    return {'backend': 'rsync', 'ssh_host': '127.0.0.1', 'ssh_port': sshd.port, 'ssh_user': 'root',
            'ssh_private_key': str(keys.ssh_identity), 'ssh_known_hosts': str(sshd.known_hosts), 'retry_delay': 0.2}


def test_rsync_over_ssh(tmp_path, keys, sshd, run_module):
    set_dir = _set(tmp_path, keys, sizes=(100 * 1024, 1000))
    before = tree_state(set_dir)
    remote_root = tmp_path / 'remote'
    args = dict(_ssh_args(sshd, keys), path=set_dir, target=str(remote_root))

    checked = run_module('offsite_upload', check_mode=True, **args)
    assert checked['changed'] is True and not remote_root.exists(), checked
    _upload_twice(run_module, args, 'rsync --checksum')
    remote_dir = remote_root / SERVICE / STAMP
    assert sorted(tree_state(remote_dir)) == sorted(before)
    assert all(mode == 0o600 for _size, _digest, mode in tree_state(remote_dir).values())
    assert sha256sum_check(remote_dir).returncode == 0

    corrupt(remote_dir / 'payload-1.bin.age')
    checked = run_module('offsite_upload', state='verified', **args)
    assert checked.get('failed') and 'payload-1.bin.age' in checked['msg'] and 'rsync --checksum' in checked['msg'], checked
    repaired = run_module('offsite_upload', **args)
    assert not repaired.get('failed') and repaired['repaired'] == ['payload-1.bin.age'], repaired
    assert sha256sum_check(remote_dir).returncode == 0
    assert tree_state(set_dir) == before


def test_rsync_over_ssh_refuses_unknown_key_and_host(tmp_path, keys, sshd, run_module):
    set_dir = _set(tmp_path, keys)
    other_key = tmp_path / 'other_key'
    os.system('ssh-keygen -q -t ed25519 -N "" -f %s' % other_key)
    args = dict(_ssh_args(sshd, keys), path=set_dir, target=str(tmp_path / 'remote'), ssh_private_key=str(other_key))
    result = run_module('offsite_upload', **args)
    assert result.get('failed') and 'Permission denied' in result['msg'] and 'refused the key' in result['msg'], result
    assert 'gave up' not in result['msg']

    empty_known_hosts = tmp_path / 'known_hosts'
    empty_known_hosts.write_text('')
    args = dict(_ssh_args(sshd, keys), path=set_dir, target=str(tmp_path / 'remote'),
                ssh_known_hosts=str(empty_known_hosts))
    result = run_module('offsite_upload', **args)
    assert result.get('failed') and 'Host key verification failed' in result['msg'], result
    assert not (tmp_path / 'remote').exists()


def test_rsync_to_a_local_path(tmp_path, keys, run_module):
    set_dir = _set(tmp_path, keys)
    target = tmp_path / 'rsync-target'
    args = {'path': set_dir, 'backend': 'rsync', 'target': str(target)}
    _upload_twice(run_module, args, 'rsync --checksum')
    assert sha256sum_check(target / SERVICE / STAMP).returncode == 0


def test_local_target(tmp_path, keys, run_module):
    set_dir = _set(tmp_path, keys)
    target = tmp_path / 'mnt'
    missing = run_module('offsite_upload', path=set_dir, backend='local', target=str(target))
    assert missing.get('failed') and 'mounted' in missing['msg'], missing
    target.mkdir()
    args = {'path': set_dir, 'backend': 'local', 'target': str(target)}
    _upload_twice(run_module, args, 'read back (sha256)')
    remote_dir = target / SERVICE / STAMP
    assert sha256sum_check(remote_dir).returncode == 0
    assert oct(os.stat(str(remote_dir)).st_mode & 0o777) == oct(0o700)
    corrupt(remote_dir / 'metadata.json', offset=3)
    checked = run_module('offsite_upload', state='verified', **args)
    assert checked.get('failed') and checked['file'] == 'metadata.json', checked


def _fill_but(directory, leave):
    """Fill the file system of directory until only ``leave`` bytes are free; return the filler."""
    st = os.statvfs(str(directory))
    free = st.f_bavail * st.f_frsize
    filler = directory / 'filler'
    with open(str(filler), 'wb') as handle:
        handle.write(b'\0' * max(0, free - leave))
    return filler


def test_local_target_disk_full(tmp_path, keys, small_target, run_module):
    """Payloads of 400 KiB each into 300 KiB of free space: the copy fails naming the file and the
    reason, leaves no partial file and no manifest, and a re-run with space completes it."""
    set_dir = _set(tmp_path, keys, sizes=(400 * 1024, 400 * 1024))
    before = tree_state(set_dir)
    filler = _fill_but(small_target, 300 * 1024)
    args = {'path': set_dir, 'backend': 'local', 'target': str(small_target), 'retry_delay': 0.1}
    result = run_module('offsite_upload', **args)
    assert result.get('failed'), result
    assert 'No space left on device' in result['msg'] and 'payload-0.bin.age' in result['msg'], result['msg']
    assert result['file'] == 'payload-0.bin.age'
    assert 'gave up' not in result['msg'], 'a full disk must not be retried'
    remote_dir = small_target / SERVICE / STAMP
    left = sorted(os.listdir(str(remote_dir))) if remote_dir.exists() else []
    assert 'MANIFEST.sha256' not in left
    assert not [name for name in left if '.partial-' in name], left
    assert tree_state(set_dir) == before, 'the local set changed'

    filler.unlink()
    again = run_module('offsite_upload', **args)
    assert not again.get('failed') and again['changed'] is True, again
    assert sha256sum_check(remote_dir).returncode == 0
