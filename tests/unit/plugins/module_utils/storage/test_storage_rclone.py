# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

from ansible_collections.idp.recovery.plugins.module_utils._storage import rclone
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import is_permanent


def test_rclone_log_classification():
    refused = json.dumps({'level': 'error', 'msg': 'operation error S3: ListObjectsV2, https response error StatusCode: 403, '
                          'api error SignatureDoesNotMatch: The request signature we calculated does not match'})
    entries = rclone._parse_json_log(refused + '\nnot json\n')
    assert entries[1] == {'level': '', 'msg': 'not json'}
    assert is_permanent(entries[0]['msg'])
    assert rclone._short_rclone_message(entries[0]['msg']).startswith('api error SignatureDoesNotMatch')
    refused_conn = 'Put "http://x/": dial tcp 127.0.0.1:9: connect: connection refused'
    assert not is_permanent(refused_conn)
    assert rclone._short_rclone_message(refused_conn) == 'dial tcp 127.0.0.1:9: connect: connection refused'
