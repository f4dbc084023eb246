# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import re
from html.parser import HTMLParser

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import (
    human_duration, parse_duration, parse_time, short_duration)
from ansible_collections.idp.recovery.plugins.module_utils._drill.html_page import render_chart, render_html
from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import build_report, render_json
from ansible_collections.idp.recovery.plugins.module_utils._drill.metrics import read_previous_success, render_metrics
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

STARTED = 1793415600.0  # 2026-10-31T03:00:00Z
HOUR = 3600.0
HOSTILE = '<script>alert("x")</script> & \'quote\' <img src=x onerror=alert(1)>'


def _service(name='authentik', kind='authentik', age=3 * HOUR, steps=None, checks=None, **extra):
    service = {
        'name': name,
        'kind': kind,
        'set': '/var/tmp/drill/%s/20261031T000000Z' % name,
        'stamp': '20261031T000000Z',
        'set_timestamp': STARTED - age,
        'source': 'offsite s3 idp-backups/prod',
        'target': 'scratch container idp-drill-pg',
        'steps': steps if steps is not None else [
            {'name': 'fetch', 'seconds': 40}, {'name': 'verify', 'seconds': 5},
            {'name': 'restore', 'seconds': 300}, {'name': 'checks', 'seconds': 7.5}],
        'checks': checks if checks is not None else [
            {'name': 'row counts', 'kind': 'row_counts', 'ok': True, 'detail': '212 tables equal'},
            {'name': 'version', 'kind': 'version', 'ok': True, 'detail': '2025.10.1'}],
    }
    service.update(extra)
    return service


def _report(services, rto='4h', rpo='24h', finished=None, **kwargs):
    return build_report(services, STARTED, finished if finished is not None else STARTED + 400, rto, rpo, **kwargs)


# ----------------------------------------------------------------------------------------- durations

@pytest.mark.parametrize('value, seconds', [
    (3600, 3600.0), (90.5, 90.5), ('3600', 3600.0), ('90s', 90.0), ('45m', 2700.0), ('4h', 14400.0),
    ('1d', 86400.0), ('1h30m', 5400.0), ('1h 30m 15s', 5415.0), ('2w', 1209600.0), ('850ms', 0.85),
    ('1.5h', 5400.0), (' 24H ', 86400.0), ('PT4H', 14400.0), ('P1D', 86400.0), ('P1DT12H', 129600.0),
    ('pt90m', 5400.0), ('PT0.5S', 0.5), ('P1W', 604800.0), ('PT1H30M', 5400.0), (0, 0.0),
])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize('value, fragment', [
    ('', 'empty'), ('   ', 'empty'), ('4x', 'not a duration'), ('h', 'not a duration'), ('4 hours', 'not a duration'),
    ('-5', 'negative'), (-1, 'negative'), ('1h1h', 'twice'), ('P1Y', 'years or months'), ('P2M', 'years or months'),
    ('PT', 'ISO-8601'), ('P', 'ISO-8601'), ('P1DT', 'ISO-8601'), ('PT4X', 'ISO-8601'), (True, 'number of seconds'),
    (None, 'number of seconds'), ([4], 'number of seconds'), (float('nan'), 'finite'), ('inf', 'finite'),
])
def test_parse_duration_rejects_bad_input(value, fragment):
    with pytest.raises(RecoveryError) as caught:
        parse_duration(value, 'rto_target')
    assert 'rto_target' in caught.value.msg
    assert fragment in caught.value.msg


@pytest.mark.parametrize('seconds, text', [
    (0, '0 ms'), (0.85, '850 ms'), (0.0004, '0 ms'), (1, '1s'), (4.3, '4.3s'), (42, '42s'), (59.96, '1m 00s'),
    (123, '2m 03s'), (3723, '1h 02m 03s'), (18120, '5h 02m 00s'), (111600, '1d 07h 00m 00s'), (None, 'unknown'),
    (-90, '-1m 30s'),
])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize('seconds, text', [
    (14400, '4h'), (86400, '24h'), (111600, '31h'), (18120, '5h 2m'), (2700, '45m'), (90, '1m 30s'), (42, '42s'),
    (604800, '7d'), (190800, '2d 5h'), (0.85, '850 ms'),
])
def test_short_duration(seconds, text):
    assert short_duration(seconds) == text


