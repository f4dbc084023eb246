#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stand-in for Kotauth's admin backup API.

Kotauth cannot run here, so tests talk to this stand-in. It follows Kotauth's documented
contract and produces and accepts real ``bkp1`` archives, with an implementation of its own
(it does not share code with the collection):

* ``POST /admin/api/v1/tenants/{slug}/export`` with ``{"passphrase", "includeSigningKeys",
  "includeAuditLog"}`` answers with the archive, one ASCII line ``bkp1.{salt}.{nonce}.{ct+tag}``
  (base64url; PBKDF2-HMAC-SHA256 with 600,000 iterations, 16-byte salt, 12-byte nonce,
  AES-256-GCM), as ``application/octet-stream`` (``--export-format json``: Kotauth's JSON answer
  with ``envelope``, versions, ``summary`` and ``manifest``);
* ``POST /admin/api/v1/tenants/import`` takes ``multipart/form-data`` (``file``, ``passphrase``,
  ``newSlug``) or JSON (``envelope``, ``passphrase``, ``newSlug``), always creates a new tenant
  (409 when the slug exists), all or nothing, and applies the schema rule: an archive newer than
  this instance's schema is refused (422 "Schema too new");
* errors are RFC 7807 problems; wrong passphrase, malformed envelope and unsupported envelope
  version are three distinct 422 titles; an unknown or missing API key gets 401.

Test-only control endpoints live under ``/__standin/`` (statistics, tenant content, settings,
faults).

    python tests/kotauth_standin/server.py --port 8080 --api-key-file KEYFILE --seed acme:20 --seed globex:5
