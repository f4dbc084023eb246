# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: offsite storage for backup sets, the interface and its options.

Three backends behind one interface (:class:`Storage`), each in a file of its own:

* ``rclone``: any rclone remote (S3, SFTP, WebDAV, B2, ...). The remote comes from an rclone
  config file, or from options that become ``RCLONE_CONFIG_<NAME>_*`` variables in the
  environment of the rclone child only (never argv, never a file).
* ``rsync``: a directory on this host or on an SSH host, reached with a key.
* ``local``: a mounted directory.

The remote layout mirrors the local one: ``<target>/<service>/<stamp>/<files>``. A remote set is
complete when its ``MANIFEST.sha256`` exists; the manifest is always written last and removed
first (see ``sets`` and ``transfer``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import shutil
import tempfile
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import DIR_MODE, RecoveryError

BACKENDS = ('rclone', 'rsync', 'local')
MAX_BACKOFF = 60.0
HASH_PREFERENCE = ('sha256', 'sha1', 'md5')
ERROR_TAIL = 600

# Failures that another attempt will not fix: refused credentials or keys, unknown remotes,
# full or read-only file systems.
_PERMANENT = re.compile(
    r'AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidToken|ExpiredToken|\b40[13]\b|Unauthorized|Forbidden|'
    r'unable to authenticate|Permission denied|permission denied|Host key verification failed|host key is known|'
    r'host key mismatch|knownhosts|didn\'t find section in config|not found in config file|'
    r'couldn\'t find type|unknown backend|NoSuchBucket|No space left on device|Read-only file system|'
    r'Disk quota exceeded')


def storage_argument_spec():
    """Options shared by every module that talks to a storage target (doc fragment idp.recovery.storage)."""
    return dict(
        backend=dict(type='str', required=True, choices=list(BACKENDS)),
        target=dict(type='str', required=True),
        rclone_config=dict(type='path'),
        rclone_remote_type=dict(type='str'),
        rclone_remote_options=dict(type='dict', no_log=True),
        rclone_flags=dict(type='list', elements='str', default=[]),
        rclone_binary=dict(type='path'),
        ssh_host=dict(type='str'),
        ssh_user=dict(type='str'),
        ssh_port=dict(type='int'),
        ssh_private_key=dict(type='path', no_log=False),
        ssh_known_hosts=dict(type='path'),
        rsync_binary=dict(type='path'),
        transfers=dict(type='int', default=4),
        retries=dict(type='int', default=3),
        retry_delay=dict(type='float', default=2.0),
        timeout=dict(type='int', default=60),
    )


class StorageError(RecoveryError):
    """A storage operation failed. ``transient`` failures are retried; ``file`` names the file."""

    def __init__(self, msg, transient=False, file=None, **details):
        if file is not None:
            details['file'] = file
        super(StorageError, self).__init__(msg, **details)
        self.transient = transient
        self.file = file


def find_binary(given, name):
    if given:
        if not os.access(given, os.X_OK):
            raise RecoveryError('%s is not an executable file' % given)
        return given
    found = shutil.which(name)
    if not found:
        raise RecoveryError('%s was not found on PATH; install it or give its path with %s_binary' % (name, name))
    return found


def tail(text, limit=ERROR_TAIL):
    text = ' / '.join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else '...' + text[-limit:]


def is_permanent(text):
    return bool(_PERMANENT.search(text or ''))


class Storage(object):
    """One storage target; paths given to the methods are relative to the target, with ``/``."""

    kind = None

    def __init__(self, params):
        self.target = params['target']
        self.attempts = max(1, (params.get('retries') or 0) + 1)
        self.retry_delay = max(0.0, params.get('retry_delay') or 0.0)
        self.timeout = max(1, params.get('timeout') or 60)
        self.transfers = max(1, params.get('transfers') or 1)
        self.retried = []
        self.sleep = time.sleep
        self._tmpdir = None

    # -- helpers ------------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cleanup()

    def tmpdir(self):
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix='idp-recovery-storage-')
            os.chmod(self._tmpdir, DIR_MODE)
        return self._tmpdir

    def cleanup(self):
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def list_file(self, files, separator='\n'):
        """A file holding the relative paths, one per separator (for --files-from)."""
        fd, path = tempfile.mkstemp(prefix='files-', dir=self.tmpdir())
        with os.fdopen(fd, 'wb') as handle:
            for rel in files:
                handle.write(rel.encode('utf-8') + separator.encode('ascii'))
        return path

    def retry(self, what, action):
        """Run action() until it succeeds, a failure is permanent, or the attempts are used up."""
        attempt = 1
        earlier = []
        while True:
            try:
                return action()
            except StorageError as exc:
                if not exc.transient or attempt >= self.attempts:
                    if attempt > 1:
                        named = next((e for e in earlier if e.file), None)
                        extra = ''
                        if exc.file is None and named is not None:
                            # name the file that was being copied when the trouble began
                            exc.file = named.file
                            exc.details['file'] = named.file
                            extra = '; the first attempt failed with: %s' % named.msg
                        exc.msg = '%s (gave up after %d attempts%s)' % (exc.msg, attempt, extra)
                        exc.args = (exc.msg,)
                    raise
                earlier.append(exc)
                delay = min(self.retry_delay * (2 ** (attempt - 1)), MAX_BACKOFF)
                self.retried.append({'operation': what, 'attempt': attempt, 'error': exc.msg, 'delay': delay})
                self.sleep(delay)
                attempt += 1

    def describe(self, rel=''):
        """Where rel lives, for messages and results (never a secret)."""
        raise NotImplementedError()

    # -- the interface ----------------------------------------------------------------------

    def list_files(self, rel='', hashes=False):
        """(files, dirs) below rel, recursively: files maps path -> {'size', 'hashes'}; dirs is a set."""
        raise NotImplementedError()

    def upload(self, local_dir, rel_dir, files, always=False, expected=None):
        """Copy files (relative to local_dir) to rel_dir; return the paths that were copied."""
        raise NotImplementedError()

    def download(self, rel, dest):
        """Copy one remote file (relative to the target) to the local path dest."""
        raise NotImplementedError

    def read_file(self, rel):
        """The bytes of one small remote file."""
        raise NotImplementedError()

    def download_sha256(self, rel_dir, files):
        """Read every file back and return {path: sha256}."""
        raise NotImplementedError()

    def remove_file(self, rel):
        raise NotImplementedError()

    def remove_dir(self, rel_dir):
        raise NotImplementedError()

    # rsync only: the paths whose content differs from the local files
    def checksum_differences(self, local_dir, rel_dir, files):
        raise NotImplementedError()


def storage_from_params(params):
    """The storage target the options of storage_argument_spec() name; use it as a context manager, which cleans up."""
    # the backends import this file, so they are imported here, when one is needed
    from ansible_collections.idp.recovery.plugins.module_utils._storage.rclone import RcloneStorage
    from ansible_collections.idp.recovery.plugins.module_utils._storage.rsync import RsyncStorage
    from ansible_collections.idp.recovery.plugins.module_utils._storage.local import LocalStorage

    backend = params['backend']
    if backend == 'rclone':
        return RcloneStorage(params)
    if backend == 'rsync':
        return RsyncStorage(params)
    if params.get('ssh_host'):
        raise RecoveryError('ssh_host is for backend=rsync')
    return LocalStorage(params)
