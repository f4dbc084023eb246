# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Wrong keys, damaged payloads and refused writes: every failure names the payload, says what
is wrong and leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from recovery_support import listing, make_tree, random_file, reseal, sha256sum_check

PASSPHRASE = 'correct horse battery staple %s' % os.urandom(4).hex()


@pytest.fixture(scope='module')
def finalized_set(tmp_path_factory, module_runner, keys):
    """A finalized set with a tree (age), a file (passphrase) and a file (gpg public key)."""
    base = tmp_path_factory.mktemp('finalized')
    tree = make_tree(base / 'media')
    dump = random_file(base / 'authentik.dump', 256 * 1024)
    set_dir = base / 'backups' / 'authentik' / '20260105T030000Z'
    assert not module_runner('backup_set', path=set_dir).get('failed')
    for src, name, args in (
            (tree, 'media.tar.zst.age', {'recipients': [keys.age_recipient]}),
            (dump, 'authentik.dump.zst.gpg', {'encryption': 'passphrase', 'passphrase': PASSPHRASE}),
            (dump, 'copy.dump.gz.gpg', {'encryption': 'gpg', 'recipients': [keys.gpg_fpr],
                                        'gpg_homedir': str(keys.gpg_home), 'compression': 'gzip'})):
        result = module_runner('encrypted_archive', src=src, dest=set_dir / name, **args)
        assert not result.get('failed'), result
    assert not module_runner('backup_set', path=set_dir, state='finalized').get('failed')
    return set_dir


@pytest.fixture
def set_copy(tmp_path, finalized_set):
    copy = tmp_path / 'backups' / 'authentik' / finalized_set.name
    shutil.copytree(str(finalized_set), str(copy), symlinks=True)
    return copy


def _keys_for(name, keys):
    if name.endswith('.age'):
        return {'identity': str(keys.age_identity)}
    if name.startswith('copy'):
        return {'gpg_homedir': str(keys.gpg_home)}
    return {'passphrase': PASSPHRASE}


def _assert_failed_cleanly(result, payload, restore_parent, *phrases):
    assert result.get('failed'), result
    assert str(payload) in result['msg'], result['msg']
    for phrase in phrases:
        assert phrase in result['msg'], result['msg']
    assert listing(restore_parent) == [], 'a failed extraction left %s' % listing(restore_parent)


# (a) wrong keys ---------------------------------------------------------------------------

@pytest.mark.parametrize('how', ['identity', 'identity_content'])
def test_extract_with_a_wrong_age_identity(tmp_path, run_module, keys, set_copy, how):
    payload = set_copy / 'media.tar.zst.age'
    restore = tmp_path / 'restore'
    restore.mkdir()
    wrong = ({'identity': str(keys.age_other_identity)} if how == 'identity'
             else {'identity_content': keys.age_other_identity.read_text()})
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=restore / 'media', **wrong)
    _assert_failed_cleanly(result, payload, restore, 'wrong key or passphrase')


def test_extract_with_a_wrong_passphrase(tmp_path, run_module, set_copy):
    payload = set_copy / 'authentik.dump.zst.gpg'
    restore = tmp_path / 'restore'
    restore.mkdir()
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=restore / 'authentik.dump',
                        passphrase='not the passphrase')
    _assert_failed_cleanly(result, payload, restore, 'wrong key or passphrase')
    assert 'not the passphrase' not in str(result)


def test_extract_without_the_gpg_secret_key(tmp_path, run_module, set_copy):
    """A keyring without the recipient's secret key."""
    payload = set_copy / 'copy.dump.gz.gpg'
    empty_home = tmp_path / 'gnupg-empty'
    empty_home.mkdir(mode=0o700)
    restore = tmp_path / 'restore'
    restore.mkdir()
    try:
        result = run_module('encrypted_archive', state='extracted', src=payload, dest=restore / 'copy.dump',
                            gpg_homedir=str(empty_home))
    finally:
        subprocess.run(['gpgconf', '--homedir', str(empty_home), '--kill', 'all'],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    _assert_failed_cleanly(result, payload, restore, 'wrong key or passphrase')


def test_gpg_key_with_a_passphrase(tmp_path, run_module, keys):
    """A payload for a passphrase-protected OpenPGP key: the wrong passphrase fails, the right one works."""
    src = random_file(tmp_path / 'authentik.dump', 32 * 1024)
    payload = tmp_path / 'authentik.dump.zst.gpg'
    written = run_module('encrypted_archive', src=src, dest=payload, encryption='gpg',
                         recipients=[keys.gpg_protected_fpr], gpg_homedir=str(keys.gpg_home))
    assert not written.get('failed'), written
    restore = tmp_path / 'restore'
    restore.mkdir()
    args = dict(state='extracted', src=payload, dest=restore / 'authentik.dump', gpg_homedir=str(keys.gpg_home))
    result = run_module('encrypted_archive', passphrase='not-the-key-passphrase', **args)
    _assert_failed_cleanly(result, payload, restore, 'wrong key or passphrase')
    result = run_module('encrypted_archive', passphrase=keys.gpg_protected_passphrase, **args)
    assert not result.get('failed'), result
    assert (restore / 'authentik.dump').read_bytes() == src.read_bytes()


@pytest.mark.parametrize('name', ['media.tar.zst.age', 'authentik.dump.zst.gpg'])
def test_verified_with_a_wrong_key_names_the_file(run_module, keys, set_copy, name):
    wrong = {'identity': str(keys.age_other_identity), 'passphrase': 'not the passphrase'}
    result = run_module('backup_set', path=set_copy, state='verified', **wrong)
    assert result.get('failed'), result
    assert name in result['msg'] and 'wrong key or passphrase' in result['msg'], result['msg']
    by_path = {item['path']: item for item in result['files']}
    assert by_path[name]['ok'] is False and by_path[name]['decrypted'] is False
    assert by_path['metadata.json']['ok'] is True


# (b) damaged payloads ---------------------------------------------------------------------

def _flip_middle_byte(path):
    size = path.stat().st_size
    with open(str(path), 'r+b') as handle:
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0x5a]))


