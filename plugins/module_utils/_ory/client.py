# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the Ory admin API client.

One ``OryClient`` talks to one API (Kratos admin, Hydra admin or public, Keto read or write, or the
Ory Network console) with its own key, so that a step only ever holds the key it needs. It
handles:

* bearer authentication (the key comes from a ``no_log`` option or the environment and is only
  ever put in the ``Authorization`` header);
* pagination by the ``Link`` header (Kratos, Hydra) and by ``next_page_token`` in the body (Keto),
  refusing a page token the server already handed out (a loop that would never end);
* rate limits: a 429 waits for ``x-ratelimit-reset`` seconds (``Retry-After`` also counts), else
  a capped exponential backoff with jitter; after a response that says no request is left
  (``x-ratelimit-remaining: 0``), the next request to that endpoint waits for the reset instead
  of running into a 429. When the spent window is the one-second (burst) one that
  ``x-ratelimit-limit`` names, the wait ends one second after the answer to the window's first
  request rather than after the whole seconds of ``x-ratelimit-reset`` (see ``pace_after_burst``);
* retries of 5xx answers, time-outs and dropped connections, with the same backoff;
* errors built from Ory's error JSON (``{"error": {...}}`` or OAuth2's ``error_description``).

``OryConnection`` builds those clients from the module options (``ory_argument_spec``), and
``fetch_content`` reads a schema or OPL location (``base64://`` or a storage link, without a key).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json
import math
import random
import socket
import threading
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import parse_qsl, urlencode, urlsplit
from ansible.module_utils.six.moves.http_client import HTTPException
from ansible.module_utils.six.moves.http_cookiejar import CookieJar
from ansible.module_utils.urls import Request, make_context

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

USER_AGENT = 'idp.recovery-ory'
RETRY_STATUSES = (500, 502, 503, 504)
DEFAULT_TIMEOUT = 60
DEFAULT_RETRIES = 8
DEFAULT_MAX_BACKOFF = 30.0
BACKOFF_BASE = 0.5
# a reset header above this is a UNIX time, not a number of seconds
EPOCH_THRESHOLD = 10 ** 9
# answers per bucket kept to find the first request of a spent one-second window
RECENT_ANSWERS = 64
# added to the end of a one-second window worked out from the answers (the resolution of the clocks)
PACE_MARGIN = 0.01

# What authenticates an OAuth2 client at Hydra's token endpoint, by its token_endpoint_auth_method
# (ory/fosite client_authentication.go, AuthenticateClient): a shared secret (HTTP Basic, the form
# body, or an HMAC-signed client assertion), the client's own keys (a client assertion signed with
# a key of its jwks or jwks_uri), or nothing (a public client). An empty method is Hydra's default,
# client_secret_basic (ory/hydra client/validator.go, Validate).
CLIENT_AUTH = {
    'client_secret_basic': 'secret',
    'client_secret_post': 'secret',
    'client_secret_jwt': 'secret',
    'private_key_jwt': 'keys',
    'none': 'none',
}


def client_auth(client):
    """(token_endpoint_auth_method, 'secret' | 'keys' | 'none' | None for a method Hydra does not know)."""
    method = client.get('token_endpoint_auth_method') or 'client_secret_basic'
    return method, CLIENT_AUTH.get(method)


class OryAPIError(RecoveryError):
    """An Ory API answered with an error (or could not be reached)."""

    def __init__(self, msg, status=None, reason=None, **details):
        super(OryAPIError, self).__init__(msg, status=status, **details)
        self.status = status
        self.reason = reason


class Response(object):
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        if not self.body:
            return None
        try:
            return json.loads(self.body.decode('utf-8'))
        except ValueError as exc:
            raise RecoveryError('the Ory API answered with invalid JSON: %s' % exc)

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)


def backoff_delay(attempt, cap=DEFAULT_MAX_BACKOFF, rng=random.random, base=BACKOFF_BASE):
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * (2 ** attempt))
    return ceiling / 2.0 + rng() * ceiling / 2.0


