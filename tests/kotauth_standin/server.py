#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stand-in for Kotauth's admin backup API.

Kotauth cannot run here, so tests talk to this stand-in. It follows Kotauth's source
(InumanSoul/kotauth; paths below are relative to ``src/main/kotlin/com/kauth/``) and produces and
accepts real ``bkp1`` archives, with an implementation of its own (it shares no code with the
collection or with Kotauth). tests/kotauth_standin/FIDELITY.md lists every behaviour, where Kotauth
defines it and where this stand-in simplifies.

* ``POST /admin/api/v1/tenants/{slug}/export`` with ``{"passphrase", "includeSigningKeys",
  "includeAuditLog"}`` answers 200 with JSON: ``envelope`` (one ASCII line
  ``bkp1.{salt}.{nonce}.{ct+tag}``, base64url without padding; PBKDF2-HMAC-SHA256 with 600,000
  iterations, 16-byte salt, 12-byte nonce, AES-256-GCM), ``schemaVersion``, ``kotauthVersion``,
  ``exportedAt``, ``summary`` and ``manifest``;
* ``POST /admin/api/v1/tenants/import`` takes JSON only (``envelope``, ``passphrase``,
  ``newSlug``), always creates a new tenant (409 when the slug exists), all or nothing, and applies
  the schema rule: an archive newer than this instance's schema is refused (422 "Schema too new");
* errors are problem+json bodies (``type`` ``https://kotauth.dev/errors/{status}``); a missing or
  non-``kauth_`` bearer token gets the bearer provider's bare 401, an unknown key 401 "Invalid API
  key", a key without the scope 403 "Insufficient scope".

Test-only control endpoints live under ``/__standin/`` (statistics, tenant content, settings,
API keys, faults).

    python tests/kotauth_standin/server.py --port 8080 --api-key-file KEYFILE --seed acme:20 --seed globex:5
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# infrastructure/Pbkdf2AesGcmBackupEncryption.kt, companion object: the envelope's parameters
ITERATIONS = 600000
SALT_LENGTH = 16
NONCE_LENGTH = 12
VERSION_PREFIX = 'bkp1.'
# domain/model/BackupExport.kt, BackupExportV1.CURRENT_EXPORT_VERSION: a string
EXPORT_VERSION = '1.0.0'
# domain/model/ApiKey.kt, ApiScope.TENANTS_EXPORT / TENANTS_IMPORT
SCOPE_EXPORT = 'tenants:export'
SCOPE_IMPORT = 'tenants:import'
BEARER_REALM = 'KotAuth REST API'
CONTENT_KEYS = ('applications', 'claimMappers', 'socialProviders', 'resourceServers', 'users', 'roles', 'groups')
# domain/service/BackupExporterService.kt, export: the redacted list, then signingKeys/auditLog unless included
REDACTED = ['applications.clientSecret', 'socialProviders.clientSecret', 'tenant.smtpPassword', 'users.totpSeed',
            'users.recoveryCodes', 'webauthn_credentials', 'sessions', 'authorizationCodes', 'magicLinkTokens']
NOTES = ['OAuth client secrets must be regenerated on the destination tenant.',
         'Social-provider client secrets must be re-entered on the destination tenant.',
         'Users with mfaEnabled=true must re-enroll MFA after import.',
         'SMTP password must be reconfigured on the destination tenant.']
# the fields BackupExportV1 declares without a default: kotlinx.serialization refuses a payload without them
REQUIRED = (('exportVersion', str), ('schemaVersion', int), ('exportedAt', int), ('kotauthVersion', str),
            ('manifest', dict), ('tenant', dict), ('applications', list), ('claimMappers', list),
            ('socialProviders', list), ('users', list), ('roles', list), ('groups', list))
_B64URL = re.compile(r'^[A-Za-z0-9_-]*={0,2}$')


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def unb64u(text):
    # java.util.Base64.getUrlDecoder: the URL alphabet, optional padding, nothing else (no whitespace)
    if not _B64URL.match(text) or len(text.rstrip('=')) % 4 == 1:
        raise ValueError('not base64url')
    text = text.rstrip('=')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def seal(plaintext, passphrase):
    # infrastructure/Pbkdf2AesGcmBackupEncryption.kt, encrypt: fresh salt and nonce, no associated data
    salt, nonce = os.urandom(SALT_LENGTH), os.urandom(NONCE_LENGTH)
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, ITERATIONS, 32)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return VERSION_PREFIX + '.'.join([b64u(salt), b64u(nonce), b64u(sealed)])