@pytest.mark.parametrize('value, epoch', [
    ('2026-10-31T03:00:00Z', STARTED), ('2026-10-31T03:00:00+00:00', STARTED), ('2026-10-31T04:00:00+01:00', STARTED),
    ('2026-10-31T03:00:00.250Z', STARTED + 0.25), ('2026-10-31 03:00:00', STARTED), ('20261031T030000Z', STARTED),
    (STARTED, STARTED), (int(STARTED), STARTED), (str(STARTED), STARTED), ('2026-10-30T22:30:00-0430', STARTED),
])
def test_parse_time(value, epoch):
    assert parse_time(value) == pytest.approx(epoch)


@pytest.mark.parametrize('value', ['yesterday', '2026-13-01T00:00:00Z', '2026-10-31T03:00:00 CET', '', [1], None])
def test_parse_time_rejects_bad_input(value):
    with pytest.raises(RecoveryError) as caught:
        parse_time(value, 'services[0].set_timestamp')
    assert 'services[0].set_timestamp' in caught.value.msg


# ----------------------------------------------------------------------------------------- verdict

def test_passed():
    report = _report([_service(), _service('postgres-x', 'postgres', age=23 * HOUR)])
    assert report['result'] == 'passed'
    assert report['reasons'] == []
    first = report['services'][0]
    assert first['rto_seconds'] == pytest.approx(352.5)
    assert first['rpo_seconds'] == pytest.approx(3 * HOUR)
    assert (first['rto_ok'], first['rpo_ok'], first['checks_failed'], first['steps_failed']) == (True, True, 0, 0)
    assert report['rto_target_seconds'] == 14400.0 and report['rpo_target_seconds'] == 86400.0
    assert report['duration_seconds'] == 400.0


def test_targets_are_inclusive():
    steps = [{'name': 'restore', 'seconds': 14400}]
    report = _report([_service(age=24 * HOUR, steps=steps)])
    assert report['result'] == 'passed', report['reasons']


def test_rto_missed():
    steps = [{'name': 'fetch', 'seconds': 120}, {'name': 'restore', 'seconds': 18000}]
    report = _report([_service(steps=steps)])
    assert report['result'] == 'failed'
    assert report['reasons'] == ['authentik: recovery took 5h 2m, target 4h']
    assert report['services'][0]['rto_ok'] is False


def test_rto_missed_by_seconds_says_so():
    report = _report([_service(steps=[{'name': 'restore', 'seconds': 14420}])])
    assert report['reasons'] == ['authentik: recovery took 4h 00m 20s, target 4h']


def test_rpo_missed():
    report = _report([_service('postgres-x', 'postgres', age=31 * HOUR)])
    assert report['reasons'] == ['postgres-x: the set is 31h old, target 24h']
    assert report['services'][0]['rpo_ok'] is False


def test_failed_check_and_step():
    checks = [{'name': 'keto-deny', 'kind': 'keto', 'ok': False, 'detail': 'user:bob may read doc:1',
               'expected': 'deny', 'actual': 'allow'},
              {'name': 'token', 'kind': 'ory_token', 'ok': True}]
    steps = [{'name': 'restore', 'seconds': 10, 'ok': False, 'error': 'pg_restore exited 1'}]
    report = _report([_service('ory', 'ory', steps=steps, checks=checks)])
    assert report['reasons'] == ['ory: step restore failed: pg_restore exited 1',
                                 'ory: check keto-deny failed: user:bob may read doc:1 (expected deny, got allow)']
    assert report['services'][0]['checks_failed'] == 1
    assert report['services'][0]['steps_failed'] == 1


