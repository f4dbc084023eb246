# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The planning of KotauthImporter: what is checked, in which order, before anything is sent."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._kotauth import import_ as kotauth_import

FACTS = {
    'schema_version': 42, 'kotauth_version': '1.4.2', 'exported_at': '2026-01-12T03:00:00Z',
    'counts': {'users': 2, 'applications': 1, 'roles': 0, 'groups': 0, 'claim_mappers': 0, 'social_providers': 0,
               'resource_servers': 0, 'signing_keys': 0, 'audit_events': 0},
    'users_with_mfa': 0, 'smtp_enabled': False, 'redacted_fields': ['sessions'], 'included_extras': [],
}


class FakeClient(object):
    url = 'https://auth.example.org'

    def __init__(self, schema=42, existing=(), answer=None):
        self.schema = schema
        self.existing = set(existing)
        self.answer = answer
        self.calls = []

    def schema_version(self, slug):
        self.calls.append(('schema_version', slug))
        return self.schema

    def tenant_exists(self, slug):
        self.calls.append(('tenant_exists', slug))
        return slug in self.existing

    def import_archive(self, data, passphrase, new_slug, request_format):
        self.calls.append(('import_archive', new_slug, request_format))
        return self.answer


@pytest.fixture
def set_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(kotauth_import._backup_set, 'is_complete', lambda path: True)
    monkeypatch.setattr(kotauth_import, 'recorded_tenants', lambda path: {'acme': {}})
    monkeypatch.setattr(kotauth_import, 'verify_set', lambda path, keys, decrypt: None)
    monkeypatch.setattr(kotauth_import, 'read_archive', lambda path, slug, keys, passphrase: (b'bkp1.x', {}, dict(FACTS), {}))
    return str(tmp_path)


def _params(**extra):
    params = {'slug': None, 'new_slug': None, 'target_schema_version': None, 'schema_probe_slug': 'master',
              'kotauth_passphrase': 'p' * 16, 'request_format': 'json'}
    params.update(extra)
    return params


def test_check_mode_plans_without_importing(set_dir):
    client = FakeClient()
    result = kotauth_import.KotauthImporter(client, _params(new_slug='acme-2'), None, check_mode=True).run(set_dir)
    assert result['changed'] and 'would import tenant acme' in result['msg']
    assert result['plan']['slug'] == 'acme' and result['plan']['new_slug'] == 'acme-2'
    assert result['plan']['schema']['decision'] == 'same' and result['plan']['schema']['target_source'] == 'instance'
    assert [a['id'] for a in result['post_restore_actions']] == ['sessions']
    assert client.calls == [('schema_version', 'master'), ('tenant_exists', 'acme-2')]


def test_newer_archive_is_refused_before_the_slug_is_probed(set_dir):
    client = FakeClient()
    with pytest.raises(RecoveryError) as info:
        kotauth_import.KotauthImporter(client, _params(target_schema_version=41), None).run(set_dir)
    assert 'nothing was sent' in info.value.msg and info.value.details['plan']['schema']['target_source'] == 'given'
    assert client.calls == []


def test_older_archive_warns_and_an_existing_tenant_is_refused(set_dir):
    client = FakeClient(schema=43, existing=['acme'])
    importer = kotauth_import.KotauthImporter(client, _params(), None)
    with pytest.raises(RecoveryError) as info:
        importer.run(set_dir)
    assert 'already exists' in info.value.msg and 'give new_slug' in info.value.msg
    assert len(importer.warnings) == 1 and 'older' in importer.warnings[0]
    assert ('import_archive', 'acme', 'json') not in client.calls


def test_counts_that_differ_after_the_import_fail(set_dir):
    answer = {'newTenantSlug': 'acme', 'schemaVersion': 42, 'summary': {'users': 1, 'applications': 1}}
    client = FakeClient(answer=answer)
    with pytest.raises(RecoveryError) as info:
        kotauth_import.KotauthImporter(client, _params(), None).run(set_dir)
    assert 'users 2 in the archive, 1 imported' in info.value.msg and info.value.details['tenant']['slug'] == 'acme'


def test_a_set_with_several_tenants_needs_a_slug(set_dir, monkeypatch):
    monkeypatch.setattr(kotauth_import, 'recorded_tenants', lambda path: {'acme': {}, 'globex': {}})
    with pytest.raises(RecoveryError) as info:
        kotauth_import.KotauthImporter(FakeClient(), _params(), None).run(set_dir)
    assert 'give slug (one of: acme, globex)' in info.value.msg
