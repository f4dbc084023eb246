# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the backup set, the contract between all modules.

Layout: ``<root>/<service>/<YYYYMMDDTHHMMSSZ>/`` holding payload files, ``metadata.json`` and
``MANIFEST.sha256``. While a run writes, the set holds an ``.in-progress`` marker and payload
modules leave their metadata in ``.metadata.d/<name>.json``. Finalizing merges those fragments
and the caller's metadata into ``metadata.json``, then writes the manifest last, atomically: a
set without a manifest is incomplete. Opening, finalizing and removing a set hold the service's
lock ``<root>/.<service>.lock``; a payload being written holds the set's writer lock.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import os
import re
import shutil
import socket
import stat
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import (
    DIR_MODE,
    FILE_MODE,
    RecoveryError,
    deep_merge,
    dump_json,
    ensure_dir,
    iso,
    load_json,
    make_stamp,
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


# -----------------------------------------------------------------------------------------
# names, roots, locks and writers (see "Concurrent runs, names and clocks" in docs/backup-set.md)

CLOCK_SKEW_SECONDS = 300
LOCK_TIMEOUT_SECONDS = 600
INCOMPLETE_GRACE_SECONDS = 600
OPEN_ATTEMPTS = 30

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\]')
_HELD_WRITER_LOCKS = {}


def check_service_name(service, what='service name'):
    """service itself when it is one safe path component, else a RecoveryError.

    A service name becomes the directory <root>/<service>: it must not be empty, '.', '..', start
    with '.', hold '/', '\\', NUL or another control character, or be longer than 255 bytes.
    """
    if not isinstance(service, str) or not service or service in ('.', '..') or service.startswith('.') \
            or _UNSAFE_NAME.search(service) or len(service.encode('utf-8', 'surrogateescape')) > 255:
        raise RecoveryError('%r is not a valid %s: a service name is one directory name below the backup root (not '
                            'empty, no "/", "\\", NUL or control character, not starting with "."); nothing was '
                            'written' % (service, what))
    return service


def check_root(root):
    """Refuse a backup root that any local user can rewrite (world-writable without the sticky bit)."""
    try:
        st = os.stat(root)
    except OSError as exc:
        raise RecoveryError('backup root %s cannot be read: %s' % (root, exc.strerror or exc), path=root)
    if not stat.S_ISDIR(st.st_mode):
        raise RecoveryError('backup root %s is not a directory' % root, path=root)
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise RecoveryError('backup root %s is world-writable (mode %04o) without the sticky bit: any local user could '
                            'replace a service directory or a set; refused. Make it private (chmod 0700 %s)'
                            % (root, stat.S_IMODE(st.st_mode), root), path=root)
    return root


