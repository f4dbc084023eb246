# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: export of an Ory project into an open backup set."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import os
import re
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, iso, utcnow
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import (
    BUNDLE_FORMAT,
    FRAGMENT,
    KINDS,
    BundleWriter,
    JsonArrayWriter,
    dumps,
)
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryAPIError, client_auth, fetch_content

CREDENTIAL_TYPES = ('password', 'oidc', 'totp', 'lookup_secret', 'webauthn', 'passkey', 'saml')
DEFAULT_JWK_SETS = ('hydra.openid.id-token', 'hydra.jwt.access-token')
IDENTITY_PAGE_SIZE = 500
CLIENT_PAGE_SIZE = 500
TUPLE_PAGE_SIZE = 1000

CLIENT_READ_ONLY = ('client_secret', 'created_at', 'updated_at', 'registration_access_token', 'registration_client_uri',
                    'client_secret_expires_at')
WEBAUTHN_FIELDS = ('added_at', 'attestation', 'attestation_type', 'authenticator', 'display_name', 'flags', 'id',
                   'is_passwordless', 'public_key', 'transport')
JWK_PRIVATE = {'RSA': 'd', 'EC': 'd', 'OKP': 'd', 'oct': 'k'}
WITHHELD_CAUSES = {
    'list_ignored_include_credential': '; the identity list ignored include_credential while the same identity read by '
                                       'its ID carries its hash, as Kratos releases before include_credential on the '
                                       'list do (ory/kratos#3190)',
    'api_withholds': '; reading the identity by its ID does not return the hash either',
}


# -- conversions from what the API returns to what the import decoders accept

def _providers(config):
    out = []
    for prov in (config or {}).get('providers') or []:
        entry = {'provider': prov.get('provider'), 'subject': prov.get('subject')}
        if prov.get('organization'):
            entry['organization'] = prov['organization']
        if prov.get('use_auto_link') is not None:
            entry['use_auto_link'] = prov['use_auto_link']
        out.append(entry)
    return out


PASSWORD_HASHED = 'hashed'
PASSWORD_MIGRATION_HOOK = 'migration_hook'
PASSWORD_NONE = 'none'
PASSWORD_WITHHELD = 'withheld'
PASSWORD_NOT_REQUESTED = 'not_requested'


def password_state(credentials, requested=True):
    """What an identity's listing says of its password, one of the PASSWORD_* values.

    Kratos keeps a password credential with identifiers and an empty configuration ({}) for every
    identity whose schema marks a trait as password identifier (identity/extension_credentials.go,
    setIdentifier), also for users who never set a password (social sign-in, passkey, code), and
    an administrator who removes a password leaves the same shape (identity/identity.go,
    deleteCredentialPassword). Stored configurations are never empty (an empty one is written as
    {}, persistence/sql/identity/persister_identity.go, createIdentityCredentials), and the API
    shows the configuration of a credential type only when asked for it and null otherwise
    (identity/identity.go, WithDeclassifiedCredentials). So, when the password credential was asked
    for (include_credential=password), a configuration that is absent or null means the API withheld
    it; an object without hashed_password means there is no password.
    """
    cred = (credentials or {}).get('password')
    if cred is None:
        return PASSWORD_NONE
    config = (cred or {}).get('config')
    if not isinstance(config, dict):
        return PASSWORD_WITHHELD if requested else PASSWORD_NOT_REQUESTED
    if config.get('hashed_password'):
        return PASSWORD_HASHED
    if config.get('use_password_migration_hook'):
        return PASSWORD_MIGRATION_HOOK
    return PASSWORD_NONE


