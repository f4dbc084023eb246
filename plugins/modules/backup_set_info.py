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
    type: path
    required: true
  service:
    description:
      - Only list the sets of this service (one safe directory name; a service directory that is a symbolic link is
        refused). Without it, service directories and sets that are symbolic links are never followed or listed.
    type: str
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
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def run(module):
    sets = _backup_set.list_sets(module.params['root'], module.params['service'])
    latest = {}
    for item in sets:
        if item['complete']:
            latest[item['service']] = item
    complete = [item for item in sets if item['complete']]
    return {
        'changed': False,
        'sets': sets,
        'latest_complete': complete[-1] if complete else {},
        'latest_complete_by_service': latest,
        'incomplete': [item['path'] for item in sets if not item['complete']],
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(root=dict(type='path', required=True), service=dict(type='str')),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == '__main__':
    main()