def _check_service_dir_stat(service_dir, st):
    if stat.S_ISLNK(st.st_mode):
        raise RecoveryError('%s is a symbolic link (to %s); a service directory of a backup root is never followed '
                            'through a link. Remove the link (a link planted by another user could redirect the '
                            'backups) and run again' % (service_dir, os.readlink(service_dir)), path=service_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise RecoveryError('%s is not a directory; it cannot hold backup sets' % service_dir, path=service_dir)
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise RecoveryError('service directory %s is world-writable (mode %04o) without the sticky bit; refused. '
                            'Make it private (chmod 0700 %s)' % (service_dir, stat.S_IMODE(st.st_mode), service_dir),
                            path=service_dir)


def check_service_dir(service_dir):
    """Refuse a service directory that is a symbolic link, not a directory or world-writable.

    Returns False when it does not exist, True when it is a usable directory.
    """
    try:
        st = os.lstat(service_dir)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise RecoveryError('cannot read %s: %s' % (service_dir, exc.strerror or exc), path=service_dir)
    _check_service_dir_stat(service_dir, st)
    return True


def _open_service_dir(service_dir, create):
    """A directory descriptor of service_dir, opened without following a link (created 0700 when asked)."""
    if create and not check_service_dir(service_dir):
        try:
            os.mkdir(service_dir, DIR_MODE)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise RecoveryError('cannot create %s: %s' % (service_dir, exc.strerror or exc), path=service_dir)
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
    try:
        fd = os.open(service_dir, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            _check_service_dir_stat(service_dir, os.lstat(service_dir))
        raise RecoveryError('cannot open %s: %s' % (service_dir, exc.strerror or exc), path=service_dir)
    try:
        _check_service_dir_stat(service_dir, os.fstat(fd))
    except RecoveryError:
        os.close(fd)
        raise
    return fd


def lock_path(service_dir):
    """The per-service lock file: <root>/.<service>.lock (0600)."""
    root, service = os.path.split(os.path.abspath(service_dir))
    return os.path.join(root, '.%s.lock' % service)


class ServiceLock(object):
    """An exclusive flock on the lock file of one service, for opening, finalizing and removing
    its sets and for retention deciding about them.

    With create=False (check mode) a missing lock file is not created and nothing is locked; with
    required=False a lock file that cannot be created (read-only parent) locks nothing either.
    Waits up to timeout seconds for another run to release it, then fails naming the lock.
    """

    def __init__(self, service_dir, timeout=LOCK_TIMEOUT_SECONDS, create=True, required=True):
        self.path = lock_path(service_dir)
        self.service = os.path.basename(os.path.abspath(service_dir))
        self.timeout = timeout
        self.create = create
        self.required = required
        self.fd = None

    def __enter__(self):
        flags = os.O_RDWR | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
        try:
            self.fd = os.open(self.path, flags | (os.O_CREAT if self.create else 0), FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not self.create:
                return self
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and not self.required:
                return self
            if exc.errno == errno.ELOOP:
                raise RecoveryError('the lock file %s is a symbolic link; refused (remove it)' % self.path, path=self.path)
            raise RecoveryError('cannot open the lock file %s of service %s: %s' % (
                self.path, self.service, exc.strerror or exc), path=self.path)
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            self._close()
            raise RecoveryError('the lock file %s is not a regular file owned by this user (uid %d); refused: remove '
                                'it' % (self.path, os.geteuid()), path=self.path)
        deadline = time.time() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    self._close()
                    raise RecoveryError('cannot lock %s: %s' % (self.path, exc.strerror or exc), path=self.path)
            if time.time() >= deadline:
                self._close()
                raise RecoveryError('another run has held the lock %s of service %s for more than %d seconds (a '
                                    'backup opening or finalizing a set, or retention); try again when it is done'
                                    % (self.path, self.service, self.timeout), path=self.path)
            time.sleep(0.05)

    def _close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __exit__(self, *exc_info):
        self._close()
        return False


def _boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id', 'r') as handle:
            return handle.read().strip() or None
    except (IOError, OSError):
        return None


def parse_proc_stat(text):
    """(state, start time in clock ticks since boot: field 22) from the text of /proc/<pid>/stat."""
    rest = text[text.rindex(')') + 2:].split()
    return rest[0], int(rest[19])


def process_start_time(pid):
    """The start time (field 22 of /proc/<pid>/stat) of a running process, or None when it is gone."""
    try:
        with open('/proc/%d/stat' % int(pid), 'rb') as handle:
            state, start = parse_proc_stat(handle.read().decode('ascii', 'replace'))
    except (IOError, OSError, ValueError, IndexError, TypeError):
        return None
    if state in ('Z', 'X', 'x'):
        return None
    return start


def writer_identity(pid=None):
    """What identifies a process for as long as it runs: host, boot, pid and start time."""
    pid = pid or os.getpid()
    return {'host': socket.gethostname(), 'boot_id': _boot_id(), 'pid': pid, 'start_time': process_start_time(pid)}


def writer_running(writer, host=None, boot_id=None):
    """True when the process recorded in writer still runs, False when it is gone, None when it ran
    on another host (which this host cannot tell)."""
    if not isinstance(writer, dict) or not writer.get('pid'):
        return False
    if writer.get('host') != (host or socket.gethostname()):
        return None
    current_boot = boot_id or _boot_id()
    if writer.get('boot_id') and current_boot and writer['boot_id'] != current_boot:
        return False
    start = process_start_time(writer['pid'])
    if start is None:
        return False
    return writer.get('start_time') is None or start == writer['start_time']


def _open_set_dir(set_dir):
    flags = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
    return os.open(set_dir, flags)


def hold_writer_lock(set_dir, name):
    """Hold a shared flock on the set directory while this process writes the payload name.

    The kernel releases it when the process ends, however it ends; retention never removes a set
    whose lock is held (writer_lock_held).
    """
    key = (os.path.abspath(set_dir), name)
    if key in _HELD_WRITER_LOCKS:
        return
    try:
        fd = _open_set_dir(set_dir)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except (IOError, OSError):
        # a file system without flock on directories: liveness rests on the marker and the grace
        os.close(fd)
        return
    _HELD_WRITER_LOCKS[key] = fd


def release_writer_lock(set_dir, name):
    fd = _HELD_WRITER_LOCKS.pop((os.path.abspath(set_dir), name), None)
    if fd is not None:
        os.close(fd)


def writer_lock_held(set_dir):
    """True when some process holds the writer lock of set_dir."""
    try:
        fd = _open_set_dir(set_dir)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    finally:
        os.close(fd)
    return False


def _newest_mtime(set_dir):
    newest = None
    for current, dirs, files in os.walk(set_dir):
        for name in ['.'] + dirs + files:
            try:
                mtime = os.lstat(os.path.join(current, name)).st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    return newest


def writer_alive(set_dir, now=None, grace=INCOMPLETE_GRACE_SECONDS):
    """(alive, why) for an incomplete set on this host: whether a run may still be writing it.

    Alive when a process holds its writer lock, when the writer recorded in its marker (pid,
    start time, boot and host) still runs, or when anything in it changed less than grace seconds
    ago (the moments between two tasks of one run, when no module runs).
    """
    now = now if now is not None else time.time()
    if writer_lock_held(set_dir):
        return True, 'a process is writing it (it holds the writer lock)'
    marker = {}
    if os.path.isfile(_marker_path(set_dir)):
        try:
            marker = load_json(_marker_path(set_dir))
        except RecoveryError:
            marker = {}
    writer = marker.get('writer') if isinstance(marker.get('writer'), dict) else None
    if writer is None and marker.get('pid'):
        writer = {'host': marker.get('host'), 'pid': marker.get('pid')}
    running = writer_running(writer)
    if running:
        return True, 'its writer, process %s on %s, is running' % (writer['pid'], writer['host'])
    newest = _newest_mtime(set_dir)
    idle = int(now - newest) if newest is not None else None
    if idle is not None and idle < grace:
        return True, 'it was written to %d seconds ago (less than the %d-second grace)' % (max(idle, 0), grace)
    if running is None:
        gone = 'its writer ran on %s (another host)' % writer.get('host')
    elif writer:
        gone = 'its writer, process %s on %s, is gone' % (writer['pid'], writer['host'])
    else:
        gone = 'it records no writer'
    return False, '%s and nothing in it changed for %s seconds' % (gone, idle if idle is not None else 'unknown')


def _write_marker(set_dir, service, kind):
    marker = {
        'started_at': iso(utcnow()),
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'writer': writer_identity(),
        'service': service or os.path.basename(os.path.dirname(os.path.abspath(set_dir))),
        'kind': kind,
    }
    write_file_atomic(_marker_path(set_dir), dump_json(marker))


def _refresh_writer(set_dir):
    """Record this process as the set's writer in its marker (once per process and set)."""
    path = _marker_path(set_dir)
    try:
        marker = load_json(path)
    except RecoveryError:
        return
    if not isinstance(marker, dict) or marker.get('writer') == writer_identity():
        return
    marker['writer'] = writer_identity()
    write_file_atomic(path, dump_json(marker))


def create(set_dir, service=None, kind=None):
    """Create the set directory (0700) with an in-progress marker; return True when created.

    An explicit set_dir that already is an open or complete set is left as it is (False). The
    service directory must not be a symbolic link; the set is created under the service lock.
    """
    set_dir = os.path.abspath(set_dir)
    service_dir, name = os.path.split(set_dir)
    if service is not None:
        check_service_name(service)
    check_service_name(os.path.basename(service_dir), 'service directory name')
    root = os.path.dirname(service_dir)
    ensure_dir(root)
    check_root(root)
    with ServiceLock(service_dir):
        fd = _open_service_dir(service_dir, create=True)
        try:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=fd)
                created = True
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise RecoveryError('cannot create %s: %s' % (set_dir, exc.strerror or exc), path=set_dir)
                created = False
        finally:
            os.close(fd)
        if not created:
            st = os.lstat(set_dir)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise RecoveryError('%s exists and is not a backup set directory; refusing to use it' % set_dir,
                                    path=set_dir)
            if is_complete(set_dir) or os.path.isfile(_marker_path(set_dir)):
                return False
            if os.listdir(set_dir):
                raise RecoveryError('%s exists and is not a backup set; refusing to use it' % set_dir, path=set_dir)
        os.chmod(set_dir, DIR_MODE)
        _write_marker(set_dir, service, kind)
    return True


def _next_second():
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def new_set_path(root, service, now=None):
    """Where a set opened now would go (for check mode): <root>/<service>/<UTC stamp>."""
    check_service_name(service)
    return os.path.join(os.path.abspath(root), service, make_stamp(now))


def check_new_set(root, service):
    """The checks open_new makes before writing anything, for check mode."""
    check_service_name(service)
    root = os.path.abspath(root)
    if os.path.isdir(root):
        check_root(root)
        check_service_dir(os.path.join(root, service))


def open_new(root, service, kind=None):
    """Open a new set <root>/<service>/<UTC stamp>/ that no other run shares; return its path.

    The set directory is created with an exclusive mkdir under the service lock. When a set of
    that second already exists (another run opened one in the same second), the next second's
    stamp is taken, after waiting for it, so that stamps stay unique, sortable and never ahead of
    the clock.
    """
    check_service_name(service)
    root = os.path.abspath(root)
    ensure_dir(root)
    check_root(root)
    service_dir = os.path.join(root, service)
    with ServiceLock(service_dir):
        fd = _open_service_dir(service_dir, create=True)
        try:
            stamp = None
            for _attempt in range(OPEN_ATTEMPTS):
                candidate = make_stamp()
                try:
                    os.mkdir(candidate, DIR_MODE, dir_fd=fd)
                    stamp = candidate
                    break
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise RecoveryError('cannot create a set in %s: %s' % (service_dir, exc.strerror or exc),
                                            path=service_dir)
                _next_second()
            if stamp is None:
                raise RecoveryError('could not open a new set of %s: a set already exists for each of the last %d '
                                    'seconds in %s (is the clock stuck?)' % (service, OPEN_ATTEMPTS, service_dir),
                                    path=service_dir)
        finally:
            os.close(fd)
        set_dir = os.path.join(service_dir, stamp)
        os.chmod(set_dir, DIR_MODE)
        _write_marker(set_dir, service, kind)
    return set_dir


def write_fragment(set_dir, name, data):
    """A payload module's contribution to metadata.json (merged at finalize)."""
    if is_complete(set_dir):
        raise RecoveryError('backup set %s is already finalized; nothing can be added to it' % set_dir, path=set_dir)
    directory = os.path.join(set_dir, FRAGMENTS)
    ensure_dir(directory)
    safe = re.sub(r'[^A-Za-z0-9_.-]', '_', name)
    write_file_atomic(os.path.join(directory, safe + '.json'), dump_json(data))


def begin_payload(set_dir, name, what):
    """Record that a payload is being written; finalize refuses the set until end_payload(name).

    Until end_payload (or the end of this process), this process holds the set's writer lock and
    is recorded as its writer, so that retention never removes the set under it.
    """
    write_fragment(set_dir, 'pending-' + name, {'pending': {name: what}})
    hold_writer_lock(set_dir, name)
    _refresh_writer(set_dir)


def end_payload(set_dir, name):
    remove_quietly(os.path.join(set_dir, FRAGMENTS, re.sub(r'[^A-Za-z0-9_.-]', '_', 'pending-' + name) + '.json'))
    release_writer_lock(set_dir, name)


def read_fragments(set_dir):
    directory = os.path.join(set_dir, FRAGMENTS)
    merged = {}
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            if name.endswith('.json'):
                deep_merge(merged, load_json(os.path.join(directory, name)))
    return merged


def check_format(metadata, set_dir):
    """metadata itself when this collection reads its format_version, else a RecoveryError."""
    if not isinstance(metadata, dict):
        raise RecoveryError('%s of backup set %s is not a JSON object; this is not a backup set of this collection'
                            % (METADATA, set_dir), path=set_dir)
    version = metadata.get('format_version')
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RecoveryError('%s of backup set %s records no valid format_version (%r); this is not a backup set '
                            'of this collection' % (METADATA, set_dir, version), path=set_dir)
    if version > FORMAT_VERSION:
        raise RecoveryError('backup set %s has format_version %d; this release of idp.recovery reads format_version '
                            '%d and older: use a release of idp.recovery that reads format_version %d (nothing was '
                            'read from or changed in the set)' % (set_dir, version, FORMAT_VERSION, version),
                            path=set_dir, format_version=version, supported_format_version=FORMAT_VERSION)
    return metadata


def read_metadata(set_dir):
    """metadata.json of a finalized set, else the fragments merged so far.

    A metadata.json that is not a regular file of the set (a symbolic link, say), or whose
    format_version is newer than FORMAT_VERSION, is refused.
    """
    path = os.path.join(set_dir, METADATA)
    if os.path.lexists(path):
        try:
            regular_file(set_dir, METADATA)
        except RecoveryError as exc:
            raise RecoveryError('backup set %s is refused: %s' % (set_dir, exc.msg), path=set_dir)
        return check_format(load_json(path), set_dir)
    return read_fragments(set_dir)


def payload_info(set_dir, rel):
    return (read_metadata(set_dir).get('payloads') or {}).get(rel)


def _scan(set_dir):
    """(relative path, problem or None) of every entry of the set that belongs in its manifest.

    Leaves out the manifest, the in-progress marker and the fragments directory. A problem is a
    symbolic link (also one to a directory, which is not descended into), a special file, a
    leftover of an interrupted write or a name that is not a safe relative path.
    """
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
                yield rel, '%s is not a regular file; a backup set holds only regular files' % full
            elif PARTIAL_TAG in name or '.extract-' in name:
                yield rel, '%s is left over from an interrupted write; this set is not complete' % full
            else:
                try:
                    yield safe_relpath(rel), None
                except RecoveryError as exc:
                    yield rel, exc.msg


def set_files(set_dir):
    """Every regular file of the set that belongs in the manifest, as sorted relative paths.

    Refuses symbolic links, special files and leftovers of an interrupted write.
    """
    result = []
    for rel, problem in _scan(set_dir):
        if problem:
            raise RecoveryError(problem, path=os.path.join(set_dir, rel))
        result.append(rel)
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


def _finalized_concurrently(set_dir, error):
    if is_complete(set_dir):
        return RecoveryError('backup set %s was finalized concurrently by another run while this run finalized it; '
                             'this run changed nothing (%s). Verify the set (state=verified) before relying on it'
                             % (set_dir, error), path=set_dir)
    if not os.path.lexists(set_dir):
        return RecoveryError('backup set %s was removed by another run while this run finalized it (%s); it is not a '
                             'backup' % (set_dir, error), path=set_dir)
    return None


def finalize(set_dir, caller_metadata=None, service=None, kind=None, check_mode=False):
    """Write metadata.json and then MANIFEST.sha256; return (changed, metadata).

    Runs under the service lock, so that two finalizes of one set run one after the other (the
    second finds the set complete) and retention never decides while a set is half-finalized.
    """
    if not os.path.isdir(set_dir):
        raise RecoveryError('backup set %s does not exist' % set_dir, path=set_dir)
    with ServiceLock(os.path.dirname(os.path.abspath(set_dir)), create=not check_mode, required=False):
        was_complete = is_complete(set_dir)
        try:
            return _finalize(set_dir, caller_metadata, service, kind, check_mode)
        except RecoveryError as exc:
            concurrent = None if was_complete else _finalized_concurrently(set_dir, exc.msg)
            if concurrent is None:
                raise
            raise concurrent
        except (IOError, OSError) as exc:
            if exc.errno != errno.ENOENT:
                raise
            raise _finalized_concurrently(set_dir, exc.strerror or exc) or RecoveryError(
                'backup set %s changed while this run finalized it: %s (is another run writing it?)'
                % (set_dir, exc), path=set_dir)


def _finalize(set_dir, caller_metadata, service, kind, check_mode):
    if is_complete(set_dir):
        existing = load_json(os.path.join(set_dir, METADATA)) if os.path.isfile(os.path.join(set_dir, METADATA)) else {}
        if not _contains(existing, caller_metadata or {}):
            raise RecoveryError('backup set %s is already finalized (by an earlier or a concurrent run); its metadata '
                                'cannot change' % set_dir, path=set_dir)
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
    """Parse MANIFEST.sha256 into an ordered list of (relpath, sha256).

    Refuses a manifest that is not a regular file of the set, unsafe paths and a path listed twice.
    """
    path = os.path.join(set_dir, MANIFEST)
    if not os.path.lexists(path):
        raise RecoveryError('backup set %s is incomplete: it has no %s' % (set_dir, MANIFEST), path=set_dir)
    try:
        regular_file(set_dir, MANIFEST)
    except RecoveryError as exc:
        raise RecoveryError('backup set %s is refused: %s' % (set_dir, exc.msg), path=set_dir)
    with open(path, 'r') as handle:
        return parse_manifest((line.rstrip('\n') for line in handle), path, path=path)


def parse_manifest(lines, source, damaged='', **details):
    """The (relpath, sha256) entries of the lines of a manifest named ``source`` in messages, in order.

    Refuses a line that is not a sha256sum line (``damaged`` ends that message), an unsafe path, a path
    listed twice and a manifest that lists no file; ``details`` go with each refusal.
    """
    entries = []
    seen = set()
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        match = _MANIFEST_LINE.match(line)
        if not match:
            raise RecoveryError('%s line %d is not a sha256sum line%s' % (source, number, damaged), **details)
        rel = safe_relpath(match.group(2))
        if rel in seen:
            raise RecoveryError('%s line %d lists %s a second time' % (source, number, rel), **details)
        seen.add(rel)
        entries.append((rel, match.group(1)))
    if not entries:
        raise RecoveryError('%s lists no file' % source, **details)
    return entries


def regular_file(set_dir, rel):
    """The path of the regular file rel inside set_dir, following no symbolic link on the way.

    Every component of rel is checked with lstat: a symbolic link anywhere below set_dir, a
    component that is not a directory, or a last component that is not a regular file is refused,
    and the resolved path must stay inside the resolved set_dir. The message starts with rel.
    """
    base = os.path.abspath(set_dir)
    parts = safe_relpath(rel).split('/')
    current = base
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise RecoveryError('%s: missing' % rel, path=current)
            raise RecoveryError('%s: cannot read it: %s' % (rel, exc.strerror or exc), path=current)
        where = rel if index == len(parts) - 1 else '/'.join(parts[:index + 1])
        lead = rel if where == rel else '%s: %s' % (rel, where)
        if stat.S_ISLNK(st.st_mode):
            raise RecoveryError('%s is a symbolic link (to %s); a backup set holds only regular files and a link '
                                'is never followed' % (lead, os.readlink(current)), path=current)
        if index < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise RecoveryError('%s is not a directory' % lead, path=current)
    if not stat.S_ISREG(st.st_mode):
        raise RecoveryError('%s: not a regular file; a backup set holds only regular files' % rel, path=current)
    real_base = os.path.realpath(base)
    if not os.path.realpath(current).startswith(real_base.rstrip(os.sep) + os.sep):
        raise RecoveryError('%s: resolves to %s, outside the set' % (rel, os.path.realpath(current)), path=current)
    return current


def _manifest_dict(set_dir, manifest):
    if manifest is None:
        manifest = read_manifest(set_dir)
    return manifest if isinstance(manifest, dict) else dict(manifest)


def payload_path(set_dir, rel, manifest=None, what=None):
    """The path of a file of a complete set that a restore may read: the one way to such a path.

    rel (read from metadata.json) must be a safe relative path, be listed in the manifest (a
    dict or list of entries as read_manifest returns; read from the set when None) and be a
    regular file reached without any symbolic link. what names where rel was read, for the message.
    """
    where = ' (%s in %s)' % (what, METADATA) if what else ''
    if not isinstance(rel, str):
        raise RecoveryError('backup set %s records %r as a file%s, which is not a path; the set is refused'
                            % (set_dir, rel, where), path=set_dir)
    try:
        safe_relpath(rel)
    except RecoveryError:
        raise RecoveryError('backup set %s names the payload %r%s, which is not a relative path inside the set; '
                            'only files inside the set are ever read, so the set is refused' % (set_dir, rel, where),
                            path=set_dir)
    if rel not in _manifest_dict(set_dir, manifest):
        raise RecoveryError('backup set %s: %s%s is not listed in its %s; only files the manifest lists are ever '
                            'read, so the set is refused' % (set_dir, rel, where, MANIFEST), path=set_dir)
    try:
        return regular_file(set_dir, rel)
    except RecoveryError as exc:
        raise RecoveryError('backup set %s is refused: %s' % (set_dir, exc.msg), path=set_dir)


def metadata_paths(metadata):
    """(where, path) of every file that metadata names: the keys of payloads, every value of a
    ``payload`` key, and the keys of ``ory.files``."""
    found = []
    for rel in sorted((metadata.get('payloads') or {})):
        found.append(('payloads', rel))

    def walk(node, trail):
        if isinstance(node, dict):
            for key in sorted(node, key=str):
                here = trail + [str(key)]
                if key == 'payload' and node[key] is not None:
                    found.append(('.'.join(here), node[key]))
                elif here != ['payloads']:
                    walk(node[key], here)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, trail + [str(index)])

    walk(metadata, [])
    ory_files = (metadata.get('ory') or {}).get('files') if isinstance(metadata.get('ory'), dict) else None
    for rel in sorted(ory_files or {}):
        found.append(('ory.files', rel))
    return found


def _recorded_problem(rel, recorded, sha256, size):
    """Why the file differs from what metadata.json recorded for it at backup time, or None."""
    if not isinstance(recorded, dict):
        return None
    if recorded.get('size') is not None and recorded['size'] != size:
        return '%s: %d bytes, %s recorded %s bytes for this payload: it is not the payload this set wrote' % (
            rel, size, METADATA, recorded['size'])
    if recorded.get('sha256') and recorded['sha256'] != sha256:
        return '%s: SHA-256 %s, %s recorded %s for this payload: it is not the payload this set wrote' % (
            rel, sha256, METADATA, recorded['sha256'])
    return None


def check_entry(set_dir, rel, expected, recorded=None, read=hash_file):
    """The verification result of one manifest entry (see verify_checksums).

    read(path) returns the (sha256, size) of the file: hash_file, or a reader that does more with
    the bytes it hashes (verify_checksums' reader).
    """
    item = {'path': rel, 'sha256': expected, 'ok': False}
    try:
        full = regular_file(set_dir, rel)
        actual, size = read(full)
    except RecoveryError as exc:
        item['error'] = exc.msg if exc.msg.startswith(rel) else '%s: %s' % (rel, exc.msg)
        return item
    item['size'] = size
    if actual != expected:
        item['error'] = '%s: checksum mismatch (expected %s, found %s)' % (rel, expected, actual)
        return item
    problem = _recorded_problem(rel, recorded, actual, size)
    if problem:
        item['error'] = problem
    else:
        item['ok'] = True
    return item


def verify_checksums(set_dir, reader=None):
    """Check a complete set against its manifest and metadata; return (results, unlisted files).

    One result per manifest entry, plus a failed result for each of: a file of the set the
    manifest does not list (also returned as unlisted), a symbolic link or special file, and a
    path named in metadata.json that is not a safe relative path or not listed. A payload whose
    size or SHA-256 differs from what metadata.json recorded fails. A manifest or metadata.json
    that is a link, or a format_version newer than this collection reads, raises RecoveryError.

    reader(rel, recorded), when given, is asked about each payload that metadata.json records
    (recorded: its record), after every other file, and only when metadata.json checked out: it returns
    None (the file is hashed alone) or a read(path) for check_entry that hashes the payload while
    it reads it for its own purpose, so the file is read once. The results keep the manifest order.
    """
    entries = read_manifest(set_dir)
    listed = dict(entries)
    if METADATA not in listed:
        metadata = {}
    else:
        metadata = read_metadata(set_dir) if os.path.lexists(os.path.join(set_dir, METADATA)) else {}
    payloads = metadata.get('payloads') or {}
    results = [None if reader is not None and rel in payloads else check_entry(set_dir, rel, expected, payloads.get(rel))
               for rel, expected in entries]
    # a payload is described by metadata.json: it is read for more than its hash only once that checked out
    trusted = any(item is not None and item['path'] == METADATA and item['ok'] for item in results)
    for index, (rel, expected) in enumerate(entries):
        if results[index] is None:
            read = reader(rel, payloads[rel]) if trusted else None
            results[index] = check_entry(set_dir, rel, expected, payloads[rel], read or hash_file)
    if METADATA not in listed and not os.path.lexists(os.path.join(set_dir, METADATA)):
        results.append({'path': METADATA, 'ok': False,
                        'error': '%s: not listed in the manifest; a complete set lists its metadata' % METADATA})
    unlisted = []
    for rel, problem in _scan(set_dir):
        if rel in listed:
            continue
        unlisted.append(rel)
        results.append({'path': rel, 'ok': False, 'error': problem or (
            '%s: not listed in the manifest; a set holding files its manifest does not cover is refused (only '
            'listed files are ever restored)' % rel)})
    for what, rel in metadata_paths(metadata):
        if isinstance(rel, str) and (rel in listed or rel in unlisted):
            continue
        try:
            if not isinstance(rel, str):
                raise RecoveryError('not a path')
            safe_relpath(rel)
            error = '%s: recorded in %s (%s) but not listed in the manifest' % (rel, METADATA, what)
        except RecoveryError:
            error = '%r: %s (%s) names a path that is not a relative path inside the set; only files inside the ' \
                    'set are ever read' % (rel, METADATA, what)
        results.append({'path': str(rel), 'ok': False, 'error': error})
    return results, sorted(unlisted)


def verified_file(set_dir, rel, manifest=None):
    """payload_path(), after the file and metadata.json were checked against the manifest."""
    entry = trusted_entry(set_dir, rel, manifest)
    check_file(entry)
    return entry['path']


def trusted_entry(set_dir, rel, manifest=None):
    """What the set says of a file it lists, once metadata.json was checked against the manifest.

    A dict: set_dir, rel, path (payload_path()), sha256 (the manifest's), recorded (its record in
    metadata.json, or None). The file itself is not read: check_file() does that.
    """
    manifest = _manifest_dict(set_dir, manifest)
    full = payload_path(set_dir, rel, manifest)
    recorded = None
    if METADATA in manifest and rel != METADATA:
        check = check_entry(set_dir, METADATA, manifest[METADATA])
        if not check['ok']:
            raise RecoveryError('backup set %s failed verification: %s' % (set_dir, check['error']), path=set_dir)
        recorded = (read_metadata(set_dir).get('payloads') or {}).get(rel)
    return {'set_dir': set_dir, 'rel': rel, 'path': full, 'sha256': manifest[rel], 'recorded': recorded}


def check_file(entry, read=hash_file):
    """Raise the set's verification error unless the file of a trusted_entry() matches it (read: see check_entry)."""
    check = check_entry(entry['set_dir'], entry['rel'], entry['sha256'], entry['recorded'], read)
    if not check['ok']:
        raise RecoveryError('backup set %s failed verification: %s' % (entry['set_dir'], check['error']),
                            path=entry['set_dir'])


def remove(set_dir, check_mode=False):
    """Remove a set (under the service lock); a link, at the set or at its service directory, is refused."""
    if os.path.islink(os.path.dirname(os.path.abspath(set_dir))):
        check_service_dir(os.path.dirname(os.path.abspath(set_dir)))
    if not os.path.lexists(set_dir):
        return False
    if not os.path.isdir(set_dir) or os.path.islink(set_dir):
        raise RecoveryError('%s is not a backup set directory; refusing to remove it' % set_dir, path=set_dir)
    if not looks_like_set(set_dir):
        raise RecoveryError('%s does not look like a backup set (no manifest, marker or metadata); refusing to remove it'
                            % set_dir, path=set_dir)
    if not check_mode:
        with ServiceLock(os.path.dirname(os.path.abspath(set_dir)), required=False):
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
    if service is not None:
        check_service_name(service)
    if not os.path.isdir(root):
        raise RecoveryError('backup root %s does not exist' % root, path=root)
    if service is not None:
        check_service_dir(os.path.join(root, service))
    now = now or utcnow()
    sets = []
    for svc in sorted(os.listdir(root)):
        service_dir = os.path.join(root, svc)
        # a symbolic link at <root>/<service> or at a set is never followed
        if (service and svc != service) or svc.startswith('.') or os.path.islink(service_dir) \
                or not os.path.isdir(service_dir):
            continue
        for stamp in sorted(os.listdir(service_dir)):
            set_dir = os.path.join(service_dir, stamp)
            if not os.path.islink(set_dir) and os.path.isdir(set_dir) and parse_stamp(stamp) is not None:
                sets.append(describe(set_dir, now))
    sets.sort(key=lambda item: (item['stamp'], item['service']))
    return sets


def choose_set(sets, service, where, stamp=None, path=None):
    """The set a fetch or a restore takes from ``sets`` (as ``list_sets`` or a remote listing gives them, oldest
    first): the one at ``path``, else the one of ``stamp``, else the newest complete one. A missing or incomplete set
    is refused, naming the complete sets of ``where``; the error's details hold ``available`` (those stamps),
    ``wanted`` and ``incomplete`` (whether the set asked for exists but has no manifest). Returns the set and the
    stamps of the complete sets."""
    complete = [item for item in sets if item['complete']]
    stamps = [item['stamp'] for item in complete]
    listed = ', '.join(stamps) or 'none'
    if path or stamp:
        wanted = path or '%s/%s' % (service, stamp)
        found = [item for item in sets if (item['path'] == path if path else item['stamp'] == stamp)]
        if not found:
            raise RecoveryError('the target %s holds no set %s; complete sets there: %s' % (where, wanted, listed),
                                available=stamps, wanted=wanted, incomplete=False)
        if not found[0]['complete']:
            raise RecoveryError('the set %s on %s is incomplete (no %s): it is never restored; complete sets there: %s'
                                % (wanted, where, MANIFEST, listed), available=stamps, wanted=wanted, incomplete=True)
        return found[0], stamps
    if not complete:
        raise RecoveryError('the target %s holds no complete set of %s' % (where, service), available=stamps,
                            wanted='%s (latest complete)' % service, incomplete=False)
    return complete[-1], stamps
