# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import stat

from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import remap_tuple, write_relationships_file

OLD_A = '3f1c0d3a-0f55-4d9e-8a4c-0e2b7a9d6c11'
OLD_B = '9b2e6f10-1d2c-4e3f-8a9b-7c6d5e4f3a21'
MISSING = 'c0ffee00-0000-4000-8000-000000000001'
NEW = {OLD_A: 'a-new', OLD_B: 'b-new'}


def lookup(value):
    if value in NEW:
        return NEW[value]
    if value == MISSING:
        return None  # an identity of the bundle that is not in the target
    return False


def test_remap_every_place_an_identity_can_stand():
    assert remap_tuple({'namespace': 'Document', 'object': 'doc-1', 'relation': 'owners', 'subject_id': OLD_A},
                       lookup) == {'namespace': 'Document', 'object': 'doc-1', 'relation': 'owners', 'subject_id': 'a-new'}
    assert remap_tuple({'namespace': 'User', 'object': OLD_A, 'relation': 'delegates', 'subject_id': OLD_B}, lookup) == {
        'namespace': 'User', 'object': 'a-new', 'relation': 'delegates', 'subject_id': 'b-new'}
    item = {'namespace': 'Document', 'object': 'doc-2', 'relation': 'viewers',
            'subject_set': {'namespace': 'User', 'object': OLD_B, 'relation': 'delegates'}}
    assert remap_tuple(item, lookup) == {'namespace': 'Document', 'object': 'doc-2', 'relation': 'viewers',
                                         'subject_set': {'namespace': 'User', 'object': 'b-new', 'relation': 'delegates'}}
    assert item['subject_set']['object'] == OLD_B  # the input is left alone


def test_remap_keeps_other_values_and_refuses_missing_identities():
    group = {'namespace': 'Document', 'object': 'shared-1', 'relation': 'viewers',
             'subject_set': {'namespace': 'Group', 'object': 'group-1', 'relation': 'members'}}
    assert remap_tuple(group, lookup) == group
    assert remap_tuple({'namespace': 'Document', 'object': 'd', 'relation': 'viewers', 'subject_id': 'service:billing'},
                       lookup)['subject_id'] == 'service:billing'
    assert remap_tuple({'namespace': 'Document', 'object': 'd', 'relation': 'viewers', 'subject_id': MISSING}, lookup) is None
    assert remap_tuple({'namespace': 'Document', 'object': 'd', 'relation': 'viewers',
                        'subject_set': {'namespace': 'User', 'object': MISSING, 'relation': 'delegates'}}, lookup) is None


def test_relationships_file(tmp_path):
    items = [{'namespace': 'Document', 'object': 'doc-1', 'relation': 'owners', 'subject_id': OLD_A},
             {'namespace': 'Document', 'object': 'doc-1', 'relation': 'owners', 'subject_id': MISSING},
             {'namespace': 'Group', 'object': 'g', 'relation': 'members',
              'subject_set': {'namespace': 'Group', 'object': 'h', 'relation': 'members'}}]
    path = str(tmp_path / 'relationships.json')

    def stream(handle):
        for item in items:
            handle(item)
    assert write_relationships_file(path, stream, lookup) == (2, 1)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as handle:
        assert json.load(handle) == [dict(items[0], subject_id='a-new'), items[2]]
    assert os.listdir(str(tmp_path)) == ['relationships.json']
