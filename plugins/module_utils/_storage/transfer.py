# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: backup sets copied to a storage target and back, verified both ways.

An upload sends the payloads and ``metadata.json`` first, proves the remote copies equal the local
set (remote hashes, ``rsync --checksum`` or a read-back), and writes ``MANIFEST.sha256`` last. A
fetch reads the remote manifest first, checks each downloaded file against it before renaming it
into place, and writes the local manifest last.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os
import threading
import time

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import (
    MANIFEST,
    METADATA,
    check_service_dir,
    check_service_name,
    choose_set,
    is_complete,
    parse_manifest,
    read_manifest,
    verify_checksums,
)
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    CHUNK_SIZE,
    FILE_MODE,
    RecoveryError,
    ensure_dir,
    fsync_dir,
    load_json,
    parse_stamp,
    remove_quietly,
    temp_path_beside,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import HASH_PREFERENCE, storage_from_params
from ansible_collections.idp.recovery.plugins.module_utils._storage.sets import list_remote_sets
from ansible_collections.idp.recovery.plugins.module_utils._stream import copy_stream, hash_file

VERIFY_MODES = ('auto', 'download')


# ---------------------------------------------------------------------------------------------
# upload and verify

class LocalSet(object):
    """A complete local set, read and checked before anything leaves the host."""

    def __init__(self, set_dir, allow_unencrypted=False):
        self.path = os.path.abspath(set_dir)
        self.stamp = os.path.basename(self.path)
        self.service = os.path.basename(os.path.dirname(self.path))
        if not os.path.isdir(self.path):
            raise RecoveryError('backup set %s does not exist' % self.path, path=self.path)
        if parse_stamp(self.stamp) is None:
            raise RecoveryError('%s is not a backup set: its name is not a UTC stamp (YYYYMMDDTHHMMSSZ)' % self.path,
                                path=self.path)
        check_service_name(self.service)
        if not is_complete(self.path):
            raise RecoveryError('backup set %s is incomplete (it has no %s); only complete sets are copied offsite'
                                % (self.path, MANIFEST), path=self.path)
        self.entries = read_manifest(self.path)
        self.expected = dict(self.entries)
        self.files = [rel for rel, _digest in self.entries]
        if METADATA not in self.expected:
            raise RecoveryError('backup set %s has no %s in its manifest' % (self.path, METADATA), path=self.path)
        metadata = load_json(os.path.join(self.path, METADATA))
        payloads = metadata.get('payloads') or {}
        plain = sorted(rel for rel, info in payloads.items() if (info or {}).get('encryption') == 'none')
        self.unencrypted = plain
        if plain and not allow_unencrypted:
            raise RecoveryError('backup set %s holds unencrypted payloads (%s); they are not copied offsite unless '
                                'allow_unencrypted=true' % (self.path, ', '.join(plain)), path=self.path, unencrypted=plain)
        self.sizes = {}
        for rel in self.files:
            full = os.path.join(self.path, rel)
            try:
                self.sizes[rel] = os.stat(full).st_size
            except OSError as exc:
                raise RecoveryError('the local set is damaged: %s: %s' % (full, exc.strerror), path=self.path, file=rel)
        with open(os.path.join(self.path, MANIFEST), 'rb') as handle:
            self.manifest = handle.read()
        listed = set(self.files)
        self.unlisted = []
        for current, dirs, names in os.walk(self.path):
            dirs.sort()
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(current, name), self.path).replace(os.sep, '/')
                if rel not in listed and rel != MANIFEST:
                    self.unlisted.append(rel)

    @property
    def rel_dir(self):
        return '%s/%s' % (self.service, self.stamp)

    @property
    def total_bytes(self):
        return sum(self.sizes.values()) + len(self.manifest)


class _Digests(object):
    """Several hashes of one stream."""

    def __init__(self, names):
        self.digests = dict((name, hashlib.new(name)) for name in names)

    def update(self, data):
        for digest in self.digests.values():
            digest.update(data)

    def hexdigests(self):
        return dict((name, digest.hexdigest()) for name, digest in self.digests.items())


