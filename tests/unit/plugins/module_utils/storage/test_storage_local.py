# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import storage_from_params


def test_local_target_must_exist(tmp_path, storage_params):
    with pytest.raises(RecoveryError, match='mounted'):
        storage_from_params(storage_params(backend='local', target=str(tmp_path / 'nowhere')))
