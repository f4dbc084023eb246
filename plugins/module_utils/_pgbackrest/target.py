# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: recovery targets - validated, normalised, and as ``pgbackrest restore`` arguments."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import parse_time

TARGET_TYPES = ('latest', 'immediate', 'time', 'name', 'lsn', 'xid')
RESTORE_POINT_MAX = 63

_LSN_RE = re.compile(r'^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$')


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
