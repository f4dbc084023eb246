# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, deep_merge, parse_stamp


def _open(tmp_path, service='authentik', stamp='20261122T030000Z'):
    set_dir = str(tmp_path / 'root' / service / stamp)
    assert _backup_set.create(set_dir, service, 'authentik') is True
    return set_dir


def test_create_is_private_and_idempotent(tmp_path):
    set_dir = _open(tmp_path)
    assert oct(os.stat(set_dir).st_mode & 0o777) == oct(0o700)
    assert os.path.isfile(os.path.join(set_dir, '.in-progress'))
    assert _backup_set.create(set_dir) is False


def test_create_refuses_a_foreign_directory(tmp_path):
    foreign = tmp_path / 'data'
    foreign.mkdir()
    (foreign / 'precious').write_text(u'x')
    with pytest.raises(RecoveryError, match='not a backup set'):
        _backup_set.create(str(foreign))


def test_finalize_writes_sha256sum_manifest_last(tmp_path):
    set_dir = _open(tmp_path)
    with open(os.path.join(set_dir, 'db.dump.zst.age'), 'wb') as handle:
        handle.write(b'payload')
    os.mkdir(os.path.join(set_dir, 'files'))
    with open(os.path.join(set_dir, 'files', 'media.tar.zst.age'), 'wb') as handle:
        handle.write(b'media')
    _backup_set.write_fragment(set_dir, 'payload-db', {'payloads': {'db.dump.zst.age': {'encryption': 'age'}},
                                                       'warnings': ['one']})
    _backup_set.write_fragment(set_dir, 'payload-media', {'payloads': {'files/media.tar.zst.age': {'encryption': 'age'}},
                                                          'warnings': ['two']})
    changed, metadata = _backup_set.finalize(set_dir, {'ticket': 'CHG-1'})
    assert changed
    assert metadata['warnings'] == ['one', 'two']
    assert metadata['set']['service'] == 'authentik'
    manifest = open(os.path.join(set_dir, 'MANIFEST.sha256')).read().splitlines()
    expected = hashlib.sha256(b'payload').hexdigest() + '  db.dump.zst.age'
    assert expected in manifest
    assert [line.split('  ')[1] for line in manifest] == ['db.dump.zst.age', 'files/media.tar.zst.age', 'metadata.json']
    assert not os.path.exists(os.path.join(set_dir, '.in-progress'))
    assert not os.path.exists(os.path.join(set_dir, '.metadata.d'))
    for name in ('MANIFEST.sha256', 'metadata.json'):
        assert oct(os.stat(os.path.join(set_dir, name)).st_mode & 0o777) == oct(0o600)
    results, unlisted = _backup_set.verify_checksums(set_dir)
    assert all(item['ok'] for item in results) and unlisted == []


def test_finalize_is_immutable_and_idempotent(tmp_path):
    set_dir = _open(tmp_path)
    open(os.path.join(set_dir, 'p'), 'wb').close()
    _backup_set.finalize(set_dir, {'a': {'b': 1}})
    assert _backup_set.finalize(set_dir, {'a': {'b': 1}})[0] is False
    assert _backup_set.finalize(set_dir)[0] is False
    with pytest.raises(RecoveryError, match='already finalized'):
        _backup_set.finalize(set_dir, {'a': {'b': 2}})


def test_finalize_check_mode_writes_nothing(tmp_path):
    set_dir = _open(tmp_path)
    open(os.path.join(set_dir, 'p'), 'wb').close()
    changed, _metadata = _backup_set.finalize(set_dir, check_mode=True)
    assert changed and not _backup_set.is_complete(set_dir)


@pytest.mark.parametrize('leftover', ['.p.partial-abc', 'sub/.x.partial-1'])
def test_finalize_refuses_leftovers_of_an_interrupted_write(tmp_path, leftover):
    set_dir = _open(tmp_path)
    path = os.path.join(set_dir, leftover)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    open(path, 'wb').close()
    with pytest.raises(RecoveryError, match='interrupted'):
        _backup_set.finalize(set_dir)
    assert not _backup_set.is_complete(set_dir)


def test_finalize_refuses_missing_payload_and_reserved_keys(tmp_path):
    set_dir = _open(tmp_path)
    _backup_set.write_fragment(set_dir, 'x', {'payloads': {'gone.age': {}}})
    with pytest.raises(RecoveryError, match='missing'):
        _backup_set.finalize(set_dir)
    with pytest.raises(RecoveryError, match='reserved'):
        _backup_set.build_metadata(set_dir, {'payloads': {}})


def test_finalize_refuses_symlinks(tmp_path):
    set_dir = _open(tmp_path)
    os.symlink('/etc/passwd', os.path.join(set_dir, 'evil'))
    with pytest.raises(RecoveryError, match='regular file'):
        _backup_set.finalize(set_dir)


