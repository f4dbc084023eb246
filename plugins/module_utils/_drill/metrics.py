# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the Prometheus metrics of a restore drill.

The drill's gauges go through the collection's one textfile formatter (``_metrics.textfile``);
the time of the last passed drill is read back from the previous file so that a failed drill
carries it over.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import math

from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import PASSED
from ansible_collections.idp.recovery.plugins.module_utils._metrics.textfile import format_textfile

METRIC_PREFIX = 'idp_recovery_drill_'
LAST_SUCCESS_METRIC = METRIC_PREFIX + 'last_success_timestamp_seconds'

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


def drill_metrics(report, previous_success=None):
    """The drill's metrics as textfile entries ({name, help, value, labels}).

    ``previous_success`` is the last success time read from the existing file; it is carried over
    when this drill failed. Every metric is declared even when it has no sample.
    """
    passed = report['result'] == PASSED
    values = {
        'last_run_timestamp_seconds': report['finished_timestamp'],
        'last_success_timestamp_seconds': report['finished_timestamp'] if passed else previous_success,
        'success': 1 if passed else 0,
        'duration_seconds': report['duration_seconds'],
    }
    metrics = [{'name': METRIC_PREFIX + suffix, 'help': text, 'value': values[suffix]} for suffix, text in _METRICS]
    for suffix, text in _SERVICE_METRICS:
        metrics.append({'name': METRIC_PREFIX + suffix, 'help': text, 'value': None})
        for service in report['services']:
            value = {
                'rto_seconds': service['rto_seconds'],
                'rpo_seconds': service['rpo_seconds'],
                'rto_target_seconds': report['rto_target_seconds'],
                'rpo_target_seconds': report['rpo_target_seconds'],
                'service_success': 1 if service['result'] == PASSED else 0,
                'checks_failed': service['checks_failed'],
            }[suffix]
            metrics.append({'name': METRIC_PREFIX + suffix, 'help': text, 'value': value,
                            'labels': {'service': service['name'], 'kind': service['kind']}})
    return metrics


def render_metrics(report, previous_success=None):
    """The textfile for node_exporter: bytes."""
    return format_textfile(drill_metrics(report, previous_success))


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
