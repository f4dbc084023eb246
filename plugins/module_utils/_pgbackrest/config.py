# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: pgbackrest.conf - the module options that describe it, its text, its secrets.

Secrets (repository cipher passphrase, S3 keys) are written only into the live server's configuration file
(mode 0640, owned by the server's operating system user) over the command's standard input, never into an
argument. A staging restore writes a configuration without them and hands them to pgBackRest and to the staging
server (whose ``restore_command`` runs pgBackRest) in the environment (``PGBACKREST_REPO1_CIPHER_PASS`` ...; see
secret_env), so that no file of a staging restore holds a secret.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import docker_argument_spec

CONFIG_PATH = '/etc/pgbackrest/pgbackrest.conf'
LOG_PATH = '/var/log/pgbackrest'
DEFAULT_REPO_PATH = '/var/lib/pgbackrest'
# the repository options pgBackRest treats as secret: (option, parameter of repos[])
SECRET_OPTIONS = (('cipher-pass', 'cipher_pass'), ('s3-key', 's3_key'), ('s3-key-secret', 's3_key_secret'))

_STANZA_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_OPTION_RE = re.compile(r'^[a-z0-9][a-z0-9-]*$')


# ---------------------------------------------------------------------------------------------
# module options

def repo_argument_spec():
    return dict(
        type=dict(type='str', choices=['posix', 's3'], default='posix'),
        path=dict(type='str', default=DEFAULT_REPO_PATH),
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
    """Where the server runs and who pgBackRest runs as (doc fragments idp.recovery.pgbackrest and idp.recovery.docker)."""
    spec = dict(
        stanza=dict(type='str', required=True),
        container=dict(type='str'),
        os_user=dict(type='str', default='postgres'),
        config_path=dict(type='path', default=CONFIG_PATH),
    )
    spec.update(docker_argument_spec())
    return spec


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


def log_path(options):
    """The log directory pgBackRest writes (its log-path option, or the default)."""
    return str((options or {}).get('log-path') or LOG_PATH)


# ---------------------------------------------------------------------------------------------
# the configuration file

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
    lines = [n + 'type=' + repo['type'], n + 'path=' + _value(repo.get('path') or DEFAULT_REPO_PATH, what + '.path')]
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


def archive_command(stanza, config_path=CONFIG_PATH):
    command = 'pgbackrest'
    if config_path != CONFIG_PATH:
        command += ' --config=%s' % config_path
    return '%s --stanza=%s archive-push %%p' % (command, check_stanza(stanza))