def _local_hashes(local, files, algorithms):
    """sha256 (checked against the manifest) and any other algorithms of local files, in one read."""
    found = {}
    damaged = {}
    for rel in files:
        digests = _Digests(set(['sha256']) | set(algorithms))
        path = os.path.join(local.path, rel)
        try:
            with open(path, 'rb', buffering=0) as handle:
                copy_stream(handle, digests.update, CHUNK_SIZE)
        except (OSError, IOError) as exc:
            damaged[rel] = 'the local file %s cannot be read: %s' % (path, exc.strerror or exc)
            continue
        values = digests.hexdigests()
        if values['sha256'] != local.expected[rel]:
            damaged[rel] = ('the local file %s does not match the manifest (expected %s, read %s); the local set is damaged'
                            % (path, local.expected[rel], values['sha256']))
        found[rel] = values
    return found, damaged


def verify_remote_files(storage, local, files, mode='auto'):
    """Prove that the remote copies of files equal the local set; return (results, seconds).

    Each result: path, size, ok, method, and error when not ok. Remote hashes are compared with
    the manifest (sha256) or with the same hash of the local file read in the same pass that
    checks it against the manifest; a remote without a usable hash is read back in full.
    """
    started = time.time()
    listing = {}
    listing_error = []

    def remote_listing():
        try:
            listing['files'] = storage.list_files(local.rel_dir, hashes=(storage.kind == 'rclone' and mode == 'auto'))[0]
        except RecoveryError as exc:
            listing_error.append(exc)

    results = dict((rel, {'path': rel, 'size': local.sizes[rel], 'sha256': local.expected[rel], 'ok': False})
                   for rel in files)
    local_needed = list(files) if storage.kind == 'rsync' else []
    if storage.kind == 'rclone' and mode == 'auto':
        # the remote listing (a remote may read its files to hash them) runs while we read ours
        best = next((name for name in HASH_PREFERENCE if name in storage.hash_types()), None)
        worker = threading.Thread(target=remote_listing)
        worker.start()
        local_hashes, damaged = _local_hashes(local, files, (best,) if best in ('md5', 'sha1') else ())
        worker.join()
    else:
        remote_listing()
        local_hashes, damaged = _local_hashes(local, local_needed, ())
    if listing_error:
        raise listing_error[0]
    remote = listing['files']

    download = []
    for rel in files:
        item = results[rel]
        found = remote.get(rel)
        if rel in damaged:
            item['error'] = damaged[rel]
            item['method'] = 'local read'
            continue
        if found is None:
            item['error'] = '%s is missing on the remote' % storage.describe(local.rel_dir + '/' + rel)
            item['method'] = 'listing'
            continue
        if found['size'] != local.sizes[rel]:
            item['error'] = '%s has %s bytes on the remote, %d locally' % (rel, found['size'], local.sizes[rel])
            item['method'] = 'listing'
            continue
        if storage.kind == 'rsync':
            item['method'] = 'rsync --checksum'
            continue
        if storage.kind == 'rclone' and mode == 'auto':
            hashes = found.get('hashes') or {}
            name = next((algo for algo in HASH_PREFERENCE if hashes.get(algo)), None)
            if name is not None:
                wanted = local.expected[rel] if name == 'sha256' else local_hashes.get(rel, {}).get(name)
                if wanted is None:
                    download.append(rel)
                    continue
                item['method'] = 'remote %s' % name
                if hashes[name].lower() == wanted:
                    item['ok'] = True
                else:
                    item['error'] = '%s: checksum mismatch on the remote (%s %s, expected %s)' % (
                        rel, name, hashes[name].lower(), wanted)
                continue
        download.append(rel)

    if storage.kind == 'rsync':
        candidates = [rel for rel in files if results[rel].get('method') == 'rsync --checksum']
        differing = set(storage.checksum_differences(local.path, local.rel_dir, candidates))
        for rel in candidates:
            if rel in differing:
                results[rel]['error'] = '%s: checksum mismatch on the remote (rsync --checksum)' % rel
            else:
                results[rel]['ok'] = True
    if download:
        read_back = storage.download_sha256(local.rel_dir, download)
        for rel in download:
            item = results[rel]
            item['method'] = 'read back (sha256)'
            actual = read_back.get(rel)
            if actual is None:
                item['error'] = '%s could not be read back from the remote' % rel
            elif actual != local.expected[rel]:
                item['error'] = '%s: checksum mismatch on the remote (sha256 %s, expected %s)' % (
                    rel, actual, local.expected[rel])
            else:
                item['ok'] = True
    return [results[rel] for rel in files], time.time() - started