def parse_reset(value, now=None):
    """Seconds to wait from an ``x-ratelimit-reset`` / ``Retry-After`` value, or None."""
    if value is None:
        return None
    try:
        seconds = float(str(value).strip())
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:
        return None
    if seconds > EPOCH_THRESHOLD:
        seconds = seconds - (time.time() if now is None else now)
    return max(0.0, seconds)


def parse_limit_policies(value):
    """(limit of the current window, {window seconds: quota}) from an ``x-ratelimit-limit`` value.

    Ory Network writes it in the form of the IETF RateLimit header fields draft: the limit of the window that
    ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` speak of, then each policy as ``quota;w=seconds``, e.g.
    ``10, 10;w=1, 300;w=60`` (burst per second, sustained per minute; Ory docs, guides/rate-limits, "Monitor rate
    limit headers"). A bare number names no window: (that number, {}). Anything else: (None, {}).
    """
    current = None
    policies = {}
    for number, part in enumerate(str(value or '').split(',')):
        quota, _sep, params = part.strip().partition(';')
        try:
            quota = int(quota.strip())
        except ValueError:
            return None, {}
        if number == 0 and not params:
            current = quota
            continue
        for param in params.split(';'):
            key, _eq, val = param.strip().partition('=')
            if key.strip() == 'w':
                try:
                    policies[int(val.strip())] = quota
                except ValueError:
                    return None, {}
    return current, policies


def pace_after_burst(recent, headers, now):
    """When the next request may go after an answer that left nothing in a one-second window, or None.

    ``recent`` holds (time the answer came back, x-ratelimit-remaining) of the last answers of the bucket,
    this one last. When the header speaks of the one-second (burst) window and the last ``burst`` answers
    counted down to 0 one by one, they were all counted in that window, which began before the first of them
    reached the server: it ends before one second after that first answer came back. Otherwise (other
    clients share the bucket, the sustained window is the one spent, no burst policy in the header): None.
    """
    current, policies = parse_limit_policies(headers.get('x-ratelimit-limit'))
    burst = policies.get(1)
    if not burst or current != burst or len(recent) < burst:
        return None
    if [left for _when, left in recent[-burst:]] != list(range(burst - 1, -1, -1)):
        return None
    return max(now, recent[-burst][0] + 1.0 + PACE_MARGIN)


def parse_link_header(value):
    """RFC 8288 ``Link`` header -> {rel: url}."""
    links = {}
    if not value:
        return links
    for part in _split_links(value):
        part = part.strip()
        if not part.startswith('<') or '>' not in part:
            continue
        url, _sep, params = part[1:].partition('>')
        for param in params.split(';'):
            key, _eq, val = param.strip().partition('=')
            if key.strip().lower() == 'rel':
                for rel in val.strip().strip('"').split():
                    links.setdefault(rel.lower(), url.strip())
    return links


def _finish_prefetch(pending):
    """A consumer stopped reading pages: let the prefetch of the next page finish, whatever it found."""
    if pending is not None:
        try:
            pending()
        except Exception:  # pylint: disable=broad-except
            pass


def _split_links(value):
    parts = []
    depth = False
    quoted = False
    current = []
    for char in value:
        if char == '<' and not quoted:
            depth = True
        elif char == '>' and not quoted:
            depth = False
        elif char == '"' and not depth:
            quoted = not quoted
        if char == ',' and not depth and not quoted:
            parts.append(''.join(current))
            current = []
            continue
        current.append(char)
    if current:
        parts.append(''.join(current))
    return parts


def error_message(status, body):
    """(message, reason) from an Ory error body of any of its shapes."""
    try:
        data = json.loads(body.decode('utf-8')) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict):
        inner = data.get('error')
        if isinstance(inner, dict):
            parts = [inner.get('message') or inner.get('status') or 'error']
            if inner.get('reason') and inner.get('reason') != inner.get('message'):
                parts.append(inner['reason'])
            msg = ': '.join(str(p) for p in parts)
            if inner.get('id'):
                msg += ' (%s)' % inner['id']
            return msg, inner.get('id') or inner.get('status')
        if isinstance(inner, str):
            msg = inner
            if data.get('error_description'):
                msg += ': %s' % data['error_description']
            if data.get('error_hint'):
                msg += ' (%s)' % data['error_hint']
            return msg, inner
        if data.get('message'):
            return str(data['message']), data.get('reason')
    text = body.decode('utf-8', 'replace').strip() if body else ''
    return (text[:300] or 'no message'), None


