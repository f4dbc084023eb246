# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: import of an Ory export bundle into a clean target project.

The order is config (identity schemas and the OPL re-embedded), identities (the batch endpoint,
strictly serial, the old ID kept in ``external_id``), OAuth2 clients (secrets from a supplied map
or newly generated), JWK sets, and relation tuples with identity subject IDs remapped to the new
IDs. Every step first reads what the target already holds, so that a second run after a partial
failure skips what is there and reports ``changed: false`` when nothing is left to do. The
whole bundle is decrypted, parsed and checked before the first write.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import re
import secrets
import threading
import time
import uuid

from ansible.module_utils.six.moves.urllib.parse import quote, quote_plus

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    RecoveryError,
    dump_json,
    ensure_dir,
    fsync_dir,
    iso,
    utcnow,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._ory import CLIENT_AUTH, OryAPIError, backoff_delay, client_auth
from ansible_collections.idp.recovery.plugins.module_utils._ory_bundle import (
    BUNDLE_FORMAT,
    FRAGMENT,
    PayloadWriter,
    dumps,
    find_payload,
    RELATIONSHIPS_FILE,
    read_json_payload,
    remap_tuple,
    stream_array_payload,
    write_relationships_file,
)
from ansible_collections.idp.recovery.plugins.module_utils._ory_export import KINDS, fetch_content
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, encryption_backend
from ansible_collections.idp.recovery.plugins.module_utils._stream import hash_file

IDENTITY_FIELDS = ('schema_id', 'traits', 'external_id', 'state', 'metadata_public', 'metadata_admin', 'organization_id',
                   'verifiable_addresses', 'recovery_addresses', 'credentials')
IMPORTABLE_CREDENTIALS = ('password', 'oidc', 'saml', 'totp', 'lookup_secret', 'webauthn', 'passkey')
BATCH_MAX = 1000
TUPLE_BATCH = 500
LOOKUP_LIMIT = 50
CONFLICT_SAMPLE = 20
PATCH_NAMESPACE = uuid.UUID('5b0c3f7e-8f1e-4c55-9a43-2e9f0b7a51d1')
# the services the version gate reads, the client that reaches each, and the kinds each one restores
GATED_SERVICES = (
    ('kratos', 'kratos', ('config', 'identities')),
    ('hydra', 'hydra', ('oauth2_clients', 'jwks')),
    ('keto', 'keto_read', ('relationships',)),
)
_RELEASE = re.compile(r'^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.+-]*)?$')


