# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the throughput of a drill's steps against the stock tools' benchmark.

Each step that knows how much it moved (bytes, or identities for an Ory import) gets its rate; the
step is matched with one step of the last benchmark (``docs/performance.json``: what the plain
shell pipeline reached on the same kind of work) and the ratio of the two is given. The step with
the largest share of the recovery time is the one that limits it. The benchmark file is read as
hostile input: size capped, every value type-checked, anything unusable left out with the reason.
Pure functions only; the caller reads the file.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import math

from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import human_duration, is_number

MIB = 1024 * 1024
MAX_BENCHMARK_BYTES = MIB
MAX_TEXT = 200
MAX_IGNORED = 10
NO_BENCHMARK = 'no benchmark on record'

# the steps of docs/performance.json; ory_export and ory_import count identities per second
STOCK_STEPS = ('dump', 'dump_tcp', 'restore', 'encrypt', 'extract', 'read_test', 'upload', 'ory_export', 'ory_import',
               'pitr')
STOCK_UNITS = {'ory_export': 'identities', 'ory_import': 'identities'}
BYTES_UNIT = 'MiB'

# a drill step -> the stock step it is compared with (a step may name its own with "benchmark")
STEP_BENCHMARKS = {
    'fetch': 'upload',          # offsite_fetch copies the set back: compared with rclone copy of the same size
    'verify': 'read_test',      # backup_set verified: age -d | zstd -d > /dev/null of every payload
    'dump': 'dump',
    'encrypt': 'encrypt',
    'extract': 'extract',
    'upload': 'upload',
}
RESTORE_STEPS = ('restore', 'import')
RESTORE_BENCHMARKS = {
    'authentik': 'restore',     # the database restore: gunzip -c FILE | psql of the same database
    'postgres': 'restore',
    'ory': 'ory_import',        # identities per second against the rate-limit-bound minimum
    'pitr': 'pitr',             # pgbackrest restore of the same backup
}


def benchmark_for(step_name, kind):
    """The stock step a drill step of this name in a service of this kind is compared with, or None."""
    if step_name in RESTORE_STEPS:
        return RESTORE_BENCHMARKS.get(kind)
    return STEP_BENCHMARKS.get(step_name)


def _short_text(value):
    if not isinstance(value, str):
        return None
    value = ' '.join(value.split())
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT - 1] + '\u2026'
    return value or None


def _positive(value):
    if not is_number(value):
        return None
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value <= 0:
        return None
    return value


def _stock_entry(key, entry):
    """(entry, None) or (None, why it is left out)."""
    if not isinstance(entry, dict):
        return None, 'is a %s, not an object' % type(entry).__name__
    rate = _positive(entry.get('mib_per_s'))
    if rate is None:
        return None, 'mib_per_s must be a positive finite number, got %s' % _short_text(repr(entry.get('mib_per_s')))
    tool = _short_text(entry.get('tool'))
    if tool is None:
        return None, 'tool must be a non-empty string'
    return {'step': key, 'tool': tool, 'size': _short_text(entry.get('size')), 'rate': rate,
            'unit': STOCK_UNITS.get(key, BYTES_UNIT)}, None