AUTH_HINT = {
    'console': 'check the workspace API key (workspace_api_key or ORY_WORKSPACE_API_KEY)',
}
DEFAULT_AUTH_HINT = 'check the project API key (project_api_key or ORY_PROJECT_API_KEY)'


class OryClient(object):
    """A client for one Ory API base URL."""

    def __init__(self, name, base_url, token=None, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES,
                 max_backoff=DEFAULT_MAX_BACKOFF, validate_certs=True, sleep=time.sleep, clock=time.monotonic,
                 rng=random.random, opener=None):
        if not base_url:
            raise RecoveryError('no URL is configured for the %s API' % name)
        split = urlsplit(base_url)
        if split.scheme not in ('http', 'https') or not split.netloc:
            raise RecoveryError('the %s URL must be an http:// or https:// URL, not %r' % (name, base_url))
        self.name = name
        self.base_url = base_url.rstrip('/')
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self.max_backoff = max_backoff
        self.validate_certs = validate_certs
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._open = opener or self._open_url
        self._http = None
        self._not_before = {}
        self._recent = {}
        self.stats = {'requests': 0, 'retries': 0, 'rate_limited': 0, 'server_errors': 0, 'timeouts': 0,
                      'paced_seconds': 0.0, 'backoff_seconds': 0.0}

    # -- transport

    def _open_url(self, method, url, data, headers, timeout):
        """Perform one request; return (status, headers dict, body) for any HTTP status.

        What ``open_url`` does, with the TLS context built once per client: building one loads the CA store,
        which costs more than a request to a nearby server. Each request gets a new cookie jar, as with
        ``open_url``: nothing a response sets is sent back.
        """
        if self._http is None:
            self._http = Request(context=make_context(validate_certs=self.validate_certs))
        try:
            resp = self._http.open(method, url, data=data, headers=headers, timeout=timeout,
                                   validate_certs=self.validate_certs, follow_redirects='none', http_agent=USER_AGENT,
                                   use_proxy=True, cookies=CookieJar())
            status = resp.getcode()
            body = resp.read()
            resp_headers = resp.headers
        except HTTPError as exc:
            status = exc.code
            body = exc.read() if exc.fp is not None else b''
            resp_headers = exc.headers
        return status, dict((k.lower(), v) for k, v in (resp_headers or {}).items()), body

    def url(self, path, query=None):
        url = self.base_url + path
        if query:
            url += '?' + urlencode(query, doseq=True)
        return url

    def _wait(self, seconds, kind):
        if seconds > 0:
            self.stats[kind] += seconds
            self._sleep(seconds)

    def request(self, method, path, query=None, json_body=None, form=None, basic_auth=None, ok=(200,),
                bucket=None, retry_errors=True, headers=None, encoded_json=None):
        """Send one request, with retries; return a Response whose status is in ``ok``.

        ``bucket`` names the rate-limit bucket for pacing. By default reads and writes of one API
        are paced apart, the way Ory's buckets split them (one bucket for the writes of an API).
        ``retry_errors=False`` does not repeat the request after a 5xx answer or a time-out (for
        writes that may have been applied); 429 answers are always retried, they were refused.
        ``encoded_json`` is a JSON body already encoded (bytes), instead of ``json_body``.
        """
        bucket = bucket or ('read' if method in ('GET', 'HEAD') else 'write')
        send_headers = {'Accept': 'application/json'}
        data = None
        if json_body is not None or encoded_json is not None:
            data = encoded_json if encoded_json is not None else json.dumps(json_body, separators=(',', ':')).encode('utf-8')
            send_headers['Content-Type'] = 'application/json'
        elif form is not None:
            data = urlencode(form).encode('utf-8')
            send_headers['Content-Type'] = 'application/x-www-form-urlencoded'
        if basic_auth is not None:
            pair = ('%s:%s' % basic_auth).encode('utf-8')
            send_headers['Authorization'] = 'Basic ' + base64.b64encode(pair).decode('ascii')
        elif self._token:
            send_headers['Authorization'] = 'Bearer ' + self._token
        send_headers.update(headers or {})
        url = self.url(path, query)
        label = '%s %s %s' % (self.name, method, path)
        attempt = 0
        limited = 0
        problem = None
        while True:
            pause = self._not_before.get(bucket, 0) - self._clock()
            self._wait(pause, 'paced_seconds')
            self.stats['requests'] += 1
            try:
                status, resp_headers, body = self._open(method, url, data, send_headers, self.timeout)
            except (socket.timeout, TimeoutError):
                self.stats['timeouts'] += 1
                problem = 'timed out after %ss' % self.timeout
                status = None
            except (URLError, HTTPException, ConnectionError, OSError) as exc:
                reason = getattr(exc, 'reason', None) or exc
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    self.stats['timeouts'] += 1
                    problem = 'timed out after %ss' % self.timeout
                else:
                    problem = 'cannot connect: %s' % reason
                status = None
            if status is None:
                if not retry_errors:
                    raise OryAPIError('%s %s; not repeated, the request may have been applied' % (label, problem),
                                      reason='transport', retryable=True)
                if attempt >= self.retries:
                    raise OryAPIError('%s %s (gave up after %d attempts)' % (label, problem, attempt + 1),
                                      reason='transport')
                self.stats['retries'] += 1
                self._wait(backoff_delay(attempt, self.max_backoff, self._rng), 'backoff_seconds')
                attempt += 1
                continue
            self._remember_limits(bucket, resp_headers)
            if status in ok:
                return Response(status, resp_headers, body)
            if status == 429:
                self.stats['rate_limited'] += 1
                limited += 1
                if limited > max(self.retries, 1) * 4:
                    raise OryAPIError('%s is still rate limited (429) after %d attempts' % (label, limited),
                                      status=429, reason='rate_limited')
                wait = parse_reset(resp_headers.get('x-ratelimit-reset'))
                if wait is None:
                    wait = parse_reset(resp_headers.get('retry-after'))
                if wait is None:
                    wait = backoff_delay(limited - 1, self.max_backoff, self._rng)
                else:
                    wait = min(wait, self.max_backoff * 4) + self._rng() * 0.05
                self._wait(wait, 'backoff_seconds')
                continue
            if status in RETRY_STATUSES:
                self.stats['server_errors'] += 1
                if retry_errors and attempt < self.retries:
                    self.stats['retries'] += 1
                    self._wait(backoff_delay(attempt, self.max_backoff, self._rng), 'backoff_seconds')
                    attempt += 1
                    continue
            raise self._error(label, status, body, attempt, retry_errors)

    def _error(self, label, status, body, attempt, retry_errors):
        msg, reason = error_message(status, body)
        text = '%s failed with HTTP %s: %s' % (label, status, msg)
        if status in RETRY_STATUSES:
            text += ' (gave up after %d attempts)' % (attempt + 1) if retry_errors else \
                '; not repeated, the request may have been applied'
        if status in (401, 403):
            text += '; %s' % AUTH_HINT.get(self.name, DEFAULT_AUTH_HINT)
        return OryAPIError(text, status=status, reason=reason, retryable=status in RETRY_STATUSES)

    def _remember_limits(self, bucket, headers):
        remaining = headers.get('x-ratelimit-remaining')
        if remaining is None:
            return
        try:
            left = int(float(remaining))
        except ValueError:
            return
        now = self._clock()
        recent = self._recent.setdefault(bucket, [])
        recent.append((now, left))
        del recent[:-RECENT_ANSWERS]
        if left <= 0:
            wait = parse_reset(headers.get('x-ratelimit-reset'))
            if wait is not None:
                not_before = now + min(wait, self.max_backoff * 4)
                early = pace_after_burst(recent, headers, now)
                self._not_before[bucket] = not_before if early is None else min(early, not_before)
        else:
            self._not_before.pop(bucket, None)

    # -- helpers

    def get_json(self, path, query=None, ok=(200,), bucket=None):
        return self.request('GET', path, query=query, ok=ok, bucket=bucket).json()

    def _prefetch(self, path, query):
        """Start fetching the next page in the background; return a callable that waits for it.

        Only one request is ever in flight: the caller processes a page while the next one is on its
        way, and asks for it (``wait()``) before anything else uses this client.
        """
        box = {}

        def fetch():
            try:
                box['resp'] = self.request('GET', path, query=dict(query))
            except BaseException as exc:  # pylint: disable=broad-except
                box['error'] = exc
        worker = threading.Thread(target=fetch, name='idp-recovery-prefetch')
        worker.daemon = True
        worker.start()

        def wait():
            worker.join()
            if 'error' in box:
                raise box['error']
            return box['resp']
        return wait

    def _pages(self, path, query, page_size, read_page, token_source):
        """Yield each page of a paginated list endpoint, fetching the next one while the caller works.

        ``read_page(resp)`` returns (what to yield, the next page token or None); ``token_source`` says in the
        loop guard's message where the token came from. A token the server handed out before is refused.
        """
        query = dict(query or {})
        if page_size:
            query['page_size'] = page_size
        seen = set()
        number = 0
        resp = self.request('GET', path, query=query)
        while True:
            page, token = read_page(resp)
            number += 1
            pending = None
            if token:
                if token in seen:
                    raise RecoveryError('%s GET %s: page %d %s a page token the server returned before; '
                                        'refusing to loop' % (self.name, path, number, token_source), page_token=token[:80])
                seen.add(token)
                query['page_token'] = token
                pending = self._prefetch(path, query)
            try:
                yield page
            except GeneratorExit:
                _finish_prefetch(pending)
                raise
            if pending is None:
                return
            resp = pending()

    def pages_by_link(self, path, query=None, page_size=None):
        """Yield each page (the decoded JSON list) of a Link-paginated list endpoint."""
        def read_page(resp):
            page = resp.json()
            if page is None:
                page = []
            if not isinstance(page, list):
                raise RecoveryError('%s GET %s returned %s instead of a list' % (self.name, path, type(page).__name__))
            nxt = parse_link_header(resp.header('link')).get('next')
            if not nxt:
                return page, None
            token = dict(parse_qsl(urlsplit(nxt).query)).get('page_token')
            if not token:
                raise RecoveryError('%s GET %s: the next-page link carries no page_token: %s'
                                    % (self.name, path, nxt[:200]))
            return page, token
        return self._pages(path, query, page_size, read_page, 'links to')

    def pages_by_token(self, path, query=None, page_size=None, items='relation_tuples'):
        """Yield each page body (a dict) of an endpoint that returns ``next_page_token`` in the body."""
        def read_page(resp):
            body = resp.json() or {}
            if not isinstance(body, dict) or not isinstance(body.get(items, []), list):
                raise RecoveryError('%s GET %s returned no %s list' % (self.name, path, items))
            return body, body.get('next_page_token')
        return self._pages(path, query, page_size, read_page, 'returned')


