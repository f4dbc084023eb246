# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the verdict of a restore drill and its report as a JSON-ready dict.

Everything here is a pure function of its arguments (no clock, no file system), so that the
caller decides what to write and the tests can check every branch.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import math

from ansible_collections.idp.recovery.plugins.module_utils._backup_set import CLOCK_SKEW_SECONDS
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import (
    against, human_duration, is_number, iso_time, make_report_stamp, parse_duration, short_duration)
from ansible_collections.idp.recovery.plugins.module_utils._drill.inputs import (
    check_report_name, list_of_dicts, normalise_service, value_text)
from ansible_collections.idp.recovery.plugins.module_utils._drill.throughput import annotate_service, benchmark_summary

FORMAT = 'idp.recovery.drill_report'
FORMAT_VERSION = 1
PASSED = 'passed'
FAILED = 'failed'


def _check_reason(name, check):
    text = '%s: check %s failed' % (name, check['name'])
    if check['detail']:
        text += ': %s' % check['detail']
    if check['expected'] is not None or check['actual'] is not None:
        text += ' (expected %s, got %s)' % (value_text(check['expected']), value_text(check['actual']))
    return text


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
    ahead = 0
    if service['set_timestamp'] is not None and service['set']:
        ahead = service['set_timestamp'] - started
        rpo = -ahead
        if ahead > CLOCK_SKEW_SECONDS:
            future = True
        elif ahead > 0:
            warnings.append('%s: the set is dated %s after the drill started (within the %s of clock skew allowed); '
                            'its age counts as 0' % (name, short_duration(ahead), short_duration(CLOCK_SKEW_SECONDS)))
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
        reasons.append('%s: recovery took %s, target %s' % (name, against(rto, rto_target), short_duration(rto_target)))
    rpo_ok = rpo is not None and 0 <= rpo <= rpo_target
    if future:
        reasons.append('%s: the set is dated %s after the drill started (more than the %s of clock skew allowed), so '
                       'its age is negative and the data-loss window is unknown; a clock was wrong or the set was '
                       'renamed: check the clocks (NTP) and the stamp of the set' % (
                           name, short_duration(ahead), short_duration(CLOCK_SKEW_SECONDS)))
    elif rpo is not None and not rpo_ok:
        reasons.append('%s: the set is %s old, target %s' % (name, against(rpo, rpo_target), short_duration(rpo_target)))
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
                 require_checks=True, benchmark=None):
    """The whole report (a JSON-ready dict) from raw inputs; raises RecoveryError on bad input.

    ``benchmark`` is what parse_benchmark() made of the stock tools' benchmark (None: no file given);
    each step gets its throughput against it and each service its limiting step.
    """
    if not is_number(started) or math.isnan(started) or math.isinf(started):
        raise RecoveryError('started must be epoch seconds, got %r' % (started,))
    if not is_number(finished) or math.isnan(finished) or math.isinf(finished):
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
    normalised = [normalise_service(service, index) for index, service in enumerate(list_of_dicts(services, 'services'))]
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
        annotate_service(service, benchmark)
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
        'benchmark': benchmark_summary(benchmark),
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
