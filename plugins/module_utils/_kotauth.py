# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Kotauth tenant archives (``bkp1``) and Kotauth's admin backup API.

A Kotauth tenant archive is one ASCII line ``bkp1.{salt}.{nonce}.{ciphertext+tag}``, each part
base64url: a 16-byte salt (Kotauth writes and reads only 16; 32 are read here too), a 12-byte nonce and
AES-256-GCM ciphertext with its 128-bit tag, under a key derived with PBKDF2-HMAC-SHA256 and
600,000 iterations from the export passphrase. The plaintext is Kotauth's JSON export: versions
(``exportVersion``, ``schemaVersion``, ``kotauthVersion``, ``exportedAt``), a ``manifest`` with
``redactedFields``, ``includedExtras`` and ``notes``, and the tenant's content by natural keys.

The archive is written into a backup set as it arrives (streamed through the set's own
encryption, age by default), then decrypted in memory once to prove that the passphrase opens
it and to record its safe facts. Its SHA-256 is recorded, so that a later check tells an
altered archive apart from a wrong passphrase (GCM alone cannot).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import secrets
import time
import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlsplit
from ansible.module_utils.six.moves.http_client import HTTPException
from ansible.module_utils.urls import open_url

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    CHUNK_SIZE,
    RecoveryError,
    iso,
    remove_quietly,
)
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    Compression,
    encrypt_stages,
    encryption_backend,
)
from ansible_collections.idp.recovery.plugins.module_utils._payload import describe_payload, read_payload, verify_set
from ansible_collections.idp.recovery.plugins.module_utils._stream import run_to_file

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
    HAS_CRYPTOGRAPHY = False
else:
    HAS_CRYPTOGRAPHY = True

VERSION = 'bkp1'
ITERATIONS = 600000
SALT_SIZES = (16, 32)
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
MIN_PASSPHRASE = 16
# an archive is read whole to decrypt it (as Kotauth itself does); refuse absurd sizes
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024

EXPORT_PATH = '/admin/api/v1/tenants/%s/export'
IMPORT_PATH = '/admin/api/v1/tenants/import'
USER_AGENT = 'idp.recovery-kotauth'
API_KEY_PREFIX = 'kauth_'
DEFAULT_TIMEOUT = 300
PAYLOAD_DIR = 'kotauth'
CONTENT = 'kotauth-bkp1'

WRONG_PASSPHRASE = 'wrong_passphrase'
UNSUPPORTED_VERSION = 'unsupported_version'
MALFORMED = 'malformed'
ALTERED = 'altered'

_VERSION_RE = re.compile(r'^bkp[0-9]+$')
_B64URL_RE = re.compile(r'^[A-Za-z0-9_-]*={0,2}$')
_SLUG_RE = re.compile(r'^[a-z0-9][a-z0-9-]{0,62}$')

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


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise RecoveryError(missing_required_lib('cryptography', reason='to decrypt Kotauth bkp1 archives'),
                            exception=CRYPTOGRAPHY_IMPORT_ERROR)


class EnvelopeError(RecoveryError):
    """A bkp1 archive that cannot be opened; ``kind`` is one of the four reasons above."""

    def __init__(self, kind, msg, **details):
        super(EnvelopeError, self).__init__(msg, reason=kind, **details)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# the envelope

