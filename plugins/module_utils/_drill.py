# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the verdict of a restore drill, its JSON and HTML reports and its metrics.

Everything here is a pure function of its arguments (no clock, no file system), so that the
module decides what to write and the tests can check every branch.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import json
import math
import re

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import CLOCK_SKEW_SECONDS
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, STAMP_FORMAT

from html import escape as _html_escape

FORMAT = 'idp.recovery.drill_report'
FORMAT_VERSION = 1
PASSED = 'passed'
FAILED = 'failed'
METRIC_PREFIX = 'idp_recovery_drill_'
LAST_SUCCESS_METRIC = METRIC_PREFIX + 'last_success_timestamp_seconds'
NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$')
RESERVED_NAMES = ('latest',)

_UNITS = {'w': 604800, 'd': 86400, 'h': 3600, 'm': 60, 's': 1, 'ms': 0.001}
_SIMPLE_RE = re.compile(r'^(?:\s*\d+(?:\.\d+)?\s*(?:ms|w|d|h|m|s)\s*)+$')
_SIMPLE_PART_RE = re.compile(r'(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)')
_ISO_DURATION_RE = re.compile(
    r'^P(?:(?P<w>\d+(?:[.,]\d+)?)W)?(?:(?P<d>\d+(?:[.,]\d+)?)D)?'
    r'(?:T(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$')
_ISO_TIME_RE = re.compile(
    r'^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?'
    r'\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$')


# ---------------------------------------------------------------------------------------------
# durations and times

def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value, what='duration'):
    """Seconds (float) from 3600, 3600.0, '3600', '90s', '45m', '4h', '1d', '1h30m', '850ms', 'PT4H', 'P1D'.

    Raises RecoveryError with a message naming ``what`` for anything else (negative, empty, years
    or months, unknown units, garbage).
    """
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise RecoveryError('%s is empty; give seconds or a duration such as 90s, 45m, 4h, 1d, 1h30m or PT4H' % what)
        seconds = _parse_duration_text(text, what)
    else:
        raise RecoveryError('%s must be a number of seconds or a duration string such as 4h, got %r' % (what, value))
    if math.isnan(seconds) or math.isinf(seconds):
        raise RecoveryError('%s must be a finite number of seconds, got %r' % (what, value))
    if seconds < 0:
        raise RecoveryError('%s must not be negative, got %r' % (what, value))
    return seconds


def _parse_duration_text(text, what):
    try:
        return float(text)
    except ValueError:
        pass
    upper = text.upper()
    if upper.startswith('P'):
        match = _ISO_DURATION_RE.match(upper)
        if not match or upper in ('P', 'PT') or upper.endswith('T'):
            if re.match(r'^P(?:\d+(?:[.,]\d+)?[YM])', upper):
                raise RecoveryError('%s %r uses years or months, whose length varies; give weeks, days, hours, '
                                    'minutes or seconds (for example P30D)' % (what, text))
            raise RecoveryError('%s %r is not an ISO-8601 duration such as PT4H, P1D or P1DT12H' % (what, text))
        total = 0.0
        for unit, factor in (('w', 604800), ('d', 86400), ('h', 3600), ('m', 60), ('s', 1)):
            if match.group(unit):
                total += float(match.group(unit).replace(',', '.')) * factor
        return total
    lower = text.lower()
    if not _SIMPLE_RE.match(lower):
        raise RecoveryError('%s %r is not a duration; give seconds or a duration such as 90s, 45m, 4h, 1d, '
                            '1h30m or PT4H' % (what, text))
    seen = set()
    total = 0.0
    for number, unit in _SIMPLE_PART_RE.findall(lower):
        if unit in seen:
            raise RecoveryError('%s %r names the unit %r twice' % (what, text, unit))
        seen.add(unit)
        total += float(number) * _UNITS[unit]
    return total


def human_duration(seconds):
    """'850 ms', '4.2s', '2m 03s', '1h 02m 03s', '1d 07h 00m 00s'; 'unknown' for None."""
    if seconds is None:
        return 'unknown'
    if seconds < 0:
        return '-' + human_duration(-seconds)
    if seconds < 0.9995:
        return '%d ms' % int(round(seconds * 1000))
    tenths = round(seconds, 1)
    if tenths < 60:
        text = '%.1f' % tenths
        if text.endswith('.0'):
            text = text[:-2]
        return text + 's'
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return '%dd %02dh %02dm %02ds' % (days, hours, minutes, secs)
    if hours:
        return '%dh %02dm %02ds' % (hours, minutes, secs)
    return '%dm %02ds' % (minutes, secs)


