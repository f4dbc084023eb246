# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._postgres.dump import SnapshotDump, check_snapshot_id
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError


@pytest.mark.parametrize('snapshot', ['00000003-0000001B-1', '00000004-00000002-1', '0000000A-000F4240-12'])
def test_exported_snapshot_ids_are_accepted(snapshot):
    assert check_snapshot_id(snapshot) == snapshot


@pytest.mark.parametrize('snapshot', [
    '',
    '00000003',                         # no dash
    '-',
    '00000003-0000001b-1',              # PostgreSQL writes upper-case hexadecimal digits
    " 00000003-0000001B-1",
    "00000003-0000001B-1'; DROP TABLE x; --",
    '00000003-0000001B-1\n',
    '0' * 60 + '-1234',                 # longer than any identifier
    None,
    3,
])
def test_anything_else_is_refused_with_what_to_give(snapshot):
    with pytest.raises(RecoveryError) as caught:
        check_snapshot_id(snapshot)
    assert 'is not a snapshot identifier' in caught.value.msg
    assert 'pg_export_snapshot()' in caught.value.msg


def test_a_given_snapshot_is_checked_before_anything_connects():
    with pytest.raises(RecoveryError):
        SnapshotDump(None, 'custom', snapshot='not a snapshot')
    dump = SnapshotDump(None, 'custom', snapshot='00000003-0000001B-1')
    assert dump.given == '00000003-0000001B-1'
    assert dump.source == '00000003-0000001B-1'
    own = SnapshotDump(None, 'custom')
    assert own.given is None and own.source is None
