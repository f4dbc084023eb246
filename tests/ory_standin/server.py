#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stand-in for one Ory Network project's admin APIs (Kratos, Hydra, Keto, console).

Ory's servers cannot run here, so tests and benchmarks talk to this stand-in instead. It follows
the official OpenAPI specs (see ``spec.py``): every request is matched to a spec operation,
its JSON body is decoded strictly against the operation's schema (unknown fields give 400, like
Ory's decoders), rate limits come from the operation's ``x-ory-ratelimit-bucket`` and Ory's
published thresholds, and with ``--validate-responses`` every response body is checked against the
spec before it is sent (a mismatch is a 500 naming the violation).

Behaviour taken from Ory's documentation: opaque page tokens in ``Link`` headers (Kratos, Hydra)
and in Keto bodies, ``page_size`` limits, blank ``client_secret`` on reads, new IDs on create
(an ``id`` cannot be imported), 409 on a duplicate identifier or external ID, 429 with
``x-ratelimit-*`` headers, 429 on concurrent identity writes, identity schemas and the OPL
stored as (storage) URLs that ``PUT /projects/{id}`` accepts as ``base64://``.

Test-only control endpoints live under ``/__standin/`` (faults, limits, seeding, statistics).

    python tests/ory_standin/server.py --port 4455 --api-key KEY --workspace-key WKEY --seed-identities 100