def short_duration(seconds):
    """The wording of targets and reasons: '4h', '24h', '31h', '5h 2m', '45m', '1m 30s', '42s', '850 ms', '7d'.

    Hours up to two days, days from there on; seconds are dropped from an hour on.
    """
    if seconds is None:
        return 'unknown'
    if seconds < 0:
        return '-' + short_duration(-seconds)
    if seconds < 60:
        return human_duration(seconds)
    whole = int(round(seconds))
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return '%dm %ds' % (minutes, secs) if secs else '%dm' % minutes
    if whole >= 172800:
        days, rest = divmod(whole, 86400)
        hours = rest // 3600
        return '%dd %dh' % (days, hours) if hours else '%dd' % days
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return '%dh %dm' % (hours, minutes) if minutes else '%dh' % hours


def _against(value, target):
    """value in the short wording, or in full when the short wording would read like the target."""
    text = short_duration(value)
    if text == short_duration(target) and value != target:
        return human_duration(value)
    return text


def _from_epoch(epoch):
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise RecoveryError('%r is not a usable time in epoch seconds' % (epoch,))


def iso_time(epoch):
    if epoch is None:
        return None
    return _from_epoch(epoch).strftime('%Y-%m-%dT%H:%M:%SZ')


def make_report_stamp(epoch):
    return _from_epoch(epoch).strftime(STAMP_FORMAT)


def parse_time(value, what='time'):
    """Epoch seconds (float) from an epoch number, an ISO-8601 time or a set stamp (20260101T030000Z).

    An ISO-8601 time without a zone is taken as UTC. Raises RecoveryError for anything else.
    """
    if _is_number(value):
        result = float(value)
        if math.isnan(result) or math.isinf(result):
            raise RecoveryError('%s must be a finite time, got %r' % (what, value))
        return result
    if not isinstance(value, str) or not value.strip():
        raise RecoveryError('%s must be an ISO-8601 UTC time or epoch seconds, got %r' % (what, value))
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _to_epoch(datetime.datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=datetime.timezone.utc))
    except ValueError:
        pass
    match = _ISO_TIME_RE.match(text)
    if not match:
        raise RecoveryError('%s %r is not an ISO-8601 time (2026-01-31T03:00:00Z), a set stamp or epoch seconds'
                            % (what, text))
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        when = datetime.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                                 tzinfo=datetime.timezone.utc)
    except ValueError as exc:
        raise RecoveryError('%s %r is not a valid time: %s' % (what, text, exc))
    epoch = _to_epoch(when)
    if fraction:
        epoch += float('0.' + fraction)
    if zone and zone not in ('Z', 'z'):
        sign = 1 if zone[0] == '+' else -1
        digits = zone[1:].replace(':', '')
        offset = int(digits[:2]) * 3600 + (int(digits[2:4]) * 60 if len(digits) > 2 else 0)
        epoch -= sign * offset
    return epoch


def _to_epoch(when):
    return (when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()


# ---------------------------------------------------------------------------------------------
# input normalisation

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
    if _is_number(value) and value in (0, 1):
        return bool(value)
    raise RecoveryError('%s must be true or false, got %r' % (what, value))


def _seconds(value, what):
    if _is_number(value):
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


def _items(value, what):
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
    }


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
        set_time = parse_time(stamp, what + '.stamp') if stamp and _stamp_like(stamp) else None
    else:
        set_time = parse_time(raw_time, what + '.set_timestamp')
    steps = [_normalise_step(step, '%s.steps[%d]' % (what, pos))
             for pos, step in enumerate(_items(service.get('steps'), what + '.steps'))]
    checks = [_normalise_check(check, '%s.checks[%d]' % (what, pos))
              for pos, check in enumerate(_items(service.get('checks'), what + '.checks'))]
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


def _stamp_like(text):
    try:
        datetime.datetime.strptime(text, STAMP_FORMAT)
    except ValueError:
        return False
    return True


