# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import target as pgbackrest_target


def test_target_args():
    args, text = pgbackrest_target.target_args('time', '2026-03-01T09:14:00.5+01:00')
    assert text == '2026-03-01 08:14:00.500000+00'
    assert args == ['--type=time', '--target=2026-03-01 08:14:00.500000+00', '--target-action=promote']
    assert pgbackrest_target.target_args('time', '2026-03-01 09:14:00')[1] == '2026-03-01 09:14:00.000000+00'
    assert pgbackrest_target.target_args('name', 'before-upgrade')[0] == ['--type=name', '--target=before-upgrade',
                                                                          '--target-action=promote']
    assert pgbackrest_target.target_args('latest', backup_set='20260301-020304F')[0] == [
        '--set=20260301-020304F', '--type=default']
    assert pgbackrest_target.target_args('lsn', '0/3000028', exclusive=True)[0] == [
        '--type=lsn', '--target=0/3000028', '--target-exclusive', '--target-action=promote']
    assert pgbackrest_target.target_args('immediate')[0] == ['--type=immediate', '--target-action=promote']


@pytest.mark.parametrize('kind, target, extra, message', [
    ('time', None, {}, 'needs a target'),
    ('time', 'yesterday', {}, 'not an ISO-8601 time'),
    ('name', 'x' * 64, {}, 'at most 63 bytes'),
    ('lsn', '3000028', {}, 'not of the form'),
    ('xid', 'abc', {}, 'not a number'),
    ('latest', 'now', {}, 'takes no target'),
    ('latest', None, {'exclusive': True}, 'exclusive applies'),
    ('name', 'point', {'exclusive': True}, 'exclusive applies'),
    ('latest', None, {'backup_set': '2026-03-01'}, 'not a pgBackRest backup label'),
    ('sometime', None, {}, 'target_type must be one of'),
])
def test_target_args_rejects(kind, target, extra, message):
    with pytest.raises(RecoveryError, match=message):
        pgbackrest_target.target_args(kind, target, **extra)
