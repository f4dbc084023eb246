# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the rclone storage backend (any rclone remote: S3, SFTP, WebDAV, B2, ...).

The remote comes from an rclone config file, or from options that become ``RCLONE_CONFIG_<NAME>_*``
variables in the environment of the rclone child only (never argv, never a file)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import subprocess
# These helpers run without an AnsibleModule at hand and stream (pipes between stages, secrets and
# data on stdin, outputs read as they come): AnsibleModule.run_command cannot do that.
# pylint: disable=ansible-bad-function

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import (
    HASH_PREFERENCE,
    Storage,
    StorageError,
    find_binary,
    is_permanent,
    tail,
)


class RcloneStorage(Storage):
    kind = 'rclone'

    def __init__(self, params):
        super(RcloneStorage, self).__init__(params)
        self.binary = find_binary(params.get('rclone_binary'), 'rclone')
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
            raise RecoveryError('rclone config providers failed: %s' % tail(proc.stderr.decode('utf-8', 'replace')))
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
            raise RecoveryError('rclone obscure failed: %s' % tail(proc.stderr.decode('utf-8', 'replace')))
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
        transient = code in (1, 2, 5, 6) and not is_permanent(text)
        if 'is a file not a directory' in reason:
            reason += ' (rclone also says this when the remote cannot be reached while it starts)'
        if file:
            where = self.describe((base + '/' + file) if base else file)
        else:
            where = self.describe(base)
        msg = '%s %s failed: %s' % (what, where, tail(reason, 400))
        if is_permanent(text) and re.search(r'403|401|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|'
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


def _short_rclone_message(msg):
    """The useful end of an rclone error (the S3 SDK wraps it in a lot of words)."""
    for marker in ('api error ', 'dial tcp ', 'ssh: '):
        index = msg.rfind(marker)
        if index != -1:
            return msg[index:]
    return msg


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
