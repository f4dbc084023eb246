# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The throughput of a drill's steps against the stock tools' benchmark, its limiting step, and the
benchmark file read as hostile input."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._drill.html_page import render_html
from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import build_report, render_json
from ansible_collections.idp.recovery.plugins.module_utils._drill.metrics import render_metrics
from ansible_collections.idp.recovery.plugins.module_utils._drill.report import load_benchmark, read_benchmark_file
from ansible_collections.idp.recovery.plugins.module_utils._drill.throughput import (
    MAX_BENCHMARK_BYTES, MIB, NO_BENCHMARK, STOCK_STEPS, benchmark_for, limiting_step, parse_benchmark, rate_text,
    ratio_text, step_throughput, stock_text, throughput_lines, throughput_summary)

# a benchmark in the schema of docs/performance.json
FIXTURE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..', 'fixtures',
                                        'drill', 'performance.json'))
STARTED = 1793415600.0
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def _fixture():
    with open(FIXTURE, 'rb') as handle:
        return handle.read()


def _benchmark():
    found = parse_benchmark(_fixture(), FIXTURE)
    assert found['problem'] is None and found['ignored'] == []
    return found


def _step(name, seconds, **extra):
    step = {'name': name, 'seconds': float(seconds), 'bytes': None, 'items': None, 'items_kind': None, 'benchmark': None}
    step.update(extra)
    return step


def _service(kind='postgres', steps=None):
    return {
        'name': 'ledger', 'kind': kind, 'set': '/var/tmp/drill/ledger/20261031T000000Z', 'stamp': '20261031T000000Z',
        'steps': steps if steps is not None else [
            {'name': 'fetch', 'seconds': 2, 'bytes': 500 * MIB},
            {'name': 'verify', 'seconds': 1, 'bytes': 200 * MIB},
            {'name': 'start scratch database', 'seconds': 3},
            {'name': 'restore', 'seconds': 10, 'bytes': 300 * MIB},
            {'name': 'checks', 'seconds': 0.5}],
        'checks': [{'name': 'row counts', 'kind': 'row_counts', 'ok': True}],
    }


def _report(services, benchmark=None):
    return build_report(services, STARTED, STARTED + 60, '4h', '24h', benchmark=benchmark)


# ----------------------------------------------------------------------------------------- the map

@pytest.mark.parametrize('step, kind, stock', [
    ('fetch', 'authentik', 'upload'), ('fetch', 'ory', 'upload'), ('verify', 'postgres', 'read_test'),
    ('restore', 'authentik', 'restore'), ('restore', 'postgres', 'restore'), ('restore', 'ory', 'ory_import'),
    ('import', 'ory', 'ory_import'), ('restore', 'pitr', 'pitr'), ('restore', 'kotauth', None),
    ('pick', 'postgres', None), ('checks', 'postgres', None), ('start scratch database', 'postgres', None),
    ('pgbackrest verify', 'pitr', None), ('dump', 'authentik', 'dump'), ('extract', 'authentik', 'extract'),
])
def test_each_drill_step_maps_to_one_stock_step(step, kind, stock):
    assert benchmark_for(step, kind) == stock
    assert stock is None or stock in STOCK_STEPS


def test_the_fixture_follows_the_schema():
    found = _benchmark()
    assert sorted(found['stock']) == sorted(STOCK_STEPS)
    assert found['generated'] == '2026-12-01T04:00:00Z'
    assert found['machine'] == {'nproc': 2, 'cpu': 'Intel(R) Xeon(R) Processor', 'load': '0.12 0.30 0.25'}
    assert found['stock']['restore'] == {'step': 'restore', 'tool': 'gunzip -c FILE | psql', 'size': '1G',
                                         'rate': 40.0, 'unit': 'MiB'}
    # the Ory figures count identities per second
    assert found['stock']['ory_import']['unit'] == 'identities'


# ----------------------------------------------------------------------------------------- throughput

def test_rate_ratio_and_share():
    found = step_throughput(_step('restore', 10, bytes=300 * MIB), 'postgres', _benchmark(), 20.0)
    assert found['mib_per_s'] == pytest.approx(30.0)
    assert found['stock']['tool'] == 'gunzip -c FILE | psql' and found['stock_step'] == 'restore'
    assert found['ratio'] == pytest.approx(0.75)
    assert found['share'] == pytest.approx(0.5)
    assert found['note'] is None