def test_no_set_means_unknown_rpo():
    service = {'name': 'ory', 'kind': 'ory', 'error': 'no complete set on the offsite target',
               'steps': [{'name': 'fetch', 'seconds': 3, 'ok': False}]}
    report = _report([service])
    assert report['result'] == 'failed'
    judged = report['services'][0]
    assert judged['rpo_seconds'] is None and judged['rpo_ok'] is False
    assert report['reasons'] == ['ory: no set was fetched, so the data-loss window is unknown: '
                                 'no complete set on the offsite target', 'ory: step fetch failed']


def test_set_time_from_stamp_or_unknown():
    from_stamp = _service(set_timestamp=None, stamp='20261030T030000Z')
    report = _report([from_stamp])
    assert report['services'][0]['rpo_seconds'] == pytest.approx(24 * HOUR)
    assert report['result'] == 'passed'
    unknown = _service(set_timestamp=None, stamp='nightly')
    report = _report([unknown])
    assert report['reasons'] == ['authentik: the time of the set is unknown, so the data-loss window is unknown']


def test_stopped_early():
    report = _report([_service(error='the scratch container did not start')])
    assert report['reasons'] == ['authentik: the drill stopped early: the scratch container did not start']


def test_nothing_proven():
    report = _report([_service(steps=[], checks=[])])
    assert report['reasons'] == ['authentik: no recovery step was recorded, so nothing proves the restore',
                                 'authentik: no check was run after the restore']
    lenient = _report([_service(checks=[])], require_checks=False)
    assert lenient['result'] == 'passed'


def test_no_service():
    report = _report([])
    assert report['result'] == 'failed'
    assert report['reasons'] == ['no service was drilled']


def test_every_service_is_judged():
    report = _report([_service(), _service('postgres-x', 'postgres', age=31 * HOUR),
                      _service('ory', 'ory', steps=[{'name': 'restore', 'seconds': 5 * HOUR}])])
    assert [s['result'] for s in report['services']] == ['passed', 'failed', 'failed']
    assert len(report['reasons']) == 2


def test_future_set_fails():
    report = _report([_service(age=-2 * HOUR)])
    assert report['result'] == 'failed'
    assert report['services'][0]['rpo_ok'] is False
    assert report['reasons'] == [
        'authentik: the set is dated 2h after the drill started (more than the 5m of clock skew allowed), so its age '
        'is negative and the data-loss window is unknown; a clock was wrong or the set was renamed: check the clocks '
        '(NTP) and the stamp of the set']


def test_set_dated_within_the_clock_skew_counts_as_age_zero():
    report = _report([_service(age=-60)])
    assert report['result'] == 'passed'
    assert report['services'][0]['rpo_seconds'] == 0 and report['services'][0]['rpo_ok'] is True
    assert report['warnings'] == ['authentik: the set is dated 1m after the drill started (within the 5m of clock skew '
                                  'allowed); its age counts as 0']


@pytest.mark.parametrize('mutate, fragment', [
    (lambda s: s.pop('name'), 'services[0].name is required'),
    (lambda s: s['steps'].append({'name': 'x', 'seconds': 'soon'}), 'steps[4].seconds must be a number'),
    (lambda s: s['steps'].append({'name': 'x', 'seconds': -1}), 'non-negative'),
    (lambda s: s['steps'].append({'seconds': 1}), 'steps[4].name is required'),
    (lambda s: s['checks'].append({'name': 'x'}), 'checks[2].ok is required'),
    (lambda s: s['checks'].append({'name': 'x', 'ok': 'maybe'}), 'must be true or false'),
    (lambda s: s.update(steps='restore'), 'steps must be a list'),
    (lambda s: s.update(set_timestamp='last night'), 'set_timestamp'),
])
def test_bad_service_input(mutate, fragment):
    service = _service()
    mutate(service)
    with pytest.raises(RecoveryError) as caught:
        _report([service])
    assert fragment in caught.value.msg