def import_credentials(credentials, requested=True):
    """(identityWithCredentials dict, exported types, password state) from an identity's credentials."""
    out = {}
    state = password_state(credentials, requested)
    for kind, cred in (credentials or {}).items():
        config = (cred or {}).get('config')
        if kind == 'password':
            if state == PASSWORD_HASHED:
                entry = {'hashed_password': config['hashed_password']}
                if config.get('use_password_migration_hook'):
                    entry['use_password_migration_hook'] = True
                out['password'] = {'config': entry}
            elif state == PASSWORD_MIGRATION_HOOK:
                # no hash yet: the password migration webhook still checks it at the next sign-in
                out['password'] = {'config': {'use_password_migration_hook': True}}
        elif kind in ('oidc', 'saml'):
            providers = _providers(config)
            if providers:
                out[kind] = {'config': {'providers': providers}}
        elif kind == 'totp':
            if config and config.get('totp_url'):
                out['totp'] = {'config': {'totp_url': config['totp_url']}}
        elif kind == 'lookup_secret':
            codes = (config or {}).get('recovery_codes') or (config or {}).get('codes') or []
            if codes:
                out['lookup_secret'] = {'config': {'codes': [
                    dict((k, v) for k, v in c.items() if k in ('code', 'used_at') and v is not None) for c in codes]}}
        elif kind in ('webauthn', 'passkey'):
            creds = (config or {}).get('credentials') or []
            if creds:
                entry = {'credentials': [dict((k, v) for k, v in c.items() if k in WEBAUTHN_FIELDS) for c in creds]}
                if config.get('user_handle') is not None:
                    entry['user_handle'] = config['user_handle']
                out[kind] = {'config': entry}
    return out, sorted(out), state


def import_identity(identity, requested=True):
    """A createIdentityBody for an identity as listed by the admin API (old ID kept in external_id).

    Returns (body, exported credential types, password state); ``requested`` tells whether the
    password credential was asked for (see password_state).
    """
    body = {'schema_id': identity['schema_id'], 'traits': identity.get('traits') or {},
            'external_id': identity.get('external_id') or identity['id']}
    if identity.get('state') in ('active', 'inactive'):
        body['state'] = identity['state']
    for field in ('metadata_public', 'metadata_admin', 'organization_id'):
        if identity.get(field) is not None:
            body[field] = identity[field]
    if identity.get('verifiable_addresses'):
        body['verifiable_addresses'] = [
            dict((k, v) for k, v in a.items() if k in ('value', 'via', 'verified', 'status', 'verified_at') and v is not None)
            for a in identity['verifiable_addresses']]
    if identity.get('recovery_addresses'):
        body['recovery_addresses'] = [dict((k, v) for k, v in a.items() if k in ('value', 'via'))
                                      for a in identity['recovery_addresses']]
    credentials, kinds, state = import_credentials(identity.get('credentials'), requested)
    if credentials:
        body['credentials'] = credentials
    return body, kinds, state


def identity_identifiers(identity):
    out = {}
    for kind, cred in (identity.get('credentials') or {}).items():
        if kind in ('password', 'oidc', 'saml', 'passkey') and (cred or {}).get('identifiers'):
            out[kind] = list(cred['identifiers'])
    return out


def import_client(client):
    return dict((k, v) for k, v in client.items() if k not in CLIENT_READ_ONLY and v is not None)


def jwk_is_private(jwk):
    field = JWK_PRIVATE.get(jwk.get('kty'))
    return bool(field and jwk.get(field))


def b64_url(content):
    return 'base64://' + base64.b64encode(content).decode('ascii')


# -- the export

