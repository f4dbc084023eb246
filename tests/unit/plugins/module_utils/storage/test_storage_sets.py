# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage.sets import list_remote_sets, remove_remote_set


def test_list_remote_sets_ignores_foreign_names(tmp_path, local_storage):
    target = tmp_path / 'target'
    for rel in ('authentik/20261122T030000Z/MANIFEST.sha256', 'authentik/20261121T030000Z/x',
                'authentik/latest/MANIFEST.sha256', '.hidden/20261122T030000Z/MANIFEST.sha256', 'README'):
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')
    (target / 'ory' / '20261120T030000Z').mkdir(parents=True)
    storage = local_storage()
    found = [(item['service'], item['stamp'], item['complete']) for item in list_remote_sets(storage)]
    assert found == [('authentik', '20261121T030000Z', False), ('authentik', '20261122T030000Z', True),
                     ('ory', '20261120T030000Z', False)]
    only = list_remote_sets(storage, 'ory')
    assert [(item['service'], item['stamp']) for item in only] == [('ory', '20261120T030000Z')]
    with pytest.raises(RecoveryError, match='not a set stamp'):
        remove_remote_set(storage, 'authentik', 'latest')
