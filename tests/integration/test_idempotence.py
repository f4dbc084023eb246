# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""check -> apply -> check -> apply gives changed, changed, unchanged, unchanged; check mode
writes nothing; a changed source (content or mode) is a change again."""

from __future__ import annotations

import hashlib
import os

import pytest

from recovery_support import leftovers, listing, make_tree, random_file, snapshot


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ok(result):
    assert not result.get('failed'), result
    return result


@pytest.fixture
def open_set(tmp_path, run_module):
    set_dir = tmp_path / 'backups' / 'authentik' / '20260102T030000Z'
    _ok(run_module('backup_set', path=set_dir))
    return set_dir


@pytest.mark.parametrize('kind', ['tree', 'file'])
def test_encrypted_archive_present(tmp_path, run_module, keys, open_set, kind):
    if kind == 'tree':
        src = make_tree(tmp_path / 'media')
        touched = src / 'nested' / 'deeper' / 'deepest' / 'script.sh'
        dest = open_set / 'media.tar.zst.age'
    else:
        src = touched = random_file(tmp_path / 'authentik.dump', 64 * 1024)
        dest = open_set / 'authentik.dump.zst.age'
    args = dict(src=src, dest=dest, recipients=[keys.age_recipient])
    before = listing(open_set)

    assert _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert listing(open_set) == before, 'check mode wrote something'
    assert _ok(run_module('encrypted_archive', **args))['changed']
    written = _sha(dest)
    inode = dest.stat().st_ino
    assert not _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert not _ok(run_module('encrypted_archive', **args))['changed']
    assert _sha(dest) == written and dest.stat().st_ino == inode, 'an unchanged run rewrote the payload'

    # a content change
    with open(str(touched), 'ab') as handle:
        handle.write(b'one more line\n')
    assert _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert _sha(dest) == written, 'check mode rewrote the payload'
    assert _ok(run_module('encrypted_archive', **args))['changed']
    assert _sha(dest) != written
    assert not _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']

    # a mode change is a change of the source too
    touched.chmod(0o700)
    assert _ok(run_module('encrypted_archive', check_mode=True, **args))['changed'] == (kind == 'tree')

    # other settings: another compression, another recipient
    assert _ok(run_module('encrypted_archive', check_mode=True, compression='gzip', **args))['changed']
    other = dict(args, recipients=[keys.age_recipient, keys.age_other_recipient])
    assert _ok(run_module('encrypted_archive', check_mode=True, **other))['changed']
    assert leftovers(open_set) == []


def test_encrypted_archive_present_in_a_finalized_set(tmp_path, run_module, keys, open_set):
    src = random_file(tmp_path / 'authentik.dump', 32 * 1024)
    args = dict(src=src, dest=open_set / 'authentik.dump.zst.age', recipients=[keys.age_recipient])
    _ok(run_module('encrypted_archive', **args))
    _ok(run_module('backup_set', path=open_set, state='finalized'))
    manifest = (open_set / 'MANIFEST.sha256').read_bytes()
    assert not _ok(run_module('encrypted_archive', **args))['changed']
    with open(str(src), 'ab') as handle:
        handle.write(b'x')
    for check_mode in (True, False):
        refused = run_module('encrypted_archive', check_mode=check_mode, **args)
        assert refused['failed'] and 'finalized' in refused['msg'], refused
    assert (open_set / 'MANIFEST.sha256').read_bytes() == manifest


def test_encrypted_archive_extracted_tree(tmp_path, run_module, keys, open_set):
    src = make_tree(tmp_path / 'media')
    payload = open_set / 'media.tar.zst.age'
    _ok(run_module('encrypted_archive', src=src, dest=payload, recipients=[keys.age_recipient]))
    _ok(run_module('backup_set', path=open_set, state='finalized'))
    restore = tmp_path / 'restore'
    dest = restore / 'media'
    args = dict(state='extracted', src=payload, dest=dest, identity=keys.age_identity)

    assert _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert not os.path.lexists(str(restore)), 'check mode created something'
    assert _ok(run_module('encrypted_archive', **args))['changed']
    assert snapshot(dest) == snapshot(src)
    marker = (dest / 'top.txt').stat().st_ino
    assert not _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert not _ok(run_module('encrypted_archive', **args))['changed']
    assert (dest / 'top.txt').stat().st_ino == marker, 'an unchanged run rewrote the destination'

    # someone edits the restored tree
    (dest / 'top.txt').write_bytes(b'edited\n')
    edited = snapshot(dest)
    for check_mode in (True, False):
        refused = run_module('encrypted_archive', check_mode=check_mode, **args)
        assert refused['failed'] and 'force' in refused['msg'], refused
    assert snapshot(dest) == edited, 'a refused run changed the destination'
    assert _ok(run_module('encrypted_archive', check_mode=True, force=True, **args))['changed']
    assert snapshot(dest) == edited, 'check mode changed the destination'
    assert _ok(run_module('encrypted_archive', force=True, **args))['changed']
    assert snapshot(dest) == snapshot(src)
    assert not _ok(run_module('encrypted_archive', check_mode=True, force=True, **args))['changed']
    assert sorted(os.listdir(str(restore))) == ['media']


def test_encrypted_archive_extracted_file(tmp_path, run_module, keys, open_set):
    src = random_file(tmp_path / 'authentik.dump', 64 * 1024)
    payload = open_set / 'authentik.dump.gz.gpg'
    passphrase = 'idempotent %s' % os.urandom(6).hex()
    _ok(run_module('encrypted_archive', src=src, dest=payload, compression='gzip', encryption='passphrase',
                   passphrase=passphrase))
    dest = tmp_path / 'restore' / 'authentik.dump'
    args = dict(state='extracted', src=payload, dest=dest, passphrase=passphrase)
    assert _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert not os.path.lexists(str(dest.parent))
    assert _ok(run_module('encrypted_archive', **args))['changed']
    assert dest.read_bytes() == src.read_bytes()
    assert not _ok(run_module('encrypted_archive', check_mode=True, **args))['changed']
    assert not _ok(run_module('encrypted_archive', **args))['changed']
    dest.write_bytes(b'truncated')
    assert _ok(run_module('encrypted_archive', check_mode=True, force=True, **args))['changed']
    assert dest.read_bytes() == b'truncated'
    assert _ok(run_module('encrypted_archive', force=True, **args))['changed']
    assert dest.read_bytes() == src.read_bytes()
    assert os.listdir(str(dest.parent)) == ['authentik.dump']


def test_encrypted_archive_extracted_into_an_empty_directory(tmp_path, run_module, keys, open_set):
    src = make_tree(tmp_path / 'media')
    payload = open_set / 'media.tar.age'
    _ok(run_module('encrypted_archive', src=src, dest=payload, compression='none', recipients=[keys.age_recipient]))
    dest = tmp_path / 'mountpoint'
    dest.mkdir()
    result = _ok(run_module('encrypted_archive', state='extracted', src=payload, dest=dest, identity=keys.age_identity))
    assert result['changed']
    assert snapshot(dest) == snapshot(src)


def test_backup_set_present_finalized_absent(tmp_path, run_module):
    set_dir = tmp_path / 'backups' / 'ory' / '20260103T030000Z'

    assert _ok(run_module('backup_set', check_mode=True, path=set_dir))['changed']
    assert not os.path.lexists(str(tmp_path / 'backups'))
    assert _ok(run_module('backup_set', path=set_dir))['changed']
    assert (set_dir / '.in-progress').is_file()
    assert not _ok(run_module('backup_set', check_mode=True, path=set_dir))['changed']
    assert not _ok(run_module('backup_set', path=set_dir))['changed']

    finalize = dict(path=set_dir, state='finalized', metadata={'ticket': 'CHG-7'})
    assert _ok(run_module('backup_set', check_mode=True, **finalize))['changed']
    assert sorted(os.listdir(str(set_dir))) == ['.in-progress'], 'check mode finalized the set'
    result = _ok(run_module('backup_set', **finalize))
    assert result['changed'] and result['complete']
    manifest = (set_dir / 'MANIFEST.sha256').read_bytes()
    metadata = (set_dir / 'metadata.json').read_bytes()
    assert not _ok(run_module('backup_set', check_mode=True, **finalize))['changed']
    assert not _ok(run_module('backup_set', **finalize))['changed']
    assert (set_dir / 'MANIFEST.sha256').read_bytes() == manifest
    assert (set_dir / 'metadata.json').read_bytes() == metadata
    # present on a finalized set changes nothing either
    assert not _ok(run_module('backup_set', path=set_dir))['changed']

    assert _ok(run_module('backup_set', check_mode=True, path=set_dir, state='absent'))['changed']
    assert (set_dir / 'MANIFEST.sha256').read_bytes() == manifest, 'check mode removed the set'
    assert _ok(run_module('backup_set', path=set_dir, state='absent'))['changed']
    assert not os.path.lexists(str(set_dir))
    assert not _ok(run_module('backup_set', check_mode=True, path=set_dir, state='absent'))['changed']
    assert not _ok(run_module('backup_set', path=set_dir, state='absent'))['changed']


def test_check_mode_through_ansible_playbook(tmp_path, run_playbook, keys):
    """The same sequence through ansible-playbook --check, so that Ansible's own check mode is used."""
    src = make_tree(tmp_path / 'media')
    set_dir = tmp_path / 'backups' / 'authentik' / '20260104T030000Z'
    tasks = [
        {'name': 'open', 'idp.recovery.backup_set': {'path': str(set_dir), 'kind': 'authentik'}},
        {'name': 'archive', 'idp.recovery.encrypted_archive': {
            'src': str(src), 'dest': str(set_dir / 'media.tar.zst.age'), 'recipients': [keys.age_recipient]}},
    ]
    expected = [(True, True), (True, True), (False, False), (False, False)]
    for check, changes in zip((True, False, True, False), expected):
        rc, stdout, stderr = run_playbook(tasks, check=check)
        assert rc == 0, stdout + stderr
        results = run_playbook.results(stdout)
        assert [r['task'] for r in results] == ['open', 'archive']
        assert tuple(r['changed'] for r in results) == changes, results
        if check and changes[0]:
            assert not os.path.lexists(str(tmp_path / 'backups')), 'check mode wrote something'