def test_a_step_without_a_byte_count_shows_its_duration_only():
    found = step_throughput(_step('verify', 4), 'postgres', _benchmark(), 10.0)
    assert found['mib_per_s'] is None and found['ratio'] is None
    assert found['stock']['step'] == 'read_test' and found['note'] == 'no byte count'
    other = step_throughput(_step('checks', 4), 'postgres', _benchmark(), 10.0)
    assert other['stock'] is None and other['note'] == 'no stock counterpart' and other['share'] == pytest.approx(0.4)


def test_without_a_benchmark_the_rate_stays_and_the_stock_cell_says_so():
    for benchmark in (None, parse_benchmark(b'not json')):
        found = step_throughput(_step('fetch', 2, bytes=100 * MIB), 'postgres', benchmark, 2.0)
        assert found['mib_per_s'] == pytest.approx(50.0)
        assert found['stock'] is None and found['ratio'] is None and found['note'] == NO_BENCHMARK


def test_an_ory_import_is_compared_in_identities_per_second():
    found = step_throughput(_step('restore', 4, items=1000, items_kind='identities'), 'ory', _benchmark(), 8.0)
    assert found['items_per_s'] == pytest.approx(250.0) and found['mib_per_s'] is None
    assert found['stock']['unit'] == 'identities' and found['ratio'] == pytest.approx(0.5)
    # bytes are not identities
    bytes_only = step_throughput(_step('restore', 4, bytes=MIB), 'ory', _benchmark(), 8.0)
    assert bytes_only['ratio'] is None and bytes_only['note'] == 'no count of identities'


def test_the_step_may_name_its_benchmark_or_none():
    named = step_throughput(_step('copy back', 2, bytes=500 * MIB, benchmark='upload'), 'postgres', _benchmark(), 2.0)
    assert named['ratio'] == pytest.approx(1.0)
    unnamed = step_throughput(_step('fetch', 2, bytes=500 * MIB, benchmark=''), 'postgres', _benchmark(), 2.0)
    assert unnamed['stock'] is None and unnamed['note'] == 'no stock counterpart'


def test_a_step_too_short_to_time():
    found = step_throughput(_step('restore', 0, bytes=MIB), 'postgres', _benchmark(), 0.0)
    assert found['mib_per_s'] is None and found['share'] is None and found['note'] == 'too short to time'


def test_texts_of_tiny_rates_and_ratios():
    found = step_throughput(_step('fetch', 10, bytes=1000), 'postgres', _benchmark(), 10.0)
    assert rate_text(found) == '<0.01 MiB/s' and ratio_text(found) == '<0.01x'
    found = step_throughput(_step('fetch', 1, bytes=25 * MIB), 'postgres', _benchmark(), 1.0)
    assert rate_text(found) == '25.0 MiB/s' and ratio_text(found) == '0.10x'
    assert stock_text(found) == 'rclone copy: 250 MiB/s (1G)'


def test_limiting_step():
    steps = [_step('fetch', 2), _step('verify', 1), _step('restore', 10), _step('checks', 0.5)]
    assert limiting_step(steps) == {'name': 'restore', 'position': 2, 'seconds': 10.0, 'share': pytest.approx(10 / 13.5)}
    # a tie goes to the first; no time at all, no limiting step
    assert limiting_step([_step('a', 3), _step('b', 3)])['name'] == 'a'
    assert limiting_step([_step('a', 0)]) is None
    assert limiting_step([]) is None


# ----------------------------------------------------------------------------------------- the report

def test_the_report_carries_throughput_and_the_limiting_step():
    report = _report([_service()], _benchmark())
    service = report['services'][0]
    assert service['limiting_step']['name'] == 'restore'
    by_name = dict((step['name'], step['throughput']) for step in service['steps'])
    assert by_name['restore']['limiting'] is True and by_name['fetch']['limiting'] is False
    assert by_name['fetch']['mib_per_s'] == pytest.approx(250.0) and by_name['fetch']['ratio'] == pytest.approx(1.0)
    assert by_name['verify']['ratio'] == pytest.approx(0.5)
    assert by_name['start scratch database']['mib_per_s'] is None
    assert report['benchmark']['source'] == FIXTURE and report['benchmark']['problem'] is None
    assert json.loads(render_json(report).decode('utf-8'))['services'][0]['steps'][3]['throughput']['ratio'] == 0.75

    lines = throughput_lines(service)
    assert lines[0] == 'ledger: restore limits the recovery time (10s, 61% of 16.5s)'
    assert '  restore (limiting): 10s; 30.0 MiB/s; stock gunzip -c FILE | psql: 40.0 MiB/s (1G), 0.75x' in lines
    assert '  checks: 500 ms; duration only' in lines
    summary = throughput_summary(report)
    assert summary[0]['name'] == 'ledger' and summary[0]['steps'][0]['name'] == 'fetch'
    assert summary[0]['text'] == lines

    page = render_html(report).decode('utf-8')
    assert 'Stock tool in the last benchmark' in page and '30.0 MiB/s' in page and '0.75x' in page
    assert 'gunzip -c FILE | psql: 40.0 MiB/s (1G)' in page
    assert '<tr class="limiting"><td>restore</td>' in page
    assert 'restore \u2014 10s, 61% of the recovery time' in page