def release_line(version):
    """(major, minor) of an Ory version such as v1.3.1, 25.4.0 or v26.2.0-pre.1; None for anything else."""
    match = _RELEASE.match(str(version or '').strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def version_gate(service, export_version, target_version, force=False, target_error=None):
    """Decide whether an export of ``service`` at export_version may be imported into target_version.

    A newer release line (major.minor) than the target's is refused: the import bodies follow the
    export's API, which an older server may not accept. An older line passes with a warning. A version
    that is missing or not a version (an export that recorded none, a target whose /version did not
    answer) is refused too: the gate cannot tell, unless both sides report the very same string.
    ``force`` turns every refusal into a warning.
    Returns a dict (ok, forced, reason, warning, the versions and their lines).
    """
    export_line = release_line(export_version)
    target_line = release_line(target_version)
    result = {'service': service, 'export_version': export_version, 'target_version': target_version,
              'export_line': '%d.%d' % export_line if export_line else None,
              'target_line': '%d.%d' % target_line if target_line else None, 'warning': None}
    reason = None
    if export_version and str(export_version).strip() == str(target_version or '').strip():
        pass  # the same build on both sides, also when it is not a release number (a development build)
    elif export_line is None:
        reason = ('the export records no %s version (%s): the backup set cannot tell which API its bodies follow'
                  % (service, 'not a version: %r' % export_version if export_version else 'api_versions has none'))
    elif target_line is None:
        reason = ('the %s version of the target is unknown (%s)' % (
            service, 'not a version: %r' % target_version if target_version else 'GET /version: %s' % (
                target_error or 'no version in the answer')))
    elif export_line > target_line:
        reason = ('the export comes from %s %s (line %s), newer than the target %s (line %s): the target may refuse '
                  'or misread what a newer release wrote; upgrade the target to line %s or newer' % (
                      service, export_version, result['export_line'], target_version, result['target_line'],
                      result['export_line']))
    elif export_line < target_line:
        result['warning'] = ('the export comes from %s %s (line %s), older than the target %s (line %s): it is '
                             'imported; check the plan and the restored data for what the newer release changed' % (
                                 service, export_version, result['export_line'], target_version,
                                 result['target_line']))
    result['ok'] = reason is None or bool(force)
    result['forced'] = reason is not None and bool(force)
    result['reason'] = reason
    return result


def _fail_bundle(rel, msg):
    raise RecoveryError('the Ory bundle is malformed, nothing was written: %s: %s' % (rel, msg), path=rel)


def check_identity(body, rel, number):
    if not isinstance(body, dict):
        _fail_bundle(rel, 'item %d is not an object' % number)
    unknown = [k for k in body if k not in IDENTITY_FIELDS]
    if unknown:
        _fail_bundle(rel, 'item %d has fields the import API refuses: %s' % (number, ', '.join(sorted(unknown))))
    if not isinstance(body.get('schema_id'), str) or not isinstance(body.get('traits'), dict):
        _fail_bundle(rel, 'item %d needs schema_id and traits' % number)
    if not isinstance(body.get('external_id'), str) or not body['external_id']:
        _fail_bundle(rel, 'item %d has no external_id (the old identity ID)' % number)
    creds = body.get('credentials') or {}
    if not isinstance(creds, dict):
        _fail_bundle(rel, 'item %d: credentials must be an object' % number)
    for kind, value in creds.items():
        if kind not in IMPORTABLE_CREDENTIALS:
            _fail_bundle(rel, 'item %d: credentials of type %s cannot be imported' % (number, kind))
        if not isinstance(value, dict) or not isinstance(value.get('config'), dict) or set(value) - set(['config']):
            _fail_bundle(rel, 'item %d: credentials.%s must be {"config": {...}}' % (number, kind))


def check_tuple(item, rel, number):
    if not isinstance(item, dict):
        _fail_bundle(rel, 'item %d is not an object' % number)
    for field in ('namespace', 'object', 'relation'):
        if not isinstance(item.get(field), str) or not item[field]:
            _fail_bundle(rel, 'item %d has no %s' % (number, field))
    if bool(item.get('subject_id')) == bool(item.get('subject_set')):
        _fail_bundle(rel, 'item %d needs exactly one of subject_id and subject_set' % number)
    unknown = set(item) - set(['namespace', 'object', 'relation', 'subject_id', 'subject_set'])
    if unknown:
        _fail_bundle(rel, 'item %d has unknown fields %s' % (number, ', '.join(sorted(unknown))))


def check_client_auth(client, rel):
    """The client's token_endpoint_auth_method is one Hydra knows, with the keys it needs: Hydra refuses a
    private_key_jwt client without jwks or jwks_uri, and a client with both (ory/hydra client/validator.go,
    Validate); here that is found before anything is written."""
    method, kind = client_auth(client)
    cid = client.get('client_id')
    if kind is None:
        _fail_bundle(rel, 'client %s has token_endpoint_auth_method %r; this collection restores %s'
                     % (cid, method, ', '.join(sorted(CLIENT_AUTH))))
    has_jwks, has_uri = client.get('jwks') is not None, bool(client.get('jwks_uri'))
    if has_jwks and has_uri:
        _fail_bundle(rel, 'client %s has both jwks and jwks_uri; Hydra accepts only one of them' % cid)
    if kind == 'keys' and not (has_jwks or has_uri):
        _fail_bundle(rel, 'client %s authenticates with private_key_jwt but has neither jwks nor jwks_uri' % cid)


def tuple_key(item):
    sset = item.get('subject_set') or {}
    return (item['namespace'], item['object'], item['relation'], item.get('subject_id') or '',
            (sset.get('namespace'), sset.get('object'), sset.get('relation')) if sset else ())


def content_digest(content):
    return hashlib.sha256(content).hexdigest()


class Bundle(object):
    """An Ory export inside a complete backup set."""

    def __init__(self, set_dir, prefix, keys):
        self.set_dir = set_dir
        self.prefix = prefix
        self.keys = keys
        if not os.path.isdir(set_dir):
            raise RecoveryError('backup set %s does not exist' % set_dir, path=set_dir)
        if not _backup_set.is_complete(set_dir):
            raise RecoveryError('backup set %s is incomplete (no %s); it is never restored' % (set_dir, _backup_set.MANIFEST),
                                path=set_dir)
        metadata = _backup_set.read_metadata(set_dir)
        self.ory = metadata.get(FRAGMENT) or {}
        if not self.ory:
            raise RecoveryError('backup set %s holds no Ory export (no "ory" metadata)' % set_dir, path=set_dir)
        if self.ory.get('format') != BUNDLE_FORMAT:
            raise RecoveryError('the Ory export in %s has format %r; this collection reads format %d'
                                % (set_dir, self.ory.get('format'), BUNDLE_FORMAT), path=set_dir)
        if self.ory.get('prefix') != prefix:
            raise RecoveryError('the Ory export in %s lives under %s/, not %s/' % (set_dir, self.ory.get('prefix'), prefix),
                                path=set_dir)
        self.payloads = metadata.get('payloads') or {}
        self.counts = self.ory.get('counts') or {}
        self.check_files()

    def check_files(self):
        """Every file of the export is listed, a regular file and matches the manifest; then the whole set
        verifies (no unlisted file, no link, every payload as metadata.json recorded it)."""
        manifest = dict(_backup_set.read_manifest(self.set_dir))
        for rel in self.ory.get('files') or {}:
            full = _backup_set.payload_path(self.set_dir, rel, manifest, 'ory.files')
            digest, _size = hash_file(full)
            if digest != manifest[rel]:
                raise RecoveryError('%s does not match its checksum in the manifest; the set is damaged' % rel,
                                    path=self.set_dir)
        checks, _unlisted = _backup_set.verify_checksums(self.set_dir)
        failed = [item['error'] for item in checks if not item['ok']]
        if failed:
            raise RecoveryError('backup set %s failed verification: %s' % (self.set_dir, '; '.join(failed)),
                                path=self.set_dir, files=checks)

    def rel(self, name):
        return find_payload(self.set_dir, self.prefix, name, self.ory.get('files') or {})

    def need(self, name):
        rel = self.rel(name)
        if rel is None:
            raise RecoveryError('the Ory export in %s has no %s' % (self.set_dir, name), path=self.set_dir)
        return rel

    def has(self, kind):
        return kind in (self.ory.get('included') or [])

    def stream(self, name, handle):
        return stream_array_payload(self.set_dir, self.need(name), self.keys, handle)

    def load(self, name):
        return read_json_payload(self.set_dir, self.need(name), self.keys)

    def jwk_sets(self):
        return self.load('resources/jwk-sets.json') or {}

    def validate(self, include, network):
        """Decrypt, parse and check every payload the import will use; compare the counts."""
        found = {}
        self.schema_ids = set()

        def expect(kind, count, rel):
            recorded = self.counts.get(kind)
            if recorded is not None and recorded != count:
                _fail_bundle(rel, 'holds %d items, the export recorded %d' % (count, recorded))
            found[kind] = count

        if 'identities' in include and self.has('identities'):
            counter = [0]

            def identity(item):
                counter[0] += 1
                check_identity(item, 'restore/identities.json', counter[0])
                self.schema_ids.add(item['schema_id'])
            expect('identities', self.stream('restore/identities.json', identity), 'restore/identities.json')
            index_count = [0]

            def index(item):
                index_count[0] += 1
                if not isinstance(item, dict) or not item.get('id') or not item.get('external_id'):
                    _fail_bundle('restore/identity-index.json', 'item %d needs id and external_id' % index_count[0])
            expect('identities', self.stream('restore/identity-index.json', index), 'restore/identity-index.json')
        if 'oauth2_clients' in include and self.has('oauth2_clients'):
            def client(item):
                if not isinstance(item, dict) or not isinstance(item.get('client_id'), str) or 'client_secret' in item:
                    _fail_bundle('restore/oauth2-clients.json', 'every client needs a client_id and no client_secret')
                check_client_auth(item, 'restore/oauth2-clients.json')
            expect('oauth2_clients', self.stream('restore/oauth2-clients.json', client), 'restore/oauth2-clients.json')
        if 'jwks' in include and self.has('jwks'):
            sets = self.jwk_sets()
            if not isinstance(sets, dict) or any(not isinstance(v, dict) or not isinstance(v.get('keys'), list)
                                                 for v in sets.values()):
                _fail_bundle('resources/jwk-sets.json', 'expected {"<set>": {"keys": [...]}}')
            expect('jwk_sets', len(sets), 'resources/jwk-sets.json')
        if 'relationships' in include and self.has('relationships'):
            counter = [0]

            def relation(item):
                counter[0] += 1
                check_tuple(item, 'restore/relationships.json', counter[0])
            expect('relationships', self.stream('restore/relationships.json', relation), 'restore/relationships.json')
        if 'config' in include and network and self.rel('restore/project.json'):
            body = self.load('restore/project.json')
            if not isinstance(body, dict) or not isinstance(body.get('services'), dict):
                _fail_bundle('restore/project.json', 'expected a project body with services')
            found['project_config'] = 1
        return found

    schema_ids = ()


class Importer(object):
    def __init__(self, connection, params, keys, check_mode=False):
        self.conn = connection
        self.params = params
        self.keys = keys
        self.check_mode = check_mode
        self.include = set(params.get('include') or KINDS)
        self.batch_size = min(BATCH_MAX, max(1, params.get('batch_size') or BATCH_MAX))
        self.warnings = []
        self.result = {'created': {}, 'existing': {}, 'conflicts': {}, 'updated': {}}
        self.by_external = {}
        self.target_identifiers = {}
        self.index = {}
        self.state_dir = None
        self.map_log = None

    # -- target state

    def list_target_identities(self):
        self.by_external = {}
        self.target_identifiers = {}
        kratos = self.conn.client('kratos')
        for page in kratos.pages_by_link('/admin/identities', page_size=500):
            for identity in page:
                ext = identity.get('external_id')
                if ext:
                    self.by_external[ext] = identity['id']
                for kind, cred in (identity.get('credentials') or {}).items():
                    if kind in ('password', 'oidc', 'saml', 'passkey'):
                        for ident in (cred or {}).get('identifiers') or []:
                            self.target_identifiers[(kind, ident)] = ext or identity['id']

    def load_index(self, bundle, plan=None):
        """old ID -> external ID (the same string object when they are equal, to save memory).

        With ``plan``, count what exists and find identifier conflicts on the way, without keeping
        the identifiers.
        """
        self.index = {}
        conflicts = self.result['conflicts'].setdefault('identities', [])

        def add(item):
            old_id, ext = item['id'], item['external_id']
            self.index[old_id] = old_id if ext == old_id else ext
            if plan is None:
                return
            if ext in self.by_external:
                plan['existing'] += 1
                return
            plan['create'] += 1
            for kind, values in (item.get('identifiers') or {}).items():
                for ident in values:
                    owner = self.target_identifiers.get((kind, ident))
                    if owner is not None and owner != ext:
                        conflicts.append({'external_id': ext, 'old_id': old_id, 'credential': kind,
                                          'identifier': ident, 'reason': 'identifier in use by another identity'})
        bundle.stream('restore/identity-index.json', add)

    # -- the plan

    def plan(self, bundle):
        plan = {}
        network = self.conn.is_network
        if 'config' in self.include and network and bundle.rel('restore/project.json'):
            plan['config'] = 'update' if self.config_differs(bundle) else 'same'
        if 'identities' in self.include and bundle.has('identities'):
            self.list_target_identities()
            counts = {'create': 0, 'existing': 0}
            self.load_index(bundle, counts)
            conflicts = self.result['conflicts']['identities']
            create, existing = counts['create'], counts['existing']
            if create and plan.get('config') != 'update':
                known = set(s.get('id') for s in self.conn.client('kratos').get_json('/schemas', query={'page_size': 500}) or [])
                for schema_id in sorted(set(bundle.schema_ids) - known):
                    conflicts.append({'schema_id': schema_id, 'reason': 'identity schema %s is not in the target project '
                                      '(restore the config first)' % schema_id})
            plan['identities'] = {'create': create, 'existing': existing, 'conflicts': len(conflicts)}
        if 'oauth2_clients' in self.include and bundle.has('oauth2_clients'):
            target = set()
            for page in self.conn.client('hydra').pages_by_link('/admin/clients', page_size=500):
                target.update(c['client_id'] for c in page)
            wanted = []
            bundle.stream('restore/oauth2-clients.json', lambda c: wanted.append((c['client_id'], client_auth(c)[1])))
            self.target_clients = target
            create = [(cid, kind) for cid, kind in wanted if cid not in target]
            plan['oauth2_clients'] = {'create': len(create), 'existing': len(wanted) - len(create), 'conflicts': 0}
            supplied = self.params.get('client_secrets') or {}
            # only a client that authenticates with a shared secret needs one: a private_key_jwt client signs
            # its assertion with its own keys, a public client has no credential (ory/fosite
            # client_authentication.go, AuthenticateClient)
            missing = [cid for cid, kind in create if kind == 'secret' and cid not in supplied]
            unused = sorted(cid for cid, kind in create if kind != 'secret' and cid in supplied)
            if unused:
                self.warnings.append('client_secrets names %d clients that authenticate without a shared secret '
                                     '(private_key_jwt or none): their secret is not used (%s)'
                                     % (len(unused), ', '.join(unused[:CONFLICT_SAMPLE])))
            plan['oauth2_clients']['secrets_supplied'] = len([c for c, kind in create if kind == 'secret' and c in supplied])
            plan['oauth2_clients']['secrets_to_generate'] = len(missing)
            plan['oauth2_clients']['without_secret'] = {'keys': len([1 for _c, kind in create if kind == 'keys']),
                                                        'none': len([1 for _c, kind in create if kind == 'none'])}
            self.secrets_to_generate = missing
        if 'jwks' in self.include and bundle.has('jwks'):
            sets = bundle.jwk_sets()
            hydra = self.conn.client('hydra')
            actions = {}
            for name, body in sorted(sets.items()):
                try:
                    current = hydra.get_json('/admin/keys/%s' % name)
                except OryAPIError as exc:
                    if exc.status != 404:
                        raise
                    current = None
                if current is None or not current.get('keys'):
                    actions[name] = 'create'
                elif _jwk_fingerprint(current.get('keys')) == _jwk_fingerprint(body.get('keys')):
                    actions[name] = 'same'
                else:
                    actions[name] = 'replace' if self.params.get('replace_jwk_sets', True) else 'conflict'
            plan['jwk_sets'] = actions
            self.jwk_actions = actions
        if 'relationships' in self.include and bundle.has('relationships'):
            plan['relationships'] = self.plan_tuples(bundle, plan.get('config') == 'update')
        return plan

    target_clients = ()
    secrets_to_generate = ()
    jwk_actions = None

    def plan_tuples(self, bundle, config_pending):
        if not self.index and bundle.has('identities'):
            # subjects are remapped through the identities of the bundle, imported now or before
            self.list_target_identities()
            self.load_index(bundle)
        elif not bundle.has('identities'):
            self.warnings.append('the export holds no identities: relation tuple subjects are restored as they were, '
                                 'not remapped to new identity IDs')
        keto = self.conn.client('keto_read')
        namespaces = set(n.get('name') for n in (keto.get_json('/namespaces') or {}).get('namespaces') or [])
        self.target_tuples = set()
        wanted_namespaces = set()

        def note(item):
            wanted_namespaces.add(item['namespace'])
        bundle.stream('restore/relationships.json', note)
        missing = sorted(wanted_namespaces - namespaces)
        if missing and not config_pending:
            self.result['conflicts']['relationships'] = [
                {'namespace': n, 'reason': 'namespace is not defined in the target (restore the config first)'} for n in missing]
        for namespace in sorted(wanted_namespaces & namespaces):
            for page in keto.pages_by_token('/relation-tuples', query={'namespace': namespace}, page_size=1000):
                for item in page.get('relation_tuples') or []:
                    self.target_tuples.add(tuple_key(item))
        counts = {'create': 0, 'existing': 0, 'unmapped': 0, 'conflicts': len(missing) if not config_pending else 0}

        def count(item):
            mapped = self.remap(item)
            if mapped is None:
                # it names identities of the bundle that are not in the target: created first, or left out
                counts['create' if 'identities' in self.include and bundle.has('identities') else 'unmapped'] += 1
            elif tuple_key(mapped) in self.target_tuples:
                counts['existing'] += 1
            else:
                counts['create'] += 1
        bundle.stream('restore/relationships.json', count)
        return counts

    target_tuples = ()

    def remap(self, item):
        """The tuple with identity IDs (subject, object, subject set object) replaced by the new IDs; None when
        it cannot be mapped yet."""
        return remap_tuple(item, self.new_id_of)

    def new_id_of(self, value):
        """The new ID of an identity of the bundle; False for a value that is none; None when not in the target."""
        if not value or value not in self.index:
            return False
        return self.by_external.get(self.index[value])

    def write_relationships(self, bundle):
        """<state_dir>/relationships.json: the bundle's tuples with the new identity IDs, for the stock CLI."""
        path = os.path.join(self.state_dir, RELATIONSHIPS_FILE)
        written, left_out = write_relationships_file(
            path, lambda handle: bundle.stream('restore/relationships.json', handle), self.new_id_of)
        self.relationships_file = path
        if left_out:
            self.warnings.append('%d relation tuples name an identity that is not in the target; %s leaves them out'
                                 % (left_out, path))
        return written

    relationships_file = None

    # -- config

    def normalized_services(self, services):
        """Services config with schema and OPL locations replaced by a digest of their content."""
        out = json.loads(json.dumps(services))
        identity = ((out.get('identity') or {}).get('config') or {}).get('identity') or {}
        for entry in identity.get('schemas') or []:
            entry['url'] = 'sha256:' + content_digest(_canonical_json(fetch_content(entry.get('url') or '', self.conn, 'schema')))
        namespaces = ((out.get('permission') or {}).get('config') or {}).get('namespaces')
        if isinstance(namespaces, dict) and namespaces.get('location'):
            namespaces['location'] = 'sha256:' + content_digest(fetch_content(namespaces['location'], self.conn, 'OPL'))
        return out

    def config_differs(self, bundle):
        body = bundle.load('restore/project.json')
        current = self.conn.client('console').get_json('/projects/%s' % self.project_id())
        self.project_body = body
        self.current_project = current
        wanted = self.normalized_services(body.get('services') or {})
        have = self.normalized_services(dict((k, v) for k, v in (current.get('services') or {}).items()
                                             if k in ('identity', 'oauth2', 'permission')))
        return wanted != have

    project_body = None
    current_project = None

    def project_id(self):
        project_id = self.params.get('project_id')
        if not project_id:
            raise RecoveryError('restoring the project configuration of Ory Network needs project_id of the target '
                                '(or leave config out of include)')
        return project_id

    def apply_config(self):
        body = dict(self.project_body)
        body['name'] = self.current_project.get('name') or body.get('name')
        body['services'] = dict((k, v) for k, v in body['services'].items() if k in ('identity', 'oauth2', 'permission'))
        answer = self.conn.client('console').request('PUT', '/projects/%s' % self.project_id(), json_body=body).json() or {}
        for warning in answer.get('warnings') or []:
            self.warnings.append('project update: %s' % (warning.get('message') or warning))
        self.result['updated']['config'] = True

    # -- identities

    def import_identities(self, bundle):
        sender = SerialSender()
        pending = []
        created = [0]

        def send(items):
            created[0] += self.send_batch(items)

        def add(body):
            if body['external_id'] in self.by_external:
                return
            pending.append(body)
            if len(pending) >= self.batch_size:
                # one batch in flight while the next one is read: the writes stay strictly serial
                sender.submit(send, list(pending))
                del pending[:]
        try:
            bundle.stream('restore/identities.json', add)
            if pending:
                sender.submit(send, list(pending))
        finally:
            sender.drain()
        self.result['created']['identities'] = created[0]
        self.write_id_map()

    def write_id_map(self):
        """id-map.json, written as a stream: old ID -> new ID of every identity of the bundle in the target."""
        path = os.path.join(self.state_dir, 'id-map.json')
        tmp = path + '.partial-%s' % os.urandom(4).hex()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(b'{')
                first = True
                for old_id, ext in self.index.items():
                    new = self.by_external.get(ext)
                    if new is None:
                        continue
                    handle.write((b'' if first else b',') + b'\n' + json.dumps(old_id).encode('utf-8') + b': '
                                 + json.dumps(new).encode('utf-8'))
                    first = False
                handle.write(b'\n}\n')
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def send_batch(self, items):
        kratos = self.conn.client('kratos')
        attempt = 0
        made = 0
        conflicts = self.result['conflicts'].setdefault('identities', [])
        while items:
            patches = []
            by_patch = {}
            for body in items:
                patch_id = str(uuid.uuid5(PATCH_NAMESPACE, body['external_id']))
                by_patch[patch_id] = body
                patches.append({'patch_id': patch_id, 'create': body})
            try:
                answer = kratos.request('PATCH', '/admin/identities', json_body={'identities': patches},
                                        retry_errors=False).json() or {}
            except OryAPIError as exc:
                if exc.status == 409:
                    answer = {'identities': [{'patch_id': p, 'action': 'error', 'error': {'code': 409, 'message': exc.msg}}
                                             for p in by_patch]}
                elif exc.details.get('retryable') and attempt < kratos.retries:
                    # the batch may have been applied: look at the target again before sending what is missing
                    attempt += 1
                    time.sleep(backoff_delay(attempt, kratos.max_backoff))
                    self.list_target_identities()
                    items = [b for b in items if b['external_id'] not in self.by_external]
                    continue
                else:
                    raise
            failed = []
            new_pairs = []
            for entry in answer.get('identities') or []:
                body = by_patch.get(entry.get('patch_id'))
                if body is None:
                    continue
                if entry.get('action') == 'create' and entry.get('identity'):
                    self.by_external[body['external_id']] = entry['identity']
                    new_pairs.append((body['external_id'], entry['identity']))
                    made += 1
                else:
                    failed.append((body, entry.get('error') or {}))
            self.log_pairs(new_pairs)
            items = []
            if failed:
                self.resolve_failed(failed, conflicts)
        return made

    def resolve_failed(self, failed, conflicts):
        """Items the batch refused: already there (a former run) or a real conflict."""
        kratos = self.conn.client('kratos')
        if len(failed) > LOOKUP_LIMIT:
            self.list_target_identities()
        for body, error in failed:
            ext = body['external_id']
            if ext not in self.by_external and len(failed) <= LOOKUP_LIMIT:
                try:
                    found = kratos.get_json('/admin/identities/by/external/%s' % _quote(ext))
                    self.by_external[ext] = found['id']
                except OryAPIError as exc:
                    if exc.status != 404:
                        raise
            if ext in self.by_external:
                continue
            conflicts.append({'external_id': ext, 'reason': error.get('reason') or error.get('message') or 'refused',
                              'code': error.get('code')})

    def log_pairs(self, pairs):
        if not pairs:
            return
        data = b''.join(dumps({'external_id': ext, 'id': new}) + b'\n' for ext, new in pairs)
        fd = os.open(self.map_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- clients

    def import_clients(self, bundle):
        hydra = self.conn.client('hydra')
        supplied = self.params.get('client_secrets') or {}
        generated = {}
        report = []
        created = [0]

        def add(client):
            cid = client['client_id']
            method, kind = client_auth(client)
            if cid in self.target_clients:
                report.append({'client_id': cid, 'secret': 'unchanged' if kind == 'secret' else kind, 'action': 'existing',
                               'token_endpoint_auth_method': method})
                return
            body = dict(client)
            if kind != 'secret':
                # 'keys' (private_key_jwt: jwks or jwks_uri travel in the body) or 'none' (a public client). Hydra
                # makes up a secret for a client created without one and returns it for every client that is not
                # public (ory/hydra client/handler.go, CreateClient); the token endpoint never accepts it for
                # these methods (ory/fosite client_authentication.go), so the answer is not read
                source = kind
            elif cid in supplied:
                body['client_secret'] = supplied[cid]
                source = 'supplied'
            else:
                body['client_secret'] = generated[cid] = secrets.token_urlsafe(32)
                source = 'generated'
            try:
                hydra.request('POST', '/admin/clients', json_body=body, ok=(201, 200), retry_errors=False)
            except OryAPIError as exc:
                if exc.status != 409 and not exc.details.get('retryable'):
                    raise
                # a former attempt may have created it: it counts as created only when it is there now
                try:
                    hydra.get_json('/admin/clients/%s' % _quote(cid))
                except OryAPIError:
                    raise exc
                generated.pop(cid, None)
                if kind != 'secret':
                    report.append({'client_id': cid, 'secret': kind, 'action': 'existing', 'token_endpoint_auth_method': method,
                                   'note': 'created by an interrupted attempt'})
                    return
                report.append({'client_id': cid, 'secret': 'unknown', 'action': 'existing', 'token_endpoint_auth_method': method,
                               'note': 'created by an interrupted attempt; rotate its secret'})
                return
            created[0] += 1
            report.append({'client_id': cid, 'secret': source, 'action': 'created', 'token_endpoint_auth_method': method})
        bundle.stream('restore/oauth2-clients.json', add)
        self.result['created']['oauth2_clients'] = created[0]
        self.rotation_report = report
        self.generated_secrets = generated
        write_file_atomic(os.path.join(self.state_dir, 'rotation-report.json'), dump_json(report))
        if generated:
            self.write_secrets(generated)

    rotation_report = ()
    generated_secrets = None
    secrets_file = None

    def write_secrets(self, generated):
        params = self.params
        if not params.get('encryption'):
            return
        backend = encryption_backend(params['encryption'], params.get('recipients'), params.get('recipients_file'),
                                     params.get('passphrase'), params.get('gpg_homedir'))
        suffix = {'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg', 'none': ''}[backend.name]
        dest = os.path.join(self.state_dir, 'client-secrets-%s.json%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()), suffix))
        writer = PayloadWriter(dest, encrypt_stages(Compression('none'), backend), os.urandom(4).hex())
        try:
            writer.write(dumps(generated))
            writer.commit()
            writer.publish()
        except BaseException:
            writer.abort()
            raise
        self.secrets_file = dest

    # -- JWK sets

    def import_jwks(self, bundle):
        hydra = self.conn.client('hydra')
        sets = bundle.jwk_sets()
        done = []
        for name, action in sorted((self.jwk_actions or {}).items()):
            if action in ('create', 'replace'):
                hydra.request('PUT', '/admin/keys/%s' % _quote(name), json_body={'keys': sets[name]['keys']})
                done.append(name)
        self.result['created']['jwk_sets'] = len(done)
        self.result['updated']['jwk_sets'] = done

    # -- tuples

    def import_tuples(self, bundle):
        keto = self.conn.client('keto_write')
        sender = SerialSender()
        batch = []
        created = [0]
        unmapped = [0]

        def send(items):
            keto.request('PATCH', '/admin/relation-tuples', json_body=[{'action': 'insert', 'relation_tuple': t}
                                                                       for t in items], ok=(204, 200))
            created[0] += len(items)

        def flush():
            if batch:
                sender.submit(send, list(batch))
                del batch[:]

        def add(item):
            mapped = self.remap(item)
            if mapped is None:
                unmapped[0] += 1
                return
            key = tuple_key(mapped)
            if key in self.target_tuples:
                return
            self.target_tuples.add(key)
            batch.append(mapped)
            if len(batch) >= TUPLE_BATCH:
                flush()
        try:
            bundle.stream('restore/relationships.json', add)
            flush()
        finally:
            sender.drain()
        self.result['created']['relationships'] = created[0]
        if unmapped[0]:
            self.warnings.append('%d relation tuples name an identity that was not imported; they were left out' % unmapped[0])

    # -- the version gate

    def version_gates(self, bundle, network):
        """Compare the versions the export recorded with the target's, for each service whose data is restored.

        The target's versions come from ``GET /version`` of each admin API (ory/x healthx/handler.go,
        Handler.Version, mounted by Kratos, Hydra and Keto); on Ory Network the project URL answers it for the
        whole project (the project document itself carries no version). Only reads: check mode runs it too.
        """
        recorded = bundle.ory.get('api_versions') or {}
        kinds = set(k for k in self.include if bundle.has(k) and (k != 'config' or network))
        force = bool(self.params.get('force_version'))
        gates = {}
        answers = {}
        for service, client_name, service_kinds in GATED_SERVICES:
            if not kinds & set(service_kinds):
                continue
            url = self.conn.url_for(client_name)
            if url not in answers:
                try:
                    answers[url] = ((self.conn.client(client_name).get_json('/version') or {}).get('version'), None)
                except (OryAPIError, RecoveryError) as exc:
                    answers[url] = (None, exc.msg)
            target_version, error = answers[url]
            gates[service] = version_gate(service, recorded.get(service), target_version, force, error)
        refused = [g['reason'] for g in gates.values() if g['reason'] and not g['ok']]
        if refused:
            raise RecoveryError('version gate: %s; set force_version=true to import anyway; nothing was written'
                                % '; '.join(refused), version_gate=gates)
        for service in sorted(gates):
            gate = gates[service]
            if gate['forced']:
                self.warnings.append('version gate overridden by force_version: %s' % gate['reason'])
            elif gate['warning']:
                self.warnings.append('version gate: %s' % gate['warning'])
        return gates

    # -- the run

    def run(self, bundle):
        refused = self.params.get('refuse_endpoints') or []
        if refused:
            # before anything is read from the target: a drill must never write into the live project
            from ansible_collections.idp.recovery.plugins.module_utils._checks import url_refusal
            match = url_refusal(list(self.conn.endpoints().values()), refused)
            if match:
                raise RecoveryError('refused: the target %s reaches the same server as %s, which must not be written '
                                    '(refuse_endpoints); nothing was written' % match)
        started = time.time()
        network = self.conn.is_network
        phases = self.phases = {}
        gates = self.version_gates(bundle, network)
        validated = bundle.validate(self.include, network)
        phases['validate'] = round(time.time() - started, 2)
        plan = self.plan(bundle)
        phases['plan'] = round(time.time() - started - phases['validate'], 2)
        conflicts = dict((k, v) for k, v in self.result['conflicts'].items() if v)
        to_do = _work_left(plan)
        result = {'plan': plan, 'validated': validated, 'conflicts': _sample(conflicts), 'changed': to_do,
                  'version_gate': gates,
                  'source': {'set_dir': bundle.set_dir, 'project_id': bundle.ory.get('project_id'),
                             'deployment': bundle.ory.get('deployment')}}
        if conflicts and self.params.get('fail_on_conflict', True):
            raise RecoveryError('the target project holds data that conflicts with the export; nothing was written (%s)'
                                % _describe_conflicts(conflicts), plan=plan, conflicts=_sample(conflicts))
        if self.secrets_to_generate and self.params.get('encryption'):
            # the new secrets can be encrypted: prove it before any client is created
            encrypt_stages(Compression('none'), encryption_backend(
                self.params['encryption'], self.params.get('recipients'), self.params.get('recipients_file'),
                self.params.get('passphrase'), self.params.get('gpg_homedir')))
        if self.secrets_to_generate and not self.params.get('return_secrets') and not self.params.get('encryption'):
            raise RecoveryError('%d OAuth2 clients need a new secret (none was supplied in client_secrets): give recipients '
                                '(the new secrets are written encrypted) or return_secrets=true; nothing was written'
                                % len(self.secrets_to_generate), clients=list(self.secrets_to_generate)[:CONFLICT_SAMPLE])
        if self.check_mode or not to_do:
            result['msg'] = 'nothing to do' if not to_do else 'check mode: nothing was written'
            result['warnings'] = self.warnings
            return result
        self.state_dir = self.params.get('state_dir') or (bundle.set_dir.rstrip('/') + '.ory-import')
        ensure_dir(self.state_dir)
        self.map_log = os.path.join(self.state_dir, 'id-map.jsonl')
        if plan.get('config') == 'update':
            mark = time.time()
            self.apply_config()
            phases['config'] = round(time.time() - mark, 2)
        if 'identities' in plan:
            mark = time.time()
            self.import_identities(bundle)
            phases['identities'] = round(time.time() - mark, 2)
        if 'oauth2_clients' in plan:
            mark = time.time()
            self.import_clients(bundle)
            phases['oauth2_clients'] = round(time.time() - mark, 2)
        if 'jwk_sets' in plan:
            mark = time.time()
            self.import_jwks(bundle)
            phases['jwk_sets'] = round(time.time() - mark, 2)
        if 'relationships' in plan:
            mark = time.time()
            self.import_tuples(bundle)
            phases['relationships'] = round(time.time() - mark, 2)
        if bundle.has('relationships') and bundle.has('identities') and self.index:
            # the tuples with the new identity IDs, for a restore of them with the stock ory CLI
            self.write_relationships(bundle)
        conflicts = dict((k, v) for k, v in self.result['conflicts'].items() if v)
        report = {
            'finished_at': iso(utcnow()),
            'duration_seconds': round(time.time() - started, 3),
            'created': self.result['created'],
            'updated': self.result['updated'],
            'plan': plan,
            'conflicts': _sample(conflicts),
            'warnings': self.warnings,
            'requests': self.conn.stats(),
            'phases_seconds': phases,
            'source': result['source'],
        }
        write_file_atomic(os.path.join(self.state_dir, 'import-report.json'), dump_json(report))
        fsync_dir(self.state_dir)
        result.update({
            'created': self.result['created'],
            'updated': self.result['updated'],
            'state_dir': self.state_dir,
            'id_map': os.path.join(self.state_dir, 'id-map.json') if 'identities' in plan else None,
            'rotation_report': list(self.rotation_report),
            'secrets_file': self.secrets_file,
            'relationships_file': self.relationships_file,
            'duration_seconds': report['duration_seconds'],
            'requests': report['requests'],
            'phases_seconds': phases,
            'conflicts': _sample(conflicts),
            'warnings': self.warnings,
        })
        if self.params.get('return_secrets') and self.generated_secrets:
            result['client_secrets'] = self.generated_secrets
        if conflicts:
            if self.params.get('fail_on_conflict', True):
                raise RecoveryError('the import finished with conflicts: %s' % _describe_conflicts(conflicts),
                                    **dict((k, v) for k, v in result.items() if k not in ('changed', 'client_secrets')))
            self.warnings.append('left out because of conflicts: %s' % _describe_conflicts(conflicts))
        return result


class SerialSender(object):
    """Runs one call at a time in a background thread, so that reading the next batch overlaps the
    current request; submit() waits for the previous call and re-raises its error."""

    def __init__(self):
        self._thread = None
        self._error = []

    def _run(self, func, args):
        try:
            func(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            self._error.append(exc)

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error:
            raise self._error.pop(0)

    def submit(self, func, *args):
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(func, args), name='idp-recovery-writer')
        self._thread.daemon = True
        self._thread.start()

    def drain(self):
        self.wait()


def _work_left(plan):
    if plan.get('config') == 'update':
        return True
    for key in ('identities', 'oauth2_clients', 'relationships'):
        if (plan.get(key) or {}).get('create'):
            return True
    return any(action in ('create', 'replace') for action in (plan.get('jwk_sets') or {}).values())


def _sample(conflicts):
    return dict((k, v[:CONFLICT_SAMPLE]) for k, v in conflicts.items())


def _describe_conflicts(conflicts):
    return ', '.join('%d %s' % (len(v), k) for k, v in sorted(conflicts.items()))


def _jwk_fingerprint(keys):
    return sorted(json.dumps(k, sort_keys=True) for k in keys or [])


def _canonical_json(content):
    try:
        return json.dumps(json.loads(content.decode('utf-8')), sort_keys=True, separators=(',', ':')).encode('utf-8')
    except (ValueError, UnicodeDecodeError):
        return content


def _quote(value):
    return quote(value, safe='')


# -- verification helpers (ory_check)

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
