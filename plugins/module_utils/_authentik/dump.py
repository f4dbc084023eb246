# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: an Authentik dump into an open backup set (database, files, ``.env``)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.idp.recovery.plugins.module_utils._postgres.payload import database_step, dump_compression, open_set
from ansible_collections.idp.recovery.plugins.module_utils._authentik.deployment import file_specs, host_paths
from ansible_collections.idp.recovery.plugins.module_utils._authentik.files import dump_env, dump_files
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    check_encryption_allowed,
    encrypt_stages,
    encryption_backend,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import database_from_params


def dump_authentik(params, check_mode=False):
    """What authentik_dump does: the database, then the file directories and the ``.env``, into ``params['set_dir']``."""
    set_dir = os.path.abspath(params['set_dir'])
    encryption = params['encryption'] or 'age'
    check_encryption_allowed(encryption, params['allow_unencrypted'])
    encrypt_options = dict(recipients=params['recipients'], recipients_file=params['recipients_file'],
                           passphrase=params['passphrase'], gpg_homedir=params['gpg_homedir'])
    backend = encryption_backend(encryption, **encrypt_options)
    compression = (params['compression'], params['compression_level'])
    # the database dump's default level is its own; the file archives keep the archive default
    compressor = dump_compression(*compression)
    # keys and levels are validated before anything is read or written
    encrypt_stages(compressor, backend)
    open_set(set_dir)
    specs = file_specs(params['files'], params['compose_dir'], params['files_container'])
    env_file = params['env_file']
    if not env_file and params['compose_dir'] and os.path.isfile(os.path.join(params['compose_dir'], '.env')):
        env_file = os.path.join(params['compose_dir'], '.env')
    if env_file and encryption == 'none':
        raise RecoveryError('the .env holds the secret key and database password: it is captured only '
                            'encrypted; choose an encryption other than none or leave env_file out')

    db, engine = database_from_params(params)
    result = {'changed': False, 'set_dir': set_dir}

    result['database'], metadata = database_step(
        db, set_dir, params['format'], backend, compressor, force=params['force'], check_mode=check_mode,
        snapshot=params['snapshot'])
    result['changed'] = result['database']['changed']
    result['authentik_version'] = (metadata or {}).get('version')

    if specs:
        engine = engine or (_docker_engine(params) if params['files_container'] else None)
        resolved = host_paths(specs, engine, params['files_container'])
        result['files'] = dump_files(set_dir, resolved, encryption, compression, encrypt_options, check_mode=check_mode)
        result['changed'] = result['changed'] or any(item['changed'] for item in result['files'].values())
    else:
        result['files'] = {}
    if env_file:
        result['env'] = dump_env(set_dir, env_file, backend, check_mode=check_mode)
        result['changed'] = result['changed'] or result['env']['changed']
    return result


def _docker_engine(params):
    from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
    return DockerEngine(params.get('docker_host'))
