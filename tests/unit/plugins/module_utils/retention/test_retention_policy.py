# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import random

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._retention import policy as _retention
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp

BASE = datetime.datetime(2026, 1, 1, 3, 0, tzinfo=datetime.timezone.utc)
FAR = datetime.datetime(2040, 1, 1, tzinfo=datetime.timezone.utc)


def _sets(*specs):
    """('20260101T030000Z', True), ... -> set dicts."""
    return [{'stamp': stamp, 'complete': complete} for stamp, complete in specs]


def _daily(days, hour=3, complete=True):
    return [{'stamp': make_stamp(BASE + datetime.timedelta(days=day, hours=hour - 3)), 'complete': complete}
            for day in range(days)]


def _kept(decided):
    return [item['stamp'] for item in decided if item['keep']]


def _removed(decided):
    return [item['stamp'] for item in decided if not item['keep']]


def test_keep_last():
    decided = _retention.decide(_daily(10), _retention.Policy(keep_last=3))
    assert _kept(decided) == ['20260110T030000Z', '20260109T030000Z', '20260108T030000Z']
    assert [item['reasons'] for item in decided[:3]] == [['keep_last (1 of 3)'], ['keep_last (2 of 3)'],
                                                         ['keep_last (3 of 3)']]
    assert decided[3]['reasons'] == ['not selected by the policy']


def test_daily_keeps_the_newest_of_each_day():
    sets = _daily(3) + _daily(3, hour=15)
    decided = _retention.decide(sets, _retention.Policy(keep_daily=2))
    assert _kept(decided) == ['20260103T150000Z', '20260102T150000Z']
    assert decided[0]['reasons'] == ['daily 2026-01-03']


def test_weekly_uses_iso_weeks_and_monthly_calendar_months():
    # 2026-01-01 is a Thursday (ISO week 2026-W01); 2026-01-04 is Sunday of the same week
    sets = _daily(40)
    weekly = _retention.decide(sets, _retention.Policy(keep_weekly=3))
    assert _kept(weekly) == ['20260209T030000Z', '20260208T030000Z', '20260201T030000Z']
    monthly = _retention.decide(sets, _retention.Policy(keep_monthly=5))
    assert _kept(monthly) == ['20260209T030000Z', '20260131T030000Z']


def test_rules_add_up_like_restic():
    sets = _daily(60)
    decided = _retention.decide(sets, _retention.Policy(keep_last=2, keep_weekly=2, keep_monthly=2))
    kept = _kept(decided)
    # last 2: Mar 1, Feb 28; weekly: Mar 1 (W09), Feb 22 (W08); monthly: Mar 1, Feb 28 (Jan's newest is not in 2 months)
    assert kept == ['20260301T030000Z', '20260228T030000Z', '20260222T030000Z']
    reasons = dict((item['stamp'], item['reasons']) for item in decided)
    assert reasons['20260301T030000Z'] == ['keep_last (1 of 2)', 'weekly 2026-W09', 'monthly 2026-03']
    assert reasons['20260228T030000Z'] == ['keep_last (2 of 2)', 'monthly 2026-02']


def test_min_keep_is_a_floor():
    sets = _daily(3) + _daily(3, hour=15)
    decided = _retention.decide(sets, _retention.Policy(keep_daily=1, min_keep=3))
    assert _kept(decided) == ['20260103T150000Z', '20260103T030000Z', '20260102T150000Z']
    assert [item['reasons'] for item in decided[1:3]] == [['min_keep'], ['min_keep']]


def test_incomplete_sets():
    sets = _sets(('20260101T030000Z', True), ('20260102T030000Z', False), ('20260103T030000Z', True),
                 ('20260104T030000Z', False))
    decided = _retention.decide(sets, _retention.Policy(keep_last=5))
    assert _removed(decided) == ['20260102T030000Z']
    assert decided[0]['reasons'] == [_retention.REASON_INCOMPLETE_NEW]
    # incomplete sets never count: keep_last=1 keeps the newest complete one
    decided = _retention.decide(sets, _retention.Policy(keep_last=1))
    assert _kept(decided) == ['20260104T030000Z', '20260103T030000Z']


def test_only_incomplete_sets_are_all_kept():
    sets = _sets(('20260101T030000Z', False), ('20260102T030000Z', False))
    assert _removed(_retention.decide(sets, _retention.Policy(keep_last=1))) == []


def test_policy_without_rules_is_refused():
    with pytest.raises(RecoveryError, match='refused'):
        _retention.Policy()
    with pytest.raises(RecoveryError, match='refused'):
        _retention.Policy(min_keep=5)
    with pytest.raises(RecoveryError, match='whole number'):
        _retention.Policy(keep_last=-1)
    with pytest.raises(RecoveryError, match='whole number'):
        _retention.Policy(keep_last=True)


