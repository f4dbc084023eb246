# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Symbolic links resolved through each other, and extraction bounded by the recorded size."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import io
import os
import tarfile

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._archive import (
    MAX_LINK_HOPS,
    RawWriter,
    SafeExtractor,
    UnsafeArchive,
    resolve_link,
)

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


def test_raw_writer_stops_beyond_the_recorded_bytes():
    out = io.BytesIO()
    with pytest.raises(UnsafeArchive, match='expands beyond the 10 bytes recorded at backup: refusing'):
        RawWriter(out, max_bytes=10)(io.BytesIO(b'0123456789A'))
    assert len(out.getvalue()) <= 10
    exact = RawWriter(io.BytesIO(), max_bytes=10)
    assert exact(io.BytesIO(b'0123456789')) == 10
