# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures of the Kotauth tests: the Kotauth admin API stand-in (tests/kotauth_standin) on 127.0.0.1.

``start_kotauth_standin(workdir, seed=..., schema_version=...)`` starts one stand-in process on a
free port and returns a ``KotauthStandIn`` with its URL and API key and helpers for its control
endpoints (statistics, tenant content, settings, faults). ``stop()`` ends that process by its PID.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STANDIN = ROOT / 'tests' / 'kotauth_standin' / 'server.py'


class KotauthStandIn(object):
    def __init__(self, proc, url, api_key, log_path):
        self.proc = proc
        self.url = url
        self.api_key = api_key
        self.log_path = log_path

    def control(self, name, body=None):
        data = None if body is None else json.dumps(body).encode('utf-8')
        req = urllib.request.Request('%s/__standin/%s' % (self.url, name), data=data,
                                     method='POST' if data is not None else 'GET',
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read().decode('utf-8'))

    def stats(self):
        return self.control('stats')

    def imports(self):
        return self.stats()['requests'].get('import', 0)

    def tenant(self, slug):
        return self.control('tenants/%s' % slug)

    def add_api_key(self, scopes):
        """A new master-tenant API key holding ``scopes`` (Kotauth's ``tenants:export`` / ``tenants:import``)."""
        key = 'kauth_' + secrets.token_urlsafe(24)
        self.control('api-keys', {key: list(scopes)})
        return key

    def audit(self):
        """The audit events Kotauth records for the backup API (ADMIN_TENANT_EXPORTED / _IMPORTED)."""
        return self.stats()['audit']

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_kotauth_standin(workdir, seed=(), schema_version=42, export_format='json'):
    # Kotauth's admin API answers an export only with JSON (AdminBackupRoutes.kt); the raw download is the
    # admin console's, behind a browser session
    if export_format != 'json':
        raise ValueError('Kotauth\'s admin API answers exports with JSON only, not %r' % (export_format,))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(4)
    ready = workdir / ('ready-%s' % tag)
    log_path = workdir / ('kotauth-standin-%s.log' % tag)
    api_key = 'kauth_' + secrets.token_urlsafe(24)
    key_file = workdir / ('api-key-%s' % tag)
    fd = os.open(str(key_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write(api_key)
    argv = [sys.executable, str(STANDIN), '--port', '0', '--ready-file', str(ready), '--api-key-file', str(key_file),
            '--schema-version', str(schema_version)]
    for item in seed:
        argv += ['--seed', item]
    with open(str(log_path), 'wb') as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError('the Kotauth stand-in exited with %s:\n%s' % (proc.returncode, log_path.read_text()))
        if time.time() > deadline:
            proc.kill()
            raise AssertionError('the Kotauth stand-in did not start in time')
        time.sleep(0.05)
    return KotauthStandIn(proc, ready.read_text().strip(), api_key, log_path)


def ok(result):
    """The module result, after checking that it did not fail."""
    assert not result.get('failed'), result
    return result


def failed(result):
    """The module result, after checking that it failed."""
    assert result.get('failed'), result
    return result


def connection(standin, passphrase, **extra):
    """The connection options of the Kotauth modules for ``standin``, plus ``extra``."""
    args = {'url': standin.url, 'api_key': standin.api_key, 'kotauth_passphrase': passphrase, 'timeout': 60}
    args.update(extra)
    return args
