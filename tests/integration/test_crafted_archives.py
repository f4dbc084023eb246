# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hostile tar payloads: every one is refused with a clear message, nothing is written outside
the destination, the destination is not created and no temporary directory stays behind.

Each archive starts with a harmless member and ends with 4 MiB of data, so that the refusal
happens in the middle of the stream while the decryptor is still writing.

Symbolic-link chains pass a member-by-member look at each link text: ``b -> ../..`` leads to
the root of the destination, and ``x -> d1/d2/b/../../etc`` looks inside but climbs above it
through ``b``. The chains here are deeper than any test directory, so they reach ``/etc``.

Payloads that expand beyond what the set recorded at backup (a few KiB of zstd holding 200 MiB
of zeros where the set recorded 1 MiB) are refused as soon as the extraction passes the
recorded size, by ``encrypted_archive`` and by the files step of ``authentik_restore``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

import authentik_support as ak
from recovery_support import leftovers, listing, random_file, snapshot

# more directories than any test directory is deep: climbing this many levels reaches /
DEPTH = 24
DIRS = '/'.join('d%d' % n for n in range(1, DEPTH + 1))
UP = '/'.join(['..'] * DEPTH)
RECORDED = 1024 * 1024
BOMB = 200 * 1024 * 1024


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


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _cases(canary):
    outside_file = str(canary / 'abs_file')
    to_root = _special(DIRS + '/b', tarfile.SYMTYPE, UP)
    return {
        'symlink chain to /etc': ([to_root, _special('x', tarfile.SYMTYPE, DIRS + '/b/' + UP + '/etc')],
                                  'symbolic link x -> '),
        'symlink chain to a file outside': (
            [to_root, _special('x', tarfile.SYMTYPE, DIRS + '/b/' + UP + '/etc/passwd')], 'symbolic link x -> '),
        'symlink chain, outer link first': (
            [_special('x', tarfile.SYMTYPE, DIRS + '/b/' + UP + '/etc'), to_root], 'symbolic link x -> '),
        'symlink chain through three links': (
            [to_root, _special('y', tarfile.SYMTYPE, DIRS + '/b'),
             _special('z/x', tarfile.SYMTYPE, '../y/' + DIRS + '/b/' + UP + '/etc')],
            'symbolic link z/x -> '),
        'link to .. below the top, then up through it': (
            [_special('a/up', tarfile.SYMTYPE, '..'), _special('x', tarfile.SYMTYPE, 'a/up/..')], 'symbolic link x -> '),
        'link to .. at the top': ([_special('up', tarfile.SYMTYPE, '..')], 'symbolic link up -> '),
        'symlink chain then a file through the outer link': (
            [to_root, _special('x', tarfile.SYMTYPE, DIRS + '/b/' + UP + str(canary)), _file('x/evil')],
            'symbolic link x -> '),
        'outer link of a chain, a file through it, then the chain': (
            [_special('x', tarfile.SYMTYPE, DIRS + '/b/' + UP + str(canary)), _file('x/evil'), to_root],
            'member x/evil would be written through the symbolic link x'),
        'outer link of a chain, a hard link through it, then the chain': (
            [_special('etc', tarfile.SYMTYPE, DIRS + '/b/' + UP + '/etc'),
             _special('passwd', tarfile.LNKTYPE, 'etc/passwd'), to_root], 'hard link passwd'),
        'hard link through an inside symlink': (
            [_file('real/f'), _special('l', tarfile.SYMTYPE, 'real'), _special('h', tarfile.LNKTYPE, 'l/f')],
            'hard link h'),
        'directory member replaced by a symlink': (
            [_dir('d'), _special('d', tarfile.SYMTYPE, str(canary)), _file('d/evil')], 'duplicate member refused: d'),
        'extracted directory replaced by a symlink, then a file below it': (
            [_file('d/keep'), _special('d', tarfile.SYMTYPE, DIRS + '/b'), to_root, _file('d/evil')],
            'symbolic link d'),
        'parent reference': ([_file('../evil')], '..'),
        'nested parent reference': ([_file('sub/../../evil')], '..'),
        'absolute path': ([_file(outside_file)], 'absolute'),
        'absolute symlink': ([_special('x', tarfile.SYMTYPE, '/etc')], 'outside'),
        'relative symlink escaping': ([_special('x', tarfile.SYMTYPE, '../../outside')], 'outside'),
        'symlink then a file through it': (
            [_special('d', tarfile.SYMTYPE, str(canary)), _file('d/file')], 'outside'),
        'inside symlink then a file through it': (
            [_file('real/keep'), _special('d', tarfile.SYMTYPE, 'real'), _file('d/file')],
            'd/file would be written through the symbolic link d'),
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


def _age(plain, payload, keys, env):
    subprocess.run(['age', '-r', keys.age_recipient, '-o', str(payload), str(plain)], check=True, env=env)


def _links_leaving(top):
    """Symbolic links below top that resolve outside the directory of top they are in."""
    top = Path(top)
    found = []
    for current, dirs, files in os.walk(str(top)):
        for name in dirs + files:
            full = os.path.join(current, name)
            if os.path.islink(full):
                first = os.path.relpath(full, str(top)).split(os.sep, maxsplit=1)[0]
                inside = os.path.realpath(str(top / first))
                resolved = os.path.realpath(full)
                if resolved != inside and not resolved.startswith(inside + os.sep):
                    found.append('%s -> %s' % (full, resolved))
    return found


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
        _age(plain, payload, keys, test_env)
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
    assert _links_leaving(work) == []
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
        _age(plain, payload, keys, test_env)
        key_args = {'identity': str(keys.age_identity)}
    dest = tmp_path / 'restore' / 'dest'
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=dest, **key_args)
    assert not result.get('failed'), result
    assert sorted(listing(dest)) == ['aaa_harmless.txt', 'hard', 'link', 'sub', 'sub/inside.txt', 'zzz_big.bin']
    assert os.readlink(str(dest / 'link')) == 'sub/inside.txt'
    assert os.stat(str(dest / 'hard')).st_ino == os.stat(str(dest / 'sub' / 'inside.txt')).st_ino
    assert os.listdir(str(tmp_path / 'restore')) == ['dest']