def check_report_name(name):
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise RecoveryError('name %r is not a usable report name: use letters, digits, ".", "_" and "-", do not start '
                            'with "." or "-", and do not use %s' % (name, ', '.join(RESERVED_NAMES)))
    return name


# ---------------------------------------------------------------------------------------------
# the verdict

def _check_reason(name, check):
    text = '%s: check %s failed' % (name, check['name'])
    if check['detail']:
        text += ': %s' % check['detail']
    if check['expected'] is not None or check['actual'] is not None:
        text += ' (expected %s, got %s)' % (_value_text(check['expected']), _value_text(check['actual']))
    return text


def _value_text(value):
    if value is None:
        return 'nothing'
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def judge_service(service, started, rto_target, rpo_target, require_checks=True):
    """The service dict completed with its RTO, RPO, counts, result and reasons."""
    name = service['name']
    reasons = []
    warnings = []
    rto = sum(step['seconds'] for step in service['steps'])
    steps_failed = [step for step in service['steps'] if not step['ok']]
    checks_failed = [check for check in service['checks'] if not check['ok']]
    rpo = None
    future = False
    if service['set_timestamp'] is not None and service['set']:
        rpo = started - service['set_timestamp']
        if rpo < -CLOCK_SKEW_SECONDS:
            future = True
        elif rpo < 0:
            warnings.append('%s: the set is dated %s after the drill started (within the %s of clock skew allowed); '
                            'its age counts as 0' % (name, short_duration(-rpo), short_duration(CLOCK_SKEW_SECONDS)))
            rpo = 0
    if not service['set']:
        text = '%s: no set was fetched, so the data-loss window is unknown' % name
        if service['error']:
            text += ': %s' % service['error']
        reasons.append(text)
    else:
        if service['error']:
            reasons.append('%s: the drill stopped early: %s' % (name, service['error']))
        if rpo is None:
            reasons.append('%s: the time of the set is unknown, so the data-loss window is unknown' % name)
    for step in steps_failed:
        reasons.append('%s: step %s failed%s' % (name, step['name'], (': %s' % step['error']) if step['error'] else ''))
    for check in checks_failed:
        reasons.append(_check_reason(name, check))
    rto_ok = rto <= rto_target
    if not rto_ok:
        reasons.append('%s: recovery took %s, target %s' % (name, _against(rto, rto_target), short_duration(rto_target)))
    rpo_ok = rpo is not None and 0 <= rpo <= rpo_target
    if future:
        reasons.append('%s: the set is dated %s after the drill started (more than the %s of clock skew allowed), so '
                       'its age is negative and the data-loss window is unknown; a clock was wrong or the set was '
                       'renamed: check the clocks (NTP) and the stamp of the set' % (
                           name, short_duration(-rpo), short_duration(CLOCK_SKEW_SECONDS)))
    elif rpo is not None and not rpo_ok:
        reasons.append('%s: the set is %s old, target %s' % (name, _against(rpo, rpo_target), short_duration(rpo_target)))
    if service['set'] and not service['steps'] and not service['error']:
        reasons.append('%s: no recovery step was recorded, so nothing proves the restore' % name)
    if require_checks and service['set'] and not service['checks'] and not service['error']:
        reasons.append('%s: no check was run after the restore' % name)
    judged = dict(service)
    judged.update({
        'rto_seconds': rto,
        'rpo_seconds': rpo,
        'rto_ok': rto_ok,
        'rpo_ok': rpo_ok,
        'steps_failed': len(steps_failed),
        'checks_failed': len(checks_failed),
        'checks_total': len(service['checks']),
        'result': FAILED if reasons else PASSED,
        'reasons': reasons,
        'warnings': warnings,
    })
    return judged


def verdict(services, started, rto_target, rpo_target, require_checks=True):
    """(result, reasons, warnings, judged services) for normalised services."""
    judged = [judge_service(service, started, rto_target, rpo_target, require_checks) for service in services]
    reasons = [reason for service in judged for reason in service['reasons']]
    warnings = [warning for service in judged for warning in service['warnings']]
    if not judged:
        reasons.insert(0, 'no service was drilled')
    return (FAILED if reasons else PASSED), reasons, warnings, judged


