#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: ory_import
short_description: Restore an Ory export from a backup set into a clean Ory project
version_added: 0.1.0
description:
  - Reads the Ory export written by M(idp.recovery.ory_export) from a complete backup set and restores it into the
    target project, in this order - the project configuration (Ory Network; identity schemas and the OPL embedded as
    C(base64://)), identities, OAuth2 clients, JWK sets, relation tuples. The relation tuples are written to Keto
    while the identities are still being written to Kratos (each service has its own rate-limit bucket) - a tuple as
    soon as every identity it names has its new ID, one that names none at once; at most 20,000 tuples (some 10 MB)
    wait for an identity, beyond that the reading of the tuples pauses. So a tuple never names an identity that is not
    in the target. OAuth2 clients and JWK sets follow the identities, so a failed identity import creates no client;
    a failure of the identities or of the tuples stops both.
  - Before the first write, checks the set's manifest, decrypts and parses every payload it will use, compares the
    counts with the ones recorded at export time, and reads what the target already holds. A malformed or truncated
    bundle is refused with nothing written.
  - Identities go through the batch endpoint (C(PATCH /admin/identities), at most 1000 a request, strictly one
    request at a time, as Ory refuses concurrent identity writes). They get new IDs; each keeps its old ID in
    C(external_id), and an old-to-new ID map is written to O(state_dir).
  - OAuth2 client secrets cannot be exported. Each restored client that authenticates with a shared secret
    (C(token_endpoint_auth_method) V(client_secret_basic), V(client_secret_post) or V(client_secret_jwt)) gets its
    secret from O(client_secrets), or a new one that is written encrypted to O(state_dir) (to the O(recipients)) and
    returned only with O(return_secrets=true). A V(private_key_jwt) client keeps its keys (C(jwks) or C(jwks_uri))
    and a public client (V(none)) has no credential; neither gets a secret, and neither needs recipients. The
    rotation report (no secret) tells which client got what.
  - Version gate - before any payload is decrypted, the Kratos, Hydra and Keto versions the export recorded are compared
    with the target's (C(GET /version); on Ory Network the project's). An export from a newer release line
    (major.minor) than the target's, or a version missing on either side, is refused unless O(force_version=true);
    an export from an older line is imported with a warning.
  - Relation tuples get the new identity ID wherever they name an identity - the subject ID, the object, the object of
    a subject set - and RV(relationships_file) holds them so for a restore with the stock CLI.
  - Resumable and idempotent - a run after a partial failure skips identities by C(external_id), clients by
    C(client_id), JWK sets with the same keys and tuples already present, and reports C(changed=false) when nothing
    is left to do.
  - The backup set itself is never modified.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.ory
  - idp.recovery.encryption.DECRYPT
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Check mode is the plan, RV(plan) - what would be created, what already exists, what conflicts. It reads the
        bundle and the target and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  set_dir:
    description:
      - The complete backup set holding the Ory export.
      - Verified before anything is sent, in check mode too. A set holding a file its manifest does not list, a symbolic
        link, a payload that differs from the SHA-256 and size recorded in its C(metadata.json), a path in
        C(metadata.json) outside the set or not listed, or a C(format_version) newer than this collection reads is
        refused.
    type: path
    required: true
  prefix:
    description:
      - The directory of the Ory payloads inside the set.
    type: str
    default: ory
  include:
    description:
      - What to restore. V(config) applies only to Ory Network.
    type: list
    elements: str
    choices: [config, identities, oauth2_clients, jwks, relationships]
    default: [config, identities, oauth2_clients, jwks, relationships]
  state_dir:
    description:
      - Where the ID map (C(id-map.json), C(id-map.jsonl) while running), the rotation report, the import report and
        the encrypted new client secrets are written (directory mode 0700, files 0600).
      - C(id-map.jsonl) gets the new IDs of each identity batch as it lands and is flushed to disk once, when the
        identities are done; a run after a failure finds the imported identities in the target by C(external_id),
        not in this file.
      - Defaults to C(<set_dir>.ory-import), beside the set.
    type: path
  client_secrets:
    description:
      - Secrets of the OAuth2 clients, by C(client_id), for example from a vault. Clients not named here get a new
        secret.
    type: dict
  return_secrets:
    description:
      - Return newly generated client secrets in RV(client_secrets). Use C(no_log) on the task.
    type: bool
    default: false
  encryption:
    description:
      - How the file of newly generated client secrets is encrypted (see O(recipients)). Without it, new secrets
        need O(return_secrets=true).
    type: str
    choices: [age, gpg]
  recipients:
    description:
      - Recipients (age or OpenPGP fingerprints) of the file of newly generated client secrets.
    type: list
    elements: str
    default: []
  recipients_file:
    description:
      - A file of age recipients for the file of newly generated client secrets.
    type: path
  replace_jwk_sets:
    description:
      - Replace a JWK set of the target that holds other keys (a fresh Hydra makes its own default sets) with the
        exported one. Without it, such a set is a conflict.
    type: bool
    default: true
  fail_on_conflict:
    description:
      - Refuse to write anything when the plan finds conflicts (an identifier already used by another identity of the
        target, a namespace the target does not know). Without it, conflicting items are left out and reported.
    type: bool
    default: true
  refuse_endpoints:
    description:
      - API URLs the target must not be (the live project, when importing into a staging project for a drill). Each
        URL of the target (O(project_url), O(kratos_admin_url), ...) is resolved and compared by address and port
        with each of these, so that another spelling of the same server (a name and its address, C(localhost) and
        C(127.0.0.1)) is refused too. A match fails the task before any request is sent.
    type: list
    elements: str
    default: []
  batch_size:
    description:
      - Identities per batch request (at most 1000).
    type: int
    default: 1000
  force_version:
    description:
      - Import even when the version gate refuses - the export comes from a newer Kratos, Hydra or Keto release line
        (major.minor) than the target runs, the export recorded no version of a service, or the target's version
        could not be read. Each overridden refusal becomes a warning.
      - Only for a reason you can state, for example a target about to be upgraded to the export's line.
    type: bool
    default: false
notes:
  - Needs C(age) or C(gpg) and C(zstd) or C(gzip) on the host that runs the module, as the payloads require.
  - Only services whose data is restored are gated - Kratos for the configuration and identities, Hydra for OAuth2
    clients and JWK sets, Keto for relation tuples.
  - Sessions, consent and tokens are not restored; users sign in again. Imported TOTP secrets may not validate
    (ory/kratos#4561); the export records how many identities have TOTP.
seealso:
  - module: idp.recovery.ory_export
  - module: idp.recovery.ory_check
'''

EXAMPLES = r'''
- name: Plan the restore into the new project (writes nothing)
  idp.recovery.ory_import:
    set_dir: /var/backups/idp/ory/20261122T030000Z
    project_url: https://new-slug.projects.oryapis.com
    project_api_key: "{{ vault_ory_new_project_api_key }}"
    project_id: 2a9b7c1e-5d4f-4e3a-8b2c-1d0e9f8a7b6c
    workspace_api_key: "{{ vault_ory_workspace_api_key }}"
    identity: /etc/idp-recovery/age.key
  check_mode: true
  register: ory_plan

- name: Restore, with the client secrets from the vault and new ones encrypted to the recovery key
  idp.recovery.ory_import:
    set_dir: /var/backups/idp/ory/20261122T030000Z
    project_url: https://new-slug.projects.oryapis.com
    project_api_key: "{{ vault_ory_new_project_api_key }}"
    project_id: 2a9b7c1e-5d4f-4e3a-8b2c-1d0e9f8a7b6c
    workspace_api_key: "{{ vault_ory_workspace_api_key }}"
    identity: /etc/idp-recovery/age.key
    client_secrets: "{{ vault_ory_client_secrets }}"
    encryption: age
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  no_log: true
  register: ory_restore
'''

RETURN = r'''
plan:
  description:
    - Per kind, what would be (or was, before this run) created, what already exists and how many conflicts.
    - For C(oauth2_clients) also C(secrets_supplied), C(secrets_to_generate) (clients that use a secret and have none
      in O(client_secrets)) and C(without_secret) (C(keys) - private_key_jwt clients, C(none) - public clients).
  returned: always
  type: dict
  sample: {"identities": {"create": 5000, "existing": 0, "conflicts": 0}, "jwk_sets": {"hydra.openid.id-token": "replace"}}
validated:
  description: Items read and checked from each payload before anything was written.
  returned: always
  type: dict
version_gate:
  description:
    - Per service (C(kratos), C(hydra), C(keto)), the version the export recorded, the target's, their release lines,
      and the decision - C(ok), C(forced), C(reason) of a refusal, C(warning) for an older export.
  returned: always
  type: dict
  sample: {"hydra": {"service": "hydra", "export_version": "v2.3.0", "target_version": "v2.3.0", "export_line": "2.3",
           "target_line": "2.3", "ok": true, "forced": false, "reason": null, "warning": null}}
conflicts:
  description: Up to 20 conflicting items per kind, with the reason.
  returned: always
  type: dict
created:
  description: Items created per kind by this run.
  returned: changed, not in check mode
  type: dict
updated:
  description: Configuration and JWK sets replaced by this run.
  returned: changed, not in check mode
  type: dict
state_dir:
  description: Where the ID map and the reports were written.
  returned: changed, not in check mode
  type: str
id_map:
  description: The path of the old-to-new identity ID map (JSON object).
  returned: changed, not in check mode, identities included
  type: str
rotation_report:
  description:
    - For each OAuth2 client, C(secret) - V(supplied), V(generated), V(unchanged) (existing client), V(unknown)
      (created by an interrupted attempt), V(keys) (private_key_jwt - authenticates with its keys, no secret) or
      V(none) (public client) - with C(action) and C(token_endpoint_auth_method).
  returned: changed, not in check mode
  type: list
  elements: dict
secrets_file:
  description: The encrypted file of newly generated client secrets (JSON object by client_id), if any.
  returned: changed, not in check mode
  type: str
relationships_file:
  description:
    - C(relationships.json) in the state directory - the relation tuples of the export with every identity ID (subject,
      object, object of a subject set) replaced by the new ID, in the format of C(ory create relationships -f).
    - Written whenever the export holds identities and tuples, also when O(include) leaves the tuples out, so that
      they can be restored with the stock CLI. The bundle's own C(restore/relationships.json) names the old IDs.
  returned: changed, not in check mode, when the export holds identities and relation tuples
  type: str
client_secrets:
  description: Newly generated client secrets by client_id, only with O(return_secrets=true).
  returned: when secrets were generated and O(return_secrets=true)
  type: dict
warnings:
  description: Things the operator must know (tuples left out, project update warnings).
  returned: changed, not in check mode
  type: list
  elements: str
duration_seconds:
  description: Wall time of the writes.
  returned: changed, not in check mode
  type: float
requests:
  description: Requests sent, retried, rate limited, and seconds spent waiting.
  returned: changed, not in check mode
  type: dict
phases_seconds:
  description: Wall time of each phase (validate, plan, config, identities, oauth2_clients, jwk_sets, relationships).
  returned: changed, not in check mode
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import decrypt_argument_spec, keys_from_params
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._ory.apply import Importer
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import KINDS, OryBundle
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryConnection, ory_argument_spec


def run(module):
    params = module.params
    connection = OryConnection(params)
    keys = keys_from_params(params)
    bundle = OryBundle(params['set_dir'], params['prefix'], keys)
    result = Importer(connection, params, keys, check_mode=module.check_mode).run(bundle)
    for warning in result.get('warnings') or []:
        module.warn(warning)
    return result


def main():
    argument_spec = ory_argument_spec()
    argument_spec.update(decrypt_argument_spec())
    argument_spec.update(
        set_dir=dict(type='path', required=True),
        prefix=dict(type='str', default='ory'),
        include=dict(type='list', elements='str', choices=list(KINDS), default=list(KINDS)),
        state_dir=dict(type='path'),
        client_secrets=dict(type='dict', no_log=True),
        return_secrets=dict(type='bool', default=False),
        encryption=dict(type='str', choices=['age', 'gpg']),
        recipients=dict(type='list', elements='str', default=[]),
        recipients_file=dict(type='path'),
        replace_jwk_sets=dict(type='bool', default=True),
        fail_on_conflict=dict(type='bool', default=True),
        refuse_endpoints=dict(type='list', elements='str', default=[]),
        batch_size=dict(type='int', default=1000),
        force_version=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