def b64url_decode(text):
    if not _B64URL_RE.match(text):
        raise ValueError('not base64url')
    text = text.rstrip('=')
    if len(text) % 4 == 1:
        raise ValueError('impossible base64 length')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def parse_envelope(data):
    """(version, salt, nonce, ciphertext+tag) of a bkp1 archive given as bytes; raises EnvelopeError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode('ascii')
        except UnicodeDecodeError:
            raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it is not one ASCII line')
    else:
        text = data
    text = text.strip()
    if not text:
        raise EnvelopeError(MALFORMED, 'the archive is empty')
    if '\n' in text or '\r' in text:
        raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it is more than one line')
    version = text.split('.', 1)[0]
    if version != VERSION:
        if _VERSION_RE.match(version):
            raise EnvelopeError(UNSUPPORTED_VERSION, 'archive envelope version %s is not supported (only %s): it comes '
                                'from a newer Kotauth; use a newer idp.recovery or Kotauth to read it' % (version, VERSION),
                                envelope_version=version)
        raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it does not start with a version like "%s."' % VERSION)
    parts = text.split('.')
    if len(parts) != 4:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: %d dot-separated parts instead of 4 '
                            '(version, salt, nonce, ciphertext); the archive is truncated or damaged' % (VERSION, len(parts)))
    try:
        salt, nonce, sealed = [b64url_decode(part) for part in parts[1:]]
    except (ValueError, TypeError, binascii.Error):
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a part is not base64url; the archive is damaged' % VERSION)
    if len(salt) not in SALT_SIZES:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a %d-byte salt (expected %s)' % (
            VERSION, len(salt), ' or '.join(str(s) for s in SALT_SIZES)))
    if len(nonce) != NONCE_SIZE:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a %d-byte nonce (expected %d)' % (VERSION, len(nonce), NONCE_SIZE))
    if len(sealed) < TAG_SIZE:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: the ciphertext is shorter than its tag; the archive is truncated'
                            % VERSION)
    return version, salt, nonce, sealed


def derive_key(passphrase, salt, iterations=ITERATIONS):
    if not isinstance(passphrase, bytes):
        passphrase = passphrase.encode('utf-8')
    return hashlib.pbkdf2_hmac('sha256', passphrase, salt, iterations, KEY_SIZE)


def decrypt_envelope(data, passphrase):
    """The plaintext of a bkp1 archive; raises EnvelopeError (malformed, unsupported, wrong passphrase)."""
    _version, salt, nonce, sealed = parse_envelope(data)
    require_cryptography()
    if not passphrase:
        raise RecoveryError('a passphrase is needed to open a Kotauth archive')
    try:
        return AESGCM(derive_key(passphrase, salt)).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise EnvelopeError(WRONG_PASSPHRASE, 'wrong passphrase: the AES-GCM tag does not verify with the given passphrase')


def encrypt_envelope(plaintext, passphrase, salt=None, nonce=None, iterations=ITERATIONS):
    """A bkp1 archive of plaintext (for tests and drills; Kotauth writes the real ones)."""
    require_cryptography()
    salt = salt or os.urandom(SALT_SIZES[0])
    nonce = nonce or os.urandom(NONCE_SIZE)
    sealed = AESGCM(derive_key(passphrase, salt, iterations)).encrypt(nonce, plaintext, None)
    return ('%s.%s.%s.%s' % (VERSION, b64url_encode(salt), b64url_encode(nonce), b64url_encode(sealed))).encode('ascii')


def open_archive(data, passphrase, expected_sha256=None):
    """Check and decrypt an archive; return its export document (a dict).

    With ``expected_sha256`` (recorded when the archive was written) a different digest is an
    altered archive, told apart from a wrong passphrase. The envelope's form is checked first, so
    that an unsupported version or a malformed envelope is named as such.
    """
    parse_envelope(data)
    if expected_sha256:
        actual = hashlib.sha256(bytes(data)).hexdigest()
        if actual != expected_sha256:
            raise EnvelopeError(ALTERED, 'the archive was altered: its SHA-256 %s is not the %s recorded when it was '
                                'exported' % (actual, expected_sha256))
    plaintext = decrypt_envelope(data, passphrase)
    try:
        document = json.loads(plaintext.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeError(MALFORMED, 'the archive decrypts but does not hold a Kotauth export (not JSON: %s)' % exc)
    finally:
        plaintext = None
    if not isinstance(document, dict):
        raise EnvelopeError(MALFORMED, 'the archive decrypts but does not hold a Kotauth export (not a JSON object)')
    return document


# ---------------------------------------------------------------------------------------------
# what an export document says (safe facts only)

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


# ---------------------------------------------------------------------------------------------
# the admin API

def problem_message(status, body):
    """A message from an RFC 7807 problem body (Kotauth's error shape) or any body."""
    try:
        data = json.loads(body.decode('utf-8')) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ('title', 'detail') if data.get(k)]
        if not parts and data.get('error'):
            parts = [str(data['error'])]
        if parts:
            return ': '.join(parts), data.get('title')
    text = body.decode('utf-8', 'replace').strip() if body else ''
    return text[:300] or 'no message', None