def parse_benchmark(data, source=None):
    """The benchmark from a file's bytes or text, or from already decoded JSON (a dict); never raises.

    Returns {source, generated, machine, stock: {step: entry}, ignored: [why], problem}. With a
    problem (unreadable, not JSON, not the schema) stock is empty and every step shows NO_BENCHMARK.
    """
    result = {'source': _short_text(source) if source else None, 'generated': None, 'machine': None, 'stock': {},
              'ignored': [], 'problem': None}
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_BENCHMARK_BYTES:
            result['problem'] = 'the benchmark is larger than %d bytes' % MAX_BENCHMARK_BYTES
            return result
        try:
            data = data.decode('utf-8')
        except UnicodeDecodeError:
            result['problem'] = 'the benchmark is not UTF-8 text'
            return result
    if isinstance(data, str):
        if len(data) > MAX_BENCHMARK_BYTES:
            result['problem'] = 'the benchmark is larger than %d bytes' % MAX_BENCHMARK_BYTES
            return result
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            result['problem'] = 'the benchmark is not JSON: %s' % _short_text(str(exc))
            return result
    if not isinstance(data, dict):
        result['problem'] = 'the benchmark is a JSON %s, not an object' % type(data).__name__
        return result
    stock = data.get('stock')
    if not isinstance(stock, dict):
        result['problem'] = 'the benchmark has no "stock" object'
        return result
    result['generated'] = _short_text(data.get('generated'))
    machine = data.get('machine')
    if isinstance(machine, dict):
        nproc = machine.get('nproc')
        found = {'nproc': nproc if is_number(nproc) and nproc == int(nproc) and 0 < nproc < 1e6 else None,
                 'cpu': _short_text(machine.get('cpu')), 'load': _short_text(machine.get('load'))}
        if found['nproc'] is not None:
            found['nproc'] = int(found['nproc'])
        result['machine'] = found
    ignored = []
    for key in sorted(stock, key=str):
        if key not in STOCK_STEPS:
            ignored.append('%s: not a step of the benchmark' % _short_text(str(key)))
            continue
        entry, why = _stock_entry(key, stock[key])
        if entry is None:
            ignored.append('%s: %s' % (key, why))
        else:
            result['stock'][key] = entry
    if len(ignored) > MAX_IGNORED:
        ignored = ignored[:MAX_IGNORED] + ['and %d more' % (len(ignored) - MAX_IGNORED)]
    result['ignored'] = ignored
    return result


def no_benchmark(problem, source=None):
    """The benchmark when there is none to read (no file given, missing, unreadable)."""
    found = parse_benchmark({'stock': {}}, source)
    found['problem'] = problem
    return found


def benchmark_summary(benchmark):
    """What the report records about the benchmark it compared with."""
    if benchmark is None:
        benchmark = no_benchmark('no benchmark file was given')
    return {
        'source': benchmark['source'],
        'generated': benchmark['generated'],
        'machine': benchmark['machine'],
        'steps': sorted(benchmark['stock']),
        'ignored': list(benchmark['ignored']),
        'problem': benchmark['problem'],
    }


def _rate(amount, seconds, divisor=1.0):
    if amount is None or seconds <= 0:
        return None
    return amount / divisor / seconds


def step_throughput(step, kind, benchmark, rto_seconds):
    """The throughput of one normalised step: what it moved, its rate, its stock counterpart and the ratio."""
    seconds = step['seconds']
    stock_step = step['benchmark'] if step.get('benchmark') is not None else benchmark_for(step['name'], kind)
    stock_step = stock_step or None
    moved_bytes = step.get('bytes')
    items = step.get('items')
    items_kind = step.get('items_kind') or ('items' if items is not None else None)
    found = {
        'bytes': moved_bytes,
        'items': items,
        'items_kind': items_kind,
        'mib_per_s': _rate(moved_bytes, seconds, MIB),
        'items_per_s': _rate(items, seconds),
        'share': seconds / rto_seconds if rto_seconds > 0 else None,
        'limiting': False,
        'stock_step': stock_step,
        'stock': None,
        'ratio': None,
        'note': None,
    }
    if stock_step is None:
        found['note'] = 'no stock counterpart'
        return found
    entry = (benchmark or {}).get('stock', {}).get(stock_step)
    if entry is None:
        found['note'] = NO_BENCHMARK
        return found
    found['stock'] = dict(entry)
    if entry['unit'] == BYTES_UNIT:
        rate, missing = found['mib_per_s'], 'no byte count'
    elif items_kind == entry['unit']:
        rate, missing = found['items_per_s'], 'no count of %s' % entry['unit']
    else:
        rate, missing = None, 'no count of %s' % entry['unit']
    if rate is not None:
        found['ratio'] = rate / entry['rate']
    elif (moved_bytes if entry['unit'] == BYTES_UNIT else items) is not None:
        found['note'] = 'too short to time'
    else:
        found['note'] = missing
    return found