def test_link_chains_that_stay_inside_are_extracted(tmp_path, run_module):
    """Links through links are fine as long as every one ends inside the destination."""
    plain = tmp_path / 'payloads' / 'chains.tar'
    plain.parent.mkdir()
    _build_tar(plain, [
        _file('sub/inside.txt'),
        _special(DIRS + '/b', tarfile.SYMTYPE, UP),
        _special('via', tarfile.SYMTYPE, DIRS + '/b/sub/inside.txt'),
        _special('sub/up', tarfile.SYMTYPE, '..'),
        _special('again', tarfile.SYMTYPE, 'sub/up/sub/up/via'),
        _special('dangling', tarfile.SYMTYPE, 'sub/not-there'),
    ])
    dest = tmp_path / 'restore' / 'dest'
    result = run_module('encrypted_archive', state='extracted', src=plain, dest=dest)
    assert not result.get('failed'), result
    assert os.readlink(str(dest / 'via')) == DIRS + '/b/sub/inside.txt'
    assert (dest / 'via').read_bytes() == (dest / 'again').read_bytes() == b'harmless\n'
    assert os.path.islink(str(dest / 'dangling'))
    assert _links_leaving(tmp_path / 'restore') == []
    assert os.listdir(str(tmp_path / 'restore')) == ['dest']