@pytest.mark.parametrize('line', [
    'deadbeef  short',
    '%s  ../escape' % ('0' * 64),
    '%s  /abs' % ('0' * 64),
    '%s  a//b' % ('0' * 64),
])
def test_manifest_parser_refuses(tmp_path, line):
    set_dir = str(tmp_path)
    with open(os.path.join(set_dir, 'MANIFEST.sha256'), 'w') as handle:
        handle.write(line + '\n')
    with pytest.raises(RecoveryError):
        _backup_set.read_manifest(set_dir)


def test_verify_reports_mismatch_missing_and_unlisted(tmp_path):
    set_dir = _open(tmp_path)
    for name in ('a', 'b'):
        with open(os.path.join(set_dir, name), 'wb') as handle:
            handle.write(name.encode() * 100)
    _backup_set.finalize(set_dir)
    with open(os.path.join(set_dir, 'a'), 'r+b') as handle:
        handle.seek(50)
        handle.write(b'X')
    os.unlink(os.path.join(set_dir, 'b'))
    open(os.path.join(set_dir, 'planted'), 'wb').close()
    results, unlisted = _backup_set.verify_checksums(set_dir)
    by_path = dict((item['path'], item) for item in results)
    assert 'checksum mismatch' in by_path['a']['error']
    assert 'missing' in by_path['b']['error']
    assert by_path['metadata.json']['ok']
    assert unlisted == ['planted']


def test_list_sets_and_latest(tmp_path):
    root = tmp_path / 'root'
    for service, stamp, finish in (('authentik', '20261120T000000Z', True), ('authentik', '20261121T000000Z', True),
                                   ('authentik', '20261122T000000Z', False), ('ory', '20261119T000000Z', True)):
        set_dir = _open(tmp_path, service, stamp)
        open(os.path.join(set_dir, 'p'), 'wb').close()
        if finish:
            _backup_set.finalize(set_dir)
    (root / 'authentik' / 'not-a-stamp').mkdir()
    now = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.timezone.utc)
    sets = _backup_set.list_sets(str(root), now=now)
    assert [s['stamp'] for s in sets] == ['20261119T000000Z', '20261120T000000Z', '20261121T000000Z', '20261122T000000Z']
    assert [s['complete'] for s in sets] == [True, True, True, False]
    assert sets[-1]['in_progress'] is True
    assert sets[0]['age_seconds'] == 3 * 86400 + 12 * 3600
    assert [s['service'] for s in _backup_set.list_sets(str(root), 'ory')] == ['ory']


def test_remove_refuses_what_is_not_a_set(tmp_path):
    foreign = tmp_path / 'home'
    foreign.mkdir()
    (foreign / 'file').write_text(u'x')
    with pytest.raises(RecoveryError, match='does not look like a backup set'):
        _backup_set.remove(str(foreign))
    assert (foreign / 'file').exists()
    set_dir = _open(tmp_path)
    assert _backup_set.remove(set_dir) is True
    assert _backup_set.remove(set_dir) is False


def test_find_set_dir(tmp_path):
    set_dir = _open(tmp_path)
    assert _backup_set.find_set_dir(os.path.join(set_dir, 'p.age')) == set_dir
    assert _backup_set.find_set_dir(os.path.join(set_dir, 'sub', 'p.age')) == set_dir
    assert _backup_set.find_set_dir(str(tmp_path / 'elsewhere' / 'p.age')) is None


def test_deep_merge_and_stamps():
    merged = deep_merge({'a': {'x': 1}, 'l': [1]}, {'a': {'y': 2}, 'l': [2], 's': 'v'})
    assert merged == {'a': {'x': 1, 'y': 2}, 'l': [1, 2], 's': 'v'}
    assert parse_stamp('20261122T030000Z').hour == 3
    assert parse_stamp('latest') is None
    assert json.loads(json.dumps(merged)) == merged


def test_finalize_interrupted_before_the_manifest_runs_again_from_the_fragments(tmp_path, monkeypatch):
    set_dir = _open(tmp_path)
    with open(os.path.join(set_dir, 'db.age'), 'wb') as handle:
        handle.write(b'payload')
    _backup_set.write_fragment(set_dir, 'payload-db', {'payloads': {'db.age': {'encryption': 'age'}}})

    def crash(*_args, **_kwargs):
        raise RecoveryError('killed while hashing')

    monkeypatch.setattr(_backup_set, 'manifest_text', crash)
    with pytest.raises(RecoveryError, match='killed'):
        _backup_set.finalize(set_dir)
    monkeypatch.undo()
    assert os.path.isfile(os.path.join(set_dir, 'metadata.json')) and not _backup_set.is_complete(set_dir)
    _changed, metadata = _backup_set.finalize(set_dir)
    assert list(metadata['payloads']) == ['db.age']
    assert [line.split('  ')[1] for line in open(os.path.join(set_dir, 'MANIFEST.sha256'))] == ['db.age\n', 'metadata.json\n']
