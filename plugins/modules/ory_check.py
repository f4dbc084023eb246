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
  - O(token) asks the OAuth2 token endpoint for a C(client_credentials) token with a client's secret, and fails unless
    the answer is what O(token.expect) says; V(failure) proves that an old secret no longer works.
  - O(permissions) asks Keto for each relation and fails unless each answer equals its C(allowed) expectation, so a
    drill checks one allowed and one denied tuple.
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
        description: V(success) when a token must be issued, V(failure) when it must be refused.
        type: str
        choices: [success, failure]
        default: success
  permissions:
    description:
      - Permission checks, each C(namespace), C(object), C(relation), C(subject_id) (or C(subject_set)) and the
        expected C(allowed).
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
    identities:
      - {identifier: alice@example.org, external_id: 3f1c0d3a-0f55-4d9e-8a4c-0e2b7a9d6c11}
  no_log: true
'''

RETURN = r'''
token:
  description: The token check - C(ok), C(expected), C(token_type), C(expires_in), C(access_token_sha256) or the error.
  returned: when O(token) is given
  type: dict
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

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._ory import OryConnection, ory_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._ory_import import check_permission, find_identity, mint_token


def run(module):
    params = module.params
    conn = OryConnection(params)
    result = {'changed': False, 'permissions': [], 'identities': []}
    failed = 0
    if params['token']:
        spec = params['token']
        ok, details = mint_token(conn, spec['client_id'], spec['client_secret'], spec['method'], spec.get('scope'))
        passed = ok == (spec['expect'] == 'success')
        result['token'] = dict(details, client_id=spec['client_id'], issued=ok, expected=spec['expect'], ok=passed)
        failed += not passed
    for check in params['permissions']:
        for field in ('namespace', 'object', 'relation', 'allowed'):
            if field not in check:
                raise RecoveryError('every permission check needs namespace, object, relation, a subject and allowed')
        allowed = check_permission(conn, check['namespace'], check['object'], check['relation'],
                                   check.get('subject_id'), check.get('subject_set'))
        passed = allowed == bool(check['allowed'])
        result['permissions'].append(dict(check, answer=allowed, ok=passed))
        failed += not passed
    for check in params['identities']:
        if not check.get('identifier'):
            raise RecoveryError('every identity look-up needs an identifier')
        found = find_identity(conn, check['identifier'])
        passed = bool(found) and (not check.get('external_id') or any(
            i.get('external_id') == check['external_id'] for i in found))
        result['identities'].append({'identifier': check['identifier'], 'found': found, 'ok': passed,
                                     'external_id': check.get('external_id')})
        failed += not passed
    result['failed_checks'] = failed
    if failed:
        raise RecoveryError('%d Ory check(s) failed' % failed, **dict((k, v) for k, v in result.items() if k != 'changed'))
    return result


def main():
    argument_spec = ory_argument_spec()
    argument_spec.update(
        token=dict(type='dict', no_log=False, options=dict(
            client_id=dict(type='str', required=True),
            client_secret=dict(type='str', required=True, no_log=True),
            method=dict(type='str', choices=['client_secret_basic', 'client_secret_post'], default='client_secret_basic'),
            scope=dict(type='str'),
            expect=dict(type='str', choices=['success', 'failure'], default='success'),
        )),
        permissions=dict(type='list', elements='dict', default=[]),
        identities=dict(type='list', elements='dict', default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
