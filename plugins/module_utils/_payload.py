# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: payloads (source -> compress -> encrypt -> file, and back)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import shutil
import tempfile
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._archive import (
    CountingSink,
    FileProducer,
    FileFollower,
    SafeExtractor,
    TarProducer,
    content_digest,
)
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    RecoveryError,
    ensure_dir,
    fsync_dir,
    remove_quietly,
    temp_path_beside,
)
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    Compression,
    decrypt_stages,
    describe_from_name,
    encrypt_stages,
    encryption_backend,
    explain_failure,
    sniff_encryption,
    reported_size,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import (
    FileDigest,
    PipelineError,
    discard,
    hash_file,
    run_from_file,
    run_from_file_hashed,
    run_to_file,
)


def _rel_in_set(set_dir, path):
    return os.path.relpath(os.path.abspath(path), set_dir).replace(os.sep, '/')


def existing_payload(dest):
    """(set_dir, recorded payload info) for a payload path, or (set_dir, None)."""
    set_dir = _backup_set.find_set_dir(dest)
    if set_dir is None or not os.path.isfile(dest):
        return set_dir, None
    return set_dir, _backup_set.payload_info(set_dir, _rel_in_set(set_dir, dest))


def create_payload(src, dest, encryption, compression, recipients=None, recipients_file=None, passphrase=None,
                   gpg_homedir=None, force=False, check_mode=False):
    """Write src (a file or a directory) as one payload at dest; return a result dict.

    compression: (name, level) or (name, level, threads), as Compression takes them.
    """
    if not os.path.exists(src):
        raise RecoveryError('source %s does not exist' % src, path=src)
    if os.path.isdir(dest):
        raise RecoveryError('dest %s is a directory; give the payload file name' % dest, path=dest)
    backend = encryption_backend(encryption, recipients, recipients_file, passphrase, gpg_homedir)
    compressor = Compression(*compression)
    # validate keys and levels before anything is written
    stages = encrypt_stages(compressor, backend)
    is_dir = os.path.isdir(src)
    set_dir, recorded = existing_payload(dest)
    result = {'changed': False, 'dest': dest, 'src': src, 'format': 'tar' if is_dir else 'raw'}
    if recorded and not force:
        digest = content_digest(src)
        if (recorded.get('source') or {}).get('digest') == digest and _same_settings(recorded, backend, compressor):
            result.update({'payload': recorded, 'msg': 'dest already holds this source content'})
            return result
    if set_dir is not None and _backup_set.is_complete(set_dir):
        raise RecoveryError('backup set %s is finalized; a payload cannot be added or replaced' % set_dir, path=dest)
    result['changed'] = True
    if check_mode:
        result['msg'] = 'would write %s' % dest
        return result
    ensure_dir(os.path.dirname(os.path.abspath(dest)))
    producer = TarProducer(src) if is_dir else FileProducer(src)
    started = time.time()
    sha256, size = run_to_file(producer, stages, dest)
    elapsed = time.time() - started
    info = backend.public_description()
    info.update({
        'format': result['format'],
        'compression': compressor.name,
        'size': size,
        'sha256': sha256,
        'source': {
            'path': src,
            'type': 'directory' if is_dir else 'file',
            'digest': producer.digest,
            'files': producer.files,
            'bytes': producer.bytes,
        },
        'seconds': round(elapsed, 3),
    })
    if producer.skipped:
        info['skipped'] = producer.skipped
    if set_dir is not None:
        rel = _rel_in_set(set_dir, dest)
        try:
            _backup_set.write_fragment(set_dir, 'payload-' + rel.replace('/', '_'), {'payloads': {rel: info}})
        except RecoveryError:
            # a payload that the set cannot describe must not stay in it
            remove_quietly(dest)
            raise
    result['payload'] = info
    return result


def _same_settings(recorded, backend, compressor):
    wanted = backend.public_description()
    return (recorded.get('compression') == compressor.name
            and recorded.get('encryption') == wanted.get('encryption')
            and sorted(recorded.get('recipients') or []) == sorted(wanted.get('recipients') or []))