def fetch_content(url, connection, what):
    """Content of a schema or OPL URL; storage links are fetched without any API key."""
    if url.startswith('base64://'):
        raw = url[len('base64://'):]
        try:
            return base64.b64decode(raw + '=' * (-len(raw) % 4))
        except (ValueError, TypeError):
            raise RecoveryError('%s: invalid base64:// URL' % what)
    if not url.startswith(('http://', 'https://')):
        raise RecoveryError('%s is stored at %s, which cannot be fetched from here; export it by hand' % (what, url[:120]))
    split = urlsplit(url)
    base = '%s://%s' % (split.scheme, split.netloc)
    path, query = split.path or '/', split.query
    client = OryClient('storage', base, token=None, timeout=connection.params.get('timeout') or 60,
                       retries=connection.params.get('max_retries') or 3, validate_certs=connection.params.get('validate_certs', True))
    return client.request('GET', path, query=parse_qsl(query, keep_blank_values=True)).body


# -- connection options shared by the modules (see doc fragment idp.recovery.ory)

def ory_argument_spec():
    from ansible.module_utils.basic import env_fallback
    return dict(
        deployment=dict(type='str', choices=['network', 'self_hosted'], default='network'),
        project_url=dict(type='str', fallback=(env_fallback, ['ORY_SDK_URL'])),
        project_api_key=dict(type='str', no_log=True, fallback=(env_fallback, ['ORY_PROJECT_API_KEY', 'ORY_API_KEY'])),
        project_id=dict(type='str', fallback=(env_fallback, ['ORY_PROJECT_ID'])),
        console_url=dict(type='str', default='https://api.console.ory.sh'),
        workspace_api_key=dict(type='str', no_log=True, fallback=(env_fallback, ['ORY_WORKSPACE_API_KEY'])),
        kratos_admin_url=dict(type='str'),
        hydra_admin_url=dict(type='str'),
        hydra_public_url=dict(type='str'),
        keto_read_url=dict(type='str'),
        keto_write_url=dict(type='str'),
        validate_certs=dict(type='bool', default=True),
        timeout=dict(type='int', default=DEFAULT_TIMEOUT),
        max_retries=dict(type='int', default=DEFAULT_RETRIES),
        max_backoff=dict(type='float', default=DEFAULT_MAX_BACKOFF),
    )


