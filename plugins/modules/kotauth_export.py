#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: kotauth_export
short_description: Export Kotauth tenants as encrypted bkp1 archives into a backup set
version_added: 0.1.0
description:
  - Asks Kotauth's admin API (C(POST /admin/api/v1/tenants/{slug}/export)) for the archive of each tenant of O(slugs)
    and writes it into an open backup set (see M(idp.recovery.backup_set)) as C(kotauth/<slug>.bkp1...), streamed
    from the HTTP answer through the set's compression and encryption to disk.
  - The archive is Kotauth's own C(bkp1) envelope (AES-256-GCM under a key derived from O(kotauth_passphrase));
    the set's encryption (age by default) wraps it once more, so that the set's recovery keys are needed as well.
    With O(encryption=none) and O(allow_unencrypted=true) the payload is Kotauth's archive as it came, protected by
    O(kotauth_passphrase) alone, and Kotauth's own UI or API can import the file directly.
  - Each archive is then decrypted in memory with O(kotauth_passphrase); an archive that does not open fails the
    tenant and is not kept. What is safe to show is recorded in the set's metadata under C(kotauth.tenants.<slug>)
    - export, schema and Kotauth versions, export time, counts, redacted fields, included extras, and the archive's
    SHA-256 - never a secret and never tenant content.
  - One failing tenant fails the task with a message naming it; the archives of the other tenants stay in the set.
    The failed tenant stays recorded as started, so the set cannot be finalized until it is exported.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.kotauth
  - idp.recovery.encryption.ENCRYPT
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Check mode lists the payloads that would be written and sends nothing to Kotauth (an export is logged in
        Kotauth's audit log).
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A tenant the set already holds is left alone unless O(force=true).
options:
  set_dir:
    description:
      - The open backup set to write into (the RV(idp.recovery.backup_set#module:path) of M(idp.recovery.backup_set)).
    type: path
    required: true
  slugs:
    description:
      - The tenants to export, by slug.
    type: list
    elements: str
    required: true
  include_signing_keys:
    description:
      - Ask Kotauth to include the tenants' signing keys (private keys) in the archives. Without them the restored
        tenant signs with new keys.
    type: bool
    default: false
  include_audit_log:
    description:
      - Ask Kotauth to include the tenants' audit logs.
    type: bool
    default: false
  compression:
    description:
      - Compression before the set's encryption (the archive is base64 text and shrinks by about a quarter).
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description:
      - Level for O(compression) (zstd 1-19, default 3; gzip 1-9, default 6).
    type: int
  passphrase:
    description:
      - The passphrase of O(encryption=passphrase) (the set's own encryption, not Kotauth's).
    type: str
  gpg_homedir:
    description:
      - GnuPG home with O(encryption=gpg).
    type: path
  force:
    description:
      - Export a tenant again even when the set already holds it.
    type: bool
    default: false
notes:
  - Kotauth's admin API answers an export with JSON carrying the archive as C(envelope), beside its versions, counts
    and manifest. A raw archive (C(application/octet-stream), what Kotauth's admin console downloads) is read too.
  - Decrypting the archive once holds it and its plaintext in memory for a moment, as Kotauth itself does when it
    builds it; nothing of it is written in plaintext.
seealso:
  - module: idp.recovery.kotauth_import
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Open a backup set for Kotauth
  idp.recovery.backup_set:
    root: /var/backups/idp
    service: kotauth
    kind: kotauth
  register: kotauth_set

- name: Export two tenants, encrypted once more to the recovery key
  idp.recovery.kotauth_export:
    set_dir: "{{ kotauth_set.path }}"
    url: https://auth.example.org
    api_key: "{{ vault_kotauth_admin_api_key }}"
    kotauth_passphrase: "{{ vault_kotauth_backup_passphrase }}"
    slugs: [acme, globex]
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Finalize the set
  idp.recovery.backup_set:
    path: "{{ kotauth_set.path }}"
    state: finalized
'''

RETURN = r'''
set_dir:
  description: The backup set written into.
  returned: always
  type: str
tenants:
  description: Per slug, what was written (or would be, in check mode), or why it failed.
  returned: always
  type: dict
  sample:
    acme:
      changed: true
      payload: kotauth/acme.bkp1.zst.age
      size: 48211
      archive_bytes: 63120
      schema_version: 42
      kotauth_version: 1.4.2
      exported_at: "2026-01-12T03:00:00Z"
      counts: {users: 120, applications: 4, roles: 6, groups: 3, claim_mappers: 1, social_providers: 1,
               resource_servers: 0, signing_keys: 0, audit_events: 0}
      redacted_fields: [applications.clientSecret, socialProviders.clientSecret, tenant.smtpPassword]
      included_extras: []
      seconds: 1.2
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import encrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.client import kotauth_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.export import export_tenants
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def main():
    argument_spec = kotauth_argument_spec()
    argument_spec.update(encrypt_argument_spec())
    argument_spec.update(
        set_dir=dict(type='path', required=True),
        slugs=dict(type='list', elements='str', required=True),
        include_signing_keys=dict(type='bool', default=False),
        include_audit_log=dict(type='bool', default=False),
        compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
        compression_level=dict(type='int'),
        passphrase=dict(type='str', no_log=True),
        gpg_homedir=dict(type='path'),
        force=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, lambda m: export_tenants(m.params, check_mode=m.check_mode))


if __name__ == '__main__':
    main()
