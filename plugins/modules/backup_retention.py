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
  - In a local root, an incomplete set is never removed while its writer is alive - a process holds the set's writer
    lock, or the writer recorded in its C(.in-progress) marker (host, boot, pid and process start time) still runs,
    or anything in the set changed less than O(incomplete_grace) seconds ago. Each service is handled under its lock
    file C(<root>/.<service>.lock), which opening and finalizing a set take too, so that retention and a backup of
    one service never step on each other.
  - A set stamped more than five minutes in the future makes the decision impossible (which set is the newest cannot
    be told), so the module fails, naming the set, and removes nothing.
  - In a local root, a root that is world-writable without the sticky bit is refused, and a service directory that
    is a symbolic link is never followed (refused when named by O(service), else left alone with a warning).
  - A complete set is removed manifest first, so that a removal interrupted half-way never leaves something that
    looks like a complete set.
  - The decision depends only on the stamps, on which sets are complete and, for incomplete local sets, on whether
    their writer is alive, so a second run with the same policy removes nothing more.
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
      - Only consider the sets of this service (one safe directory name). By default every service under O(target) is
        handled, each on its own.
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
  incomplete_grace:
    description:
      - With O(backend=local), an incomplete set in which anything changed less than this many seconds ago is kept
        even when no writer process is found, for the moments between two tasks of one run.
    type: int
    default: 600
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
    alive:
      description: For an incomplete set of a local root, whether a run may still be writing it.
      type: bool
    writer:
      description: For an incomplete set of a local root, why it is considered alive or abandoned.
      type: str
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

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._retention.apply import apply_retention, retention_argument_spec


def main():
    module = AnsibleModule(argument_spec=retention_argument_spec(), supports_check_mode=True)
    run_module(module, lambda module: apply_retention(module.params, module.check_mode, module.warn, module._diff))


if __name__ == '__main__':
    main()