class _Zeros(object):
    """A file object of ``size`` zero bytes (compresses to almost nothing)."""

    def __init__(self, size):
        self.left = size

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def _pipe_into_payload(payload, keys, env, write):
    """write(stream) into ``zstd | age`` -> payload: the filters of a real payload."""
    proc = subprocess.Popen(['bash', '-o', 'pipefail', '-c', 'zstd -q -c -T1 | age -r "$RECIPIENT" -o "$OUT"'],
                            stdin=subprocess.PIPE, env=dict(env, RECIPIENT=keys.age_recipient, OUT=str(payload)))
    try:
        write(proc.stdin)
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=300) == 0


def _bomb_tar(stream):
    with tarfile.open(fileobj=stream, mode='w|', format=tarfile.PAX_FORMAT) as archive:
        first = tarfile.TarInfo('public/logo.bin')
        first.size = 16 * 1024
        first.mode = 0o644
        archive.addfile(first, io.BytesIO(os.urandom(first.size)))
        zeros = tarfile.TarInfo('public/zeros.bin')
        zeros.size = BOMB
        zeros.mode = 0o644
        archive.addfile(zeros, _Zeros(BOMB))


def _bomb_raw(stream):
    source = _Zeros(BOMB)
    while True:
        data = source.read(1024 * 1024)
        if not data:
            return
        stream.write(data)


def _recorded_set(run_module, keys, tmp_path, fmt):
    """A finalized set whose one payload recorded RECORDED bytes of source at backup."""
    opened = run_module('backup_set', root=str(tmp_path / 'backups'), service='files', state='present')
    assert opened['changed'], opened
    set_dir = Path(opened['path'])
    if fmt == 'tar':
        source = tmp_path / 'source'
        (source / 'public').mkdir(parents=True)
        random_file(source / 'public' / 'logo.bin', RECORDED)
        payload = set_dir / 'media.tar.zst.age'
    else:
        source = random_file(tmp_path / 'blob.bin', RECORDED)
        payload = set_dir / 'blob.bin.zst.age'
    written = run_module('encrypted_archive', src=source, dest=payload, recipients=[keys.age_recipient])
    assert not written.get('failed'), written
    assert written['payload']['source']['bytes'] == RECORDED
    assert not run_module('backup_set', path=str(set_dir), state='finalized').get('failed')
    return set_dir, payload


@pytest.mark.parametrize('fmt', ['tar', 'raw'])
def test_payload_expanding_beyond_the_recorded_size_is_refused(tmp_path, run_module, keys, test_env, fmt):
    set_dir, payload = _recorded_set(run_module, keys, tmp_path, fmt)
    _forge(set_dir, payload.name, lambda path: _pipe_into_payload(path, keys, test_env,
                                                                  _bomb_tar if fmt == 'tar' else _bomb_raw))
    assert payload.stat().st_size < 48 * 1024, 'the bomb should be small: %d bytes' % payload.stat().st_size
    work = tmp_path / 'work'
    (work / 'restore').mkdir(parents=True)
    dest = work / 'restore' / ('dest' if fmt == 'tar' else 'blob.bin')

    result = run_module('encrypted_archive', state='extracted', src=payload, dest=dest,
                        identity=str(keys.age_identity))

    assert result.get('failed'), result
    assert str(payload) in result['msg'], result['msg']
    assert 'expands beyond the %d bytes recorded at backup: refusing' % RECORDED in result['msg'], result['msg']
    if fmt == 'tar':
        assert 'public/zeros.bin' in result['msg'], result['msg']
    assert listing(work) == ['restore'], 'extraction left %s' % listing(work)
    assert listing(set_dir) == ['MANIFEST.sha256', payload.name, 'metadata.json']


@pytest.fixture(scope='module')
def authentik_db():
    """An Authentik-shaped PostgreSQL container (a small fixture): (container, row counts)."""
    name = 'idp-test-crafted-%s-postgres' % uuid.uuid4().hex[:6]
    try:
        ak.run_postgres(name, 'pw-' + uuid.uuid4().hex)
        yield name, ak.load_fixture(name, users=50)
    finally:
        ak.remove_containers(name)