class OryExporter(object):
    """Exports the project behind an OryConnection into an open backup set (``run``)."""

    def __init__(self, connection, params, check_mode=False):
        self.conn = connection
        self.params = params
        self.check_mode = check_mode
        self.include = set(params.get('include') or KINDS)
        self.credential_types = list(params.get('identity_credentials') or CREDENTIAL_TYPES)
        self.warnings = []
        self.counts = {}
        self.kinds = {}
        self.versions = {}

    def run(self, set_dir, prefix):
        started = time.time()
        started_at = iso(utcnow())
        _backup_set.safe_relpath(prefix)
        if self.params.get('require_password_hashes') and 'identities' in self.include and 'password' not in self.credential_types:
            raise RecoveryError('require_password_hashes=true needs password in identity_credentials: without it the '
                                'API returns no password hash to check')
        if not os.path.isdir(set_dir) or not os.path.isfile(os.path.join(set_dir, _backup_set.MARKER)):
            raise RecoveryError('%s is not an open backup set (create it with idp.recovery.backup_set first)' % set_dir,
                                path=set_dir)
        existing = (_backup_set.read_metadata(set_dir).get(FRAGMENT) or {})
        present = existing.get('prefix') == prefix and existing.get('files') and all(
            os.path.isfile(os.path.join(set_dir, rel)) for rel in existing['files'])
        if present:
            return {'changed': False, 'msg': 'the set already holds an Ory export under %s/' % prefix, 'ory': existing}
        if self.check_mode:
            self.probe()
            return {'changed': True, 'msg': 'would export %s into %s/%s/' % (', '.join(sorted(self.include)), set_dir, prefix)}
        enc = self.params
        bundle = BundleWriter(set_dir, prefix, enc['encryption'], enc['compression'], enc.get('recipients'),
                              enc.get('recipients_file'), enc.get('passphrase'), enc.get('gpg_homedir'))
        try:
            self.versions = self.api_versions()
            if 'config' in self.include:
                self.export_config(bundle)
            if 'identities' in self.include:
                self.export_identities(bundle)
            if 'oauth2_clients' in self.include:
                self.export_clients(bundle)
            if 'jwks' in self.include:
                self.export_jwks(bundle)
            if 'relationships' in self.include:
                self.export_relationships(bundle)
            fragment_ory = {
                'format': BUNDLE_FORMAT,
                'prefix': prefix,
                'deployment': self.conn.deployment,
                'project_id': self.params.get('project_id'),
                'endpoints': self.conn.endpoints(),
                'included': sorted(self.include),
                'counts': self.counts,
                'credentials': self.credential_report,
                'api_versions': self.versions,
                'warnings': self.warnings,
                'started_at': started_at,
                'duration_seconds': round(time.time() - started, 3),
                'requests': self.conn.stats(),
                'files': dict((rel, self.kinds.get(rel)) for rel in sorted(bundle.writers)),
            }
            payloads = bundle.payload_infos(self.kinds)
            bundle.publish({FRAGMENT: fragment_ory, 'payloads': payloads})
        except BaseException:
            bundle.abort()
            raise
        return {'changed': True, 'ory': fragment_ory, 'payloads': sorted(payloads)}

    credential_report = None

    def probe(self):
        """Check mode: prove each API answers with the given keys, write nothing."""
        if 'identities' in self.include:
            self.conn.client('kratos').request('GET', '/admin/identities', query={'page_size': 1})
        if 'oauth2_clients' in self.include:
            self.conn.client('hydra').request('GET', '/admin/clients', query={'page_size': 1})
        if 'relationships' in self.include:
            self.conn.client('keto_read').request('GET', '/namespaces')
        if 'config' in self.include and self.conn.is_network:
            self.project_document()

    def api_versions(self):
        found = {}
        for service in ('kratos', 'hydra', 'keto_read'):
            if not self.conn.has(service):
                continue
            try:
                found[service.replace('_read', '')] = (self.conn.client(service).get_json('/version') or {}).get('version')
            except (OryAPIError, RecoveryError):
                found[service.replace('_read', '')] = None
        return found

    def _kind(self, writer_rel, kind):
        self.kinds[writer_rel] = kind

    def project_document(self):
        project_id = self.params.get('project_id')
        if not project_id:
            raise RecoveryError('exporting the project configuration of Ory Network needs project_id '
                                '(or leave config out of include)')
        return self.conn.client('console').get_json('/projects/%s' % project_id)

    def export_config(self, bundle):
        schemas = self.conn.client('kratos').get_json('/schemas', query={'page_size': 500}) or []
        contents = dict((s['id'], s.get('schema')) for s in schemas if isinstance(s, dict) and 'id' in s)
        bundle.write_whole('resources/identity-schemas.json', dumps(schemas))
        self._kind(bundle.rel('resources/identity-schemas.json'), 'identity_schemas')
        self.counts['identity_schemas'] = len(contents)
        if not self.conn.is_network:
            self.warnings.append('self-hosted Ory keeps its configuration in files: back them up with the deployment '
                                 '(only the identity schemas were exported)')
            return
        project = self.project_document()
        bundle.write_whole('resources/project.json', dumps(project))
        self._kind(bundle.rel('resources/project.json'), 'project')
        services = project.get('services') or {}
        identity = dict((services.get('identity') or {}).get('config') or {})
        schema_list = (identity.get('identity') or {}).get('schemas') or []
        embedded = []
        for entry in schema_list:
            sid = entry.get('id')
            if sid in contents and contents[sid] is not None:
                content = dumps(contents[sid])
            else:
                content = fetch_content(entry.get('url') or '', self.conn, 'identity schema %s' % sid)
            embedded.append(dict(entry, url=b64_url(content)))
        if schema_list:
            identity['identity'] = dict(identity['identity'], schemas=embedded)
        permission = dict((services.get('permission') or {}).get('config') or {})
        namespaces = permission.get('namespaces')
        if isinstance(namespaces, dict) and namespaces.get('location'):
            opl = fetch_content(namespaces['location'], self.conn, 'the permission rules (OPL)')
            bundle.write_whole('resources/permissions.opl', opl)
            self._kind(bundle.rel('resources/permissions.opl'), 'opl')
            permission['namespaces'] = dict(namespaces, location=b64_url(opl))
        body = {
            'name': project.get('name') or 'restored project',
            'cors_admin': project.get('cors_admin') or {'enabled': False, 'origins': []},
            'cors_public': project.get('cors_public') or {'enabled': False, 'origins': []},
            'organizations': project.get('organizations') or [],
            'services': {
                'identity': {'config': identity},
                'oauth2': {'config': (services.get('oauth2') or {}).get('config') or {}},
                'permission': {'config': permission},
            },
        }
        bundle.write_whole('restore/project.json', dumps(body))
        self._kind(bundle.rel('restore/project.json'), 'project_config')
        self.counts['project_config'] = 1

    def export_identities(self, bundle):
        kratos = self.conn.client('kratos')
        raw = bundle.open('resources/identities.pages.jsonl')
        self._kind(bundle.rel('resources/identities.pages.jsonl'), 'identity_pages')
        restore = JsonArrayWriter(bundle.open('restore/identities.json'))
        self._kind(bundle.rel('restore/identities.json'), 'identities')
        index = JsonArrayWriter(bundle.open('restore/identity-index.json'))
        self._kind(bundle.rel('restore/identity-index.json'), 'identity_index')
        per_type = dict((kind, 0) for kind in self.credential_types)
        withheld = dict((kind, 0) for kind in self.credential_types)
        password_requested = 'password' in self.credential_types
        states = dict((state, 0) for state in (PASSWORD_HASHED, PASSWORD_MIGRATION_HOOK, PASSWORD_NONE, PASSWORD_WITHHELD,
                                               PASSWORD_NOT_REQUESTED))
        empty_password = 0
        withheld_sample = None
        total = 0
        pages = 0
        seen_ids = set()
        query = {'include_credential': self.credential_types}
        for page in kratos.pages_by_link('/admin/identities', query=query, page_size=IDENTITY_PAGE_SIZE):
            pages += 1
            raw.write(dumps(page) + b'\n')
            for identity in page:
                if not isinstance(identity, dict) or not identity.get('id') or not identity.get('schema_id'):
                    raise RecoveryError('the identity list holds an entry without id or schema_id (page %d)' % pages)
                if identity['id'] in seen_ids:
                    raise RecoveryError('identity %s was listed twice; the listing is inconsistent' % identity['id'])
                seen_ids.add(identity['id'])
                body, kinds, state = import_identity(identity, password_requested)
                for kind in kinds:
                    if kind in per_type:
                        per_type[kind] += 1
                credentials = identity.get('credentials') or {}
                for kind in withheld:
                    if kind in credentials and not isinstance((credentials[kind] or {}).get('config'), dict):
                        withheld[kind] += 1
                states[state] += 1
                if state == PASSWORD_NONE and 'password' in credentials:
                    empty_password += 1
                if state == PASSWORD_WITHHELD and withheld_sample is None:
                    withheld_sample = identity['id']
                restore.add(body)
                index.add({'id': identity['id'], 'external_id': body['external_id'],
                           'identifiers': identity_identifiers(identity)})
                total += 1
        restore.close()
        index.close()
        for name in ('resources/identities.pages.jsonl', 'restore/identities.json', 'restore/identity-index.json'):
            bundle.writers[bundle.rel(name)].commit()
        self.counts['identities'] = total
        self.counts['identity_pages'] = pages
        cause = self.withheld_cause(kratos, withheld_sample) if withheld_sample else None
        self.credential_report = {
            'exported': per_type,
            'identities': total,
            'password_hashes': states[PASSWORD_HASHED],
            'password_migration_hook': states[PASSWORD_MIGRATION_HOOK],
            'without_password': states[PASSWORD_NONE],
            'empty_password_credentials': empty_password,
            'password_hashes_withheld': states[PASSWORD_WITHHELD],
            # the former name of password_hashes_withheld, kept for readers of older sets
            'password_hashes_missing': states[PASSWORD_WITHHELD],
            'password_not_requested': states[PASSWORD_NOT_REQUESTED],
            'withheld': dict((k, v) for k, v in withheld.items() if v),
            'withheld_cause': cause,
            'requested': list(self.credential_types),
        }
        if states[PASSWORD_WITHHELD]:
            msg = ('%d identities have a password credential whose hash the API withheld (asked for with '
                   'include_credential=password, listed without its configuration%s); they cannot keep their password '
                   'after a restore. %d identities have no password (never set) and do not count'
                   % (states[PASSWORD_WITHHELD], WITHHELD_CAUSES.get(cause, ''), states[PASSWORD_NONE]))
            if self.params.get('require_password_hashes'):
                raise RecoveryError(msg + ' (require_password_hashes=true)',
                                    password_hashes_withheld=states[PASSWORD_WITHHELD],
                                    without_password=states[PASSWORD_NONE], withheld_cause=cause)
            self.warnings.append(msg)
        others = sorted('%s (%d)' % (k, v) for k, v in withheld.items() if v and k != 'password')
        if others:
            self.warnings.append('the API withheld the configuration of these requested credential types, which are '
                                 'not in the export: %s' % ', '.join(others))
        if per_type.get('totp'):
            self.warnings.append('%d identities have TOTP; imported TOTP secrets may not validate in the target project '
                                 '(ory/kratos#4561): be ready to ask these users to enroll again' % per_type['totp'])

    def withheld_cause(self, kratos, identity_id):
        """Why a password configuration came without its content: ask for the same identity by its ID.

        GET /admin/identities/{id} declassifies the credentials named in include_credential
        (identity/handler.go, get); a listing that ignores the parameter (Kratos before ory/kratos#3190
        was done, or an API that does not honour it as asked, ory/network#425) is told apart from an
        API that withholds the configuration everywhere.
        """
        try:
            one = kratos.get_json('/admin/identities/%s' % identity_id, query={'include_credential': ['password']}) or {}
        except OryAPIError:
            return None
        state = password_state(one.get('credentials'))
        if state == PASSWORD_WITHHELD:
            return 'api_withholds'
        return 'list_ignored_include_credential'

    def export_clients(self, bundle):
        hydra = self.conn.client('hydra')
        raw = bundle.open('resources/oauth2-clients.pages.jsonl')
        self._kind(bundle.rel('resources/oauth2-clients.pages.jsonl'), 'oauth2_client_pages')
        restore = JsonArrayWriter(bundle.open('restore/oauth2-clients.json'))
        self._kind(bundle.rel('restore/oauth2-clients.json'), 'oauth2_clients')
        total = 0
        with_secret = 0
        for page in hydra.pages_by_link('/admin/clients', page_size=CLIENT_PAGE_SIZE):
            raw.write(dumps(page) + b'\n')
            for client in page:
                if not client.get('client_id'):
                    raise RecoveryError('the OAuth2 client list holds an entry without client_id')
                restore.add(import_client(client))
                total += 1
                if client_auth(client)[1] == 'secret':
                    with_secret += 1
        restore.close()
        for name in ('resources/oauth2-clients.pages.jsonl', 'restore/oauth2-clients.json'):
            bundle.writers[bundle.rel(name)].commit()
        self.counts['oauth2_clients'] = total
        if with_secret:
            self.warnings.append('OAuth2 client secrets cannot be exported (Hydra keeps only their hashes): the %d '
                                 'clients that use one need their secrets from a vault at restore, or get new ones '
                                 '(see the rotation report of ory_import)' % with_secret)

    def export_jwks(self, bundle):
        hydra = self.conn.client('hydra')
        names = list(DEFAULT_JWK_SETS) + [n for n in (self.params.get('jwk_sets') or []) if n not in DEFAULT_JWK_SETS]
        sets = {}
        public_only = []
        for name in names:
            try:
                body = hydra.get_json('/admin/keys/%s' % name)
            except OryAPIError as exc:
                if exc.status == 404:
                    if name in (self.params.get('jwk_sets') or []):
                        raise RecoveryError('JWK set %s does not exist in the source project' % name)
                    continue
                raise
            keys = (body or {}).get('keys') or []
            sets[name] = {'keys': keys}
            for number, jwk in enumerate(keys):
                if not jwk_is_private(jwk):
                    public_only.append('%s/%s' % (name, jwk.get('kid')))
                rel_name = 'restore/jwk/%s/%d.json' % (re.sub(r'[^A-Za-z0-9_.-]', '_', name), number)
                bundle.write_whole(rel_name, dumps(jwk))
                self._kind(bundle.rel(rel_name), 'jwk')
        bundle.write_whole('resources/jwk-sets.json', dumps(sets))
        self._kind(bundle.rel('resources/jwk-sets.json'), 'jwk_sets')
        self.counts['jwk_sets'] = len(sets)
        self.counts['jwks'] = sum(len(s['keys']) for s in sets.values())
        self.warnings.append('Ory has no API that lists JWK set names: exported %s; name any other set in jwk_sets'
                             % (', '.join(sorted(sets)) or 'no set'))
        if public_only:
            self.warnings.append('these keys came without their private part (HSM-backed or public keys) and cannot be '
                                 'restored as signing keys: %s' % ', '.join(public_only))

    def export_relationships(self, bundle):
        keto = self.conn.client('keto_read')
        namespaces = self.params.get('keto_namespaces')
        if not namespaces:
            body = keto.get_json('/namespaces') or {}
            namespaces = [n.get('name') for n in body.get('namespaces') or [] if n.get('name')]
        raw = bundle.open('resources/relation-tuples.pages.jsonl')
        self._kind(bundle.rel('resources/relation-tuples.pages.jsonl'), 'relation_tuple_pages')
        restore = JsonArrayWriter(bundle.open('restore/relationships.json'))
        self._kind(bundle.rel('restore/relationships.json'), 'relationships')
        per_namespace = {}
        for namespace in namespaces:
            count = 0
            for page in keto.pages_by_token('/relation-tuples', query={'namespace': namespace}, page_size=TUPLE_PAGE_SIZE):
                raw.write(dumps({'namespace': namespace, 'page': page}) + b'\n')
                for item in page.get('relation_tuples') or []:
                    tuple_ = dict((k, item[k]) for k in ('namespace', 'object', 'relation', 'subject_id', 'subject_set')
                                  if item.get(k) is not None)
                    restore.add(tuple_)
                    count += 1
            per_namespace[namespace] = count
        restore.close()
        for name in ('resources/relation-tuples.pages.jsonl', 'restore/relationships.json'):
            bundle.writers[bundle.rel(name)].commit()
        self.counts['relationships'] = sum(per_namespace.values())
        self.counts['relationships_per_namespace'] = per_namespace
        self.counts['namespaces'] = len(namespaces)
