# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pure parts of the benchmark report: verdicts, the summary and docs/performance.json."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                     'bench')
sys.path.insert(0, BENCH)

import perfdoc  # noqa: E402  pylint: disable=wrong-import-position,import-error
import run  # noqa: E402  pylint: disable=wrong-import-position,import-error

GiB = 1024 ** 3


def test_flat():
    assert perfdoc.flat(30.0, 38.0)           # +8 MiB
    assert not perfdoc.flat(30.0, 38.5)
    assert perfdoc.flat(100.0, 110.0)         # +10%
    assert not perfdoc.flat(100.0, 110.5)
    assert perfdoc.flat(40.0, 30.0)


def test_linear():
    assert perfdoc.linear(6.0, 6.6)
    assert not perfdoc.linear(6.0, 6.7)
    assert not perfdoc.linear(6.0, 5.3)
    assert perfdoc.linear(0, 6.0) is None


def test_linearity_of_sizes():
    result = run.linearity([(100 * 1024 ** 2, 1.0), (GiB, 6.0), (4 * GiB, 25.0)])
    assert (result['base'], result['top']) == (GiB, 4 * GiB)
    assert result['change'] == round(25.0 / 4 / 6.0 - 1, 3)
    assert result['ok'] is True
    assert run.linearity([(GiB, 6.0), (4 * GiB, 27.0)])['ok'] is False
    assert run.linearity([(100 * 1024 ** 2, 1.0), (GiB, 6.0)])['ok'] is None


def test_median_by_name():
    assert run.median_by_name([{'zstd': 1.0, 'age': 0.2}, {'zstd': 3.0}, {'zstd': 2.0, 'age': 0.4}]) == \
        {'age': 0.2, 'zstd': 2.0}


def _row(kind, name, seconds, rss=30.0, baseline=False):
    return {'kind': kind, 'name': name, 'median_seconds': seconds, 'root_rss_mib': rss, 'child_rss_mib': 40.0,
            'baseline': baseline, 'mib_per_s': 1.0, 'label': '`x`', 'command': 'tar | zstd -3 | age && sync'}


def _measurement(kind, size, label, module_s, shell_s, goal=0.95, rss=30.0):
    ratio = round(shell_s / module_s, 2)
    return {'key': '%s-%s' % (kind, label), 'kind': kind, 'short': kind, 'size': label, 'size_bytes': size,
            'baseline': 'shell', 'ratio': ratio, 'goal_ratio': goal, 'judged': size >= GiB,
            'rows': [_row('module', 'module', module_s, rss), _row('shell', 'shell', shell_s, baseline=True)],
            'goals': {'throughput': ratio >= goal, 'python_rss': True, 'child_rss': True}}


def _archive():
    measurements = [
        _measurement('encrypt-dir', 100 * 1024 ** 2, '100M', 0.8, 0.6),
        _measurement('encrypt-dir', GiB, '1G', 6.0, 5.8),
        _measurement('encrypt-dir', 4 * GiB, '4G', 24.5, 23.5, rss=31.0),
    ]
    startup = [_measurement('encrypt-dir', 1024 ** 2, '1M', 0.15, 0.01)]
    scale = run.scale_report(measurements, startup)
    return measurements, startup, scale


def test_scale_and_archive_verdicts():
    measurements, _startup, scale = _archive()
    assert scale[0]['startup_module_seconds'] == 0.15
    assert scale[0]['points'][0]['module_s_per_gib_net'] == round((0.8 - 0.15) * 10.24, 2)
    assert scale[0]['module']['ok'] is True and scale[0]['memory_flat'] is True
    verdicts = dict((v['key'], v) for v in run.archive_verdicts(measurements, scale))
    assert verdicts['encrypt']['ok'] is True           # 0.97x and 0.96x, the 100M row is not judged
    assert '(1G)' in verdicts['encrypt']['shown'] and '100M' not in verdicts['encrypt']['shown']
    assert verdicts['extract']['ok'] is None            # not measured here
    assert verdicts['linear']['ok'] is True and verdicts['rss_flat']['ok'] is True


