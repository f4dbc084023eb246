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
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, encryption_backend
from ansible_collections.idp.recovery.plugins.module_utils._payload import describe_payload, read_payload
from ansible_collections.idp.recovery.plugins.module_utils._stream import (
    AtomicHashedFile,
    Pipeline,
    PipelineError,
    copy_stream,
    describe_failures,
)

BUNDLE_FORMAT = 1
FRAGMENT = 'ory'
PARTIAL = '.partial-'
SUFFIX = {'zstd': '.zst', 'gzip': '.gz', 'none': ''}
MAX_ITEM = 64 * 1024 * 1024
ENC_SUFFIX = {'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg', 'none': ''}


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
        return '%s%s' % (SUFFIX[self.compression.name], ENC_SUFFIX[self.backend.name])

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


def payload_path(set_dir, rel):
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
        raise RecoveryError('%s is not valid JSON: %s' % (rel, exc), path=payload_path(set_dir, rel))


def read_bytes_payload(set_dir, rel, keys):
    chunks = []
    path = payload_path(set_dir, rel)
    read_payload(path, describe_payload(path), keys, lambda stream: copy_stream(stream, lambda data: chunks.append(bytes(data))))
    return b''.join(chunks)


def stream_array_payload(set_dir, rel, keys, handle_item):
    """Decrypt a JSON-array payload and call handle_item(item) for each item; return the count."""
    path = payload_path(set_dir, rel)
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
