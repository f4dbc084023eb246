# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: read-only checks of a restored Ory project (the ory_check module).

``mint_token`` asks Hydra's token endpoint for a client_credentials token, ``check_permission`` asks Keto,
``find_identity`` looks an identity up by a credential identifier in Kratos; ``run_checks`` runs the
checks the module was given and judges each answer.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib

from ansible.module_utils.six.moves.urllib.parse import quote_plus

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryAPIError, OryConnection

SUBJECT_SET_FIELDS = ('namespace', 'object', 'relation')


def mint_token(connection, client_id, client_secret, method='client_secret_basic', scope=None, audience=None):
    """Ask the token endpoint for a client_credentials token; return (ok, details) without the token.

    Only the two methods that send the secret itself: a private_key_jwt client proves itself with a signed
    assertion, a public client (none) may not use client_credentials at all, and client_secret_jwt is refused
    by Hydra's token endpoint (ory/fosite client_authentication.go, AuthenticateClient).
    """
    if method not in ('client_secret_basic', 'client_secret_post'):
        raise RecoveryError('a token check sends the client secret with client_secret_basic or client_secret_post; '
                            '%s clients cannot be checked this way' % method)
    client = connection.client('hydra_public')
    form = {'grant_type': 'client_credentials'}
    if scope:
        form['scope'] = scope
    if audience:
        form['audience'] = audience
    basic = None
    if method == 'client_secret_post':
        form.update(client_id=client_id, client_secret=client_secret)
    else:
        basic = (quote_plus(client_id), quote_plus(client_secret))
    try:
        answer = client.request('POST', '/oauth2/token', form=form, basic_auth=basic, retry_errors=True).json() or {}
    except OryAPIError as exc:
        if exc.status in (400, 401, 403):
            return False, {'status': exc.status, 'error': exc.msg}
        raise
    ok = bool(answer.get('access_token'))
    return ok, {'token_type': answer.get('token_type'), 'expires_in': answer.get('expires_in'), 'scope': answer.get('scope'),
                'access_token_sha256': hashlib.sha256(answer['access_token'].encode('utf-8')).hexdigest()[:16] if ok else None}


def check_permission(connection, namespace, obj, relation, subject_id=None, subject_set=None, max_depth=None):
    """Keto's answer for a subject ID or a subject set (ory/keto ketoapi/enc_url_query.go, RelationQuery.ToURLQuery:
    ``subject_set.namespace``, ``subject_set.object``, ``subject_set.relation``; ``max-depth`` from
    internal/check/handler.go)."""
    query = {'namespace': namespace, 'object': obj, 'relation': relation}
    if subject_id:
        query['subject_id'] = subject_id
    if subject_set:
        for key in ('namespace', 'object', 'relation'):
            query['subject_set.%s' % key] = subject_set[key]
    if max_depth:
        query['max-depth'] = int(max_depth)
    answer = connection.client('keto_read').get_json('/relation-tuples/check/openapi', query=query) or {}
    return bool(answer.get('allowed'))


def find_identity(connection, identifier):
    found = connection.client('kratos').get_json('/admin/identities', query={'credentials_identifier': identifier}) or []
    return [{'id': i.get('id'), 'external_id': i.get('external_id'), 'schema_id': i.get('schema_id'),
             'state': i.get('state'), 'credentials': sorted((i.get('credentials') or {}).keys())} for i in found]


def token_check(conn, spec):
    """One token request; a refusal proves a wrong secret only when the client authentication failed.

    Hydra answers a client it cannot authenticate with 401 invalid_client (ory/fosite errors.go,
    ErrInvalidClient, raised by client_authentication.go AuthenticateClient before any grant is looked at);
    a 400 (unauthorized_client, invalid_scope, ...) comes after the secret was accepted.
    """
    ok, details = mint_token(conn, spec['client_id'], spec['client_secret'], spec['method'], spec.get('scope'))
    if spec['expect'] == 'success':
        passed = ok
    else:
        passed = not ok and details.get('status') == 401
        if not ok and not passed:
            details = dict(details, note='refused for another reason than the client authentication: the secret may '
                                         'still be valid')
    return dict(details, client_id=spec['client_id'], issued=ok, expected=spec['expect'], ok=passed)


def permission_subject(check, number):
    """(subject_id, subject_set) of a permission check; exactly one of them, a subject set with its three fields."""
    subject_id, subject_set = check.get('subject_id'), check.get('subject_set')
    if bool(subject_id) == bool(subject_set):
        raise RecoveryError('permission check %d needs exactly one of subject_id and subject_set' % number)
    if subject_id is not None and not isinstance(subject_id, str):
        raise RecoveryError('permission check %d: subject_id must be a string' % number)
    if subject_set is not None:
        if not isinstance(subject_set, dict) or any(not isinstance(subject_set.get(k), str) or not subject_set[k]
                                                    for k in SUBJECT_SET_FIELDS):
            raise RecoveryError('permission check %d: subject_set needs namespace, object and relation (strings)' % number)
        unknown = sorted(set(subject_set) - set(SUBJECT_SET_FIELDS))
        if unknown:
            raise RecoveryError('permission check %d: subject_set has unknown fields %s' % (number, ', '.join(unknown)))
    return subject_id, subject_set


def run_checks(params):
    """Every check ory_check was given (token, tokens, permissions, identities); raises when one fails."""
    conn = OryConnection(params)
    result = {'changed': False, 'permissions': [], 'identities': [], 'tokens': []}
    failed = 0
    for number, check in enumerate(params['permissions'], 1):
        for field in ('namespace', 'object', 'relation', 'allowed'):
            if field not in check:
                raise RecoveryError('every permission check needs namespace, object, relation, a subject and allowed')
        permission_subject(check, number)
        if check.get('max_depth') is not None and (not isinstance(check['max_depth'], int) or check['max_depth'] < 1):
            raise RecoveryError('permission check %d: max_depth must be a positive integer' % number)
    if params['token']:
        result['token'] = token_check(conn, params['token'])
        failed += not result['token']['ok']
    for spec in params['tokens']:
        entry = token_check(conn, spec)
        result['tokens'].append(entry)
        failed += not entry['ok']
    for number, check in enumerate(params['permissions'], 1):
        subject_id, subject_set = permission_subject(check, number)
        allowed = check_permission(conn, check['namespace'], check['object'], check['relation'],
                                   subject_id, subject_set, max_depth=check.get('max_depth'))
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