class Problem(Exception):
    def __init__(self, status, title, detail):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


class Challenge(Exception):
    """What Ktor's bearer provider answers when it finds no acceptable token: 401, no body."""


# adapter/web/admin/AdminBackupRoutes.kt, respondDecryptError: three 422 titles with fixed details
WRONG_PASSPHRASE = Problem(422, 'Wrong passphrase', 'The supplied passphrase did not decrypt the envelope. '
                           'Either it is wrong or the file is corrupt.')
MALFORMED = Problem(422, 'Malformed envelope', 'The backup envelope is malformed. The file may be truncated or '
                    'not a Kotauth backup.')


def unseal(envelope, passphrase):
    """infrastructure/Pbkdf2AesGcmBackupEncryption.kt, decrypt (the envelope is taken as sent: no trimming)."""
    if not envelope.startswith(VERSION_PREFIX):
        version = envelope.split('.', 1)[0] if '.' in envelope else ''
        if version.startswith('bkp'):
            raise Problem(422, 'Unsupported envelope version', "Backup envelope version '%s' is newer than this "
                          "build supports. Upgrade Kotauth and retry." % version)
        raise MALFORMED
    parts = envelope[len(VERSION_PREFIX):].split('.')
    if len(parts) != 3:
        raise MALFORMED
    try:
        salt, nonce, sealed = (unb64u(p) for p in parts)
    except ValueError:
        raise MALFORMED
    if len(salt) != SALT_LENGTH or len(nonce) != NONCE_LENGTH:
        raise MALFORMED
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, ITERATIONS, 32)
    try:
        # a ciphertext shorter than its tag fails in the cipher too: javax.crypto says AEADBadTagException
        if len(sealed) < 16:
            raise InvalidTag()
        return AESGCM(key).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise WRONG_PASSPHRASE


def make_tenant(slug, users, seed=1):
    """A tenant's content by natural keys, in the shapes of domain/model/BackupExport.kt, deterministic for a seed."""
    rnd = hashlib.sha256(('%s-%s' % (slug, seed)).encode()).hexdigest()
    content = {
        'tenant': {
            'slug': slug, 'displayName': slug.title(), 'issuerUrl': 'https://auth.example.org/t/%s' % slug,
            'tokenExpirySeconds': 300, 'refreshTokenExpirySeconds': 86400, 'registrationEnabled': True,
            'emailVerificationRequired': True, 'maxConcurrentSessions': None,
            'securityConfig': {'passwordMinLength': 12, 'passwordRequireSpecial': True, 'passwordRequireUppercase': True,
                               'passwordRequireNumber': True, 'passwordHistoryCount': 3, 'passwordMaxAgeDays': 0,
                               'passwordBlacklistEnabled': True, 'mfaPolicy': 'optional', 'lockoutMaxAttempts': 5,
                               'lockoutDurationMinutes': 15, 'corsAllowCredentials': False, 'hibpCheckEnabled': False,
                               'magicLinkEnabled': False, 'magicLinkTokenTtlMinutes': 15, 'passwordLoginEnabled': True,
                               'emailOtpSignupEnabled': False, 'emailOtpLockoutThreshold': 5,
                               'emailOtpLoginEnabled': False, 'loginIdentifierMode': 'USERNAME'},
            'theme': {'accentColor': '#%s' % rnd[:6], 'accentHoverColor': '#%s' % rnd[6:12], 'accentForeground': '#ffffff',
                      'bgDeep': '#0b0b0f', 'surface': '#15151c', 'bgInput': '#1c1c25', 'borderColor': '#2a2a35',
                      'borderRadius': '8px', 'textPrimary': '#f5f5f7', 'textMuted': '#9a9aa5', 'fontFamily': 'Inter',
                      'logoUrl': None, 'faviconUrl': None, 'defaultLocale': 'en', 'loginLayout': 'CENTERED',
                      'loginBackgroundUrl': None, 'loginTagline': None},
            'portalConfig': {'layout': 'SIDEBAR'},
            'smtp': {'host': 'smtp.example.org', 'port': 587, 'username': 'mailer', 'fromAddress': 'no-reply@example.org',
                     'fromName': slug, 'tlsEnabled': True, 'enabled': True},
            'emailBranding': None,
        },
        'applications': [{'clientId': '%s-app-%d' % (slug, i), 'name': 'App %d' % i, 'description': None,
                          'accessType': 'confidential', 'enabled': True,
                          'redirectUris': ['https://app%d.example.org/cb' % i], 'tokenExpiryOverride': None,
                          'grantTypes': ['authorization_code', 'refresh_token']} for i in range(3)],
        'claimMappers': [{'attributeKey': 'department', 'claimName': 'dept', 'includeInAccess': True, 'includeInId': False}],
        'socialProviders': [{'provider': 'github', 'clientId': 'gh-%s' % rnd[:8], 'enabled': True, 'kind': 'SOCIAL'}],
        'resourceServers': [{'identifier': 'https://api.example.org', 'name': 'API', 'description': None, 'enabled': True,
                             'scopes': ['read']}],
        'roles': [{'name': 'admin', 'description': None, 'scope': 'tenant', 'clientId': None, 'childRoleNames': ['viewer']},
                  {'name': 'viewer', 'description': None, 'scope': 'tenant', 'clientId': None, 'childRoleNames': []}],
        'groups': [{'name': 'staff', 'description': None, 'parentGroupPath': None, 'attributes': {}, 'roleNames': ['viewer']},
                   {'name': 'ops', 'description': None, 'parentGroupPath': 'staff', 'attributes': {'oncall': 'yes'},
                    'roleNames': ['admin']}],
        'users': [],
    }
    for i in range(users):
        digest = hashlib.sha256(('%s-user-%d-%s' % (slug, i, seed)).encode()).hexdigest()
        content['users'].append({
            'username': 'user%04d' % i, 'email': 'user%04d@%s.example.org' % (i, slug), 'fullName': 'User %d' % i,
            'passwordHash': '$2a$10$' + digest[:53], 'emailVerified': True, 'enabled': True, 'requiredActions': [],
            'lastPasswordChangeAt': 1760000000 + i, 'mfaEnabled': i % 3 == 0, 'createdAt': 1750000000 + i,
            'customAttributes': {'department': 'd%d' % (i % 4)}, 'roleNames': ['viewer'] if i % 2 else ['admin'],
            'groupPaths': ['staff'] if i % 2 else ['staff/ops'], 'externalId': None, 'givenName': None, 'familyName': None,
        })
    return content


