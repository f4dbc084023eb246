# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set, _payload
from ansible_collections.idp.recovery.plugins.module_utils._archive import CountingSink
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Keys, reported_size
from ansible_collections.idp.recovery.plugins.module_utils._stream import (
    FileDigest,
    PipelineError,
    Stage,
    discard,
    run_from_file_hashed,
)


def _file(tmp_path, size=3 * 1024 * 1024 + 17):
    path = tmp_path / 'input.bin'
    path.write_bytes(os.urandom(size))
    return str(path)


def test_the_digest_covers_the_whole_file_even_when_the_stage_stops_early(tmp_path):
    path = _file(tmp_path)
    digest = FileDigest()
    seen = run_from_file_hashed(path, [Stage('head', ['head', '-c', '10'])], discard, digest)
    assert seen == 10
    with open(path, 'rb') as handle:
        data = handle.read()
    assert (digest.hexdigest(), digest.size) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_failing_stage_still_leaves_the_whole_digest(tmp_path):
    path = _file(tmp_path)
    digest = FileDigest()
    with pytest.raises(PipelineError):
        run_from_file_hashed(path, [Stage('sh', ['sh', '-c', 'head -c 5 > /dev/null; exit 3'])], discard, digest)
    assert digest.size == os.path.getsize(path)


def test_without_stages_the_consumer_reads_the_hashed_bytes(tmp_path):
    path = _file(tmp_path)
    digest = FileDigest()
    assert run_from_file_hashed(path, [], discard, digest) == os.path.getsize(path)
    assert digest.size == os.path.getsize(path)


def test_an_unreadable_file_says_so(tmp_path):
    with pytest.raises(RecoveryError, match='cannot read') as info:
        run_from_file_hashed(str(tmp_path / 'missing'), [], discard, FileDigest())
    assert info.value.details['reason'] == 'unreadable'


def test_discard_counts_a_pipe_and_what_its_buffer_held(tmp_path):
    path = _file(tmp_path)
    proc = subprocess.Popen(['cat', path], stdout=subprocess.PIPE, bufsize=1024 * 1024)
    try:
        head = proc.stdout.read(1000)
        assert len(head) + discard(proc.stdout) == os.path.getsize(path)
    finally:
        proc.stdout.close()
        proc.wait()
    assert discard(io.BytesIO(b'x' * 12345)) == 12345


def _tar_bytes(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize('cut', [None, 5000, 3 * 1024 * 1024])
def test_counting_sink_walks_a_tar_from_a_pipe(tmp_path, cut):
    data = _tar_bytes([('a', os.urandom(2 * 1024 * 1024 + 3)), ('b/c', b''), ('d', os.urandom(1500000))])
    path = tmp_path / 'x.tar'
    path.write_bytes(data[:cut] if cut else data)
    proc = subprocess.Popen(['cat', str(path)], stdout=subprocess.PIPE, bufsize=1024 * 1024)
    try:
        sink = CountingSink(tar=True)
        if cut:
            with pytest.raises(RecoveryError, match='broken tar stream'):
                sink(proc.stdout)
        else:
            assert sink(proc.stdout) == 2 * 1024 * 1024 + 3 + 1500000
            assert sink.members == 3
    finally:
        proc.stdout.close()
        proc.wait()


def test_reported_size_reads_the_report_of_zstd():
    assert reported_size('*** zstd ***\n\r/*stdin*\\           : 3000000 bytes \n') == 3000000
    assert reported_size('/*stdin*\\ : Read error (39) : premature end \n') is None


def _set_with_payloads(tmp_path):
    set_dir = str(tmp_path / 'set')
    _backup_set.create(set_dir, 'svc')
    src = _file(tmp_path)
    tree = tmp_path / 'tree'
    tree.mkdir()
    (tree / 'one').write_bytes(os.urandom(70000))
    _payload.create_payload(src, os.path.join(set_dir, 'data.zst'), 'none', ('zstd', 3))
    _payload.create_payload(str(tree), os.path.join(set_dir, 'tree.tar.zst'), 'none', ('zstd', 3))
    with open(os.path.join(set_dir, 'notes.txt'), 'w') as handle:
        handle.write('no payload\n')
    _backup_set.finalize(set_dir, {}, 'svc')
    return set_dir, src


def test_verified_reads_each_payload_once(tmp_path, monkeypatch):
    set_dir, src = _set_with_payloads(tmp_path)
    hashed = []
    real = _backup_set.hash_file

    def spy(path, *args):
        hashed.append(os.path.basename(path))
        return real(path, *args)

    monkeypatch.setattr(_backup_set, 'hash_file', spy)
    monkeypatch.setattr(_payload, 'hash_file', spy)
    checks, unlisted = _payload.verify_set(set_dir, Keys(), 'always')
    by_path = dict((item['path'], item) for item in checks)
    assert unlisted == [] and all(item['ok'] for item in checks)
    assert by_path['data.zst']['decrypted'] is True and by_path['data.zst']['plain_bytes'] == os.path.getsize(src)
    assert by_path['tree.tar.zst']['decrypted'] is True and by_path['tree.tar.zst']['members'] == 2
    # no payload is hashed on its own: its SHA-256 comes from the read test
    assert 'data.zst' not in hashed and 'tree.tar.zst' not in hashed
    # and with decrypt=never, every file is hashed alone
    del hashed[:]
    _payload.verify_set(set_dir, Keys(), 'never')
    assert 'data.zst' in hashed and 'tree.tar.zst' in hashed


@pytest.mark.parametrize('name', ['data.zst', 'tree.tar.zst'])
def test_a_payload_that_differs_from_the_manifest_fails_with_the_checksum_error(tmp_path, name):
    set_dir, _src = _set_with_payloads(tmp_path)
    path = os.path.join(set_dir, name)
    with open(path, 'r+b') as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes(bytearray([byte[0] ^ 0x5a])))
    with pytest.raises(RecoveryError, match='%s: checksum mismatch' % name) as info:
        _payload.verify_set(set_dir, Keys(), 'always')
    by_path = dict((item['path'], item) for item in info.value.details['files'])
    assert by_path[name]['decrypted'] is None and 'plain_bytes' not in by_path[name]