class KotauthAPIError(RecoveryError):
    def __init__(self, msg, status=None, title=None, **details):
        super(KotauthAPIError, self).__init__(msg, status=status, **details)
        self.status = status
        self.title = title


class KotauthClient(object):
    """Kotauth's admin backup API; the API key only ever goes into the Authorization header."""

    def __init__(self, url, api_key, timeout=DEFAULT_TIMEOUT, validate_certs=True):
        split = urlsplit(url or '')
        if split.scheme not in ('http', 'https') or not split.netloc:
            raise RecoveryError('url must be the http:// or https:// base URL of Kotauth, not %r' % (url,))
        if not api_key:
            raise RecoveryError('api_key is required (a master-tenant admin API key, or KOTAUTH_API_KEY)')
        # Kotauth's bearer provider turns only tokens starting with kauth_ into a principal; anything else gets a
        # bare 401 before the request is read (Application.kt, bearer("api-key"))
        if not api_key.startswith(API_KEY_PREFIX):
            raise RecoveryError('api_key is not a Kotauth API key: Kotauth admin API keys start with %s (create one in '
                                'the master tenant with the tenants:export and tenants:import scopes)' % API_KEY_PREFIX)
        self.url = url.rstrip('/')
        self._api_key = api_key
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.requests = 0

    def _open(self, method, path, data, headers):
        send = {'Authorization': 'Bearer ' + self._api_key}
        send.update(headers)
        self.requests += 1
        label = '%s %s' % (method, path)
        try:
            return open_url(self.url + path, data=data, headers=send, method=method, timeout=self.timeout,
                            validate_certs=self.validate_certs, follow_redirects='none', http_agent=USER_AGENT)
        except HTTPError as exc:
            body = exc.read() if exc.fp is not None else b''
            msg, title = problem_message(exc.code, body)
            if exc.code == 401 and not body.strip():
                # the bearer provider's challenge: no problem body, only WWW-Authenticate
                msg = 'the API key was refused before the request was read'
            text = 'Kotauth %s failed with HTTP %s: %s' % (label, exc.code, msg)
            if exc.code in (401, 403):
                text += ('; check api_key (a master-tenant admin API key with the tenants:export scope, and '
                         'tenants:import for restores)')
            raise KotauthAPIError(text, status=exc.code, title=title)
        except (URLError, HTTPException, OSError) as exc:
            raise KotauthAPIError('Kotauth %s: cannot connect to %s: %s' % (label, self.url, getattr(exc, 'reason', None) or exc))

    def export(self, slug, passphrase, include_signing_keys=False, include_audit_log=False):
        """Start an export; return (response, content type).

        Kotauth's admin API answers with JSON carrying the archive as ``envelope``, with the versions,
        counts and manifest beside it (AdminBackupRoutes.kt, ExportResponse). A raw archive
        (application/octet-stream, what the admin console downloads) is read too.
        """
        body = json.dumps({'passphrase': passphrase, 'includeSigningKeys': bool(include_signing_keys),
                           'includeAuditLog': bool(include_audit_log)}).encode('utf-8')
        resp = self._open('POST', EXPORT_PATH % quote(slug, safe=''), body,
                          {'Content-Type': 'application/json', 'Accept': 'application/octet-stream, application/json'})
        ctype = (resp.headers.get('Content-Type') or '').split(';')[0].strip().lower()
        return resp, ctype

    def import_archive(self, envelope, passphrase, new_slug, request_format='json'):
        """Create a tenant from an archive; return the decoded answer.

        Kotauth's admin API reads only JSON ``{envelope, passphrase, newSlug}`` (AdminBackupRoutes.kt,
        ImportRequest) and answers any other body with 400; ``multipart`` is kept for compatibility.
        """
        if request_format == 'json':
            body = json.dumps({'envelope': bytes(envelope).decode('ascii'), 'passphrase': passphrase,
                               'newSlug': new_slug}).encode('utf-8')
            ctype = 'application/json'
        else:
            ctype, body = multipart_body([
                ('file', '%s.bkp1' % new_slug, 'application/octet-stream', bytes(envelope)),
                ('passphrase', None, None, passphrase.encode('utf-8')),
                ('newSlug', None, None, new_slug.encode('utf-8')),
            ])
        resp = self._open('POST', IMPORT_PATH, body, {'Content-Type': ctype, 'Accept': 'application/json'})
        try:
            raw = resp.read()
        finally:
            resp.close()
        try:
            return json.loads(raw.decode('utf-8'))
        except (ValueError, UnicodeDecodeError):
            raise KotauthAPIError('Kotauth POST %s answered %s without a JSON body: %s' % (
                IMPORT_PATH, resp.getcode(), raw[:200].decode('utf-8', 'replace')))

    def tenant_exists(self, slug):
        """Whether a tenant slug exists, through the export endpoint (404 means absent).

        The probe's passphrase is random and thrown away; the archive is not read.
        """
        try:
            resp, _ctype = self.export(slug, secrets.token_urlsafe(24))
        except KotauthAPIError as exc:
            if exc.status == 404:
                return False
            raise
        resp.close()
        return True

    def schema_version(self, slug='master'):
        """The instance's schema version, read from an export of ``slug`` under a throw-away passphrase."""
        passphrase = secrets.token_urlsafe(24)
        resp, ctype = self.export(slug, passphrase)
        try:
            raw = read_limited(resp)
        finally:
            resp.close()
        if ctype == 'application/json':
            answer = _json_answer(raw, EXPORT_PATH % slug)
            if isinstance(answer.get('schemaVersion'), int):
                return answer['schemaVersion']
            raw = answer.get('envelope', '').encode('ascii')
        return archive_facts(open_archive(raw, passphrase))['schema_version']