def test_without_a_benchmark_the_report_says_no_benchmark_on_record():
    report = _report([_service()])
    assert report['benchmark']['problem'] == 'no benchmark file was given' and report['benchmark']['steps'] == []
    lines = throughput_lines(report['services'][0])
    assert '  restore (limiting): 10s; 30.0 MiB/s; no benchmark on record' in lines
    page = render_html(report).decode('utf-8')
    assert 'no benchmark on record (no benchmark file was given)' in page
    # the metrics are those of before
    assert 'throughput' not in render_metrics(report).decode('utf-8')


def test_hostile_benchmark_text_is_escaped_and_capped():
    data = json.loads(_fixture().decode('utf-8'))
    data['stock']['restore']['tool'] = HOSTILE + 'x' * 1000
    data['machine']['cpu'] = HOSTILE
    found = parse_benchmark(json.dumps(data))
    assert len(found['stock']['restore']['tool']) == 200
    page = render_html(_report([_service()], found)).decode('utf-8')
    assert '<script>' not in page and '<img' not in page and '&lt;script&gt;' in page


@pytest.mark.parametrize('mutate, where', [
    (lambda s: s['steps'][0].update(bytes=-1), 'steps[0].bytes must be a whole number'),
    (lambda s: s['steps'][0].update(bytes=1.5), 'steps[0].bytes must be a whole number'),
    (lambda s: s['steps'][0].update(bytes=True), 'steps[0].bytes must be a whole number'),
    (lambda s: s['steps'][0].update(bytes='lots'), 'steps[0].bytes must be a whole number'),
    (lambda s: s['steps'][0].update(items=[1]), 'steps[0].items must be a whole number'),
    (lambda s: s['steps'][0].update(benchmark='rsync'), 'steps[0].benchmark must be one of dump, dump_tcp'),
])
def test_bad_step_counts_are_refused(mutate, where):
    service = _service()
    mutate(service)
    with pytest.raises(RecoveryError, match=where.replace('[', r'\[').replace(']', r'\]')):
        _report([service])


def test_step_counts_as_text_are_accepted():
    service = _service(steps=[{'name': 'fetch', 'seconds': 2, 'bytes': '2097152', 'benchmark': 'none'}])
    step = _report([service], _benchmark())['services'][0]['steps'][0]
    assert step['bytes'] == 2 * MIB and step['throughput']['mib_per_s'] == pytest.approx(1.0)
    assert step['throughput']['note'] == 'no stock counterpart'


# ----------------------------------------------------------------------------------------- a hostile file

@pytest.mark.parametrize('data, problem', [
    (b'', 'not JSON'),
    (b'{"stock": ', 'not JSON'),
    (b'\xff\xfe{}', 'not UTF-8'),
    (b'[1, 2]', 'a JSON list, not an object'),
    (b'"text"', 'a JSON str, not an object'),
    (b'{}', 'no "stock" object'),
    (b'{"stock": [1]}', 'no "stock" object'),
    (b'[' * 100000 + b']' * 100000, 'not JSON'),
    (b' ' * (MAX_BENCHMARK_BYTES + 1), 'larger than'),
    (' ' * (MAX_BENCHMARK_BYTES + 1), 'larger than'),
    (None, 'not an object'),
])
def test_a_malformed_benchmark_is_no_benchmark(data, problem):
    found = parse_benchmark(data)
    assert problem in found['problem'] and found['stock'] == {}
    report = _report([_service()], found)
    assert report['benchmark']['problem'] == found['problem']
    assert all(step['throughput']['note'] in (NO_BENCHMARK, 'no stock counterpart')
               for step in report['services'][0]['steps'])


