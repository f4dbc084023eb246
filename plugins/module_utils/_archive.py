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

import errno
import hashlib
import os
import stat
import tarfile
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._stream import (
    WRITEBACK_STEP,
    PipeSkimmer,
    copy_stream,
    discard,
    start_writeback as start_fd_writeback,
    write_all,
)

DIGEST_PREFIX_FILE = 'file-sha256:'
DIGEST_PREFIX_TREE = 'tree-sha256:'


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
    with open(path, 'rb', buffering=0) as handle:
        return stream_file(handle, _ignore)


def _ignore(data):
    pass


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


def stream_file(handle, write, size=None):
    """Read an open file (unbuffered) in CHUNK_SIZE pieces into one reused buffer, hand each to
    write() and hash it; return (content digest, byte count).

    size: read at most this many bytes (a member whose size the tar header already gives); a file
    that turns out shorter raises OSError('unexpected end of data'), as tarfile does.
    """
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    total = 0
    while size is None or total < size:
        piece = view if size is None or size - total >= CHUNK_SIZE else view[:size - total]
        count = handle.readinto(piece)
        if not count:
            break
        digest.update(view[:count])
        write(view[:count])
        total += count
    if size is not None and total != size:
        raise OSError('unexpected end of data')
    return DIGEST_PREFIX_FILE + digest.hexdigest(), total


class _TarOut(object):
    """Where a TarProducer writes: the sink, and how many bytes went into it (for TarFile and the padding)."""

    def __init__(self, sink):
        self.write_to = sink.write
        self.offset = 0

    def write(self, data):
        self.write_to(data)
        self.offset += len(data)

    def tell(self):
        return self.offset

    def pad(self, boundary):
        remainder = self.offset % boundary
        if remainder:
            self.write(tarfile.NUL * (boundary - remainder))


class TarProducer(object):
    """Writes a directory as a tar stream into a sink and computes its content digest meanwhile.

    The stream is what ``tarfile.open(mode='w|', format=PAX_FORMAT)`` writes, byte for byte:
    tarfile builds the headers, and the file data goes from one reused buffer straight into the
    sink (tarfile's own stream object would copy every piece several times).
    """

    def __init__(self, root):
        self.root = root
        self.digest = None
        self.files = 0
        self.bytes = 0
        self.skipped = []

    def __call__(self, sink):
        tree = TreeDigest()
        out = _TarOut(sink)
        archive = tarfile.TarFile(fileobj=out, mode='w', format=tarfile.PAX_FORMAT)
        try:
            for kind, rel, full, st, target in classified_entries(self.root):
                if kind == 's':
                    self.skipped.append(rel)
                    continue
                info = archive.gettarinfo(full, arcname=rel)
                if kind == 'f':
                    info.type = tarfile.REGTYPE
                    with open(full, 'rb', buffering=0) as handle:
                        out.write(info.tobuf(archive.format, archive.encoding, archive.errors))
                        content, _size = stream_file(handle, out.write, info.size)
                    out.pad(tarfile.BLOCKSIZE)
                    tree.add(kind, rel, st.st_mode, info.size, content)
                    continue
                if kind == 'h':
                    info.type = tarfile.LNKTYPE
                    info.linkname = target
                    info.size = 0
                tree.add(kind, rel, st.st_mode, 0, target or '')
                out.write(info.tobuf(archive.format, archive.encoding, archive.errors))
            # the end of the archive, as TarFile.close() writes it: two zero blocks, then zeros up to a whole record
            out.write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
            out.pad(tarfile.RECORDSIZE)
        except (OSError, IOError) as exc:
            if getattr(exc, 'errno', None) == 32:
                raise
            where = getattr(exc, 'filename', None) or self.root
            raise RecoveryError('cannot read %s: %s' % (where, exc.strerror or exc))
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
        with open(self.path, 'rb', buffering=0) as handle:
            self.digest, self.bytes = stream_file(handle, sink.write)


class UnsafeArchive(RecoveryError):
    pass


