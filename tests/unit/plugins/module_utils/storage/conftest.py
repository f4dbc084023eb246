# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

"""Fixtures of the storage tests: storage options, a local target, finalized sets."""

import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import storage_argument_spec, storage_from_params


@pytest.fixture
def storage_params():
    """The storage options as a module would pass them: the defaults, updated with the given ones."""
    def make(**extra):
        params = dict((name, spec.get('default')) for name, spec in storage_argument_spec().items())
        params.update(extra)
        return params
    return make


@pytest.fixture
def local_storage(tmp_path, storage_params):
    """A local storage target in <tmp_path>/target."""
    def make(**extra):
        target = tmp_path / 'target'
        target.mkdir(exist_ok=True)
        return storage_from_params(storage_params(backend='local', target=str(target), **extra))
    return make


@pytest.fixture
def finalized_set():
    """A complete set below root with one payload."""
    def make(root, service='authentik', stamp='20261122T030000Z', encryption='age'):
        set_dir = str(root / service / stamp)
        _backup_set.create(set_dir, service, 'authentik')
        with open(os.path.join(set_dir, 'payload.bin'), 'wb') as handle:
            handle.write(os.urandom(4096))
        _backup_set.write_fragment(set_dir, 'payload.bin', {'payloads': {'payload.bin': {'encryption': encryption}}})
        _backup_set.finalize(set_dir)
        return set_dir
    return make
