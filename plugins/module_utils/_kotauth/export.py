# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: exporting Kotauth tenants into an open backup set.

The archive is written into the set as it arrives (streamed through the set's own encryption, age by
default), then decrypted in memory once to prove that the passphrase opens it and to record its safe
facts and its SHA-256.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError, remove_quietly
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    Compression,
    check_encryption_allowed,
    encrypt_stages,
    encryption_backend,
)
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.archive import archive_facts
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.client import (
    EXPORT_PATH,
    check_slug,
    client_from_params,
    envelope_answer,
)
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.envelope import (
    ITERATIONS,
    MAX_ARCHIVE_BYTES,
    VERSION,
    EnvelopeError,
    check_passphrase,
    open_archive,
    read_limited,
    require_cryptography,
)
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.stored import CONTENT, payload_rel, recorded_tenants
from ansible_collections.idp.recovery.plugins.module_utils._stream import run_to_file


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


class KotauthExporter(object):
    """Exports tenants, one archive each, into an open backup set."""

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
                answer = envelope_answer(read_limited(resp), EXPORT_PATH % slug)
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


def export_tenants(params, check_mode=False):
    """What kotauth_export does: check the options, then export ``params['slugs']`` into ``params['set_dir']``."""
    params = dict(params)
    params['encryption'] = params['encryption'] or 'age'
    check_encryption_allowed(params['encryption'], params['allow_unencrypted'])
    check_passphrase(params['kotauth_passphrase'])
    require_cryptography()
    client = client_from_params(params)
    return KotauthExporter(client, params, check_mode=check_mode).run(params['set_dir'], params['slugs'])