def test_bad_report_input():
    with pytest.raises(RecoveryError, match='given twice'):
        _report([_service(), _service()])
    with pytest.raises(RecoveryError, match='before started'):
        _report([_service()], finished=STARTED - 1)
    with pytest.raises(RecoveryError, match='rto_target must be greater than zero'):
        _report([_service()], rto=0)
    with pytest.raises(RecoveryError, match='rpo_target'):
        _report([_service()], rpo='one day')
    for name in ('latest', '../x', '.hidden', 'a/b', ''):
        if name:
            with pytest.raises(RecoveryError, match='report name'):
                _report([_service()], name=name)
    assert _report([_service()], name='drill-2026-10')['name'] == 'drill-2026-10'
    assert _report([_service()])['name'] == 'drill-20261031T030000Z'


def test_numeric_strings_from_templates_are_accepted():
    service = _service(steps=[{'name': 'restore', 'seconds': '12.5', 'ok': 'true'}], set_timestamp=str(STARTED - 60))
    report = _report([service])
    assert report['services'][0]['rto_seconds'] == 12.5
    assert report['services'][0]['rpo_seconds'] == pytest.approx(60)


def test_json_report():
    report = _report([_service()], context={'host': 'idp1'})
    data = json.loads(render_json(report).decode('utf-8'))
    assert data['format'] == 'idp.recovery.drill_report' and data['format_version'] == 1
    assert data['result'] == 'passed' and data['context'] == {'host': 'idp1'}
    assert data['rto_target'] == '4h' and data['rto_target_human'] == '4h'
    assert data['services'][0]['set_time'] == '2026-10-31T00:00:00Z'
    assert data['services'][0]['rto_human'] == '5m 52s'
    assert data['services'][0]['steps'][0]['human'] == '40s'
    assert data['started'] == '2026-10-31T03:00:00Z'
    assert data['duration_human'] == '6m 40s'


# ----------------------------------------------------------------------------------------- HTML

VOID = {'meta', 'br', 'img', 'input', 'link', 'hr', 'rect', 'line', 'path', 'circle', 'stop'}


class _Collector(HTMLParser):
    """Collects tags, attributes and text, and checks that elements nest."""

    def __init__(self):
        HTMLParser.__init__(self, convert_charrefs=True)
        self.tags = []
        self.attrs = []
        self.text = []
        self.stack = []
        self.errors = []
        self.svg_text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append('unexpected </%s> with open %r' % (tag, self.stack[-3:]))
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)
        if 'svg' in self.stack:
            self.svg_text.append(data)


def _parse(html_bytes):
    parser = _Collector()
    parser.feed(html_bytes.decode('utf-8'))
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def _hostile_report():
    steps = [{'name': 'restore ' + HOSTILE, 'seconds': 30, 'ok': False, 'error': HOSTILE, 'detail': {'x': HOSTILE}}]
    checks = [{'name': 'check ' + HOSTILE, 'kind': HOSTILE, 'ok': False, 'detail': HOSTILE,
               'expected': HOSTILE, 'actual': {'rows': HOSTILE}}]
    service = _service(name='svc"</svg><script>', kind=HOSTILE, steps=steps, checks=checks, set='/tmp/' + HOSTILE,
                       source=HOSTILE, target=HOSTILE, error=HOSTILE)
    return _report([service], context={'host': HOSTILE, HOSTILE: 'key'})


def test_html_escapes_every_value():
    html_bytes = render_html(_hostile_report())
    raw = html_bytes.decode('utf-8')
    assert '<script' not in raw.lower()
    assert '<img' not in raw.lower()
    parsed = _parse(html_bytes)
    assert 'script' not in parsed.tags and 'img' not in parsed.tags
    text = ''.join(parsed.text)
    assert text.count(HOSTILE) >= 10
    assert 'svc"</svg><script>' in text
    assert not [name for name, _value in parsed.attrs if name.startswith('on')]