def test_bad_input_is_refused():
    with pytest.raises(RecoveryError, match='not a backup set stamp'):
        _retention.decide(_sets(('latest', True)), _retention.Policy(keep_last=1))
    with pytest.raises(RecoveryError, match='twice'):
        _retention.decide(_sets(('20260101T030000Z', True), ('20260101T030000Z', False)), _retention.Policy(keep_last=1))


def test_check_decision_refuses_to_remove_the_newest():
    decided = [{'stamp': '20260101T030000Z', 'complete': True, 'keep': True},
               {'stamp': '20260102T030000Z', 'complete': True, 'keep': False}]
    with pytest.raises(RecoveryError, match='newest complete set'):
        _retention.check_decision(decided)


def test_input_is_not_changed_and_extra_keys_pass_through():
    sets = [{'stamp': '20260101T030000Z', 'complete': True, 'size_bytes': 7}]
    decided = _retention.decide(sets, _retention.Policy(keep_last=1))
    assert sets == [{'stamp': '20260101T030000Z', 'complete': True, 'size_bytes': 7}]
    assert decided[0]['size_bytes'] == 7 and decided[0]['keep'] is True


def _random_sets(rng):
    start = BASE + datetime.timedelta(days=rng.randint(0, 400))
    sets = []
    seen = set()
    for _dummy in range(rng.randint(0, 60)):
        when = start + datetime.timedelta(minutes=rng.randint(0, 200 * 24 * 60))
        stamp = make_stamp(when)
        if stamp in seen:
            continue
        seen.add(stamp)
        sets.append({'stamp': stamp, 'complete': rng.random() < 0.8})
    return sets


def _random_policy(rng):
    while True:
        values = dict((name, rng.choice([0, 0, 1, 2, 3, 7, 14])) for name in _retention.RULES)
        if any(values.values()):
            return _retention.Policy(min_keep=rng.choice([0, 1, 2, 5]), **values)


@pytest.mark.parametrize('seed', range(40))
def test_properties(seed):
    rng = random.Random(seed)
    for _dummy in range(25):
        sets = _random_sets(rng)
        policy = _random_policy(rng)
        decided = _retention.decide(sets, policy, now=FAR)
        assert sorted(item['stamp'] for item in decided) == sorted(item['stamp'] for item in sets)
        complete = sorted(item['stamp'] for item in sets if item['complete'])
        kept = set(_kept(decided))
        if complete:
            # the newest complete set is never removed, and neither is any newer incomplete one
            assert complete[-1] in kept
            assert all(item['stamp'] in kept for item in sets if item['stamp'] > complete[-1])
            # every incomplete set older than the newest complete one goes
            assert all(item['stamp'] not in kept for item in sets if not item['complete'] and item['stamp'] < complete[-1])
            # the floor holds
            assert len([stamp for stamp in complete if stamp in kept]) >= min(policy.min_keep, len(complete))
            # keep_last alone is exact
            assert set(complete[-policy.keep_last:] if policy.keep_last else []) <= kept
        else:
            assert kept == set(item['stamp'] for item in sets)
        for item in decided:
            assert item['reasons'], item
        # idempotent: the policy applied to what it kept removes nothing more
        survivors = [item for item in sets if item['stamp'] in kept]
        assert _removed(_retention.decide(survivors, policy, now=FAR)) == []


def test_future_stamp_is_refused():
    now = BASE + datetime.timedelta(days=3)
    sets = _daily(3) + [{'stamp': '20991231T000000Z', 'complete': True, 'service': 'authentik'}]
    with pytest.raises(RecoveryError) as error:
        _retention.decide(sets, _retention.Policy(keep_last=1), now=now)
    assert '20991231T000000Z is stamped in the future' in error.value.msg
    assert 'nothing was removed' in error.value.msg
    assert error.value.details['future'] == ['20991231T000000Z']


def test_clock_skew_allowance():
    now = BASE + datetime.timedelta(days=2)
    near = make_stamp(now + datetime.timedelta(seconds=240))
    decided = _retention.decide(_daily(3)[:2] + [{'stamp': near, 'complete': True}], _retention.Policy(keep_last=1),
                                now=now)
    assert _kept(decided) == [near]
    assert _retention.future_sets([{'stamp': near}], now) == []
    assert _retention.future_sets([{'stamp': make_stamp(now + datetime.timedelta(seconds=301))}], now) != []


def test_incomplete_set_with_a_live_writer_is_kept():
    sets = _daily(3) + [{'stamp': '20260101T150000Z', 'complete': False, 'alive': True, 'writer': 'pid 42 runs'},
                        {'stamp': '20260102T150000Z', 'complete': False, 'alive': False}]
    decided = _retention.decide(sets, _retention.Policy(keep_last=1), now=FAR)
    decided = dict((item['stamp'], item) for item in decided)
    assert decided['20260101T150000Z']['keep'] is True
    assert decided['20260101T150000Z']['reasons'] == ['incomplete, a run is still writing it: pid 42 runs']
    assert decided['20260102T150000Z']['keep'] is False
    assert decided['20260102T150000Z']['reasons'] == [_retention.REASON_INCOMPLETE_OLD]
