#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: kotauth_import
short_description: Import a Kotauth tenant archive from a backup set as a new tenant
version_added: 0.1.0
description:
  - Restores one tenant archive (C(bkp1)) written by M(idp.recovery.kotauth_export) into Kotauth through its admin
    API (C(POST /admin/api/v1/tenants/import), a JSON body). Kotauth always creates a new tenant, in one transaction,
    with mail disabled, social login providers disabled and every user's MFA off.
  - "Before anything is sent: every checksum of the set is verified, the archive is decrypted (the set's encryption,
    then the envelope with O(kotauth_passphrase)), its SHA-256 compared with the one recorded at export, and the
    version gate applied - the archive's schema version equal to the target's passes, older passes with a warning,
    newer is refused. A tenant slug that already exists on the target is refused unless O(new_slug) names a free one."
  - The target's schema version is O(target_schema_version) when given, else read from the instance through the
    export API (an export of O(schema_probe_slug) under a random, thrown-away passphrase; Kotauth records it in its
    audit log). Whether a slug exists is read the same way (404 means it does not). The API key therefore needs the
    C(tenants:export) scope as well as C(tenants:import).
  - Returns the new tenant's metadata and RV(post_restore_actions), derived from the archive's redacted fields
    (client and social login secrets to re-enter, SMTP to re-enable, MFA to enrol again, sessions gone).
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.kotauth
  - idp.recovery.encryption.DECRYPT
  - idp.recovery.attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode is the plan - every check above runs (set, archive, version gate, slug) and RV(plan) and
        RV(post_restore_actions) are returned; nothing is imported.
  diff_mode:
    support: none
options:
  set_dir:
    description:
      - A complete backup set holding Kotauth tenant archives.
      - Verified before anything is sent, in check mode too. A set holding a file its manifest does not list, a symbolic
        link, a payload that differs from the SHA-256 and size recorded in its C(metadata.json), a path in
        C(metadata.json) outside the set or not listed, or a C(format_version) newer than this collection reads is
        refused.
    type: path
    required: true
  slug:
    description:
      - The tenant of the set to import. Needed when the set holds more than one.
    type: str
  new_slug:
    description:
      - The slug of the tenant to create. Defaults to O(slug); an existing tenant is never replaced.
    type: str
  target_schema_version:
    description:
      - The target Kotauth's schema version (its Flyway head). Read from the instance when not given.
    type: int
  schema_probe_slug:
    description:
      - The tenant whose export tells the target's schema version, when O(target_schema_version) is not given.
    type: str
    default: master
  request_format:
    description:
      - How the archive is sent. V(json) sends C({"envelope", "passphrase", "newSlug"}), the body Kotauth's admin API
        reads.
      - V(multipart) (a form upload with C(file), C(passphrase), C(newSlug)) is deprecated and will be removed in
        release 1.0.0. Kotauth's admin API refuses it with HTTP 400 C(Invalid request body); only its admin console
        takes a form upload, behind a browser session.
    type: str
    choices: [multipart, json]
    default: json
notes:
  - The set's encryption needs O(identity), O(identity_content) or O(passphrase) (age or OpenPGP), unless the archive
    was exported with O(idp.recovery.kotauth_export#module:encryption=none).
seealso:
  - module: idp.recovery.kotauth_export
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Plan the restore of tenant acme (check mode)
  idp.recovery.kotauth_import:
    set_dir: /var/backups/idp/kotauth/20260112T030000Z
    url: https://auth.example.org
    api_key: "{{ vault_kotauth_admin_api_key }}"
    kotauth_passphrase: "{{ vault_kotauth_backup_passphrase }}"
    identity: /etc/idp-recovery/age.key
    slug: acme
    new_slug: acme-restored
  check_mode: true
  register: plan

- name: Import it
  idp.recovery.kotauth_import:
    set_dir: /var/backups/idp/kotauth/20260112T030000Z
    url: https://auth.example.org
    api_key: "{{ vault_kotauth_admin_api_key }}"
    kotauth_passphrase: "{{ vault_kotauth_backup_passphrase }}"
    identity: /etc/idp-recovery/age.key
    slug: acme
    new_slug: acme-restored
  register: restored

- name: Show what is left to do by hand
  ansible.builtin.debug:
    msg: "{{ restored.post_restore_actions | map(attribute='action') | list }}"
'''

RETURN = r'''
plan:
  description: What the import does (or would do) - the tenant, the new slug, the schema decision, the archive's counts.
  returned: always
  type: dict
  sample:
    slug: acme
    new_slug: acme-restored
    schema: {archive: 42, target: 42, decision: same, ok: true, message: null, target_source: instance}
    counts: {users: 120, applications: 4, roles: 6, groups: 3, claim_mappers: 1, social_providers: 1,
             resource_servers: 0, signing_keys: 0, audit_events: 0}
    kotauth_version: 1.4.2
    exported_at: "2026-01-12T03:00:00Z"
    redacted_fields: [applications.clientSecret, sessions]
    included_extras: []
tenant:
  description: The tenant Kotauth created (slug, schema versions, the counts Kotauth reports, the Kotauth URL).
  returned: changed, not in check mode
  type: dict
  sample:
    slug: acme-restored
    schema_version: 42
    export_schema_version: 42
    summary: {users: 120, applications: 4, roles: 6, groups: 3, claimMappers: 1, socialProviders: 1,
              signingKeys: 0, auditEvents: 0}
    url: https://auth.example.org
post_restore_actions:
  description: What an operator must do after the import, one entry per redacted field of the archive.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: A stable name of the action (client_secrets, social_login_secrets, smtp, mfa_reenrolment, sessions, ...).
      type: str
    redacted:
      description: The redacted field of the archive's manifest.
      type: str
    action:
      description: What to do.
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import decrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.client import kotauth_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.import_ import import_tenant
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module


def run(module):
    return import_tenant(module.params, check_mode=module.check_mode, warn=module.warn,
                         on_deprecated=lambda msg: module.deprecate(msg, version='1.0.0', collection_name='idp.recovery'))


def main():
    argument_spec = kotauth_argument_spec()
    argument_spec.update(decrypt_argument_spec())
    argument_spec.update(
        set_dir=dict(type='path', required=True),
        slug=dict(type='str'),
        new_slug=dict(type='str'),
        target_schema_version=dict(type='int'),
        schema_probe_slug=dict(type='str', default='master'),
        request_format=dict(type='str', choices=['multipart', 'json'], default='json'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
