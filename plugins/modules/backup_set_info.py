#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: backup_set_info
short_description: List the backup sets under a backup root
version_added: 0.1.0
description:
  - Lists every set C(<root>/<service>/<YYYYMMDDTHHMMSSZ>/) with whether it is complete (has its manifest), its age,
    size and service, so that retention and drills can pick the latest complete set.
  - Cheap by design; it reads no payload. Use M(idp.recovery.backup_set) with O(idp.recovery.backup_set#module:state=verified)
    to check checksums and decrypt.
  - With O(stamp), O(path) or O(select=latest_complete) it also selects one set, the way M(idp.recovery.offsite_fetch)
    selects one on an offsite target, and refuses a missing or incomplete set (a set without its manifest is never
    restored), listing the complete sets in the error's C(available).
  - Complete means the set has its manifest, not that it verifies. A complete set that holds a file its manifest does not
    list, a symbolic link, a payload that differs from its recorded SHA-256, or a C(format_version) newer than this
    collection reads is listed here and refused by verification and by every restore.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.INFO_MODULE
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  idempotent:
    support: full
options:
  root:
    description:
      - The backup root.
      - Required unless O(path) is given; then it defaults to the directory two levels above O(path).
    type: path
  service:
    description:
      - Only list the sets of this service (one safe directory name; a service directory that is a symbolic link is
        refused). Without it, service directories and sets that are symbolic links are never followed or listed.
      - Required with O(stamp) and O(select=latest_complete) unless O(path) is given; then it defaults to the name of
        the directory above O(path).
    type: str
  stamp:
    description:
      - Select the set of O(service) with this stamp (C(YYYYMMDDTHHMMSSZ)) and return it as RV(selected); a missing or
        incomplete set fails the module.
    type: str
  path:
    description:
      - Select this set directory, C(<root>/<service>/<stamp>) (a symbolic link to it is never followed), and return it
        as RV(selected); a missing or incomplete set fails the module.
    type: path
  select:
    description:
      - V(latest_complete) selects the newest complete set of O(service) when neither O(stamp) nor O(path) is given,
        and fails the module when there is none.
      - V(none) selects a set only by O(stamp) or O(path).
    type: str
    choices: [none, latest_complete]
    default: none
seealso:
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Find the latest complete authentik set
  idp.recovery.backup_set_info:
    root: /var/backups/idp
    service: authentik
  register: found

- name: Show it
  ansible.builtin.debug:
    msg: "{{ found.latest_complete.path | default('no complete set') }}"
'''

RETURN = r'''
sets:
  description: Every set, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The set directory.
      type: str
    service:
      description: The service (the set's parent directory name).
      type: str
    stamp:
      description: The set's directory name.
      type: str
      sample: 20261122T030000Z
    timestamp:
      description: The stamp as ISO 8601 UTC.
      type: str
    age_seconds:
      description: Seconds since the stamp.
      type: int
    complete:
      description: Whether the set has its manifest.
      type: bool
    in_progress:
      description: Whether the set is incomplete and still carries the in-progress marker (open, or interrupted).
      type: bool
    size_bytes:
      description: Total size of the set's files.
      type: int
    files:
      description: Number of files in the set.
      type: int
    kind:
      description: The service kind from the metadata of a complete set.
      type: str
    payloads:
      description: The payload files recorded in the metadata of a complete set.
      type: list
      elements: str
latest_complete:
  description: The newest complete set, or an empty dict when there is none.
  returned: always
  type: dict
latest_complete_by_service:
  description: The newest complete set of each service.
  returned: always
  type: dict
incomplete:
  description: Paths of the incomplete sets.
  returned: always
  type: list
  elements: str
selected:
  description:
    - The set selected by O(stamp), O(path) or O(select=latest_complete), with the keys of an item of RV(sets).
    - When the selection fails, the error holds C(available) (the stamps of the complete sets), C(wanted) (the set
      asked for) and C(incomplete) (whether that set exists but has no manifest).
  returned: when O(stamp), O(path) or O(select=latest_complete) is given
  type: dict
  sample:
    path: /var/backups/idp/authentik/20261122T030000Z
    service: authentik
    stamp: 20261122T030000Z
    complete: true
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def run(module):
    params = module.params
    path, root, service = params['path'], params['root'], params['service']
    if path:
        # the listing names sets by <root>/<service>/<stamp>: compare absolute paths
        path = os.path.abspath(path)
        root = os.path.abspath(root or os.path.dirname(os.path.dirname(path)))
        service = service or os.path.basename(os.path.dirname(path))
    sets = _backup_set.list_sets(root, service)
    latest = {}
    for item in sets:
        if item['complete']:
            latest[item['service']] = item
    complete = [item for item in sets if item['complete']]
    result = {
        'changed': False,
        'sets': sets,
        'latest_complete': complete[-1] if complete else {},
        'latest_complete_by_service': latest,
        'incomplete': [item['path'] for item in sets if not item['complete']],
    }
    if path or params['stamp'] or params['select'] == 'latest_complete':
        result['selected'] = _backup_set.choose_set(sets, service, root, stamp=params['stamp'], path=path)[0]
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path'),
            service=dict(type='str'),
            stamp=dict(type='str'),
            path=dict(type='path'),
            select=dict(type='str', choices=['none', 'latest_complete'], default='none'),
        ),
        required_one_of=[('root', 'path')],
        mutually_exclusive=[('stamp', 'path')],
        required_if=[('select', 'latest_complete', ('service', 'path'), True)],
        required_by={'stamp': 'service'},
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
