#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: backup_retention
short_description: Decide which backup sets to keep, and remove the others, locally or on an offsite target
version_added: 0.1.0
description:
  - Lists the sets C(<target>/<service>/<stamp>/) of a local backup root (O(backend=local)) or of an offsite target
    (rclone, rsync), applies the retention policy to each service separately, and removes the sets it does not keep.
  - The policy works like C(restic forget). O(keep_last) keeps the newest N sets. O(keep_daily), O(keep_weekly) and
    O(keep_monthly) walk the sets from the newest to the oldest and keep the newest set of each of the last N days,
    ISO weeks or months that have a set, in UTC as the stamps are. The rules add up; O(min_keep) then keeps more of
    the newest sets until at least that many are kept.
  - Only complete sets (with C(MANIFEST.sha256)) count. The newest complete set is always kept, whatever the policy.
    Incomplete sets older than the newest complete set are removed; newer ones are kept, as a run may still be
    writing them. A policy without any keep rule is refused.
  - A complete set is removed manifest first, so that a removal interrupted half-way never leaves something that
    looks like a complete set.
  - The decision depends only on the stamps and on which sets are complete, so a second run with the same policy
    removes nothing.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.storage
attributes:
  check_mode:
    support: full
    details:
      - Lists exactly the sets that would be removed (RV(removed)) and removes nothing.
  diff_mode:
    support: full
    details:
      - The diff lists the sets (C(service/stamp)) before and after.
  idempotent:
    support: full
requirements:
  - rclone for O(backend=rclone); rsync (and ssh) for O(backend=rsync).
options:
  service:
    description:
      - Only consider the sets of this service. By default every service under O(target) is handled, each on its own.
    type: str
  keep_last:
    description:
      - Keep the newest N complete sets.
    type: int
    default: 0
  keep_daily:
    description:
      - Keep the newest complete set of each of the last N days that have one.
    type: int
    default: 0
  keep_weekly:
    description:
      - Keep the newest complete set of each of the last N ISO weeks that have one.
    type: int
    default: 0
  keep_monthly:
    description:
      - Keep the newest complete set of each of the last N months that have one.
    type: int
    default: 0
  min_keep:
    description:
      - Whatever the rules say, keep at least this many complete sets (the newest ones) per service.
    type: int
    default: 1
seealso:
  - module: idp.recovery.offsite_upload
  - module: idp.recovery.backup_set_info
'''

EXAMPLES = r'''
- name: Keep 14 daily, 8 weekly and 12 monthly sets in the local backup root
  idp.recovery.backup_retention:
    backend: local
    target: /var/backups/idp
    keep_daily: 14
    keep_weekly: 8
    keep_monthly: 12

- name: Show what would go on the S3 target (check mode with diff)
  idp.recovery.backup_retention:
    backend: rclone
    target: offsite:idp-backups/prod
    rclone_config: /etc/idp-recovery/rclone.conf
    service: authentik
    keep_last: 14
    min_keep: 3
  check_mode: true
  diff: true
  register: retention

- name: Apply the same policy on an rsync target over SSH
  idp.recovery.backup_retention:
    backend: rsync
    target: /srv/backups/idp
    ssh_host: backup.example.org
    ssh_user: idpbackup
    ssh_private_key: /etc/idp-recovery/offsite_ed25519
    ssh_known_hosts: /etc/idp-recovery/known_hosts
    keep_last: 14
'''

RETURN = r'''
target:
  description: The target (no secrets).
  returned: always
  type: str
policy:
  description: The policy applied.
  returned: always
  type: dict
sets:
  description: Every set found, newest first within each service, with the decision.
  returned: always
  type: list
  elements: dict
  contains:
    service:
      description: The service.
      type: str
    stamp:
      description: The set's stamp.
      type: str
    complete:
      description: Whether the set has its manifest on the target.
      type: bool
    keep:
      description: Whether the set is kept.
      type: bool
    reasons:
      description: Why it is kept (the rules that keep it) or removed.
      type: list
      elements: str
    files:
      description: Number of files of the set.
      type: int
    size_bytes:
      description: Total size of the set's files.
      type: int
removed:
  description: The sets removed (in check mode, that would be removed), as C(service/stamp), oldest first.
  returned: always
  type: list
  elements: str
kept:
  description: The sets kept, as C(service/stamp).
  returned: always
  type: list
  elements: str
retries:
  description: The transient failures that were retried.
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _retention, _storage
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def _name(item):
    return '%s/%s' % (item['service'], item['stamp'])


def run(module):
    params = module.params
    policy = _retention.Policy(params['keep_last'], params['keep_daily'], params['keep_weekly'], params['keep_monthly'],
                               params['min_keep'])
    storage = _storage.storage_from_params(params)
    try:
        found = _storage.list_remote_sets(storage, params['service'])
        by_service = {}
        for item in found:
            by_service.setdefault(item['service'], []).append(item)
        decided = []
        for service in sorted(by_service):
            decided.extend(_retention.decide(by_service[service], policy))
        removals = sorted((item for item in decided if not item['keep']), key=lambda item: (item['stamp'], item['service']))
        if not module.check_mode:
            for item in removals:
                _storage.remove_remote_set(storage, item['service'], item['stamp'])
    finally:
        storage.cleanup()
    result = {
        'changed': bool(removals),
        'target': storage.describe(),
        'policy': policy.as_dict(),
        'sets': decided,
        'removed': [_name(item) for item in removals],
        'kept': [_name(item) for item in decided if item['keep']],
        'retries': storage.retried,
    }
    if module._diff:
        before = sorted(_name(item) for item in decided)
        after = sorted(_name(item) for item in decided if item['keep'])
        result['diff'] = {
            'before_header': storage.describe(),
            'after_header': storage.describe(),
            'before': ''.join(line + '\n' for line in before),
            'after': ''.join(line + '\n' for line in after),
        }
    return result


def main():
    argument_spec = _storage.storage_argument_spec()
    argument_spec.update(
        service=dict(type='str'),
        keep_last=dict(type='int', default=0),
        keep_daily=dict(type='int', default=0),
        keep_weekly=dict(type='int', default=0),
        keep_monthly=dict(type='int', default=0),
        min_keep=dict(type='int', default=1),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
