# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    CORRUPT,
    UNWRITABLE,
    WRONG_KEY,
    AgeBackend,
    Compression,
    GpgBackend,
    PassphraseBackend,
    check_encryption_allowed,
    describe_from_name,
    explain_failure,
    sniff_encryption,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import PipelineError, Stage, run_from_file, run_to_file

RECIPIENT = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'


@pytest.mark.parametrize('name, expected', [
    ('media.tar.zst.age', ('tar', 'zstd', 'age')),
    ('db.dump.gz.gpg', ('raw', 'gzip', 'gpg')),
    ('env.age', ('raw', 'none', 'age')),
    ('plain.tar', ('tar', 'none', None)),
])
def test_describe_from_name(name, expected):
    assert describe_from_name('/x/' + name) == expected


def test_sniffers(tmp_path):
    cases = {'a': b'age-encryption.org/v1\n-> X25519', 'p': b'\x8c\x0d\x04\x09', 'g': b'\x85\x01\x0c', 'n': b'\xc1\x02',
             'x': b'plain'}
    found = {}
    for name, head in cases.items():
        path = tmp_path / name
        path.write_bytes(head)
        found[name] = sniff_encryption(str(path))
    assert found == {'a': 'age', 'p': 'passphrase', 'g': 'gpg', 'n': 'gpg', 'x': None}


def test_missing_recipients_are_refused():
    with pytest.raises(RecoveryError, match='recipients'):
        AgeBackend().encrypt_stage()
    with pytest.raises(RecoveryError, match='not an age recipient'):
        AgeBackend(['age1short']).encrypt_stage()
    with pytest.raises(RecoveryError, match='recipients'):
        GpgBackend().encrypt_stage()
    with pytest.raises(RecoveryError, match='fingerprint'):
        GpgBackend(['alice@example.org']).encrypt_stage()
    with pytest.raises(RecoveryError, match='passphrase'):
        PassphraseBackend().encrypt_stage()
    with pytest.raises(RecoveryError, match='allow_unencrypted'):
        check_encryption_allowed('none', False)
    check_encryption_allowed('none', True)


def test_recipients_are_on_argv_but_secrets_never_are():
    stage = AgeBackend([RECIPIENT, 'ssh-ed25519 AAAAC3Nza comment']).encrypt_stage()
    assert stage.argv == ['age', '--encrypt', '-r', RECIPIENT, '-r', 'ssh-ed25519 AAAAC3Nza comment']
    stage = PassphraseBackend('very secret').encrypt_stage()
    assert not any('very secret' in arg for arg in stage.argv)
    assert '{fd}' in stage.argv and stage.secret == b'very secret'


@pytest.mark.parametrize('name, level, ok', [('zstd', 19, True), ('zstd', 20, False), ('gzip', 9, True), ('gzip', 0, False)])
def test_compression_levels(name, level, ok):
    if ok:
        assert Compression(name, level).compress_stage().argv[-1] == '-%d' % level
    else:
        with pytest.raises(RecoveryError, match='compression_level'):
            Compression(name, level).compress_stage()


def test_explain_failure_classifies():
    age = AgeBackend()
    stderr = 'age: error: no identity matched any of the recipients\nage: report unexpected or unhelpful errors at x'
    kind, msg = explain_failure('/s/p.age', [('age', 1, stderr)], age)
    assert kind == WRONG_KEY and msg.startswith('/s/p.age: cannot decrypt: wrong key')
    assert msg.endswith('(age: no identity matched any of the recipients)')
    kind, msg = explain_failure('/s/p.age', [('zstd', 1, 'premature end')], age)
    assert kind == CORRUPT and 'corrupted or truncated' in msg
    kind, _msg = explain_failure('/s/p.gpg', [('gpg', 2, 'gpg: decryption failed: Bad session key')], PassphraseBackend())
    assert kind == WRONG_KEY


def test_explain_failure_names_a_full_destination():
    # zstd -d writing the output itself onto a full disk; age then dies of the closed pipe, silently
    failures = [('age', 1, ''), ('zstd', 70, 'zstd: error 70 : Write error : cannot write block : No space left on device')]
    kind, msg = explain_failure('/s/p.zst.age', failures, AgeBackend())
    assert kind == UNWRITABLE
    assert msg == '/s/p.zst.age: cannot write what it holds: zstd: No space left on device'


def test_pipeline_round_trip_through_real_processes(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)
    dest = str(tmp_path / 'out')

    def produce(sink):
        for start in range(0, len(data), 100000):
            sink.write(data[start:start + 100000])

    sha256, size = run_to_file(produce, [Stage('cat', ['cat']), Stage('cat', ['cat'])], dest)
    assert size == len(data) and open(dest, 'rb').read() == data
    assert oct(os.stat(dest).st_mode & 0o777) == oct(0o600)
    chunks = []
    run_from_file(dest, [Stage('cat', ['cat'])], lambda stream: chunks.append(stream.read()))
    assert b''.join(chunks) == data
    assert len(sha256) == 64


def test_pipeline_secret_reaches_child_through_fd(tmp_path):
    dest = str(tmp_path / 'out')
    run_to_file(lambda sink: None, [Stage('cat', ['cat', '/dev/fd/{fd}'], secret=b'from a pipe')], dest)
    assert open(dest, 'rb').read() == b'from a pipe'


def test_failed_stage_leaves_nothing(tmp_path):
    dest = str(tmp_path / 'out')
    with pytest.raises(PipelineError) as info:
        run_to_file(lambda sink: sink.write(b'x' * 1000000), [Stage('sh', ['sh', '-c', 'echo boom >&2; exit 3'])], dest)
    assert info.value.failures[0][:2] == ('sh', 3) and 'boom' in info.value.msg
    assert os.listdir(str(tmp_path)) == []


def test_failed_source_leaves_nothing(tmp_path):
    dest = str(tmp_path / 'out')

    def produce(sink):
        sink.write(b'partial')
        raise RecoveryError('source vanished')

    with pytest.raises(RecoveryError, match='source vanished'):
        run_to_file(produce, [Stage('cat', ['cat'])], dest)
    assert os.listdir(str(tmp_path)) == []
