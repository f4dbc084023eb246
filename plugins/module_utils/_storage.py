# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: offsite storage for backup sets.

Three backends behind one interface (:class:`Storage`):

* ``rclone``: any rclone remote (S3, SFTP, WebDAV, B2, ...). The remote comes from an rclone
  config file, or from options that become ``RCLONE_CONFIG_<NAME>_*`` variables in the
  environment of the rclone child only (never argv, never a file).
* ``rsync``: a directory on this host or on an SSH host, reached with a key.
* ``local``: a mounted directory.

The remote layout mirrors the local one: ``<target>/<service>/<stamp>/<files>``. A remote set is
complete when its ``MANIFEST.sha256`` exists; the manifest is always written last and removed
first.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import (
    check_service_name,
    MANIFEST,
    METADATA,
    is_complete,
    read_manifest,
)
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    CHUNK_SIZE,
    DIR_MODE,
    FILE_MODE,
    RecoveryError,
    ensure_dir,
    fsync_dir,
    load_json,
    parse_stamp,
    remove_quietly,
    temp_path_beside,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import copy_stream

BACKENDS = ('rclone', 'rsync', 'local')
VERIFY_MODES = ('auto', 'download')
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


def _find_binary(given, name):
    if given:
        if not os.access(given, os.X_OK):
            raise RecoveryError('%s is not an executable file' % given)
        return given
    found = shutil.which(name)
    if not found:
        raise RecoveryError('%s was not found on PATH; install it or give its path with %s_binary' % (name, name))
    return found


def _tail(text, limit=ERROR_TAIL):
    text = ' / '.join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= limit else '...' + text[-limit:]


def _is_permanent(text):
    return bool(_PERMANENT.search(text or ''))


def _short_rclone_message(msg):
    """The useful end of an rclone error (the S3 SDK wraps it in a lot of words)."""
    for marker in ('api error ', 'dial tcp ', 'ssh: '):
        index = msg.rfind(marker)
        if index != -1:
            return msg[index:]
    return msg


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


# ---------------------------------------------------------------------------------------------
# rclone

