# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the local storage backend (a directory of this host, typically a mounted file system)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import os
import shutil

from ansible_collections.idp.recovery.plugins.module_utils._common import (
    FILE_MODE,
    RecoveryError,
    ensure_dir,
    fsync_dir,
    remove_quietly,
    temp_path_beside,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import copy_stream
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import Storage, StorageError


class LocalStorage(Storage):
    kind = 'local'

    def __init__(self, params):
        super(LocalStorage, self).__init__(params)
        self.root = os.path.abspath(self.target)
        if not os.path.isdir(self.root):
            raise RecoveryError('target %s is not a directory (is the file system mounted?)' % self.root)

    def path(self, rel=''):
        return os.path.join(self.root, *rel.split('/')) if rel else self.root

    def describe(self, rel=''):
        return self.path(rel)

    def list_files(self, rel='', hashes=False):
        base = self.path(rel)
        files = {}
        dirs = set()
        if not os.path.isdir(base):
            return files, dirs
        for current, subdirs, names in os.walk(base):
            prefix = os.path.relpath(current, base)
            prefix = '' if prefix == '.' else prefix.replace(os.sep, '/') + '/'
            for name in subdirs:
                dirs.add(prefix + name)
            for name in names:
                try:
                    size = os.lstat(os.path.join(current, name)).st_size
                except OSError:
                    continue
                files[prefix + name] = {'size': size, 'hashes': {}}
        return files, dirs

    def download(self, rel, dest):
        source = self.path(rel)
        try:
            with open(source, 'rb') as reader:
                with open(dest, 'wb') as writer:
                    copy_stream(reader, writer.write)
                    writer.flush()
                    os.fsync(writer.fileno())
        except (OSError, IOError) as exc:
            raise StorageError('cannot read %s: %s' % (source, exc.strerror or exc), file=rel)

    def upload(self, local_dir, rel_dir, files, always=False, expected=None):
        done = []
        for rel in files:
            dest = self.path(rel_dir + '/' + rel)
            self.retry('upload', lambda rel=rel, dest=dest: self._copy(os.path.join(local_dir, rel), dest, rel,
                                                                       (expected or {}).get(rel)))
            done.append(rel)
        if done:
            fsync_dir(self.path(rel_dir))
        return done

    def _copy(self, src, dest, rel, expected):
        try:
            ensure_dir(os.path.dirname(dest))
        except RecoveryError as exc:
            raise StorageError(exc.msg, file=rel)
        tmp = temp_path_beside(dest, 'partial')
        digest = hashlib.sha256()
        try:
            with open(src, 'rb', buffering=0) as source:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                try:
                    def write(data):
                        digest.update(data)
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                    copy_stream(source, write)
                    os.fsync(fd)
                    _drop_cache(fd)
                finally:
                    os.close(fd)
            if expected and digest.hexdigest() != expected:
                raise StorageError('the local file %s does not match the manifest (expected %s, read %s); the local set is '
                                   'damaged' % (src, expected, digest.hexdigest()), file=rel)
            os.rename(tmp, dest)
        except (OSError, IOError) as exc:
            remove_quietly(tmp)
            transient = exc.errno in (errno.EIO, errno.EAGAIN, errno.EINTR)
            raise StorageError('copy of %s to %s failed: %s' % (rel, dest, exc.strerror or exc), transient=transient,
                               file=rel)
        except BaseException:
            remove_quietly(tmp)
            raise

    def read_file(self, rel):
        try:
            with open(self.path(rel), 'rb') as handle:
                return handle.read()
        except (OSError, IOError) as exc:
            raise StorageError('cannot read %s: %s' % (self.path(rel), exc.strerror or exc), file=rel)

    def download_sha256(self, rel_dir, files):
        found = {}
        for rel in files:
            path = self.path(rel_dir + '/' + rel)
            digest = hashlib.sha256()
            try:
                with open(path, 'rb', buffering=0) as handle:
                    _drop_cache(handle.fileno())
                    copy_stream(handle, digest.update)
            except (OSError, IOError) as exc:
                raise StorageError('cannot read %s: %s' % (path, exc.strerror or exc), file=rel)
            found[rel] = digest.hexdigest()
        return found

    def remove_file(self, rel):
        path = self.path(rel)
        try:
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StorageError('cannot remove %s: %s' % (path, exc.strerror), file=rel)

    def remove_dir(self, rel_dir):
        path = self.path(rel_dir)
        if os.path.islink(path):
            raise StorageError('%s is a symbolic link; refusing to remove it' % path)
        if os.path.isdir(path):
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise StorageError('cannot remove %s: %s' % (path, exc.strerror or exc))


def _drop_cache(fd):
    """Ask the kernel to forget cached pages, so that a read-back reads the device."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass
