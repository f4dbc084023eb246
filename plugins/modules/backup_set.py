#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: backup_set
short_description: Open, finalize, verify or remove a backup set
version_added: 0.1.0
description:
  - A backup set is one directory per run, C(<root>/<service>/<YYYYMMDDTHHMMSSZ>/), holding encrypted payload files,
    C(metadata.json) (plain, no secrets) and C(MANIFEST.sha256). The manifest is written last and atomically; a set
    without it is incomplete and is never restored or counted as a backup.
  - V(present) creates the set directory (mode 0700) with an C(.in-progress) marker. With O(root), the set
    directory is created with an exclusive C(mkdir) under the service's lock file C(<root>/.<service>.lock), so that
    two runs never share a set; when a set of the same second exists already, the next second's stamp is taken.
  - A service name must be one safe directory name (not empty, no C(/), backslash, NUL or control character, not
    starting with C(.)). A backup root that is world-writable without the sticky bit, and a service directory that is
    a symbolic link, are refused.
  - V(finalized) merges the metadata recorded by payload modules and O(metadata) into C(metadata.json), then writes
    C(MANIFEST.sha256) (C(sha256sum -c) format, every other file of the set) last, and removes the marker. It runs
    under the service's lock; of two runs finalizing one set, the second finds it complete (unchanged when its
    O(metadata) is already there, else an error saying the set was finalized already).
  - V(verified) checks every checksum of the manifest and, when O(identity), O(identity_content) or O(passphrase)
    is given, decrypts and decompresses every payload to nowhere (a full read test). It never changes anything.
  - The read test reads each payload once. Its SHA-256 is computed from the very bytes handed to the decryptor, and
    the read test counts only when that SHA-256 matches the manifest (and C(metadata.json)); a payload that differs
    fails with the checksum error alone, whatever its decryption gave. A C(zstd) file payload is decompressed by
    C(zstd -t), which checks every frame and writes nothing.
  - V(verified) fails when the set holds a file the manifest does not list, when anything in the set is a symbolic
    link or special file (a payload, a manifest entry, a directory on the way to one, C(metadata.json) or
    C(MANIFEST.sha256) itself), when a payload's size or SHA-256 differs from what C(metadata.json) recorded for it,
    when a path in C(metadata.json) is absolute, holds C(..) or is not listed, and when the set's C(format_version)
    is newer than this collection reads (the message says which version the set needs). Every restore module runs
    the same checks first. The manifest is not authenticated; see the collection's C(docs/backup-set.md) for what it
    proves and what protects against a rewritten set.
  - V(absent) removes the set. A directory that does not look like a backup set is refused.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.encryption.DECRYPT
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - O(root) with O(service) opens a new time-stamped set on every run, by design.
      - Everything else is idempotent; a finalized set is immutable and its metadata cannot change.
