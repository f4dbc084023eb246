# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: which backup sets a retention policy keeps, as a pure function.

The rules follow ``restic forget``: ``keep_last`` keeps the N newest sets; ``keep_daily``,
``keep_weekly`` and ``keep_monthly`` walk the sets from the newest to the oldest and keep the
newest set of each of the last N days, ISO weeks or months that have a set (UTC, from the set's
stamp). The rules add up: a set is kept when any rule keeps it. ``min_keep`` then keeps more of
the newest sets until at least that many are kept.

Only complete sets (with ``MANIFEST.sha256``) count. The newest complete set is always kept. An
incomplete set older than the newest complete one is removed unless its writer is known to be
alive (``alive: True``, see _backup_set.writer_alive); a newer one is kept, because a run may
still be writing it. A policy without any keep rule is refused, and so is any outcome that would
remove every complete set.

A set stamped in the future (more than _backup_set.CLOCK_SKEW_SECONDS after ``now``) makes the
decision impossible: which set is the newest is then unknown, so decide() refuses, naming it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import CLOCK_SKEW_SECONDS
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, iso, parse_stamp, utcnow

RULES = ('keep_last', 'keep_daily', 'keep_weekly', 'keep_monthly')

_BUCKETS = (
    ('keep_daily', 'daily', '%Y-%m-%d'),
    ('keep_weekly', 'weekly', '%G-W%V'),
    ('keep_monthly', 'monthly', '%Y-%m'),
)

REASON_INCOMPLETE_OLD = 'incomplete, older than the newest complete set'
REASON_INCOMPLETE_NEW = 'incomplete, newer than the newest complete set (a run may still be writing it)'
REASON_NOT_SELECTED = 'not selected by the policy'
REASON_NEWEST = 'newest complete set'
REASON_WRITER_ALIVE = 'incomplete, a run is still writing it'
REASON_MIN_KEEP = 'min_keep'


class Policy(object):
    """A validated retention policy."""

    def __init__(self, keep_last=0, keep_daily=0, keep_weekly=0, keep_monthly=0, min_keep=1):
        values = dict(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                      keep_monthly=keep_monthly, min_keep=min_keep)
        for name, value in values.items():
            if value is None:
                values[name] = 0
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RecoveryError('%s must be a whole number of 0 or more, not %r' % (name, value))
        if not any(values[name] for name in RULES):
            raise RecoveryError('a retention policy needs at least one of %s greater than 0; a policy without keep rules '
                                'would delete every set and is refused' % ', '.join(RULES))
        self.keep_last = values['keep_last']
        self.keep_daily = values['keep_daily']
        self.keep_weekly = values['keep_weekly']
        self.keep_monthly = values['keep_monthly']
        self.min_keep = values['min_keep']

    def as_dict(self):
        return dict(keep_last=self.keep_last, keep_daily=self.keep_daily, keep_weekly=self.keep_weekly,
                    keep_monthly=self.keep_monthly, min_keep=self.min_keep)


def future_sets(sets, now=None, skew=CLOCK_SKEW_SECONDS):
    """The stamps of sets dated more than skew seconds after now, sorted."""
    now = now or utcnow()
    found = []
    for item in sets:
        when = parse_stamp(item.get('stamp'))
        if when is not None and (when - now).total_seconds() > skew:
            found.append(item['stamp'])
    return sorted(found)


def decide(sets, policy, now=None):
    """Decide for every set of one service whether it is kept.

    ``sets`` is an iterable of dicts with at least ``stamp`` (``YYYYMMDDTHHMMSSZ``) and
    ``complete`` (bool), and optionally ``alive`` (True when the writer of an incomplete set is
    known to run); other keys are passed through. Returns a list of copies of those dicts,
    newest first, each with ``keep`` (bool) and ``reasons`` (list of str) added. Nothing else is
    read: the decision depends only on the stamps, completeness, liveness and the policy.
    A set stamped in the future (relative to ``now``, the current time by default) is refused.
    """
    sets = list(sets)
    now = now or utcnow()
    future = future_sets(sets, now)
    if future:
        service = sets[0].get('service')
        raise RecoveryError(
            'retention refused%s: %s %s stamped in the future (the time is %s, and %d seconds of clock skew are '
            'allowed), so which set is the newest cannot be told and nothing was removed. A clock was wrong when '
            'the set was written, or a set was renamed: check the clocks (NTP) and rename such a set to the time '
            'it was really taken (its metadata.json records started_at) or remove it'
            % (' for service %s' % service if service else '', ', '.join(future), 'is' if len(future) == 1 else 'are',
               iso(now), CLOCK_SKEW_SECONDS), future=future)
    items = []
    seen = set()
    for item in sets:
        stamp = item.get('stamp')
        when = parse_stamp(stamp)
        if when is None:
            raise RecoveryError('%r is not a backup set stamp (YYYYMMDDTHHMMSSZ)' % (stamp,))
        if stamp in seen:
            raise RecoveryError('the set %s is listed twice' % stamp)
        seen.add(stamp)
        copy = dict(item)
        copy['complete'] = bool(item.get('complete'))
        copy['reasons'] = []
        copy['_when'] = when
        items.append(copy)
    items.sort(key=lambda entry: entry['stamp'], reverse=True)
    complete = [entry for entry in items if entry['complete']]

    for index, entry in enumerate(complete[:policy.keep_last]):
        entry['reasons'].append('keep_last (%d of %d)' % (index + 1, policy.keep_last))
    for rule, label, fmt in _BUCKETS:
        remaining = getattr(policy, rule)
        last_bucket = None
        for entry in complete:
            if remaining <= 0:
                break
            bucket = entry['_when'].strftime(fmt)
            if bucket != last_bucket:
                entry['reasons'].append('%s %s' % (label, bucket))
                last_bucket = bucket
                remaining -= 1

    kept = len([entry for entry in complete if entry['reasons']])
    if complete and not kept:
        raise RecoveryError('the retention policy would remove every complete set; refused')
    for entry in complete:
        if kept >= policy.min_keep:
            break
        if not entry['reasons']:
            entry['reasons'].append(REASON_MIN_KEEP)
            kept += 1
    if complete and not complete[0]['reasons']:
        complete[0]['reasons'].append(REASON_NEWEST)

    newest = complete[0]['stamp'] if complete else None
    for entry in items:
        if entry['complete']:
            entry['keep'] = bool(entry['reasons'])
            if not entry['keep']:
                entry['reasons'] = [REASON_NOT_SELECTED]
        elif entry.get('alive'):
            entry['keep'] = True
            entry['reasons'] = [REASON_WRITER_ALIVE + (': %s' % entry['writer'] if entry.get('writer') else '')]
        elif newest is not None and entry['stamp'] < newest:
            entry['keep'] = False
            entry['reasons'] = [REASON_INCOMPLETE_OLD]
        else:
            entry['keep'] = True
            entry['reasons'] = [REASON_INCOMPLETE_NEW]
        del entry['_when']
    check_decision(items)
    return items


def check_decision(decided):
    """Refuse a decision that removes the newest complete set or every complete set."""
    complete = [entry for entry in decided if entry['complete']]
    if not complete:
        return
    newest = max(complete, key=lambda entry: entry['stamp'])
    if not newest['keep']:
        raise RecoveryError('refusing to remove %s, the newest complete set' % newest['stamp'])
    if not any(entry['keep'] for entry in complete):
        raise RecoveryError('the retention policy would remove every complete set; refused')
