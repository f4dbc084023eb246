# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Kotauth's admin backup API and the options that reach it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import re
import secrets

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import quote, urlsplit
from ansible.module_utils.six.moves.http_client import HTTPException
from ansible.module_utils.urls import open_url

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.archive import archive_facts
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.envelope import open_archive, read_limited

EXPORT_PATH = '/admin/api/v1/tenants/%s/export'
IMPORT_PATH = '/admin/api/v1/tenants/import'
USER_AGENT = 'idp.recovery-kotauth'
API_KEY_PREFIX = 'kauth_'
DEFAULT_TIMEOUT = 300

_SLUG_RE = re.compile(r'^[a-z0-9][a-z0-9-]{0,62}$')


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
            answer = envelope_answer(raw, EXPORT_PATH % slug)
            if isinstance(answer.get('schemaVersion'), int):
                return answer['schemaVersion']
            raw = answer.get('envelope', '').encode('ascii')
        return archive_facts(open_archive(raw, passphrase))['schema_version']


def envelope_answer(raw, path):
    """The decoded JSON answer of an export, which carries the archive as ``envelope``."""
    try:
        answer = json.loads(raw.decode('utf-8'))
    except (ValueError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get('envelope'), str):
        raise KotauthAPIError('Kotauth POST %s answered JSON without an envelope' % path)
    return answer


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


def check_slug(slug, what='slug'):
    if not slug or not _SLUG_RE.match(slug):
        raise RecoveryError('%s %r is not a Kotauth tenant slug (lower-case letters, digits and "-")' % (what, slug))
    return slug
