# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hostile tar payloads: every one is refused with a clear message, nothing is written outside
the destination, the destination is not created and no temporary directory stays behind.

Each archive starts with a harmless member and ends with 4 MiB of data, so that the refusal
happens in the middle of the stream while the decryptor is still writing."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from recovery_support import listing


def _file(name, data=b'harmless\n'):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _special(name, kind, linkname='', **extra):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    for key, value in extra.items():
        setattr(info, key, value)
    return info, None


def _cases(canary):
    outside_file = str(canary / 'abs_file')
    return {
        'parent reference': ([_file('../evil')], '..'),
        'nested parent reference': ([_file('sub/../../evil')], '..'),
        'absolute path': ([_file(outside_file)], 'absolute'),
        'absolute symlink': ([_special('x', tarfile.SYMTYPE, '/etc')], 'outside'),
        'relative symlink escaping': ([_special('x', tarfile.SYMTYPE, '../../outside')], 'outside'),
        'symlink then a file through it': (
            [_special('d', tarfile.SYMTYPE, str(canary)), _file('d/file')], 'outside'),
        'inside symlink then a file through it': (
            [_file('real/keep'), _special('d', tarfile.SYMTYPE, 'real'), _file('d/file')], 'through a non-directory'),
        'hard link to /etc/passwd': ([_special('passwd', tarfile.LNKTYPE, '/etc/passwd')], '/etc/passwd'),
        'hard link to a name that is not a member': (
            [_special('passwd', tarfile.LNKTYPE, 'etc/passwd')], 'hard link'),
        'character device': ([_special('null', tarfile.CHRTYPE, devmajor=1, devminor=3)], 'device'),
        'fifo': ([_special('pipe', tarfile.FIFOTYPE)], 'FIFO'),
        'duplicate member': ([_file('dup'), _file('dup', b'replaced\n')], 'duplicate'),
    }


CASE_NAMES = sorted(_cases(__import__('pathlib').Path('/canary')))


def _build_tar(path, members):
    with tarfile.open(str(path), 'w', format=tarfile.PAX_FORMAT) as archive:
        for info, data in [_file('aaa_harmless.txt')] + members + [_file('zzz_big.bin', os.urandom(4 * 1024 * 1024))]:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    with tarfile.open(str(path)) as archive:
        names = archive.getnames()
    wanted = [info.name for info, _data in members]
    assert all(name in names for name in wanted), 'tarfile rewrote a member name: %s' % names


def _passwd_state():
    st = os.stat('/etc/passwd')
    with open('/etc/passwd', 'rb') as handle:
        return hashlib.sha256(handle.read()).hexdigest(), st.st_nlink, st.st_mode


@pytest.mark.parametrize('encryption', ['none', 'age'])
@pytest.mark.parametrize('case', CASE_NAMES)
def test_crafted_archive_is_refused(tmp_path, run_module, keys, test_env, case, encryption):
    canary = tmp_path / 'canary'
    canary.mkdir()
    members, phrase = _cases(canary)[case]
    plain = tmp_path / 'payloads' / 'evil.tar'
    plain.parent.mkdir()
    _build_tar(plain, members)
    if encryption == 'age':
        payload = tmp_path / 'payloads' / 'evil.tar.age'
        subprocess.run(['age', '-r', keys.age_recipient, '-o', str(payload), str(plain)], check=True, env=test_env)
        key_args = {'identity': str(keys.age_identity)}
    else:
        payload = plain
        key_args = {}
    work = tmp_path / 'work'
    (work / 'restore').mkdir(parents=True)
    dest = work / 'restore' / 'dest'
    passwd = _passwd_state()

    result = run_module('encrypted_archive', state='extracted', src=payload, dest=dest, **key_args)

    assert result.get('failed'), result
    assert str(payload) in result['msg'] and phrase in result['msg'], result['msg']
    assert listing(work) == ['restore'], 'extraction left %s' % listing(work)
    assert listing(canary) == []
    assert _passwd_state() == passwd
    assert not os.path.lexists(str(tmp_path / 'outside'))


@pytest.mark.parametrize('encryption', ['none', 'age'])
def test_benign_archive_from_stock_tools_is_extracted(tmp_path, run_module, keys, test_env, encryption):
    """The control case: the same shape without a hostile member is extracted."""
    plain = tmp_path / 'payloads' / 'fine.tar'
    plain.parent.mkdir()
    _build_tar(plain, [_file('sub/inside.txt'), _special('link', tarfile.SYMTYPE, 'sub/inside.txt'),
                       _special('hard', tarfile.LNKTYPE, 'sub/inside.txt')])
    payload, key_args = plain, {}
    if encryption == 'age':
        payload = tmp_path / 'payloads' / 'fine.tar.age'
        subprocess.run(['age', '-r', keys.age_recipient, '-o', str(payload), str(plain)], check=True, env=test_env)
        key_args = {'identity': str(keys.age_identity)}
    dest = tmp_path / 'restore' / 'dest'
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=dest, **key_args)
    assert not result.get('failed'), result
    assert sorted(listing(dest)) == ['aaa_harmless.txt', 'hard', 'link', 'sub', 'sub/inside.txt', 'zzz_big.bin']
    assert os.readlink(str(dest / 'link')) == 'sub/inside.txt'
    assert os.stat(str(dest / 'hard')).st_ino == os.stat(str(dest / 'sub' / 'inside.txt')).st_ino
    assert os.listdir(str(tmp_path / 'restore')) == ['dest']
