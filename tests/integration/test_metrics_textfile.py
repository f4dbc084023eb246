# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""metrics_textfile, run as Ansible runs it: check mode, idempotence, escaping, refusals, file mode."""

from __future__ import annotations

import os
import stat

HELP = 'Result of the service\'s last backup run: 1 success, 0 failure.'
HOSTILE = 'a"b\\c\nd'


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def _metrics(result=1):
    return [
        {'name': 'idp_recovery_backup_result', 'help': HELP, 'value': result,
         'labels': {'service': 'authentik', 'kind': 'authentik'}},
        {'name': 'idp_recovery_backup_result', 'help': HELP, 'value': 0, 'labels': {'service': HOSTILE, 'kind': 'ory'}},
        {'name': 'idp_recovery_backup_size_bytes', 'help': 'Size of the set.', 'value': 73400320,
         'labels': {'service': 'authentik', 'kind': 'authentik'}},
        {'name': 'idp_recovery_backup_last_success_timestamp_seconds', 'help': 'Unix time of the last success.',
         'value': 1793415600.25, 'labels': {'service': 'authentik', 'kind': 'authentik'}},
        {'name': 'idp_recovery_backup_runs_total', 'help': 'Backup runs.', 'type': 'counter', 'value': 12},
    ]


EXPECTED = '''# HELP idp_recovery_backup_result Result of the service's last backup run: 1 success, 0 failure.
# TYPE idp_recovery_backup_result gauge
idp_recovery_backup_result{service="authentik",kind="authentik"} 1
idp_recovery_backup_result{service="a\\"b\\\\c\\nd",kind="ory"} 0
# HELP idp_recovery_backup_size_bytes Size of the set.
# TYPE idp_recovery_backup_size_bytes gauge
idp_recovery_backup_size_bytes{service="authentik",kind="authentik"} 73400320
# HELP idp_recovery_backup_last_success_timestamp_seconds Unix time of the last success.
# TYPE idp_recovery_backup_last_success_timestamp_seconds gauge
idp_recovery_backup_last_success_timestamp_seconds{service="authentik",kind="authentik"} 1793415600.25
# HELP idp_recovery_backup_runs_total Backup runs.
# TYPE idp_recovery_backup_runs_total counter
idp_recovery_backup_runs_total 12
'''


def test_check_then_write_then_unchanged(run_module, tmp_path):
    path = tmp_path / 'idp_recovery_backup.prom'
    result = run_module('metrics_textfile', check_mode=True, path=path, metrics=_metrics())
    assert result['_rc'] == 0 and result['changed'] is True, result
    assert result['path'] == str(path) and result['metrics'] == 5
    assert os.listdir(str(tmp_path)) == []

    result = run_module('metrics_textfile', path=path, metrics=_metrics())
    assert result['changed'] is True and result['metrics'] == 5, result
    assert path.read_text(encoding='utf-8') == EXPECTED
    assert _mode(path) == 0o644
    assert os.listdir(str(tmp_path)) == ['idp_recovery_backup.prom']
    inode = os.stat(str(path)).st_ino

    for check_mode in (True, False):
        result = run_module('metrics_textfile', check_mode=check_mode, path=path, metrics=_metrics())
        assert result['_rc'] == 0 and result['changed'] is False, result
    assert os.stat(str(path)).st_ino == inode

    result = run_module('metrics_textfile', check_mode=True, path=path, metrics=_metrics(result=0))
    assert result['changed'] is True
    assert path.read_text(encoding='utf-8') == EXPECTED
    result = run_module('metrics_textfile', path=path, metrics=_metrics(result=0))
    assert result['changed'] is True
    assert 'idp_recovery_backup_result{service="authentik",kind="authentik"} 0\n' in path.read_text(encoding='utf-8')
    assert os.listdir(str(tmp_path)) == ['idp_recovery_backup.prom']


def test_file_mode(run_module, tmp_path):
    path = tmp_path / 'x.prom'
    result = run_module('metrics_textfile', path=path, metrics=_metrics(), mode='0640')
    assert result['changed'] is True
    assert _mode(path) == 0o640
    result = run_module('metrics_textfile', path=path, metrics=_metrics(), mode='0640')
    assert result['changed'] is False
    result = run_module('metrics_textfile', check_mode=True, path=path, metrics=_metrics())
    assert result['changed'] is True and _mode(path) == 0o640
    result = run_module('metrics_textfile', path=path, metrics=_metrics())
    assert result['changed'] is True and _mode(path) == 0o644
    assert path.read_text(encoding='utf-8') == EXPECTED
    result = run_module('metrics_textfile', path=path, metrics=_metrics(), mode='rw-r--r--')
    assert result['failed'] is True and 'mode must be an octal mode such as 0644' in result['msg']


def test_bad_metric_name_is_refused_and_nothing_written(run_module, tmp_path):
    path = tmp_path / 'x.prom'
    metrics = _metrics() + [{'name': 'idp-recovery-backup', 'help': 'Dashes are not allowed.', 'value': 1}]
    result = run_module('metrics_textfile', path=path, metrics=metrics)
    assert result['failed'] is True and result['_rc'] != 0
    assert "metrics[5]: 'idp-recovery-backup' is not a valid metric name" in result['msg'], result['msg']
    metrics = [{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'bad-label': 'v'}}]
    result = run_module('metrics_textfile', path=path, metrics=metrics)
    assert result['failed'] is True
    assert "'bad-label' is not a valid label name" in result['msg'], result['msg']
    result = run_module('metrics_textfile', path=path, metrics=[{'name': 'idp_x', 'help': 'X.', 'type': 'summary'}])
    assert result['failed'] is True and 'summary' in result['msg']
    result = run_module('metrics_textfile', path=tmp_path / 'missing' / 'x.prom', metrics=_metrics())
    assert result['failed'] is True and 'does not exist' in result['msg']
    assert os.listdir(str(tmp_path)) == []


def test_through_a_playbook_with_diff(run_playbook, tmp_path):
    path = tmp_path / 'x.prom'
    metrics = [
        {'name': 'idp_recovery_pitr_backups', 'help': 'Backups of the stanza.', 'value': '{{ 2 + 1 }}',
         'labels': {'stanza': '{{ stanza }}'}},
        {'name': 'idp_recovery_pitr_last_backup_timestamp_seconds', 'help': 'Newest backup.', 'value': None,
         'labels': {'stanza': '{{ stanza }}'}},
    ]
    task = {'name': 'Write the metrics', 'diff': True, 'vars': {'stanza': 'main "db"'},
            'idp.recovery.metrics_textfile': {'path': str(path), 'metrics': metrics}}
    rc, stdout, stderr = run_playbook([task, task])
    assert rc == 0, stdout + stderr
    first, second = run_playbook.results(stdout)
    assert first['changed'] is True and second['changed'] is False
    assert first['diff']['before'] == '' and 'idp_recovery_pitr_backups{stanza="main \\"db\\""} 3\n' in first['diff']['after']
    assert path.read_text(encoding='utf-8') == (
        '# HELP idp_recovery_pitr_backups Backups of the stanza.\n# TYPE idp_recovery_pitr_backups gauge\n'
        'idp_recovery_pitr_backups{stanza="main \\"db\\""} 3\n'
        '# HELP idp_recovery_pitr_last_backup_timestamp_seconds Newest backup.\n'
        '# TYPE idp_recovery_pitr_last_backup_timestamp_seconds gauge\n')
