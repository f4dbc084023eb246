# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the engine of ``backup_retention``. The policy decides (``policy.decide``);
this applies it to a local root (one service at a time under its lock, never a set whose writer is
alive, never through a link) or to an offsite target (every service listed at once)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._retention import policy as _retention
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._storage.base import storage_argument_spec, storage_from_params
from ansible_collections.idp.recovery.plugins.module_utils._storage.sets import list_remote_sets, remove_remote_set


def _name(item):
    return '%s/%s' % (item['service'], item['stamp'])


def _remote(params, check_mode, storage, policy):
    """Decide and remove on an offsite target: every service listed at once."""
    found = list_remote_sets(storage, params['service'])
    by_service = {}
    for item in found:
        by_service.setdefault(item['service'], []).append(item)
    decided = []
    for service in sorted(by_service):
        decided.extend(_retention.decide(by_service[service], policy))
    removals = [item for item in decided if not item['keep']]
    if not check_mode:
        for item in _sorted(removals):
            remove_remote_set(storage, item['service'], item['stamp'])
    return decided, removals


def _local(params, check_mode, warn, storage, policy):
    """Decide and remove in a local root, one service at a time under its lock, never removing an
    incomplete set whose writer is alive and never following a service directory that is a link."""
    root = storage.root
    _backup_set.check_root(root)
    if params['service']:
        services = [params['service']]
    else:
        services = []
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if name.startswith('.') or not os.path.isdir(path):
                continue
            if os.path.islink(path):
                warn('%s is a symbolic link; retention never follows it and left it alone' % path)
                continue
            services.append(name)
    decided = []
    removals = []
    for service in services:
        service_dir = os.path.join(root, service)
        if not _backup_set.check_service_dir(service_dir):
            continue
        with _backup_set.ServiceLock(service_dir, create=not check_mode):
            found = list_remote_sets(storage, service)
            for item in found:
                if not item['complete']:
                    item['alive'], item['writer'] = _backup_set.writer_alive(
                        os.path.join(service_dir, item['stamp']), grace=params['incomplete_grace'])
            service_decided = _retention.decide(found, policy)
            service_removals = [item for item in service_decided if not item['keep']]
            if not check_mode:
                for item in _sorted(service_removals):
                    remove_remote_set(storage, item['service'], item['stamp'])
        decided.extend(service_decided)
        removals.extend(service_removals)
    return decided, removals


def _sorted(items):
    return sorted(items, key=lambda item: (item['stamp'], item['service']))


def apply_retention(params, check_mode, warn, diff=False):
    """What backup_retention does with its options: decide, remove (not in check mode), report."""
    policy = _retention.Policy(params['keep_last'], params['keep_daily'], params['keep_weekly'], params['keep_monthly'],
                               params['min_keep'])
    if params['service'] is not None:
        _backup_set.check_service_name(params['service'])
    if isinstance(params['incomplete_grace'], bool) or params['incomplete_grace'] < 0:
        raise RecoveryError('incomplete_grace must be a number of seconds of 0 or more, not %r' % params['incomplete_grace'])
    with storage_from_params(params) as storage:
        if storage.kind == 'local':
            decided, removals = _local(params, check_mode, warn, storage, policy)
        else:
            decided, removals = _remote(params, check_mode, storage, policy)
        removals = _sorted(removals)
    result = {
        'changed': bool(removals),
        'target': storage.describe(),
        'policy': policy.as_dict(),
        'sets': decided,
        'removed': [_name(item) for item in removals],
        'kept': [_name(item) for item in decided if item['keep']],
        'retries': storage.retried,
    }
    if diff:
        before = sorted(_name(item) for item in decided)
        after = sorted(_name(item) for item in decided if item['keep'])
        result['diff'] = {
            'before_header': storage.describe(),
            'after_header': storage.describe(),
            'before': ''.join(line + '\n' for line in before),
            'after': ''.join(line + '\n' for line in after),
        }
    return result


def retention_argument_spec():
    """The options of backup_retention: the storage options, the service and the policy."""
    argument_spec = storage_argument_spec()
    argument_spec.update(
        service=dict(type='str'),
        keep_last=dict(type='int', default=0),
        keep_daily=dict(type='int', default=0),
        keep_weekly=dict(type='int', default=0),
        keep_monthly=dict(type='int', default=0),
        min_keep=dict(type='int', default=1),
        incomplete_grace=dict(type='int', default=_backup_set.INCOMPLETE_GRACE_SECONDS),
    )
    return argument_spec
