# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: where an Authentik deployment keeps what is backed up.

Its app containers and their health endpoint, and its file directories (media or data, custom
templates, certificates, blueprints) on the host or as container paths resolved through mounts.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

DEFAULT_APP_CONTAINERS = ['authentik-server', 'authentik-worker']
DEFAULT_HEALTH_PORT = 9000
HEALTH_PATH = '/-/health/ready/'

# host directories of a compose deployment (FACTS: up to 2025.8 media, from 2025.12 data)
DEFAULT_FILES = [
    ('data', 'data'),
    ('media', 'media'),
    ('custom-templates', 'custom-templates'),
    ('certs', 'certs'),
    ('blueprints', 'blueprints'),
]
# the same directories as container paths, resolved through a container's mounts
DEFAULT_CONTAINER_FILES = [
    ('data', '/data'),
    ('media', '/media'),
    ('custom-templates', '/templates'),
    ('certs', '/certs'),
    ('blueprints', '/blueprints'),
]


def file_specs(files, compose_dir, files_container):
    """The file directories to capture or restore: [{name, path|container_path, required}]."""
    if files:
        specs = []
        seen = set()
        for item in files:
            name = item.get('name')
            if not name or not re.match(r'^[A-Za-z0-9][A-Za-z0-9._-]*$', name):
                raise RecoveryError('files: %r is not a valid name (letters, digits, ".", "_", "-")' % (name,))
            if name in seen:
                raise RecoveryError('files: the name %s appears twice' % name)
            seen.add(name)
            if bool(item.get('path')) == bool(item.get('container_path')):
                raise RecoveryError('files: %s needs exactly one of path or container_path' % name)
            if item.get('container_path') and not files_container:
                raise RecoveryError('files: %s has a container_path; give files_container' % name)
            specs.append({'name': name, 'path': item.get('path'), 'container_path': item.get('container_path'),
                          'required': bool(item.get('required'))})
        return specs
    if compose_dir:
        return [{'name': name, 'path': os.path.join(compose_dir, sub), 'container_path': None, 'required': False}
                for name, sub in DEFAULT_FILES]
    if files_container:
        return [{'name': name, 'path': None, 'container_path': cpath, 'required': False}
                for name, cpath in DEFAULT_CONTAINER_FILES]
    return []


def resolve_mount(container_info, container_path):
    """The host path behind a container path, through the container's mounts (or None)."""
    best = None
    for mount in container_info.get('Mounts') or []:
        dest = (mount.get('Destination') or '').rstrip('/') or '/'
        if container_path == dest or container_path.startswith(dest.rstrip('/') + '/'):
            if best is None or len(dest) > len(best[0]):
                best = (dest, mount.get('Source'))
    if best is None or not best[1]:
        return None
    rest = container_path[len(best[0]):].lstrip('/')
    return os.path.join(best[1], rest) if rest else best[1]


def host_paths(specs, engine, files_container):
    """Attach the host path of each spec (resolving container paths through the mounts)."""
    info = engine.inspect(files_container) if files_container and any(s['container_path'] for s in specs) else None
    resolved = []
    for spec in specs:
        item = dict(spec)
        if spec['container_path']:
            item['host_path'] = resolve_mount(info, spec['container_path'])
            item['where'] = '%s:%s' % (files_container, spec['container_path'])
        else:
            item['host_path'] = spec['path']
            item['where'] = spec['path']
        resolved.append(item)
    return resolved