class RcloneStorage(Storage):
    kind = 'rclone'

    def __init__(self, params):
        super(RcloneStorage, self).__init__(params)
        self.binary = _find_binary(params.get('rclone_binary'), 'rclone')
        self.flags = list(params.get('rclone_flags') or [])
        self._hash_types = None
        self.env = dict(os.environ)
        for name in list(self.env):
            if name.startswith('RCLONE_CONFIG_'):
                del self.env[name]
        config = params.get('rclone_config')
        if config:
            if not os.path.isfile(config):
                raise RecoveryError('rclone_config %s does not exist' % config)
            self.env['RCLONE_CONFIG'] = config
        remote_type = params.get('rclone_remote_type')
        options = params.get('rclone_remote_options') or {}
        if options and not remote_type:
            raise RecoveryError('rclone_remote_options needs rclone_remote_type (for example s3, sftp, webdav or b2)')
        if remote_type:
            self._define_remote(remote_type, options)

    def _define_remote(self, remote_type, options):
        name, sep, _path = self.target.partition(':')
        if not sep or not re.match(r'^[A-Za-z0-9_]+$', name):
            raise RecoveryError('with rclone_remote_type, target must start with a remote name made of letters, digits and '
                                'underscores, then a colon, for example offsite:bucket/prefix')
        if not re.match(r'^[a-z0-9]+$', remote_type):
            raise RecoveryError('rclone_remote_type %r is not an rclone backend name' % remote_type)
        passwords = self._password_options(remote_type)
        prefix = 'RCLONE_CONFIG_%s_' % name.upper()
        self.env[prefix + 'TYPE'] = remote_type
        for key, value in options.items():
            if not re.match(r'^[A-Za-z0-9_]+$', key):
                raise RecoveryError('rclone_remote_options: %r is not an rclone option name' % key)
            if isinstance(value, bool):
                value = 'true' if value else 'false'
            elif value is None:
                continue
            value = str(value)
            if key.lower() in passwords:
                value = self._obscure(value)
            self.env[prefix + key.upper()] = value

    def _password_options(self, remote_type):
        """Options that rclone keeps obscured for this backend (from ``rclone config providers``)."""
        proc = subprocess.run([self.binary, 'config', 'providers'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=self.env, check=False)
        if proc.returncode != 0:
            raise RecoveryError('rclone config providers failed: %s' % _tail(proc.stderr.decode('utf-8', 'replace')))
        try:
            providers = json.loads(proc.stdout.decode('utf-8'))
        except ValueError:
            raise RecoveryError('rclone config providers printed no JSON')
        for provider in providers:
            if provider.get('Name') == remote_type or remote_type in (provider.get('Aliases') or []):
                return set(option['Name'].lower() for option in provider.get('Options') or [] if option.get('IsPassword'))
        raise RecoveryError('rclone has no backend called %r' % remote_type)

    def _obscure(self, value):
        # the value goes through stdin, never argv
        proc = subprocess.run([self.binary, 'obscure', '-'], input=value.encode('utf-8'), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self.env, check=False)
        if proc.returncode != 0:
            raise RecoveryError('rclone obscure failed: %s' % _tail(proc.stderr.decode('utf-8', 'replace')))
        return proc.stdout.decode('utf-8').strip()

    def location(self, rel=''):
        base = self.target
        if not rel:
            return base
        if base.endswith(':') or base.endswith('/'):
            return base + rel
        return base + '/' + rel

    def describe(self, rel=''):
        return self.location(rel)

    def _argv(self, *args):
        argv = [self.binary]
        argv.extend(args)
        # one attempt per call: the retries (with a visible, growing delay) are ours
        argv.extend(['--use-json-log', '--retries', '1', '--low-level-retries', '1',
                     '--contimeout', '%ds' % self.timeout, '--timeout', '%ds' % self.timeout])
        argv.extend(self.flags)
        return argv

    def _run(self, what, args, stdin_data=None, file=None, base=''):
        """Run rclone once; return (stdout bytes, log entries); raise StorageError on failure.

        ``base`` is the directory (relative to the target) that object names in rclone's log are relative to.
        """
        argv = self._argv(*args)
        try:
            proc = subprocess.run(argv, input=stdin_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=self.env, check=False)
        except OSError as exc:
            raise StorageError('cannot run %s: %s' % (self.binary, exc.strerror or exc))
        entries = _parse_json_log(proc.stderr.decode('utf-8', 'replace'))
        if proc.returncode != 0:
            raise self._error(what, proc.returncode, entries, file, base)
        return proc.stdout, entries

    def _error(self, what, code, entries, file=None, base=''):
        failed_objects = [(e.get('object'), e.get('msg', '')) for e in entries
                          if e.get('level') in ('error', 'critical', 'fatal') and e.get('object')]
        others = [e.get('msg', '') for e in entries if e.get('level') in ('error', 'critical', 'fatal', 'notice', '')
                  and not e.get('object') and 'Config file' not in e.get('msg', '')]
        text = ' '.join([msg for _obj, msg in failed_objects] + others)
        if failed_objects:
            obj, msg = failed_objects[0]
            file = obj
            reason = _short_rclone_message(msg)
        else:
            reason = _short_rclone_message(others[-1]) if others else 'rclone exited with %d' % code
        # 5: temporary error; 1 also covers a remote that could not be reached while rclone set it up
        transient = code in (1, 2, 5, 6) and not _is_permanent(text)
        if 'is a file not a directory' in reason:
            reason += ' (rclone also says this when the remote cannot be reached while it starts)'
        if file:
            where = self.describe((base + '/' + file) if base else file)
        else:
            where = self.describe(base)
        msg = '%s %s failed: %s' % (what, where, _tail(reason, 400))
        if _is_permanent(text) and re.search(r'403|401|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|'
                                             r'unable to authenticate|Unauthorized|Forbidden', text):
            msg += ' (the remote refused the credentials)'
        return StorageError(msg, transient=transient, file=file, rclone_exit_code=code)

    def hash_types(self):
        """The hashes the remote reports without reading data through this host (rclone backend features)."""
        if self._hash_types is None:
            out, _entries = self.retry('features', lambda: self._run('features of', ['backend', 'features', self.location()]))
            try:
                self._hash_types = [name.lower() for name in json.loads(out.decode('utf-8')).get('Hashes') or []]
            except (ValueError, AttributeError):
                self._hash_types = []
        return self._hash_types

    def list_files(self, rel='', hashes=False):
        args = ['lsjson', '-R', '--no-mimetype']
        best = None
        if hashes:
            best = next((name for name in HASH_PREFERENCE if name in self.hash_types()), None)
        if best:
            args += ['--hash', '--hash-type', best]
        else:
            args.append('--no-modtime')
        args.append(self.location(rel))
        try:
            out, _entries = self.retry('listing', lambda: self._run('listing of', args))
        except StorageError as exc:
            if exc.details.get('rclone_exit_code') == 3 or 'directory not found' in exc.msg:
                return {}, set()
            raise
        try:
            listing = json.loads(out.decode('utf-8') or '[]')
        except ValueError:
            raise StorageError('rclone lsjson printed no JSON for %s' % self.describe(rel))
        files = {}
        dirs = set()
        for entry in listing:
            path = entry.get('Path')
            if not path:
                continue
            if entry.get('IsDir'):
                dirs.add(path)
            else:
                found = dict((k.lower(), v) for k, v in (entry.get('Hashes') or {}).items() if v)
                files[path] = {'size': entry.get('Size'), 'hashes': found}
        return files, dirs

    def upload(self, local_dir, rel_dir, files, always=False, expected=None):
        if not files:
            return []
        listed = self.list_file(files)
        args = ['copy', local_dir, self.location(rel_dir), '--files-from-raw', listed, '-v',
                '--transfers', str(self.transfers), '--stats', '0']
        if always:
            args.append('--ignore-times')
        done = set()

        def action():
            _out, entries = self._run('upload to', args, base=rel_dir)
            for entry in entries:
                if entry.get('object') and entry.get('msg', '').find('Copied') != -1:
                    done.add(entry['object'])
            return sorted(done)

        return self.retry('upload', action)

    def download(self, rel, dest):
        self.retry('download', lambda: self._run('download of', ['copyto', self.location(rel), dest], file=rel))

    def read_file(self, rel):
        out, _entries = self.retry('download', lambda: self._run('download of', ['cat', self.location(rel)], file=rel))
        return out

    def download_sha256(self, rel_dir, files):
        if not files:
            return {}
        listed = self.list_file(files)
        args = ['hashsum', 'sha256', '--download', '--files-from-raw', listed, self.location(rel_dir),
                '--checkers', str(self.transfers)]
        out, _entries = self.retry('download', lambda: self._run('download of', args, base=rel_dir))
        found = {}
        for line in out.decode('utf-8', 'replace').splitlines():
            match = re.match(r'^([0-9a-f]{64})  (.+)$', line)
            if match:
                found[match.group(2)] = match.group(1)
        return found

    def remove_file(self, rel):
        def action():
            try:
                self._run('removal of', ['deletefile', self.location(rel)], file=rel)
            except StorageError as exc:
                if exc.details.get('rclone_exit_code') in (3, 4) or 'not found' in exc.msg:
                    return
                raise
        self.retry('removal', action)

    def remove_dir(self, rel_dir):
        def action():
            try:
                self._run('removal of', ['purge', self.location(rel_dir)])
            except StorageError as exc:
                if exc.details.get('rclone_exit_code') in (3, 4) or 'directory not found' in exc.msg:
                    return
                raise
        self.retry('removal', action)


def _parse_json_log(text):
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError()
        except ValueError:
            entry = {'level': '', 'msg': line}
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------------------------
# rsync

_LIST_LINE = re.compile(r'^([-dlpscb])[-rwxsStT]{9}\s+([\d,.]+)\s+\d{4}/\d\d/\d\d\s+\d\d:\d\d:\d\d\s(.*)$')
_RSYNC_QUOTED = re.compile(r'"([^"]+)"')


def _rsync_unescape(name):
    """rsync prints bytes it will not show (non-ASCII in the C locale) as \\#ooo."""
    raw = re.sub(br'\\#([0-7]{3})', lambda m: bytes(bytearray([int(m.group(1), 8)])), name.encode('utf-8'))
    return raw.decode('utf-8', 'replace')


class RsyncStorage(Storage):
    kind = 'rsync'

    def __init__(self, params):
        super(RsyncStorage, self).__init__(params)
        self.binary = _find_binary(params.get('rsync_binary'), 'rsync')
        self.host = params.get('ssh_host')
        self.user = params.get('ssh_user')
        self.root = self.target.rstrip('/') or '/'
        self.rsh = None
        self.control = None
        if self.host:
            ssh = [_find_binary(None, 'ssh'), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
                   '-o', 'ConnectTimeout=%d' % self.timeout, '-o', 'ServerAliveInterval=15']
            if params.get('ssh_port'):
                ssh += ['-p', str(params['ssh_port'])]
            if params.get('ssh_private_key'):
                if not os.path.isfile(params['ssh_private_key']):
                    raise RecoveryError('ssh_private_key %s does not exist' % params['ssh_private_key'])
                ssh += ['-i', params['ssh_private_key'], '-o', 'IdentitiesOnly=yes']
            if params.get('ssh_known_hosts'):
                ssh += ['-o', 'UserKnownHostsFile=%s' % params['ssh_known_hosts']]
            for part in ssh:
                if re.search(r'[\s\'"\\]', part):
                    raise RecoveryError('paths given to ssh through rsync must not contain spaces or quotes: %r' % part)
            self.ssh = ssh
            self.control = None
        elif params.get('ssh_user') or params.get('ssh_port') or params.get('ssh_private_key'):
            raise RecoveryError('ssh_user, ssh_port and ssh_private_key need ssh_host')

    def _destination(self):
        return '%s%s' % ((self.user + '@') if self.user else '', self.host)

    def _ensure_rsh(self):
        """One authenticated SSH connection per run, shared by every rsync call (ControlMaster)."""
        if not self.host or self.rsh is not None:
            return
        control = os.path.join(self.tmpdir(), 'cm')
        errors = os.path.join(self.tmpdir(), 'ssh-master.err')

        def start():
            with open(errors, 'wb') as err:
                # -f: the master goes to the background once authenticated; its output goes to a file,
                # never to a pipe that a later call would wait on
                proc = subprocess.run(self.ssh + ['-M', '-N', '-f', '-o', 'ControlPath=%s' % control,
                                                  self._destination()],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False)
            if proc.returncode != 0:
                with open(errors, 'rb') as err:
                    text = err.read().decode('utf-8', 'replace')
                raise self._failure('connection to', proc.returncode, text, None)

        self.retry('connection', start)
        self.control = control
        self.rsh = ' '.join(self.ssh + ['-o', 'ControlPath=%s' % control, '-o', 'ControlMaster=no'])

    def cleanup(self):
        if self.control is not None:
            subprocess.run(self.ssh + ['-o', 'ControlPath=%s' % self.control, '-O', 'exit', self._destination()],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            self.control = None
        super(RsyncStorage, self).cleanup()

    def path(self, rel=''):
        return self.root if not rel else (self.root.rstrip('/') + '/' + rel)

    def spec(self, rel='', slash=False):
        path = self.path(rel) + ('/' if slash else '')
        if not self.host:
            return path
        return '%s%s:%s' % ((self.user + '@') if self.user else '', self.host, path)

    def describe(self, rel=''):
        return 'rsync ' + self.spec(rel)

    def _run(self, what, args, file=None, missing_ok=False, base=''):
        self._ensure_rsh()
        argv = [self.binary]
        if self.rsh:
            argv += ['-e', self.rsh]
        argv += ['--timeout=%d' % self.timeout] + list(args)
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, LC_ALL='C'),
                                  check=False)
        except OSError as exc:
            raise StorageError('cannot run %s: %s' % (self.binary, exc.strerror or exc))
        if proc.returncode == 0:
            return proc.stdout.decode('utf-8', 'replace')
        err = proc.stderr.decode('utf-8', 'replace')
        if missing_ok and 'No such file or directory' in err and proc.returncode == 23:
            return None
        raise self._failure(what, proc.returncode, err, file, base)

    def _failure(self, what, code, err, file, base=''):
        errors = [line.strip() for line in err.splitlines() if line.strip() and not line.startswith('rsync error:')]
        telling = [line for line in errors if _is_permanent(line)]
        reason = ' / '.join(telling[:2]) if telling else (errors or [err.strip() or 'exit code %d' % code])[0]
        where = self.describe(base)
        if file is None:
            for line in errors:
                quoted = _RSYNC_QUOTED.search(line)
                if quoted:
                    file = quoted.group(1)
                    break
            inside = self.path(base).rstrip('/') + '/'
            if file and file.startswith(inside):
                file = file[len(inside):]
            # rsync names its temporary file (.name.XXXXXX) when a write fails
            if file:
                match = re.match(r'^(.*/)?\.(.+)\.[A-Za-z0-9]{6}$', file)
                if match:
                    file = (match.group(1) or '') + match.group(2)
        if file:
            where = self.describe((base + '/' + file) if base else file)
        transient = code in (10, 12, 23, 30, 35, 255) and not _is_permanent(err)
        msg = '%s %s failed: %s' % (what, where, _tail(reason, 400))
        if re.search(r'Permission denied \(publickey|Host key verification failed|host key is known', err):
            msg += ' (the SSH server refused the key or its host key is not known)'
        return StorageError(msg, transient=transient, file=file, rsync_exit_code=code)

    def list_files(self, rel='', hashes=False):
        args = ['-r', '--list-only', '--no-h', self.spec(rel, slash=True)]
        out = self.retry('listing', lambda: self._run('listing of', args, missing_ok=True))
        files = {}
        dirs = set()
        if out is None:
            return files, dirs
        for line in out.splitlines():
            match = _LIST_LINE.match(line)
            if not match:
                continue
            kind, size, name = match.group(1), match.group(2), _rsync_unescape(match.group(3))
            if name == '.':
                continue
            if kind == 'd':
                dirs.add(name.rstrip('/'))
            elif kind == '-':
                files[name] = {'size': int(re.sub(r'[,.]', '', size)), 'hashes': {}}
        return files, dirs

    def upload(self, local_dir, rel_dir, files, always=False, expected=None):
        if not files:
            return []
        listed = self.list_file(files, '\0')
        args = ['-rtp', '--from0', '--chmod=D0700,F0600', '--mkpath', '--files-from=%s' % listed, '--out-format=%n']
        if always:
            args.append('--ignore-times')
        args += [local_dir.rstrip('/') + '/', self.spec(rel_dir, slash=True)]
        out = self.retry('upload', lambda: self._run('upload to', args, base=rel_dir))
        return sorted(line for line in out.splitlines() if line and not line.endswith('/'))

    def download(self, rel, dest):
        self.retry('download', lambda: self._run('download of', [self.spec(rel), dest], file=rel))

    def read_file(self, rel):
        fd, local = tempfile.mkstemp(prefix='read-', dir=self.tmpdir())
        os.close(fd)
        self.retry('download', lambda: self._run('download of', [self.spec(rel), local], file=rel))
        with open(local, 'rb') as handle:
            data = handle.read()
        os.unlink(local)
        return data

    def checksum_differences(self, local_dir, rel_dir, files):
        """rsync --checksum in dry-run mode: the receiving side reads and checksums every file."""
        if not files:
            return []
        listed = self.list_file(files, '\0')
        args = ['-rc', '--from0', '--dry-run', '--files-from=%s' % listed, '--out-format=%i %n',
                local_dir.rstrip('/') + '/', self.spec(rel_dir, slash=True)]
        out = self.retry('verification', lambda: self._run('verification of', args, base=rel_dir))
        differing = []
        for line in out.splitlines():
            code, _sep, name = line.partition(' ')
            if len(code) >= 2 and code[1] == 'f' and name:
                differing.append(name)
        return sorted(differing)

    def download_sha256(self, rel_dir, files):
        raise RecoveryError('the rsync backend verifies with rsync --checksum')

    def _delete(self, parent_rel, includes, keep_dirs=()):
        """Delete the entries of parent_rel matched by includes, with rsync --delete from an empty tree."""
        source = tempfile.mkdtemp(prefix='empty-', dir=self.tmpdir())
        for name in keep_dirs:
            os.mkdir(os.path.join(source, name), DIR_MODE)
        args = ['-r', '--delete'] + ['--include=%s' % pattern for pattern in includes] + \
            ['--exclude=*', source + '/', self.spec(parent_rel, slash=True)]
        try:
            self.retry('removal', lambda: self._run('removal in', args, missing_ok=True))
        finally:
            shutil.rmtree(source, ignore_errors=True)

    def remove_file(self, rel):
        parent, _sep, name = rel.rpartition('/')
        grand, _sep, directory = parent.rpartition('/')
        if not directory or '/' in name:
            raise RecoveryError('cannot remove %s' % rel)
        self._delete(grand, ['/%s/' % _rsync_pattern(directory), '/%s/%s' % (_rsync_pattern(directory), _rsync_pattern(name))],
                     keep_dirs=[directory])

    def remove_dir(self, rel_dir):
        parent, _sep, name = rel_dir.rpartition('/')
        self._delete(parent, ['/%s/***' % _rsync_pattern(name)])


