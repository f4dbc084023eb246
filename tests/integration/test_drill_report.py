# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""drill_report, run as Ansible runs it: files, modes, latest copies, check mode, failing, metrics."""

from __future__ import annotations

import json
import os
import stat
import time
from html.parser import HTMLParser

import pytest

HOUR = 3600.0


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def _services(started, age=3 * HOUR, keto_ok=True):
    return [
        {
            'name': 'authentik', 'kind': 'authentik',
            'set': '/var/tmp/drill/authentik/20261031T000000Z', 'stamp': '20261031T000000Z',
            'set_timestamp': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started - age)),
            'source': 'offsite s3 idp-backups/prod', 'target': 'scratch container idp-drill-pg',
            'steps': [{'name': 'fetch', 'seconds': 41.5}, {'name': 'verify', 'seconds': 2.25},
                      {'name': 'restore', 'seconds': 180}, {'name': 'checks', 'seconds': 6}],
            'checks': [{'name': 'row counts', 'kind': 'row_counts', 'ok': True, 'detail': '212 tables equal'},
                       {'name': 'health', 'kind': 'http', 'ok': True, 'detail': '<script>alert(1)</script>'}],
        },
        {
            'name': 'ory', 'kind': 'ory', 'set': '/var/tmp/drill/ory/20261031T010000Z', 'stamp': '20261031T010000Z',
            'set_timestamp': started - age,
            'steps': [{'name': 'fetch', 'seconds': 3}, {'name': 'import', 'seconds': 25}],
            'checks': [{'name': 'keto-deny', 'kind': 'keto', 'ok': keto_ok, 'detail': 'user:bob may not read doc:1'}],
        },
    ]


class _Page(HTMLParser):
    def __init__(self):
        HTMLParser.__init__(self, convert_charrefs=True)
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)

    def error(self, message):  # pragma: no cover - only on very old Pythons
        raise AssertionError(message)


def _page(path):
    page = _Page()
    page.feed(path.read_text(encoding='utf-8'))
    page.close()
    return page


def _metric(text, line_start):
    for line in text.splitlines():
        if line.startswith(line_start + ' ') or line.startswith(line_start + '{'):
            return float(line.rsplit(' ', 1)[1])
    return None


def test_passed_writes_reports_latest_and_metrics(run_module, tmp_path):
    dest = tmp_path / 'reports' / 'drills'
    metrics_dir = tmp_path / 'textfile'
    metrics_dir.mkdir()
    metrics = metrics_dir / 'idp_recovery_drill.prom'
    started = time.time() - 300
    result = run_module('drill_report', dest_dir=dest, started=started, rto_target='4h', rpo_target='PT24H',
                        services=_services(started), context={'host': 'idp1', 'playbook': 'idp.recovery.drill'},
                        metrics_file=metrics)
    assert result['_rc'] == 0, result
    assert result['changed'] is True
    assert result['result'] == 'passed' and result['reasons'] == []
    assert result['rto_target_seconds'] == 14400 and result['rpo_target_seconds'] == 86400
    assert result['duration_seconds'] == pytest.approx(300, abs=30)
    assert result['services'][0] == {
        'name': 'authentik', 'kind': 'authentik', 'result': 'passed', 'rto_seconds': 229.75,
        'rpo_seconds': pytest.approx(3 * HOUR, abs=1), 'rto_ok': True, 'rpo_ok': True, 'checks_failed': 0,
        'steps_failed': 0, 'rto_human': '3m 50s', 'rpo_human': result['services'][0]['rpo_human'],
        'checks_total': 2}
    assert result['services'][0]['rpo_human'].startswith('3h 00m')
    assert _mode(dest) == 0o700
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))
    assert result['report_json'] == str(dest / ('drill-%s.json' % stamp))
    for key in ('report_json', 'report_html', 'latest_json', 'latest_html'):
        assert _mode(result[key]) == 0o600, key
    assert (dest / 'latest.json').read_bytes() == (dest / ('drill-%s.json' % stamp)).read_bytes()
    assert (dest / 'latest.html').read_bytes() == (dest / ('drill-%s.html' % stamp)).read_bytes()
    assert sorted(os.listdir(str(dest))) == sorted(['drill-%s.json' % stamp, 'drill-%s.html' % stamp, 'latest.json',
                                                    'latest.html'])
    report = json.loads((dest / 'latest.json').read_text())
    assert report['format_version'] == 1 and report['result'] == 'passed'
    assert report['context']['host'] == 'idp1'
    assert report['files'] == {'json': 'drill-%s.json' % stamp, 'html': 'drill-%s.html' % stamp}
    assert [step['name'] for step in report['services'][0]['steps']] == ['fetch', 'verify', 'restore', 'checks']

    page = _page(dest / 'latest.html')
    text = ' '.join(page.text)
    assert page.tags.count('svg') == 2
    assert 'script' not in page.tags
    assert '<script>alert(1)</script>' in text
    assert 'PASSED' in text and 'row counts' in text and 'keto-deny' in text and 'fetch \u2014 41.5s' in text

    assert _mode(metrics) == 0o644
    prom = metrics.read_text()
    assert _metric(prom, 'idp_recovery_drill_success') == 1
    assert _metric(prom, 'idp_recovery_drill_last_success_timestamp_seconds') == pytest.approx(time.time(), abs=60)
    assert _metric(prom, 'idp_recovery_drill_rto_seconds{service="ory",kind="ory"}') == 28
    assert not [name for name in os.listdir(str(metrics_dir)) if name.startswith('.')]