def _json_answer(raw, path):
    try:
        answer = json.loads(raw.decode('utf-8'))
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get('envelope'), str):
        raise KotauthAPIError('Kotauth POST %s answered JSON without an envelope' % path)
    return answer


def read_limited(stream, limit=MAX_ARCHIVE_BYTES):
    buf = bytearray()
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise RecoveryError('the Kotauth archive is larger than %d bytes; refusing to hold it in memory' % limit)


def multipart_body(fields):
    """(content type, body) of multipart/form-data with binary parts, as RFC 7578 has it."""
    boundary = 'idp-recovery-' + secrets.token_hex(16)
    out = []
    for name, filename, ctype, content in fields:
        disposition = 'form-data; name="%s"' % name
        if filename:
            disposition += '; filename="%s"' % filename
        head = 'Content-Disposition: %s\r\n' % disposition
        if ctype:
            head += 'Content-Type: %s\r\n' % ctype
        out.append(('--%s\r\n%s\r\n' % (boundary, head)).encode('ascii'))
        out.append(content)
        out.append(b'\r\n')
    out.append(('--%s--\r\n' % boundary).encode('ascii'))
    return 'multipart/form-data; boundary=%s' % boundary, b''.join(out)


# ---------------------------------------------------------------------------------------------
# shared options (see doc fragment idp.recovery.kotauth)

def kotauth_argument_spec():
    from ansible.module_utils.basic import env_fallback
    return dict(
        url=dict(type='str', required=True, fallback=(env_fallback, ['KOTAUTH_URL'])),
        api_key=dict(type='str', no_log=True, fallback=(env_fallback, ['KOTAUTH_API_KEY'])),
        kotauth_passphrase=dict(type='str', no_log=True, fallback=(env_fallback, ['KOTAUTH_BACKUP_PASSPHRASE'])),
        validate_certs=dict(type='bool', default=True),
        timeout=dict(type='int', default=DEFAULT_TIMEOUT),
    )


def client_from_params(params):
    return KotauthClient(params['url'], params.get('api_key'), timeout=params.get('timeout') or DEFAULT_TIMEOUT,
                         validate_certs=params.get('validate_certs', True))


def check_passphrase(passphrase):
    if not passphrase:
        raise RecoveryError('kotauth_passphrase is required (or KOTAUTH_BACKUP_PASSPHRASE)')
    if len(passphrase) < MIN_PASSPHRASE:
        raise RecoveryError('kotauth_passphrase must have at least %d characters (Kotauth refuses shorter ones)'
                            % MIN_PASSPHRASE)


def check_slug(slug, what='slug'):
    if not slug or not _SLUG_RE.match(slug):
        raise RecoveryError('%s %r is not a Kotauth tenant slug (lower-case letters, digits and "-")' % (what, slug))
    return slug


