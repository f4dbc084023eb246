# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A full disk (a 2 MiB tmpfs): writes fail cleanly, leave no partial file and never produce a
manifest. Mounting needs a privilege the machine may not grant: see ``prerequisites``."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from prerequisites import not_permitted
from recovery_support import leftovers, listing, make_tree, random_file, sha256sum_check

TMPFS_SIZE = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    mountpoint = tmp_path / 'small'
    mountpoint.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d,mode=0755' % TMPFS_SIZE, 'tmpfs',
                              str(mountpoint)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if mounted.returncode != 0:
        not_permitted('cannot mount a tmpfs: %s' % mounted.stderr.decode('utf-8', 'replace').strip())
    try:
        yield mountpoint
    finally:
        if subprocess.run(['umount', str(mountpoint)], check=False).returncode != 0:
            subprocess.run(['umount', '-l', str(mountpoint)], check=False)


def _fill(directory):
    """Fill the file system of directory to the last byte; return the filler file."""
    filler = directory / 'filler'
    chunk = b'\0' * 65536
    with open(str(filler), 'wb', buffering=0) as handle:
        for size in (65536, 4096, 512, 1):
            data = chunk[:size]
            while True:
                try:
                    handle.write(data)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def _used(directory):
    st = os.statvfs(str(directory))
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_payload_on_a_full_disk(tmp_path, small_disk, run_playbook, run_module, keys):
    """A 10 MiB payload into a 2 MiB file system: the task fails, no partial payload is left and
    the playbook never reaches the finalizing task."""
    source = random_file(tmp_path / 'authentik.dump', 10 * 1024 * 1024)
    set_dir = small_disk / 'authentik' / '20260107T030000Z'
    payload = set_dir / 'authentik.dump.zst.age'
    tasks = [
        {'name': 'open', 'idp.recovery.backup_set': {'path': str(set_dir), 'kind': 'authentik'}},
        {'name': 'archive', 'idp.recovery.encrypted_archive': {
            'src': str(source), 'dest': str(payload), 'recipients': [keys.age_recipient]}},
        {'name': 'finalize', 'idp.recovery.backup_set': {'path': str(set_dir), 'state': 'finalized'}},
    ]
    rc, stdout, stderr = run_playbook(tasks)
    assert rc != 0, stdout + stderr
    results = run_playbook.results(stdout)
    assert [r['task'] for r in results] == ['open', 'archive'], results
    assert not results[0].get('failed')
    assert results[1].get('failed')
    assert str(payload) in results[1]['msg'] and 'No space left' in results[1]['msg'], results[1]['msg']
    assert listing(set_dir) == ['.in-progress'], listing(set_dir)
    assert _used(small_disk) < 64 * 1024, 'the failed write still holds space'

    info = run_module('backup_set_info', root=small_disk)
    assert not info.get('failed'), info
    assert info['incomplete'] == [str(set_dir)] and info['latest_complete'] == {}


def test_finalize_on_a_full_disk(tmp_path, small_disk, run_module, keys):
    set_dir = small_disk / 'authentik' / '20260108T030000Z'
    assert not run_module('backup_set', path=set_dir).get('failed')
    payload = set_dir / 'media.tar.zst.age'
    written = run_module('encrypted_archive', src=make_tree(tmp_path / 'media'), dest=payload,
                         recipients=[keys.age_recipient])
    assert not written.get('failed'), written
    before = listing(set_dir)
    filler = _fill(small_disk)

    result = run_module('backup_set', path=set_dir, state='finalized', metadata={'ticket': 'CHG-9'})
    assert result.get('failed'), result
    assert 'No space left' in result['msg'], result['msg']
    assert not (set_dir / 'MANIFEST.sha256').exists()
    assert listing(set_dir) == before, 'a failed finalize changed the set: %s' % listing(set_dir)
    assert leftovers(set_dir) == []
    info = run_module('backup_set_info', root=small_disk)
    assert info['incomplete'] == [str(set_dir)] and info['latest_complete'] == {}

    # with space again, the same set finalizes and checks out
    filler.unlink()
    result = run_module('backup_set', path=set_dir, state='finalized', metadata={'ticket': 'CHG-9'})
    assert not result.get('failed'), result
    assert sorted(result['metadata']['payloads']) == ['media.tar.zst.age']
    assert sha256sum_check(set_dir).returncode == 0


@pytest.mark.parametrize('kind', ['tree', 'file'])
def test_extract_onto_a_full_disk(tmp_path, small_disk, run_module, keys, kind):
    if kind == 'tree':
        src = tmp_path / 'media'
        src.mkdir()
        random_file(src / 'big.bin', 4 * 1024 * 1024)
        payload = tmp_path / 'media.tar.zst.age'
    else:
        src = random_file(tmp_path / 'authentik.dump', 4 * 1024 * 1024)
        payload = tmp_path / 'authentik.dump.zst.age'
    written = run_module('encrypted_archive', src=src, dest=payload, recipients=[keys.age_recipient])
    assert not written.get('failed'), written
    dest = small_disk / 'restore' / 'out'
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=dest, identity=keys.age_identity)
    assert result.get('failed'), result
    assert 'No space left' in result['msg'], result['msg']
    assert 'corrupted' not in result['msg'], result['msg']
    assert not os.path.lexists(str(dest))
    assert listing(small_disk / 'restore') == []
    assert _used(small_disk) < 64 * 1024, 'the failed extraction still holds space'


def test_disk_fills_up_when_the_payload_is_recorded(tmp_path, small_disk, run_module):
    """The payload itself fits to the last byte, its record in the set does not: the task fails
    and the payload, which the set could not describe, is not left behind."""
    set_dir = small_disk / 'authentik' / '20260109T030000Z'
    assert not run_module('backup_set', path=set_dir).get('failed')
    free = os.statvfs(str(small_disk))
    source = random_file(tmp_path / 'authentik.dump', free.f_bavail * free.f_frsize)
    payload = set_dir / 'authentik.dump'
    result = run_module('encrypted_archive', src=source, dest=payload, encryption='none', allow_unencrypted=True,
                        compression='none')
    assert result.get('failed'), result
    assert 'No space left' in result['msg'] and '.metadata.d' in result['msg'], result['msg']
    assert not os.path.lexists(str(payload))
    assert [name for name in listing(set_dir) if not name.startswith('.metadata.d')] == ['.in-progress']
    assert leftovers(set_dir) == [] and leftovers(set_dir / '.metadata.d') == []
