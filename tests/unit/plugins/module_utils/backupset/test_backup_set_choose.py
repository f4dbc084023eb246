# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

ROOT = '/var/backups/idp'
OLD, MIDDLE, NEW = '20261120T030000Z', '20261121T030000Z', '20261122T030000Z'


def _sets(*specs):
    """(stamp, complete), ... -> set dicts as list_sets gives them, oldest first."""
    return [{'path': '%s/authentik/%s' % (ROOT, stamp), 'service': 'authentik', 'stamp': stamp, 'complete': complete}
            for stamp, complete in specs]


SETS = _sets((OLD, True), (MIDDLE, True), (NEW, False))


def _refused(sets, **kwargs):
    with pytest.raises(RecoveryError) as caught:
        _backup_set.choose_set(sets, 'authentik', ROOT, **kwargs)
    return caught.value


def test_the_newest_complete_set_is_chosen():
    chosen, stamps = _backup_set.choose_set(SETS, 'authentik', ROOT)
    assert chosen['stamp'] == MIDDLE
    assert stamps == [OLD, MIDDLE]


def test_a_set_is_chosen_by_stamp_or_by_path():
    assert _backup_set.choose_set(SETS, 'authentik', ROOT, stamp=OLD)[0]['stamp'] == OLD
    chosen, stamps = _backup_set.choose_set(SETS, 'authentik', ROOT, path='%s/authentik/%s' % (ROOT, OLD))
    assert chosen['stamp'] == OLD and stamps == [OLD, MIDDLE]


def test_the_path_wins_over_the_stamp():
    chosen = _backup_set.choose_set(SETS, 'authentik', ROOT, stamp=MIDDLE, path='%s/authentik/%s' % (ROOT, OLD))[0]
    assert chosen['stamp'] == OLD


def test_an_incomplete_set_is_refused_by_stamp():
    error = _refused(SETS, stamp=NEW)
    assert error.msg == ('the set authentik/%s on %s is incomplete (no MANIFEST.sha256): it is never restored; '
                         'complete sets there: %s, %s' % (NEW, ROOT, OLD, MIDDLE))
    assert error.details == {'available': [OLD, MIDDLE], 'wanted': 'authentik/' + NEW, 'incomplete': True}


def test_an_incomplete_set_is_refused_by_path():
    path = '%s/authentik/%s' % (ROOT, NEW)
    error = _refused(SETS, path=path)
    assert error.msg.startswith('the set %s on %s is incomplete (no MANIFEST.sha256): it is never restored' % (path, ROOT))
    assert error.details['incomplete'] is True and error.details['wanted'] == path


def test_a_missing_set_is_refused_naming_the_complete_ones():
    error = _refused(SETS, stamp='20200101T000000Z')
    assert error.msg == 'the target %s holds no set authentik/20200101T000000Z; complete sets there: %s, %s' % (ROOT, OLD, MIDDLE)
    assert error.details == {'available': [OLD, MIDDLE], 'wanted': 'authentik/20200101T000000Z', 'incomplete': False}

    error = _refused(SETS, path='/elsewhere/authentik/' + OLD)
    assert 'holds no set /elsewhere/authentik/%s' % OLD in error.msg and error.details['incomplete'] is False


def test_no_complete_set_is_refused():
    error = _refused(_sets((NEW, False)))
    assert error.msg == 'the target %s holds no complete set of authentik' % ROOT
    assert error.details == {'available': [], 'wanted': 'authentik (latest complete)', 'incomplete': False}
    assert 'complete sets there: none' in _refused(_sets((NEW, False)), stamp=NEW).msg
    assert _refused([]).details['available'] == []