# ---------------------------------------------------------------------------------------------
# export into an open backup set

def payload_rel(slug, compressor, backend):
    suffix = {'zstd': '.zst', 'gzip': '.gz'}.get(compressor.name, '')
    suffix += {'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg'}.get(backend.name, '')
    return '%s/%s.bkp1%s' % (PAYLOAD_DIR, slug, suffix)


def recorded_tenants(set_dir):
    return ((_backup_set.read_metadata(set_dir).get('kotauth') or {}).get('tenants') or {})


class _Tee(object):
    """produce(sink) for run_to_file: the archive's bytes into the pipeline, hashed and kept."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.sha256 = hashlib.sha256()
        self.data = bytearray()

    def __call__(self, sink):
        for chunk in self.chunks:
            self.sha256.update(chunk)
            self.data += chunk
            if len(self.data) > MAX_ARCHIVE_BYTES:
                raise RecoveryError('the Kotauth archive is larger than %d bytes; refusing to hold it in memory'
                                    % MAX_ARCHIVE_BYTES)
            sink.write(chunk)


def _response_chunks(resp):
    while True:
        chunk = resp.read(CHUNK_SIZE)
        if not chunk:
            return
        yield chunk


class Exporter(object):
    def __init__(self, client, params, check_mode=False):
        self.client = client
        self.params = params
        self.check_mode = check_mode
        self.backend = encryption_backend(params['encryption'], recipients=params.get('recipients'),
                                          recipients_file=params.get('recipients_file'),
                                          passphrase=params.get('passphrase'), gpg_homedir=params.get('gpg_homedir'))
        self.compressor = Compression(params['compression'], params.get('compression_level'))
        # keys and levels are checked before anything is asked of Kotauth
        self.stages = encrypt_stages(self.compressor, self.backend)

    def run(self, set_dir, slugs):
        if not os.path.isdir(set_dir) or not _backup_set.looks_like_set(set_dir):
            raise RecoveryError('%s is not an open backup set; open it first (idp.recovery.backup_set state=present)'
                                % set_dir, path=set_dir)
        if _backup_set.is_complete(set_dir):
            raise RecoveryError('backup set %s is already finalized; open a new set for a new export' % set_dir, path=set_dir)
        if not slugs:
            raise RecoveryError('give the tenant slugs to export')
        if len(set(slugs)) != len(slugs):
            raise RecoveryError('slugs lists a tenant twice')
        for slug in slugs:
            check_slug(slug)
        recorded = recorded_tenants(set_dir)
        results = {}
        failures = []
        for slug in slugs:
            rel = payload_rel(slug, self.compressor, self.backend)
            known = recorded.get(slug)
            if known and os.path.isfile(os.path.join(set_dir, known.get('payload', ''))) and not self.params.get('force'):
                results[slug] = {'changed': False, 'payload': known['payload'], 'msg': 'the set already holds this tenant'}
                continue
            if self.check_mode:
                results[slug] = {'changed': True, 'payload': rel, 'msg': 'would export tenant %s into %s' % (slug, rel)}
                continue
            try:
                results[slug] = self.export_one(set_dir, slug, rel)
            except RecoveryError as exc:
                failures.append((slug, exc.msg))
                results[slug] = {'changed': False, 'failed': True, 'msg': exc.msg}
        changed = any(item.get('changed') for item in results.values())
        if failures:
            raise RecoveryError('Kotauth export failed for %d of %d tenant(s): %s. The set keeps the other tenants but '
                                'cannot be finalized until these are exported' % (
                                    len(failures), len(slugs), '; '.join('%s: %s' % f for f in failures)),
                                changed=changed, tenants=results, set_dir=set_dir)
        return {'changed': changed, 'set_dir': set_dir, 'tenants': results}

    def export_one(self, set_dir, slug, rel):
        dest = os.path.join(set_dir, rel)
        name = 'kotauth-' + slug
        started = time.time()
        # until the archive is written, checked and described, the set cannot be finalized
        _backup_set.begin_payload(set_dir, name, 'Kotauth export of tenant %s into %s' % (slug, rel))
        resp, ctype = self.client.export(slug, self.params['kotauth_passphrase'],
                                         self.params.get('include_signing_keys'), self.params.get('include_audit_log'))
        try:
            if ctype == 'application/json':
                answer = _json_answer(read_limited(resp), EXPORT_PATH % slug)
                tee = _Tee(iter([answer['envelope'].encode('ascii')]))
            else:
                tee = _Tee(_response_chunks(resp))
            os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
            sha256, size = run_to_file(tee, self.stages, dest)
        finally:
            resp.close()
        try:
            if not tee.data:
                raise RecoveryError('Kotauth sent an empty archive for tenant %s' % slug)
            document = open_archive(tee.data, self.params['kotauth_passphrase'])
            facts = archive_facts(document)
            document = None
            if facts['tenant_slug'] and facts['tenant_slug'] != slug:
                raise RecoveryError('Kotauth sent the archive of tenant %s when %s was asked for' % (facts['tenant_slug'], slug))
            envelope = {'version': VERSION, 'sha256': tee.sha256.hexdigest(), 'bytes': len(tee.data),
                        'kdf': 'PBKDF2-HMAC-SHA256', 'iterations': ITERATIONS, 'cipher': 'AES-256-GCM'}
            info = self.backend.public_description()
            info.update({'format': 'raw', 'compression': self.compressor.name, 'size': size, 'sha256': sha256,
                         'content': CONTENT, 'envelope': envelope,
                         'source': {'type': 'kotauth', 'url': self.client.url, 'tenant': slug, 'bytes': len(tee.data)},
                         'seconds': round(time.time() - started, 3)})
            tenant = dict(facts)
            tenant.pop('tenant_slug', None)
            tenant.update({'payload': rel, 'envelope_sha256': envelope['sha256'], 'source_url': self.client.url})
            _backup_set.write_fragment(set_dir, 'payload-' + rel.replace('/', '_'), {'payloads': {rel: info}})
            _backup_set.write_fragment(set_dir, name, {'kotauth': {'tenants': {slug: tenant}}})
        except EnvelopeError as exc:
            remove_quietly(dest)
            raise RecoveryError('the archive Kotauth sent for tenant %s does not open with kotauth_passphrase: %s'
                                % (slug, exc.msg), reason=exc.kind)
        except RecoveryError:
            remove_quietly(dest)
            raise
        _backup_set.end_payload(set_dir, name)
        return {'changed': True, 'payload': rel, 'size': size, 'archive_bytes': len(tee.data),
                'schema_version': facts['schema_version'], 'kotauth_version': facts['kotauth_version'],
                'exported_at': facts['exported_at'], 'counts': facts['counts'],
                'redacted_fields': facts['redacted_fields'], 'included_extras': facts['included_extras'],
                'seconds': info['seconds']}


# ---------------------------------------------------------------------------------------------
# reading an archive back out of a set

def read_archive(set_dir, slug, keys, passphrase):
    """(export document, facts, recorded tenant metadata) of one tenant of a complete set."""
    tenants = recorded_tenants(set_dir)
    if slug not in tenants:
        raise RecoveryError('backup set %s holds no Kotauth tenant %s (it holds: %s)' % (
            set_dir, slug, ', '.join(sorted(tenants)) or 'none'), path=set_dir)
    recorded = tenants[slug]
    path = _backup_set.payload_path(set_dir, recorded.get('payload'), what='kotauth.tenants.%s.payload' % slug)
    data = read_envelope_payload(path, keys)
    document = open_archive(data, passphrase, recorded.get('envelope_sha256'))
    return data, document, archive_facts(document), recorded


def read_envelope_payload(path, keys, description=None):
    """The archive bytes inside a payload (through the set's encryption and compression)."""
    description = description or describe_payload(path)
    return read_payload(path, description, keys, read_limited)


def verify_payload(path, keys, passphrase, recorded_info):
    """Offline check of a bkp1 payload: outer layer, digest, envelope and GCM tag."""
    data = read_envelope_payload(path, keys)
    expected = (recorded_info.get('envelope') or {}).get('sha256')
    document = open_archive(data, passphrase, expected)
    facts = archive_facts(document)
    return {'plain_bytes': len(data), 'bkp1': True, 'schema_version': facts['schema_version']}


# ---------------------------------------------------------------------------------------------
# import

class Importer(object):
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
