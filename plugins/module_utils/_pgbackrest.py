# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: pgBackRest - configuration, operations and point-in-time restores.

pgBackRest itself does the work (continuous WAL archiving, full/differential/incremental backups,
``verify``, ``restore``); this module writes its configuration, runs it where the PostgreSQL
server runs and reads its JSON. A server runs either in a container (commands through the Docker
engine API's exec, as the operating system user ``postgres``) or on this host (as that user through
``runuser`` when the module runs as root). Both are a ``Host``: run a command, write a file, read a
file.

Secrets (repository cipher passphrase, S3 keys) are written only into the live server's
configuration file (mode 0640, owned by the server's operating system user) over the command's
standard input, never into an argument. A staging restore writes a configuration without them and
hands them to pgBackRest and to the staging server (whose ``restore_command`` runs pgBackRest) in
the environment (``PGBACKREST_REPO1_CIPHER_PASS`` ...), so that no file of a staging restore holds
a secret.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import grp
import json
import os
import posixpath
import pwd
import re
import subprocess
import time

from ansible_collections.idp.recovery.plugins.module_utils import _postgres
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, write_file_atomic
from ansible_collections.idp.recovery.plugins.module_utils._drill import parse_time

CONFIG_PATH = '/etc/pgbackrest/pgbackrest.conf'
LOG_PATH = '/var/log/pgbackrest'
DEFAULT_PGDATA = '/var/lib/postgresql/data'
SCRATCH_LABEL = 'io.idp-recovery.scratch'
CREATED_LABEL = 'io.idp-recovery.scratch.created'
PITR_LABEL = 'io.idp-recovery.pitr'
TARGET_TYPES = ('latest', 'immediate', 'time', 'name', 'lsn', 'xid')
BACKUP_TYPES = ('full', 'diff', 'incr')
SEGMENTS_PER_LOG = 0x100  # 16 MiB WAL segments: 256 per log file number
RESTORE_POINT_MAX = 63
# the repository options pgBackRest treats as secret: (option, parameter of repos[])
SECRET_OPTIONS = (('cipher-pass', 'cipher_pass'), ('s3-key', 's3_key'), ('s3-key-secret', 's3_key_secret'))
# where pgBackRest and PostgreSQL write in a staging container: a repository mounted read-only must not cover them
STAGING_WRITE_PATHS = ('/run/postgresql', '/tmp', '/var/spool/pgbackrest')
# a backup or restore of a large database runs for hours: the engine connection must not time out first
COMMAND_TIMEOUT = 24 * 3600

_STANZA_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_OPTION_RE = re.compile(r'^[a-z0-9][a-z0-9-]*$')
_LSN_RE = re.compile(r'^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$')
_SEGMENT_RE = re.compile(r'^[0-9A-F]{24}$')
_ERROR_RE = re.compile(r'(?:^|\s)(?:ERROR|ASSERT): \[(\d+)\]: (.*)$')
_WARN_RE = re.compile(r'(?:^|\s)WARN: (.*(?:\n {3,}\S.*)*)', re.M)
_GARBAGE_RE = re.compile(r'(found outside of section at line \d+):.*?(?= FormatError:| HINT:|\)$|$)')
_SET_RE = re.compile(r'restore backup set (\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?)')
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_REDO_DONE_RE = re.compile(r'redo done at ([0-9A-F]+/[0-9A-F]+)')
_STOP_RE = re.compile(r'recovery stopping (?:before|after|at) .*$')
_LAST_TX_RE = re.compile(r'last completed transaction was at log time (.+)$')
_FATAL_RE = re.compile(r'\b(FATAL|PANIC):\s+(.*)$')

_CIPHER_HINT = ('the repository cipher passphrase (cipher_pass) does not match the one the repository was '
                'created with, or the repository is not encrypted as configured')


# ---------------------------------------------------------------------------------------------
# module options

def repo_argument_spec():
    return dict(
        type=dict(type='str', choices=['posix', 's3'], default='posix'),
        path=dict(type='str', default='/var/lib/pgbackrest'),
        s3_bucket=dict(type='str'),
        s3_endpoint=dict(type='str'),
        s3_region=dict(type='str', default='us-east-1'),
        s3_key=dict(type='str', no_log=True),
        s3_key_secret=dict(type='str', no_log=True),
        s3_uri_style=dict(type='str', choices=['host', 'path'], default='host'),
        storage_port=dict(type='int'),
        storage_verify_tls=dict(type='bool', default=True),
        storage_ca=dict(type='str'),
        storage_ca_file=dict(type='str'),
        cipher_type=dict(type='str', choices=['aes-256-cbc', 'none'], default='aes-256-cbc'),
        cipher_pass=dict(type='str', no_log=True),
        retention_full=dict(type='int'),
        retention_full_type=dict(type='str', choices=['count', 'time']),
        retention_diff=dict(type='int'),
        options=dict(type='dict', default={}),
    )


def server_argument_spec():
    """Where the server runs and who pgBackRest runs as (doc fragment idp.recovery.pgbackrest)."""
    return dict(
        stanza=dict(type='str', required=True),
        container=dict(type='str'),
        docker_host=dict(type='str'),
        os_user=dict(type='str', default='postgres'),
        config_path=dict(type='path', default=CONFIG_PATH),
    )


def config_argument_spec():
    return dict(
        repos=dict(type='list', elements='dict', options=repo_argument_spec(), required=True),
        options=dict(type='dict', default={}),
        command_options=dict(type='dict', default={}),
        pg_path=dict(type='path'),
        pg_port=dict(type='int', default=5432),
        pg_user=dict(type='str', default='postgres'),
        pg_socket_path=dict(type='path'),
    )


def check_stanza(stanza):
    if not stanza or not _STANZA_RE.match(stanza):
        raise RecoveryError('stanza %r is not a valid stanza name (letters, digits, "_", "." and "-", starting with '
                            'a letter or digit)' % (stanza,))
    return stanza


# ---------------------------------------------------------------------------------------------
# configuration

def _value(value, what):
    if isinstance(value, bool):
        return 'y' if value else 'n'
    text = str(value)
    if not text.strip() or '\n' in text or '\r' in text or text != text.strip():
        raise RecoveryError('%s must be a non-empty value on one line without surrounding spaces' % what)
    return text


def _option_lines(options, what, prefix=''):
    lines = []
    for key in sorted(options or {}):
        if not _OPTION_RE.match(str(key)):
            raise RecoveryError('%s: %r is not a pgBackRest option name (lowercase letters, digits and "-")' % (what, key))
        lines.append('%s%s=%s' % (prefix, key, _value(options[key], '%s %s' % (what, key))))
    return lines


def ca_path(config_path, index, own=False):
    """The CA file of repository ``index``: beside the configuration, or with ``own`` named after it."""
    if own:
        return '%s.repo%d-ca.pem' % (config_path, index)
    return os.path.join(os.path.dirname(config_path), 'repo%d-ca.pem' % index)


def repo_lines(repo, index, config_path, secrets=True, own_ca=False):
    """The repoN-* lines of one repository (validated); without ``secrets`` the secret options are left out
    (see secret_env)."""
    n = 'repo%d-' % index
    what = 'repos[%d]' % (index - 1)
    lines = [n + 'type=' + repo['type'], n + 'path=' + _value(repo.get('path') or '/var/lib/pgbackrest', what + '.path')]
    if repo['type'] == 's3':
        for key in ('s3_bucket', 's3_endpoint', 's3_key', 's3_key_secret'):
            if not repo.get(key):
                raise RecoveryError('%s: an S3 repository needs %s' % (what, key))
        lines += [n + 's3-bucket=' + _value(repo['s3_bucket'], what + '.s3_bucket'),
                  n + 's3-endpoint=' + _value(repo['s3_endpoint'], what + '.s3_endpoint'),
                  n + 's3-region=' + _value(repo.get('s3_region') or 'us-east-1', what + '.s3_region'),
                  n + 's3-uri-style=' + (repo.get('s3_uri_style') or 'host')]
        key_lines = [n + 's3-key=' + _value(repo['s3_key'], what + '.s3_key'),
                     n + 's3-key-secret=' + _value(repo['s3_key_secret'], what + '.s3_key_secret')]
        if secrets:
            lines[-1:-1] = key_lines
        if repo.get('storage_port'):
            lines.append(n + 'storage-port=%d' % int(repo['storage_port']))
        if repo.get('storage_verify_tls') is False:
            lines.append(n + 'storage-verify-tls=n')
        if repo.get('storage_ca') and repo.get('storage_ca_file'):
            raise RecoveryError('%s: give storage_ca (the PEM text) or storage_ca_file (a path), not both' % what)
        if repo.get('storage_ca'):
            lines.append(n + 'storage-ca-file=' + ca_path(config_path, index, own_ca))
        elif repo.get('storage_ca_file'):
            lines.append(n + 'storage-ca-file=' + _value(repo['storage_ca_file'], what + '.storage_ca_file'))
    cipher = repo.get('cipher_type') or 'aes-256-cbc'
    if cipher != 'none':
        if not repo.get('cipher_pass'):
            raise RecoveryError('%s: an encrypted repository (cipher_type %s) needs cipher_pass; an unencrypted one '
                                'must say cipher_type: none' % (what, cipher))
        lines.append(n + 'cipher-type=' + cipher)
        passphrase = n + 'cipher-pass=' + _value(repo['cipher_pass'], what + '.cipher_pass')
        if secrets:
            lines.append(passphrase)
    for key, option in (('retention_full', 'retention-full'), ('retention_full_type', 'retention-full-type'),
                        ('retention_diff', 'retention-diff')):
        if repo.get(key) is not None:
            value = repo[key]
            if isinstance(value, int) and value < 1:
                raise RecoveryError('%s.%s must be 1 or more' % (what, key))
            lines.append('%s%s=%s' % (n, option, value))
    lines += _option_lines(repo.get('options'), what + '.options', prefix=n)
    return lines


def render_config(stanza, pg_path, repos, options=None, pg_port=5432, pg_user=None, pg_socket_path=None,
                  config_path=CONFIG_PATH, command_options=None, secrets=True, own_ca=False):
    """The text of pgbackrest.conf: [global] (repositories, options), [global:COMMAND] sections, then [stanza].

    Without ``secrets`` the passphrases and keys are left out: pgBackRest then takes them from the environment
    that secret_env() gives. With ``own_ca`` the CA files are named after config_path (see ca_path)."""
    check_stanza(stanza)
    if not repos:
        raise RecoveryError('at least one repository is needed')
    if not pg_path or not pg_path.startswith('/'):
        raise RecoveryError('pg_path (the data directory) must be an absolute path, got %r' % (pg_path,))
    lines = ['# Written by idp.recovery; changes here are overwritten on the next run.', '[global]']
    for index, repo in enumerate(repos, 1):
        lines += repo_lines(repo, index, config_path, secrets, own_ca)
    lines += _option_lines(options, 'options')
    for command in sorted(command_options or {}):
        if not _OPTION_RE.match(str(command)) or not isinstance(command_options[command], dict):
            raise RecoveryError('command_options: %r must be a pgBackRest command name with a mapping of options'
                                % (command,))
        lines += ['', '[global:%s]' % command]
        lines += _option_lines(command_options[command], 'command_options.%s' % command)
    lines += ['', '[%s]' % stanza, 'pg1-path=' + _value(pg_path, 'pg_path')]
    if pg_port and int(pg_port) != 5432:
        lines.append('pg1-port=%d' % int(pg_port))
    if pg_user:
        lines.append('pg1-user=' + _value(pg_user, 'pg_user'))
    if pg_socket_path:
        lines.append('pg1-socket-path=' + _value(pg_socket_path, 'pg_socket_path'))
    return '\n'.join(lines) + '\n'


def config_from_params(params, pg_path, config_path=None):
    return render_config(params['stanza'], pg_path, params['repos'], params.get('options'), params.get('pg_port'),
                         params.get('pg_user'), params.get('pg_socket_path'), config_path or params['config_path'],
                         params.get('command_options'))


def ca_files(params, config_path=None, own=False):
    """{path: PEM text} of the repositories whose CA is given as text."""
    found = {}
    for index, repo in enumerate(params['repos'], 1):
        if repo.get('storage_ca'):
            text = repo['storage_ca'] if repo['storage_ca'].endswith('\n') else repo['storage_ca'] + '\n'
            found[ca_path(config_path or params['config_path'], index, own)] = text
    return found


def secret_env(repos):
    """{PGBACKREST_REPOn_OPTION: value} of the repositories' secrets, for a configuration rendered without them.

    pgBackRest reads any option from a PGBACKREST_ variable (upper case, "_" for "-"), secret ones too."""
    env = {}
    for index, repo in enumerate(repos or [], 1):
        for option, key in SECRET_OPTIONS:
            if key == 'cipher_pass' and (repo.get('cipher_type') or 'aes-256-cbc') == 'none':
                continue
            if key != 'cipher_pass' and repo.get('type') != 's3':
                continue
            if repo.get(key):
                env['PGBACKREST_REPO%d_%s' % (index, option.upper().replace('-', '_'))] = \
                    _value(repo[key], 'repos[%d].%s' % (index - 1, key))
    return env


# ---------------------------------------------------------------------------------------------
# paths: the live server's data directory, repositories seen from a staging container

def normalise_path(path, what='path'):
    """An absolute path without ".", "..", repeated or trailing "/" (lexically, as posixpath.normpath)."""
    text = str(path or '')
    if not text.startswith('/'):
        raise RecoveryError('%s must be an absolute path, got %r' % (what, path))
    # normpath keeps a leading "//" (POSIX leaves its meaning open); on Linux it is "/"
    return '/' + posixpath.normpath(text).lstrip('/')


def path_within(path, parent):
    """Whether normalised ``path`` is ``parent`` or below it."""
    return path == parent or parent == '/' or path.startswith(parent.rstrip('/') + '/')


def plan_repo_mount(repo_path, mounts, pgdata, write_paths):
    """How a staging container reaches the posix repository at ``repo_path`` of the live container.

    ``mounts`` is the live container's inspect ``Mounts``; ``pgdata`` is the staging container's data directory
    (nothing may be mounted in or over it), ``write_paths`` the other directories it writes (its configuration,
    logs; nothing read-only may cover them). Returns
    ``{'access': 'mount', 'mount_type', 'source', 'destination', 'bind'}`` - the live container's volume or host
    directory mounted read-only at the same path - or ``{'access': 'copy', 'reason'}`` when the repository is
    only in the live container's own file system (or on a mount that cannot be shared without covering the
    staging container's own directories).
    """
    repo_path = normalise_path(repo_path, 'repository path')

    def covers(path):
        return path_within(path, pgdata) or any(path_within(own, path) for own in [pgdata] + list(write_paths))
    if covers(repo_path):
        raise RecoveryError('the posix repository %s overlaps the staging container\'s own directories (%s): it can be '
                            'neither mounted nor copied there; restore with data_dir where the live server runs, or '
                            'keep the repository at a path of its own' % (
                                repo_path, ', '.join([pgdata] + sorted(write_paths))), refused=True)
    found = None
    for mount in mounts or []:
        destination = mount.get('Destination')
        if not destination or not destination.startswith('/'):
            continue
        destination = normalise_path(destination)
        if path_within(repo_path, destination) and (found is None or len(destination) > len(found[0])):
            found = (destination, mount)
    if found is None:
        return {'access': 'copy', 'reason': 'in the container\'s own file system, on no volume or bind mount'}
    destination, mount = found
    kind = mount.get('Type')
    rest = repo_path[len(destination):].lstrip('/')
    if kind == 'bind' and mount.get('Source'):
        # exactly the repository's directory of the host
        source = posixpath.join(mount['Source'], rest) if rest else mount['Source']
        return {'access': 'mount', 'mount_type': 'bind', 'source': source, 'destination': repo_path,
                'bind': '%s:%s:ro' % (source, repo_path)}
    if kind == 'volume' and mount.get('Name'):
        # a volume mounts whole: at its own path, unless that covers the staging container's own directories
        if not covers(destination):
            return {'access': 'mount', 'mount_type': 'volume', 'source': mount['Name'], 'destination': destination,
                    'bind': '%s:%s:ro' % (mount['Name'], destination)}
        return {'access': 'copy', 'reason': 'on volume %s mounted at %s, which would cover the staging container\'s '
                                            'own directories' % (mount['Name'], destination)}
    return {'access': 'copy', 'reason': 'on a %s mount at %s that cannot be shared' % (kind or 'unknown', destination)}


def archive_command(stanza, config_path=CONFIG_PATH):
    command = 'pgbackrest'
    if config_path != CONFIG_PATH:
        command += ' --config=%s' % config_path
    return '%s --stanza=%s archive-push %%p' % (command, check_stanza(stanza))


# ---------------------------------------------------------------------------------------------
# info JSON

def _iso(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_info(text, stanza):
    """The interesting parts of ``pgbackrest info --output=json`` for one stanza."""
    try:
        data = json.loads(text)
    except ValueError:
        raise RecoveryError('pgbackrest info did not return JSON: %s' % text[:200])
    if not isinstance(data, list):
        raise RecoveryError('pgbackrest info returned %s, not a list of stanzas' % type(data).__name__)
    entry = next((item for item in data if isinstance(item, dict) and item.get('name') == stanza), None)
    if entry is None:
        raise RecoveryError('pgbackrest info knows no stanza %s' % stanza, stanza=stanza)
    status = entry.get('status') or {}
    backups = []
    for item in entry.get('backup') or []:
        stamp = item.get('timestamp') or {}
        archive = item.get('archive') or {}
        info = item.get('info') or {}
        lsn = item.get('lsn') or {}
        backups.append({
            'label': item.get('label'), 'type': item.get('type'), 'prior': item.get('prior'),
            'start': _iso(stamp.get('start')), 'stop': _iso(stamp.get('stop')),
            'start_epoch': stamp.get('start'), 'stop_epoch': stamp.get('stop'),
            'archive_start': archive.get('start'), 'archive_stop': archive.get('stop'),
            'lsn_start': lsn.get('start'), 'lsn_stop': lsn.get('stop'),
            'size': info.get('size'), 'delta': info.get('delta'),
            'repo_size': (info.get('repository') or {}).get('size'),
            'repo': (item.get('database') or {}).get('repo-key'), 'error': bool(item.get('error')),
        })
    backups.sort(key=lambda b: (b['stop_epoch'] or 0, b['label'] or ''))
    good = [b for b in backups if not b['error']]
    archives = [a for a in entry.get('archive') or [] if isinstance(a, dict)]
    dbs = entry.get('db') or []
    current_db = max((d.get('id') or 0 for d in dbs), default=None)
    current = [a for a in archives if (a.get('database') or {}).get('id') == current_db] or archives
    return {
        'stanza': stanza,
        'ok': status.get('code') == 0,
        'status_code': status.get('code'),
        'status_message': status.get('message'),
        'cipher': entry.get('cipher'),
        'repos': [{'key': r.get('key'), 'cipher': r.get('cipher'), 'status_code': (r.get('status') or {}).get('code'),
                   'status_message': (r.get('status') or {}).get('message')} for r in entry.get('repo') or []],
        'backups': backups,
        'latest_backup': good[-1]['label'] if good else None,
        'latest_backup_stop': good[-1]['stop'] if good else None,
        'latest_full': next((b['label'] for b in reversed(good) if b['type'] == 'full'), None),
        'archive_min': min((a.get('min') for a in current if a.get('min')), default=None),
        'archive_max': max((a.get('max') for a in current if a.get('max')), default=None),
        'backup_lock_held': bool(((status.get('lock') or {}).get('backup') or {}).get('held')),
    }


# ---------------------------------------------------------------------------------------------
# restore targets, WAL segments and the server log

def format_time(epoch):
    """A recovery_target_time PostgreSQL parses unambiguously (UTC, microseconds)."""
    when = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return when.strftime('%Y-%m-%d %H:%M:%S.%f+00')


def target_args(target_type, target=None, backup_set=None, exclusive=False, target_action='promote'):
    """(pgBackRest restore arguments, normalised target text) for a recovery target."""
    if target_type not in TARGET_TYPES:
        raise RecoveryError('target_type must be one of %s, got %r' % (', '.join(TARGET_TYPES), target_type))
    args = []
    if backup_set:
        if not re.match(r'^\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?$', backup_set):
            raise RecoveryError('backup_set %r is not a pgBackRest backup label (20260101-020304F, '
                                '20260101-020304F_20260102-020304D)' % backup_set)
        args.append('--set=%s' % backup_set)
    needs_target = target_type in ('time', 'name', 'lsn', 'xid')
    if needs_target and (target is None or not str(target).strip()):
        raise RecoveryError('target_type %s needs a target' % target_type)
    if not needs_target and target not in (None, ''):
        raise RecoveryError('target_type %s takes no target (got %r)' % (target_type, target))
    text = None
    if target_type == 'time':
        text = format_time(parse_time(target, 'target time'))
    elif target_type == 'name':
        text = str(target)
        if len(text.encode('utf-8')) > RESTORE_POINT_MAX or '\n' in text or '"' in text:
            raise RecoveryError('restore point name %r must be at most %d bytes, on one line, without double quotes'
                                % (text, RESTORE_POINT_MAX))
    elif target_type == 'lsn':
        text = str(target).strip()
        if not _LSN_RE.match(text):
            raise RecoveryError('target LSN %r is not of the form 0/3000028' % text)
        text = text.upper()
    elif target_type == 'xid':
        text = str(target).strip()
        if not text.isdigit():
            raise RecoveryError('target transaction ID %r is not a number' % text)
    if target_type == 'latest':
        args.append('--type=default')
        if exclusive:
            raise RecoveryError('exclusive applies only to a time, name, LSN or transaction target')
        return args, None
    args.append('--type=%s' % target_type)
    if text is not None:
        args.append('--target=%s' % text)
    if exclusive:
        if target_type in ('name', 'immediate'):
            raise RecoveryError('exclusive applies only to a time, LSN or transaction target')
        args.append('--target-exclusive')
    args.append('--target-action=%s' % target_action)
    return args, text


def next_segment(segment):
    """The WAL segment after ``segment`` (24 hex digits, 16 MiB segments)."""
    if not segment or not _SEGMENT_RE.match(segment):
        raise RecoveryError('%r is not a WAL segment name' % (segment,))
    tli, log, seg = int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16) + 1
    if seg >= SEGMENTS_PER_LOG:
        log, seg = log + 1, 0
    return '%08X%08X%08X' % (tli, log, seg)


def read_recovery_log(text):
    """What a server's log says about its recovery."""
    restored = _RESTORED_RE.findall(text)
    found = {'restored_segments': len(restored), 'last_restored_segment': restored[-1] if restored else None,
             'redo_done_lsn': None, 'stop_line': None, 'last_transaction_log_time': None, 'fatal': []}
    for line in text.splitlines():
        match = _REDO_DONE_RE.search(line)
        if match:
            found['redo_done_lsn'] = match.group(1)
        match = _STOP_RE.search(line)
        if match:
            found['stop_line'] = match.group(0).strip()
        match = _LAST_TX_RE.search(line)
        if match:
            found['last_transaction_log_time'] = match.group(1).strip()
        match = _FATAL_RE.search(line)
        if match:
            found['fatal'].append(match.group(2).strip())
    return found


def explain_recovery_failure(log, archive_max=None):
    """A clear message for a server that stopped during recovery (from read_recovery_log)."""
    fatal = log['fatal'][-1] if log['fatal'] else 'the server stopped during recovery'
    if 'recovery ended before configured recovery target was reached' in fatal or \
            'WAL ends before' in fatal or 'requested recovery stop point is before consistent' in fatal:
        last = log['last_restored_segment']
        missing = next_segment(last) if last else None
        where = ' (redo stopped at LSN %s)' % log['redo_done_lsn'] if log['redo_done_lsn'] else ''
        if missing and archive_max and archive_max[8:] > missing[8:]:
            return ('%s: the WAL archive has a gap - segment %s is missing from the repository after %s, while later '
                    'segments up to %s exist%s; the target lies beyond the gap and cannot be reached' % (
                        fatal, missing, last, archive_max, where)), missing
        if missing:
            return ('%s: the last WAL segment in the repository that recovery used is %s; %s is not there (the '
                    'archive ends at %s)%s - the target is later than anything archived' % (
                        fatal, last, missing, archive_max or 'unknown', where)), missing
    return fatal, None


def restored_backup_set(output):
    """The backup label ``pgbackrest restore --log-level-console=info`` says it restored."""
    labels = _SET_RE.findall(output)
    return labels[-1] if labels else None


def pgbackrest_errors(stderr):
    """[(code, message)] of the ERROR lines of pgBackRest's output (continuation lines joined)."""
    errors = []
    current = None
    for line in stderr.splitlines():
        match = _ERROR_RE.search(line)
        if match:
            current = [int(match.group(1)), match.group(2).strip()]
            errors.append(current)
        elif current is not None and line.startswith(' ') and line.strip():
            current[1] += ' ' + line.strip()
        else:
            current = None
    return [tuple(item) for item in errors]


def describe_failure(what, code, stderr):
    errors = pgbackrest_errors(stderr)
    detail = '; '.join('[%d] %s' % item for item in errors) if errors else (
        ' / '.join([line for line in stderr.splitlines() if line.strip()][-4:]) or 'exit code %s' % code)
    # a repository pgBackRest skipped says why in a warning (a wrong passphrase: "no backup set found")
    warnings = [' '.join(match.group(1).split()) for match in _WARN_RE.finditer(stderr)]
    if warnings:
        detail += ' (after: %s)' % '; '.join(warnings[-3:])
    # a wrong passphrase decrypts the info files to garbage: leave the garbage out of the message
    detail = _GARBAGE_RE.sub(r'\1', detail)
    hint = ''
    if 'CryptoError' in stderr or 'cipher header' in stderr or 'is or was the repo encrypted' in stderr or (
            'unable to load info file' in stderr and 'FormatError' in stderr):
        hint = ' - ' + _CIPHER_HINT
    return '%s failed (exit code %s): %s%s' % (what, code, detail, hint)


# ---------------------------------------------------------------------------------------------
# where commands run

class ContainerHost(object):
    """A container, through the Docker engine API."""

    def __init__(self, engine, container):
        self.engine = engine
        self.container = container
        self.where = 'container %s' % container

    def run(self, argv, user=None, env=None, input_data=None):
        code, out, err = self.engine.run(self.container, list(argv), env=env, user=user, input_data=input_data)
        return code, out.decode('utf-8', 'replace'), err

    def runner(self, user):
        return _postgres.ContainerRunner(self.engine, self.container, user, 'api')

    def write_file(self, path, data, mode=0o640, owner='postgres', group=None):
        code, _out, err = self.run([
            'sh', '-c', 'umask 022 && mkdir -p "$(dirname "$1")" && umask 077 && cat > "$1.idp-new" && chown "$2:$3" "$1.idp-new" && '
            'chmod "$4" "$1.idp-new" && mv "$1.idp-new" "$1"', 'sh', path, owner, group or owner, '%o' % mode],
            user='root', input_data=data)
        if code != 0:
            raise RecoveryError('cannot write %s in %s: %s' % (path, self.where, err), path=path)

    def read_file(self, path):
        code, out, _err = self.run(['sh', '-c', '[ -e "$1" ] || exit 3; cat "$1"', 'sh', path], user='root')
        if code == 3:
            return None
        if code != 0:
            raise RecoveryError('cannot read %s in %s' % (path, self.where), path=path)
        return out

    def ensure_dir(self, path, owner, mode=0o750):
        code, _out, err = self.run(['install', '-d', '-o', owner, '-g', owner, '-m', '%o' % mode, path], user='root')
        if code != 0:
            raise RecoveryError('cannot create %s in %s: %s' % (path, self.where, err), path=path)

    def path_facts(self, path):
        """(the path with every symbolic link resolved, "device:inode" of what it names or None when missing)."""
        code, out, err = self.run(['sh', '-c', 'realpath -m -- "$1" && { stat -L -c %d:%i -- "$1" 2>/dev/null || echo -; }',
                                   'sh', path], user='root')
        lines = out.splitlines()
        if code != 0 or len(lines) != 2 or not lines[0].startswith('/'):
            raise RecoveryError('cannot resolve %s in %s: %s' % (path, self.where, err or out), path=path)
        return lines[0], (None if lines[1] == '-' else lines[1])

    def remove_files(self, paths):
        """Remove files (missing ones are fine)."""
        if paths:
            self.run(['rm', '-f', '--'] + list(paths), user='root')


class LocalUserRunner(object):
    """Client tools on this host as ``user`` (through runuser when this process is root)."""

    def __init__(self, user):
        self.user = user
        self.where = 'this host'

    def spawn(self, argv, env=None, stdin=False, bulk_output=False):
        return _postgres.LocalProcess(as_user(self.user, argv, env), env=env, stdin=stdin)


def as_user(user, argv, env=None):
    """argv run as ``user``: unchanged when this process already is that user, else through runuser."""
    if not user or pwd.getpwuid(os.geteuid()).pw_name == user:
        return list(argv)
    if os.geteuid() != 0:
        raise RecoveryError('commands must run as %s, and this module runs as %s without the right to switch user '
                            '(become root or that user)' % (user, pwd.getpwuid(os.geteuid()).pw_name))
    keep = ['--whitelist-environment=%s' % ','.join(sorted(env))] if env else []
    return ['runuser', '-u', user] + keep + ['--'] + list(argv)


class LocalHost(object):
    """This host."""

    where = 'this host'

    def run(self, argv, user=None, env=None, input_data=None):
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            proc = subprocess.run(as_user(user, argv, env), input=input_data, capture_output=True, env=full_env,
                                  check=False)
        except OSError as exc:
            raise RecoveryError('cannot run %s on this host: %s' % (argv[0], exc.strerror or exc))
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace').strip()

    def runner(self, user):
        return LocalUserRunner(user)

    def write_file(self, path, data, mode=0o640, owner='postgres', group=None):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        write_file_atomic(path, data, mode)
        try:
            os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group or owner).gr_gid)
        except (KeyError, OSError) as exc:
            raise RecoveryError('cannot give %s to %s: %s' % (path, owner, exc), path=path)

    def read_file(self, path):
        try:
            with open(path, 'rb') as handle:
                return handle.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)

    def path_facts(self, path):
        try:
            found = os.stat(path)
        except OSError:
            return os.path.realpath(path), None
        return os.path.realpath(path), '%d:%d' % (found.st_dev, found.st_ino)

    def remove_files(self, paths):
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise RecoveryError('cannot remove %s: %s' % (path, exc.strerror or exc), path=path)

    def ensure_dir(self, path, owner, mode=0o750):
        if not os.path.isdir(path):
            os.makedirs(path, mode)
        try:
            os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(owner).gr_gid)
            os.chmod(path, mode)
        except (KeyError, OSError) as exc:
            raise RecoveryError('cannot prepare %s for %s: %s' % (path, owner, exc), path=path)


