# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Listing sets (backup_set_info), removing sets and the immutability of a finalized set."""

from __future__ import annotations

import os
import re

import pytest

from recovery_support import listing, random_file


def _ok(result):
    assert not result.get('failed'), result
    return result


@pytest.fixture(scope='module')
def backup_root(tmp_path_factory, module_runner, keys):
    """Two services with complete, open and bare sets, and things that are not sets."""
    base = tmp_path_factory.mktemp('root')
    root = base / 'backups'
    dump = random_file(base / 'small.dump', 2048)

    def complete(service, stamp, kind, payload=None):
        path = root / service / stamp
        _ok(module_runner('backup_set', path=path, kind=kind))
        if payload:
            _ok(module_runner('encrypted_archive', src=dump, dest=path / payload, recipients=[keys.age_recipient]))
        _ok(module_runner('backup_set', path=path, state='finalized'))
        return path

    complete('authentik', '20260101T030000Z', 'authentik')
    complete('authentik', '20260102T030000Z', 'authentik', payload='authentik.dump.zst.age')
    _ok(module_runner('backup_set', path=root / 'authentik' / '20260103T030000Z', kind='authentik'))
    complete('ory', '20260101T150000Z', 'ory')
    complete('ory', '20260102T150000Z', 'ory', payload='identities.json.zst.age')
    _ok(module_runner('backup_set', path=root / 'ory' / '20260104T030000Z', kind='ory'))
    (root / 'ory' / '20260105T030000Z').mkdir(mode=0o700)   # bare stamp directory: incomplete
    # not sets
    (root / 'authentik' / 'latest').mkdir()
    (root / 'authentik' / '20260106T030000Z.tmp').mkdir()
    (root / 'authentik' / 'notes.txt').write_text('not a set\n')
    (root / 'authentik' / '20260107T030000Z').write_text('a file with a stamp name\n')
    (root / '.trash' / '20260108T030000Z').mkdir(parents=True)
    (root / 'README').write_text('backups live here\n')
    return root


def test_backup_set_info_lists_sets(run_module, backup_root):
    info = _ok(run_module('backup_set_info', root=backup_root))
    assert not info['changed']
    listed = [(item['service'], item['stamp'], item['complete']) for item in info['sets']]
    assert listed == [
        ('authentik', '20260101T030000Z', True),
        ('ory', '20260101T150000Z', True),
        ('authentik', '20260102T030000Z', True),
        ('ory', '20260102T150000Z', True),
        ('authentik', '20260103T030000Z', False),
        ('ory', '20260104T030000Z', False),
        ('ory', '20260105T030000Z', False),
    ]
    assert info['latest_complete']['path'] == str(backup_root / 'ory' / '20260102T150000Z')
    assert info['latest_complete']['payloads'] == ['identities.json.zst.age']
    assert info['latest_complete']['kind'] == 'ory'
    assert {service: item['stamp'] for service, item in info['latest_complete_by_service'].items()} == {
        'authentik': '20260102T030000Z', 'ory': '20260102T150000Z'}
    assert info['incomplete'] == [str(backup_root / 'authentik' / '20260103T030000Z'),
                                  str(backup_root / 'ory' / '20260104T030000Z'),
                                  str(backup_root / 'ory' / '20260105T030000Z')]
    by_stamp = {(item['service'], item['stamp']): item for item in info['sets']}
    assert by_stamp[('authentik', '20260103T030000Z')]['in_progress'] is True
    assert by_stamp[('ory', '20260105T030000Z')]['in_progress'] is False
    assert by_stamp[('authentik', '20260102T030000Z')]['timestamp'] == '2026-01-02T03:00:00Z'
    for item in info['sets']:
        assert re.match(r'^\d{8}T\d{6}Z$', item['stamp'])
        assert isinstance(item['age_seconds'], int)
    assert by_stamp[('authentik', '20260102T030000Z')]['files'] == 3
    assert by_stamp[('authentik', '20260102T030000Z')]['size_bytes'] == sum(
        os.path.getsize(str(backup_root / 'authentik' / '20260102T030000Z' / name))
        for name in ('MANIFEST.sha256', 'metadata.json', 'authentik.dump.zst.age'))


def test_backup_set_info_for_one_service(run_module, backup_root):
    info = _ok(run_module('backup_set_info', root=backup_root, service='authentik'))
    assert [item['stamp'] for item in info['sets']] == ['20260101T030000Z', '20260102T030000Z', '20260103T030000Z']
    assert info['latest_complete']['path'] == str(backup_root / 'authentik' / '20260102T030000Z')
    assert list(info['latest_complete_by_service']) == ['authentik']