def test_summary_rows_and_rendering():
    measurements, startup, scale = _archive()
    results = {
        'archive': {'measurements': measurements, 'startup': startup, 'scale': scale,
                    'verdicts': run.archive_verdicts(measurements, scale),
                    'facts': {'load_average_start': '1.00 1.00 1.00', 'load_average_end': '2.00 2.00 2.00',
                              'date_utc': '2026-01-01T00:00:00Z', 'cpu': 'AMD EPYC', 'nproc': 2}},
        'authentik': {'verdicts': [
            {'key': 'dump_vs_bare', 'value': 0.93, 'size': '4.00 GiB', 'goal_size': True},
            {'key': 'restore_vs_psql', 'value': 0.97, 'size': '4.00 GiB', 'goal_size': True}]},
        'ory': {'identities': 50000, 'module': [
            {'label': 'Import (ory_import)', 'ratio': 1.05, 'seconds': 13.4, 'minimum_seconds': 12.8,
             'failed_requests': 0, 'python_rss_mib': 97.0, 'child_rss_mib': 9.0}]},
        'offsite': None, 'pitr': None,
    }
    rows = dict((r['key'], r) for r in perfdoc.summary_rows(results))
    assert [r[0] for r in perfdoc.ISSUE_ROWS] == [r['key'] for r in perfdoc.summary_rows(results)]
    assert rows['dump']['verdict'] == 'PASS'
    assert rows['restore']['verdict'] == 'MISS'         # 0.97x against <= 0.85x
    assert rows['dump_tcp']['verdict'] == 'not measured'
    assert rows['encrypt']['verdict'] == 'PASS'
    assert rows['extract']['verdict'] == 'not judged'
    assert rows['ory_import']['verdict'] == 'PASS'
    assert rows['rss']['verdict'] == 'PASS'
    loads = perfdoc.script_loads(results, {'ory': {'start': '0.5', 'end': '0.7', 'finished': 'T'}})
    assert ('archive', '1.00 1.00 1.00', '2.00 2.00 2.00', '2026-01-01T00:00:00Z') in loads
    assert ('ory', '0.5', '0.7', 'T') in loads
    text = perfdoc.render_summary(perfdoc.summary_rows(results), loads, {'archive': '#encrypted-archives'}, 'NOW')
    assert '[archive](#encrypted-archives)' in text
    assert '`tar \\| zstd -3 \\| age` (+ sync)' in text
    assert '| archive | 1.00 1.00 1.00 | 2.00 2.00 2.00 |' in text


def test_performance_json_schema():
    measurements, _startup, _scale = _archive()
    results = {'archive': {'measurements': measurements, 'facts': {'cpu': 'AMD EPYC', 'nproc': 2}},
               'offsite': {'summary': {'size_bytes': GiB, 'rclone_seconds': 16.0}},
               'ory': {'identities': 50000, 'module': [{'label': 'Export (ory_export)', 'minimum_seconds': 60.0}]},
               'authentik': None, 'pitr': None}
    data = perfdoc.performance_json(results, [('archive', '1.0', '2.0', 'T')], '2026-01-01T00:00:00Z')
    assert sorted(data) == ['generated', 'machine', 'stock']
    assert sorted(data['machine']) == ['cpu', 'load', 'nproc'] and data['machine']['nproc'] == 2
    assert data['stock']['encrypt'] == {'tool': 'tar | zstd -3 | age && sync', 'mib_per_s': 1.0, 'size': '4G'}
    assert data['stock']['upload'] == {'tool': 'rclone copy', 'mib_per_s': 64.0, 'size': '1G'}
    assert data['stock']['ory_export']['tool'] == 'rate-limit-bound minimum'
    assert round(data['stock']['ory_export']['mib_per_s']) == 833
    assert data['stock']['ory_export']['unit'] == 'identities/s' and 'unit' not in data['stock']['upload']
    json.dumps(data)


def test_update_section_first(tmp_path):
    path = str(tmp_path / 'performance.md')
    perfdoc.update_section('archive', '## Encrypted archives\n\ntext', path=path)
    perfdoc.update_section('summary', '## Summary\n\nrows', path=path, first=True)
    text = open(path).read()
    assert text.index('<!-- bench:summary -->') < text.index('<!-- bench:archive -->')
    assert perfdoc.section_anchors(text) == {'summary': '#summary', 'archive': '#encrypted-archives'}
    perfdoc.update_section('summary', '## Summary\n\nnew rows', path=path, first=True)
    assert open(path).read().count('<!-- bench:summary -->') == 1