def test_html_is_self_contained():
    report = _report([_service(), _service('ory', 'ory', steps=[{'name': 'restore', 'seconds': 5 * HOUR}])],
                     context={'host': 'idp1', 'playbook': 'idp.recovery.drill'})
    html_bytes = render_html(report)
    raw = html_bytes.decode('utf-8').lower()
    for forbidden in ('<script', 'http', '@import', '<link', '@font-face', 'javascript:', '<iframe', '<object'):
        assert forbidden not in raw, forbidden
    parsed = _parse(html_bytes)
    for name, value in parsed.attrs:
        if name in ('href', 'src', 'xlink:href', 'action'):
            assert value.startswith('#'), (name, value)
        if value and 'url(' in value:
            assert re.match(r'^url\(#[\w-]+\)$', value), value
    assert parsed.tags.count('svg') == 2
    assert 'style' in parsed.tags and parsed.tags.count('style') == 1


def test_html_content():
    checks = [{'name': 'row counts', 'kind': 'row_counts', 'ok': True, 'detail': '212 tables equal'},
              {'name': 'keto-deny', 'kind': 'keto', 'ok': False, 'detail': 'allowed'}]
    steps = [{'name': 'fetch', 'seconds': 40}, {'name': 'restore', 'seconds': 12000, 'ok': False, 'error': 'boom'}]
    report = _report([_service(steps=steps, checks=checks)], context={'host': 'idp1'})
    parsed = _parse(render_html(report))
    text = ' '.join(parsed.text)
    assert '\u2718 FAILED' in text
    assert 'Why the drill failed' in text
    assert 'authentik: check keto-deny failed: allowed' in text
    assert 'idp1' in text and '2026-10-31T03:00:00Z' in text
    svg_text = ' '.join(parsed.svg_text)
    assert 'fetch \u2014 40s' in svg_text
    assert '\u2718 FAILED: restore \u2014 3h 20m 00s' in svg_text
    assert 'RTO target 4h' in svg_text
    assert '\u2714 ok' in text and 'keto-deny' in text and '212 tables equal' in text


def test_chart_rto_target_off_scale():
    report = _report([_service(steps=[{'name': 'restore', 'seconds': 60}])])
    chart = render_chart(report['services'][0], report['rto_target_seconds'], 0)
    assert 'RTO target 4h is off this scale' in chart
    assert 'stroke-dasharray' not in chart
    assert chart.count('<rect') == 4  # two pattern rects, one step, the total


def test_html_passed_banner():
    parsed = _parse(render_html(_report([_service()])))
    text = ' '.join(parsed.text)
    assert '\u2714 PASSED' in text
    assert 'Why the drill failed' not in text


# ----------------------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {'n': '\n', '\\': '\\', '"': '"'}[m.group(1)], value)


def parse_exposition(text):
    """A strict little parser of the text exposition format: {(name, labels tuple): value}, plus types."""
    samples = {}
    types = {}
    helps = {}
    assert text.endswith('\n')
    for line in text.splitlines():
        if line.startswith('# HELP '):
            name, _sep, help_text = line[7:].partition(' ')
            assert name not in helps and help_text
            helps[name] = help_text
            continue
        if line.startswith('# TYPE '):
            name, kind = line[7:].split(' ')
            assert name not in types and kind == 'gauge'
            assert name in helps, 'TYPE before HELP for %s' % name
            types[name] = kind
            continue
        assert not line.startswith('#') and line, line
        match = _SAMPLE.match(line)
        assert match, line
        name, _braces, labels_text, value = match.groups()
        assert name in types, 'sample before TYPE: %s' % line
        labels = []
        if labels_text:
            position = 0
            while position < len(labels_text):
                label = _LABEL.match(labels_text, position)
                assert label, 'bad labels in %s' % line
                labels.append((label.group(1), _unescape(label.group(2))))
                position = label.end()
        key = (name, tuple(labels))
        assert key not in samples, 'duplicate sample %s' % line
        samples[key] = float(value)
    return samples, types


def _metric(samples, name, **labels):
    key = ('idp_recovery_drill_' + name, tuple(sorted(labels.items(), key=lambda item: ['service', 'kind'].index(
        item[0]))))
    return samples.get(key)