def build_report(services, started, finished, rto_target, rpo_target, context=None, name=None, generated=None,
                 require_checks=True):
    """The whole report (a JSON-ready dict) from raw inputs; raises RecoveryError on bad input."""
    if not _is_number(started) or math.isnan(started) or math.isinf(started):
        raise RecoveryError('started must be epoch seconds, got %r' % (started,))
    if not _is_number(finished) or math.isnan(finished) or math.isinf(finished):
        raise RecoveryError('finished must be epoch seconds, got %r' % (finished,))
    if finished < started:
        raise RecoveryError('finished (%s) is before started (%s)' % (iso_time(finished), iso_time(started)))
    rto_seconds = parse_duration(rto_target, 'rto_target')
    rpo_seconds = parse_duration(rpo_target, 'rpo_target')
    for what, seconds in (('rto_target', rto_seconds), ('rpo_target', rpo_seconds)):
        if seconds <= 0:
            raise RecoveryError('%s must be greater than zero' % what)
    if context is not None and not isinstance(context, dict):
        raise RecoveryError('context must be a dict, got %s' % type(context).__name__)
    normalised = [normalise_service(service, index) for index, service in enumerate(_items(services, 'services'))]
    seen = set()
    for service in normalised:
        if service['name'] in seen:
            raise RecoveryError('services: the name %r is given twice' % service['name'])
        seen.add(service['name'])
    result, reasons, warnings, judged = verdict(normalised, started, rto_seconds, rpo_seconds, require_checks)
    report_name = check_report_name(name) if name else 'drill-%s' % make_report_stamp(started)
    generated = finished if generated is None else generated
    for service in judged:
        service['set_time'] = iso_time(service['set_timestamp'])
        service['rto_human'] = human_duration(service['rto_seconds'])
        service['rpo_human'] = human_duration(service['rpo_seconds'])
        for step in service['steps']:
            step['human'] = human_duration(step['seconds'])
    return {
        'format': FORMAT,
        'format_version': FORMAT_VERSION,
        'name': report_name,
        'result': result,
        'reasons': reasons,
        'warnings': warnings,
        'generated': iso_time(generated),
        'generated_timestamp': generated,
        'started': iso_time(started),
        'started_timestamp': started,
        'finished': iso_time(finished),
        'finished_timestamp': finished,
        'duration_seconds': finished - started,
        'duration_human': human_duration(finished - started),
        'rto_target': rto_target,
        'rto_target_seconds': rto_seconds,
        'rto_target_human': short_duration(rto_seconds),
        'rpo_target': rpo_target,
        'rpo_target_seconds': rpo_seconds,
        'rpo_target_human': short_duration(rpo_seconds),
        'require_checks': require_checks,
        'context': dict(context or {}),
        'services': judged,
    }


def summary(report):
    """The per-service summary the module returns."""
    return [dict((key, service[key]) for key in ('name', 'kind', 'result', 'rto_seconds', 'rpo_seconds', 'rto_human',
                                                 'rpo_human', 'rto_ok', 'rpo_ok', 'checks_total', 'checks_failed',
                                                 'steps_failed'))
            for service in report['services']]


def render_json(report):
    return (json.dumps(report, indent=2, sort_keys=True, default=str) + '\n').encode('utf-8')


# ---------------------------------------------------------------------------------------------
# metrics

_METRICS = (
    ('last_run_timestamp_seconds', 'Unix time of the end of the last restore drill, successful or not.'),
    ('last_success_timestamp_seconds', 'Unix time of the end of the last restore drill that passed '
                                       '(absent until one has passed).'),
    ('success', 'Result of the last restore drill: 1 passed, 0 failed.'),
    ('duration_seconds', 'Duration of the last restore drill, from its start to its report.'),
)
_SERVICE_METRICS = (
    ('rto_seconds', 'Recovery time of the service in the last drill: fetch, verify, restore and checks.'),
    ('rpo_seconds', 'Age of the restored set at the start of the last drill, the data-loss window '
                    '(absent when no set was restored).'),
    ('rto_target_seconds', 'Recovery time objective of the last drill.'),
    ('rpo_target_seconds', 'Recovery point objective (the largest acceptable age of the set) of the last drill.'),
    ('service_success', 'Result of the service in the last drill: 1 passed, 0 failed.'),
    ('checks_failed', 'Number of the service\'s checks that failed in the last drill.'),
)


