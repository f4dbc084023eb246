# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._storage import rsync


def test_rsync_listing_lines():
    line = '-rw-------          4,096 2026/11/22 03:00:00 authentik/20261122T030000Z/na\\#303\\#251me'
    match = rsync._LIST_LINE.match(line)
    assert match and match.group(1) == '-' and match.group(2) == '4,096'
    assert rsync._rsync_unescape(match.group(3)) == u'authentik/20261122T030000Z/na\u00e9me'
    assert rsync._rsync_unescape('a\\#040b') == 'a b'
    assert rsync._rsync_pattern('20261122T030000Z') == '20261122T030000Z'
    assert rsync._rsync_pattern('we*ird') == 'we\\*ird'