def describe_payload(path, encryption=None, compression=None, fmt=None):
    """How to read a payload: recorded metadata first, then explicit options, then its name and bytes."""
    _set_dir, recorded = existing_payload(path)
    recorded = recorded or {}
    name_fmt, name_compression, name_encryption = describe_from_name(path)
    sniffed = sniff_encryption(path)
    found_encryption = encryption or recorded.get('encryption') or sniffed or name_encryption or 'none'
    if found_encryption == 'gpg' and sniffed == 'passphrase':
        found_encryption = 'passphrase'
    return {
        'encryption': found_encryption,
        'compression': compression or recorded.get('compression') or name_compression,
        'format': fmt or recorded.get('format') or name_fmt,
        'recorded': recorded,
    }


def read_payload(path, description, keys, consume, digest=None, last_stage=None, output=None):
    """Decrypt and decompress the payload at path into consume(stream).

    digest: a FileDigest that sees every byte of the payload file on its way to the decryptor (one
    read of the file); it covers the whole file when this returns or raises.
    last_stage: a stage that stands for the decompressor (Compression.test_stage).
    output: a file descriptor the decompressor writes to itself; consume follows it (see run_from_file).
    """
    backend = encryption_backend(description['encryption'])
    if not keys.can_decrypt(description['encryption']):
        raise RecoveryError('%s is encrypted with %s: give %s to read it' % (
            path, description['encryption'],
            'identity or identity_content' if description['encryption'] == 'age' else 'passphrase'), path=path)
    stages = decrypt_stages(Compression(description['compression']), backend, keys)
    if last_stage is not None:
        stages[-1] = last_stage
    try:
        if digest is not None:
            return run_from_file_hashed(path, stages, consume, digest, output)
        return run_from_file(path, stages, consume, output)
    except PipelineError as exc:
        kind, msg = explain_failure(path, exc.failures, backend)
        raise RecoveryError(msg, path=path, reason=kind)
    except RecoveryError as exc:
        if exc.msg.startswith(path) or exc.details.get('reason') == 'unreadable':
            raise
        raise RecoveryError('%s: %s' % (path, exc.msg), path=path, reason='corrupt')


def read_test(path, keys, description=None, digest=None):
    """Decrypt and decompress to nowhere (a full read test); return bytes and members read.

    digest: see read_payload; the result means nothing until the caller has compared it.
    """
    description = description or describe_payload(path)
    tester = None if description['format'] == 'tar' else Compression(description['compression']).test_stage()
    if tester is not None:
        # the decompressor checks everything and writes nothing: no byte crosses a pipe to be dropped
        sink = _TestedBytes(tester)
        read_payload(path, description, keys, sink, digest, last_stage=tester)
        return {'plain_bytes': sink.bytes, 'members': None}
    sink = CountingSink(tar=description['format'] == 'tar')
    read_payload(path, description, keys, sink, digest)
    return {'plain_bytes': sink.bytes, 'members': sink.members if sink.tar else None}


class _TestedBytes(object):
    """The consumer of a pipeline ending in a test stage: the size it reports once it succeeded (else None)."""

    def __init__(self, stage):
        self.stage = stage
        self.bytes = None

    def __call__(self, stream):
        discard(stream)
        if self.stage.proc.wait() == 0:
            self.bytes = reported_size(self.stage.stderr_tail())
        return self.bytes