class TarStream(object):
    """A forward-only reader of a tar stream for ``tarfile``, with large reads into one reused buffer.

    It stands where ``tarfile.open(mode='r|')`` puts its own stream object (read, tell, forward
    seek), so headers are parsed, and broken streams reported, exactly as there; member data is
    handed on by copy() in slices of the buffer (up to CHUNK_SIZE per read), without the small
    reads and joins of that stream object.
    """

    def __init__(self, stream, chunk_size=CHUNK_SIZE):
        self._readinto = getattr(stream, 'readinto1', None) or stream.readinto
        self._buf = bytearray(chunk_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self.pos = 0

    def tell(self):
        return self.pos

    def read(self, size):
        if self._end - self._start >= size:
            data = bytes(self._view[self._start:self._start + size])
            self._start += size
            self.pos += size
            return data
        parts = []
        self.copy(size, lambda data: parts.append(bytes(data)))
        return b''.join(parts)

    def copy(self, size, write):
        """Hand the next size bytes to write() in slices of the buffer; return how many there were."""
        left = size
        while left:
            if self._start == self._end:
                self._start = 0
                self._end = self._readinto(self._view) or 0
                if not self._end:
                    break
            count = min(left, self._end - self._start)
            write(self._view[self._start:self._start + count])
            self._start += count
            left -= count
        self.pos += size - left
        return size - left

    def seek(self, pos):
        if pos < self.pos:
            raise tarfile.StreamError('seeking backwards is not allowed')
        self.copy(pos - self.pos, lambda data: None)
        return self.pos

    def close(self):
        pass


def open_tar_stream(stream):
    """(TarFile, TarStream) reading a tar stream as ``tarfile.open(fileobj=stream, mode='r|')`` does."""
    reader = TarStream(stream)
    return tarfile.TarFile(fileobj=reader, mode='r'), reader


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


# the kernel follows at most this many symbolic links in one path lookup (MAXSYMLINKS)
MAX_LINK_HOPS = 40


def resolve_link(links, name, target):
    """Where the symbolic link ``name -> target`` leads in a tree whose links are ``links``.

    ``links`` maps the normalised member name of every symbolic link of the tree to its target.
    The target is walked component by component, the way the kernel walks it in the finished
    tree: ``..`` climbs from the directory reached so far, and a component that is one of
    ``links`` is replaced by that link's target, read from that link's directory. Any other
    component counts as a directory (if it is not one, the kernel resolves nothing at all).

    Returns the normalised name the target reaches (``''`` for the root itself). Raises
    UnsafeArchive naming the link when the target is absolute, climbs above the root (by itself
    or through a link on the way), or needs more than MAX_LINK_HOPS links, itself included.
    """
    def refuse(why):
        return UnsafeArchive('symbolic link %s -> %s %s: refused' % (name, target, why))

    if target.startswith('/'):
        raise refuse('points outside the destination (an absolute target)')
    reached = name.split('/')[:-1]
    pending = list(reversed(target.split('/')))
    via = None
    hops = 1   # the link itself counts, as it does when the kernel opens it
    while pending:
        part = pending.pop()
        if part in ('', '.'):
            continue
        if part == '..':
            if not reached:
                raise refuse('points outside the destination' + (' (through the link %s)' % via if via else ''))
            reached.pop()
            continue
        candidate = '/'.join(reached + [part])
        if candidate not in links:
            reached.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise refuse('goes through more than %d links, itself included (a loop?)' % MAX_LINK_HOPS)
        via = candidate
        text = links[candidate]
        if text.startswith('/'):
            raise refuse('points outside the destination (through the absolute link %s -> %s)' % (candidate, text))
        pending.extend(reversed(text.split('/')))
    return '/'.join(reached)


_DIR_FLAGS = os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0) | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
_FILE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))


