# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the backup set, the contract between all modules.

Layout: ``<root>/<service>/<YYYYMMDDTHHMMSSZ>/`` holding payload files, ``metadata.json`` and
``MANIFEST.sha256``. While a run writes, the set holds an ``.in-progress`` marker and payload
modules leave their metadata in ``.metadata.d/<name>.json``. Finalizing merges those fragments
and the caller's metadata into ``metadata.json``, then writes the manifest last, atomically: a
set without a manifest is incomplete.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import shutil
import socket
import stat

from ansible_collections.idp.recovery.plugins.module_utils._common import (
    DIR_MODE,
    RecoveryError,
    deep_merge,
    dump_json,
    ensure_dir,
    iso,
    load_json,
    parse_stamp,
    remove_quietly,
    utcnow,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import hash_file

FORMAT_VERSION = 1
MANIFEST = 'MANIFEST.sha256'
METADATA = 'metadata.json'
MARKER = '.in-progress'
FRAGMENTS = '.metadata.d'
PARTIAL_TAG = '.partial-'
RESERVED_KEYS = ('format_version', 'payloads', 'set', 'pending')

_MANIFEST_LINE = re.compile(r'^([0-9a-f]{64}) [ *](.+)$')


def _marker_path(set_dir):
    return os.path.join(set_dir, MARKER)


def is_complete(set_dir):
    return os.path.isfile(os.path.join(set_dir, MANIFEST))


def looks_like_set(set_dir):
    return any(os.path.exists(os.path.join(set_dir, name)) for name in (MANIFEST, MARKER, METADATA, FRAGMENTS))


def find_set_dir(path, levels=3):
    """The backup set that contains path (a payload path or a directory), or None."""
    current = os.path.dirname(os.path.abspath(path))
    for _dummy in range(levels):
        if looks_like_set(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return None


def safe_relpath(rel):
    """Refuse manifest or metadata paths that would leave the set."""
    if not rel or rel.startswith('/') or '\\' in rel or '\n' in rel:
        raise RecoveryError('unsafe path in backup set: %r' % rel)
    if any(part in ('..', '') for part in rel.split('/')):
        raise RecoveryError('unsafe path in backup set: %r' % rel)
    return rel


def create(set_dir, service=None, kind=None):
    """Create the set directory (0700) with an in-progress marker; return True when created."""
    if is_complete(set_dir):
        return False
    if os.path.isfile(_marker_path(set_dir)):
        return False
    if os.path.isdir(set_dir) and os.listdir(set_dir):
        raise RecoveryError('%s exists and is not a backup set; refusing to use it' % set_dir, path=set_dir)
    ensure_dir(os.path.dirname(os.path.abspath(set_dir)))
    ensure_dir(set_dir)
    os.chmod(set_dir, DIR_MODE)
    marker = {
        'started_at': iso(utcnow()),
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'service': service or os.path.basename(os.path.dirname(os.path.abspath(set_dir))),
        'kind': kind,
    }
    write_file_atomic(_marker_path(set_dir), dump_json(marker))
    return True


def write_fragment(set_dir, name, data):
    """A payload module's contribution to metadata.json (merged at finalize)."""
    if is_complete(set_dir):
        raise RecoveryError('backup set %s is already finalized; nothing can be added to it' % set_dir, path=set_dir)
    directory = os.path.join(set_dir, FRAGMENTS)
    ensure_dir(directory)
    safe = re.sub(r'[^A-Za-z0-9_.-]', '_', name)
    write_file_atomic(os.path.join(directory, safe + '.json'), dump_json(data))


def begin_payload(set_dir, name, what):
    """Record that a payload is being written; finalize refuses the set until end_payload(name)."""
    write_fragment(set_dir, 'pending-' + name, {'pending': {name: what}})


def end_payload(set_dir, name):
    remove_quietly(os.path.join(set_dir, FRAGMENTS, re.sub(r'[^A-Za-z0-9_.-]', '_', 'pending-' + name) + '.json'))


def read_fragments(set_dir):
    directory = os.path.join(set_dir, FRAGMENTS)
    merged = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith('.json'):
                deep_merge(merged, load_json(os.path.join(directory, name)))
    return merged


def read_metadata(set_dir):
    """metadata.json of a finalized set, else the fragments merged so far."""
    path = os.path.join(set_dir, METADATA)
    if os.path.isfile(path):
        return load_json(path)
    return read_fragments(set_dir)


def payload_info(set_dir, rel):
    return (read_metadata(set_dir).get('payloads') or {}).get(rel)


def set_files(set_dir):
    """Every regular file of the set that belongs in the manifest, as sorted relative paths.

    Refuses symbolic links, special files and leftovers of an interrupted write.
    """
    result = []
    for current, dirs, files in os.walk(set_dir):
        rel_dir = os.path.relpath(current, set_dir)
        if rel_dir == '.':
            dirs[:] = [d for d in dirs if d != FRAGMENTS]
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(current, d))]:
            rel = name if rel_dir == '.' else rel_dir + '/' + name
            if rel in (MANIFEST, MARKER):
                continue
            full = os.path.join(current, name)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                raise RecoveryError('%s is not a regular file; a backup set holds only regular files' % full, path=full)
            if PARTIAL_TAG in name or '.extract-' in name:
                raise RecoveryError('%s is left over from an interrupted write; this set is not complete' % full, path=full)
            result.append(safe_relpath(rel))
    return sorted(result)


