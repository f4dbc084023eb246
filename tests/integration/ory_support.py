# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures of the Ory tests: the Ory admin API stand-in (tests/ory_standin) on 127.0.0.1.

``ory_standin_factory(**options)`` starts one stand-in process (one Ory project) on a free port
and returns an ``OryStandIn`` with its URL, keys and helpers: ``control(name, body)`` for the
stand-in's own endpoints (faults, limits, seeding, statistics), ``api(method, path, ...)`` for
the Ory APIs, ``connection(**extra)`` for module arguments. Every process started is stopped at
the end of the test, by its own PID.

Import the fixtures into a test module with ``from ory_support import *  # noqa``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STANDIN = ROOT / 'tests' / 'ory_standin' / 'server.py'
if str(ROOT / 'tests') not in sys.path:
    sys.path.insert(0, str(ROOT / 'tests'))

from ory_standin.spec import load_specs, spec_dir  # noqa: E402  pylint: disable=wrong-import-position

__all__ = ['OryStandIn', 'ory_standin_factory', 'ory_specs', 'load_specs', 'spec_dir', 'read_json_payload_cli', 'remapped_tuples']


class OryStandIn(object):
    def __init__(self, proc, base_url, api_key, workspace_key, project_id, log_path):
        self.proc = proc
        self.url = base_url
        self.api_key = api_key
        self.workspace_key = workspace_key
        self.project_id = project_id
        self.log_path = log_path

    # -- the stand-in's control endpoints
    def control(self, name, body=None, method=None):
        data = None if body is None else json.dumps(body).encode('utf-8')
        req = urllib.request.Request('%s/__standin/%s' % (self.url, name), data=data,
                                     method=method or ('POST' if data is not None else 'GET'),
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read().decode('utf-8'))

    def stats(self):
        return self.control('stats')

    def summary(self):
        return self.control('stats')['summary']

    # -- the Ory APIs
    def api(self, method, path, query=None, body=None, key=True, headers=None):
        url = self.url + path
        if query:
            url += '?' + urllib.parse.urlencode(query, doseq=True)
        send = {'Accept': 'application/json'}
        if body is not None:
            send['Content-Type'] = 'application/json'
        if key and self.api_key:
            send['Authorization'] = 'Bearer ' + (self.workspace_key if path.startswith('/projects') else self.api_key)
        send.update(headers or {})
        req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode('utf-8'),
                                     method=method, headers=send)
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                raw = resp.read()
                return resp.status, dict(resp.headers), (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, dict(exc.headers), (json.loads(raw) if raw else None)

    def all_identities(self, credentials=('password', 'oidc', 'totp', 'lookup_secret', 'webauthn')):
        found = []
        query = {'page_size': 500, 'include_credential': list(credentials)}
        while True:
            status, headers, page = self.api('GET', '/admin/identities', query)
            assert status == 200, page
            found.extend(page)
            link = headers.get('Link')
            if not link:
                return found
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(link.split('>')[0][1:]).query)['page_token'][0]
            query['page_token'] = token

    def all_tuples(self):
        found = []
        status, _h, body = self.api('GET', '/namespaces')
        assert status == 200
        for namespace in [n['name'] for n in body['namespaces']]:
            query = {'namespace': namespace, 'page_size': 1000}
            while True:
                status, _h, page = self.api('GET', '/relation-tuples', query)
                assert status == 200, page
                found.extend(page['relation_tuples'])
                if not page.get('next_page_token'):
                    break
                query['page_token'] = page['next_page_token']
        return found

    def connection(self, **extra):
        """Module arguments for this project, as Ory Network (project and workspace keys)."""
        args = {'deployment': 'network', 'project_url': self.url, 'project_api_key': self.api_key,
                'project_id': self.project_id, 'console_url': self.url, 'workspace_api_key': self.workspace_key,
                'max_backoff': 2.0, 'timeout': 20}
        args.update(extra)
        return args

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_standin(workdir, seed_identities=0, seed_clients=0, jwk_sets=(), default_jwk_sets=False, tier=None,
                  validate=True, auth=True, hash_pool=0, python=None, preset='sample', seed_passwordless=0):
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / ('ready-%s' % secrets.token_hex(4))
    log_path = workdir / ('standin-%s.log' % secrets.token_hex(4))
    api_key = 'ory_pat_' + secrets.token_urlsafe(24)
    workspace_key = 'ory_wak_' + secrets.token_urlsafe(24)
    project_id = str(__import__('uuid').uuid4())
    argv = [python or sys.executable, str(STANDIN), '--port', '0', '--ready-file', str(ready), '--project-id', project_id]
    if auth:
        argv += ['--api-key', api_key, '--workspace-key', workspace_key]
    else:
        argv += ['--no-auth']
    if validate:
        argv.append('--validate-responses')
    argv += ['--preset', preset]
    if seed_identities:
        argv += ['--seed-identities', str(seed_identities)]
    if seed_clients:
        argv += ['--seed-clients', str(seed_clients)]
    if seed_passwordless:
        argv += ['--seed-passwordless', str(seed_passwordless)]
    if hash_pool:
        argv += ['--hash-pool', str(hash_pool)]
    for name in jwk_sets:
        argv += ['--jwk-set', name]
    if default_jwk_sets:
        argv.append('--default-jwk-sets')
    if tier:
        argv += ['--tier', tier]
    env = dict(os.environ)
    env.setdefault('ORY_SPECS_DIR', str(spec_dir()))
    with open(str(log_path), 'wb') as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError('the Ory stand-in exited with %s:\n%s' % (proc.returncode, log_path.read_text()))
        if time.time() > deadline:
            proc.kill()
            raise AssertionError('the Ory stand-in did not start in time')
        time.sleep(0.05)
    url = ready.read_text().strip()
    return OryStandIn(proc, url, api_key if auth else None, workspace_key if auth else None, project_id, log_path)


@pytest.fixture(scope='session')
def ory_specs():
    return load_specs()


@pytest.fixture
def ory_standin_factory(tmp_path):
    started = []

    def factory(**options):
        standin = start_standin(tmp_path / 'standin', **options)
        started.append(standin)
        return standin
    yield factory
    for standin in started:
        standin.stop()


def remapped_tuples(source_tuples, id_map):
    """The source tuples with every identity ID (subject, object, subject-set object) replaced by the new one."""
    wanted = set()
    for item in source_tuples:
        item = json.loads(json.dumps(item))
        if item.get('subject_id') in id_map:
            item['subject_id'] = id_map[item['subject_id']]
        if item['object'] in id_map:
            item['object'] = id_map[item['object']]
        if item.get('subject_set') and item['subject_set']['object'] in id_map:
            item['subject_set']['object'] = id_map[item['subject_set']['object']]
        wanted.add(json.dumps(item, sort_keys=True))
    return wanted


def read_json_payload_cli(path, identity):
    """Decrypt and decompress a payload with the stock tools only (age -d | zstd -d); return the JSON."""
    age = subprocess.run(['age', '-d', '-i', str(identity), str(path)], stdout=subprocess.PIPE, check=True)
    plain = subprocess.run(['zstd', '-d', '-c', '-q'], input=age.stdout, stdout=subprocess.PIPE, check=True).stdout
    return json.loads(plain.decode('utf-8'))