def test_backup_set_info_without_complete_sets(tmp_path, run_module):
    root = tmp_path / 'backups'
    _ok(run_module('backup_set', path=root / 'kotauth' / '20260101T030000Z'))
    info = _ok(run_module('backup_set_info', root=root))
    assert info['latest_complete'] == {} and info['latest_complete_by_service'] == {}
    assert info['incomplete'] == [str(root / 'kotauth' / '20260101T030000Z')]
    missing = run_module('backup_set_info', root=tmp_path / 'nowhere')
    assert missing.get('failed') and 'does not exist' in missing['msg'], missing


def test_backup_set_opened_under_a_root(tmp_path, run_module):
    root = tmp_path / 'backups'
    opened = _ok(run_module('backup_set', root=root, service='authentik', kind='authentik'))
    assert opened['changed']
    path = opened['path']
    assert os.path.dirname(path) == str(root / 'authentik')
    assert re.match(r'^\d{8}T\d{6}Z$', os.path.basename(path))
    assert os.path.isfile(os.path.join(path, '.in-progress'))
    info = _ok(run_module('backup_set_info', root=root))
    assert info['incomplete'] == [path]


def test_absent_refuses_a_directory_that_is_not_a_set(tmp_path, run_module):
    precious = tmp_path / 'backups' / 'authentik' / '20260101T030000Z'
    precious.mkdir(parents=True)
    random_file(precious / 'customer-data.bin', 1024)
    (precious / 'notes.txt').write_text('keep me\n')
    before = listing(precious)
    for check_mode in (True, False):
        result = run_module('backup_set', check_mode=check_mode, path=precious, state='absent')
        assert result.get('failed'), result
        assert 'does not look like a backup set' in result['msg'], result['msg']
        assert listing(precious) == before
    # a file, and a symbolic link to a real set, are refused too
    real = tmp_path / 'backups' / 'authentik' / '20260102T030000Z'
    _ok(run_module('backup_set', path=real))
    link = tmp_path / 'backups' / 'authentik' / '20260103T030000Z'
    os.symlink(str(real), str(link))
    for check_mode in (True, False):
        for target in (precious / 'notes.txt', link):
            result = run_module('backup_set', check_mode=check_mode, path=target, state='absent')
            assert result.get('failed') and 'refusing' in result['msg'], result
    assert (real / '.in-progress').is_file()
    # and opening a set there is refused as well
    result = run_module('backup_set', path=precious)
    assert result.get('failed') and 'not a backup set' in result['msg'], result
    assert listing(precious) == before


@pytest.mark.parametrize('finalized', [True, False], ids=['complete', 'open'])
def test_absent_removes_a_real_set(tmp_path, run_module, keys, finalized):
    path = tmp_path / 'backups' / 'authentik' / '20260101T030000Z'
    _ok(run_module('backup_set', path=path))
    _ok(run_module('encrypted_archive', src=random_file(tmp_path / 'small.dump', 1024),
                   dest=path / 'small.dump.zst.age', recipients=[keys.age_recipient]))
    if finalized:
        _ok(run_module('backup_set', path=path, state='finalized'))
    result = _ok(run_module('backup_set', path=path, state='absent'))
    assert result['changed'] and not result['complete']
    assert not os.path.lexists(str(path))
    assert os.path.isdir(str(path.parent)), 'the service directory went with the set'


def test_finalized_set_is_immutable(tmp_path, run_module):
    path = tmp_path / 'backups' / 'ory' / '20260101T030000Z'
    _ok(run_module('backup_set', path=path, kind='ory'))
    metadata = {'ticket': 'CHG-1', 'counts': {'identities': 3, 'clients': 2}}
    _ok(run_module('backup_set', path=path, state='finalized', metadata=metadata))
    files = {name: (path / name).read_bytes() for name in os.listdir(str(path))}

    same = _ok(run_module('backup_set', path=path, state='finalized', metadata=metadata))
    assert not same['changed']
    assert same['metadata']['counts'] == {'identities': 3, 'clients': 2}
    subset = _ok(run_module('backup_set', path=path, state='finalized', metadata={'counts': {'clients': 2}}))
    assert not subset['changed']
    for different in ({'ticket': 'CHG-2'}, {'counts': {'identities': 4}}, {'extra': True}):
        for check_mode in (True, False):
            result = run_module('backup_set', check_mode=check_mode, path=path, state='finalized', metadata=different)
            assert result.get('failed'), result
            assert 'already finalized' in result['msg'], result['msg']
    assert {name: (path / name).read_bytes() for name in os.listdir(str(path))} == files


def test_reserved_metadata_keys_are_refused(tmp_path, run_module):
    path = tmp_path / 'backups' / 'ory' / '20260101T030000Z'
    _ok(run_module('backup_set', path=path))
    for key in ('format_version', 'payloads', 'set'):
        result = run_module('backup_set', path=path, state='finalized', metadata={key: 1})
        assert result.get('failed') and 'reserved' in result['msg'], result
    assert listing(path) == ['.in-progress']