def _rsync_pattern(name):
    if re.search(r'[*?\[]', name):
        return re.sub(r'([*?\[\\])', r'\\\1', name)
    return name


# ---------------------------------------------------------------------------------------------
# local

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


def storage_from_params(params):
    backend = params['backend']
    if backend == 'rclone':
        return RcloneStorage(params)
    if backend == 'rsync':
        return RsyncStorage(params)
    if params.get('ssh_host'):
        raise RecoveryError('ssh_host is for backend=rsync')
    return LocalStorage(params)


# ---------------------------------------------------------------------------------------------
# backup sets on a storage target

def list_remote_sets(storage, service=None):
    """Every set under the target (optionally one service): dicts with service, stamp, complete,
    files, size_bytes; sorted by service, then stamp."""
    prefix = ''
    if service:
        _check_service(service)
        prefix = service
    files, dirs = storage.list_files(prefix)
    sets = {}

    def entry(svc, stamp):
        key = (svc, stamp)
        if key not in sets:
            sets[key] = {'service': svc, 'stamp': stamp, 'complete': False, 'files': 0, 'size_bytes': 0}
        return sets[key]

    def split(path):
        parts = path.split('/')
        if service:
            parts = [service] + parts
        return parts

    for path in dirs:
        parts = split(path)
        if len(parts) >= 2 and _is_set_name(parts[0], parts[1]):
            entry(parts[0], parts[1])
    for path, info in files.items():
        parts = split(path)
        if len(parts) >= 3 and _is_set_name(parts[0], parts[1]):
            item = entry(parts[0], parts[1])
            item['files'] += 1
            item['size_bytes'] += info.get('size') or 0
            if len(parts) == 3 and parts[2] == MANIFEST:
                item['complete'] = True
    return [sets[key] for key in sorted(sets)]