class SafeExtractor(object):
    """Extract a tar stream into an existing, empty directory, refusing anything unsafe.

    Refused: absolute names, ``..``, symbolic links that lead outside the directory (resolved
    through every other link of the archive, so chains such as ``b -> ../..`` and
    ``x -> a/b/../../etc`` are caught), hard links to anything but an earlier regular member,
    devices, FIFOs, duplicate names, members written below a symbolic link or a non-directory,
    and, with ``max_bytes``, more file content than that. Every path is walked from the
    directory one component at a time without following links (``O_NOFOLLOW``), and symbolic
    links are created only after the last member, once all of them are known to stay inside.
    Ownership is restored only when running as root. The caller owns the directory and removes
    it when this raises.
    """

    def __init__(self, root, max_bytes=None):
        self.root = root
        self.max_bytes = max_bytes
        self.files = 0
        self.bytes = 0
        self._dirs = []      # (name, member) of directory members: modes and times are set at the end
        self._links = {}     # name -> target of the symbolic links, created at the end
        self._link_members = []
        self._regular = set()
        self._seen = set()
        self._as_root = hasattr(os, 'geteuid') and os.geteuid() == 0
        self._entries = {}   # name -> (kind, mode, size, content) for the content digest
        self._root_fd = None
        self._reader = None

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

    def _parent_fd(self, name, create=True):
        """An open descriptor of the directory that holds member ``name`` (the caller closes it).

        Walked from the root one component at a time with O_NOFOLLOW; missing directories are
        created (0700) when ``create``. A component that is a symbolic link of the archive, a
        link on disk or anything but a directory is refused.
        """
        parts = name.split('/')[:-1]
        fd = os.dup(self._root_fd)
        try:
            for index, part in enumerate(parts):
                prefix = '/'.join(parts[:index + 1])
                if prefix in self._links:
                    raise UnsafeArchive('member %s would be written through the symbolic link %s: refused' % (name, prefix))
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno != errno.ENOENT or not create:
                        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                            raise UnsafeArchive('member %s would be written through a non-directory (%s): refused'
                                                % (name, prefix))
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _owner(self, target, member, **kwargs):
        if self._as_root:
            try:
                if isinstance(target, int):
                    os.fchown(target, member.uid, member.gid)
                else:
                    os.chown(target, member.uid, member.gid, follow_symlinks=False, **kwargs)
            except OSError:
                pass

    def __call__(self, stream):
        try:
            archive, self._reader = open_tar_stream(stream)
        except tarfile.TarError as exc:
            raise RecoveryError('not a tar stream: %s' % exc)
        current = None
        try:
            self._root_fd = os.open(self.root, _DIR_FLAGS)
            for member in archive:
                current = member.name
                self._extract(archive, member)
            current = None
            self._finish()
        except tarfile.TarError as exc:
            raise RecoveryError('broken tar stream%s: %s' % (' at member %s' % current if current else '', exc))
        except (OSError, IOError) as exc:
            raise RecoveryError('cannot extract %sinto %s: %s' % (
                'member %s ' % current if current else '', self.root, exc.strerror or exc))
        finally:
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None
        return self.files

    def _finish(self):
        """Check every symbolic link against all the others, create them, then set directory modes."""
        for name in self._links:
            resolve_link(self._links, name, self._links[name])
        for name, member in self._link_members:
            parent = self._parent_fd(name, create=False)
            try:
                base = name.rsplit('/', 1)[-1]
                os.symlink(self._links[name], base, dir_fd=parent)
                self._owner(base, member, dir_fd=parent)
            finally:
                os.close(parent)
        # deepest first: a directory made read-only must not stop the work below it
        for name, member in sorted(self._dirs, key=lambda item: -item[0].count('/') if item[0] != '.' else 1):
            if name == '.':
                fd = os.dup(self._root_fd)
            else:
                parent = self._parent_fd(name, create=False)
                try:
                    fd = os.open(name.rsplit('/', 1)[-1], _DIR_FLAGS, dir_fd=parent)
                finally:
                    os.close(parent)
            try:
                self._owner(fd, member)
                os.fchmod(fd, member.mode & 0o777)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)

    def _too_big(self, name):
        return UnsafeArchive('member %s: the archive expands beyond the %d bytes recorded at backup: refusing'
                             % (name, self.max_bytes))

    def _extract(self, archive, member):
        name = _safe_name(member.name)
        if name in self._seen:
            raise UnsafeArchive('duplicate member refused: %s' % name)
        self._seen.add(name)
        mode = member.mode & 0o777
        if member.isdir():
            if name != '.':
                parent = self._parent_fd(name)
                try:
                    base = name.rsplit('/', 1)[-1]
                    try:
                        os.mkdir(base, 0o700, dir_fd=parent)
                    except OSError as exc:
                        if exc.errno != errno.EEXIST:
                            raise
                        # a directory made earlier as the parent of a member is fine; anything else clashes
                        if not stat.S_ISDIR(os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode):
                            raise UnsafeArchive('directory member %s clashes with an earlier member' % name)
                finally:
                    os.close(parent)
            self._dirs.append((name, member))
            self._entries[name] = ('d', mode, 0, '')
            return
        if name == '.':
            raise UnsafeArchive('the archive root must be a directory')
        parent = self._parent_fd(name)
        try:
            self._extract_into(archive, member, name, mode, parent, name.rsplit('/', 1)[-1])
        finally:
            os.close(parent)

    def _extract_into(self, archive, member, name, mode, parent, base):
        if member.issym():
            if not member.linkname:
                raise UnsafeArchive('symbolic link %s has an empty target: refused' % name)
            if _lexists(base, parent):
                # an earlier member below this name made it a directory
                raise UnsafeArchive('symbolic link %s clashes with the directory of an earlier member: refused' % name)
            # checked against the links known so far now, against all of them at the end
            resolve_link(self._links, name, member.linkname)
            self._links[name] = member.linkname
            self._link_members.append((name, member))
            self._entries[name] = ('l', 0o777, 0, member.linkname)
            return
        if member.islnk():
            target = _safe_name(member.linkname)
            if target not in self._regular:
                raise UnsafeArchive('hard link %s -> %s does not point at an earlier regular file' % (name, member.linkname))
            source = self._parent_fd(target, create=False)
            try:
                os.link(target.rsplit('/', 1)[-1], base, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(source)
            self._entries[name] = ('h', self._entries[target][1], 0, target)
            return
        if not member.isreg():
            raise UnsafeArchive('member %s is a device, FIFO or other special file: refused' % name)
        if self.max_bytes is not None and self.bytes + member.size > self.max_bytes:
            raise self._too_big(name)
        try:
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ELOOP):
                raise UnsafeArchive('member %s clashes with an earlier member' % name)
            raise
        digest = hashlib.sha256()

        def write(data):
            digest.update(data)
            write_all(fd, data)
        try:
            if member.sparse is None:
                size = self._reader.copy(member.size, write)
                if size != member.size:
                    raise tarfile.ReadError('unexpected end of data')
            else:
                # a sparse member: tarfile expands its map of data and holes
                size = copy_stream(archive.extractfile(member), write)
            self._owner(fd, member)
            os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
        self.bytes += size
        self._entries[name] = ('f', mode, size, DIGEST_PREFIX_FILE + digest.hexdigest())
        self._regular.add(name)
        self.files += 1


