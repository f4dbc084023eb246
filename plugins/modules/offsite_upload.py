#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: offsite_upload
short_description: Copy a complete backup set to an offsite target and prove the copy
version_added: 0.1.0
description:
  - Copies one complete backup set C(<root>/<service>/<stamp>/) to C(<target>/<service>/<stamp>/) on an rclone remote,
    an rsync target (local or over SSH) or a mounted directory.
  - Only complete sets are copied (with C(MANIFEST.sha256)), and only the files the manifest lists. A set with an
    unencrypted payload (C(encryption=none) in its C(metadata.json)) is refused unless O(allow_unencrypted=true).
  - The payloads and C(metadata.json) go first, then every copy is verified, and only then C(MANIFEST.sha256) is
    written, so an interrupted or failed upload never looks like a complete set on the target. A re-run completes it.
  - Verification compares the remote copy with the local set. V(auto) uses the remote's own hashes where it has
    them (SHA-256 against the manifest; MD5 or SHA-1 against the local file, read in the same pass that checks it
    against the manifest), C(rsync --checksum) for rsync targets, and reads the file back where there is no hash.
    V(download) always reads every file back and compares its SHA-256 with the manifest (rclone targets; the rsync
    backend always uses C(rsync --checksum); a local target is always read back).
  - When the target already holds a copy whose manifest and files verify, nothing is written (C(changed=false)).
    When a file of such a copy is damaged, its manifest is removed first, the file is copied again and verified,
    and the manifest is written again; RV(repaired) names the files.
  - Transient failures (connection refused or reset, timeouts, server errors) are retried with a growing delay. The
    local set is only read, never changed; a failure names the file and the reason.
  - With O(state=verified), nothing is written; the module fails when the remote copy is missing, incomplete or does
    not verify, and names the file.
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
      - Reports what would be uploaded (RV(uploaded)) without writing. When the target already holds the set, its
        copy is verified (read only) to tell whether anything would change.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - rclone for O(backend=rclone); rsync (and ssh) for O(backend=rsync), on the host that holds the set.
options:
  path:
    description:
      - The local set directory, C(<root>/<service>/<YYYYMMDDTHHMMSSZ>). Its last two path components name the
        set on the target.
    type: path
    required: true
  state:
    description:
      - V(present) makes the target hold a verified copy of the set.
      - V(verified) only checks the copy on the target, and fails naming the first file that does not verify.
    type: str
    choices: [present, verified]
    default: present
  verify:
    description:
      - How copies are verified; see the description.
    type: str
    choices: [auto, download]
    default: auto
  allow_unencrypted:
    description:
      - Copy a set even though some of its payloads are not encrypted.
    type: bool
    default: false
  force:
    description:
      - Replace a set on the target whose manifest differs from the local one (normally a sign that two different
        sets were given the same name). Without it, such a set is left alone and the module fails.
    type: bool
    default: false
seealso:
  - module: idp.recovery.backup_retention
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Copy the newest set to S3 (credentials from the vault, passed to rclone through its environment)
  idp.recovery.offsite_upload:
    path: "{{ backup.path }}"
    backend: rclone
    target: offsite:idp-backups/prod
    rclone_remote_type: s3
    rclone_remote_options:
      provider: AWS
      region: eu-central-1
      access_key_id: "{{ vault_offsite_access_key }}"
      secret_access_key: "{{ vault_offsite_secret_key }}"

- name: Copy a set with an rclone remote from a config file
  idp.recovery.offsite_upload:
    path: /var/backups/idp/authentik/20261122T030000Z
    backend: rclone
    target: b2offsite:idp-backups
    rclone_config: /etc/idp-recovery/rclone.conf

- name: Copy a set to a backup host with rsync over SSH
  idp.recovery.offsite_upload:
    path: "{{ backup.path }}"
    backend: rsync
    target: /srv/backups/idp
    ssh_host: backup.example.org
    ssh_user: idpbackup
    ssh_private_key: /etc/idp-recovery/offsite_ed25519
    ssh_known_hosts: /etc/idp-recovery/known_hosts

- name: Copy a set to a mounted NFS share
  idp.recovery.offsite_upload:
    path: "{{ backup.path }}"
    backend: local
    target: /mnt/offsite/idp

- name: Check the offsite copy (read only) and read every file back
  idp.recovery.offsite_upload:
    path: "{{ backup.path }}"
    state: verified
    verify: download
    backend: rclone
    target: offsite:idp-backups/prod
    rclone_config: /etc/idp-recovery/rclone.conf
'''

RETURN = r'''
remote:
  description: Where the set lives on the target (no secrets).
  returned: always
  type: str
  sample: offsite:idp-backups/prod/authentik/20261122T030000Z
service:
  description: The service (the set's parent directory name).
  returned: always
  type: str
stamp:
  description: The set's stamp.
  returned: always
  type: str
uploaded:
  description:
    - Files copied to the target, the manifest last. In check mode, the files that would be copied.
  returned: O(state=present)
  type: list
  elements: str
repaired:
  description: Files of an existing copy that did not verify and were copied again.
  returned: O(state=present)
  type: list
  elements: str
bytes:
  description: Bytes copied (or, in check mode, that would be copied).
  returned: O(state=present)
  type: int
seconds:
  description: Time spent copying, verification excluded.
  returned: O(state=present)
  type: float
bytes_per_second:
  description: RV(bytes) divided by RV(seconds).
  returned: O(state=present)
  type: int
verification:
  description: The verification of the copy; empty when nothing was verified (check mode without a copy).
  returned: always
  type: dict
  contains:
    mode:
      description: The O(verify) mode.
      type: str
    methods:
      description: How files were verified, for example V(remote md5), V(remote sha256), V(rsync --checksum),
        V(read back (sha256)).
      type: list
      elements: str
    seconds:
      description: Time spent verifying.
      type: float
    ok:
      description: Whether every file verified.
      type: bool
    files:
      description: One entry per file of the manifest.
      type: list
      elements: dict
      contains:
        path:
          description: The file, relative to the set.
          type: str
        size:
          description: Size in bytes.
          type: int
        sha256:
          description: The checksum from the manifest.
          type: str
        ok:
          description: Whether the remote copy verified.
          type: bool
        method:
          description: How it was verified.
          type: str
        error:
          description: What did not match.
          type: str
retries:
  description: The transient failures that were retried, with the delay before each retry.
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import storage_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._storage.transfer import VERIFY_MODES, upload


def run(module):
    return upload(module.params, module.check_mode, module.warn)


def main():
    argument_spec = storage_argument_spec()
    argument_spec.update(
        path=dict(type='path', required=True),
        state=dict(type='str', choices=['present', 'verified'], default='present'),
        verify=dict(type='str', choices=list(VERIFY_MODES), default='auto'),
        allow_unencrypted=dict(type='bool', default=False),
        force=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
