#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: ory_check
short_description: Prove that a restored Ory project works (token, permissions, identity look-up)
version_added: 0.1.0
description:
  - Read-only checks for restore drills against an Ory project restored by M(idp.recovery.ory_import).
  - O(token) (and each of O(tokens)) asks the OAuth2 token endpoint for a C(client_credentials) token with a client's
    secret, and fails unless the answer is what O(token.expect) says. V(failure) proves that a secret does not work -
    it passes only when the token endpoint refuses to authenticate the client (HTTP 401, C(invalid_client)); a
    refusal for another reason (a grant type the client may not use, a scope) does not prove that the secret is
    wrong, and fails the check.
  - O(permissions) asks Keto for each relation and fails unless each answer equals its C(allowed) expectation, so a
    drill checks one allowed and one denied tuple. The subject is a subject ID or a subject set; Keto expands subject
    sets (a group whose members are groups), so a check is allowed through them too.
  - O(identities) looks up identities by a credential identifier (an e-mail address, C(provider:subject)) and fails
    when one is missing or, with C(external_id), when it is not the restored copy of that old identity.
  - Fails with a report of every failed check; the token itself is never returned (only the first 16 hex digits of
    its SHA-256).
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.ory
  - idp.recovery.attributes
  - idp.recovery.attributes.INFO_MODULE
options:
  token:
    description:
      - A token request to make.
    type: dict
    suboptions:
      client_id:
        description: The OAuth2 client.
        type: str
        required: true
      client_secret:
        description: The client's secret.
        type: str
        required: true
      method:
        description: How the client authenticates at the token endpoint.
        type: str
        choices: [client_secret_basic, client_secret_post]
        default: client_secret_basic
      scope:
        description: Scopes to ask for, space separated.
        type: str
      expect:
        description:
          - V(success) when a token must be issued, V(failure) when the client authentication must be refused (the
            secret does not work).
        type: str
        choices: [success, failure]
        default: success
  tokens:
    description:
      - More token requests, each with the suboptions of O(token), checked the same way and reported in RV(tokens).
      - The restore role uses them to prove that the old secret of every client whose secret was rotated is refused.
    type: list
    elements: dict
    default: []
    suboptions:
      client_id:
        description: The OAuth2 client.
        type: str
        required: true
      client_secret:
        description: The secret to try.
        type: str
        required: true
      method:
        description: How the client authenticates at the token endpoint.
        type: str
        choices: [client_secret_basic, client_secret_post]
        default: client_secret_basic
      scope:
        description: Scopes to ask for, space separated.
        type: str
      expect:
        description: As O(token.expect).
        type: str
        choices: [success, failure]
        default: success
  permissions:
    description:
      - Permission checks, each C(namespace), C(object), C(relation), a subject and the expected C(allowed).
      - The subject is either C(subject_id) (a string) or C(subject_set), a dict of C(namespace), C(object) and
        C(relation) - for example the members of a group as C(namespace=Group), C(object=admins) and
        C(relation=members).
      - An optional C(max_depth) limits how deep Keto expands subject sets (Keto's own limit applies when it is
        lower).
    type: list
    elements: dict
    default: []
  identities:
    description:
      - Identity look-ups, each C(identifier) and optionally the expected C(external_id) (the old identity ID).
    type: list
    elements: dict
    default: []
'''

EXAMPLES = r'''
- name: Prove the restored project works
  idp.recovery.ory_check:
    project_url: https://new-slug.projects.oryapis.com
    project_api_key: "{{ vault_ory_new_project_api_key }}"
    token:
      client_id: billing-service
      client_secret: "{{ restored_secrets['billing-service'] }}"
    permissions:
      - {namespace: Document, object: doc-1, relation: view, subject_id: "{{ alice_new_id }}", allowed: true}
      - {namespace: Document, object: doc-1, relation: view, subject_id: nobody, allowed: false}
      # every member of the group may view: allowed through the subject set
      - namespace: Document
        object: doc-1
        relation: view
        subject_set: {namespace: Group, object: editors, relation: members}
        allowed: true
    identities:
      - {identifier: alice@example.org, external_id: 3f1c0d3a-0f55-4d9e-8a4c-0e2b7a9d6c11}
  no_log: true
'''

RETURN = r'''
token:
  description:
    - The token check - C(ok), C(expected), C(issued), C(token_type), C(expires_in), C(access_token_sha256), or the
      C(status) and C(error) of a refusal. Never the secret or the token.
  returned: when O(token) is given
  type: dict
tokens:
  description: Each check of O(tokens), shaped like RV(token).
  returned: always
  type: list
  elements: dict
permissions:
  description: Each permission check with the C(allowed) answer and C(ok).
  returned: always
  type: list
  elements: dict
identities:
  description: Each look-up with the identities found (ID, external ID, state, credential types) and C(ok).
  returned: always
  type: list
  elements: dict
failed_checks:
  description: The number of checks whose answer was not the expected one.
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import ory_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._ory.verify import run_checks


def run(module):
    return run_checks(module.params)


def token_options():
    """The suboptions of one token request (O(token) and each item of O(tokens))."""
    return dict(
        client_id=dict(type='str', required=True),
        client_secret=dict(type='str', required=True, no_log=True),
        method=dict(type='str', choices=['client_secret_basic', 'client_secret_post'], default='client_secret_basic'),
        scope=dict(type='str'),
        expect=dict(type='str', choices=['success', 'failure'], default='success'),
    )


def main():
    argument_spec = ory_argument_spec()
    argument_spec.update(
        token=dict(type='dict', no_log=False, options=token_options()),
        tokens=dict(type='list', elements='dict', default=[], no_log=False, options=token_options()),
        permissions=dict(type='list', elements='dict', default=[]),
        identities=dict(type='list', elements='dict', default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