def _failed(results):
    return [item for item in results if not item['ok']]


def _verification(results, seconds, mode):
    """The verification of a result: the mode, the methods used, the time spent, each file and whether all are ok."""
    methods = sorted(set(item.get('method') for item in results if item.get('method')))
    return {'mode': mode, 'methods': methods, 'seconds': round(seconds, 3), 'files': results, 'ok': not _failed(results)}


def _damaged_locally(results):
    return [item for item in results if 'the local set is damaged' in item.get('error', '') or
            'the local file' in item.get('error', '')]


def _verification_error(storage, local, failed, verification=None):
    first = failed[0]
    damaged = _damaged_locally(failed)
    details = {'failed_files': [item['path'] for item in failed]}
    if verification is not None:
        details['verification'] = verification
    if damaged:
        return RecoveryError(damaged[0]['error'], path=local.path, file=damaged[0]['path'], **details)
    return RecoveryError('verification of %s failed: %s%s' % (
        storage.describe(local.rel_dir), first['error'],
        (' (and %d more file(s))' % (len(failed) - 1)) if len(failed) > 1 else ''),
        file=first['path'], **details)


def _manifest_state(storage, local, remote_files):
    """None when the remote has no manifest, True when it equals ours, False when it differs."""
    info = remote_files.get(MANIFEST)
    if info is None:
        return None
    if info['size'] != len(local.manifest):
        return False
    return storage.read_file(local.rel_dir + '/' + MANIFEST) == local.manifest


def _put_manifest(storage, local):
    storage.upload(local.path, local.rel_dir, [MANIFEST], always=True, expected={MANIFEST: hashlib.sha256(local.manifest).hexdigest()})
    back = storage.read_file(local.rel_dir + '/' + MANIFEST)
    if back != local.manifest:
        storage.remove_file(local.rel_dir + '/' + MANIFEST)
        raise RecoveryError('the manifest read back from %s differs from the one uploaded; it was removed again'
                            % storage.describe(local.rel_dir), file=MANIFEST)


