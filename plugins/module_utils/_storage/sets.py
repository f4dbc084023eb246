# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the backup sets on a storage target, listed and removed.

A remote set ``<target>/<service>/<stamp>/`` is complete when its ``MANIFEST.sha256`` exists; a set is
removed manifest first, so that a half-removed set never looks complete."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import MANIFEST, check_service_name
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, parse_stamp


def list_remote_sets(storage, service=None):
    """Every set under the target (optionally one service): dicts with service, stamp, complete,
    files, size_bytes; sorted by service, then stamp."""
    prefix = ''
    if service:
        check_service_name(service)
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


def remove_remote_set(storage, service, stamp):
    """Remove a set: its manifest first (so that a half-removed set never looks complete), then the rest."""
    check_service_name(service)
    if parse_stamp(stamp) is None:
        raise RecoveryError('%r is not a set stamp; refusing to remove it' % stamp)
    rel_dir = '%s/%s' % (service, stamp)
    storage.remove_file(rel_dir + '/' + MANIFEST)
    storage.remove_dir(rel_dir)
