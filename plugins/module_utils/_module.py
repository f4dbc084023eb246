# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the one way every module runs its backend."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError


def run_module(module, action):
    """Call ``action(module)`` -> result dict; turn RecoveryError into fail_json."""
    try:
        result = action(module)
    except RecoveryError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)
