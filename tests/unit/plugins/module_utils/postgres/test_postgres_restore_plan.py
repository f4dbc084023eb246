# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._postgres import restore_plan
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

SET_DIR = '/var/backups/idp/billing/20260101T000000Z'


def _database(payload='database.pgdump.zst.age', name='billing'):
    return {'payload': payload, 'format': 'custom', 'name': name, 'owner': 'billing',
            'tables': {'public.customer': 3}}


def _metadata(kind, **sections):
    metadata = {'format_version': 1, 'set': {'kind': kind, 'service': 'billing'}, 'payloads': {}}
    for section, database in sections.items():
        metadata[section] = {'database': database}
    return metadata


POSTGRES_SET = _metadata('postgres', postgres=_database())
AUTHENTIK_SET = _metadata('authentik', authentik=_database(name='authentik'))


def test_database_sections():
    assert restore_plan.database_sections(POSTGRES_SET) == ['postgres']
    assert restore_plan.database_sections(AUTHENTIK_SET) == ['authentik']
    assert restore_plan.database_sections(_metadata('ory')) == []
    # a section without a payload records no database dump
    assert restore_plan.database_sections(_metadata('postgres', postgres={'name': 'billing'})) == []


def test_each_module_takes_its_own_sets():
    assert restore_plan.pick_database(POSTGRES_SET, 'postgres', SET_DIR) == ('postgres', POSTGRES_SET['postgres']['database'])
    assert restore_plan.pick_database(AUTHENTIK_SET, 'authentik', SET_DIR) == ('authentik',
                                                                               AUTHENTIK_SET['authentik']['database'])


def test_safety_sets_are_taken_by_the_module_of_their_section():
    safety = _metadata('postgres-safety', postgres=_database())
    assert restore_plan.pick_database(safety, 'postgres', SET_DIR)[0] == 'postgres'
    with pytest.raises(RecoveryError) as caught:
        restore_plan.pick_database(safety, 'authentik', SET_DIR)
    assert 'idp.recovery.postgres_restore' in caught.value.msg


def test_postgres_restore_takes_the_database_of_an_authentik_set():
    section, database = restore_plan.pick_database(AUTHENTIK_SET, 'postgres', SET_DIR)
    assert section == 'authentik'
    assert database['name'] == 'authentik'


def test_authentik_restore_refuses_a_postgres_set_naming_postgres_restore():
    with pytest.raises(RecoveryError) as caught:
        restore_plan.pick_database(POSTGRES_SET, 'authentik', SET_DIR)
    msg = caught.value.msg
    assert 'idp.recovery.postgres_restore' in msg
    assert 'idp.recovery.postgres_dump' in msg
    assert SET_DIR in msg
    assert 'kind postgres' in msg


@pytest.mark.parametrize('section, name', [('authentik', 'Authentik'), ('postgres', 'PostgreSQL')])
def test_a_set_without_a_database_is_refused(section, name):
    with pytest.raises(RecoveryError) as caught:
        restore_plan.pick_database(_metadata('ory'), section, SET_DIR)
    assert caught.value.msg == 'backup set %s holds no %s database dump (kind ory)' % (SET_DIR, name)


def test_an_unknown_section_is_an_error():
    with pytest.raises(RecoveryError):
        restore_plan.pick_database(POSTGRES_SET, 'ory', SET_DIR)


def test_default_safety_root():
    assert restore_plan.default_safety_root(SET_DIR) == '/var/backups/idp/billing-pre-restore'


@pytest.mark.parametrize('given, recorded, exists, expected', [
    ('app', 'billing', True, ('app', 'the owner option')),
    (None, 'billing', True, ('billing', 'recorded in the set')),
    (None, 'billing', False, ('postgres', 'the connecting user: the recorded owner billing does not exist on the target')),
    (None, None, False, ('postgres', 'the connecting user')),
])
def test_choose_owner(given, recorded, exists, expected):
    assert restore_plan.choose_owner(given, recorded, 'postgres', exists) == expected


@pytest.mark.parametrize('info, recipients, passphrase, expected', [
    ({'encryption': 'age', 'recipients': ['age1aaa']}, None, None, ('age', ['age1aaa'])),
    ({'encryption': 'age', 'recipients': ['age1aaa']}, ['age1bbb'], None, ('age', ['age1bbb'])),
    ({'encryption': 'gpg', 'recipients': ['ABCDEF']}, None, None, ('gpg', ['ABCDEF'])),
    ({'encryption': 'passphrase'}, None, 'secret', ('passphrase', [])),
    ({'encryption': 'none'}, ['age1bbb'], None, ('age', ['age1bbb'])),
    ({}, None, None, ('age', [])),
])
def test_safety_encryption(info, recipients, passphrase, expected):
    assert restore_plan.safety_encryption(info, recipients, passphrase) == expected


def test_safety_encryption_refusals():
    with pytest.raises(RecoveryError) as caught:
        restore_plan.safety_encryption({'encryption': 'none'}, None, None)
    assert 'safety_recipients' in caught.value.msg
    with pytest.raises(RecoveryError) as caught:
        restore_plan.safety_encryption({'encryption': 'passphrase'}, None, None)
    assert 'needs passphrase' in caught.value.msg


def test_steps_record_details_failures_and_the_total():
    steps = restore_plan.Steps()
    assert steps.run('first', lambda: {'files': 2}) == {'files': 2}

    def fail():
        raise RecoveryError('broken')

    with pytest.raises(RecoveryError):
        steps.run('second', fail)
    assert [s['name'] for s in steps.done] == ['first', 'second']
    assert steps.done[0]['files'] == 2 and 'failed' not in steps.done[0]
    assert steps.done[1]['failed'] is True and steps.done[1]['error'] == 'broken'
    assert steps.total() == round(sum(s['seconds'] for s in steps.done), 3)


def test_steps_record_unexpected_errors_too():
    steps = restore_plan.Steps()

    def crash():
        raise KeyError('payload')

    with pytest.raises(KeyError):
        steps.run('restore_database', crash)
    assert steps.done[0]['failed'] is True and steps.done[0]['error'] == "KeyError: 'payload'"
    converted = restore_plan.as_recovery_error(KeyError('payload'))
    assert isinstance(converted, RecoveryError) and converted.msg == "unexpected error: KeyError: 'payload'"
    same = RecoveryError('as it is')
    assert restore_plan.as_recovery_error(same) is same


@pytest.mark.parametrize('state, expected', [
    ({'Running': True, 'Status': 'running'}, None),
    ({'Running': True, 'Restarting': True, 'Status': 'restarting'}, None),
    ({'Running': False, 'Status': 'exited', 'ExitCode': 3},
     'app container app is not running after it was started (status exited, exit code 3; see docker logs app)'),
    ({'Running': False, 'Status': 'created', 'ExitCode': 127, 'Error': 'exec: "app": not found'},
     'app container app is not running after it was started (status created, exit code 127, exec: "app": not found; '
     'see docker logs app)'),
])
def test_container_problem(state, expected):
    assert restore_plan.container_problem('app', state) == expected