def escape_label(value):
    """A label value escaped per the Prometheus text exposition format."""
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _number(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return '%d' % value
    return '%.3f' % value


def render_metrics(report, previous_success=None):
    """The textfile for node_exporter: bytes.

    ``previous_success`` is the last success time read from the existing file; it is carried over
    when this drill failed.
    """
    passed = report['result'] == PASSED
    last_success = report['finished_timestamp'] if passed else previous_success
    values = {
        'last_run_timestamp_seconds': report['finished_timestamp'],
        'last_success_timestamp_seconds': last_success,
        'success': 1 if passed else 0,
        'duration_seconds': report['duration_seconds'],
    }
    lines = []
    for suffix, text in _METRICS:
        name = METRIC_PREFIX + suffix
        lines.append('# HELP %s %s' % (name, text))
        lines.append('# TYPE %s gauge' % name)
        if values[suffix] is not None:
            lines.append('%s %s' % (name, _number(values[suffix])))
    for suffix, text in _SERVICE_METRICS:
        name = METRIC_PREFIX + suffix
        lines.append('# HELP %s %s' % (name, text))
        lines.append('# TYPE %s gauge' % name)
        for service in report['services']:
            value = {
                'rto_seconds': service['rto_seconds'],
                'rpo_seconds': service['rpo_seconds'],
                'rto_target_seconds': report['rto_target_seconds'],
                'rpo_target_seconds': report['rpo_target_seconds'],
                'service_success': 1 if service['result'] == PASSED else 0,
                'checks_failed': service['checks_failed'],
            }[suffix]
            if value is None:
                continue
            lines.append('%s{service="%s",kind="%s"} %s' % (name, escape_label(service['name']),
                                                            escape_label(service['kind']), _number(value)))
    return ('\n'.join(lines) + '\n').encode('utf-8')


def read_previous_success(text):
    """The last success time in an existing textfile (str), or None when it holds none."""
    if not text:
        return None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.split()
        metric = parts[0]
        if '{' in metric:
            metric = metric[:metric.index('{')]
        if metric != LAST_SUCCESS_METRIC or len(parts) < 2:
            continue
        try:
            value = float(parts[1])
        except ValueError:
            return None
        if math.isnan(value) or math.isinf(value) or value <= 0:
            return None
        return value
    return None


# ---------------------------------------------------------------------------------------------
# HTML

def esc(value):
    if value is None:
        return ''
    if not isinstance(value, str):
        value = _value_text(value)
    return _html_escape(value, quote=True)


_CSS = '''
:root { --ok: #1b5e20; --ok-bg: #e8f5e9; --bad: #b71c1c; --bad-bg: #ffebee; --ink: #1a1a1a; --muted: #555;
  --line: #c8c8c8; --bar: #37474f; --warn-bg: #fff8e1; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 62rem; padding: 1rem; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1, h2, h3 { line-height: 1.2; margin: 1.2em 0 .4em; }
h1 { margin: 0; font-size: 1rem; font-weight: 600; letter-spacing: .02em; }
.banner { border: 4px solid; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
.banner.passed { border-color: var(--ok); background: var(--ok-bg); color: var(--ok); }
.banner.failed { border-color: var(--bad); background: var(--bad-bg); color: var(--bad); }
.verdict { font-size: 2.6rem; font-weight: 800; letter-spacing: .06em; margin: .1em 0; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .4rem 0; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.reasons, .warnings { border-left: 6px solid var(--bad); background: var(--bad-bg); padding: .5rem 1rem;
  margin: 1rem 0; }
.warnings { border-color: #8d6e00; background: var(--warn-bg); }
.reasons h2, .warnings h2 { margin-top: .3rem; font-size: 1.1rem; }
.reasons li, .warnings li { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #f2f2f2; }
td.num { text-align: right; white-space: nowrap; }
.ok { color: var(--ok); font-weight: 600; white-space: nowrap; }
.bad { color: var(--bad); font-weight: 700; white-space: nowrap; }
section.service { border-top: 2px solid var(--line); margin-top: 1.5rem; }
.badge { display: inline-block; border: 2px solid; border-radius: 4px; padding: 0 .4rem; font-size: .85rem;
  vertical-align: middle; margin-left: .4rem; }
.badge.passed { color: var(--ok); } .badge.failed { color: var(--bad); }
figure { margin: .5rem 0 1rem; }
figcaption { color: var(--muted); font-size: .85rem; }
svg { width: 100%; height: auto; display: block; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font-size: .85rem; }
footer { color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); margin-top: 2rem;
  padding-top: .5rem; }
@media (max-width: 40rem) { body { padding: .5rem; font-size: 14px; } .verdict { font-size: 2rem; }
  .meta { grid-template-columns: 1fr; } .meta dt { margin-top: .3rem; } }
@media print { body { max-width: none; padding: 0; font-size: 11pt; } .scroll { overflow: visible; }
  section.service { break-inside: auto; } figure, table, tr { break-inside: avoid; } }
'''

_OK = '\u2714'
_BAD = '\u2718'
_CHART_WIDTH = 720
_ROW = 34
_TOP = 8
_AXIS = 30


def _status(ok, ok_text='ok', bad_text='FAILED'):
    if ok:
        return '<span class="ok">%s %s</span>' % (_OK, ok_text)
    return '<span class="bad">%s %s</span>' % (_BAD, bad_text)


def _meta(rows):
    out = ['<dl class="meta">']
    for key, value in rows:
        if value is None or value == '':
            continue
        out.append('<dt>%s</dt><dd>%s</dd>' % (esc(key), value))
    out.append('</dl>')
    return '\n'.join(out)


def _tick_step(scale):
    """A round tick interval giving about four ticks on 0..scale."""
    candidates = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    for step in candidates:
        if scale / step <= 5:
            return step
    return 86400 * max(1, int(math.ceil(scale / 86400 / 5)))


def render_chart(service, rto_target, index):
    """An inline SVG waterfall of the service's steps (each starts where the previous ended)."""
    steps = service['steps']
    total = service['rto_seconds']
    if not steps:
        return '<p>No recovery step was recorded.</p>'
    scale = max(total, 0.001)
    target_fits = rto_target <= max(total * 1.5, 0.001)
    if target_fits:
        scale = max(scale, rto_target)
    label_x = 4
    plot = _CHART_WIDTH - 8
    rows = len(steps) + 1
    height = _TOP + rows * _ROW + _AXIS + (16 if not target_fits else 0)
    pattern = 'failed-hatch-%d' % index
    title_id = 'chart-title-%d' % index

    def x_of(seconds):
        return label_x + plot * (seconds / scale)

    out = ['<svg viewBox="0 0 %d %d" role="img" aria-labelledby="%s" font-family="system-ui, sans-serif" '
           'font-size="12">' % (_CHART_WIDTH, height, title_id),
           '<title id="%s">Recovery steps of %s: %s in total</title>' % (title_id, esc(service['name']),
                                                                         esc(human_duration(total))),
           '<defs><pattern id="%s" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
           '<rect width="6" height="6" fill="#b71c1c"/><rect width="3" height="6" fill="#ef9a9a"/></pattern></defs>'
           % pattern]
    axis_y = _TOP + rows * _ROW
    step_size = _tick_step(scale)
    tick = 0.0
    while tick <= scale + 1e-9:
        x = x_of(tick)
        anchor = 'start' if tick == 0 else ('end' if x > _CHART_WIDTH - 40 else 'middle')
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>' % (x, _TOP, x, axis_y))
        out.append('<text x="%.1f" y="%d" text-anchor="%s" fill="#555">%s</text>'
                   % (x, axis_y + 14, anchor, esc(short_duration(tick) if tick else '0')))
        tick += step_size
    offset = 0.0
    for pos, step in enumerate(steps):
        y = _TOP + pos * _ROW
        x = x_of(offset)
        width = max(plot * (step['seconds'] / scale), 3.0)
        x = min(x, label_x + plot - width)
        fill = '#37474f' if step['ok'] else 'url(#%s)' % pattern
        label = '%s \u2014 %s' % (step['name'], human_duration(step['seconds']))
        if not step['ok']:
            label = '%s FAILED: %s' % (_BAD, label)
        out.append('<text x="%d" y="%d" fill="%s"%s>%s</text>' % (
            label_x, y + 12, '#1a1a1a' if step['ok'] else '#b71c1c', '' if step['ok'] else ' font-weight="bold"',
            esc(label)))
        out.append('<rect x="%.1f" y="%d" width="%.1f" height="13" fill="%s" stroke="%s"><title>%s</title></rect>'
                   % (x, y + 16, width, fill, '#1a1a1a' if not step['ok'] else 'none', esc(label)))
        offset += step['seconds']
    y = _TOP + len(steps) * _ROW
    total_ok = total <= rto_target
    out.append('<text x="%d" y="%d" font-weight="bold" fill="#1a1a1a">%s</text>' % (
        label_x, y + 12, esc('total recovery time \u2014 %s%s' % (
            human_duration(total), '' if total_ok else ' (%s over the RTO target)' % _BAD))))
    out.append('<rect x="%.1f" y="%d" width="%.1f" height="13" fill="%s"/>' % (
        x_of(0), y + 16, max(plot * (total / scale), 2.0), '#607d8b' if total_ok else '#b71c1c'))
    if target_fits:
        x = x_of(rto_target)
        anchor = 'end' if x > _CHART_WIDTH / 2 else 'start'
        shift = -4 if anchor == 'end' else 4
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#b71c1c" stroke-width="2" '
                   'stroke-dasharray="6 3"/>' % (x, _TOP - 4, x, axis_y))
        out.append('<text x="%.1f" y="%d" text-anchor="%s" fill="#b71c1c" font-weight="bold">%s</text>' % (
            x + shift, axis_y + 26, anchor, esc('RTO target %s' % short_duration(rto_target))))
    else:
        out.append('<text x="%d" y="%d" fill="#555">%s</text>' % (
            label_x, axis_y + 30, esc('RTO target %s is off this scale (far above the recovery time)'
                                      % short_duration(rto_target))))
    out.append('</svg>')
    return '\n'.join(out)