def upload_set(storage, local, verify='auto', force=False, check_mode=False):
    """Make the remote hold a verified copy of local; the manifest goes last. Return a result dict."""
    result = {
        'changed': False,
        'remote': storage.describe(local.rel_dir),
        'service': local.service,
        'stamp': local.stamp,
        'uploaded': [],
        'repaired': [],
        'bytes': 0,
        'seconds': 0.0,
        'bytes_per_second': 0,
        'verification': {},
    }
    remote_files = storage.list_files(local.rel_dir)[0]
    state = _manifest_state(storage, local, remote_files)
    if state is False and not force:
        raise RecoveryError('%s already holds a different set under the same name (its manifest differs); refusing to '
                            'overwrite it without force=true' % storage.describe(local.rel_dir), file=MANIFEST)

    if state is True:
        results, seconds = verify_remote_files(storage, local, local.files, verify)
        result['verification'] = _verification(results, seconds, verify)
        failed = _failed(results)
        if not failed:
            return result
        if _damaged_locally(failed):
            raise _verification_error(storage, local, failed, result['verification'])
        to_send = to_check = result['repaired'] = [item['path'] for item in failed]
        always = True
    else:
        always = state is False
        to_send = [rel for rel in local.files if always or rel not in remote_files or
                   remote_files[rel]['size'] != local.sizes[rel]]
        to_check = local.files
    result['changed'] = True
    result['uploaded'] = to_send + [MANIFEST]
    result['bytes'] = sum(local.sizes[rel] for rel in to_send) + len(local.manifest)
    if check_mode:
        return result
    started = time.time()
    if state is not None:
        # the set stops looking complete before anything in it changes
        storage.remove_file(local.rel_dir + '/' + MANIFEST)
    storage.upload(local.path, local.rel_dir, to_send, always=always, expected=local.expected)
    upload_seconds = time.time() - started
    results, seconds = verify_remote_files(storage, local, to_check, verify)
    failed = _failed(results)
    if failed and not _damaged_locally(failed):
        # one more copy of what did not verify (a remote that only compares sizes kept a bad file)
        again = time.time()
        bad = [item['path'] for item in failed]
        storage.upload(local.path, local.rel_dir, bad, always=True, expected=local.expected)
        upload_seconds += time.time() - again
        more, extra = verify_remote_files(storage, local, bad, verify)
        by_path = dict((item['path'], item) for item in more)
        results = [by_path.get(item['path'], item) for item in results]
        seconds += extra
        failed = _failed(results)
    result['verification'] = _verification(results, seconds, verify)
    if failed:
        raise _verification_error(storage, local, failed, result['verification'])
    again = time.time()
    _put_manifest(storage, local)
    upload_seconds += time.time() - again
    result['seconds'] = round(upload_seconds, 3)
    result['bytes_per_second'] = int(result['bytes'] / upload_seconds) if upload_seconds > 0 else 0
    return result


def verify_remote_set(storage, local, verify='auto'):
    """Check the remote copy of local without changing anything; raise naming the first bad file."""
    remote_files = storage.list_files(local.rel_dir)[0]
    state = _manifest_state(storage, local, remote_files)
    if state is None:
        raise RecoveryError('%s is not a complete copy: it has no %s' % (storage.describe(local.rel_dir), MANIFEST),
                            file=MANIFEST)
    if state is False:
        raise RecoveryError('%s holds a different set: its manifest differs from the local one'
                            % storage.describe(local.rel_dir), file=MANIFEST)
    results, seconds = verify_remote_files(storage, local, local.files, verify)
    verification = _verification(results, seconds, verify)
    failed = _failed(results)
    if failed:
        raise _verification_error(storage, local, failed, verification)
    return verification


def upload(params, check_mode=False, warn=None):
    """What offsite_upload does: read and check the local set of ``params['path']``, then copy it to the target
    (``state=present``) or verify the copy there (``state=verified``). ``warn`` receives each warning."""
    warn = warn or _ignore
    local = LocalSet(params['path'], params['allow_unencrypted'])
    if local.unlisted:
        warn('files not listed in the manifest are not copied: %s' % ', '.join(local.unlisted))
    with storage_from_params(params) as storage:
        if params['state'] == 'verified':
            result = {
                'changed': False,
                'remote': storage.describe(local.rel_dir),
                'service': local.service,
                'stamp': local.stamp,
                'verification': verify_remote_set(storage, local, params['verify']),
            }
        else:
            result = upload_set(storage, local, params['verify'], params['force'], check_mode)
            if result['repaired']:
                warn('the copy on the target did not verify and was repaired: %s' % ', '.join(result['repaired']))
    result['retries'] = storage.retried
    return result


# ---------------------------------------------------------------------------------------------
# fetch

def read_remote_manifest(storage, rel_dir):
    """The bytes and the entries of the manifest of the remote set rel_dir."""
    manifest_rel = rel_dir + '/' + MANIFEST
    source = storage.describe(manifest_rel)
    data = storage.read_file(manifest_rel)
    entries = parse_manifest(data.decode('utf-8', 'replace').splitlines(), source, damaged=': the offsite manifest is damaged')
    if MANIFEST in dict(entries):
        raise RecoveryError('%s lists itself' % source)
    return data, entries