def _lexists(name, dir_fd):
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


class _SkimmingTarStream(TarStream):
    """A TarStream over a PipeSkimmer: the member data that tarfile seeks past is spliced away."""

    def __init__(self, skimmer):
        super(_SkimmingTarStream, self).__init__(skimmer)
        self._skimmer = skimmer

    def seek(self, pos):
        held = self._end - self._start
        if pos - self.pos <= held:
            return super(_SkimmingTarStream, self).seek(pos)
        gap = pos - self.pos - held
        self._start = self._end
        self.pos += held
        # short at the end of the stream, as TarStream.seek: tarfile then reports the truncation
        self.pos += self._skimmer.skip(gap)
        return self.pos


class CountingSink(object):
    """A consumer for a full read test: reads a stream to its end, counting bytes."""

    def __init__(self, tar=False):
        self.tar = tar
        self.bytes = 0
        self.members = 0

    def __call__(self, stream):
        if not self.tar:
            self.bytes = discard(stream)
            return self.bytes
        try:
            # headers are parsed as tarfile.open(mode='r|') does; member data is skipped, spliced into
            # /dev/null from a pipe, else read in large pieces into one reused buffer: every byte is
            # still decrypted and decompressed
            skimmer = PipeSkimmer.of(stream)
            if skimmer is None:
                archive, _reader = open_tar_stream(stream)
            else:
                archive = tarfile.TarFile(fileobj=_SkimmingTarStream(skimmer), mode='r')
            while True:
                member = archive.next()
                if member is None:
                    break
                # nothing looks back at earlier members: memory stays flat whatever their number
                del archive.members[:]
                _safe_name(member.name)
                self.members += 1
                if member.isreg():
                    self.bytes += member.size
        except tarfile.TarError as exc:
            raise RecoveryError('broken tar stream: %s' % exc)
        return self.bytes


class FileFollower(object):
    """A consumer for run_from_file(output=FD): hashes the file at path while the last stage writes it there.

    The stage writes the file itself (no pipe, no copy through Python); this reads each byte once,
    behind the writer, and stops the stages (UnsafeArchive) as soon as the file passes max_bytes.
    Write-back to disk starts every WRITEBACK_STEP bytes, so the final fsync has little left to wait
    for. With pipeline None the file is complete already.
    """

    POLL_SECONDS = 0.002

    def __init__(self, path, max_bytes=None):
        self.path = path
        self.max_bytes = max_bytes
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def _too_big(self, size):
        return self.max_bytes is not None and size > self.max_bytes

    def __call__(self, pipeline):
        writer = pipeline.stages[-1].proc if pipeline is not None else None
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        flushed = 0
        ended = writer is None
        self.bytes = 0
        with open(self.path, 'rb', buffering=0) as source:
            fd = source.fileno()
            while True:
                count = source.readinto(buf)
                if count:
                    self.bytes += count
                    if self._too_big(self.bytes):
                        break
                    self.sha256.update(view[:count])
                    if self.bytes - flushed >= WRITEBACK_STEP:
                        flushed = start_fd_writeback(fd, flushed, self.bytes)
                    continue
                if ended:
                    return self.bytes
                if self._too_big(os.fstat(fd).st_size):
                    break
                # the writer wrote all it had: once it has ended, one more read takes its last bytes
                ended = writer.poll() is not None
                if not ended:
                    time.sleep(self.POLL_SECONDS)
        raise UnsafeArchive('the payload expands beyond the %d bytes recorded at backup: refusing' % self.max_bytes)

    def digest(self):
        return DIGEST_PREFIX_FILE + self.sha256.hexdigest()