def build_metadata(set_dir, caller_metadata=None, service=None, kind=None):
    marker = {}
    if os.path.isfile(_marker_path(set_dir)):
        marker = load_json(_marker_path(set_dir))
    metadata = {
        'format_version': FORMAT_VERSION,
        'set': {
            'stamp': os.path.basename(os.path.abspath(set_dir)),
            'service': service or marker.get('service') or os.path.basename(os.path.dirname(os.path.abspath(set_dir))),
            'kind': kind or marker.get('kind'),
            'host': marker.get('host') or socket.gethostname(),
            'started_at': marker.get('started_at'),
        },
        'payloads': {},
    }
    deep_merge(metadata, read_fragments(set_dir))
    caller_metadata = dict(caller_metadata or {})
    clash = [key for key in RESERVED_KEYS if key in caller_metadata]
    if clash:
        raise RecoveryError('metadata keys %s are reserved by the backup-set format' % ', '.join(clash))
    deep_merge(metadata, caller_metadata)
    return metadata


def manifest_text(set_dir, files):
    lines = []
    for rel in files:
        digest, _size = hash_file(os.path.join(set_dir, rel))
        lines.append('%s  %s\n' % (digest, rel))
    return ''.join(lines)


def finalize(set_dir, caller_metadata=None, service=None, kind=None, check_mode=False):
    """Write metadata.json and then MANIFEST.sha256; return (changed, metadata)."""
    if not os.path.isdir(set_dir):
        raise RecoveryError('backup set %s does not exist' % set_dir, path=set_dir)
    if is_complete(set_dir):
        existing = load_json(os.path.join(set_dir, METADATA)) if os.path.isfile(os.path.join(set_dir, METADATA)) else {}
        if not _contains(existing, caller_metadata or {}):
            raise RecoveryError('backup set %s is already finalized; its metadata cannot change' % set_dir, path=set_dir)
        return False, existing
    if not os.path.isfile(_marker_path(set_dir)):
        raise RecoveryError('%s is not an open backup set (no %s marker)' % (set_dir, MARKER), path=set_dir)
    metadata = build_metadata(set_dir, caller_metadata, service, kind)
    pending = metadata.pop('pending', None)
    if pending:
        raise RecoveryError('backup set %s is not complete: %s started and did not finish' % (
            set_dir, ', '.join('%s (%s)' % (name, what) for name, what in sorted(pending.items()))), path=set_dir)
    payload_files = set_files(set_dir)
    missing = [rel for rel in metadata.get('payloads', {}) if rel not in payload_files]
    if missing:
        raise RecoveryError('payloads recorded in metadata are missing from %s: %s' % (set_dir, ', '.join(sorted(missing))),
                            path=set_dir)
    if check_mode:
        return True, metadata
    metadata['set']['finalized_at'] = iso(utcnow())
    write_file_atomic(os.path.join(set_dir, METADATA), dump_json(metadata))
    # The fragments stay until the manifest exists: a finalize interrupted before this point
    # runs again from the same fragments. The manifest never lists them.
    files = set_files(set_dir)
    write_file_atomic(os.path.join(set_dir, MANIFEST), manifest_text(set_dir, files).encode('utf-8'))
    fragments = os.path.join(set_dir, FRAGMENTS)
    if os.path.isdir(fragments):
        shutil.rmtree(fragments)
    os.unlink(_marker_path(set_dir))
    return True, metadata


def _contains(existing, wanted):
    """True when every key of wanted is in existing with the same value (dicts recursively)."""
    if isinstance(wanted, dict) and isinstance(existing, dict):
        return all(key in existing and _contains(existing[key], value) for key, value in wanted.items())
    return existing == wanted


