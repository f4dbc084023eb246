# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: errors, file-system helpers and time stamps."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import errno
import json
import os
import shutil
import tempfile

CHUNK_SIZE = 1024 * 1024
STAMP_FORMAT = '%Y%m%dT%H%M%SZ'
DIR_MODE = 0o700
FILE_MODE = 0o600


class RecoveryError(Exception):
    """The one error type of this collection; modules turn it into fail_json()."""

    def __init__(self, msg, **details):
        super(RecoveryError, self).__init__(msg)
        self.msg = msg
        self.details = details


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(dt):
    return dt.strftime('%Y-%m-%dT%H:%M:%SZ')


def make_stamp(dt=None):
    return (dt or utcnow()).strftime(STAMP_FORMAT)


def parse_stamp(stamp):
    """Return an aware datetime for a set stamp, or None when the name is not a stamp."""
    try:
        return datetime.datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def release_line(pattern, version):
    """(first, second) number of ``version`` by ``pattern`` (a compiled regular expression whose first two
    groups are numbers), e.g. (2025, 10) or (1, 3); None when the version does not match."""
    match = pattern.match(str(version or '').strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path, mode=DIR_MODE):
    """Create path (and parents) with mode; return True when something was created."""
    if os.path.isdir(path):
        return False
    parent = os.path.dirname(os.path.abspath(path))
    if parent and not os.path.isdir(parent):
        ensure_dir(parent, mode)
    try:
        os.mkdir(path, mode)
    except OSError as exc:
        if exc.errno != errno.EEXIST or not os.path.isdir(path):
            raise RecoveryError('cannot create directory %s: %s' % (path, exc.strerror))
        return False
    os.chmod(path, mode)
    return True


def temp_path_beside(path, tag):
    """A unique hidden name in the directory of path, for writes that end with a rename."""
    directory, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.%s-' % (base, tag), dir=directory)
    os.close(fd)
    os.unlink(tmp)
    return tmp


def close_quietly(fd):
    """Close a file descriptor that may already be closed; returns None, for ``self._fd = close_quietly(self._fd)``."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def write_file_atomic(path, data, mode=FILE_MODE):
    """Write bytes to path through a temporary file, fsync and rename."""
    tmp = temp_path_beside(path, 'partial')
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        remove_quietly(tmp)
        raise RecoveryError('cannot write %s: %s' % (path, exc.strerror or exc), path=path)


def dump_json(data):
    return (json.dumps(data, indent=2, sort_keys=True) + '\n').encode('utf-8')


def load_json(path):
    try:
        with open(path, 'rb') as handle:
            return json.loads(handle.read().decode('utf-8'))
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)
    except ValueError as exc:
        raise RecoveryError('%s is not valid JSON: %s' % (path, exc), path=path)


def deep_merge(base, extra):
    """Merge extra into base: dicts recursively, lists concatenated, anything else replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        elif isinstance(value, list) and isinstance(base.get(key), list):
            base[key] = base[key] + value
        else:
            base[key] = value
    return base