def test_failed_run_keeps_the_last_success_and_replaces_latest(run_module, tmp_path):
    dest = tmp_path / 'drills'
    metrics = tmp_path / 'drill.prom'
    started = time.time() - 600
    first = run_module('drill_report', dest_dir=dest, report_name='first', started=started, rto_target=14400,
                       rpo_target='1d', services=_services(started), metrics_file=metrics, metrics_mode='0640')
    assert first['result'] == 'passed', first
    assert _mode(metrics) == 0o640
    success = _metric(metrics.read_text(), 'idp_recovery_drill_last_success_timestamp_seconds')

    again = time.time() - 60
    second = run_module('drill_report', dest_dir=dest, report_name='second', started=again, rto_target='4h',
                        rpo_target='24h', services=_services(again, age=31 * HOUR, keto_ok=False),
                        metrics_file=metrics, metrics_mode='0640')
    assert second['failed'] is True and second['_rc'] != 0
    assert second['result'] == 'failed'
    assert second['reasons'] == ['authentik: the set is 31h old, target 24h',
                                 'ory: check keto-deny failed: user:bob may not read doc:1',
                                 'ory: the set is 31h old, target 24h']
    for reason in second['reasons']:
        assert reason in second['msg']
    assert second['last_success_timestamp'] == success
    # written before failing
    assert json.loads((dest / 'latest.json').read_text())['name'] == 'second'
    assert json.loads((dest / 'first.json').read_text())['result'] == 'passed'
    assert json.loads((dest / 'second.json').read_text())['result'] == 'failed'
    page = _page(dest / 'latest.html')
    text = ' '.join(page.text)
    assert 'FAILED' in text and 'Why the drill failed' in text
    prom = metrics.read_text()
    assert _metric(prom, 'idp_recovery_drill_success') == 0
    assert _metric(prom, 'idp_recovery_drill_last_success_timestamp_seconds') == success
    assert _metric(prom, 'idp_recovery_drill_checks_failed{service="ory",kind="ory"}') == 1
    assert _metric(prom, 'idp_recovery_drill_service_success{service="authentik",kind="authentik"}') == 0

    third = run_module('drill_report', dest_dir=dest, report_name='third', started=again, rto_target='4h',
                       rpo_target='24h', services=_services(again, age=31 * HOUR), metrics_file=metrics,
                       fail_on_failure=False)
    assert third['_rc'] == 0 and not third.get('failed')
    assert third['result'] == 'failed' and third['reasons'] == ['authentik: the set is 31h old, target 24h',
                                                                'ory: the set is 31h old, target 24h']
    assert _metric(metrics.read_text(), 'idp_recovery_drill_last_success_timestamp_seconds') == success
    assert _mode(metrics) == 0o644


def test_check_mode_writes_nothing(run_module, tmp_path):
    dest = tmp_path / 'drills'
    metrics = tmp_path / 'drill.prom'
    started = time.time() - 60
    result = run_module('drill_report', check_mode=True, dest_dir=dest, started=started, rto_target='4h',
                        rpo_target='24h', services=_services(started, keto_ok=False), metrics_file=metrics)
    assert result['failed'] is True and result['changed'] is True
    assert result['result'] == 'failed'
    assert result['report_html'].startswith(str(dest))
    assert result['latest_html'] == str(dest / 'latest.html')
    assert not dest.exists() and not metrics.exists()
    assert os.listdir(str(tmp_path)) == []


def test_bad_input_fails_clearly_and_writes_nothing(run_module, tmp_path):
    dest = tmp_path / 'drills'
    started = time.time()
    result = run_module('drill_report', dest_dir=dest, started=started, rto_target='4 hours', rpo_target='24h',
                        services=_services(started))
    assert result['failed'] is True
    assert "rto_target '4 hours' is not a duration" in result['msg']
    services = _services(started)
    services[1]['steps'][0]['seconds'] = 'fast'
    result = run_module('drill_report', dest_dir=dest, started=started, rto_target='4h', rpo_target='24h',
                        services=services)
    assert result['failed'] is True
    assert 'services[1] (ory).steps[0].seconds must be a number of seconds' in result['msg']
    result = run_module('drill_report', dest_dir=dest, started=started, rto_target='4h', rpo_target='24h',
                        services=_services(started), metrics_file=tmp_path / 'missing' / 'x.prom')
    assert result['failed'] is True and 'does not exist' in result['msg']
    assert not dest.exists()


def test_through_a_playbook_with_a_report_name(run_playbook, tmp_path):
    dest = tmp_path / 'drills'
    started = time.time() - 120
    tasks = [
        {'name': 'Write the drill report', 'idp.recovery.drill_report': {
            'dest_dir': str(dest), 'name': 'drill-monthly', 'started': str(started), 'rto_target': '1h30m',
            'rpo_target': 'P1D', 'services': _services(started, keto_ok=False), 'fail_on_failure': False},
         'register': 'drill'},
        {'name': 'Show the verdict', 'ansible.builtin.debug': {'msg': '{{ drill.result }}: {{ drill.reasons }}'}},
    ]
    rc, stdout, stderr = run_playbook(tasks)
    assert rc == 0, stdout + stderr
    results = run_playbook.results(stdout)
    assert results[0]['result'] == 'failed' and results[0]['changed'] is True
    assert results[0]['report_html'] == str(dest / 'drill-monthly.html')
    assert results[0]['rto_target_seconds'] == 5400
    assert results[1]['msg'].startswith('failed: ')
    assert 'ory: check keto-deny failed' in results[1]['msg']
    assert sorted(os.listdir(str(dest))) == ['drill-monthly.html', 'drill-monthly.json', 'latest.html', 'latest.json']