def _age_text(service, target):
    if service['rpo_seconds'] is None:
        return '%s unknown (target %s)' % (_BAD, esc(short_duration(target)))
    return '%s (target %s) %s' % (esc(human_duration(service['rpo_seconds'])), esc(short_duration(target)),
                                  _status(service['rpo_ok'], 'within target', 'TARGET MISSED'))


def _rto_text(service, target):
    return '%s (target %s) %s' % (esc(human_duration(service['rto_seconds'])), esc(short_duration(target)),
                                  _status(service['rto_ok'], 'within target', 'TARGET MISSED'))


def _render_service(service, report, index):
    out = ['<section class="service" id="service-%d">' % index,
           '<h2>%s <small>(%s)</small><span class="badge %s">%s</span></h2>' % (
               esc(service['name']), esc(service['kind']), service['result'],
               esc('%s %s' % (_OK if service['result'] == PASSED else _BAD, service['result'].upper())))]
    if service['error']:
        stopped = 'The drill of this service stopped early: %s' % service['error']
        out.append('<p class="bad">%s %s</p>' % (_BAD, esc(stopped)))
    out.append(_meta([
        ('Set', esc(service['set']) if service['set'] else '%s none fetched' % _BAD),
        ('Stamp', esc(service['stamp'])),
        ('SHA-256 of its manifest', esc(service['manifest_sha256'])),
        ('Set time', esc(service['set_time'])),
        ('Fetched from', esc(service['source'])),
        ('Restored into', esc(service['target'])),
        ('Age of the set (RPO)', _age_text(service, report['rpo_target_seconds'])),
        ('Recovery time (RTO)', _rto_text(service, report['rto_target_seconds'])),
        ('Checks', '%d of %d passed' % (service['checks_total'] - service['checks_failed'], service['checks_total'])),
    ]))
    out.append('<h3>Recovery steps</h3>')
    out.append('<figure>')
    out.append(render_chart(service, report['rto_target_seconds'], index))
    out.append('<figcaption>Each bar starts where the previous step ended; the last bar is the total recovery '
               'time. Failed steps are hatched and marked %s FAILED.</figcaption>' % _BAD)
    out.append('</figure>')
    if service['steps']:
        out.append('<div class="scroll"><table><thead><tr><th>Step</th><th>Time</th><th>Result</th><th>Error / detail'
                   '</th></tr></thead><tbody>')
        for step in service['steps']:
            notes = []
            if step['error']:
                notes.append(esc(step['error']))
            if step['detail']:
                notes.append('<pre>%s</pre>' % esc(json.dumps(step['detail'], indent=1, sort_keys=True, default=str)))
            out.append('<tr><td>%s</td><td class="num">%s</td><td>%s</td><td>%s</td></tr>' % (
                esc(step['name']), esc(human_duration(step['seconds'])), _status(step['ok']), ''.join(notes)))
        out.append('</tbody></table></div>')
    out.append('<h3>Checks</h3>')
    if service['checks']:
        out.append('<div class="scroll"><table><thead><tr><th>Result</th><th>Check</th><th>Kind</th><th>Detail</th>'
                   '<th>Expected</th><th>Actual</th></tr></thead><tbody>')
        for check in service['checks']:
            out.append('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
                _status(check['ok']), esc(check['name']), esc(check['kind']), esc(check['detail']),
                esc(check['expected']), esc(check['actual'])))
        out.append('</tbody></table></div>')
    else:
        out.append('<p>No check was run.</p>')
    out.append('</section>')
    return '\n'.join(out)


