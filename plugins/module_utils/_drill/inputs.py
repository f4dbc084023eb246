# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the inputs of a restore drill checked and normalised, and the report name."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import math
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import is_number, is_stamp, parse_time
from ansible_collections.idp.recovery.plugins.module_utils._drill.throughput import STOCK_STEPS

NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$')
RESERVED_NAMES = ('latest',)


def _text(value, what, required=False):
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RecoveryError('%s is required' % what)
        return None
    if isinstance(value, (dict, list)):
        raise RecoveryError('%s must be a string, got %s' % (what, type(value).__name__))
    return value if isinstance(value, str) else str(value)


def _bool(value, what, default):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ('yes', 'true', 'on', '1', 'y'):
        return True
    if isinstance(value, str) and value.strip().lower() in ('no', 'false', 'off', '0', 'n'):
        return False
    if is_number(value) and value in (0, 1):
        return bool(value)
    raise RecoveryError('%s must be true or false, got %r' % (what, value))


def _seconds(value, what):
    if is_number(value):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise RecoveryError('%s must be a number of seconds, got %r' % (what, value))
    else:
        raise RecoveryError('%s must be a number of seconds, got %r' % (what, value))
    if math.isnan(result) or math.isinf(result) or result < 0:
        raise RecoveryError('%s must be a finite, non-negative number of seconds, got %r' % (what, value))
    return result


def list_of_dicts(value, what):
    """value (a list of dicts, or None for none) checked."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise RecoveryError('%s must be a list, got %s' % (what, type(value).__name__))
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise RecoveryError('%s[%d] must be a dict, got %s' % (what, index, type(item).__name__))
    return value


def _normalise_step(step, what):
    detail = step.get('detail')
    if detail is not None and not isinstance(detail, dict):
        raise RecoveryError('%s.detail must be a dict, got %s' % (what, type(detail).__name__))
    return {
        'name': _text(step.get('name'), what + '.name', required=True),
        'seconds': _seconds(step.get('seconds'), what + '.seconds'),
        'ok': _bool(step.get('ok'), what + '.ok', True),
        'error': _text(step.get('error'), what + '.error'),
        'detail': detail or {},
        'bytes': _count(step.get('bytes'), what + '.bytes'),
        'items': _count(step.get('items'), what + '.items'),
        'items_kind': _text(step.get('items_kind'), what + '.items_kind'),
        'benchmark': _benchmark_step(step.get('benchmark'), what + '.benchmark'),
    }


def _count(value, what):
    """A count of bytes or items (int), or None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if is_number(value) and not math.isnan(value) and not math.isinf(value) and value >= 0 and value == int(value):
        return int(value)
    raise RecoveryError('%s must be a whole number of at least 0, got %r' % (what, value))


def _benchmark_step(value, what):
    """The stock step a step is compared with: None (by its name), '' (none) or a step of the benchmark."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ('', 'none'):
        return ''
    if value not in STOCK_STEPS:
        raise RecoveryError('%s must be one of %s, or none, got %r' % (what, ', '.join(STOCK_STEPS), value))
    return value


def _normalise_check(check, what):
    if 'ok' not in check or check.get('ok') is None:
        raise RecoveryError('%s.ok is required: a check without a result proves nothing' % what)
    return {
        'name': _text(check.get('name'), what + '.name', required=True),
        'kind': _text(check.get('kind'), what + '.kind') or 'check',
        'ok': _bool(check.get('ok'), what + '.ok', False),
        'detail': _text(check.get('detail'), what + '.detail'),
        'expected': check.get('expected'),
        'actual': check.get('actual'),
    }


def normalise_service(service, index):
    what = 'services[%d]' % index
    name = _text(service.get('name'), what + '.name', required=True)
    what = 'services[%d] (%s)' % (index, name)
    set_path = _text(service.get('set'), what + '.set')
    stamp = _text(service.get('stamp'), what + '.stamp')
    raw_time = service.get('set_timestamp')
    if raw_time is None or (isinstance(raw_time, str) and not raw_time.strip()):
        set_time = parse_time(stamp, what + '.stamp') if stamp and is_stamp(stamp) else None
    else:
        set_time = parse_time(raw_time, what + '.set_timestamp')
    steps = [_normalise_step(step, '%s.steps[%d]' % (what, pos))
             for pos, step in enumerate(list_of_dicts(service.get('steps'), what + '.steps'))]
    checks = [_normalise_check(check, '%s.checks[%d]' % (what, pos))
              for pos, check in enumerate(list_of_dicts(service.get('checks'), what + '.checks'))]
    return {
        'name': name,
        'kind': _text(service.get('kind'), what + '.kind') or 'unknown',
        'set': set_path,
        'stamp': stamp,
        'set_timestamp': set_time,
        'source': _text(service.get('source'), what + '.source'),
        'manifest_sha256': _digest(service.get('manifest_sha256'), what + '.manifest_sha256'),
        'target': _text(service.get('target'), what + '.target'),
        'error': _text(service.get('error'), what + '.error'),
        'steps': steps,
        'checks': checks,
    }


def _digest(value, what):
    """A SHA-256 in lower-case hex, or None when not given."""
    text = _text(value, what)
    if text is None:
        return None
    if not re.match(r'^[0-9a-fA-F]{64}$', text):
        raise RecoveryError('%s must be a SHA-256 in hex (64 characters), got %r' % (what, text))
    return text.lower()


def check_report_name(name):
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise RecoveryError('name %r is not a usable report name: use letters, digits, ".", "_" and "-", do not start '
                            'with "." or "-", and do not use %s' % (name, ', '.join(RESERVED_NAMES)))
    return name


def value_text(value):
    """A value as reasons and the HTML page show it: text as is, anything else as JSON."""
    if value is None:
        return 'nothing'
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