"""

from __future__ import annotations

import argparse
import base64
import bisect
import copy
import datetime
import hashlib
import hmac
import itertools
import json
import math
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from ory_standin import seed as seeding  # noqa: E402  pylint: disable=import-error
    from ory_standin.spec import ContractError, load_specs, load_thresholds  # noqa: E402  pylint: disable=import-error
else:
    from . import seed as seeding
    from .spec import ContractError, load_specs, load_thresholds

HASH_PREFIXES = ('$2a$', '$2b$', '$2y$', '$argon2id$', '$argon2i$', '$pbkdf2-', '$scrypt$', '$sscrypt$', '$firescrypt$',
                 '$md5$', '$sha1$', '$sha256$', '$sha512$', '$ssha$', '$ssha256$', '$ssha512$', '$hmac-', '$md5-crypt$',
                 '$5$', '$6$', '$1$')
IDENTITY_PAGE_MAX = 500
UNIQUE_CREDENTIALS = ('password', 'oidc', 'saml', 'passkey', 'code', 'webauthn')
DEFAULT_JWK_SETS = ('hydra.openid.id-token', 'hydra.jwt.access-token')
# identity/credentials.go, CredentialsType (ParseCredentialsType accepts these)
CREDENTIAL_TYPES = ('password', 'oidc', 'totp', 'lookup_secret', 'webauthn', 'code', 'passkey', 'profile', 'saml',
                    'link_recovery', 'code_recovery', 'deviceauthn', 'identifier_first')
ORY_VERSION = 'v26.2.0'  # the release of the specs in ORY_SPECS_DIR (ory/sdk spec/*/v26.2.0.json)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def schema_identifiers(schema, traits):
    """{credential type: [identifier, ...]} that the schema extension derives from the traits.

    ory/kratos identity/extension_credentials.go, SchemaExtensionCredentials.Run and setIdentifier:
    every trait marked ``credentials.password.identifier`` (or ``webauthn.identifier``, or
    ``code.identifier`` with ``via: email``) adds its lower-cased value to the identifiers of that
    credential type, creating the credential with an empty configuration when the identity has none.
    The stand-in walks nested objects of ``traits`` only (no arrays, no $ref).
    """
    found = {}

    def walk(node, value):
        if not isinstance(node, dict):
            return
        ext = ((node.get('ory.sh/kratos') or {}).get('credentials') or {})
        if isinstance(value, str) and value:
            if (ext.get('password') or {}).get('identifier'):
                found.setdefault('password', []).append(value.lower())
            if (ext.get('webauthn') or {}).get('identifier'):
                found.setdefault('webauthn', []).append(value.lower())
            if (ext.get('code') or {}).get('identifier') and (ext.get('code') or {}).get('via') == 'email':
                found.setdefault('code', []).append(value.lower())
        for name, child in (node.get('properties') or {}).items():
            if isinstance(value, dict) and name in value:
                walk(child, value[name])

    walk(((schema or {}).get('properties') or {}).get('traits') or {}, traits)
    return dict((k, sorted(set(v))) for k, v in found.items())


def keto_subject_query(query):
    """The subject of a Keto query string: a subject ID, a subject set [namespace, object, relation] or None.

    ory/keto ketoapi/enc_url_query.go, RelationQuery.FromURLQuery: ``subject`` was dropped, ``subject_id``
    and ``subject_set.*`` exclude each other, a subject set needs all three of its parts (messages from
    ketoapi/public_api_definitions.go).
    """
    keys = ('subject_set.namespace', 'subject_set.object', 'subject_set.relation')
    if 'subject' in query:
        raise HTTPFailure(400, 'The request was malformed or contained invalid parameters',
                          'provide "subject_id" or "subject_set.*"; support for "subject" was dropped')
    has_set = [k for k in keys if k in query]
    if 'subject_id' in query and has_set:
        raise HTTPFailure(400, 'exactly one of subject_set or subject_id has to be provided')
    if 'subject_id' in query:
        return query['subject_id'][0]
    if len(has_set) == len(keys):
        return [query[k][0] for k in keys]
    if has_set:
        raise HTTPFailure(400, 'incomplete subject, provide "subject_id" or a complete "subject_set.*"')
    return None


class HTTPFailure(Exception):
    def __init__(self, status, message, reason=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}


STATUS_TEXT = {400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict',
               429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway',
               503: 'Service Unavailable', 504: 'Gateway Timeout'}


# ---------------------------------------------------------------------------------------------
# rate limits: fixed windows of one second (burst) and one minute (sustained), aligned to the clock.
# x-ratelimit-limit is written as Ory documents it (docs guides/rate-limits, "Monitor rate limit headers":
# ``10, 10;w=1, 300;w=60``, the IETF RateLimit header fields draft): the limit of the window that
# x-ratelimit-remaining / x-ratelimit-reset speak of, then the burst (w=1) and sustained (w=60) policies.

def limit_header(current, rpm, rps):
    return '%d, %d;w=1, %d;w=60' % (current, rps, rpm)


class Limiter(object):
    def __init__(self, limits=None, clock=time.time):
        self.limits = dict(limits or {})
        self.clock = clock
        self.state = {}
        self.lock = threading.Lock()

    def hit(self, bucket):
        """(allowed, headers) for one request in bucket; refused requests are not counted."""
        limit = self.limits.get(bucket)
        if not limit:
            return True, {}
        rpm, rps = limit
        with self.lock:
            now = self.clock()
            sec, minute = int(math.floor(now)), int(math.floor(now / 60.0))
            st = self.state.setdefault(bucket, {'sec': sec, 'sec_n': 0, 'min': minute, 'min_n': 0})
            if st['sec'] != sec:
                st['sec'], st['sec_n'] = sec, 0
            if st['min'] != minute:
                st['min'], st['min_n'] = minute, 0
            sec_end, min_end = sec + 1.0, (minute + 1) * 60.0
            if st['sec_n'] >= rps or st['min_n'] >= rpm:
                ends = []
                if st['sec_n'] >= rps:
                    ends.append(sec_end)
                if st['min_n'] >= rpm:
                    ends.append(min_end)
                reset = max(1, int(math.ceil(max(ends) - now)))
                current = rpm if st['min_n'] >= rpm else rps
                return False, {'x-ratelimit-limit': limit_header(current, rpm, rps), 'x-ratelimit-remaining': '0',
                               'x-ratelimit-reset': str(reset)}
            st['sec_n'] += 1
            st['min_n'] += 1
            left_sec, left_min = rps - st['sec_n'], rpm - st['min_n']
            end = sec_end if left_sec < left_min else min_end
            return True, {'x-ratelimit-limit': limit_header(rps if left_sec < left_min else rpm, rpm, rps),
                          'x-ratelimit-remaining': str(min(left_sec, left_min)),
                          'x-ratelimit-reset': str(max(1, int(math.ceil(end - now))))}


def minimum_duration(requests, rpm, rps, start):
    """Seconds the limiter above needs to accept ``requests`` requests sent back to back from ``start``
    (a wall-clock time), with no time spent on anything else: the limit-bound minimum."""
    t = start
    sec, minute = math.floor(t), math.floor(t / 60.0)
    sec_n = min_n = 0
    last = t
    for _dummy in range(requests):
        while True:
            if math.floor(t) != sec:
                sec, sec_n = math.floor(t), 0
            if math.floor(t / 60.0) != minute:
                minute, min_n = math.floor(t / 60.0), 0
            if sec_n < rps and min_n < rpm:
                sec_n += 1
                min_n += 1
                last = t
                break
            t = (minute + 1) * 60.0 if min_n >= rpm else sec + 1.0
    return last - start


# ---------------------------------------------------------------------------------------------
# page tokens: opaque, signed, carrying the last key of the page

class Tokens(object):
    def __init__(self):
        self.key = os.urandom(16)

    def make(self, scope, last):
        payload = json.dumps([scope, last], separators=(',', ':')).encode('utf-8')
        sig = hmac.new(self.key, payload, hashlib.sha256).digest()[:10]
        return base64.urlsafe_b64encode(sig + payload).decode('ascii').rstrip('=')

    def read(self, scope, token):
        try:
            raw = base64.urlsafe_b64decode(token + '=' * (-len(token) % 4))
            sig, payload = raw[:10], raw[10:]
            if not hmac.compare_digest(sig, hmac.new(self.key, payload, hashlib.sha256).digest()[:10]):
                raise ValueError('bad signature')
            got_scope, last = json.loads(payload.decode('utf-8'))
            if got_scope != scope:
                raise ValueError('token of another list')
            return last
        except (ValueError, TypeError):
            raise HTTPFailure(400, 'The page token is invalid, do not craft your own page tokens', 'invalid page_token')


# ---------------------------------------------------------------------------------------------
# the project

class Project(object):
    def __init__(self, base_url, project_id=None, slug=None, name='stand-in project'):
        self.lock = threading.RLock()
        self.identity_write = threading.Lock()
        self.base_url = base_url
        self.id = project_id or str(uuid.uuid4())
        self.slug = slug or 'standin-%s' % self.id[:8]
        self.name = name
        self.revision_id = str(uuid.uuid4())
        self.storage = {}
        self.identities = {}
        self.identity_order = []
        self.by_external = {}
        self.identifiers = {}
        self.clients = {}
        self.client_order = []
        self.client_secrets = {}
        self.jwks = {}
        self.tuples = {}
        self.namespaces = []
        self.schemas = {}
        self.config = {'identity': {}, 'oauth2': {}, 'permission': {}}
        self.tokens_issued = 0
        # behaviours of other releases, switched on through /__standin/quirks
        self.quirks = {'list_ignores_include_credential': False, 'batch_ok_when_every_patch_fails': False}

    # storage links (what Ory Network keeps schemas and the OPL behind)
    def store(self, content):
        digest = hashlib.sha256(content).hexdigest()
        self.storage[digest] = content
        return '%s/__storage/%s?expires=%d' % (self.base_url, digest, int(time.time()) + 3600)

    def storage_get(self, url):
        match = re.match(r'^%s/__storage/([0-9a-f]{64})' % re.escape(self.base_url), url or '')
        return self.storage.get(match.group(1)) if match else None

    def _load_url(self, url, what):
        if url.startswith('base64://'):
            try:
                return base64.b64decode(url[len('base64://'):] + '=' * (-len(url[len('base64://'):]) % 4))
            except (ValueError, TypeError):
                raise HTTPFailure(400, '%s: invalid base64:// URL' % what)
        content = self.storage_get(url)
        if content is None:
            raise HTTPFailure(400, '%s: cannot load %s' % (what, url[:100]), 'unreachable schema URL')
        return content

    def apply_services(self, services):
        """Install the services config of a setProject body (schemas and OPL become storage URLs)."""
        identity = copy.deepcopy((services.get('identity') or {}).get('config') or {})
        schemas = {}
        for entry in (identity.get('identity') or {}).get('schemas') or []:
            content = self._load_url(entry.get('url') or '', 'identity schema %s' % entry.get('id'))
            try:
                schemas[entry['id']] = json.loads(content.decode('utf-8'))
            except ValueError:
                raise HTTPFailure(400, 'identity schema %s is not JSON' % entry.get('id'))
            entry['url'] = self.store(content)
        permission = copy.deepcopy((services.get('permission') or {}).get('config') or {})
        namespaces = []
        location = (permission.get('namespaces') or {}).get('location') if isinstance(permission.get('namespaces'), dict) else None
        if location:
            opl = self._load_url(location, 'permission namespaces')
            namespaces = re.findall(r'class\s+(\w+)\s+implements\s+Namespace', opl.decode('utf-8'))
            permission['namespaces']['location'] = self.store(opl)
        elif isinstance(permission.get('namespaces'), list):
            namespaces = [n.get('name') for n in permission['namespaces']]
        with self.lock:
            self.config = {'identity': identity, 'oauth2': copy.deepcopy((services.get('oauth2') or {}).get('config') or {}),
                           'permission': permission}
            self.schemas = schemas
            self.namespaces = namespaces
            for name in namespaces:
                self.tuples.setdefault(name, [])
            self.revision_id = str(uuid.uuid4())

    def project_document(self):
        return {
            'id': self.id, 'revision_id': self.revision_id, 'slug': self.slug, 'name': self.name, 'state': 'running',
            'environment': 'prod', 'home_region': 'eu-central', 'organizations': [], 'workspace_id': None,
            'cors_admin': {'enabled': False, 'origins': []}, 'cors_public': {'enabled': False, 'origins': []},
            'services': {'identity': {'config': copy.deepcopy(self.config['identity'])},
                         'oauth2': {'config': copy.deepcopy(self.config['oauth2'])},
                         'permission': {'config': copy.deepcopy(self.config['permission'])}},
        }

    # identities
    def schema_url(self, schema_id):
        return '%s/schemas/%s' % (self.base_url, base64.urlsafe_b64encode(schema_id.encode()).decode().rstrip('='))

    def render_identity(self, rec, include=()):
        """The identity as the API shows it; the answer is serialised at once, so nothing is copied deeply."""
        out = dict((k, v) for k, v in rec.items() if k != 'credentials')
        out['schema_url'] = self.schema_url(rec['schema_id'])
        creds = {}
        for kind, cred in rec['credentials'].items():
            item = {'type': kind, 'identifiers': cred['identifiers'], 'version': cred.get('version', 0),
                    'created_at': cred['created_at'], 'updated_at': cred['updated_at']}
            if kind in include:
                item['config'] = cred['config']
            creds[kind] = item
        out['credentials'] = creds
        return out

    def prepare_identity(self, body):
        """Decode a createIdentityBody into (traits, credentials) the way the import handler does.

        ory/kratos identity/handler.go, identityFromCreateIdentityBody, and identity/handler_import.go,
        importCredentials: an invalid state or a credential that cannot be imported (a password hash
        of no known format, ImportPasswordCredentials) refuses the whole request. importCredentials
        validates the identity against its schema before it imports anything, so with credentials a
        schema error refuses the request too; without credentials the schema is checked later, per
        identity (identity/manager.go, CreateIdentities). ``request_level`` on the HTTPFailure tells
        which of the two a batch must do.
        """
        with_credentials = bool(body.get('credentials'))

        def refuse(message, reason=None, validation=False):
            exc = HTTPFailure(400, message, reason)
            exc.request_level = with_credentials or not validation
            return exc
        if body.get('state') not in (None, '', 'active', 'inactive'):
            raise refuse('The request was malformed or contained invalid parameters',
                         'identity state is not valid: %s' % body.get('state'))
        schema = self.schemas.get(body['schema_id'])
        if schema is None:
            raise refuse('The requested identity schema %s does not exist' % body['schema_id'], 'unknown schema',
                         validation=True)
        traits = body.get('traits')
        if not isinstance(traits, dict):
            raise refuse('traits must be an object', validation=True)
        stamp = now_iso()
        creds = {}
        for kind, value in (body.get('credentials') or {}).items():
            config = (value or {}).get('config') or {}
            if kind == 'password':
                hashed = config.get('hashed_password')
                if hashed is None and config.get('password'):
                    hashed = seeding.crypt.crypt(config['password'], '$2b$04$' + seeding.random_token(16)[:22].replace('-', '.').replace('_', '/'))
                if not config.get('use_password_migration_hook') and (hashed is None or not hashed.startswith(HASH_PREFIXES)):
                    raise refuse('The imported password does not match any known hash format.', 'unknown hash algorithm')
                # the identifiers come from the schema extension below, as in ImportPasswordCredentials
                idents = []
                stored = {'use_password_migration_hook': True} if config.get('use_password_migration_hook') else \
                    {'hashed_password': hashed}
            elif kind in ('oidc', 'saml'):
                # importOIDCCredentials / importSAMLCredentials: one identifier "provider:subject" per provider
                providers = []
                idents = []
                for prov in config.get('providers') or []:
                    entry = {'provider': prov['provider'], 'subject': prov['subject']}
                    for extra in ('organization', 'use_auto_link') if kind == 'oidc' else ('organization',):
                        if prov.get(extra) is not None:
                            entry[extra] = prov[extra]
                    providers.append(entry)
                    idents.append('%s:%s' % (prov['provider'], prov['subject']))
                stored = {'providers': providers}
            elif kind == 'totp':
                # importTOTPCredentials stores no identifier (ory/kratos#4561); enrolment in the settings flow
                # stores the identity ID (selfservice/strategy/totp/settings.go, continueSettingsFlowAddTOTP)
                stored, idents = {'totp_url': config.get('totp_url')}, []
            elif kind == 'lookup_secret':
                # importLookupSecretCredentials: codes only, no identifier
                stored, idents = {'recovery_codes': list(config.get('codes') or [])}, []
            elif kind in ('webauthn', 'passkey'):
                handle = config.get('user_handle')
                stored = {'credentials': config.get('credentials') or [], 'user_handle': handle}
                idents = []
                if kind == 'passkey' and handle:
                    # importPasskeyCredentials adds the user handle (as text) to the identifiers
                    idents = [bytes(handle).decode('utf-8', 'replace')]
            else:
                raise refuse('credentials of type %s cannot be imported' % kind)
            creds[kind] = {'identifiers': idents, 'config': stored, 'created_at': stamp, 'updated_at': stamp, 'version': 0}
        # identity/extension_credentials.go, setIdentifier: a trait marked as identifier of a credential type
        # sets the identifiers of that type, creating the credential with an empty configuration ({} once
        # stored, persistence/sql/identity/persister_identity.go, createIdentityCredentials) when the identity
        # has none: every user of such a schema has a password credential, also those who never set one.
        for kind, values in schema_identifiers(schema, traits).items():
            if kind not in creds:
                # a code credential lists its addresses (identity/credentials_code.go, CredentialsCode)
                config = {'addresses': [{'channel': 'email', 'address': v} for v in values]} if kind == 'code' else {}
                creds[kind] = {'identifiers': [], 'config': config, 'created_at': stamp, 'updated_at': stamp, 'version': 0}
            creds[kind]['identifiers'] = list(values)
        return traits, creds

    def create_identity(self, body, prepared=None, batch=False):
        """Create from a createIdentityBody; return the new record. Raises HTTPFailure."""
        traits, creds = prepared or self.prepare_identity(body)
        new_id = str(uuid.uuid4())
        stamp = now_iso()
        # a conflict answers 409: handler.go, create (POST) and sqlcon.ErrUniqueViolation per identity (PATCH,
        # persistence/sql/identity/persister_identity.go, CreateIdentities)
        conflict = ('Unable to insert or update resource because a resource with that value exists already' if batch
                    else 'This identity conflicts with another identity that already exists.')
        with self.lock:
            ext = body.get('external_id')
            if ext and ext in self.by_external:
                raise HTTPFailure(409, conflict, 'external_id %s is already in use' % ext)
            for kind, cred in creds.items():
                if kind in UNIQUE_CREDENTIALS:
                    for ident in cred['identifiers']:
                        if (kind, ident) in self.identifiers:
                            raise HTTPFailure(409, conflict, 'identifier %s (%s) is already in use' % (ident, kind))
            verifiable = body.get('verifiable_addresses')
            if verifiable is None and isinstance(traits.get('email'), str):
                verifiable = [{'value': traits['email'], 'via': 'email', 'verified': False, 'status': 'pending'}]
            recovery = body.get('recovery_addresses')
            if recovery is None and isinstance(traits.get('email'), str):
                recovery = [{'value': traits['email'], 'via': 'email'}]
            rec = {
                'id': new_id, 'schema_id': body['schema_id'], 'traits': traits,
                'state': body.get('state') or 'active', 'state_changed_at': stamp,
                'metadata_public': body.get('metadata_public'),
                'metadata_admin': body.get('metadata_admin'),
                'verifiable_addresses': [dict(a, id=str(uuid.uuid4()), created_at=stamp, updated_at=stamp) for a in verifiable or []],
                'recovery_addresses': [dict(a, id=str(uuid.uuid4()), created_at=stamp, updated_at=stamp) for a in recovery or []],
                'created_at': stamp, 'updated_at': stamp, 'organization_id': body.get('organization_id'),
                'credentials': creds,
            }
            if ext:
                rec['external_id'] = ext
                self.by_external[ext] = new_id
            for kind, cred in creds.items():
                if kind in UNIQUE_CREDENTIALS:
                    for ident in cred['identifiers']:
                        self.identifiers[(kind, ident)] = new_id
            self.identities[new_id] = rec
            bisect.insort(self.identity_order, new_id)
            return rec

    # clients
    def render_client(self, rec, secret=''):
        # ory/hydra client/handler.go: Handler.Get and Handler.List blank the secret of every client they
        # return; only the answer to a create carries one
        out = copy.deepcopy(rec)
        out['client_secret'] = secret
        return out

    HYDRA_CLIENT_ASSERTION_ALGS = ('RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512')

    def create_client(self, body):
        body = copy.deepcopy(body)
        for field in ('created_at', 'updated_at', 'registration_access_token', 'registration_client_uri'):
            body.pop(field, None)
        secret = body.pop('client_secret', None) or None
        method = body.get('token_endpoint_auth_method') or 'client_secret_basic'
        # ory/hydra client/validator.go, Validator.Validate: an empty method is client_secret_basic; a
        # private_key_jwt client needs jwks or jwks_uri and a supported assertion algorithm; jwks and jwks_uri
        # exclude each other; a given secret has at least 6 characters. Nothing forbids a secret beside keys.
        if method == 'private_key_jwt':
            if not body.get('jwks_uri') and body.get('jwks') is None:
                raise HTTPFailure(400, "When token_endpoint_auth_method is 'private_key_jwt', either jwks or jwks_uri "
                                  'must be set.', 'invalid_client_metadata')
            alg = body.get('token_endpoint_auth_signing_alg')
            if alg and alg not in self.HYDRA_CLIENT_ASSERTION_ALGS:
                raise HTTPFailure(400, 'Only RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 and ES512 are '
                                  'supported as algorithms for private key authentication.', 'invalid_client_metadata')
        if body.get('jwks_uri') and body.get('jwks') is not None:
            raise HTTPFailure(400, 'Fields jwks and jwks_uri can not both be set, you must choose one.',
                              'invalid_client_metadata')
        if secret is not None and len(secret) < 6:
            raise HTTPFailure(400, 'Field client_secret must contain a secret that is at least 6 characters long.',
                              'invalid_client_metadata')
        # ory/hydra client/handler.go, Handler.CreateClient: a client created without a secret gets a random
        # one (whatever its method), and the answer shows it for every client that is not public
        # (Client.IsPublic: token_endpoint_auth_method none); a public client's secret is never used
        # (ory/fosite client_authentication.go), so the stand-in keeps none for it
        if secret is None:
            secret = seeding.random_token(20)
        if method == 'none':
            secret = None
        client_id = body.get('client_id') or str(uuid.uuid4())
        stamp = now_iso()
        rec = dict(body, client_id=client_id, token_endpoint_auth_method=method, created_at=stamp, updated_at=stamp,
                   client_secret_expires_at=0)
        rec.setdefault('subject_type', 'public')
        rec.setdefault('owner', '')
        with self.lock:
            if client_id in self.clients:
                raise HTTPFailure(409, 'Unable to insert or update resource because a resource with that value exists already',
                                  'client_id in use')
            self.clients[client_id] = rec
            bisect.insort(self.client_order, client_id)
            if secret:
                self.client_secrets[client_id] = hashlib.sha256(secret.encode('utf-8')).hexdigest()
        return self.render_client(rec, secret or '')

    def seed_hydra(self, keyed_clients=True, mixed_jwk_set=None):
        """Clients without a shared secret (seed.keyed_client_records), created through the same checks
        as POST /admin/clients, and a JWK set of an RSA and an EC key, both with their private parts."""
        made = {'clients': [], 'jwk_sets': []}
        if keyed_clients:
            for client in seeding.keyed_client_records():
                made['clients'].append(self.create_client(client)['client_id'])
        if mixed_jwk_set:
            stem = mixed_jwk_set.rsplit('.', 1)[-1]
            self.jwks[mixed_jwk_set] = [seeding.rsa_jwk('%s-rsa-%s' % (stem, seeding.random_token(6))),
                                        seeding.ec_jwk('%s-ec-%s' % (stem, seeding.random_token(6)))]
            made['jwk_sets'].append(mixed_jwk_set)
        return made

    # tuples
    @staticmethod
    def tuple_key(t):
        sset = t.get('subject_set')
        return [t['namespace'], t['object'], t['relation'], t.get('subject_id') or '',
                [sset['namespace'], sset['object'], sset['relation']] if sset else []]

    @staticmethod
    def tuple_from_key(key):
        out = {'namespace': key[0], 'object': key[1], 'relation': key[2]}
        if key[4]:
            out['subject_set'] = {'namespace': key[4][0], 'object': key[4][1], 'relation': key[4][2]}
        else:
            out['subject_id'] = key[3]
        return out

    def insert_tuple(self, t):
        if t['namespace'] not in self.tuples:
            raise HTTPFailure(404, 'Unknown namespace with name "%s".' % t['namespace'], 'unknown namespace')
        if bool(t.get('subject_id')) == bool(t.get('subject_set')):
            raise HTTPFailure(400, 'exactly one of subject_id or subject_set must be set')
        key = self.tuple_key(t)
        rows = self.tuples[t['namespace']]
        pos = bisect.bisect_left(rows, key)
        if pos >= len(rows) or rows[pos] != key:
            rows.insert(pos, key)

    def delete_tuple(self, t):
        rows = self.tuples.get(t['namespace'], [])
        key = self.tuple_key(t)
        pos = bisect.bisect_left(rows, key)
        if pos < len(rows) and rows[pos] == key:
            del rows[pos]

    # Keto check. ory/keto internal/check/engine.go: Engine.CheckRelationTuple caps the depth at the global
    # limit.max_read_depth (internal/driver/config/config.schema.json, default 5) when the request's max-depth
    # is <= 0 or larger; Engine.checkIsAllowed adds a direct look-up (checkDirect, at depth - 1) unless the
    # relation has a rewrite in strict mode, and a subject-set expansion (checkExpandSubject, at depth - 1):
    # for every tuple namespace:object#relation@<subject set>, the subject set is checked for the subject,
    # first directly (the "found" column of internal/persistence/sql/traverser.go,
    # Traverser.TraverseSubjectSetExpansion), then one hop further, never visiting a subject set twice.
    # A subject is a subject ID or a subject set; both match a stored tuple only exactly (traverser.go,
    # whereSubject). The stand-in does not interpret the OPL: the one rewrite it knows is the sample OPL's
    # Document.view permit, viewers or owners, evaluated at the same depth (internal/check/rewrites.go,
    # Engine.checkComputedUserset).
    KETO_MAX_READ_DEPTH = 5
    KETO_REWRITES = {('Document', 'view'): ('viewers', 'owners')}

    def check(self, namespace, obj, relation, subject, depth=None, skip_direct=False, visited=None):
        """subject: a subject ID (str) or a subject set [namespace, object, relation]."""
        if depth is None or depth <= 0 or depth > self.KETO_MAX_READ_DEPTH:
            depth = self.KETO_MAX_READ_DEPTH
        return self._check(namespace, obj, relation, self.subject_key(subject), depth, skip_direct, visited or set())

    @staticmethod
    def subject_key(subject):
        if isinstance(subject, (list, tuple)):
            return ('', [subject[0], subject[1], subject[2]])
        return (subject or '', [])

    def _check(self, namespace, obj, relation, subject, depth, skip_direct, visited):
        if depth <= 0:
            return False
        rewrite = self.KETO_REWRITES.get((namespace, relation))
        if rewrite:
            return any(self._check(namespace, obj, rel, subject, depth, False, visited) for rel in rewrite)
        rows = [k for k in self.tuples.get(namespace, []) if k[1] == obj and k[2] == relation]
        if not skip_direct and depth - 1 > 0 and any((k[3], k[4]) == subject for k in rows):
            return True
        if depth - 1 <= 0:
            return False
        hops = []
        for key in rows:
            if not key[4]:
                continue
            sset = tuple(key[4])
            if any(r[1] == sset[1] and r[2] == sset[2] and (r[3], r[4]) == subject for r in self.tuples.get(sset[0], [])):
                return True
            hops.append(sset)
        for sset in hops:
            if sset in visited:
                continue
            visited.add(sset)
            if self._check(sset[0], sset[1], sset[2], subject, depth - 1, True, visited):
                return True
        return False

    # seeding
    def seed(self, identities=0, seed=1, hash_pool=0, clients=0, tuples=True, jwk_sets=(), extras=True, passwordless=0):
        if not self.schemas:
            self.install_default_config()
        made = []
        records = itertools.chain(seeding.identity_records(identities, seed=seed, hash_pool=hash_pool, with_extras=extras),
                                  seeding.passwordless_records(passwordless, seed=seed))
        for creds, traits, extra in records:
            body = {'schema_id': 'person', 'traits': traits, 'state': extra['state'],
                    'metadata_public': extra['metadata_public'], 'metadata_admin': extra['metadata_admin'],
                    'verifiable_addresses': [{'value': traits['email'], 'via': 'email', 'verified': extra['verified'],
                                              'status': 'completed' if extra['verified'] else 'pending'}]}
            rec = self.create_identity(body)
            stamp = rec['created_at']
            for kind, cred in creds.items():
                rec['credentials'][kind] = dict(cred, created_at=stamp, updated_at=stamp, version=0)
                for ident in cred['identifiers']:
                    if kind in UNIQUE_CREDENTIALS:
                        self.identifiers[(kind, ident)] = rec['id']
                if kind in ('totp', 'lookup_secret', 'webauthn'):
                    # enrolled in the settings flow: the identity ID is the identifier (unlike an import)
                    rec['credentials'][kind]['identifiers'] = [rec['id']]
                if kind == 'passkey':
                    # the stand-in registers passkeys with the identity ID as user handle
                    rec['credentials'][kind]['config'] = dict(cred['config'], user_handle=list(rec['id'].encode('ascii')))
                    rec['credentials'][kind]['identifiers'] = [rec['id']]
                    self.identifiers[(kind, rec['id'])] = rec['id']
            made.append(rec['id'])
        secrets_out = {}
        for client in seeding.client_records(clients):
            secret = client.pop('client_secret')
            self.create_client(dict(client, client_secret=secret))
            secrets_out[client['client_id']] = secret
        for name in jwk_sets:
            self.jwks[name] = [seeding.rsa_jwk('%s-%s' % (name.rsplit('.', 1)[-1], seeding.random_token(6)))]
        if tuples and made:
            for index, ident in enumerate(made):
                if index % 3 == 0:
                    self.insert_tuple({'namespace': 'Group', 'object': 'group-%d' % (index % 10), 'relation': 'members',
                                       'subject_id': ident})
                if index % 4 == 0:
                    self.insert_tuple({'namespace': 'Document', 'object': 'doc-%d' % index, 'relation': 'owners',
                                       'subject_id': ident})
            for group in range(min(10, len(made))):
                self.insert_tuple({'namespace': 'Document', 'object': 'shared-%d' % group, 'relation': 'viewers',
                                   'subject_set': {'namespace': 'Group', 'object': 'group-%d' % group, 'relation': 'members'}})
            for item in seeding.subject_set_tuples(made):
                self.insert_tuple(item)
        return {'identities': made, 'client_secrets': secrets_out}

    def install_blank_config(self):
        """What a new project starts with: a preset e-mail schema, no permission rules."""
        schema = json.dumps({'$id': 'preset://email', 'type': 'object', 'properties': {'traits': {
            'type': 'object', 'properties': {'email': {'type': 'string'}}}}}).encode('utf-8')
        self.apply_services({
            'identity': {'config': {'identity': {'default_schema_id': 'preset://email', 'schemas': [
                {'id': 'preset://email', 'url': 'base64://' + base64.b64encode(schema).decode()}]}}},
            'oauth2': {'config': {}},
            'permission': {'config': {}},
        })

    def install_default_config(self):
        schema = json.dumps(seeding.IDENTITY_SCHEMA, sort_keys=True).encode('utf-8')
        services = {
            'identity': {'config': {
                'identity': {'default_schema_id': 'person',
                             'schemas': [{'id': 'person', 'url': 'base64://' + base64.b64encode(schema).decode()}]},
                'selfservice': {'methods': {'password': {'enabled': True}, 'totp': {'enabled': True},
                                            'lookup_secret': {'enabled': True}, 'webauthn': {'enabled': True},
                                            'oidc': {'enabled': True, 'config': {'providers': [
                                                {'id': 'google', 'provider': 'google', 'client_id': 'google-client',
                                                 'client_secret': 'google-provider-secret'}]}}}},
                'courier': {'smtp': {'connection_uri': 'smtps://mailer:smtp-password@smtp.example.org:465/'}},
            }},
            'oauth2': {'config': {'strategies': {'access_token': 'opaque'}, 'ttl': {'access_token': '1h'}}},
            'permission': {'config': {'namespaces': {
                'location': 'base64://' + base64.b64encode(seeding.OPL.encode('utf-8')).decode(),
                'experimental_strict_mode': True}}},
        }
        self.apply_services(services)

    def summary(self):
        with self.lock:
            return {
                'identities': len(self.identities),
                'external_ids': len(self.by_external),
                'clients': len(self.clients),
                'jwk_sets': dict((k, [j['kid'] for j in v]) for k, v in self.jwks.items()),
                'tuples': sum(len(v) for v in self.tuples.values()),
                'namespaces': list(self.namespaces),
                'tokens_issued': self.tokens_issued,
                'project_id': self.id,
            }


# ---------------------------------------------------------------------------------------------
# the server

class StandIn(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, api_key=None, workspace_key=None, auth=True, validate_responses=False,
                 project_id=None, specs=None, thresholds=None, tier=None, env='prod', quiet=True):
        super().__init__(address, Handler)
        host, port = self.server_address[:2]
        self.base_url = 'http://%s:%d' % (host, port)
        self.api_key = api_key
        self.workspace_key = workspace_key
        self.auth = auth
        self.validate_responses = validate_responses
        self.quiet = quiet
        self.specs = specs or load_specs()
        self.thresholds = thresholds or load_thresholds()
        self.project = Project(self.base_url, project_id=project_id)
        self.ory_version = ORY_VERSION
        self.tokens = Tokens()
        self.limiter = Limiter()
        self.faults = []
        self.faults_lock = threading.Lock()
        self.stats_lock = threading.Lock()
        self.stats = {}
        self.reset_stats()
        if tier:
            self.set_tier(tier, env)

    def reset_stats(self):
        with self.stats_lock:
            self.stats = {'requests': 0, 'by_operation': {}, 'status': {}, 'rate_limited': 0, 'concurrent_writes': 0,
                          'faults_fired': 0, 'contract_violations': [], 'request_rejections': [], 'first_request': None,
                          'last_request': None, 'buckets': {}, 'unexpected_authorization': 0}

    def set_tier(self, tier, env='prod'):
        limits = {}
        for (bucket, row_tier, row_env), (rpm, rps) in self.thresholds.items():
            if row_tier.lower() == tier.lower() and row_env == env:
                limits[bucket] = (rpm, rps)
        if not limits:
            raise ValueError('no rate limits for tier %s env %s' % (tier, env))
        self.limiter.limits = limits
        self.limiter.state = {}

    def count(self, key, status):
        with self.stats_lock:
            stats = self.stats
            stats['requests'] += 1
            now = time.time()
            stats['first_request'] = stats['first_request'] or now
            stats['last_request'] = now
            stats['by_operation'][key] = stats['by_operation'].get(key, 0) + 1
            stats['status'][str(status)] = stats['status'].get(str(status), 0) + 1

    def take_fault(self, method, path):
        with self.faults_lock:
            for fault in self.faults:
                if fault.get('method', method) != method or not path.startswith(fault.get('path', '/')):
                    continue
                if fault.get('times', 1) <= 0:
                    continue
                if fault.get('after', 0) > 0:
                    fault['after'] -= 1
                    continue
                fault['times'] = fault.get('times', 1) - 1
                with self.stats_lock:
                    self.stats['faults_fired'] += 1
                return dict(fault)
        return None


SERVICE_OF_PREFIX = (
    ('/projects', 'console'),
    ('/admin/identities', 'kratos'),
    ('/schemas', 'kratos'),
    ('/version', 'kratos'),
    ('/admin/clients', 'hydra'),
    ('/admin/keys', 'hydra'),
    ('/oauth2/token', 'hydra'),
    ('/admin/relation-tuples', 'keto'),
    ('/relation-tuples', 'keto'),
    ('/namespaces', 'keto'),
)


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'ory-standin/1'

    def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
        if not self.server.quiet:
            sys.stderr.write('%s - %s\n' % (self.address_string(), fmt % args))

    def do_GET(self):  # noqa: N802
        self.dispatch('GET')

    def do_POST(self):  # noqa: N802
        self.dispatch('POST')

    def do_PUT(self):  # noqa: N802
        self.dispatch('PUT')

    def do_PATCH(self):  # noqa: N802
        self.dispatch('PATCH')

    def do_DELETE(self):  # noqa: N802
        self.dispatch('DELETE')

    # -- plumbing

    def read_body(self):
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def send(self, status, body=None, headers=None, raw=None, content_type='application/json'):
        data = raw if raw is not None else (b'' if body is None else json.dumps(body).encode('utf-8'))
        self.send_response(status)
        if data or status != 204:
            self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def error_body(self, service, status, message, reason=None):
        text = STATUS_TEXT.get(status, 'Error')
        if service == 'hydra':
            return {'error': text.lower().replace(' ', '_') if status != 401 else 'invalid_client',
                    'error_description': message + (' %s' % reason if reason else '')}
        if service == 'console':
            return {'error': {'error': text, 'error_description': message, 'message': message, 'status_code': status}}
        body = {'code': status, 'status': text, 'message': message}
        if reason:
            body['reason'] = reason
        return {'error': body}

    def dispatch(self, method):
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        server = self.server
        try:
            if path.startswith('/__standin/'):
                return self.control(method, path, self.read_body())
            if path.startswith('/__storage/'):
                content = server.project.storage.get(path.rsplit('/', 1)[1])
                if content is None:
                    return self.send(404, {'error': 'not found'})
                return self.send(200, raw=content, content_type='application/octet-stream')
            self.handle_api(method, path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def handle_api(self, method, path, query):
        server = self.server
        service = next((svc for prefix, svc in SERVICE_OF_PREFIX if path.startswith(prefix)), None)
        found = server.specs[service].operation(method, path) if service else None
        body_bytes = self.read_body()
        if found is None:
            server.count('%s unknown' % method, 404)
            return self.send(404, self.error_body(service or 'kratos', 404, 'no such endpoint: %s %s' % (method, path)))
        template, op, params = found
        key = '%s %s' % (method, template)
        spec = server.specs[service]
        headers = {}
        try:
            self.authorize(service, template)
            fault = server.take_fault(method, path)
            if fault and fault.get('kind') == 'reset':
                server.count(key, 'reset')
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if fault and fault.get('kind', 'status') == 'status' and not fault.get('after_commit'):
                status = int(fault.get('status', 500))
                extra = {}
                if status == 429 and fault.get('reset') is not None:
                    extra = {'x-ratelimit-limit': '1', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': str(fault['reset'])}
                raise HTTPFailure(status, fault.get('message', 'injected failure'), 'stand-in fault', headers=extra)
            bucket = op.get('x-ory-ratelimit-bucket')
            allowed, headers = server.limiter.hit(bucket)
            if not allowed:
                with server.stats_lock:
                    server.stats['rate_limited'] += 1
                raise HTTPFailure(429, 'Too many requests', 'rate limit of bucket %s exceeded' % bucket, headers=headers)
            with server.stats_lock:
                seen = server.stats['buckets'].setdefault(
                    bucket or 'none', {'count': 0, 'first': time.time(), 'last': 0, 'busy_seconds': 0.0})
                seen['count'] += 1
                seen['last'] = time.time()
            busy_from = time.time()
            body = None
            if body_bytes and template != '/oauth2/token':
                try:
                    body = json.loads(body_bytes.decode('utf-8'))
                except ValueError as exc:
                    raise HTTPFailure(400, 'The request body is not valid JSON: %s' % exc)
                schema = spec.request_schema(op)
                if schema is not None:
                    try:
                        spec.validate(body, schema, strict=True)
                    except ContractError as exc:
                        with server.stats_lock:
                            server.stats['request_rejections'].append('%s: %s' % (key, exc))
                        raise HTTPFailure(400, 'The request was malformed or contained invalid parameters', str(exc))
            writes_identities = template.startswith('/admin/identities') and method in ('POST', 'PATCH', 'PUT', 'DELETE')
            if writes_identities and not server.project.identity_write.acquire(blocking=False):
                with server.stats_lock:
                    server.stats['concurrent_writes'] += 1
                raise HTTPFailure(429, 'Too many concurrent identity writes for this project',
                                  'concurrent identity writes', headers={'x-ratelimit-reset': '1'})
            try:
                if fault and fault.get('kind') == 'delay':
                    # slow processing (inside the identity write section, like a slow database)
                    time.sleep(float(fault.get('delay', 5)))
                status, out, more = self.route(method, template, params, query, body, body_bytes, fault)
            finally:
                if writes_identities:
                    server.project.identity_write.release()
            headers.update(more or {})
            with server.stats_lock:
                seen['busy_seconds'] += time.time() - busy_from
            if fault and fault.get('after_commit'):
                raise HTTPFailure(int(fault.get('status', 500)), 'injected failure after the write', 'stand-in fault')
        except HTTPFailure as exc:
            status = exc.status
            out = self.error_body(service, exc.status, exc.message, exc.reason)
            headers.update(exc.headers)
        if server.validate_responses and out is not None:
            schema = spec.response_schema(op, status)
            if schema is not None:
                try:
                    spec.validate(out, schema, strict=False, where='response')
                except ContractError as exc:
                    with server.stats_lock:
                        server.stats['contract_violations'].append('%s %s: %s' % (key, status, exc))
                    status, out = 500, self.error_body(service, 500, 'stand-in contract violation: %s' % exc)
        server.count(key, status)
        return self.send(status, out, headers)

    def authorize(self, service, template):
        server = self.server
        if not server.auth:
            if self.headers.get('Authorization'):
                with server.stats_lock:
                    server.stats['unexpected_authorization'] += 1
            return
        if template == '/oauth2/token':
            return
        given = self.headers.get('Authorization') or ''
        want = server.workspace_key if service == 'console' else server.api_key
        if not want or not hmac.compare_digest(given.encode(), ('Bearer ' + want).encode()):
            raise HTTPFailure(401, 'The request could not be authorized', 'missing or invalid API key')

    # -- operations

    def page_link(self, template, query, token):
        keep = dict((k, v) for k, v in query.items() if k not in ('page_token', 'page'))
        keep['page_token'] = [token]
        return '<%s%s?%s>; rel="next"' % (self.server.base_url, template, urlencode(keep, doseq=True))

    @staticmethod
    def page_size(query, maximum, default=250):
        raw = (query.get('page_size') or [str(default)])[0]
        try:
            size = int(raw)
        except ValueError:
            raise HTTPFailure(400, 'page_size must be an integer')
        if size < 1 or size > maximum:
            raise HTTPFailure(400, 'page_size must be between 1 and %d' % maximum)
        return size

    def keyset_page(self, scope, order, query, maximum, fault):
        size = self.page_size(query, maximum)
        start = 0
        token = (query.get('page_token') or [None])[0]
        if token:
            last = self.server.tokens.read(scope, token)
            start = bisect.bisect_right(order, last)
        keys = order[start:start + size]
        more = start + size < len(order)
        next_token = None
        if more:
            next_token = self.server.tokens.make(scope, keys[-1])
            if fault and fault.get('kind') == 'repeat_token' and token:
                next_token = token
        return keys, next_token

    def route(self, method, template, params, query, body, raw, fault):
        project = self.server.project
        if template == '/admin/identities' and method == 'GET':
            # identity/handler.go, parseListIdentitiesParameters and list: include_credential declassifies the
            # named types on the list as on a read by ID; an unknown type is a 400. Kratos releases before
            # include_credential on the list (ory/kratos#3190) ignore it and list credentials without their
            # configuration: the quirk list_ignores_include_credential.
            include = query.get('include_credential') or []
            for value in include:
                if value not in CREDENTIAL_TYPES:
                    raise HTTPFailure(400, 'The request was malformed or contained invalid parameters',
                                      'Invalid value `%s` for parameter `include_credential`.' % value)
            if project.quirks.get('list_ignores_include_credential'):
                include = []
            ident = (query.get('credentials_identifier') or [None])[0]
            with project.lock:
                if ident:
                    found = [i for (kind, value), i in project.identifiers.items() if value == ident]
                    return 200, [project.render_identity(project.identities[i], include) for i in sorted(set(found))], {}
                keys, token = self.keyset_page('identities', project.identity_order, query, IDENTITY_PAGE_MAX, fault)
                page = [project.render_identity(project.identities[k], include) for k in keys]
            return 200, page, ({'Link': self.page_link(template, query, token)} if token else {})
        if template == '/admin/identities' and method == 'POST':
            rec = project.create_identity(body)
            return 201, project.render_identity(rec), {}
        if template == '/admin/identities' and method == 'PATCH':
            # identity/handler.go, batchPatchIdentities: more than 1000 patches, a body that does not decode, or a
            # create body that cannot be turned into an identity (bad state, a credential that cannot be imported;
            # see prepare_identity) refuse the whole request with 400 and nothing is written. Then each identity
            # is validated against its schema (identity/manager.go, CreateIdentities: 400 for that identity) and
            # inserted (persistence/sql/identity/persister_identity.go, CreateIdentities: 409 for that identity
            # when an identifier or external ID is taken); the others are created. Each patch answers with
            # action create + identity, or action error + error, and its patch_id.
            items = body.get('identities') or []
            if len(items) > 1000:
                raise HTTPFailure(400, 'The maximum number of identities per request that can be created or deleted '
                                  'at once is 1000.', 'too many identities')
            results = []
            statuses = set()
            prepared = []
            for item in items:
                if 'create' not in item:
                    prepared.append((item, None, {'code': 400, 'message': 'only create patches are supported'}))
                    continue
                try:
                    prepared.append((item, project.prepare_identity(item['create']), None))
                except HTTPFailure as exc:
                    if getattr(exc, 'request_level', True):
                        raise
                    prepared.append((item, None, {'code': exc.status, 'status': STATUS_TEXT.get(exc.status),
                                                  'message': 'The request was malformed or contained invalid parameters',
                                                  'reason': exc.message}))
            for item, ready, error in prepared:
                if ready is not None:
                    try:
                        rec = project.create_identity(item['create'], prepared=ready, batch=True)
                        results.append({'action': 'create', 'identity': rec['id'], 'patch_id': item.get('patch_id')})
                        continue
                    except HTTPFailure as exc:
                        error = {'code': exc.status, 'status': STATUS_TEXT.get(exc.status), 'message': exc.message,
                                 'reason': exc.reason}
                statuses.add(error['code'])
                results.append({'action': 'error', 'patch_id': item.get('patch_id'), 'error': error})
            # the handler's documentation (Ory Network): when every patch failed, the answer is 409 if any failed on
            # a conflict, else 400. Kratos' handler code itself answers 200 with the per-patch errors: the quirk
            # batch_ok_when_every_patch_fails (identity/handler.go, batchPatchIdentities, the final write).
            if items and all(r['action'] == 'error' for r in results) and not project.quirks.get('batch_ok_when_every_patch_fails'):
                status = 409 if 409 in statuses else 400
                raise HTTPFailure(status, 'none of the identities could be imported', '; '.join(
                    sorted(set(r['error'].get('reason') or r['error']['message'] for r in results)))[:500])
            for r in results:
                if r.get('patch_id') is None:
                    r.pop('patch_id')
            return 200, {'identities': results}, {}
        if template == '/admin/identities/by/external/{externalID}':
            include = query.get('include_credential') or []
            with project.lock:
                ident = project.by_external.get(params[0])
                if not ident:
                    raise HTTPFailure(404, 'Unable to locate the resource', 'no identity with this external ID')
                return 200, project.render_identity(project.identities[ident], include), {}
        if template == '/admin/identities/{id}' and method == 'GET':
            include = query.get('include_credential') or []
            with project.lock:
                rec = project.identities.get(params[0])
                if not rec:
                    raise HTTPFailure(404, 'Unable to locate the resource')
                return 200, project.render_identity(rec, include), {}
        if template == '/admin/identities/{id}' and method == 'DELETE':
            with project.lock:
                rec = project.identities.pop(params[0], None)
                if not rec:
                    raise HTTPFailure(404, 'Unable to locate the resource')
                project.identity_order.remove(rec['id'])
                project.by_external.pop(rec.get('external_id'), None)
                for key in [k for k, v in project.identifiers.items() if v == rec['id']]:
                    del project.identifiers[key]
            return 204, None, {}
        if template == '/version':
            # ory/x healthx/handler.go, Handler.Version: the software version the service was built with, as
            # {"version": ...}; Kratos, Hydra and Keto mount it on their admin APIs, and Ory Network answers it on
            # the project URL. The stand-in is one server for the three services, so it has one version.
            return 200, {'version': self.server.ory_version}, {}
        if template == '/schemas':
            return 200, [{'id': k, 'schema': v} for k, v in sorted(project.schemas.items())], {}
        if template == '/admin/clients' and method == 'GET':
            with project.lock:
                keys, token = self.keyset_page('clients', project.client_order, query, 1000, fault)
                page = [project.render_client(project.clients[k]) for k in keys]
            return 200, page, ({'Link': self.page_link(template, query, token)} if token else {})
        if template == '/admin/clients' and method == 'POST':
            return 201, project.create_client(body), {}
        if template == '/admin/clients/{id}' and method == 'GET':
            rec = project.clients.get(params[0])
            if not rec:
                raise HTTPFailure(404, 'The requested resource could not be found')
            return 200, project.render_client(rec), {}
        if template == '/admin/keys/{set}' and method == 'GET':
            # ory/hydra jwk/handler.go, Handler.getJsonWebKeySet: the admin API returns the keys as stored, private
            # parts included (ExcludeOpaquePrivateKeys, jwk/helper.go, reduces only keys held by an opaque signer,
            # such as an HSM, to their public part; the stand-in has none)
            keys = project.jwks.get(params[0])
            if not keys:
                raise HTTPFailure(404, 'The requested resource could not be found', 'unknown JSON Web Key Set')
            return 200, {'keys': copy.deepcopy(keys)}, {}
        if template == '/admin/keys/{set}' and method == 'PUT':
            keys = (body or {}).get('keys') or []
            project.jwks[params[0]] = copy.deepcopy(keys)
            return 200, {'keys': copy.deepcopy(keys)}, {}
        if template == '/oauth2/token':
            return self.token(raw)
        if template == '/namespaces':
            return 200, {'namespaces': [{'name': n} for n in project.namespaces]}, {}
        if template == '/relation-tuples' and method == 'GET':
            namespace = (query.get('namespace') or [None])[0]
            with project.lock:
                if namespace is not None and namespace not in project.tuples:
                    raise HTTPFailure(404, 'Unknown namespace with name "%s".' % namespace)
                rows = project.tuples.get(namespace, []) if namespace else sorted(
                    k for v in project.tuples.values() for k in v)
                for field, index in (('object', 1), ('relation', 2)):
                    if field in query:
                        rows = [r for r in rows if r[index] == query[field][0]]
                subject = keto_subject_query(query)
                if subject is not None:
                    want = project.subject_key(subject)
                    rows = [r for r in rows if (r[3], r[4]) == want]
                keys, token = self.keyset_page('tuples:%s' % namespace, rows, query, 1000, fault)
            return 200, {'relation_tuples': [project.tuple_from_key(k) for k in keys], 'next_page_token': token or ''}, {}
        if template == '/admin/relation-tuples' and method == 'PATCH':
            with project.lock:
                for item in body or []:
                    if item.get('action') == 'insert':
                        project.insert_tuple(item['relation_tuple'])
                    elif item.get('action') == 'delete':
                        project.delete_tuple(item['relation_tuple'])
                    else:
                        raise HTTPFailure(400, 'unknown action %r' % item.get('action'))
            return 204, None, {}
        if template == '/admin/relation-tuples' and method == 'PUT':
            with project.lock:
                project.insert_tuple(body)
            return 201, body, {}
        if template == '/relation-tuples/check/openapi':
            # ory/keto internal/check/handler.go, Handler.getCheck: the tuple comes from the query
            # (ketoapi/enc_url_query.go, RelationTuple.FromURLQuery); an unknown namespace answers "not allowed"
            subject = keto_subject_query(query)
            if subject is None:
                raise HTTPFailure(400, 'subject is not allowed to be nil', 'Please provide a subject.')
            if any(field not in query for field in ('namespace', 'object', 'relation')):
                raise HTTPFailure(400, 'incomplete tuple, provide "namespace", "object", "relation", and a subject')
            try:
                depth = int((query.get('max-depth') or ['0'])[0] or 0)
            except ValueError:
                raise HTTPFailure(400, 'max-depth must be an integer')
            q = dict((k, v[0]) for k, v in query.items())
            with project.lock:
                allowed = q['namespace'] in project.tuples and project.check(
                    q['namespace'], q['object'], q['relation'], subject, depth)
            return 200, {'allowed': allowed}, {}
        if template == '/projects/{project_id}':
            if params[0] != project.id:
                raise HTTPFailure(404, 'Project not found')
            if method == 'GET':
                return 200, project.project_document(), {}
            if method == 'PUT':
                project.apply_services(body.get('services') or {})
                project.name = body.get('name') or project.name
                return 200, {'project': project.project_document(), 'warnings': []}, {}
        raise HTTPFailure(404, 'the stand-in does not implement %s %s' % (method, template))

    def token(self, raw):
        # the order of ory/fosite client_authentication.go, Fosite.AuthenticateClient, then the
        # client_credentials grant (handler/oauth2/flow_client_credentials.go, HandleTokenEndpointRequest)
        project = self.server.project
        form = dict((k, v[0]) for k, v in parse_qs(raw.decode('utf-8')).items())
        auth = self.headers.get('Authorization') or ''
        if form.get('client_assertion_type'):
            # a signed client assertion (private_key_jwt; client_secret_jwt is refused upstream): the stand-in
            # does not verify assertions
            rec = project.clients.get(form.get('client_id') or '')
            if rec and rec.get('token_endpoint_auth_method') == 'client_secret_jwt':
                raise HTTPFailure(401, 'This requested OAuth 2.0 client only supports client authentication method '
                                       '"client_secret_jwt", however that method is not supported by this server.')
            raise HTTPFailure(400, 'The stand-in does not verify client assertions (private_key_jwt).')
        basic = auth.startswith('Basic ')
        if basic:
            try:
                pair = base64.b64decode(auth[6:]).decode('utf-8')
            except ValueError:
                raise HTTPFailure(401, 'invalid basic authorization header')
            client_id, _sep, secret = pair.partition(':')
            client_id, secret = unquote(client_id), unquote(secret)
        else:
            client_id, secret = form.get('client_id'), form.get('client_secret')
        rec = project.clients.get(client_id or '')
        if not rec:
            raise HTTPFailure(401, 'Client authentication failed (e.g., unknown client, no client authentication included, '
                                   'or unsupported authentication method).')
        supported = rec.get('token_endpoint_auth_method', 'client_secret_basic')
        used = None
        if not basic and form.get('client_id') and form.get('client_secret') and supported != 'client_secret_post':
            used = 'client_secret_post'
        elif basic and supported != 'client_secret_basic':
            used = 'client_secret_basic'
        if used:
            raise HTTPFailure(401, 'The OAuth 2.0 Client supports client authentication method "%s", but method "%s" '
                                   'was requested.' % (supported, used))
        if supported == 'none':
            if form.get('grant_type') == 'client_credentials':
                raise HTTPFailure(400, "The OAuth 2.0 Client is marked as public and is thus not allowed to use "
                                       "authorization grant 'client_credentials'.", 'invalid_grant')
        else:
            stored = project.client_secrets.get(client_id or '')
            if (not stored or not secret
                    or not hmac.compare_digest(stored, hashlib.sha256(secret.encode('utf-8')).hexdigest())):
                raise HTTPFailure(401, 'Client authentication failed (e.g., unknown client, no client authentication '
                                       'included, or unsupported authentication method).')
        if form.get('grant_type') != 'client_credentials' or 'client_credentials' not in (rec.get('grant_types') or []):
            raise HTTPFailure(400, 'The client is not allowed to request the grant type %s' % form.get('grant_type'))
        project.tokens_issued += 1
        return 200, {'access_token': 'ory_at_' + seeding.random_token(32), 'expires_in': 3599,
                     'scope': form.get('scope', ''), 'token_type': 'bearer'}, {}

    # -- control endpoints of the stand-in itself

    def control(self, method, path, raw):
        server = self.server
        body = json.loads(raw.decode('utf-8')) if raw else {}
        name = path[len('/__standin/'):]
        if name == 'stats':
            with server.stats_lock:
                limits = dict((k, list(v)) for k, v in server.limiter.limits.items())
                return self.send(200, dict(server.stats, summary=server.project.summary(), limits=limits))
        if name == 'reset-stats':
            server.reset_stats()
            return self.send(200, {})
        if name == 'faults':
            with server.faults_lock:
                server.faults = [] if method == 'DELETE' else list(body)
            return self.send(200, {'faults': server.faults})
        if name == 'limits':
            if body.get('tier'):
                server.set_tier(body['tier'], body.get('env', 'prod'))
            elif body.get('buckets') is not None:
                server.limiter.limits = dict((k, tuple(v)) for k, v in body['buckets'].items())
                server.limiter.state = {}
            else:
                server.limiter.limits = {}
            return self.send(200, {'limits': server.limiter.limits})
        if name == 'seed':
            made = server.project.seed(identities=body.get('identities', 0), seed=body.get('seed', 1),
                                       hash_pool=body.get('hash_pool', 0), clients=body.get('clients', 0),
                                       tuples=body.get('tuples', True), jwk_sets=body.get('jwk_sets', []),
                                       extras=body.get('extras', True), passwordless=body.get('passwordless', 0))
            return self.send(200, made)
        if name == 'seed-hydra':
            return self.send(200, server.project.seed_hydra(keyed_clients=body.get('keyed_clients', True),
                                                            mixed_jwk_set=body.get('mixed_jwk_set')))
        if name == 'config':
            if not server.project.schemas:
                server.project.install_default_config()
            if body.get('jwk_sets'):
                for set_name in body['jwk_sets']:
                    kid = '%s-%s' % (set_name.rsplit('.', 1)[-1], seeding.random_token(6))
                    server.project.jwks[set_name] = [seeding.rsa_jwk(kid)]
            return self.send(200, server.project.summary())
        if name == 'version':
            # what GET /version answers from now on (the Ory release the project runs)
            server.ory_version = body.get('version', ORY_VERSION)
            return self.send(200, {'version': server.ory_version})
        if name == 'quirks':
            unknown = sorted(set(body) - set(server.project.quirks))
            if unknown:
                return self.send(400, {'error': 'unknown quirks: %s' % ', '.join(unknown)})
            server.project.quirks.update(body)
            return self.send(200, {'quirks': server.project.quirks})
        if name == 'identity-ids':
            with server.project.lock:
                return self.send(200, {'ids': list(server.project.identity_order)})
        return self.send(404, {'error': 'unknown control endpoint %s' % name})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--api-key', help='the project API key (Bearer) of the Kratos, Hydra and Keto APIs')
    parser.add_argument('--workspace-key', help='the workspace API key of the console API (/projects)')
    parser.add_argument('--no-auth', action='store_true', help='self-hosted style: no API keys')
    parser.add_argument('--project-id')
    parser.add_argument('--tier', help='rate limits of this tier (Develop, Production, Growth, Enterprise)')
    parser.add_argument('--env', default='prod', choices=['prod', 'stage', 'dev'])
    parser.add_argument('--validate-responses', action='store_true', help='check every response against the spec')
    parser.add_argument('--preset', choices=['sample', 'blank'], default='sample',
                        help='sample: the configuration the seeded data needs; blank: a new, empty project')
    parser.add_argument('--seed-identities', type=int, default=0)
    parser.add_argument('--seed-clients', type=int, default=0)
    parser.add_argument('--seed-passwordless', type=int, default=0,
                        help='identities without a password (social sign-in, passkey, code, SAML) besides the others')
    parser.add_argument('--hash-pool', type=int, default=0, help='reuse this many distinct hashes (benchmarks)')
    parser.add_argument('--jwk-set', action='append', default=[])
    parser.add_argument('--default-jwk-sets', action='store_true',
                        help='create hydra.openid.id-token and hydra.jwt.access-token like a fresh Hydra does')
    parser.add_argument('--ready-file', help='write the base URL here once listening')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args(argv)
    server = StandIn((args.host, args.port), api_key=args.api_key, workspace_key=args.workspace_key, auth=not args.no_auth,
                     validate_responses=args.validate_responses, project_id=args.project_id, tier=args.tier, env=args.env,
                     quiet=not args.verbose)
    if args.preset == 'blank':
        server.project.install_blank_config()
    else:
        server.project.install_default_config()
    jwk_sets = list(args.jwk_set) + (list(DEFAULT_JWK_SETS) if args.default_jwk_sets else [])
    server.project.seed(identities=args.seed_identities, clients=args.seed_clients, hash_pool=args.hash_pool,
                        jwk_sets=jwk_sets, passwordless=args.seed_passwordless)
    if args.ready_file:
        tmp = args.ready_file + '.tmp'
        with open(tmp, 'w') as handle:
            handle.write(server.base_url + '\n')
        os.replace(tmp, args.ready_file)
    sys.stdout.write('ory stand-in listening on %s (project %s)\n' % (server.base_url, server.project.id))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
