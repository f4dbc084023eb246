#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: ory_export
short_description: Export an Ory project (identities, OAuth2 clients, JWKs, permissions, config) into a backup set
version_added: 0.1.0
description:
  - Reads an Ory Network project or a self-hosted Ory Kratos, Hydra and Keto through their admin APIs and writes
    encrypted payloads into an open backup set (see M(idp.recovery.backup_set)), under O(prefix).
  - C(resources/) holds the API answers as they came (identity pages, OAuth2 client pages, relation tuple pages,
    JWK sets, identity schemas, the project and its OPL). C(restore/) holds import-ready files in the formats the
    stock Ory CLI accepts (C(ory import identities), C(ory import oauth2-client), C(ory import jwk),
    C(ory create relationships)), stripped to the fields the import decoders accept; M(idp.recovery.ory_import)
    reads them.
  - Identities are listed with their credentials (O(identity_credentials)) so that password hashes, social sign-in
    links, TOTP, lookup secrets, WebAuthn and passkeys survive a restore. Each old identity ID is kept as
    C(external_id) of the import body (an existing C(external_id) is kept instead).
  - On Ory Network the project configuration is read through the console API with the workspace API key, and the
    identity schemas and the permission rules (OPL) are fetched and embedded as C(base64://) so that the restore
    does not depend on storage links that expire.
  - Pages stream straight into the compressor and the encryptor; nothing is written in plaintext and memory stays
    flat whatever the number of identities. The payloads keep a C(.partial-) name until every one is complete, so an
    interrupted export never looks like a good backup; a failed run removes what it wrote.
  - Records counts per kind, a credential-completeness report, warnings, API versions and the duration in the set's
    metadata (never a secret).
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.ory
  - idp.recovery.encryption.ENCRYPT
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Check mode asks each API for one item with the given keys (a connectivity and authorization test) and
        writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A set that already holds a complete Ory export under O(prefix) is left alone (C(changed=false)); open a new
        set for a new export.
options:
  set_dir:
    description:
      - The open backup set to write into (the RV(idp.recovery.backup_set#module:path) of M(idp.recovery.backup_set)).
    type: path
    required: true
  prefix:
    description:
      - The directory inside the set that receives the Ory payloads.
    type: str
    default: ory
  include:
    description:
      - What to export. V(config) is the project configuration on Ory Network and the identity schemas everywhere.
    type: list
    elements: str
    choices: [config, identities, oauth2_clients, jwks, relationships]
    default: [config, identities, oauth2_clients, jwks, relationships]
  identity_credentials:
    description:
      - The credential types listed with each identity (C(include_credential)). A requested type that the API lists
        without its configuration is counted in RV(ory.credentials.withheld) and warned about.
    type: list
    elements: str
    default: [password, oidc, totp, lookup_secret, webauthn, passkey, saml]
  require_password_hashes:
    description:
      - Fail when the API withheld the password hash of an identity (such users could not sign in with their password
        after a restore). Without it, the export records a warning.
      - Only withheld hashes count. Kratos gives every identity whose schema marks a trait as password identifier a
        password credential, also users who never set a password (social sign-in, passkey or code only). That
        credential has identifiers and an empty configuration (C({})) and counts as RV(ory.credentials.without_password).
      - A hash counts as withheld when the identity was listed with C(include_credential=password) and its password
        credential came without any configuration (absent or C(null)); Kratos never stores an empty configuration, so
        this only happens when the API did not honour the request. The export then reads one such identity by its ID
        to tell a list that ignores C(include_credential) (Kratos releases before it was supported on the list) from an
        API that withholds the configuration everywhere (RV(ory.credentials.withheld_cause)).
      - Needs V(password) in O(identity_credentials).
    type: bool
    default: false
  jwk_sets:
    description:
      - JWK set IDs to export besides C(hydra.openid.id-token) and C(hydra.jwt.access-token). Ory has no API that lists
        set names, so any other set must be named here.
    type: list
    elements: str
    default: []
  keto_namespaces:
    description:
      - The Keto namespaces whose relation tuples are exported. Defaults to every namespace C(GET /namespaces) lists.
    type: list
    elements: str
  compression:
    description:
      - The compressor of the payloads.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description:
      - Compression level (zstd 1-19, default 3; gzip 1-9, default 6).
    type: int
  passphrase:
    description:
      - The passphrase of O(encryption=passphrase).
    type: str
  gpg_homedir:
    description:
      - The GnuPG home directory holding the keys of O(encryption=gpg).
    type: path
notes:
  - Needs C(age) or C(gpg) and C(zstd) or C(gzip) on the host that runs the module, as the chosen options require.
  - OAuth2 client secrets cannot be exported (Hydra keeps only their hashes); sessions, consent and tokens are not
    exported at all, so users sign in again after a restore. See the Ory runbook of this collection (C(docs/ory.md)).
seealso:
  - module: idp.recovery.ory_import
  - module: idp.recovery.ory_check
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Open a backup set for the Ory project
  idp.recovery.backup_set:
    root: /var/backups/idp
    service: ory
    kind: ory
  register: ory_set

- name: Export the Ory Network project, encrypted to the recovery key
  idp.recovery.ory_export:
    set_dir: "{{ ory_set.path }}"
    project_url: https://example-slug.projects.oryapis.com
    project_api_key: "{{ vault_ory_project_api_key }}"
    project_id: 7f3d3c16-3b7e-4b9a-9f0a-0a8f7b1c2d3e
    workspace_api_key: "{{ vault_ory_workspace_api_key }}"
    jwk_sets: [app.signing]
    require_password_hashes: true
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Export a self-hosted Ory (no project configuration, no keys)
  idp.recovery.ory_export:
    set_dir: "{{ ory_set.path }}"
    deployment: self_hosted
    kratos_admin_url: http://kratos:4434
    hydra_admin_url: http://hydra:4445
    keto_read_url: http://keto:4466
    recipients_file: /etc/idp-recovery/recipients.txt

- name: Finalize the set
  idp.recovery.backup_set:
    path: "{{ ory_set.path }}"
    state: finalized
'''

RETURN = r'''
ory:
  description: What the export recorded in the set's metadata (no secret).
  returned: success, not in check mode
  type: dict
  contains:
    counts:
      description: Items exported per kind (identities, oauth2_clients, jwk_sets, jwks, relationships, namespaces, identity_schemas).
      type: dict
    credentials:
      description: Credential completeness of the identities (counts of identities, never a secret).
      type: dict
      contains:
        exported:
          description: Per requested credential type, the identities whose credential of that type is in the export.
          type: dict
        identities:
          description: Identities exported.
          type: int
        password_hashes:
          description: Identities with a password hash (exported).
          type: int
        password_migration_hook:
          description: Identities without a hash whose password the password migration webhook checks (exported as such).
          type: int
        without_password:
          description: >-
            Identities that have no password: no password credential, or the empty one (identifiers, C({})) the schema
            extension creates for users who never set a password. Not a loss: they sign in as before.
          type: int
        empty_password_credentials:
          description: The part of RV(ory.credentials.without_password) that carries the empty password credential.
          type: int
        password_hashes_withheld:
          description: >-
            Identities whose password credential came without its configuration although it was asked for: the hash,
            if any, was withheld by the API and those users reset their password after a restore. What
            O(require_password_hashes) checks.
          type: int
        password_hashes_missing:
          description: The same number as RV(ory.credentials.password_hashes_withheld) (the name older sets use).
          type: int
        password_not_requested:
          description: >-
            Identities with a password credential that was not asked for (V(password) left out of
            O(identity_credentials)): whether they have a hash is unknown, and none is exported.
          type: int
        withheld:
          description: Per requested credential type, the identities whose credential of that type came without configuration.
          type: dict
        withheld_cause:
          description: >-
            Null when nothing was withheld; V(list_ignored_include_credential) when the identity list ignored
            C(include_credential) but a read by ID returns the hash; V(api_withholds) when the read by ID withholds it too.
          type: str
        requested:
          description: The credential types asked for (O(identity_credentials)).
          type: list
          elements: str
    warnings:
      description: What a restore cannot bring back or must be told (client secrets, TOTP, JWK set names).
      type: list
      elements: str
    api_versions:
      description: The versions the APIs reported (C(/version)); null when an API does not tell.
      type: dict
    duration_seconds:
      description: Wall time of the export.
      type: float
    requests:
      description: Requests sent, retried, rate limited, and seconds spent waiting on rate limits and backoff.
      type: dict
payloads:
  description: The payload files written, relative to the set.
  returned: changed, not in check mode
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import check_encryption_allowed, encrypt_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import KINDS
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryConnection, ory_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._ory.export import CREDENTIAL_TYPES, OryExporter


def run(module):
    params = dict(module.params)
    params['encryption'] = params['encryption'] or 'age'
    check_encryption_allowed(params['encryption'], params['allow_unencrypted'])
    params['compression'] = (params['compression'], params['compression_level'])
    connection = OryConnection(params)
    result = OryExporter(connection, params, check_mode=module.check_mode).run(params['set_dir'], params['prefix'])
    for warning in (result.get('ory') or {}).get('warnings') or []:
        if result.get('changed'):
            module.warn(warning)
    return result


def main():
    argument_spec = ory_argument_spec()
    argument_spec.update(encrypt_argument_spec())
    argument_spec.update(
        set_dir=dict(type='path', required=True),
        prefix=dict(type='str', default='ory'),
        include=dict(type='list', elements='str', choices=list(KINDS), default=list(KINDS)),
        identity_credentials=dict(type='list', elements='str', default=list(CREDENTIAL_TYPES)),
        require_password_hashes=dict(type='bool', default=False),
        jwk_sets=dict(type='list', elements='str', default=[]),
        keto_namespaces=dict(type='list', elements='str'),
        compression=dict(type='str', choices=['zstd', 'gzip', 'none'], default='zstd'),
        compression_level=dict(type='int'),
        passphrase=dict(type='str', no_log=True),
        gpg_homedir=dict(type='path'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
