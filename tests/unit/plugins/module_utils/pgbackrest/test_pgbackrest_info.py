# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import info as pgbackrest_info


# `pgbackrest info --output=json` of pgBackRest 2.45 (an S3 repository, one full backup)
INFO = json.loads(r'''[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003",
"min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002",
"stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},
"error":false,"info":{"delta":22992615,"repository":{"delta":3069680,"size":3069680},"size":22992615},
"label":"20261123-005843F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,
"timestamp":{"start":1795395523,"stop":1795395526},"type":"full"}],"cipher":"aes-256-cbc",
"db":[{"id":1,"repo-key":1,"system-id":7711165012838133780,"version":"15"}],"name":"main",
"repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],
"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]''')


def test_parse_info():
    info = pgbackrest_info.parse_info(json.dumps(INFO), 'main')
    assert info['ok'] and info['status_code'] == 0 and info['cipher'] == 'aes-256-cbc'
    assert info['latest_backup'] == info['latest_full'] == '20261123-005843F'
    assert info['archive_min'] == '000000010000000000000001' and info['archive_max'] == '000000010000000000000003'
    backup = info['backups'][0]
    assert backup['type'] == 'full' and backup['stop'] == '2026-11-23T00:58:46Z' and backup['repo_size'] == 3069680
    assert backup['lsn_start'] == '0/2000028' and backup['archive_stop'] == '000000010000000000000003'
    assert info['repos'] == [{'key': 1, 'cipher': 'aes-256-cbc', 'status_code': 0, 'status_message': 'ok'}]


def test_parse_info_failures_and_empty_stanza():
    with pytest.raises(RecoveryError, match='knows no stanza other'):
        pgbackrest_info.parse_info(json.dumps(INFO), 'other')
    with pytest.raises(RecoveryError, match='did not return JSON'):
        pgbackrest_info.parse_info('ERROR: nothing', 'main')
    empty = [{'name': 'main', 'status': {'code': 2, 'message': 'no valid backups'}, 'backup': [], 'archive': []}]
    info = pgbackrest_info.parse_info(json.dumps(empty), 'main')
    assert not info['ok'] and info['latest_backup'] is None and info['archive_max'] is None


def test_next_segment():
    assert pgbackrest_info.next_segment('000000010000000000000004') == '000000010000000000000005'
    assert pgbackrest_info.next_segment('0000000200000001000000FF') == '000000020000000200000000'
    with pytest.raises(RecoveryError):
        pgbackrest_info.next_segment('nope')


LOG_GAP = '''2026-11-23 00:59:00.073 UTC [44] LOG:  restored log file "000000010000000000000002" from archive
2026-11-23 00:59:00.141 UTC [44] LOG:  restored log file "000000010000000000000003" from archive
2026-11-23 00:59:00.271 UTC [44] LOG:  redo done at 0/4019588 system usage: CPU: user: 0.00 s
2026-11-23 00:59:00.271 UTC [44] LOG:  last completed transaction was at log time 2026-11-23 00:58:53.319237+00
2026-11-23 00:59:00.271 UTC [44] FATAL:  recovery ended before configured recovery target was reached
'''


def test_recovery_log_and_gap_explanation():
    log = pgbackrest_info.read_recovery_log(LOG_GAP)
    assert log['restored_segments'] == 2 and log['last_restored_segment'] == '000000010000000000000003'
    assert log['redo_done_lsn'] == '0/4019588' and log['stop_line'] is None
    assert log['last_transaction_log_time'] == '2026-11-23 00:58:53.319237+00'
    message, missing = pgbackrest_info.explain_recovery_failure(log, '000000010000000000000009')
    assert missing == '000000010000000000000004'
    assert 'gap' in message and '000000010000000000000004 is missing' in message and '0/4019588' in message
    message, missing = pgbackrest_info.explain_recovery_failure(log, '000000010000000000000003')
    assert missing == '000000010000000000000004' and 'later than anything archived' in message
    other = pgbackrest_info.read_recovery_log('x FATAL:  could not locate required checkpoint record\n')
    assert pgbackrest_info.explain_recovery_failure(other) == ('could not locate required checkpoint record', None)


def test_stop_line_and_backup_set():
    log = pgbackrest_info.read_recovery_log('LOG:  recovery stopping at restore point "before", time 2026-03-01 09:14:00+00\n')
    assert log['stop_line'] == 'recovery stopping at restore point "before", time 2026-03-01 09:14:00+00'
    out = 'P00   INFO: repo1: restore backup set 20261123-011335F_20261124-011335D, recovery will start at x\n'
    assert pgbackrest_info.restored_backup_set(out) == '20261123-011335F_20261124-011335D'
    assert pgbackrest_info.restored_backup_set('nothing') is None


def test_describe_failure_names_a_wrong_passphrase_without_garbage():
    output = ('P00   WARN: repo1: [FormatError] unable to load info file \'/r/backup/a/backup.info\' or '
              '\'/r/backup/a/backup.info.copy\':\n'
              '                                    FormatError: key/value found outside of section at line 1: \x8dj|*q\n'
              '                                    HINT: backup.info cannot be opened\n'
              'P00  ERROR: [075]: no backup set found to restore\n')
    message = pgbackrest_info.describe_failure('restore', 75, output)
    assert message.startswith('restore failed (exit code 75): [75] no backup set found to restore')
    assert 'cipher passphrase' in message and '\x8d' not in message and 'at line 1 ' in message
    assert pgbackrest_info.pgbackrest_errors(output) == [(75, 'no backup set found to restore')]
