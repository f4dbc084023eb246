# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Connection to Kotauth's admin API and the archive passphrase.
    DOCUMENTATION = r'''
options:
  url:
    description:
      - The base URL of Kotauth, for example V(https://auth.example.org). The admin backup API lives under
        C(/admin/api/v1/tenants/).
      - Falls back to the environment variable E(KOTAUTH_URL).
    type: str
    required: true
  api_key:
    description:
      - An admin API key of Kotauth's master tenant (C(kauth_...)), with the C(tenants:export) scope (export, and the
        probes of M(idp.recovery.kotauth_import)) and the C(tenants:import) scope (import). A key that does not start
        with C(kauth_) is refused before anything is sent - Kotauth would refuse it too.
      - Sent only in the C(Authorization) header. Falls back to the environment variable E(KOTAUTH_API_KEY).
    type: str
  kotauth_passphrase:
    description:
      - The passphrase of the tenant archives (C(bkp1)), at least 16 characters. Kotauth derives the archive key from
        it with PBKDF2-HMAC-SHA256 and 600,000 iterations.
      - Sent only in request bodies, never on a command line (Kotauth's CLI takes it as an argument, which the
        process list shows - this is why the API is used). Falls back to the environment variable
        E(KOTAUTH_BACKUP_PASSPHRASE).
      - Without it no archive can be read again. Keep it apart from the set's own keys.
    type: str
  validate_certs:
    description:
      - Whether to validate the TLS certificate of O(url).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for one answer of Kotauth (an export of a large tenant takes a while).
    type: int
    default: 300
requirements:
  - cryptography (Python library, on the host that runs the module)
'''
