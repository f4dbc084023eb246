# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the Ory export bundle inside a backup set.

Layout under ``<set>/<prefix>/`` (prefix ``ory`` by default), every file an encrypted payload:

* ``resources/`` the API answers as they came: ``project.json`` (Ory Network),
  ``identity-schemas.json``, ``permissions.opl``, and ``*.pages.jsonl`` with one page per line
  (identities, OAuth2 clients, relation tuples), ``jwk-sets.json``.
* ``restore/`` import-ready files in the formats of the stock Ory CLI: ``identities.json``
  (``ory import identities``), ``oauth2-clients.json`` (``ory import oauth2-client``),
  ``jwk/<set>/<n>.json`` (``ory import jwk <set>``, one key per file), ``relationships.json``
  (the tuples as exported, naming the **old** identity IDs), ``project.json`` (a ``PUT
  /projects/{id}`` body with the identity schemas and the OPL embedded as ``base64://``) and
  ``identity-index.json`` (old ID, external ID and identifiers of every identity, for the ID map
  and the plan).

Imported identities get new IDs, which are only known after the import: ``ory_import`` writes the
tuples for ``ory create relationships -f`` with the new IDs (``write_relationships_file``) into its
state directory, and ``remap_tuple`` is the one place that decides where an identity ID can stand
in a tuple.

Pages stream straight into the compressor and encryptor (``PayloadWriter``); nothing leaves this
process in plaintext except through the pipes of those stages.

On the way back, ``OryBundle`` opens the export of a complete set and ``validate()`` decrypts, parses
and checks every payload an import uses (``check_identity``, ``check_client_auth``, ``check_tuple``)
before the first write.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import codecs
import hashlib
import json
import os
import threading
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError, ensure_dir, remove_quietly
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, encryption_backend, payload_suffix
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import CLIENT_AUTH, client_auth
from ansible_collections.idp.recovery.plugins.module_utils._payload import describe_payload, read_payload
from ansible_collections.idp.recovery.plugins.module_utils._stream import (
    AtomicHashedFile,
    Pipeline,
    PipelineError,
    copy_stream,
    describe_failures,
    hash_file,
)

BUNDLE_FORMAT = 1
FRAGMENT = 'ory'
# what an export holds and an import restores (the include option of both modules)
KINDS = ('config', 'identities', 'oauth2_clients', 'jwks', 'relationships')
PARTIAL = '.partial-'
MAX_ITEM = 64 * 1024 * 1024


def dumps(value):
    return json.dumps(value, separators=(',', ':'), sort_keys=True, ensure_ascii=False).encode('utf-8')


class PayloadWriter(object):
    """One encrypted payload written as a stream: write() plaintext, commit() or abort().

    The file lands under a name holding ``.partial-`` (which a backup set refuses to finalize)
    until ``publish()`` renames it, so that an interrupted export never looks complete.
    """

    def __init__(self, dest, stages, token):
        self.dest = dest
        self.partial = '%s%s%s' % (dest, PARTIAL, token)
        ensure_dir(os.path.dirname(os.path.abspath(dest)))
        self.out = AtomicHashedFile(self.partial)
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.started = time.time()
        self.pipe = None
        self._copier = None
        self._copy_error = []
        self.sha256 = None
        self.size = None
        if stages:
            self.pipe = Pipeline(stages).start()
            self._copier = threading.Thread(target=self._copy, name='idp-recovery-payload')
            self._copier.daemon = True
            self._copier.start()

    def _copy(self):
        try:
            copy_stream(self.pipe.stdout, self.out.write)
        except Exception as exc:  # pylint: disable=broad-except
            self._copy_error.append(exc)

    def write(self, data):
        self.digest.update(data)
        self.bytes += len(data)
        if self.pipe is None:
            self.out.write(data)
            return
        try:
            self.pipe.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            self.pipe.kill()
            self._finish_pipe()
            raise RecoveryError('cannot write %s: the compression or encryption stage stopped%s' % (
                self.dest, ': ' + describe_failures(self._failures) if self._failures else ''))

    def _finish_pipe(self):
        try:
            self.pipe.stdin.close()
        except (OSError, ValueError):
            pass
        self._copier.join()
        self._failures = self.pipe.wait()
        self.pipe.close()

    _failures = ()

    def commit(self):
        """Finish the pipeline and the file (still under its partial name)."""
        if self.pipe is not None:
            self._finish_pipe()
            if self._copy_error:
                self.out.abort()
                err = self._copy_error[0]
                raise err if isinstance(err, RecoveryError) else RecoveryError('cannot write %s: %s' % (self.dest, err))
            if self._failures:
                self.out.abort()
                raise PipelineError(describe_failures(self._failures), failures=self._failures)
        self.sha256 = self.out.commit()
        self.size = self.out.size
        return self.sha256

    def abort(self):
        if self.pipe is not None:
            self.pipe.kill()
            try:
                self._finish_pipe()
            except Exception:  # pylint: disable=broad-except
                pass
        self.out.abort()
        remove_quietly(self.partial)

    def publish(self):
        os.rename(self.partial, self.dest)


class JsonArrayWriter(object):
    """Write the items of a JSON array one a line into a writer: ``[\\n{..},\\n{..}\\n]\\n``."""

    def __init__(self, writer):
        self.writer = writer
        self.count = 0
        writer.write(b'[\n')

    def add(self, item):
        self.writer.write((b',\n' if self.count else b'') + dumps(item))
        self.count += 1

    def close(self):
        self.writer.write(b'\n]\n' if self.count else b']\n')


class BundleWriter(object):
    """All payloads of one export; publishes them together or removes them all."""

    def __init__(self, set_dir, prefix, encryption, compression, recipients=None, recipients_file=None,
                 passphrase=None, gpg_homedir=None):
        self.set_dir = set_dir
        self.prefix = prefix
        self.backend = encryption_backend(encryption, recipients, recipients_file, passphrase, gpg_homedir)
        self.compression = Compression(compression[0], compression[1])
        self.stages_factory = lambda: encrypt_stages(self.compression, self.backend)
        self.stages_factory()  # validates keys and levels before anything is written
        self.token = os.urandom(4).hex()
        self.writers = {}
        self.fragment_written = False

    def suffix(self):
        return payload_suffix(self.compression, self.backend)

    def rel(self, name):
        return '%s/%s%s' % (self.prefix, name, self.suffix())

    def open(self, name):
        rel = self.rel(name)
        if rel in self.writers:
            raise RecoveryError('payload %s is written twice' % rel)
        writer = PayloadWriter(os.path.join(self.set_dir, rel), self.stages_factory(), self.token)
        self.writers[rel] = writer
        return writer

    def write_whole(self, name, data):
        writer = self.open(name)
        writer.write(data)
        writer.commit()
        return writer

    def payload_infos(self, kinds):
        infos = {}
        public = self.backend.public_description()
        for rel, writer in self.writers.items():
            info = dict(public)
            info.update({
                'format': 'raw',
                'compression': self.compression.name,
                'size': writer.size,
                'sha256': writer.sha256,
                'source': {'type': 'ory', 'kind': kinds.get(rel, 'ory'), 'digest': writer.digest.hexdigest(),
                           'bytes': writer.bytes, 'files': 1},
                'seconds': round(time.time() - writer.started, 3),
            })
            infos[rel] = info
        return infos

    def abort(self):
        for writer in self.writers.values():
            writer.abort()
            remove_quietly(writer.dest)
        if self.fragment_written:
            remove_quietly(os.path.join(self.set_dir, _backup_set.FRAGMENTS, FRAGMENT + '.json'))

    def publish(self, fragment):
        """Record the fragment, then rename every payload into place."""
        _backup_set.write_fragment(self.set_dir, FRAGMENT, fragment)
        self.fragment_written = True
        try:
            for writer in self.writers.values():
                writer.publish()
        except OSError as exc:
            raise RecoveryError('cannot move the Ory payloads into place: %s' % (exc.strerror or exc))


# -- reading

class _ArrayReader(object):
    """Incremental reader of one JSON array from a binary stream."""

    def __init__(self, stream, chunk_size):
        self.stream = stream
        self.chunk_size = chunk_size
        self.decode = codecs.getincrementaldecoder('utf-8')().decode
        self.buf = ''
        self.pos = 0
        self.eof = False

    def fill(self):
        if self.eof:
            return False
        data = self.stream.read(self.chunk_size)
        try:
            if not data:
                self.eof = True
                self.buf = self.buf[self.pos:] + self.decode(b'', final=True)
            else:
                self.buf = self.buf[self.pos:] + self.decode(data)
        except UnicodeDecodeError:
            raise RecoveryError('the file is not UTF-8 text')
        self.pos = 0
        if len(self.buf) > MAX_ITEM:
            raise RecoveryError('a JSON array item is larger than %d MiB' % (MAX_ITEM // (1024 * 1024)))
        return True

    def skip_space(self):
        """Move to the next non-blank character; False at the end of the stream."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in ' \t\r\n':
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            if not self.fill():
                return self.pos < len(self.buf)

    def items(self):
        decoder = json.JSONDecoder()
        if not self.skip_space():
            raise RecoveryError('the file is empty; expected a JSON array')
        if self.buf[self.pos] != '[':
            raise RecoveryError('the file does not hold a JSON array')
        self.pos += 1
        first = True
        while True:
            if not self.skip_space():
                raise RecoveryError('the JSON array is truncated')
            if self.buf[self.pos] == ']':
                self.pos += 1
                break
            if not first:
                if self.buf[self.pos] != ',':
                    raise RecoveryError('malformed JSON array: expected "," or "]"')
                self.pos += 1
                if not self.skip_space():
                    raise RecoveryError('the JSON array is truncated')
            while True:
                try:
                    item, end = decoder.raw_decode(self.buf, self.pos)
                except ValueError as exc:
                    if not self.fill():
                        raise RecoveryError('malformed or truncated JSON array item: %s' % exc)
                    continue
                if end == len(self.buf) and not self.eof and not isinstance(item, (dict, list)):
                    # a number or literal may go on in the next chunk
                    self.fill()
                    continue
                break
            self.pos = end
            first = False
            yield item
        if self.skip_space():
            raise RecoveryError('data after the end of the JSON array')


def iter_json_array(stream, chunk_size=CHUNK_SIZE):
    """Yield the items of a JSON array read from a binary stream, holding about one chunk at a time."""
    return _ArrayReader(stream, chunk_size).items()


def _payload_file(set_dir, rel):
    return os.path.join(set_dir, rel)


def find_payload(set_dir, prefix, name, payloads):
    """The recorded payload path of ``<prefix>/<name>.*`` in the set, or None."""
    base = '%s/%s' % (prefix, name)
    for rel in payloads:
        if rel == base or rel.startswith(base + '.'):
            rest = rel[len(base):]
            if rest.count('/') == 0:
                return rel
    return None


def read_json_payload(set_dir, rel, keys):
    """Decrypt a small payload and return its decoded JSON."""
    try:
        return json.loads(read_bytes_payload(set_dir, rel, keys).decode('utf-8'))
    except ValueError as exc:
        raise RecoveryError('%s is not valid JSON: %s' % (rel, exc), path=_payload_file(set_dir, rel))


def read_bytes_payload(set_dir, rel, keys):
    chunks = []
    path = _payload_file(set_dir, rel)
    read_payload(path, describe_payload(path), keys, lambda stream: copy_stream(stream, lambda data: chunks.append(bytes(data))))
    return b''.join(chunks)


def stream_array_payload(set_dir, rel, keys, handle_item):
    """Decrypt a JSON-array payload and call handle_item(item) for each item; return the count."""
    path = _payload_file(set_dir, rel)
    counter = [0]

    def consume(stream):
        for item in iter_json_array(stream):
            handle_item(item)
            counter[0] += 1
    try:
        read_payload(path, describe_payload(path), keys, consume)
    except RecoveryError as exc:
        if exc.msg.startswith(path) or exc.msg.startswith(rel) or 'status' in exc.details:
            # the payload's own message, or an API error raised while handling an item
            raise
        raise RecoveryError('%s: %s' % (rel, exc.msg), path=path, **exc.details)
    return counter[0]


# -- relation tuples and new identity IDs

def remap_tuple(item, new_id_of):
    """The tuple with every identity ID replaced by the identity's new ID, or None when one cannot be mapped yet.

    ``new_id_of(value)`` returns the new ID of an identity of the bundle, ``False`` for a value that is not
    an identity of the bundle (kept as it is) and ``None`` for an identity that is not in the target (yet).
    An identity ID can stand in three places: the subject ID (``Document:doc#owners@<id>``), the object
    (``User:<id>#delegates@...``) and the object of a subject set (``...@User:<id>#delegates``); the last
    two only make sense together, so all three are remapped.
    """
    out = dict(item)
    subject = item.get('subject_id')
    places = [('object', item.get('object'))]
    if subject:
        places.append(('subject_id', subject))
    sset = item.get('subject_set')
    if isinstance(sset, dict) and sset.get('object'):
        places.append(('subject_set', sset['object']))
    for place, value in places:
        new = new_id_of(value)
        if new is None:
            return None
        if new is False:
            continue
        if place == 'subject_set':
            out['subject_set'] = dict(sset, object=new)
        else:
            out[place] = new
    return out


RELATIONSHIPS_FILE = 'relationships.json'


def write_relationships_file(path, stream, new_id_of):
    """Write the tuples of ``stream`` (a function taking a per-item callback) remapped to the new identity IDs.

    The result is a JSON array in the format of ``ory create relationships`` (and of the
    ``PATCH /admin/relation-tuples`` insert bodies), written atomically with mode 0600. Tuples naming
    an identity that is not in the target are left out and counted. Returns (written, left_out).
    """
    tmp = '%s%s%s' % (path, PARTIAL, os.urandom(4).hex())
    counts = [0, 0]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, 'wb') as handle:
            out = JsonArrayWriter(handle)

            def add(item):
                mapped = remap_tuple(item, new_id_of)
                if mapped is None:
                    counts[1] += 1
                    return
                out.add(mapped)
                counts[0] += 1
            stream(add)
            out.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return counts[0], counts[1]


# -- checks of the import bodies, before anything is written

IDENTITY_FIELDS = ('schema_id', 'traits', 'external_id', 'state', 'metadata_public', 'metadata_admin', 'organization_id',
                   'verifiable_addresses', 'recovery_addresses', 'credentials')
IMPORTABLE_CREDENTIALS = ('password', 'oidc', 'saml', 'totp', 'lookup_secret', 'webauthn', 'passkey')


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


class OryBundle(object):
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