def extract_payload(src, dest, keys, encryption=None, compression=None, fmt=None, force=False, check_mode=False,
                    verified=False):
    """Extract a payload into dest (a directory for tar payloads, a file for raw ones).

    A payload of a complete set must be a file its manifest lists, reached without a symbolic
    link; unless the caller has just verified the whole set (verified), metadata.json is checked
    against the manifest before anything is read, and the payload's SHA-256 against the manifest
    as it is decrypted (_read_checked), before what came out leaves its temporary place. Under
    check mode, or when dest exists, the payload is checked in full first.
    """
    set_dir = _backup_set.find_set_dir(src)
    entry = None
    if set_dir is not None and _backup_set.is_complete(set_dir):
        rel = _rel_in_set(set_dir, src)
        if verified:
            _backup_set.payload_path(set_dir, rel)
        else:
            entry = _backup_set.trusted_entry(set_dir, rel)
            if check_mode or os.path.lexists(dest):
                # nothing may be extracted: the payload is checked before anything else, as a whole
                _backup_set.check_file(entry)
                entry = None
    if not os.path.isfile(src):
        raise RecoveryError('payload %s does not exist' % src, path=src)
    description = describe_payload(src, encryption, compression, fmt)
    result = {'changed': False, 'src': src, 'dest': dest, 'format': description['format']}
    wanted = (description['recorded'].get('source') or {}).get('digest')
    limit = recorded_bytes(description['recorded'])
    if os.path.lexists(dest):
        if wanted and content_digest(dest) == wanted:
            result['msg'] = 'dest already holds the content of this payload'
            return result
        if not force and not _is_empty_dir(dest):
            raise RecoveryError('%s exists and differs from the payload; set force=true to replace it' % dest, path=dest)
    result['changed'] = True
    if check_mode:
        result['msg'] = 'would extract %s into %s' % (src, dest)
        return result
    parent = os.path.dirname(os.path.abspath(dest))
    ensure_dir(parent)
    if description['format'] == 'tar':
        tmp = tempfile.mkdtemp(prefix='.%s.extract-' % os.path.basename(dest), dir=parent)
        try:
            extractor = SafeExtractor(tmp, max_bytes=limit)
            _read_checked(src, description, keys, extractor, entry)
            result.update({'files': extractor.files, 'bytes': extractor.bytes})
            if wanted and extractor.tree_digest() != wanted:
                raise RecoveryError('%s: extracted tree does not match the recorded source digest' % src, path=src)
            _replace(tmp, dest)
        except BaseException:
            _remove_extraction(tmp)
            raise
    else:
        tmp = temp_path_beside(dest, 'extract')
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                writer = FileFollower(tmp, max_bytes=limit)
                _read_checked(src, description, keys, writer, entry, output=fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            if wanted and writer.digest() != wanted:
                raise RecoveryError('%s: extracted content does not match the recorded source digest' % src, path=src)
            result.update({'files': 1, 'bytes': writer.bytes})
            _replace(tmp, dest)
        except (OSError, IOError) as exc:
            remove_quietly(tmp)
            raise RecoveryError('%s: cannot write %s: %s' % (src, dest, exc.strerror or exc), path=dest)
        except BaseException:
            remove_quietly(tmp)
            raise
    result['digest_checked'] = bool(wanted)
    return result


def _read_checked(src, description, keys, consume, entry, output=None):
    """read_payload(); with entry (a _backup_set.trusted_entry of src) the payload's SHA-256 is computed as
    the decryptor reads it (one read of the file) and checked against the set once it was read.

    Whatever came out lies only in a temporary place until this returns. A payload that does not
    match its set raises the set's verification error, whatever reading it made of the bytes, as
    checking it first would; one that matches raises what reading it raised, if anything.
    """
    if entry is None:
        return read_payload(src, description, keys, consume, output=output)
    digest = FileDigest()
    try:
        result = read_payload(src, description, keys, consume, digest, output=output)
    except RecoveryError as exc:
        if exc.details.get('reason') == 'unreadable':
            def unreadable(_path):
                raise exc
            _backup_set.check_file(entry, unreadable)
        _backup_set.check_file(entry, lambda _path: (digest.hexdigest(), digest.size))
        raise
    _backup_set.check_file(entry, lambda _path: (digest.hexdigest(), digest.size))
    return result


def recorded_bytes(recorded):
    """The plain size of a payload's source recorded at backup (content bytes of a tree), or None.

    Extraction stops as soon as it passes this size: a payload that expands further is not the
    one the set describes, and must not fill the disk before that shows.
    """
    size = (recorded.get('source') or {}).get('bytes')
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    return size


def _remove_extraction(tmp):
    """Remove a failed extraction, read-only directories included (links are never followed)."""
    if not os.path.isdir(tmp) or os.path.islink(tmp):
        return
    try:
        os.chmod(tmp, 0o700)
    except OSError:
        pass
    for current, dirs, _files in os.walk(tmp):
        for name in dirs:
            full = os.path.join(current, name)
            if not os.path.islink(full):
                try:
                    os.chmod(full, 0o700)
                except OSError:
                    pass
    remove_quietly(tmp)


def _is_empty_dir(path):
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def _replace(tmp, dest):
    """Move tmp into place; an existing dest is moved aside first and removed only afterwards."""
    old = None
    if os.path.lexists(dest):
        old = temp_path_beside(dest, 'old')
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError as exc:
        if old is not None:
            os.rename(old, dest)
        raise RecoveryError('cannot move the extracted content into %s: %s' % (dest, exc.strerror or exc), path=dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        else:
            os.unlink(old)


KOTAUTH_CONTENT = 'kotauth-bkp1'


def verify_set(set_dir, keys, decrypt='auto', kotauth_passphrase=None):
    """Check every checksum of a complete set and, with a key, read every payload in full.

    decrypt: auto (when a key is given), always (a payload without its key fails), never.
    kotauth_passphrase: Kotauth tenant archives (bkp1) are also opened and their tag checked.
    Returns (per-file results, unlisted files); raises RecoveryError naming every failed file. A file
    of the set that the manifest does not list, a symbolic link, a payload that differs from what
    metadata.json recorded, or a path in metadata.json outside the set fails the verification
    (see _backup_set.verify_checksums).

    A payload is read once: its SHA-256 is computed from the very bytes the decryptor reads, and the
    read test counts only when that SHA-256 matches the manifest (and metadata.json); a payload
    whose SHA-256 differs fails with the checksum error alone, whatever its decryption gave.
    """
    read_tests = {}

    def reader(rel, recorded):
        if decrypt == 'never' or (kotauth_passphrase and (recorded or {}).get('content') == KOTAUTH_CONTENT):
            return None

        def read(full):
            description = describe_payload(full)
            if not keys.can_decrypt(description['encryption']):
                return hash_file(full)
            digest = FileDigest()
            try:
                read_tests[rel] = read_test(full, keys, description, digest)
            except RecoveryError as exc:
                if exc.details.get('reason') == 'unreadable':
                    raise
                read_tests[rel] = exc
            return digest.hexdigest(), digest.size
        return read

    checks, unlisted = _backup_set.verify_checksums(set_dir, reader)
    manifest = dict(_backup_set.read_manifest(set_dir))
    payloads = (_backup_set.read_metadata(set_dir).get('payloads') or {})
    for item in checks:
        item['decrypted'] = None
        if not item['ok'] or item['path'] not in payloads or decrypt == 'never':
            continue
        full = _backup_set.payload_path(set_dir, item['path'], manifest)
        outcome = read_tests.get(item['path'])
        if outcome is not None:
            if isinstance(outcome, RecoveryError):
                _read_failed(item, outcome)
            else:
                item.update(outcome, decrypted=True)
            continue
        description = describe_payload(full)
        bkp1 = bool(kotauth_passphrase) and payloads[item['path']].get('content') == KOTAUTH_CONTENT
        if not keys.can_decrypt(description['encryption']):
            if decrypt == 'always' or bkp1:
                item.update(ok=False, error='%s: no key given to decrypt this %s payload' % (item['path'], description['encryption']))
            continue
        try:
            if bkp1:
                from ansible_collections.idp.recovery.plugins.module_utils._kotauth.stored import verify_payload
                item.update(verify_payload(full, keys, kotauth_passphrase, payloads[item['path']]), decrypted=True)
            else:
                item.update(read_test(full, keys, description), decrypted=True)
        except RecoveryError as exc:
            _read_failed(item, exc)
            if bkp1 and not exc.msg.startswith(full):
                item['error'] = '%s: Kotauth archive: %s' % (item['path'], exc.msg)
    failed = [item for item in checks if not item['ok']]
    if failed:
        raise RecoveryError('backup set %s failed verification: %s' % (set_dir, '; '.join(i['error'] for i in failed)),
                            path=set_dir, files=checks, unlisted=unlisted)
    return checks, unlisted


def _read_failed(item, exc):
    item.update(ok=False, decrypted=False, error=exc.msg)
    if exc.details.get('reason'):
        item['reason'] = exc.details['reason']
