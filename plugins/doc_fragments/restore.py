# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # The options every database restore module shares (restore_argument_spec() in module_utils/_postgres/database_restore.py).
    DOCUMENTATION = r'''
options:
  set_dir:
    description:
      - The complete backup set to restore.
      - It is verified first, in check mode too, and refused when it holds a file its manifest does not list, a
        symbolic link, a payload that differs from the SHA-256 and size recorded in its C(metadata.json), a payload
        path in C(metadata.json) that is absolute, holds C(..) or is not listed, or a C(format_version) newer than
        this collection reads. Payloads are read only at paths inside the set that the manifest lists.
    type: path
    required: true
  jobs:
    description:
      - Parallel jobs of C(pg_restore) for custom dumps (1 restores in a single transaction).
    type: int
    default: 2
  tmpdir:
    description:
      - Directory for the temporary decrypted custom dump (inside the database container with O(container)).
        Defaults to C(/tmp) there, to the system temporary directory on this host.
    type: str
  safety_root:
    description:
      - Where the safety set goes (C(SAFETY_ROOT/STAMP)). Defaults to C(SERVICE-pre-restore) beside the
        service directory of O(set_dir).
    type: path
  safety_recipients:
    description:
      - age recipients of the safety set. Defaults to the recipients recorded in O(set_dir) (whoever can read
        the set can read its safety set); with a passphrase set, O(passphrase) is used.
    type: list
    elements: str
'''
