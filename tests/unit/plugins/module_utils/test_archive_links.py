# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Symbolic links resolved through each other, and extraction bounded by the recorded size."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._archive import (
    DIGEST_PREFIX_FILE,
    MAX_LINK_HOPS,
    FileFollower,
    SafeExtractor,
    UnsafeArchive,
    resolve_link,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import Stage, run_from_file

CHAIN = {'d1/d2/b': '../..'}


@pytest.mark.parametrize('links, name, target, expected', [
    ({}, 'a/link', 'b', 'a/b'),
    ({}, 'a/link', '../b', 'b'),
    ({}, 'a/link', './/./b/', 'a/b'),
    ({}, 'link', '.', ''),
    (CHAIN, 'd1/d2/b', '../..', ''),
    (CHAIN, 'x', 'd1/d2/b/d1', 'd1'),
    (CHAIN, 'x', 'd1/d2/b/d1/d2/b/f', 'f'),
    ({'s/l': 'x'}, 'top', 's/l/y', 's/x/y'),
    ({'s/l': '../t'}, 'top', 's/l/../u', 'u'),
    ({'a/up': '..'}, 'x', 'a/up/a/up/f', 'f'),
    ({'a': 'b', 'b': 'c'}, 'x', 'a', 'c'),
])
def test_resolve_link_inside(links, name, target, expected):
    assert resolve_link(links, name, target) == expected


@pytest.mark.parametrize('links, name, target, message', [
    ({}, 'x', '/etc', 'an absolute target'),
    ({}, 'x', '..', 'outside the destination'),
    ({}, 'a/x', '../..', 'outside the destination'),
    (CHAIN, 'x', 'd1/d2/b/../etc', 'outside the destination (through the link d1/d2/b)'),
    (CHAIN, 'x', 'd1/d2/b/d1/d2/b/../../etc', 'through the link d1/d2/b'),
    ({'a/up': '..'}, 'x', 'a/up/..', 'through the link a/up'),
    ({'l': '..'}, 'x', 'l', 'through the link l'),
    ({'abs': '/etc'}, 'x', 'abs/passwd', 'through the absolute link abs -> /etc'),
    ({'y': 'd1/d2/b', 'd1/d2/b': '../..'}, 'z/x', '../y/..', 'through the link'),
    ({'a': 'b', 'b': 'a'}, 'x', 'a', 'more than %d links' % MAX_LINK_HOPS),
    ({'x': 'x/y'}, 'x', 'x/y', 'more than %d links' % MAX_LINK_HOPS),
])
def test_resolve_link_refuses(links, name, target, message):
    with pytest.raises(UnsafeArchive) as caught:
        resolve_link(links, name, target)
    assert 'symbolic link %s -> %s ' % (name, target) in str(caught.value)
    assert message in str(caught.value)


def test_resolve_link_follows_up_to_the_kernel_limit():
    links = dict(('l%d' % n, 'l%d' % (n + 1)) for n in range(MAX_LINK_HOPS))
    assert resolve_link(links, 'x', 'l1') == 'l%d' % MAX_LINK_HOPS
    with pytest.raises(UnsafeArchive, match='more than'):
        resolve_link(links, 'x', 'l0')


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.REGTYPE:
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value))
            else:
                info.linkname = value or ''
                archive.addfile(info)
    buf.seek(0)
    return buf


def _links(root):
    found = []
    for current, dirs, files in os.walk(str(root)):
        for name in dirs + files:
            if os.path.islink(os.path.join(current, name)):
                found.append(os.path.relpath(os.path.join(current, name), str(root)))
    return found


SYM, REG, DIR, LNK = tarfile.SYMTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE


@pytest.mark.parametrize('members, message', [
    ([('d1/d2/b', SYM, '../..'), ('x', SYM, 'd1/d2/b/../etc')], 'symbolic link x -> d1/d2/b/../etc'),
    ([('x', SYM, 'd1/d2/b/../etc'), ('d1/d2/b', SYM, '../..')], 'symbolic link x -> d1/d2/b/../etc'),
    ([('x', SYM, 'd1/d2/b/../f'), ('x/f', REG, b'1'), ('d1/d2/b', SYM, '../..')],
     'member x/f would be written through the symbolic link x'),
    ([('real/f', REG, b'1'), ('l', SYM, 'real'), ('h', LNK, 'l/f')], 'hard link h -> l/f'),
    ([('d/f', REG, b'1'), ('d', SYM, 'elsewhere')], 'symbolic link d clashes'),
    ([('d', DIR, None), ('d', SYM, 'elsewhere')], 'duplicate member refused: d'),
    ([('d', SYM, 'elsewhere'), ('d', DIR, None)], 'duplicate member refused: d'),
    ([('d', SYM, 'elsewhere'), ('d/sub', DIR, None)], 'member d/sub would be written through the symbolic link d'),
    ([('f', REG, b'1'), ('f/g', REG, b'2')], 'member f/g would be written through a non-directory (f)'),
    ([('x', SYM, '')], 'empty target'),
])
def test_extractor_refuses_links_leaving_and_creates_no_link(tmp_path, members, message):
    dest = tmp_path / 'dest'
    dest.mkdir()
    with pytest.raises(UnsafeArchive) as caught:
        SafeExtractor(str(dest))(_tar(members))
    assert message in str(caught.value)
    assert _links(dest) == []
    assert os.listdir(str(tmp_path)) == ['dest']