def limiting_step(steps):
    """The step with the largest share of the recovery time ({name, position, seconds, share}), or None."""
    total = sum(step['seconds'] for step in steps)
    if not steps or total <= 0:
        return None
    position = max(range(len(steps)), key=lambda index: (steps[index]['seconds'], -index))
    return {'name': steps[position]['name'], 'position': position, 'seconds': steps[position]['seconds'],
            'share': steps[position]['seconds'] / total}


def annotate_service(service, benchmark):
    """Add each step's throughput and the service's limiting step to a judged service (in place)."""
    rto = service['rto_seconds']
    for step in service['steps']:
        step['throughput'] = step_throughput(step, service['kind'], benchmark, rto)
    limiting = limiting_step(service['steps'])
    if limiting is not None:
        service['steps'][limiting['position']]['throughput']['limiting'] = True
    service['limiting_step'] = limiting
    return service


def rate_text(throughput):
    """'48.3 MiB/s', '212 identities/s', or None when the step moved nothing it counted."""
    if throughput['mib_per_s'] is not None:
        return '%s MiB/s' % _number(throughput['mib_per_s'])
    if throughput['items_per_s'] is not None:
        return '%s %s/s' % (_number(throughput['items_per_s']), throughput['items_kind'])
    return None


def stock_text(throughput):
    """'rclone copy: 110 MiB/s (1G)', or why there is no comparison."""
    stock = throughput['stock']
    if stock is None:
        return NO_BENCHMARK if throughput['note'] == NO_BENCHMARK else None
    return '%s: %s %s/s%s' % (stock['tool'], _number(stock['rate']), stock['unit'],
                              ' (%s)' % stock['size'] if stock['size'] else '')


def ratio_text(throughput):
    """'0.87x' (the step's rate over the stock tool's), '<0.01x', or None."""
    if throughput['ratio'] is None:
        return None
    return '%.2fx' % throughput['ratio'] if throughput['ratio'] >= 0.01 else '<0.01x'


def share_text(throughput):
    return '%d%%' % int(round(throughput['share'] * 100)) if throughput['share'] is not None else None


def _number(value):
    if value < 0.01:
        return '<0.01'
    if value >= 100:
        return '%d' % int(round(value))
    if value >= 10:
        return '%.1f' % value
    return '%.2f' % value


def throughput_lines(service):
    """The text report of one service: its limiting step, then one line a step."""
    limiting = service.get('limiting_step')
    if limiting is None:
        lines = ['%s: no step took any time' % service['name']]
    else:
        lines = ['%s: %s limits the recovery time (%s, %d%% of %s)' % (
            service['name'], limiting['name'], human_duration(limiting['seconds']), int(round(limiting['share'] * 100)),
            human_duration(service['rto_seconds']))]
    for step in service['steps']:
        found = step['throughput']
        parts = [human_duration(step['seconds'])]
        rate = rate_text(found)
        parts.append(rate if rate else 'duration only')
        stock = stock_text(found)
        if stock == NO_BENCHMARK:
            parts.append(NO_BENCHMARK)
        elif stock:
            ratio = ratio_text(found)
            parts.append('stock %s%s' % (stock, ', %s' % ratio if ratio else ' (%s)' % found['note']))
        lines.append('  %s%s: %s' % (step['name'], ' (limiting)' if found['limiting'] else '', '; '.join(parts)))
    return lines


def throughput_summary(report):
    """The per-service throughput the module returns: limiting step, steps and text lines."""
    return [{'name': service['name'], 'limiting_step': service['limiting_step'],
             'steps': [dict(step['throughput'], name=step['name'], seconds=step['seconds']) for step in service['steps']],
             'text': throughput_lines(service)}
            for service in report['services']]