SERVICES = ('kratos', 'hydra', 'hydra_public', 'keto_read', 'keto_write', 'console')
URL_OPTION = {
    'kratos': 'kratos_admin_url',
    'hydra': 'hydra_admin_url',
    'hydra_public': 'hydra_public_url',
    'keto_read': 'keto_read_url',
    'keto_write': 'keto_write_url',
    'console': 'console_url',
}


class OryConnection(object):
    """Builds one client per API on first use, each holding only the key its API needs."""

    def __init__(self, params, **client_options):
        self.params = params
        self.deployment = params.get('deployment') or 'network'
        self.client_options = client_options
        self._clients = {}
        if self.deployment == 'network' and not params.get('project_url'):
            missing = [URL_OPTION[s] for s in ('kratos', 'hydra', 'keto_read', 'keto_write') if not params.get(URL_OPTION[s])]
            if missing:
                raise RecoveryError('deployment=network needs project_url (https://<slug>.projects.oryapis.com)')

    @property
    def is_network(self):
        return self.deployment == 'network'

    def url_for(self, service):
        explicit = self.params.get(URL_OPTION[service])
        if service == 'console':
            return explicit
        if explicit:
            return explicit
        if self.is_network or self.params.get('project_url'):
            return self.params.get('project_url')
        if service == 'keto_write':
            return self.params.get('keto_read_url')
        return None

    def has(self, service):
        return bool(self.url_for(service))

    def endpoints(self):
        """The base URL of each API this connection reaches (no secrets), to say where an export came from."""
        found = dict((service, self.url_for(service)) for service in ('kratos', 'hydra', 'keto_read', 'keto_write'))
        found['project_url'] = self.params.get('project_url')
        return dict((key, value) for key, value in found.items() if value)

    def client(self, service):
        if service not in self._clients:
            url = self.url_for(service)
            if not url:
                raise RecoveryError('no URL for the %s API: set %s' % (service.replace('_', ' '), URL_OPTION[service]))
            if service == 'console':
                token = self.params.get('workspace_api_key')
                if not token:
                    raise RecoveryError('the project configuration is read and written through the Ory Network console '
                                        'API, which needs the workspace API key (workspace_api_key or '
                                        'ORY_WORKSPACE_API_KEY)')
            else:
                token = self.params.get('project_api_key')
                if self.is_network and not token and service != 'hydra_public':
                    raise RecoveryError('deployment=network needs project_api_key (or ORY_PROJECT_API_KEY)')
                if service == 'hydra_public':
                    token = None
            options = dict(timeout=self.params.get('timeout') or DEFAULT_TIMEOUT,
                           retries=self.params.get('max_retries') if self.params.get('max_retries') is not None
                           else DEFAULT_RETRIES,
                           max_backoff=self.params.get('max_backoff') or DEFAULT_MAX_BACKOFF,
                           validate_certs=self.params.get('validate_certs', True))
            options.update(self.client_options)
            self._clients[service] = OryClient(service, url, token=token, **options)
        return self._clients[service]

    def stats(self):
        total = {}
        for client in self._clients.values():
            for key, value in client.stats.items():
                total[key] = total.get(key, 0) + value
        for key in ('paced_seconds', 'backoff_seconds'):
            if key in total:
                total[key] = round(total[key], 3)
        return total
