# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: importing a Kotauth tenant archive from a backup set as a new tenant."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import keys_from_params
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.archive import post_restore_actions, schema_gate
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.client import check_slug, client_from_params
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.envelope import check_passphrase, require_cryptography
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.stored import read_archive, recorded_tenants
from ansible_collections.idp.recovery.plugins.module_utils._payload import verify_set


class KotauthImporter(object):
    """Checks a set's tenant archive against the target, then has Kotauth import it as a new tenant."""

    def __init__(self, client, params, keys, check_mode=False):
        self.client = client
        self.params = params
        self.keys = keys
        self.check_mode = check_mode
        self.warnings = []

    def run(self, set_dir):
        if not os.path.isdir(set_dir):
            raise RecoveryError('backup set %s does not exist' % set_dir, path=set_dir)
        if not _backup_set.is_complete(set_dir):
            raise RecoveryError('backup set %s is incomplete (no manifest): it is never restored' % set_dir, path=set_dir)
        tenants = recorded_tenants(set_dir)
        slug = self.params.get('slug')
        if not slug:
            if len(tenants) != 1:
                raise RecoveryError('backup set %s holds %s Kotauth tenants; give slug (one of: %s)' % (
                    set_dir, len(tenants), ', '.join(sorted(tenants)) or 'none'), path=set_dir)
            slug = list(tenants)[0]
        new_slug = check_slug(self.params.get('new_slug') or slug, 'new_slug')
        # every checksum of the set, then this tenant's archive in full
        verify_set(set_dir, self.keys, decrypt='never')
        data, document, facts, _recorded = read_archive(set_dir, slug, self.keys, self.params['kotauth_passphrase'])
        document = None
        if self.params.get('target_schema_version') is not None:
            target, source = self.params['target_schema_version'], 'given'
        else:
            try:
                target, source = self.client.schema_version(self.params['schema_probe_slug']), 'instance'
            except RecoveryError as exc:
                raise RecoveryError('cannot read the target\'s schema version (%s); give target_schema_version' % exc.msg)
        gate = schema_gate(facts['schema_version'], target)
        gate['target_source'] = source
        plan = {'slug': slug, 'new_slug': new_slug, 'schema': gate, 'counts': facts['counts'],
                'kotauth_version': facts['kotauth_version'], 'exported_at': facts['exported_at'],
                'redacted_fields': facts['redacted_fields'], 'included_extras': facts['included_extras']}
        actions = post_restore_actions(facts)
        result = {'changed': False, 'set_dir': set_dir, 'plan': plan, 'post_restore_actions': actions}
        if not gate['ok']:
            raise RecoveryError(gate['message'], plan=plan)
        if gate['message']:
            self.warnings.append(gate['message'])
        if self.client.tenant_exists(new_slug):
            hint = 'give new_slug to import it under another slug' if not self.params.get('new_slug') else \
                'choose another new_slug'
            raise RecoveryError('tenant %s already exists on %s; Kotauth imports only into a new tenant: %s '
                                '(nothing was sent)' % (new_slug, self.client.url, hint), plan=plan)
        result['changed'] = True
        if self.check_mode:
            result['msg'] = 'would import tenant %s from %s as %s' % (slug, set_dir, new_slug)
            return result
        answer = self.client.import_archive(data, self.params['kotauth_passphrase'], new_slug,
                                            self.params.get('request_format') or 'json')
        tenant = {
            'slug': answer.get('newTenantSlug'),
            'schema_version': answer.get('schemaVersion'),
            'export_schema_version': answer.get('exportSchemaVersion'),
            'summary': answer.get('summary') or {},
            'url': self.client.url,
        }
        result['tenant'] = tenant
        mismatch = _count_mismatch(facts['counts'], tenant['summary'])
        if tenant['slug'] != new_slug:
            raise RecoveryError('Kotauth created tenant %s instead of %s' % (tenant['slug'], new_slug), **result)
        if mismatch:
            raise RecoveryError('Kotauth created tenant %s but its counts differ from the archive: %s; review or remove '
                                'that tenant' % (new_slug, ', '.join(mismatch)), **result)
        result['msg'] = 'imported tenant %s as %s' % (slug, new_slug)
        return result


SUMMARY_KEYS = (('users', 'users'), ('applications', 'applications'), ('roles', 'roles'), ('groups', 'groups'),
                ('claimMappers', 'claim_mappers'), ('socialProviders', 'social_providers'),
                ('signingKeys', 'signing_keys'), ('auditEvents', 'audit_events'))


def _count_mismatch(counts, summary):
    found = []
    for key, name in SUMMARY_KEYS:
        if key in summary and summary[key] != counts.get(name):
            found.append('%s %s in the archive, %s imported' % (name, counts.get(name), summary[key]))
    return found


def import_tenant(params, check_mode=False, warn=None, on_deprecated=None):
    """What kotauth_import does: check the options, then import one tenant of ``params['set_dir']``.

    ``warn`` receives each warning (an older archive schema than the target's); ``on_deprecated(msg)``
    each deprecated option in use, once the passphrase is known to be usable.
    """
    check_passphrase(params['kotauth_passphrase'])
    if on_deprecated and params.get('request_format') == 'multipart':
        on_deprecated('request_format=multipart is refused by Kotauth\'s admin API (HTTP 400); use the default, json')
    require_cryptography()
    importer = KotauthImporter(client_from_params(params), params, keys_from_params(params), check_mode=check_mode)
    result = importer.run(params['set_dir'])
    for warning in importer.warnings if warn else ():
        warn(warning)
    return result