def test_metrics_passed():
    report = _report([_service(), _service('postgres-x', 'postgres')])
    samples, types = parse_exposition(render_metrics(report, previous_success=1000.0).decode('utf-8'))
    assert len(types) == 10
    assert _metric(samples, 'success') == 1
    assert _metric(samples, 'last_run_timestamp_seconds') == STARTED + 400
    assert _metric(samples, 'last_success_timestamp_seconds') == STARTED + 400
    assert _metric(samples, 'duration_seconds') == 400
    assert _metric(samples, 'rto_seconds', service='authentik', kind='authentik') == 352.5
    assert _metric(samples, 'rpo_seconds', service='postgres-x', kind='postgres') == 3 * HOUR
    assert _metric(samples, 'rto_target_seconds', service='authentik', kind='authentik') == 14400
    assert _metric(samples, 'rpo_target_seconds', service='postgres-x', kind='postgres') == 86400
    assert _metric(samples, 'service_success', service='postgres-x', kind='postgres') == 1
    assert _metric(samples, 'checks_failed', service='authentik', kind='authentik') == 0


def test_metrics_failed_carry_the_last_success_over():
    checks = [{'name': 'keto-deny', 'ok': False}]
    report = _report([_service(checks=checks), {'name': 'ory', 'kind': 'ory', 'error': 'fetch failed'}])
    text = render_metrics(report, previous_success=1790000000.5).decode('utf-8')
    samples, _types = parse_exposition(text)
    assert _metric(samples, 'success') == 0
    assert _metric(samples, 'last_success_timestamp_seconds') == 1790000000.5
    assert _metric(samples, 'checks_failed', service='authentik', kind='authentik') == 1
    assert _metric(samples, 'service_success', service='ory', kind='ory') == 0
    assert _metric(samples, 'rpo_seconds', service='ory', kind='ory') is None
    assert read_previous_success(text) == 1790000000.5

    never = render_metrics(report, previous_success=None).decode('utf-8')
    samples, types = parse_exposition(never)
    assert 'idp_recovery_drill_last_success_timestamp_seconds' in types
    assert _metric(samples, 'last_success_timestamp_seconds') is None
    assert read_previous_success(never) is None


def test_carry_over_survives_a_chain_of_runs():
    passed = render_metrics(_report([_service()]), None).decode('utf-8')
    failed_report = _report([_service(checks=[{'name': 'x', 'ok': False}])], finished=STARTED + 9000)
    previous = read_previous_success(passed)
    assert previous == STARTED + 400
    first_failure = render_metrics(failed_report, previous).decode('utf-8')
    second_failure = render_metrics(failed_report, read_previous_success(first_failure)).decode('utf-8')
    samples, _types = parse_exposition(second_failure)
    assert _metric(samples, 'last_success_timestamp_seconds') == STARTED + 400
    assert _metric(samples, 'last_run_timestamp_seconds') == STARTED + 9000


@pytest.mark.parametrize('text, value', [
    ('', None), ('garbage\n', None), ('idp_recovery_drill_last_success_timestamp_seconds abc\n', None),
    ('idp_recovery_drill_last_success_timestamp_seconds NaN\n', None),
    ('# idp_recovery_drill_last_success_timestamp_seconds 5\n', None),
    ('idp_recovery_drill_last_success_timestamp_seconds_total 5\n', None),
    ('idp_recovery_drill_last_success_timestamp_seconds{} 12.5\n', 12.5),
    ('x 1\nidp_recovery_drill_last_success_timestamp_seconds 1.7e9\n', 1.7e9),
])
def test_read_previous_success(text, value):
    assert read_previous_success(text) == value


def test_metric_labels_are_escaped():
    name = 'we"ird\\name\nline'
    report = _report([_service(name=name, kind='k"\\')])
    text = render_metrics(report).decode('utf-8')
    assert len(text.splitlines()) == len([line for line in text.split('\n') if line])
    samples, _types = parse_exposition(text)
    assert _metric(samples, 'service_success', service=name, kind='k"\\') == 1