def host_from_params(params, engine=None):
    """(Host, DockerEngine or None) from container/docker_host."""
    if params.get('container'):
        from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
        engine = engine or DockerEngine(params.get('docker_host'), timeout=COMMAND_TIMEOUT)
        engine.require_running(params['container'])
        return ContainerHost(engine, params['container']), engine
    return LocalHost(), engine


# ---------------------------------------------------------------------------------------------
# pgBackRest and the server

class PgBackRest(object):
    """pgBackRest for one stanza, run as the server's operating system user on a Host."""

    def __init__(self, host, stanza, os_user='postgres', config_path=CONFIG_PATH, env=None):
        self.host = host
        self.stanza = check_stanza(stanza)
        self.os_user = os_user
        self.config_path = config_path
        # secrets of a configuration written without them (secret_env)
        self.env = dict(env or {})

    def argv(self, command, *args):
        base = ['pgbackrest']
        if self.config_path != CONFIG_PATH:
            base.append('--config=%s' % self.config_path)
        return base + ['--stanza=%s' % self.stanza] + list(args) + [command]

    def run(self, command, *args):
        """Run a command; return (stdout, stderr, seconds); a failure raises with pgBackRest's message."""
        started = time.monotonic()
        code, out, err = self.host.run(self.argv(command, *args), user=self.os_user, env=self.env or None)
        seconds = round(time.monotonic() - started, 3)
        if code != 0:
            text = '\n'.join(part for part in (out, err) if part)
            raise RecoveryError(describe_failure('pgbackrest %s for stanza %s in %s' % (
                command, self.stanza, self.host.where), code, text), stanza=self.stanza,
                pgbackrest_errors=[{'code': c, 'message': m} for c, m in pgbackrest_errors(text)])
        return out, err, seconds

    def info(self):
        out, _err, _seconds = self.run('info', '--output=json')
        return parse_info(out, self.stanza)

    def write_config(self, text, ca=None, mode=0o640):
        """Write the configuration (and CA files) when they differ; return True when something changed."""
        changed = False
        files = dict(ca or {})
        files[self.config_path] = text
        for path, data in sorted(files.items()):
            if self.host.read_file(path) == data:
                continue
            self.host.write_file(path, data.encode('utf-8'), mode, self.os_user)
            changed = True
        return changed


def server_database(host, os_user, user='postgres', port=None, database='postgres'):
    """A Database for SQL on the server over its Unix socket, as os_user."""
    db = _postgres.Database(host.runner(os_user), database, user)
    if port and int(port) != 5432:
        db.port = int(port)
        original = db.conn_args

        def conn_args(database=None):
            return original(database) + ['--port=%d' % int(port)]
        db.conn_args = conn_args
    return db