"""

from __future__ import annotations

import argparse
import base64
import copy
import email.parser
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

ITERATIONS = 600000
EXPORT_VERSION = 1
CONTENT_KEYS = ('applications', 'claimMappers', 'socialProviders', 'resourceServers', 'users', 'roles', 'groups')
REDACTED = ['applications.clientSecret', 'socialProviders.clientSecret', 'tenant.smtpPassword', 'users.totpSeed',
            'users.recoveryCodes', 'webauthn_credentials', 'sessions', 'authorizationCodes', 'magicLinkTokens']
NOTES = ['OAuth client secrets must be regenerated on the destination tenant.',
         'Social-provider client secrets must be re-entered on the destination tenant.',
         'Users with mfaEnabled=true must re-enroll MFA after import.',
         'SMTP password must be reconfigured on the destination tenant.']
SLUG = re.compile(r'^[a-z0-9][a-z0-9-]{0,62}$')


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def unb64u(text):
    if not re.match(r'^[A-Za-z0-9_-]+={0,2}$', text):
        raise ValueError('not base64url')
    text = text.rstrip('=')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def seal(plaintext, passphrase):
    salt, nonce = os.urandom(16), os.urandom(12)
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, ITERATIONS, 32)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return '.'.join(['bkp1', b64u(salt), b64u(nonce), b64u(sealed)])


class Problem(Exception):
    def __init__(self, status, title, detail):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def unseal(envelope, passphrase):
    text = envelope.strip()
    version = text.split('.', 1)[0]
    if version != 'bkp1':
        if re.match(r'^bkp[0-9]+$', version):
            raise Problem(422, 'Unsupported envelope version',
                          "Backup envelope version '%s' is newer than this build supports." % version)
        raise Problem(422, 'Malformed envelope', 'The backup envelope is malformed.')
    parts = text.split('.')
    try:
        if len(parts) != 4:
            raise ValueError('parts')
        salt, nonce, sealed = (unb64u(p) for p in parts[1:])
        if len(salt) not in (16, 32) or len(nonce) != 12 or len(sealed) < 16:
            raise ValueError('sizes')
    except ValueError:
        raise Problem(422, 'Malformed envelope',
                      'The backup envelope is malformed. The file may be truncated or not a Kotauth backup.')
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, ITERATIONS, 32)
    try:
        return AESGCM(key).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise Problem(422, 'Wrong passphrase',
                      'The supplied passphrase did not decrypt the envelope. Either it is wrong or the file is corrupt.')


def make_tenant(slug, users, seed=1):
    """A tenant's content by natural keys, deterministic for a seed."""
    rnd = hashlib.sha256(('%s-%s' % (slug, seed)).encode()).hexdigest()
    content = {
        'tenant': {
            'slug': slug, 'displayName': slug.title(), 'issuerUrl': 'https://auth.example.org/t/%s' % slug,
            'tokenExpirySeconds': 300, 'refreshTokenExpirySeconds': 86400, 'registrationEnabled': True,
            'emailVerificationRequired': True, 'maxConcurrentSessions': None,
            'securityConfig': {'passwordMinLength': 12, 'mfaPolicy': 'optional', 'lockoutMaxAttempts': 5},
            'theme': {'accentColor': '#%s' % rnd[:6], 'defaultLocale': 'en'},
            'smtp': {'host': 'smtp.example.org', 'port': 587, 'username': 'mailer', 'fromAddress': 'no-reply@example.org',
                     'fromName': slug, 'tlsEnabled': True, 'enabled': True},
        },
        'applications': [{'clientId': '%s-app-%d' % (slug, i), 'name': 'App %d' % i, 'accessType': 'confidential',
                          'enabled': True, 'redirectUris': ['https://app%d.example.org/cb' % i],
                          'grantTypes': ['authorization_code', 'refresh_token']} for i in range(3)],
        'claimMappers': [{'attributeKey': 'department', 'claimName': 'dept', 'includeInAccess': True, 'includeInId': False}],
        'socialProviders': [{'provider': 'github', 'clientId': 'gh-%s' % rnd[:8], 'enabled': True, 'kind': 'SOCIAL'}],
        'resourceServers': [{'identifier': 'https://api.example.org', 'name': 'API', 'enabled': True, 'scopes': ['read']}],
        'roles': [{'name': 'admin', 'scope': 'tenant', 'childRoleNames': ['viewer']},
                  {'name': 'viewer', 'scope': 'tenant', 'childRoleNames': []}],
        'groups': [{'name': 'staff', 'parentGroupPath': None, 'roleNames': ['viewer']},
                   {'name': 'ops', 'parentGroupPath': 'staff', 'roleNames': ['admin']}],
        'users': [],
    }
    for i in range(users):
        digest = hashlib.sha256(('%s-user-%d-%s' % (slug, i, seed)).encode()).hexdigest()
        content['users'].append({
            'username': 'user%04d' % i, 'email': 'user%04d@%s.example.org' % (i, slug), 'fullName': 'User %d' % i,
            'passwordHash': '$2a$10$' + digest[:53], 'emailVerified': True, 'enabled': True,
            'mfaEnabled': i % 3 == 0, 'roleNames': ['viewer'] if i % 2 else ['admin'],
            'groupPaths': ['staff'] if i % 2 else ['staff/ops'], 'customAttributes': {'department': 'd%d' % (i % 4)},
        })
    return content


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, api_key, schema_version, kotauth_version, export_format):
        super().__init__(address, Handler)
        self.api_key = api_key
        self.schema_version = schema_version
        self.kotauth_version = kotauth_version
        self.export_format = export_format
        self.tenants = {'master': make_tenant('master', 1)}
        self.lock = threading.Lock()
        self.stats = {}
        self.faults = {}
        self.imports = []

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
        self.send(exc.status, {'type': 'about:blank', 'title': exc.title, 'status': exc.status, 'detail': exc.detail},
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
            if method == 'POST' and match:
                self.server.count('export')
                self.authorize()
                return self.export(unquote(match.group(1)), body)
            if method == 'POST' and path == '/admin/api/v1/tenants/import':
                self.server.count('import')
                self.authorize()
                return self.import_(body)
            raise Problem(404, 'Not found', 'No route %s %s' % (method, path))
        except Problem as exc:
            self.server.count('status_%d' % exc.status)
            return self.problem(exc)

    def authorize(self):
        header = self.headers.get('Authorization') or ''
        if not header.startswith('Bearer '):
            raise Problem(401, 'Unauthorized', 'A master-tenant API key is required. Send Authorization: Bearer kauth_...')
        if not hmac.compare_digest(header[7:].encode(), self.server.api_key.encode()):
            raise Problem(401, 'Invalid API key', 'The provided API key is not valid for the master tenant.')

    def export(self, slug, body):
        try:
            request = json.loads(body.decode('utf-8'))
            passphrase = request['passphrase']
            if not isinstance(passphrase, str):
                raise ValueError('passphrase')
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise Problem(400, 'Invalid request body', "Body must be a JSON object with 'passphrase'.")
        if len(passphrase) < 16:
            raise Problem(422, 'Weak passphrase', 'Passphrase must be at least 16 characters.')
        with self.server.lock:
            content = copy.deepcopy(self.server.tenants.get(slug))
            fault = self.server.faults.get(slug)
        if content is None:
            raise Problem(404, 'Tenant not found', 'Tenant %s not found' % slug)
        if fault == 'fail':
            raise Problem(500, 'Internal error', 'export of %s failed (injected)' % slug)
        redacted = list(REDACTED)
        extras = []
        for flag, key in (('includeSigningKeys', 'signingKeys'), ('includeAuditLog', 'auditLog')):
            if request.get(flag):
                extras.append(key)
                content[key] = [{'keyId': '%s-k1' % slug, 'algorithm': 'RS256'}] if key == 'signingKeys' else \
                    [{'eventType': 'LOGIN', 'createdAt': 1760000000}]
            else:
                redacted.append(key)
                content[key] = None
        exported_at = int(time.time())
        document = {'exportVersion': EXPORT_VERSION, 'schemaVersion': self.server.schema_version,
                    'exportedAt': exported_at, 'kotauthVersion': self.server.kotauth_version,
                    'manifest': {'redactedFields': redacted, 'includedExtras': extras, 'notes': NOTES}}
        document.update(content)
        envelope = seal(json.dumps(document).encode('utf-8'), passphrase)
        if fault == 'tamper':
            # one character of the ciphertext changed on its way out
            index = len(envelope) - 20
            envelope = envelope[:index] + ('A' if envelope[index] != 'A' else 'B') + envelope[index + 1:]
        if self.server.export_format == 'json':
            summary = {'users': len(content['users']), 'applications': len(content['applications']),
                       'roles': len(content['roles']), 'groups': len(content['groups']),
                       'claimMappers': len(content['claimMappers']), 'socialProviders': len(content['socialProviders']),
                       'signingKeys': len(content.get('signingKeys') or []), 'auditEvents': len(content.get('auditLog') or [])}
            return self.send(200, {'envelope': envelope, 'schemaVersion': self.server.schema_version,
                                   'kotauthVersion': self.server.kotauth_version, 'exportedAt': exported_at,
                                   'summary': summary, 'manifest': document['manifest']})
        return self.send(200, envelope.encode('ascii'), content_type='application/octet-stream',
                         headers={'Content-Disposition': 'attachment; filename="%s.bkp1"' % slug})

    def import_(self, body):
        ctype = self.headers.get('Content-Type') or ''
        fields = {}
        if ctype.startswith('multipart/form-data'):
            message = email.parser.BytesParser().parsebytes(b'Content-Type: ' + ctype.encode('latin-1') + b'\r\n\r\n' + body)
            if not message.is_multipart():
                raise Problem(400, 'Invalid request body', 'not a multipart body')
            for part in message.get_payload():
                name = part.get_param('name', header='content-disposition')
                fields[name] = part.get_payload(decode=True).decode('utf-8')
            if 'file' in fields:
                fields['envelope'] = fields.pop('file')
        elif ctype.startswith('application/json'):
            try:
                fields = json.loads(body.decode('utf-8'))
            except (ValueError, UnicodeDecodeError):
                fields = None
        if not isinstance(fields, dict) or not all(isinstance(fields.get(k), str)
                                                   for k in ('envelope', 'passphrase', 'newSlug')):
            raise Problem(400, 'Invalid request body', "Body must carry 'envelope' (or a 'file'), 'passphrase' and 'newSlug'.")
        new_slug = fields['newSlug']
        if not SLUG.match(new_slug):
            raise Problem(422, 'Invalid payload', 'newSlug %r is not a valid slug' % new_slug)
        plaintext = unseal(fields['envelope'], fields['passphrase'])
        try:
            document = json.loads(plaintext.decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(422, 'Invalid backup payload', 'Decrypted backup body is not a valid v1 export: %s' % exc)
        if document.get('exportVersion') != EXPORT_VERSION:
            raise Problem(422, 'Unsupported export version', 'export version %s' % document.get('exportVersion'))
        if document.get('schemaVersion', 0) > self.server.schema_version:
            raise Problem(422, 'Schema too new', 'The export has schema version %s; this instance is at %s.' % (
                document.get('schemaVersion'), self.server.schema_version))
        content = {key: document.get(key) for key in ('tenant',) + CONTENT_KEYS}
        content['tenant'] = dict(content['tenant'] or {}, slug=new_slug)
        with self.server.lock:
            if new_slug in self.server.tenants:
                raise Problem(409, 'Slug conflict', 'A tenant with slug %s already exists.' % new_slug)
            # one transaction: the tenant appears whole or not at all
            self.server.tenants[new_slug] = content
            self.server.imports.append({'newSlug': new_slug, 'format': 'multipart' if 'multipart' in ctype else 'json'})
        summary = {'users': len(content['users'] or []), 'applications': len(content['applications'] or []),
                   'roles': len(content['roles'] or []), 'groups': len(content['groups'] or []),
                   'claimMappers': len(content['claimMappers'] or []),
                   'socialProviders': len(content['socialProviders'] or []),
                   'signingKeys': len(document.get('signingKeys') or []), 'auditEvents': len(document.get('auditLog') or [])}
        self.send(201, {'newTenantSlug': new_slug, 'schemaVersion': self.server.schema_version,
                        'exportSchemaVersion': document.get('schemaVersion'), 'summary': summary,
                        'manifest': document.get('manifest')})

    def control(self, method, name, body):
        server = self.server
        if name == 'stats':
            with server.lock:
                return self.send(200, {'requests': dict(server.stats), 'imports': list(server.imports),
                                       'tenants': sorted(server.tenants)})
        if name.startswith('tenants/') and method == 'GET':
            with server.lock:
                content = server.tenants.get(name[len('tenants/'):])
            if content is None:
                raise Problem(404, 'Tenant not found', name)
            return self.send(200, content)
        request = json.loads(body.decode('utf-8') or '{}')
        with server.lock:
            if name == 'config':
                for key in ('schema_version', 'kotauth_version', 'export_format'):
                    if key in request:
                        setattr(server, key, request[key])
            elif name == 'fault':
                server.faults.update(request)
            elif name == 'seed':
                server.tenants[request['slug']] = make_tenant(request['slug'], request.get('users', 10), request.get('seed', 1))
            else:
                raise Problem(404, 'Not found', name)
        return self.send(200, {'ok': True})


def main(argv=None):
    parser = argparse.ArgumentParser(description='Stand-in for the Kotauth admin backup API')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0)
    parser.add_argument('--api-key-file', required=True, help='a file holding the admin API key (kept off the command line)')
    parser.add_argument('--schema-version', type=int, default=42)
    parser.add_argument('--kotauth-version', default='1.4.2')
    parser.add_argument('--export-format', choices=['octet-stream', 'json'], default='octet-stream')
    parser.add_argument('--seed', action='append', default=[], help='SLUG:USERS, a tenant to create')
    parser.add_argument('--ready-file', help='written with the base URL once listening')
    args = parser.parse_args(argv)
    with open(args.api_key_file) as handle:
        api_key = handle.read().strip()
    server = StandIn((args.host, args.port), api_key, args.schema_version, args.kotauth_version, args.export_format)
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