def test_extractor_creates_links_that_stay_inside_after_everything_else(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    SafeExtractor(str(dest))(_tar([
        ('ro', DIR, None),
        ('ro/l', SYM, '../d1/f'),
        ('d1/d2/b', SYM, '../..'),
        ('via', SYM, 'd1/d2/b/d1/f'),
        ('d1/f', REG, b'content'),
    ]))
    assert (dest / 'via').read_bytes() == (dest / 'ro' / 'l').read_bytes() == b'content'
    assert os.stat(str(dest / 'ro')).st_mode & 0o777 == 0o755
    inside = os.path.realpath(str(dest))
    for link in _links(dest):
        resolved = os.path.realpath(str(dest / link))
        assert resolved == inside or resolved.startswith(inside + os.sep), link


def test_extractor_stops_beyond_the_recorded_bytes(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    members = [('a', REG, b'x' * 600), ('b', REG, b'y' * 400), ('c', REG, b'z')]
    extractor = SafeExtractor(str(dest), max_bytes=1000)
    with pytest.raises(UnsafeArchive) as caught:
        extractor(_tar(members))
    assert str(caught.value) == 'member c: the archive expands beyond the 1000 bytes recorded at backup: refusing'
    assert not (dest / 'c').exists()
    exact = tmp_path / 'exact'
    exact.mkdir()
    SafeExtractor(str(exact), max_bytes=1000)(_tar(members[:2]))
    assert sorted(os.listdir(str(exact))) == ['a', 'b']


def _follow(tmp_path, data, max_bytes, writer=('cat',)):
    """Run writer (a real process) from a file holding data into out, followed by a FileFollower."""
    src = tmp_path / 'src'
    src.write_bytes(data)
    out = tmp_path / 'out'
    fd = os.open(str(out), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        follower = FileFollower(str(out), max_bytes=max_bytes)
        return follower, run_from_file(str(src), [Stage('writer', list(writer))], follower, output=fd)
    finally:
        os.close(fd)


def test_file_follower_hashes_what_a_process_writes_while_it_writes(tmp_path):
    # several MiB, written slowly in 64 KiB pieces by the shell (49 pieces; the last reads find the end of
    # the input and copy nothing): the follower catches up and waits many times
    data = os.urandom(3 * 1024 * 1024 + 17)
    follower, count = _follow(tmp_path, data, len(data),
                              ('sh', '-c', 'for i in $(seq 60); do dd bs=65536 count=1 iflag=fullblock status=none; sleep 0.001; done'))
    assert count == len(data) == follower.bytes
    assert follower.digest() == DIGEST_PREFIX_FILE + hashlib.sha256(data).hexdigest()
    assert (tmp_path / 'out').read_bytes() == data


def test_file_follower_stops_the_writer_beyond_the_recorded_bytes(tmp_path):
    with pytest.raises(UnsafeArchive, match='expands beyond the 10 bytes recorded at backup: refusing'):
        _follow(tmp_path, b'0123456789A', 10)
    exact_dir = tmp_path / 'exact'
    exact_dir.mkdir()
    exact, count = _follow(exact_dir, b'0123456789', 10)
    assert count == 10 and exact.digest() == DIGEST_PREFIX_FILE + hashlib.sha256(b'0123456789').hexdigest()


def test_file_follower_stops_an_endless_writer(tmp_path):
    # /dev/zero never ends: only the follower's limit stops it, and the file stays near the limit
    with pytest.raises(UnsafeArchive, match='expands beyond the 1048576 bytes'):
        _follow(tmp_path, b'', 1024 * 1024, ('cat', '/dev/zero'))
    assert os.path.getsize(str(tmp_path / 'out')) < 1024 * 1024 * 1024


def test_file_follower_of_a_complete_file(tmp_path):
    out = tmp_path / 'done'
    out.write_bytes(b'x' * 11)
    assert FileFollower(str(out), max_bytes=11)(None) == 11
    with pytest.raises(UnsafeArchive):
        FileFollower(str(out), max_bytes=10)(None)