def counts(document):
    # adapter/web/admin/AdminBackupRoutes.kt, BackupCounts: eight counts, extras counted 0 when absent
    return {'users': len(document['users']), 'applications': len(document['applications']),
            'roles': len(document['roles']), 'groups': len(document['groups']),
            'claimMappers': len(document['claimMappers']), 'socialProviders': len(document['socialProviders']),
            'signingKeys': len(document.get('signingKeys') or []), 'auditEvents': len(document.get('auditLog') or [])}


def check_references(document):
    """domain/service/BackupImporterService.kt, performImport: a reference the export cannot resolve fails the
    transaction (IllegalStateException, answered as InvalidPayload)."""
    roles = set(r.get('name') for r in document['roles'])
    for role in document['roles']:
        for child in role.get('childRoleNames') or []:
            if child not in roles:
                return "Child role '%s' (parent '%s') was not in this export" % (child, role.get('name'))
    paths = set()
    for group in document['groups']:
        parent = group.get('parentGroupPath')
        paths.add(group.get('name') if parent is None else '%s/%s' % (parent, group.get('name')))
    for group in document['groups']:
        parent = group.get('parentGroupPath')
        if parent is not None and parent not in paths:
            return "Group path '%s' referenced but not present in export" % parent
        for name in group.get('roleNames') or []:
            if name.split('/', 1)[-1] not in roles:
                return "Role reference '%s' could not be resolved within this export" % name
    for user in document['users']:
        for name in user.get('roleNames') or []:
            if name.split('/', 1)[-1] not in roles:
                return "Role reference '%s' could not be resolved within this export" % name
        for path in user.get('groupPaths') or []:
            if path not in paths:
                return "User '%s' references missing group path '%s'" % (user.get('username'), path)
    return None


