# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every encryption x compression: back up a tree and a file into a set, finalize, check the
manifest with sha256sum, undo the payloads with stock tools only, and restore with the module."""

from __future__ import annotations

import json
import os
import stat

import pytest

from recovery_support import (
    SUFFIX,
    decryption_args,
    encryption_args,
    leftovers,
    make_tree,
    mode,
    random_file,
    run_shell,
    sha256sum_check,
    snapshot,
    stock_decrypt_command,
)

ENCRYPTIONS = ['age', 'ssh', 'gpg', 'passphrase']
COMPRESSIONS = ['zstd', 'gzip', 'none']


@pytest.mark.parametrize('compression', COMPRESSIONS)
@pytest.mark.parametrize('encryption', ENCRYPTIONS)
def test_round_trip(tmp_path, run_module, keys, test_env, encryption, compression):
    passphrase = 'round-trip %s' % os.urandom(8).hex()
    source_tree = make_tree(tmp_path / 'source' / 'media')
    source_file = random_file(tmp_path / 'source' / 'authentik.dump', 300 * 1024)
    source_snapshot = snapshot(source_tree)
    set_dir = tmp_path / 'backups' / 'authentik' / '20260101T030000Z'
    suffix = SUFFIX[compression] + SUFFIX[encryption]
    tree_payload = set_dir / ('media.tar' + suffix)
    file_payload = set_dir / ('authentik.dump' + suffix)

    opened = run_module('backup_set', path=set_dir, kind='authentik')
    assert not opened.get('failed'), opened
    assert opened['changed'] and not opened['complete']

    recorded_encryption = 'age' if encryption == 'ssh' else encryption
    for src, dest, fmt in ((source_tree, tree_payload, 'tar'), (source_file, file_payload, 'raw')):
        written = run_module('encrypted_archive', src=src, dest=dest, compression=compression,
                             **encryption_args(encryption, keys, passphrase))
        assert not written.get('failed'), written
        assert written['changed'] and written['format'] == fmt
        assert written['payload']['encryption'] == recorded_encryption
        assert written['payload']['compression'] == compression
        assert written['payload']['size'] == dest.stat().st_size

    finalized = run_module('backup_set', path=set_dir, state='finalized', metadata={'ticket': 'CHG-1'})
    assert not finalized.get('failed'), finalized
    assert finalized['changed'] and finalized['complete']

    # layout and permissions
    assert mode(set_dir) == 0o700
    names = sorted(os.listdir(str(set_dir)))
    assert names == sorted(['MANIFEST.sha256', 'metadata.json', tree_payload.name, file_payload.name])
    for name in names:
        st = os.lstat(str(set_dir / name))
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o600, name

    # the manifest is a sha256sum file that lists every other file
    check = sha256sum_check(set_dir, env=test_env)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = sorted(line.split('  ', 1)[1] for line in (set_dir / 'MANIFEST.sha256').read_text().splitlines())
    assert listed == sorted(['metadata.json', tree_payload.name, file_payload.name])

    # metadata: public parts only, both payloads described
    metadata_text = (set_dir / 'metadata.json').read_text()
    metadata = json.loads(metadata_text)
    assert sorted(metadata['payloads']) == sorted([tree_payload.name, file_payload.name])
    assert metadata['ticket'] == 'CHG-1'
    assert metadata['set']['kind'] == 'authentik'
    assert passphrase not in metadata_text
    assert 'AGE-SECRET-KEY' not in metadata_text and 'PRIVATE KEY' not in metadata_text

    # stock tools alone undo both payloads
    passphrase_file = tmp_path / 'passphrase'
    fd = os.open(str(passphrase_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(passphrase + '\n')
    stock_tree = tmp_path / 'stock' / 'media'
    stock_tree.mkdir(parents=True)
    untar = run_shell('%s | tar -x -f - -C %s' % (
        stock_decrypt_command(tree_payload, encryption, compression, keys, passphrase_file), stock_tree), env=test_env)
    assert untar.returncode == 0, untar.stderr
    assert snapshot(stock_tree) == source_snapshot
    plain = run_shell(stock_decrypt_command(file_payload, encryption, compression, keys, passphrase_file), env=test_env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == source_file.read_bytes()

    # the module verifies the set with a full read test
    verified = run_module('backup_set', path=set_dir, state='verified',
                          decrypt='always', **decryption_args(encryption, keys, passphrase))
    assert not verified.get('failed'), verified
    assert not verified['changed']
    decrypted = {item['path']: item['decrypted'] for item in verified['files']}
    assert decrypted == {'metadata.json': None, tree_payload.name: True, file_payload.name: True}

    # and restores both
    restore = tmp_path / 'restore'
    for payload, dest in ((tree_payload, restore / 'media'), (file_payload, restore / 'authentik.dump')):
        extracted = run_module('encrypted_archive', state='extracted', src=payload, dest=dest,
                               **decryption_args(encryption, keys, passphrase))
        assert not extracted.get('failed'), extracted
        assert extracted['changed'] and extracted['digest_checked']
    assert snapshot(restore / 'media') == source_snapshot
    assert (restore / 'authentik.dump').read_bytes() == source_file.read_bytes()
    assert sorted(os.listdir(str(restore))) == ['authentik.dump', 'media']
    assert leftovers(restore) == []