def _is_set_name(service, stamp):
    return bool(service) and not service.startswith('.') and parse_stamp(stamp) is not None


def _check_service(service):
    check_service_name(service)


def remove_remote_set(storage, service, stamp):
    """Remove a set: its manifest first (so that a half-removed set never looks complete), then the rest."""
    _check_service(service)
    if parse_stamp(stamp) is None:
        raise RecoveryError('%r is not a set stamp; refusing to remove it' % stamp)
    rel_dir = '%s/%s' % (service, stamp)
    storage.remove_file(rel_dir + '/' + MANIFEST)
    storage.remove_dir(rel_dir)


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
        _check_service(self.service)
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


def verify_remote(storage, local, files, mode='auto'):
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

    def record(results, seconds, method_mode):
        methods = sorted(set(item.get('method') for item in results if item.get('method')))
        result['verification'] = {'mode': method_mode, 'methods': methods, 'seconds': round(seconds, 3),
                                  'files': results, 'ok': not _failed(results)}

    if state is True:
        results, seconds = verify_remote(storage, local, local.files, verify)
        record(results, seconds, verify)
        failed = _failed(results)
        if not failed:
            return result
        if _damaged_locally(failed):
            raise _verification_error(storage, local, failed, result['verification'])
        bad = [item['path'] for item in failed]
        result['changed'] = True
        result['repaired'] = bad
        result['uploaded'] = bad + [MANIFEST]
        result['bytes'] = sum(local.sizes[rel] for rel in bad) + len(local.manifest)
        if check_mode:
            return result
        started = time.time()
        # the set stops looking complete before anything in it changes
        storage.remove_file(local.rel_dir + '/' + MANIFEST)
        storage.upload(local.path, local.rel_dir, bad, always=True, expected=local.expected)
        upload_seconds = time.time() - started
        to_check = bad
    else:
        always = state is False
        to_send = [rel for rel in local.files if always or rel not in remote_files or
                   remote_files[rel]['size'] != local.sizes[rel]]
        result['changed'] = True
        result['uploaded'] = to_send + [MANIFEST]
        result['bytes'] = sum(local.sizes[rel] for rel in to_send) + len(local.manifest)
        if check_mode:
            return result
        started = time.time()
        if state is False:
            storage.remove_file(local.rel_dir + '/' + MANIFEST)
        storage.upload(local.path, local.rel_dir, to_send, always=always, expected=local.expected)
        upload_seconds = time.time() - started
        to_check = local.files
    results, seconds = verify_remote(storage, local, to_check, verify)
    failed = _failed(results)
    if failed and not _damaged_locally(failed):
        # one more copy of what did not verify (a remote that only compares sizes kept a bad file)
        again = time.time()
        bad = [item['path'] for item in failed]
        storage.upload(local.path, local.rel_dir, bad, always=True, expected=local.expected)
        upload_seconds += time.time() - again
        more, extra = verify_remote(storage, local, bad, verify)
        by_path = dict((item['path'], item) for item in more)
        results = [by_path.get(item['path'], item) for item in results]
        seconds += extra
        failed = _failed(results)
    record(results, seconds, verify)
    if failed:
        raise _verification_error(storage, local, failed, result['verification'])
    again = time.time()
    _put_manifest(storage, local)
    upload_seconds += time.time() - again
    result['seconds'] = round(upload_seconds, 3)
    result['bytes_per_second'] = int(result['bytes'] / upload_seconds) if upload_seconds > 0 else 0
    return result


def verify_set(storage, local, verify='auto'):
    """Check the remote copy of local without changing anything; raise naming the first bad file."""
    remote_files = storage.list_files(local.rel_dir)[0]
    state = _manifest_state(storage, local, remote_files)
    if state is None:
        raise RecoveryError('%s is not a complete copy: it has no %s' % (storage.describe(local.rel_dir), MANIFEST),
                            file=MANIFEST)
    if state is False:
        raise RecoveryError('%s holds a different set: its manifest differs from the local one'
                            % storage.describe(local.rel_dir), file=MANIFEST)
    results, seconds = verify_remote(storage, local, local.files, verify)
    verification = {'mode': verify, 'methods': sorted(set(item.get('method') for item in results if item.get('method'))),
                    'seconds': round(seconds, 3), 'files': results, 'ok': not _failed(results)}
    failed = _failed(results)
    if failed:
        raise _verification_error(storage, local, failed, verification)
    return verification
