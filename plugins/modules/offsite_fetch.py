#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: offsite_fetch
short_description: Fetch a complete backup set back from an offsite target and verify it
version_added: 0.1.0
description:
  - Copies one complete backup set C(<target>/<service>/<stamp>/) from an rclone remote, an rsync target (local or
    over SSH) or a mounted directory into C(<dest>/<service>/<stamp>/) on this host, for a restore or a drill.
  - Picks the newest complete set of O(service) on the target, or the one of O(stamp). A set without its
    C(MANIFEST.sha256) on the target is incomplete and is refused.
  - Reads the remote manifest first, then downloads every file it lists (payloads and C(metadata.json)), each into a
    temporary file that is checked against the manifest's SHA-256 before it is renamed into place (mode 0600, in
    directories of mode 0700). The manifest is written last, so an interrupted or failed fetch never looks like a
    complete set; a re-run keeps the files that already match and fetches the rest.
  - Finally every checksum of the local copy is verified again.
  - When O(dest) already holds a complete copy whose checksums match, nothing is downloaded (C(changed=false)). A
    complete local copy that does not match loses its manifest first and is fetched again.
  - Transient failures are retried with a growing delay. The offsite copy is only read, never changed.
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
      - Lists the target, reads the remote manifest and reports what would be downloaded (RV(downloaded)); writes
        nothing on this host.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - rclone for O(backend=rclone); rsync (and ssh) for O(backend=rsync).
options:
  service:
    description:
      - The service whose set is fetched (the directory below O(target)). It must be one safe directory name.
    type: str
    required: true
  stamp:
    description:
      - The set to fetch, C(YYYYMMDDTHHMMSSZ). Defaults to the newest complete set of O(service) on the target.
    type: str
  dest:
    description:
      - The local root the set goes to, as C(<dest>/<service>/<stamp>/). Created with mode 0700 when missing.
      - A C(<dest>/<service>) that is a symbolic link is refused; it is never followed.
    type: path
    required: true
notes:
  - The payloads stay encrypted; verify and decrypt them with M(idp.recovery.backup_set) (O(idp.recovery.backup_set#module:state=verified)).
seealso:
  - module: idp.recovery.offsite_upload
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Fetch the newest complete authentik set from the S3 bucket
  idp.recovery.offsite_fetch:
    backend: rclone
    target: offsite:idp-backups/prod
    rclone_remote_type: s3
    rclone_remote_options:
      provider: Minio
      endpoint: https://s3.example.org
      access_key_id: "{{ vault_s3_access_key }}"
      secret_access_key: "{{ vault_s3_secret_key }}"
    service: authentik
    dest: /var/backups/idp-fetched
  register: fetched

- name: Verify it, decrypting every payload
  idp.recovery.backup_set:
    path: "{{ fetched.path }}"
    state: verified
    identity: /etc/idp-recovery/age.key
'''

RETURN = r'''
path:
  description: The local set directory.
  returned: always
  type: str
  sample: /var/backups/idp-fetched/authentik/20261122T030000Z
service:
  description: The service of the set.
  returned: always
  type: str
stamp:
  description: The stamp of the set.
  returned: always
  type: str
  sample: 20261122T030000Z
source:
  description: Where the set was read (never a secret).
  returned: always
  type: str
  sample: offsite:idp-backups/prod/authentik/20261122T030000Z
available:
  description: The stamps of the complete sets of O(service) on the target, oldest first.
  returned: always
  type: list
  elements: str
downloaded:
  description: The files downloaded (or, in check mode, to be downloaded), the manifest last.
  returned: always
  type: list
  elements: str
bytes:
  description: Bytes downloaded.
  returned: always
  type: int
size_bytes:
  description: Total size of the files of the set.
  returned: always
  type: int
files:
  description: The checksum verification of the local copy (path, sha256, size, ok).
  returned: unless in check mode
  type: list
  elements: dict
retries:
  description: The transient failures that were retried, with the delay before each retry.
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import storage_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._storage.transfer import fetch


def run(module):
    return fetch(module.params, module.check_mode, module.warn)


def main():
    argument_spec = storage_argument_spec()
    argument_spec.update(
        service=dict(type='str', required=True),
        stamp=dict(type='str'),
        dest=dict(type='path', required=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
