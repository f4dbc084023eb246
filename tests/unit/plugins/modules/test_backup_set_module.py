# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_set is the one module that decides by its options (``state``, ``root``) which
_backup_set function runs; these tests drive its ``run`` with real directories."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.modules import backup_set


class FakeModule(object):
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = dict(path=None, root=None, service=None, kind=None, state='present', metadata={},
                           decrypt='auto', kotauth_passphrase=None, identity=None, identity_content=None,
                           passphrase=None, gpg_homedir=None)
        self.params.update(params)


def _tree(tmp_path):
    return sorted(os.path.relpath(os.path.join(top, name), str(tmp_path))
                  for top, dirs, files in os.walk(str(tmp_path)) for name in dirs + files)


def test_root_in_check_mode_names_the_set_and_creates_nothing(tmp_path):
    result = backup_set.run(FakeModule(check_mode=True, root=str(tmp_path), service='authentik'))
    assert result['changed'] is True and result['complete'] is False
    assert os.path.dirname(result['path']) == os.path.join(str(tmp_path), 'authentik')
    assert _tree(tmp_path) == []


def test_root_opens_finalizes_and_removes_a_set(tmp_path):
    opened = backup_set.run(FakeModule(root=str(tmp_path), service='authentik', kind='authentik'))
    set_dir = opened['path']
    assert os.path.isfile(os.path.join(set_dir, _backup_set.MARKER))
    with open(os.path.join(set_dir, 'payload.bin'), 'wb') as handle:
        handle.write(b'data')
    finalized = backup_set.run(FakeModule(path=set_dir, state='finalized', metadata={'note': 'x'}))
    assert finalized['changed'] is True and finalized['complete'] is True
    assert finalized['metadata']['note'] == 'x'
    again = backup_set.run(FakeModule(path=set_dir, state='finalized', metadata={'note': 'x'}))
    assert again['changed'] is False
    verified = backup_set.run(FakeModule(path=set_dir, state='verified', decrypt='never'))
    assert [item['ok'] for item in verified['files']] == [True] * len(verified['files'])
    planned = backup_set.run(FakeModule(check_mode=True, path=set_dir, state='absent'))
    assert planned['changed'] is True and os.path.isdir(set_dir)
    removed = backup_set.run(FakeModule(path=set_dir, state='absent'))
    assert removed['changed'] is True and not os.path.exists(set_dir)


@pytest.mark.parametrize('params', [
    dict(state='finalized', service='authentik'),
    dict(state='present'),
])
def test_root_only_opens_a_new_set_of_a_service(tmp_path, params):
    with pytest.raises(RecoveryError, match='root is only for state=present, together with service'):
        backup_set.run(FakeModule(root=str(tmp_path), **params))
    assert _tree(tmp_path) == []


def test_a_bad_service_name_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(RecoveryError):
        backup_set.run(FakeModule(root=str(tmp_path), service='../escape'))
    assert _tree(tmp_path) == []