def render_html(report):
    """One self-contained page (inline CSS and SVG, no script, no external reference): bytes."""
    passed = report['result'] == PASSED
    verdict_text = 'PASSED' if passed else 'FAILED'
    context = report['context']
    host = context.get('host') or context.get('inventory_hostname') or ''
    title = 'Recovery drill %s%s \u2014 %s' % (verdict_text, (' \u2014 %s' % host) if host else '', report['started'])
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>%s</title>' % esc(title), '<style>%s</style>' % _CSS, '</head>', '<body>',
           '<header class="banner %s">' % report['result'],
           '<h1>Recovery drill report%s</h1>' % (esc(' \u2014 %s' % host) if host else ''),
           '<div class="verdict">%s %s</div>' % (_OK if passed else _BAD, verdict_text)]
    rows = [(key, esc(value)) for key, value in sorted(context.items())]
    rows += [
        ('Drill started', esc(report['started'])),
        ('Drill finished', esc(report['finished'])),
        ('Duration', esc(report['duration_human'])),
        ('RTO target (recovery time)', esc(report['rto_target_human'])),
        ('RPO target (age of the set)', esc(report['rpo_target_human'])),
        ('Report generated', esc(report['generated'])),
    ]
    out.append(_meta(rows))
    out.append('</header>')
    if report['reasons']:
        out.append('<section class="reasons"><h2>%s Why the drill failed</h2><ul>' % _BAD)
        out.extend('<li>%s</li>' % esc(reason) for reason in report['reasons'])
        out.append('</ul></section>')
    if report['warnings']:
        out.append('<section class="warnings"><h2>Warnings</h2><ul>')
        out.extend('<li>%s</li>' % esc(warning) for warning in report['warnings'])
        out.append('</ul></section>')
    out.append('<h2>Services</h2>')
    if report['services']:
        out.append('<div class="scroll"><table><thead><tr><th>Service</th><th>Kind</th><th>Result</th>'
                   '<th>Recovery time</th><th>Age of the set</th><th>Checks passed</th></tr></thead><tbody>')
        for index, service in enumerate(report['services']):
            out.append('<tr><td><a href="#service-%d">%s</a></td><td>%s</td><td>%s</td><td>%s %s</td><td>%s %s</td>'
                       '<td class="num">%d / %d</td></tr>' % (
                           index, esc(service['name']), esc(service['kind']),
                           _status(service['result'] == PASSED, 'passed', 'FAILED'),
                           esc(human_duration(service['rto_seconds'])), _status(service['rto_ok'], '', 'over'),
                           esc(human_duration(service['rpo_seconds'])) if service['rpo_seconds'] is not None else '',
                           _status(service['rpo_ok'], '', 'unknown' if service['rpo_seconds'] is None else 'over'),
                           service['checks_total'] - service['checks_failed'], service['checks_total']))
        out.append('</tbody></table></div>')
    else:
        out.append('<p class="bad">%s No service was drilled.</p>' % _BAD)
    for index, service in enumerate(report['services']):
        out.append(_render_service(service, report, index))
    out.append('<footer>Report %s, format %s version %d, written by the idp.recovery.drill_report module.</footer>'
               % (esc(report['name']), esc(report['format']), report['format_version']))
    out.extend(['</body>', '</html>'])
    return ('\n'.join(out) + '\n').encode('utf-8')
