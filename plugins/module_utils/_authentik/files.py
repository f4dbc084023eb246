# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Authentik's file directories and ``.env`` into a backup set."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._archive import FileProducer
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    RecoveryError,
    dump_json,
    ensure_dir,
    remove_quietly,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, encryption_backend, payload_suffix
from ansible_collections.idp.recovery.plugins.module_utils._payload import create_payload
from ansible_collections.idp.recovery.plugins.module_utils._stream import run_to_file

ENV_PAYLOAD = 'dotenv'
FILES_DIR = 'files'


def dump_files(set_dir, specs, encryption, compression, encrypt_options, check_mode=False):
    """Each directory as a tar payload, or a <name>.skip marker when it is missing and optional."""
    results = {}
    for spec in specs:
        name = spec['name']
        src = spec.get('host_path')
        if not src or not os.path.isdir(src):
            why = ('%s is not mounted in the container' % spec['where']) if not src else ('%s does not exist' % src)
            if spec['required']:
                raise RecoveryError('files: %s is required but %s' % (name, why), name=name)
            marker = os.path.join(FILES_DIR, '%s.skip' % name)
            results[name] = {'skipped': True, 'reason': why, 'marker': marker,
                             'changed': not os.path.isfile(os.path.join(set_dir, marker))}
            if not check_mode and results[name]['changed']:
                ensure_dir(os.path.join(set_dir, FILES_DIR))
                write_file_atomic(os.path.join(set_dir, marker), dump_json({'name': name, 'skipped': why}))
                _backup_set.write_fragment(set_dir, 'authentik-files-' + name,
                                           {'authentik': {'files': {name: results[name]}}})
            continue
        suffix = payload_suffix(Compression(compression[0], compression[1]), encryption_backend(encryption, **encrypt_options))
        rel = '%s/%s.tar%s' % (FILES_DIR, name, suffix)
        result = create_payload(src, os.path.join(set_dir, rel), encryption, compression, check_mode=check_mode,
                                **encrypt_options)
        results[name] = {'payload': rel, 'changed': result['changed'], 'source': spec['where']}
        if not check_mode:
            results[name]['files'] = (result['payload'].get('source') or {}).get('files')
            _backup_set.write_fragment(set_dir, 'authentik-files-' + name,
                                       {'authentik': {'files': {name: {'payload': rel, 'source': spec['where']}}}})
    return results


def dump_env(set_dir, env_file, backend, check_mode=False):
    """The .env, encrypted only; its content and digest are never recorded or returned."""
    if backend.name == 'none':
        raise RecoveryError('the .env holds the secret key and database password: it is captured only encrypted; '
                            'set an encryption other than none or drop env_file')
    if not os.path.isfile(env_file):
        raise RecoveryError('env_file %s does not exist' % env_file, path=env_file)
    rel = ENV_PAYLOAD + payload_suffix(Compression('none'), backend)
    dest = os.path.join(set_dir, rel)
    if os.path.isfile(dest) and _backup_set.payload_info(set_dir, rel):
        return {'payload': rel, 'changed': False}
    if check_mode:
        return {'payload': rel, 'changed': True}
    producer = FileProducer(env_file)
    sha256, size = run_to_file(producer, encrypt_stages(Compression('none'), backend), dest)
    info = backend.public_description()
    info.update({'format': 'raw', 'compression': 'none', 'size': size, 'sha256': sha256, 'secret': True,
                 'source': {'type': 'file', 'path': env_file, 'bytes': producer.bytes}})
    try:
        _backup_set.write_fragment(set_dir, 'payload-' + rel, {'payloads': {rel: info}})
        _backup_set.write_fragment(set_dir, 'authentik-env', {'authentik': {'env': {'payload': rel}}})
    except RecoveryError:
        remove_quietly(dest)
        raise
    return {'payload': rel, 'changed': True}