def _forge(set_dir, rel, craft):
    """Replace a payload of a finalized set and rewrite its metadata and manifest to match,
    as whoever can write the whole set could (the manifest is not authenticated); the size of
    the source recorded at backup stays."""
    payload = set_dir / rel
    craft(payload)
    data = payload.read_bytes()
    metadata_path = set_dir / 'metadata.json'
    metadata = json.loads(metadata_path.read_text())
    metadata['payloads'][rel].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    # without a recorded content digest nothing but the extraction itself stands in the way
    del metadata['payloads'][rel]['source']['digest']
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + '\n')
    lines = []
    for line in (set_dir / 'MANIFEST.sha256').read_text().splitlines():
        _digest, name = line.split('  ', 1)
        lines.append('%s  %s\n' % (hashlib.sha256((set_dir / name).read_bytes()).hexdigest(), name))
    (set_dir / 'MANIFEST.sha256').write_text(''.join(lines))


@pytest.mark.parametrize('fault', ['symlink chain', 'bomb'])
def test_authentik_restore_refuses_a_hostile_files_payload(tmp_path, run_module, keys, test_env, authentik_db, fault):
    container, counts = authentik_db
    compose = tmp_path / 'compose'
    media = compose / 'media'
    (media / 'public').mkdir(parents=True)
    random_file(media / 'public' / 'logo.bin', RECORDED)
    files = [{'name': 'media', 'path': str(media)}]
    opened = run_module('backup_set', root=str(tmp_path / 'backups'), service='authentik', state='present')
    set_dir = Path(opened['path'])
    dumped = run_module('authentik_dump', set_dir=str(set_dir), container=container, files=files,
                        recipients=[keys.age_recipient])
    assert not dumped.get('failed'), dumped
    assert not run_module('backup_set', path=str(set_dir), state='finalized').get('failed')
    rel = 'files/media.tar.zst.age'
    metadata = json.loads((set_dir / 'metadata.json').read_text())
    assert metadata['payloads'][rel]['source']['bytes'] == RECORDED

    if fault == 'symlink chain':
        def craft(payload):
            _pipe_into_payload(payload, keys, test_env, lambda stream: _chain_tar(stream, [
                _file('public/logo.bin'), _special(DIRS + '/b', tarfile.SYMTYPE, UP),
                _special('public/passwd', tarfile.SYMTYPE, '../' + DIRS + '/b/' + UP + '/etc/passwd')]))
        phrase = 'symbolic link public/passwd -> '
    else:
        def craft(payload):
            _pipe_into_payload(payload, keys, test_env, _bomb_tar)
        phrase = 'expands beyond the %d bytes recorded at backup: refusing' % RECORDED
    _forge(set_dir, rel, craft)
    # the live directory moved on since the backup: the restore replaces it, the rollback brings it back
    (media / 'public' / 'added-after-backup.txt').write_bytes(b'new\n')
    before = snapshot(media)
    passwd = _passwd_state()

    result = run_module('authentik_restore', set_dir=str(set_dir), container=container,
                        identity=str(keys.age_identity), app_containers=[], files=files,
                        target_version=ak.VERSION, health_url='')

    assert result.get('failed'), result['steps']
    assert rel in result['msg'] and phrase in result['msg'], result['msg']
    failed = [step for step in result['steps'] if step.get('failed')]
    assert [step['name'] for step in failed] == ['restore_files'], result['steps']
    assert phrase in failed[0]['error'], failed[0]
    assert 'rollback_files' in [step['name'] for step in result['steps']], result['steps']
    assert result['rolled_back'] is True, result
    # the directory is back as it was, nothing resolves outside, nothing is left beside it
    assert snapshot(media) == before
    assert _links_leaving(compose) == []
    assert leftovers(compose) == [] and sorted(os.listdir(str(compose))) == ['media']
    assert _passwd_state() == passwd
    assert ak.table_counts(container) == counts


def _chain_tar(stream, members):
    with tarfile.open(fileobj=stream, mode='w|', format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