def local_copy_ok(set_dir):
    """(True, (results, unlisted)) when set_dir is a complete set whose checksums all match, else (False, None)."""
    if not is_complete(set_dir):
        return False, None
    try:
        results, unlisted = verify_checksums(set_dir)
    except RecoveryError:
        return False, None
    return all(item['ok'] for item in results), (results, unlisted)


def fetch_set(storage, service, dest, stamp=None, check_mode=False, warn=None):
    """Make ``<dest>/<service>/<stamp>`` a verified copy of the remote set of ``stamp`` (default: the newest complete
    one); the manifest goes last. Return a result dict. ``warn`` receives each warning."""
    warn = warn or _ignore
    dest = os.path.abspath(dest)
    check_service_dir(os.path.join(dest, service))
    chosen, stamps = choose_set(list_remote_sets(storage, service), service, storage.describe(), stamp=stamp)
    rel_dir = '%s/%s' % (service, chosen['stamp'])
    set_dir = os.path.join(dest, service, chosen['stamp'])
    result = {'changed': False, 'path': set_dir, 'service': service, 'stamp': chosen['stamp'],
              'source': storage.describe(rel_dir), 'available': stamps, 'downloaded': [], 'bytes': 0,
              'size_bytes': chosen['size_bytes']}

    ok, verified = local_copy_ok(set_dir)
    if ok:
        result['files'] = verified[0]
        if verified[1]:
            warn('files not listed in the manifest (never restored): %s' % ', '.join(verified[1]))
        return result

    manifest, entries = read_remote_manifest(storage, rel_dir)
    result['changed'] = True
    if check_mode:
        result['downloaded'] = [rel for rel, _digest in entries] + [MANIFEST]
        return result

    ensure_dir(set_dir)
    # a damaged complete copy stops looking complete before anything in it changes
    if os.path.exists(os.path.join(set_dir, MANIFEST)):
        os.unlink(os.path.join(set_dir, MANIFEST))
        fsync_dir(set_dir)
    for rel, expected in entries:
        final = os.path.join(set_dir, rel)
        if os.path.isfile(final) and hash_file(final)[0] == expected:
            continue
        ensure_dir(os.path.dirname(final))
        tmp = temp_path_beside(final, 'fetch')
        try:
            storage.download(rel_dir + '/' + rel, tmp)
            actual, size = hash_file(tmp)
            if actual != expected:
                raise RecoveryError('the offsite copy of %s is damaged: its SHA-256 is %s, the manifest says %s; the local '
                                    'copy %s stays incomplete (no manifest) and is never restored'
                                    % (storage.describe(rel_dir + '/' + rel), actual, expected, set_dir), file=rel)
            os.chmod(tmp, FILE_MODE)
            os.rename(tmp, final)
        except BaseException:
            remove_quietly(tmp)
            raise
        fsync_dir(os.path.dirname(final))
        result['downloaded'].append(rel)
        result['bytes'] += size
    write_file_atomic(os.path.join(set_dir, MANIFEST), manifest)
    result['downloaded'].append(MANIFEST)
    result['bytes'] += len(manifest)

    results, unlisted = verify_checksums(set_dir)
    failed = [item['error'] for item in results if not item['ok']]
    if failed:
        raise RecoveryError('the fetched set %s failed verification: %s' % (set_dir, '; '.join(failed)), files=results)
    if unlisted:
        warn('files not listed in the manifest (never restored): %s' % ', '.join(unlisted))
    result['files'] = results
    return result


def fetch(params, check_mode=False, warn=None):
    """What offsite_fetch does: check the options, then fetch the set of ``params['service']`` (and ``stamp``) from the
    target into ``params['dest']``."""
    service, stamp = params['service'], params['stamp']
    check_service_name(service)
    if stamp and parse_stamp(stamp) is None:
        raise RecoveryError('%r is not a set stamp (YYYYMMDDTHHMMSSZ)' % stamp)
    with storage_from_params(params) as storage:
        result = fetch_set(storage, service, params['dest'], stamp, check_mode, warn)
    result['retries'] = storage.retried
    return result


def _ignore(msg):
    pass