def imported_content(document, new_slug):
    """What BackupImporterService.performImport creates: the tenant by natural keys, with mail off, MFA off for
    every user and social providers disabled with a blank secret (the operator re-enters it)."""
    content = {key: copy.deepcopy(document.get(key)) for key in ('tenant',) + CONTENT_KEYS}
    content['tenant']['slug'] = new_slug
    content['tenant']['smtp'] = dict(content['tenant'].get('smtp') or {}, enabled=False)
    for user in content['users']:
        user['mfaEnabled'] = False
    for provider in content['socialProviders']:
        provider['enabled'] = False
    if content['resourceServers'] is None:
        content['resourceServers'] = []
    return content


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, api_key, schema_version, kotauth_version):
        super().__init__(address, Handler)
        # master-tenant API keys and their scopes
        self.api_keys = {api_key: [SCOPE_EXPORT, SCOPE_IMPORT]}
        self.schema_version = schema_version
        self.kotauth_version = kotauth_version
        self.tenants = {'master': make_tenant('master', 1)}
        self.lock = threading.Lock()
        self.stats = {}
        self.faults = {}
        self.imports = []
        self.audit = []

    def count(self, key):
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1


class Handler(BaseHTTPRequestHandler):
    server_version = 'kotauth-standin'
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt, *args):  # pylint: disable=arguments-differ
        sys.stderr.write('%s %s\n' % (self.command, self.path.split('?')[0]))

    def read_body(self):
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def send(self, status, body, content_type='application/json', headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode('utf-8')
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        # in pieces, as a real server streams a large body
        for start in range(0, len(data), 64 * 1024):
            self.wfile.write(data[start:start + 64 * 1024])

    def problem(self, exc):
        # adapter/web/api/ApiHelpers.kt, respondProblem: ProblemDetail(type, title, status, detail)
        self.send(exc.status, {'type': 'https://kotauth.dev/errors/%d' % exc.status, 'title': exc.title,
                               'status': exc.status, 'detail': exc.detail},
                  content_type='application/problem+json')

    def do_GET(self):  # noqa: N802
        self.dispatch('GET')

    def do_POST(self):  # noqa: N802
        self.dispatch('POST')

    def dispatch(self, method):
        path = self.path.split('?')[0]
        body = self.read_body()
        try:
            if path.startswith('/__standin/'):
                return self.control(method, path[len('/__standin/'):], body)
            match = re.match(r'^/admin/api/v1/tenants/([^/]+)/export$', path)
            if method == 'POST' and path == '/admin/api/v1/tenants/import':
                self.server.count('import')
                self.authorize(SCOPE_IMPORT)
                return self.import_(body)
            if method == 'POST' and match:
                self.server.count('export')
                self.authorize(SCOPE_EXPORT)
                return self.export(unquote(match.group(1)), body)
            raise Problem(404, 'Not found', 'No route %s %s' % (method, path))
        except Challenge:
            self.server.count('status_401')
            return self.send(401, b'', content_type='text/plain',
                             headers={'WWW-Authenticate': 'Bearer realm="%s"' % BEARER_REALM})
        except Problem as exc:
            self.server.count('status_%d' % exc.status)
            return self.problem(exc)

    def authorize(self, scope):
        header = self.headers.get('Authorization') or ''
        # Application.kt, bearer("api-key"): only a token that starts with kauth_ becomes a principal; anything else
        # gets Ktor's bearer challenge (401, WWW-Authenticate, no body) before the route runs
        if not header.startswith('Bearer ') or not header[7:].strip().startswith('kauth_'):
            raise Challenge()
        token = header[7:].strip()
        # adapter/web/admin/AdminBackupRoutes.kt, requireMasterAdminKey: the key must be valid in the master tenant
        found = None
        with self.server.lock:
            for key, scopes in self.server.api_keys.items():
                if hmac.compare_digest(token.encode(), key.encode()):
                    found = scopes
        if found is None:
            raise Problem(401, 'Invalid API key', 'The provided API key is not valid for the master tenant.')
        # adapter/web/admin/AdminBackupRoutes.kt, adminBackupRoutes: then the operation's scope
        if scope not in found:
            raise Problem(403, 'Insufficient scope', "API key must hold the '%s' scope." % scope)

    def export(self, slug, body):
        # adapter/web/admin/AdminBackupRoutes.kt, adminBackupRoutes (POST /tenants/{slug}/export)
        try:
            request = json.loads(body.decode('utf-8'))
            passphrase = request['passphrase']
            if not isinstance(passphrase, str):
                raise ValueError('passphrase')
            for flag in ('includeSigningKeys', 'includeAuditLog'):
                if not isinstance(request.get(flag, False), bool):
                    raise ValueError(flag)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise Problem(400, 'Invalid request body', "Body must be a JSON object with 'passphrase'.")
        if len(passphrase) < 16:
            raise Problem(422, 'Weak passphrase', 'Passphrase must be at least 16 characters.')
        with self.server.lock:
            content = copy.deepcopy(self.server.tenants.get(slug))
            fault = self.server.faults.get(slug)
        # domain/service/BackupTypes.kt, BackupError.TenantNotFound; AdminBackupRoutes.kt, respondBackupError
        if content is None:
            raise Problem(404, 'Tenant not found', "Tenant '%s' not found" % slug)
        if fault == 'fail':
            raise Problem(500, 'Internal error', 'export of %s failed (injected)' % slug)
        # domain/service/BackupExporterService.kt, export: extras are null unless asked for
        redacted = list(REDACTED)
        extras = []
        if request.get('includeSigningKeys'):
            extras.append('signingKeys')
            content['signingKeys'] = [{'keyId': '%s-k1' % slug, 'algorithm': 'RS256',
                                       'publicKeyPem': '-----BEGIN PUBLIC KEY-----\nstand-in\n-----END PUBLIC KEY-----',
                                       'privateKeyPem': '-----BEGIN PRIVATE KEY-----\nstand-in\n-----END PRIVATE KEY-----',
                                       'enabled': True, 'active': True, 'createdAt': 1750000000}]
        else:
            redacted.append('signingKeys')
            content['signingKeys'] = None
        if request.get('includeAuditLog'):
            extras.append('auditLog')
            content['auditLog'] = [{'createdAt': 1760000000, 'username': None, 'clientId': None, 'eventType': 'LOGIN_SUCCESS',
                                    'ipAddress': '192.0.2.10', 'userAgent': 'curl', 'details': {}}]
        else:
            redacted.append('auditLog')
            content['auditLog'] = None
        exported_at = int(time.time())
        document = {'exportVersion': EXPORT_VERSION, 'schemaVersion': self.server.schema_version,
                    'exportedAt': exported_at, 'kotauthVersion': self.server.kotauth_version,
                    'manifest': {'redactedFields': redacted, 'includedExtras': extras, 'notes': NOTES}}
        document.update(content)
        document['reserved'] = {'totpSeeds': None, 'scheduledExports': None}
        envelope = seal(json.dumps(document).encode('utf-8'), passphrase)
        if fault == 'tamper':
            # one character of the ciphertext changed on its way out
            index = len(envelope) - 20
            envelope = envelope[:index] + ('A' if envelope[index] != 'A' else 'B') + envelope[index + 1:]
        with self.server.lock:
            # AdminBackupRoutes.kt: every export is recorded in the audit log as ADMIN_TENANT_EXPORTED
            self.server.audit.append({'eventType': 'ADMIN_TENANT_EXPORTED', 'sourceSlug': slug})
        return self.send(200, {'envelope': envelope, 'schemaVersion': self.server.schema_version,
                               'kotauthVersion': self.server.kotauth_version, 'exportedAt': exported_at,
                               'summary': counts(document), 'manifest': document['manifest']})

    def import_(self, body):
        # adapter/web/admin/AdminBackupRoutes.kt, adminBackupRoutes (POST /tenants/import): call.receive of
        # ImportRequest through the JSON content negotiation; any other body (multipart too) is a 400
        ctype = (self.headers.get('Content-Type') or '').split(';')[0].strip().lower()
        fields = None
        if ctype == 'application/json':
            try:
                fields = json.loads(body.decode('utf-8'))
            except (ValueError, UnicodeDecodeError):
                fields = None
        if not isinstance(fields, dict) or not all(isinstance(fields.get(k), str)
                                                   for k in ('envelope', 'passphrase', 'newSlug')):
            with self.server.lock:
                self.server.stats['refused_%s' % (ctype or 'none')] = self.server.stats.get('refused_%s' % (ctype or 'none'), 0) + 1
            raise Problem(400, 'Invalid request body', "Body must be a JSON object with 'envelope', 'passphrase', "
                          "and 'newSlug'.")
        new_slug = fields['newSlug']
        plaintext = unseal(fields['envelope'], fields['passphrase'])
        try:
            document = json.loads(plaintext.decode('utf-8'))
            if not isinstance(document, dict):
                raise ValueError('not a JSON object')
            for key, kind in REQUIRED:
                if key not in document:
                    raise ValueError("Field '%s' is required for type with serial name "
                                     "'com.kauth.domain.model.BackupExportV1', but it was missing" % key)
                if not isinstance(document[key], kind) or isinstance(document[key], bool):
                    raise ValueError("Unexpected JSON token at field '%s'" % key)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(422, 'Invalid backup payload', 'Decrypted backup body is not a valid v1 export: %s' % exc)
        # domain/service/BackupTypes.kt, BackupCompatibilityMatrix.check: newer than this instance is refused
        if document['schemaVersion'] > self.server.schema_version:
            versions = (document['schemaVersion'], self.server.schema_version)
            raise Problem(422, 'Schema too new', 'Backup was taken at schema V%s but this build is at V%s. Upgrade '
                          'Kotauth on the destination before importing.' % versions)
        invalid = check_references(document)
        with self.server.lock:
            # domain/service/BackupImporterService.kt, import: the slug is checked after the schema rule
            if new_slug in self.server.tenants:
                raise Problem(409, 'Slug conflict', "Tenant slug '%s' already exists. Choose a different --new-slug."
                              % new_slug)
            if invalid:
                raise Problem(422, 'Invalid payload', 'Backup payload is invalid: %s' % invalid)
            # one transaction: the tenant appears whole or not at all
            self.server.tenants[new_slug] = imported_content(document, new_slug)
            self.server.imports.append({'newSlug': new_slug, 'format': 'json'})
            self.server.audit.append({'eventType': 'ADMIN_TENANT_IMPORTED', 'newSlug': new_slug})
        self.send(201, {'newTenantSlug': new_slug, 'schemaVersion': self.server.schema_version,
                        'exportSchemaVersion': document['schemaVersion'], 'summary': counts(document),
                        'manifest': {'redactedFields': document['manifest'].get('redactedFields') or [],
                                     'includedExtras': document['manifest'].get('includedExtras') or [],
                                     'notes': document['manifest'].get('notes') or []}})

    def control(self, method, name, body):
        server = self.server
        if name == 'stats':
            with server.lock:
                return self.send(200, {'requests': dict(server.stats), 'imports': list(server.imports),
                                       'tenants': sorted(server.tenants), 'audit': list(server.audit)})
        if name.startswith('tenants/') and method == 'GET':
            with server.lock:
                content = server.tenants.get(name[len('tenants/'):])
            if content is None:
                raise Problem(404, 'Tenant not found', name)
            return self.send(200, content)
        request = json.loads(body.decode('utf-8') or '{}')
        with server.lock:
            if name == 'config':
                for key in ('schema_version', 'kotauth_version'):
                    if key in request:
                        setattr(server, key, request[key])
            elif name == 'fault':
                server.faults.update(request)
            elif name == 'api-keys':
                # {key: [scopes]} adds master-tenant keys; {key: null} removes one
                for key, scopes in request.items():
                    if scopes is None:
                        server.api_keys.pop(key, None)
                    else:
                        server.api_keys[key] = list(scopes)
            elif name == 'seed':
                server.tenants[request['slug']] = make_tenant(request['slug'], request.get('users', 10), request.get('seed', 1))
            elif name == 'put-tenant':
                server.tenants[request['slug']] = request['content']
            else:
                raise Problem(404, 'Not found', name)
        return self.send(200, {'ok': True})


def main(argv=None):
    parser = argparse.ArgumentParser(description='Stand-in for the Kotauth admin backup API')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--api-key-file', required=True,
                        help='a file holding a master-tenant admin API key (kauth_...), kept off the command line')
    parser.add_argument('--schema-version', type=int, default=42)
    parser.add_argument('--kotauth-version', default='1.4.2')
    parser.add_argument('--seed', action='append', default=[], help='SLUG:USERS, a tenant to create')
    parser.add_argument('--ready-file', help='written with the base URL once listening')
    args = parser.parse_args(argv)
    with open(args.api_key_file) as handle:
        api_key = handle.read().strip()
    server = StandIn((args.host, args.port), api_key, args.schema_version, args.kotauth_version)
    for item in args.seed:
        slug, _sep, users = item.partition(':')
        server.tenants[slug] = make_tenant(slug, int(users or 10))
    url = 'http://%s:%d' % server.server_address[:2]
    if args.ready_file:
        tmp = args.ready_file + '.tmp'
        with open(tmp, 'w') as handle:
            handle.write(url + '\n')
        os.rename(tmp, args.ready_file)
    sys.stderr.write('Kotauth stand-in listening on %s\n' % url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