@pytest.mark.parametrize('entry, why', [
    ('fast', 'is a str, not an object'),
    ({'tool': 'gunzip | psql'}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': '40'}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': True}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': 0}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': -3.5}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': float('nan')}, 'mib_per_s must be a positive finite number'),
    ({'tool': 'gunzip | psql', 'mib_per_s': float('inf')}, 'mib_per_s must be a positive finite number'),
    ({'tool': ['gunzip'], 'mib_per_s': 40}, 'tool must be a non-empty string'),
    ({'tool': '  ', 'mib_per_s': 40}, 'tool must be a non-empty string'),
])
def test_a_bad_entry_is_left_out_with_the_reason(entry, why):
    data = json.loads(_fixture().decode('utf-8'))
    data['stock']['restore'] = entry
    found = parse_benchmark(json.dumps(data))
    assert found['problem'] is None and 'restore' not in found['stock'] and 'upload' in found['stock']
    assert found['ignored'] == ['restore: %s' % why] or found['ignored'][0].startswith('restore: %s' % why)
    step = step_throughput(_step('restore', 10, bytes=MIB), 'postgres', found, 10.0)
    assert step['note'] == NO_BENCHMARK and step['mib_per_s'] == pytest.approx(0.1)


def test_nan_in_the_json_text_and_unknown_steps():
    text = '{"stock": {"restore": {"tool": "psql", "mib_per_s": NaN}, "teleport": {"tool": "x", "mib_per_s": 1}}}'
    found = parse_benchmark(text)
    assert found['stock'] == {} and found['ignored'][0].startswith('restore: mib_per_s must be')
    assert found['ignored'][1] == 'teleport: not a step of the benchmark'
    many = parse_benchmark(json.dumps({'stock': dict(('s%d' % n, {}) for n in range(5000))}))
    assert len(many['ignored']) == 11 and many['ignored'][-1] == 'and 4990 more'


def test_machine_and_generated_are_type_checked():
    data = json.loads(_fixture().decode('utf-8'))
    data['machine'] = {'nproc': 'two', 'cpu': 7, 'load': None}
    data['generated'] = {'when': 'now'}
    found = parse_benchmark(json.dumps(data))
    assert found['machine'] == {'nproc': None, 'cpu': None, 'load': None} and found['generated'] is None
    data['machine'] = 'big'
    assert parse_benchmark(json.dumps(data))['machine'] is None


# ----------------------------------------------------------------------------------------- reading the file

def test_read_the_fixture_file():
    found = read_benchmark_file(FIXTURE)
    assert found['problem'] is None and found['source'] == FIXTURE and len(found['stock']) == len(STOCK_STEPS)


def test_files_that_cannot_be_used(tmp_path):
    missing = str(tmp_path / 'missing.json')
    assert read_benchmark_file(missing)['problem'] == '%s does not exist' % missing
    assert read_benchmark_file(str(tmp_path))['problem'] == '%s is not a regular file' % tmp_path
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    assert read_benchmark_file(fifo)['problem'] == '%s is not a regular file' % fifo
    large = tmp_path / 'large.json'
    large.write_bytes(b' ' * (MAX_BENCHMARK_BYTES + 1))
    assert read_benchmark_file(str(large))['problem'] == '%s is larger than %d bytes' % (large, MAX_BENCHMARK_BYTES)
    broken = tmp_path / 'broken.json'
    broken.write_bytes(b'{"stock": {')
    assert read_benchmark_file(str(broken))['problem'].startswith('%s: the benchmark is not JSON' % broken)
    link = tmp_path / 'link.json'
    link.symlink_to(FIXTURE)
    assert read_benchmark_file(str(link))['problem'] is None


def test_load_benchmark_from_the_module_options(tmp_path):
    assert load_benchmark(None, None)['problem'] == 'no benchmark file was given'
    assert load_benchmark(None, FIXTURE)['source'] == FIXTURE
    # content read on the controller, the file only naming it
    given = load_benchmark(_fixture().decode('utf-8'), str(tmp_path / 'elsewhere.json'))
    assert given['problem'] is None and given['source'] == str(tmp_path / 'elsewhere.json')
    assert load_benchmark(json.loads(_fixture().decode('utf-8')), None)['stock']['pitr']['rate'] == 120.0
    unread = load_benchmark('', '/controller/docs/performance.json')
    assert unread['problem'].startswith('/controller/docs/performance.json could not be read') and not unread['stock']
    assert load_benchmark('[]', '/x.json')['problem'] == '/x.json: the benchmark is a JSON list, not an object'