def _truncate(path):
    with open(str(path), 'r+b') as handle:
        handle.truncate(path.stat().st_size // 2)


def _rewrite_manifest_line(set_dir, name):
    # the recorded SHA-256 and size in metadata.json too, or verification stops there
    reseal(set_dir, name)


@pytest.mark.parametrize('damage', ['flip', 'truncate'])
@pytest.mark.parametrize('name', ['media.tar.zst.age', 'authentik.dump.zst.gpg', 'copy.dump.gz.gpg'])
def test_damaged_payload(tmp_path, run_module, keys, set_copy, test_env, name, damage):
    payload = set_copy / name
    (_flip_middle_byte if damage == 'flip' else _truncate)(payload)
    key_args = _keys_for(name, keys)

    # the checksum catches it first
    result = run_module('backup_set', path=set_copy, state='verified', **key_args)
    assert result.get('failed'), result
    assert name in result['msg'] and 'checksum mismatch' in result['msg'], result['msg']
    assert [item['path'] for item in result['files'] if not item['ok']] == [name]

    # with a manifest and metadata that agree, only decryption and decompression can catch it
    _rewrite_manifest_line(set_copy, name)
    assert sha256sum_check(set_copy, env=test_env).returncode == 0
    result = run_module('backup_set', path=set_copy, state='verified', **key_args)
    assert result.get('failed'), result
    assert name in result['msg'] and 'corrupted or truncated' in result['msg'], result['msg']
    assert [item['path'] for item in result['files'] if not item['ok']] == [name]

    restore = tmp_path / 'restore'
    restore.mkdir()
    result = run_module('encrypted_archive', state='extracted', src=payload, dest=restore / 'out', **key_args)
    _assert_failed_cleanly(result, payload, restore, 'corrupted or truncated')


# (b2) one pass: the read test hashes the bytes it decrypts -------------------------------------

def _manifest(set_dir):
    return dict(reversed(line.split('  ', 1)) for line in (set_dir / 'MANIFEST.sha256').read_text().splitlines())


def _all_keys(keys):
    return {'identity': str(keys.age_identity), 'passphrase': PASSPHRASE, 'gpg_homedir': str(keys.gpg_home)}


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5a
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('damage', ['flip-first', 'flip-middle', 'flip-last', 'truncate'])
@pytest.mark.parametrize('name', ['media.tar.zst.age', 'authentik.dump.zst.gpg', 'copy.dump.gz.gpg'])
def test_one_pass_read_test_of_a_damaged_payload_reports_the_checksum_alone(run_module, keys, set_copy, name, damage):
    """Whatever the decryption of damaged bytes gave is neither reported nor counted: the SHA-256 decides."""
    payload = set_copy / name
    expected = _manifest(set_copy)[name]
    if damage == 'truncate':
        _truncate(payload)
    else:
        size = payload.stat().st_size
        _flip_byte(payload, {'flip-first': 0, 'flip-middle': size // 2, 'flip-last': size - 1}[damage])
    found = hashlib.sha256(payload.read_bytes()).hexdigest()
    result = run_module('backup_set', path=set_copy, state='verified', decrypt='always', **_all_keys(keys))
    assert result.get('failed'), result
    error = '%s: checksum mismatch (expected %s, found %s)' % (name, expected, found)
    assert error in result['msg'], result['msg']
    by_path = {item['path']: item for item in result['files']}
    assert by_path[name]['error'] == error and by_path[name]['size'] == payload.stat().st_size
    assert by_path[name]['decrypted'] is None and 'plain_bytes' not in by_path[name] and 'reason' not in by_path[name]
    assert [item['path'] for item in result['files'] if not item['ok']] == [name]


@pytest.mark.parametrize('name', ['media.tar.zst.age', 'authentik.dump.zst.gpg'])
def test_one_pass_read_test_that_decrypts_but_differs_from_the_manifest_fails(run_module, keys, set_copy, name):
    """The decryption succeeds in full, yet the read test does not count."""
    manifest = set_copy / 'MANIFEST.sha256'
    expected = _manifest(set_copy)[name]
    wrong = hashlib.sha256(b'another payload').hexdigest()
    manifest.write_text(manifest.read_text().replace('%s  %s\n' % (expected, name), '%s  %s\n' % (wrong, name)))
    result = run_module('backup_set', path=set_copy, state='verified', decrypt='always', **_all_keys(keys))
    assert result.get('failed'), result
    by_path = {item['path']: item for item in result['files']}
    assert by_path[name]['error'] == '%s: checksum mismatch (expected %s, found %s)' % (name, wrong, expected)
    assert by_path[name]['decrypted'] is None and 'plain_bytes' not in by_path[name] and 'members' not in by_path[name]
    assert [item['path'] for item in result['files'] if not item['ok']] == [name]


def test_one_pass_read_test_of_the_whole_set(run_module, keys, set_copy):
    result = run_module('backup_set', path=set_copy, state='verified', decrypt='always', **_all_keys(keys))
    assert not result.get('failed'), result
    by_path = {item['path']: item for item in result['files']}
    for name in ('authentik.dump.zst.gpg', 'copy.dump.gz.gpg'):
        assert by_path[name]['decrypted'] is True and by_path[name]['plain_bytes'] == 256 * 1024, by_path[name]
    assert by_path['media.tar.zst.age']['decrypted'] is True and by_path['media.tar.zst.age']['members'] > 1
    # a file that is no payload is hashed all the same
    assert by_path['metadata.json']['ok'] is True and by_path['metadata.json']['decrypted'] is None
    # with a wrong key the decryptor stops early; the payload is still hashed to its end
    result = run_module('backup_set', path=set_copy, state='verified', identity=str(keys.age_other_identity))
    item = {entry['path']: entry for entry in result['files']}['media.tar.zst.age']
    assert item['reason'] == 'wrong_key' and item['size'] == (set_copy / 'media.tar.zst.age').stat().st_size


# (e) refused writes -----------------------------------------------------------------------

REFUSALS = {
    'default encryption without recipients': ({}, 'needs recipients'),
    'age without recipients': ({'encryption': 'age', 'recipients': []}, 'needs recipients'),
    'age with a recipients file that does not exist': (
        {'encryption': 'age', 'recipients_file': '/nonexistent/recipients.txt'}, 'does not exist'),
    'age with something that is not a recipient': (
        {'encryption': 'age', 'recipients': ['AGE-SECRET-KEY-1NOTAPUBLICKEY']}, 'not an age recipient'),
    'gpg without recipients': ({'encryption': 'gpg'}, 'needs recipients'),
    'passphrase without a passphrase': ({'encryption': 'passphrase'}, 'needs a passphrase'),
    'none without allow_unencrypted': ({'encryption': 'none'}, 'allow_unencrypted'),
}


@pytest.mark.parametrize('check_mode', [False, True], ids=['apply', 'check'])
@pytest.mark.parametrize('case', sorted(REFUSALS))
def test_refused_without_protection(tmp_path, run_module, case, check_mode):
    args, phrase = REFUSALS[case]
    set_dir = tmp_path / 'backups' / 'authentik' / '20260106T030000Z'
    assert not run_module('backup_set', path=set_dir).get('failed')
    tree = make_tree(tmp_path / 'media')
    dest = set_dir / 'media.tar.zst.age'
    result = run_module('encrypted_archive', check_mode=check_mode, src=tree, dest=dest, **args)
    assert result.get('failed'), result
    assert phrase in result['msg'], result['msg']
    assert listing(set_dir) == ['.in-progress'], 'a refused write left %s' % listing(set_dir)
    # and outside a set, no file appears either
    loose = tmp_path / 'loose' / 'media.tar.zst'
    result = run_module('encrypted_archive', check_mode=check_mode, src=tree, dest=loose, **args)
    assert result.get('failed') and phrase in result['msg'], result
    assert not os.path.lexists(str(loose.parent))


def test_allow_unencrypted_writes_plaintext(tmp_path, run_module):
    """The counterpart of the refusal: with allow_unencrypted the payload is a plain zstd tar."""
    tree = make_tree(tmp_path / 'media')
    dest = tmp_path / 'media.tar.zst'
    result = run_module('encrypted_archive', src=tree, dest=dest, encryption='none', allow_unencrypted=True)
    assert not result.get('failed') and result['changed'], result
    assert dest.read_bytes()[:4] == b'\x28\xb5\x2f\xfd'