def read_manifest(set_dir):
    """Parse MANIFEST.sha256 into an ordered list of (relpath, sha256)."""
    path = os.path.join(set_dir, MANIFEST)
    if not os.path.isfile(path):
        raise RecoveryError('backup set %s is incomplete: it has no %s' % (set_dir, MANIFEST), path=set_dir)
    entries = []
    with open(path, 'r') as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip('\n')
            if not line:
                continue
            match = _MANIFEST_LINE.match(line)
            if not match:
                raise RecoveryError('%s line %d is not a sha256sum line' % (path, number), path=path)
            entries.append((safe_relpath(match.group(2)), match.group(1)))
    if not entries:
        raise RecoveryError('%s lists no file' % path, path=path)
    return entries


def verify_checksums(set_dir):
    """Check every file of the manifest; return (results, unlisted files)."""
    entries = read_manifest(set_dir)
    results = []
    for rel, expected in entries:
        full = os.path.join(set_dir, rel)
        item = {'path': rel, 'sha256': expected, 'ok': False}
        if not os.path.isfile(full):
            item['error'] = '%s: missing' % rel
        else:
            try:
                actual, size = hash_file(full)
                item['size'] = size
                if actual == expected:
                    item['ok'] = True
                else:
                    item['error'] = '%s: checksum mismatch (expected %s, found %s)' % (rel, expected, actual)
            except RecoveryError as exc:
                item['error'] = '%s: %s' % (rel, exc)
        results.append(item)
    listed = set(rel for rel, _digest in entries)
    unlisted = [rel for rel in _all_files(set_dir) if rel not in listed and rel != MANIFEST]
    return results, unlisted


def _all_files(set_dir):
    found = []
    for current, dirs, files in os.walk(set_dir):
        dirs.sort()
        rel_dir = os.path.relpath(current, set_dir)
        for name in sorted(files):
            found.append(name if rel_dir == '.' else rel_dir + '/' + name)
    return found


def remove(set_dir, check_mode=False):
    if not os.path.lexists(set_dir):
        return False
    if not os.path.isdir(set_dir) or os.path.islink(set_dir):
        raise RecoveryError('%s is not a backup set directory; refusing to remove it' % set_dir, path=set_dir)
    if not looks_like_set(set_dir):
        raise RecoveryError('%s does not look like a backup set (no manifest, marker or metadata); refusing to remove it'
                            % set_dir, path=set_dir)
    if not check_mode:
        shutil.rmtree(set_dir)
    return True


def _dir_size(set_dir):
    total = 0
    count = 0
    for current, _dirs, files in os.walk(set_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def describe(set_dir, now=None):
    """A summary of one set for listings (no checksum work)."""
    now = now or utcnow()
    stamp = os.path.basename(os.path.abspath(set_dir))
    when = parse_stamp(stamp)
    size, count = _dir_size(set_dir)
    complete = is_complete(set_dir)
    info = {
        'path': set_dir,
        'service': os.path.basename(os.path.dirname(os.path.abspath(set_dir))),
        'stamp': stamp,
        'timestamp': iso(when) if when else None,
        'age_seconds': int((now - when).total_seconds()) if when else None,
        'complete': complete,
        'in_progress': os.path.isfile(_marker_path(set_dir)) and not complete,
        'size_bytes': size,
        'files': count,
    }
    metadata_path = os.path.join(set_dir, METADATA)
    if complete and os.path.isfile(metadata_path):
        try:
            metadata = load_json(metadata_path)
            info['kind'] = (metadata.get('set') or {}).get('kind')
            info['payloads'] = sorted((metadata.get('payloads') or {}).keys())
        except RecoveryError as exc:
            info['complete'] = False
            info['error'] = str(exc)
    return info


def list_sets(root, service=None, now=None):
    """Every set under root (optionally one service), oldest first."""
    if not os.path.isdir(root):
        raise RecoveryError('backup root %s does not exist' % root, path=root)
    now = now or utcnow()
    sets = []
    for svc in sorted(os.listdir(root)):
        service_dir = os.path.join(root, svc)
        if (service and svc != service) or not os.path.isdir(service_dir) or svc.startswith('.'):
            continue
        for stamp in sorted(os.listdir(service_dir)):
            set_dir = os.path.join(service_dir, stamp)
            if os.path.isdir(set_dir) and parse_stamp(stamp) is not None:
                sets.append(describe(set_dir, now))
    sets.sort(key=lambda item: (item['stamp'], item['service']))
    return sets
