# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Bad service names, sets stamped in the future, a world-writable root and a service directory
that is a symbolic link planted to point elsewhere."""

from __future__ import annotations

import json
import os
import time

import pytest

from recovery_support import listing, random_file

BAD_NAMES = ['../../x', '../escaped', '/abs', '/tmp', 'a/b', '.', '..', '', '.hidden', 'nul\x00byte', 'back\\slash',
             'new\nline']
FUTURE = '20991231T000000Z'
HOUR = 3600


def _ok(result):
    assert not result.get('failed'), result
    return result


def _refused(result, fragment):
    assert result.get('failed'), result
    assert fragment in result['msg'], result['msg']
    return result


def _complete(run_module, root, service, stamp):
    path = root / service / stamp
    _ok(run_module('backup_set', path=path, kind='authentik'))
    random_file(path / 'payload.bin', 1024)
    _ok(run_module('backup_set', path=path, state='finalized'))
    return path


# ---------------------------------------------------------------------------------------------
# names

@pytest.mark.parametrize('name', BAD_NAMES, ids=repr)
def test_a_service_name_that_is_not_one_path_component_is_refused(tmp_path, run_module, name):
    base = tmp_path / 'base'
    root = base / 'deep' / 'backups'
    root.mkdir(parents=True, mode=0o700)
    before = listing(tmp_path)
    for check_mode in (True, False):
        _refused(run_module('backup_set', check_mode=check_mode, root=root, service=name), 'not a valid service name')
        assert listing(tmp_path) == before, 'a set was created for service %r' % name
    _refused(run_module('backup_set', path=root / 'authentik' / '20261122T030000Z', service=name),
             'not a valid service name')
    _refused(run_module('backup_set_info', root=root, service=name), 'not a valid service name')
    if name:
        _refused(run_module('backup_retention', backend='local', target=str(root), service=name, keep_last=1),
                 'not a valid service name')
        _refused(run_module('offsite_fetch', backend='local', target=str(root), service=name, dest=str(base / 'fetched')),
                 'not a valid service name')
    assert listing(tmp_path) == before


def test_a_set_dir_below_an_unsafe_directory_name_is_refused(tmp_path, run_module):
    root = tmp_path / 'backups'
    root.mkdir(mode=0o700)
    _refused(run_module('backup_set', path=root / '.hidden' / '20261122T030000Z'), 'not a valid service directory name')
    assert listing(root) == []


# ---------------------------------------------------------------------------------------------
# clocks

def test_a_future_set_never_costs_the_real_newest_set(tmp_path, run_module):
    root = tmp_path / 'backups'
    real = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() - HOUR))
    older = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() - 25 * HOUR))
    for stamp in (older, real, FUTURE):
        _complete(run_module, root, 'authentik', stamp)
    before = listing(root)
    args = {'backend': 'local', 'target': str(root), 'service': 'authentik', 'keep_last': 1}
    for check_mode in (True, False):
        result = _refused(run_module('backup_retention', check_mode=check_mode, **args), 'stamped in the future')
        assert FUTURE in result['msg'] and 'nothing was removed' in result['msg']
        assert listing(root) == before
    assert (root / 'authentik' / real / 'MANIFEST.sha256').is_file()
    # without the future set, the policy applies as usual
    _ok(run_module('backup_set', path=root / 'authentik' / FUTURE, state='absent'))
    applied = _ok(run_module('backup_retention', **args))
    assert applied['removed'] == ['authentik/%s' % older] and applied['kept'] == ['authentik/%s' % real]


def test_a_set_a_few_seconds_ahead_is_within_the_clock_skew(tmp_path, run_module):
    root = tmp_path / 'backups'
    ahead = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() + 120))
    older = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(time.time() - HOUR))
    for stamp in (older, ahead):
        _complete(run_module, root, 'authentik', stamp)
    applied = _ok(run_module('backup_retention', backend='local', target=str(root), keep_last=1))
    assert applied['removed'] == ['authentik/%s' % older]


def test_a_drill_of_a_future_set_fails(tmp_path, run_module):
    started = time.time()
    services = [{
        'name': 'authentik', 'kind': 'authentik', 'set': str(tmp_path / 'drill' / 'authentik' / FUTURE),
        'stamp': FUTURE,
        'steps': [{'name': 'fetch', 'seconds': 2}, {'name': 'restore', 'seconds': 30}],
        'checks': [{'name': 'row counts', 'kind': 'row_counts', 'ok': True, 'detail': 'equal'}],
    }]
    result = run_module('drill_report', dest_dir=tmp_path / 'reports', started=started, rto_target='4h',
                        rpo_target='24h', services=services)
    assert result.get('failed') and result['result'] == 'failed', result
    service = result['services'][0]
    assert service['result'] == 'failed' and service['rpo_ok'] is False
    assert service['rpo_seconds'] < 0
    assert any('after the drill started' in reason and 'negative' in reason for reason in result['reasons']), result


# ---------------------------------------------------------------------------------------------
# roots and links

def test_a_world_writable_root_is_refused(tmp_path, run_module):
    root = tmp_path / 'backups'
    root.mkdir()
    _complete(run_module, root, 'authentik', '20261120T030000Z')
    _complete(run_module, root, 'authentik', '20261121T030000Z')
    os.chmod(str(root), 0o777)
    before = listing(root)
    for check_mode in (True, False):
        _refused(run_module('backup_set', check_mode=check_mode, root=root, service='authentik'), 'world-writable')
        _refused(run_module('backup_retention', check_mode=check_mode, backend='local', target=str(root), keep_last=1),
                 'world-writable')
    _refused(run_module('backup_set', path=root / 'authentik' / '20261122T030000Z'), 'world-writable')
    assert listing(root) == before
    # with the sticky bit (as /tmp has), other users cannot replace what is there: accepted
    os.chmod(str(root), 0o1777)
    _ok(run_module('backup_set', root=root, service='authentik'))
    os.chmod(str(root), 0o700)


def test_a_service_directory_planted_as_a_link_is_never_followed(tmp_path, run_module):
    root = tmp_path / 'backups'
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / 'elsewhere'
    # what the link points at: another user's directory that looks like a service with sets
    _complete(run_module, elsewhere, 'victim', '20261120T030000Z')
    _complete(run_module, elsewhere, 'victim', '20261121T030000Z')
    random_file(elsewhere / 'victim' / 'precious.bin', 512)
    os.symlink(str(elsewhere / 'victim'), str(root / 'authentik'))
    before = listing(elsewhere)

    for check_mode in (True, False):
        _refused(run_module('backup_set', check_mode=check_mode, root=root, service='authentik'), 'symbolic link')
        _refused(run_module('backup_retention', check_mode=check_mode, backend='local', target=str(root),
                            service='authentik', keep_last=1), 'symbolic link')
    _refused(run_module('backup_set', path=root / 'authentik' / '20261122T030000Z'), 'symbolic link')
    _refused(run_module('backup_set', path=root / 'authentik' / '20261120T030000Z', state='absent'), 'symbolic link')
    _refused(run_module('backup_set_info', root=root, service='authentik'), 'symbolic link')

    # over the whole root, the link is left alone with a warning, and nothing is listed through it
    everything = _ok(run_module('backup_retention', backend='local', target=str(root), keep_last=1))
    assert everything['removed'] == [] and everything['sets'] == []
    assert 'is a symbolic link; retention never follows it' in json.dumps(everything.get('warnings', [])), everything
    info = _ok(run_module('backup_set_info', root=root))
    assert info['sets'] == []
    assert listing(elsewhere) == before, 'something was written or removed through the link'


def test_offsite_fetch_refuses_a_linked_service_directory_in_dest(tmp_path, run_module):
    target = tmp_path / 'offsite'
    _complete(run_module, target, 'authentik', '20261121T030000Z')
    dest = tmp_path / 'restore'
    dest.mkdir(mode=0o700)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(dest / 'authentik'))
    _refused(run_module('offsite_fetch', backend='local', target=str(target), service='authentik', dest=str(dest)),
             'symbolic link')
    assert listing(elsewhere) == []
