# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: durations and times of a restore drill, parsed and worded."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import math
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, STAMP_FORMAT

_UNITS = {'w': 604800, 'd': 86400, 'h': 3600, 'm': 60, 's': 1, 'ms': 0.001}
_SIMPLE_RE = re.compile(r'^(?:\s*\d+(?:\.\d+)?\s*(?:ms|w|d|h|m|s)\s*)+$')
_SIMPLE_PART_RE = re.compile(r'(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)')
_ISO_DURATION_RE = re.compile(
    r'^P(?:(?P<w>\d+(?:[.,]\d+)?)W)?(?:(?P<d>\d+(?:[.,]\d+)?)D)?'
    r'(?:T(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?$')
_ISO_TIME_RE = re.compile(
    r'^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?'
    r'\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$')


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value, what='duration'):
    """Seconds (float) from 3600, 3600.0, '3600', '90s', '45m', '4h', '1d', '1h30m', '850ms', 'PT4H', 'P1D'.

    Raises RecoveryError with a message naming ``what`` for anything else (negative, empty, years
    or months, unknown units, garbage).
    """
    if is_number(value):
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


def against(value, target):
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
    if is_number(value):
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


def is_stamp(text):
    """Whether text is a set stamp such as 20260101T030000Z."""
    try:
        datetime.datetime.strptime(text, STAMP_FORMAT)
    except ValueError:
        return False
    return True
