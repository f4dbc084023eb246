# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the rsync storage backend (a directory on this host, or on an SSH host reached with a key)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import shutil
import subprocess
# These helpers run without an AnsibleModule at hand and stream (pipes between stages, secrets and
# data on stdin, outputs read as they come): AnsibleModule.run_command cannot do that.
# pylint: disable=ansible-bad-function
import tempfile

from ansible_collections.idp.recovery.plugins.module_utils._common import DIR_MODE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import (
    Storage,
    StorageError,
    find_binary,
    is_permanent,
    tail,
)


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
        self.binary = find_binary(params.get('rsync_binary'), 'rsync')
        self.host = params.get('ssh_host')
        self.user = params.get('ssh_user')
        self.root = self.target.rstrip('/') or '/'
        self.rsh = None
        self.control = None
        if self.host:
            ssh = [find_binary(None, 'ssh'), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
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
        telling = [line for line in errors if is_permanent(line)]
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
        transient = code in (10, 12, 23, 30, 35, 255) and not is_permanent(err)
        msg = '%s %s failed: %s' % (what, where, tail(reason, 400))
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
