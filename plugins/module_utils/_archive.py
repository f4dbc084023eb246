# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: tar streams in, safe extraction out, and content digests.

A directory becomes a POSIX (pax) tar stream that stock ``tar`` reads. Its *content digest*
covers names, types, permission bits, sizes, file contents and link targets (not times or
owners), so the same tree gives the same digest wherever it lives: that is how a payload knows
it already holds a source, and how an extraction knows its target already holds the payload.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import os
import stat
import tarfile

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._stream import copy_stream

DIGEST_PREFIX_FILE = 'file-sha256:'
DIGEST_PREFIX_TREE = 'tree-sha256:'


class _HashingReader(object):
    def __init__(self, handle):
        self.handle = handle
        self.sha256 = hashlib.sha256()

    def read(self, size=-1):
        data = self.handle.read(size)
        self.sha256.update(data)
        return data


class TreeDigest(object):
    """Accumulates the content digest of a tree, entry by entry, in walk order."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self.files = 0
        self.bytes = 0

    def add(self, kind, name, mode, size=0, content=''):
        line = '%s\0%s\0%o\0%d\0%s\n' % (kind, name, stat.S_IMODE(mode) & 0o777, size, content)
        self._hash.update(line.encode('utf-8', 'surrogateescape'))
        if kind == 'f':
            self.files += 1
            self.bytes += size

    def hexdigest(self):
        return DIGEST_PREFIX_TREE + self._hash.hexdigest()


def walk_sorted(root):
    """Yield (relative name, absolute path, lstat) for root ('.') and everything below, sorted."""
    yield '.', root, os.lstat(root)
    stack = ['']
    while stack:
        rel = stack.pop()
        directory = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise RecoveryError('cannot list %s: %s' % (directory, exc.strerror or exc))
        subdirs = []
        for name in names:
            child_rel = os.path.join(rel, name) if rel else name
            full = os.path.join(root, child_rel)
            st = os.lstat(full)
            yield child_rel, full, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(child_rel)
        stack.extend(reversed(subdirs))


def file_digest(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, 'rb', buffering=0) as handle:
        size = copy_stream(handle, digest.update)
    return DIGEST_PREFIX_FILE + digest.hexdigest(), size


def classified_entries(root):
    """Walk root like walk_sorted, naming what each entry is for the tar stream and the digest.

    Yields (kind, rel, full, st, target): kind is 'd', 'f', 'l' (target: the link text), 'h' (a
    further name of a regular file already seen; target: its first name) or 's' (a special file:
    socket, FIFO, device), which neither the tar stream nor the digest carries.
    """
    seen = {}
    for rel, full, st in walk_sorted(root):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            yield 'd', rel, full, st, None
        elif stat.S_ISLNK(mode):
            yield 'l', rel, full, st, os.readlink(full)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                yield 'h', rel, full, st, seen[key]
            else:
                seen[key] = rel
                yield 'f', rel, full, st, None
        else:
            yield 's', rel, full, st, None


def content_digest(path):
    """The content digest of a file or a directory tree (see the module docstring)."""
    try:
        if os.path.isfile(path) and not os.path.islink(path):
            return file_digest(path)[0]
        tree = TreeDigest()
        for kind, rel, full, st, target in classified_entries(path):
            if kind == 'f':
                tree.add(kind, rel, st.st_mode, st.st_size, file_digest(full)[0])
            elif kind != 's':
                tree.add(kind, rel, st.st_mode, 0, target or '')
        return tree.hexdigest()
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)


class TarProducer(object):
    """Writes a directory as a tar stream into a sink and computes its content digest meanwhile."""

    def __init__(self, root):
        self.root = root
        self.digest = None
        self.files = 0
        self.bytes = 0
        self.skipped = []

    def __call__(self, sink):
        tree = TreeDigest()
        archive = tarfile.open(fileobj=sink, mode='w|', format=tarfile.PAX_FORMAT, bufsize=CHUNK_SIZE)
        archive.copybufsize = CHUNK_SIZE
        try:
            for kind, rel, full, st, target in classified_entries(self.root):
                if kind == 's':
                    self.skipped.append(rel)
                    continue
                info = archive.gettarinfo(full, arcname=rel)
                if kind == 'f':
                    info.type = tarfile.REGTYPE
                    with open(full, 'rb') as handle:
                        reader = _HashingReader(handle)
                        archive.addfile(info, reader)
                    tree.add(kind, rel, st.st_mode, info.size, DIGEST_PREFIX_FILE + reader.sha256.hexdigest())
                    continue
                if kind == 'h':
                    info.type = tarfile.LNKTYPE
                    info.linkname = target
                    info.size = 0
                tree.add(kind, rel, st.st_mode, 0, target or '')
                archive.addfile(info)
        except (OSError, IOError) as exc:
            if getattr(exc, 'errno', None) == 32:
                raise
            where = getattr(exc, 'filename', None) or self.root
            raise RecoveryError('cannot read %s: %s' % (where, exc.strerror or exc))
        archive.close()
        self.digest = tree.hexdigest()
        self.files = tree.files
        self.bytes = tree.bytes


class FileProducer(object):
    """Streams one file into a sink and computes its content digest meanwhile."""

    def __init__(self, path):
        self.path = path
        self.digest = None
        self.files = 1
        self.bytes = 0
        self.skipped = []

    def __call__(self, sink):
        digest = hashlib.sha256()

        def write(data):
            digest.update(data)
            sink.write(data)

        with open(self.path, 'rb', buffering=0) as handle:
            self.bytes = copy_stream(handle, write)
        self.digest = DIGEST_PREFIX_FILE + digest.hexdigest()


class UnsafeArchive(RecoveryError):
    pass


def _safe_name(name):
    """Normalise a member name; refuse absolute names and parent references."""
    if not name or '\0' in name:
        raise UnsafeArchive('empty or invalid member name')
    if name.startswith('/') or name.startswith('\\'):
        raise UnsafeArchive('absolute member path refused: %s' % name)
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if any(p == '..' for p in parts):
        raise UnsafeArchive('member path with .. refused: %s' % name)
    return '/'.join(parts) or '.'


def _link_stays_inside(member_name, target):
    if target.startswith('/'):
        return False
    base = os.path.dirname(member_name) if member_name != '.' else ''
    depth = 0
    for part in (base.split('/') if base else []) + target.split('/'):
        if part in ('', '.'):
            continue
        if part == '..':
            depth -= 1
            if depth < 0:
                return False
        else:
            depth += 1
    return True


class SafeExtractor(object):
    """Extract a tar stream into an existing, empty directory, refusing anything unsafe.

    Refused: absolute names, ``..``, links pointing outside the directory, hard links to
    anything but an earlier regular member, devices, FIFOs, duplicate names, and writes through
    a symbolic link. Ownership is restored only when running as root. The caller owns the
    directory and removes it when this raises.
    """

    def __init__(self, root):
        self.root = root
        self.files = 0
        self.bytes = 0
        self._dir_modes = []
        self._regular = set()
        self._seen = set()
        self._as_root = hasattr(os, 'geteuid') and os.geteuid() == 0
        self._entries = {}   # name -> (kind, mode, size, content) for the content digest

    def tree_digest(self):
        """The content digest of what was extracted, in the order content_digest() walks a tree."""
        children = {}
        for name in self._entries:
            if name != '.':
                parent = name.rsplit('/', 1)[0] if '/' in name else ''
                children.setdefault(parent, []).append(name)
        tree = TreeDigest()
        kind, mode, size, content = self._entries.get('.', ('d', 0o700, 0, ''))
        tree.add(kind, '.', mode, size, content)
        stack = ['']
        while stack:
            rel = stack.pop()
            subdirs = []
            for name in sorted(children.get(rel, []), key=lambda n: n.rsplit('/', 1)[-1]):
                kind, mode, size, content = self._entries[name]
                tree.add(kind, name, mode, size, content)
                if kind == 'd':
                    subdirs.append(name)
            stack.extend(reversed(subdirs))
        return tree.hexdigest()

    def _parent_fd_path(self, name):
        """Create missing parents as real directories; refuse a parent that is not one."""
        parts = name.split('/')[:-1]
        current = self.root
        for part in parts:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except OSError:
                os.mkdir(current, 0o700)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeArchive('member %s would be written through a non-directory (%s)' % (name, part))
        return os.path.join(self.root, name)

    def _meta(self, path, member, is_link=False):
        if self._as_root:
            try:
                os.lchown(path, member.uid, member.gid)
            except OSError:
                pass
        if not is_link:
            os.utime(path, (member.mtime, member.mtime))

    def __call__(self, stream):
        try:
            archive = tarfile.open(fileobj=stream, mode='r|')
        except tarfile.TarError as exc:
            raise RecoveryError('not a tar stream: %s' % exc)
        try:
            for member in archive:
                self._extract(archive, member)
        except tarfile.TarError as exc:
            raise RecoveryError('broken tar stream: %s' % exc)
        except (OSError, IOError) as exc:
            raise RecoveryError('cannot extract into %s: %s' % (self.root, exc.strerror or exc))
        for path, mode, mtime in reversed(self._dir_modes):
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime))
        return self.files

    def _extract(self, archive, member):
        name = _safe_name(member.name)
        if name in self._seen:
            raise UnsafeArchive('duplicate member refused: %s' % name)
        self._seen.add(name)
        mode = member.mode & 0o777
        if member.isdir():
            path = self.root if name == '.' else self._parent_fd_path(name)
            if name != '.':
                try:
                    os.mkdir(path, 0o700)
                except OSError:
                    if not os.path.isdir(path) or os.path.islink(path):
                        raise UnsafeArchive('directory member %s clashes with an earlier member' % name)
            self._meta(path, member)
            self._dir_modes.append((path, mode, member.mtime))
            self._entries[name] = ('d', mode, 0, '')
            return
        if name == '.':
            raise UnsafeArchive('the archive root must be a directory')
        path = self._parent_fd_path(name)
        if member.issym():
            if not _link_stays_inside(name, member.linkname):
                raise UnsafeArchive('symbolic link %s -> %s points outside the destination' % (name, member.linkname))
            os.symlink(member.linkname, path)
            self._meta(path, member, is_link=True)
            self._entries[name] = ('l', 0o777, 0, member.linkname)
            return
        if member.islnk():
            target = _safe_name(member.linkname)
            if target not in self._regular:
                raise UnsafeArchive('hard link %s -> %s does not point at an earlier regular file' % (name, member.linkname))
            os.link(os.path.join(self.root, target), path)
            self._entries[name] = ('h', self._entries[target][1], 0, target)
            return
        if not member.isreg():
            raise UnsafeArchive('member %s is a device, FIFO or other special file: refused' % name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
        digest = hashlib.sha256()
        with os.fdopen(fd, 'wb') as out:
            source = archive.extractfile(member)

            def write(data):
                digest.update(data)
                out.write(data)
            size = copy_stream(source, write)
            self.bytes += size
        self._entries[name] = ('f', mode, size, DIGEST_PREFIX_FILE + digest.hexdigest())
        self._meta(path, member)
        os.chmod(path, mode)
        self._regular.add(name)
        self.files += 1


class CountingSink(object):
    """A consumer for a full read test: reads a stream to its end, counting bytes."""

    def __init__(self, tar=False):
        self.tar = tar
        self.bytes = 0
        self.members = 0

    def __call__(self, stream):
        if not self.tar:
            self.bytes = copy_stream(stream, lambda data: None)
            return self.bytes
        try:
            archive = tarfile.open(fileobj=stream, mode='r|')
            for member in archive:
                _safe_name(member.name)
                self.members += 1
                if member.isreg():
                    # tarfile reads past the member's data itself (a stream cannot seek): every byte is
                    # still decrypted and decompressed, without copying it through Python buffers
                    self.bytes += member.size
        except tarfile.TarError as exc:
            raise RecoveryError('broken tar stream: %s' % exc)
        return self.bytes


class RawWriter(object):
    """A consumer that writes the stream to a file object and hashes it."""

    def __init__(self, out):
        self.out = out
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def __call__(self, stream):
        def write(data):
            self.sha256.update(data)
            self.out.write(data)
        self.bytes = copy_stream(stream, write)
        return self.bytes

    def digest(self):
        return DIGEST_PREFIX_FILE + self.sha256.hexdigest()
