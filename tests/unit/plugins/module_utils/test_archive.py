# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import io
import os
import tarfile

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._archive import (
    CountingSink,
    SafeExtractor,
    TarProducer,
    UnsafeArchive,
    _safe_name,
    content_digest,
    resolve_link,
)
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError


def _tar(members):
    """Build an uncompressed tar in memory from (TarInfo, bytes or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    buf.seek(0)
    return buf


def _info(name, kind=tarfile.REGTYPE, linkname='', mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


def _tree(tmp_path):
    src = tmp_path / 'src'
    (src / 'sub' / 'deeper').mkdir(parents=True)
    (src / 'a.txt').write_bytes(b'hello\n')
    (src / 'empty').write_bytes(b'')
    (src / 'sub' / 'b.bin').write_bytes(os.urandom(70000))
    (src / 'sub' / 'deeper' / u'\u00e9t\u00e9.txt').write_bytes(b'summer')
    os.chmod(str(src / 'a.txt'), 0o640)
    os.symlink('a.txt', str(src / 'link'))
    os.link(str(src / 'sub' / 'b.bin'), str(src / 'hard'))
    return src


@pytest.mark.parametrize('name, expected', [
    ('a/b', 'a/b'),
    ('./a//b/', 'a/b'),
    ('.', '.'),
    ('./', '.'),
])
def test_safe_name_normalises(name, expected):
    assert _safe_name(name) == expected


@pytest.mark.parametrize('name', ['/etc/passwd', '../x', 'a/../../x', 'a/..', '', 'a\0b', '\\windows'])
def test_safe_name_refuses(name):
    with pytest.raises(UnsafeArchive):
        _safe_name(name)


@pytest.mark.parametrize('member, target, inside', [
    ('a/link', 'b', True),
    ('a/link', '../b', True),
    ('a/link', '../../b', False),
    ('link', '../b', False),
    ('link', '/etc', False),
    ('a/b/link', '../../c/./d', True),
    ('a/link', 'x/../../..', False),
])
def test_link_without_other_links_is_judged_by_its_text(member, target, inside):
    if inside:
        resolve_link({}, member, target)
    else:
        with pytest.raises(UnsafeArchive, match='outside the destination'):
            resolve_link({}, member, target)


def test_round_trip_keeps_digest(tmp_path):
    src = _tree(tmp_path)
    buf = io.BytesIO()
    producer = TarProducer(str(src))
    producer(buf)
    assert producer.digest == content_digest(str(src))
    assert producer.files == 4
    buf.seek(0)
    dest = tmp_path / 'dest'
    dest.mkdir()
    extractor = SafeExtractor(str(dest))
    extractor(buf)
    assert content_digest(str(dest)) == producer.digest
    assert os.readlink(str(dest / 'link')) == 'a.txt'
    assert oct(os.stat(str(dest / 'a.txt')).st_mode & 0o777) == oct(0o640)
    assert os.stat(str(dest / 'hard')).st_ino == os.stat(str(dest / 'sub' / 'b.bin')).st_ino


def test_digest_sees_content_mode_and_links(tmp_path):
    src = _tree(tmp_path)
    before = content_digest(str(src))
    (src / 'a.txt').write_bytes(b'hellO\n')
    os.chmod(str(src / 'a.txt'), 0o640)
    changed_content = content_digest(str(src))
    assert changed_content != before
    os.chmod(str(src / 'a.txt'), 0o600)
    assert content_digest(str(src)) != changed_content
    os.chmod(str(src / 'a.txt'), 0o640)
    assert content_digest(str(src)) == changed_content
    os.unlink(str(src / 'link'))
    os.symlink('empty', str(src / 'link'))
    assert content_digest(str(src)) != changed_content


def test_digest_ignores_times(tmp_path):
    src = _tree(tmp_path)
    before = content_digest(str(src))
    os.utime(str(src / 'a.txt'), (1, 1))
    assert content_digest(str(src)) == before


@pytest.mark.parametrize('members, message', [
    ([(_info('../evil'), b'x')], 'with ..'),
    ([(_info('/abs/evil'), b'x')], 'absolute'),
    ([(_info('x', tarfile.SYMTYPE, '/etc'), None)], 'outside'),
    ([(_info('x', tarfile.SYMTYPE, '../../outside'), None)], 'outside'),
    ([(_info('d', tarfile.SYMTYPE, 'sub'), None), (_info('d/f'), b'x')], 'through the symbolic link d'),
    ([(_info('h', tarfile.LNKTYPE, '/etc/passwd'), None)], 'absolute'),
    ([(_info('h', tarfile.LNKTYPE, 'missing'), None)], 'earlier regular file'),
    ([(_info('dev', tarfile.CHRTYPE), None)], 'special file'),
    ([(_info('fifo', tarfile.FIFOTYPE), None)], 'special file'),
    ([(_info('a'), b'1'), (_info('a'), b'2')], 'duplicate'),
])
def test_extractor_refuses(tmp_path, members, message):
    dest = tmp_path / 'dest'
    dest.mkdir()
    canary = tmp_path / 'outside'
    with pytest.raises(RecoveryError, match=message):
        SafeExtractor(str(dest))(_tar(members))
    assert not canary.exists()
    assert not (tmp_path / 'evil').exists()


def test_counting_sink_checks_tar_and_names(tmp_path):
    sink = CountingSink(tar=True)
    sink(_tar([(_info('a'), b'12345'), (_info('b'), b'67')]))
    assert (sink.bytes, sink.members) == (7, 2)
    with pytest.raises(UnsafeArchive):
        CountingSink(tar=True)(_tar([(_info('../x'), b'1')]))


def test_counting_sink_detects_truncated_tar():
    data = _tar([(_info('a'), os.urandom(20000))]).getvalue()[:9000]
    with pytest.raises(RecoveryError):
        CountingSink(tar=True)(io.BytesIO(data))