options:
  path:
    description:
      - The set directory. Mutually exclusive with O(root).
    type: path
  root:
    description:
      - With O(state=present), the backup root under which a new set C(<root>/<service>/<UTC stamp>) is created.
        Requires O(service). The created path is returned as RV(path).
    type: path
  service:
    description:
      - The service name recorded in the metadata. Defaults to the name of the set's parent directory.
      - With O(root), the directory C(<root>/<service>) the set goes to. It must be one safe directory name.
    type: str
  kind:
    description:
      - The kind of service, for example V(authentik), V(ory), V(kotauth) or V(postgres), recorded in the metadata.
    type: str
  state:
    description:
      - The wanted state of the set.
    type: str
    choices: [present, finalized, verified, absent]
    default: present
  metadata:
    description:
      - With O(state=finalized), data merged into C(metadata.json). Must not contain secrets.
      - The keys V(format_version), V(set) and V(payloads) are reserved.
    type: dict
    default: {}
  decrypt:
    description:
      - With O(state=verified), whether to decrypt every payload as a full read test. V(auto) does so when a key is
        given (O(identity), O(identity_content) or O(passphrase)); V(always) fails when a payload cannot be decrypted
        for lack of a key.
    type: str
    choices: [auto, always, never]
    default: auto
  kotauth_passphrase:
    description:
      - With O(state=verified), the passphrase of the Kotauth tenant archives (C(bkp1)) in the set, written by
        M(idp.recovery.kotauth_export). Each such payload is then decrypted through the set's own encryption (which
        needs O(identity), O(identity_content) or O(passphrase) unless it was written with O(idp.recovery.kotauth_export#module:encryption=none)),
        its SHA-256 compared with the one recorded at export, and the archive decrypted in memory, which checks its
        AES-GCM tag.
      - A wrong passphrase, an unsupported envelope version, a malformed envelope and an archive altered since
        the export are told apart (RV(files[].reason)).
    type: str
seealso:
  - module: idp.recovery.encrypted_archive
  - module: idp.recovery.backup_set_info
  - module: idp.recovery.kotauth_export
'''

EXAMPLES = r'''
- name: Open a new set for the authentik service
  idp.recovery.backup_set:
    root: /var/backups/idp
    service: authentik
    kind: authentik
  register: backup

- name: Finalize it (manifest written last)
  idp.recovery.backup_set:
    path: "{{ backup.path }}"
    state: finalized
    metadata:
      ticket: CHG-1234

- name: Verify checksums and decrypt every payload to nowhere
  idp.recovery.backup_set:
    path: "{{ backup.path }}"
    state: verified
    identity: /etc/idp-recovery/age.key

- name: Verify a set with Kotauth tenant archives, opening each archive
  idp.recovery.backup_set:
    path: "{{ backup.path }}"
    state: verified
    identity: /etc/idp-recovery/age.key
    kotauth_passphrase: "{{ vault_kotauth_backup_passphrase }}"

- name: Remove a set
  idp.recovery.backup_set:
    path: /var/backups/idp/authentik/20260101T000000Z
    state: absent
'''

RETURN = r'''
path:
  description: The set directory.
  returned: always
  type: str
  sample: /var/backups/idp/authentik/20261122T030000Z
complete:
  description: Whether the set has its manifest.
  returned: always
  type: bool
metadata:
  description: The merged metadata (written to C(metadata.json) unless in check mode).
  returned: O(state=finalized)
  type: dict
files:
  description: Per-file results of the verification.
  returned: O(state=verified)
  type: list
  elements: dict
  contains:
    path:
      description: The file, relative to the set (for a path named in C(metadata.json) that fails the checks, that path).
      type: str
    ok:
      description: Whether every check of this file passed.
      type: bool
    size:
      description: Size in bytes.
      type: int
    sha256:
      description: The checksum recorded in the manifest.
      type: str
    decrypted:
      description: Whether a full read test (decrypt and decompress) passed; null when not attempted.
      type: bool
    plain_bytes:
      description: Bytes after decryption and decompression, for payloads read in full.
      type: int
    error:
      description: What failed.
      type: str
    reason:
      description:
        - Why a read test failed, when it can be told. V(wrong_key) and V(corrupt) for the set's own encryption;
          for Kotauth archives V(wrong_passphrase), V(unsupported_version), V(malformed) or V(altered).
      type: str
    bkp1:
      description: Whether the payload was opened as a Kotauth archive (its AES-GCM tag checked).
      type: bool
unlisted:
  description:
    - Files in the set that the manifest does not list. Any such file fails the verification (the error names it, and
      the failed result carries this list too), so a successful verification returns an empty list.
  returned: O(state=verified)
  type: list
  elements: str
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import decrypt_argument_spec, keys_from_params
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._payload import verify_set


def run(module):
    params = module.params
    state = params['state']
    set_dir = params['path']
    if params['service'] is not None:
        _backup_set.check_service_name(params['service'])
    if params['root']:
        if state != 'present' or not params['service']:
            raise RecoveryError('root is only for state=present, together with service')
        if module.check_mode:
            _backup_set.check_new_set(params['root'], params['service'])
            return {'changed': True, 'path': _backup_set.new_set_path(params['root'], params['service']),
                    'complete': False}
        set_dir = _backup_set.open_new(params['root'], params['service'], params['kind'])
        return {'changed': True, 'path': set_dir, 'complete': False}
    result = {'changed': False, 'path': set_dir}
    if state == 'present':
        if module.check_mode:
            result['changed'] = not (_backup_set.is_complete(set_dir) or os.path.isfile(os.path.join(set_dir, _backup_set.MARKER)))
        else:
            result['changed'] = _backup_set.create(set_dir, params['service'], params['kind'])
    elif state == 'finalized':
        result['changed'], result['metadata'] = _backup_set.finalize(
            set_dir, params['metadata'], params['service'], params['kind'], check_mode=module.check_mode)
    elif state == 'verified':
        result['files'], result['unlisted'] = verify_set(set_dir, keys_from_params(params), params['decrypt'],
                                                         kotauth_passphrase=params['kotauth_passphrase'])
    else:
        result['changed'] = _backup_set.remove(set_dir, check_mode=module.check_mode)
    result['complete'] = _backup_set.is_complete(set_dir)
    return result


def main():
    argument_spec = dict(
        path=dict(type='path'),
        root=dict(type='path'),
        service=dict(type='str'),
        kind=dict(type='str'),
        state=dict(type='str', choices=['present', 'finalized', 'verified', 'absent'], default='present'),
        metadata=dict(type='dict', default={}),
        decrypt=dict(type='str', choices=['auto', 'always', 'never'], default='auto'),
        kotauth_passphrase=dict(type='str', no_log=True),
    )
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=[('path', 'root')], required_one_of=[('path', 'root')])
    run_module(module, run)


if __name__ == '__main__':
    main()
