# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: what a Kotauth export document says, and Kotauth's import rules.

The plaintext of a ``bkp1`` archive is Kotauth's JSON export: versions (``exportVersion``,
``schemaVersion``, ``kotauthVersion``, ``exportedAt``), a ``manifest`` with ``redactedFields``,
``includedExtras`` and ``notes``, and the tenant's content by natural keys. Only safe facts are read
from it (never content); the schema version gates an import, the redacted fields tell what an
operator does after one.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime

from ansible_collections.idp.recovery.plugins.module_utils._common import iso
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.envelope import MALFORMED, EnvelopeError


COUNT_KEYS = (
    ('users', 'users'),
    ('applications', 'applications'),
    ('roles', 'roles'),
    ('groups', 'groups'),
    ('claimMappers', 'claim_mappers'),
    ('socialProviders', 'social_providers'),
    ('resourceServers', 'resource_servers'),
    ('signingKeys', 'signing_keys'),
    ('auditLog', 'audit_events'),
)


def _exported_at(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000.0 if value > 10 ** 11 else value
        return iso(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))
    if isinstance(value, str) and value:
        return value
    return None


def archive_facts(document):
    """Versions, export time, counts, redacted fields and extras of an export; never content."""
    manifest = document.get('manifest') if isinstance(document.get('manifest'), dict) else {}

    def pick(key):
        return document.get(key, manifest.get(key))
    counts = {}
    for key, name in COUNT_KEYS:
        value = document.get(key)
        counts[name] = len(value) if isinstance(value, list) else 0
    tenant = document.get('tenant') if isinstance(document.get('tenant'), dict) else {}
    users = document.get('users') if isinstance(document.get('users'), list) else []
    smtp = tenant.get('smtp') if isinstance(tenant.get('smtp'), dict) else {}
    schema = pick('schemaVersion')
    facts = {
        'export_version': pick('exportVersion'),
        'schema_version': schema,
        'kotauth_version': pick('kotauthVersion'),
        'exported_at': _exported_at(pick('exportedAt')),
        'exported_at_raw': pick('exportedAt'),
        'tenant_slug': tenant.get('slug'),
        'counts': counts,
        'users_with_mfa': sum(1 for u in users if isinstance(u, dict) and u.get('mfaEnabled')),
        'smtp_enabled': bool(smtp.get('enabled')),
        'redacted_fields': list(manifest.get('redactedFields') or []),
        'included_extras': list(manifest.get('includedExtras') or []),
        'notes': list(manifest.get('notes') or []),
    }
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise EnvelopeError(MALFORMED, 'the archive holds no integer schemaVersion: not a Kotauth export this '
                            'collection can gate')
    return facts


# redacted field -> (id, what to do)
ACTIONS = (
    ('applications.clientSecret', 'client_secrets',
     'Regenerate the OAuth client secrets of the {applications} application(s) and update every app that uses them.'),
    # Kotauth's importer creates social providers disabled with a blank secret, mail disabled and every user with
    # MFA off (BackupImporterService.performImport)
    ('socialProviders.clientSecret', 'social_login_secrets',
     'Re-enter the client secrets of the {social_providers} social login provider(s) and enable them again: Kotauth '
     'imports them disabled.'),
    ('tenant.smtpPassword', 'smtp',
     'Re-enter the SMTP password and re-enable outgoing mail{smtp_note}: Kotauth imports the tenant with mail disabled.'),
    ('users.totpSeed', 'mfa_reenrolment',
     'MFA: {users_with_mfa} user(s) with MFA must enrol their authenticator again (TOTP seeds are not exported; '
     'Kotauth imports every user with MFA off).'),
    ('users.recoveryCodes', 'recovery_codes',
     'MFA recovery codes are gone: users generate new ones after enrolling again.'),
    ('webauthn_credentials', 'passkeys',
     'Passkeys and WebAuthn keys are not exported: users register them again.'),
    ('sessions', 'sessions',
     'Sessions are gone: every user signs in again.'),
    ('authorizationCodes', 'authorization_codes',
     'Pending authorization codes are gone: sign-ins in progress during the export start over.'),
    ('magicLinkTokens', 'magic_links',
     'Magic links sent before the export no longer work: users request new ones.'),
    ('signingKeys', 'signing_keys',
     'Signing keys were not exported: the new tenant signs with new keys; relying parties refetch its JWKS and tokens '
     'issued before no longer verify.'),
    ('auditLog', 'audit_log',
     'The audit log was not exported: keep the source tenant\'s audit history elsewhere if it is needed.'),
)


def post_restore_actions(facts):
    """What an operator must do after an import, from the archive's redacted fields."""
    values = dict(facts['counts'])
    values['users_with_mfa'] = facts.get('users_with_mfa', 0)
    values['smtp_note'] = ' (mail was enabled on the source tenant)' if facts.get('smtp_enabled') else \
        ' if the tenant sends mail'
    known = dict((field, (ident, text)) for field, ident, text in ACTIONS)
    actions = []
    seen = set()
    for field in facts.get('redacted_fields') or []:
        if field in seen:
            continue
        seen.add(field)
        if field in known:
            ident, text = known[field]
            actions.append({'id': ident, 'redacted': field, 'action': text.format(**values)})
        else:
            actions.append({'id': 'review', 'redacted': field,
                            'action': 'Kotauth left %s out of the archive: check what it means for this tenant.' % field})
    return actions


def schema_gate(archive_schema, target_schema):
    """Kotauth's rule: same -> ok, archive older -> warn, archive newer than the target -> refuse."""
    result = {'archive': archive_schema, 'target': target_schema}
    if archive_schema == target_schema:
        result.update(decision='same', ok=True, message=None)
    elif archive_schema < target_schema:
        result.update(decision='older', ok=True,
                      message='the archive has schema version %s, older than the target\'s %s: Kotauth imports it, '
                              'but check the tenant for settings that newer versions added' % (archive_schema, target_schema))
    else:
        result.update(decision='newer', ok=False,
                      message='the archive has schema version %s, newer than the target\'s %s: Kotauth refuses it; '
                              'upgrade the target Kotauth first (nothing was sent to it)' % (archive_schema, target_schema))
    return result
