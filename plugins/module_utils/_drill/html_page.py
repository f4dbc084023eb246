# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the HTML page of a drill report.

One self-contained page (inline CSS and SVG, no script, nothing fetched) with the verdict, the
reasons, a bar chart of the step timings against the RTO target, and the checks.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import math
from html import escape as _html_escape

from ansible_collections.idp.recovery.plugins.module_utils._drill.durations import human_duration, short_duration
from ansible_collections.idp.recovery.plugins.module_utils._drill.inputs import value_text
from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import PASSED
from ansible_collections.idp.recovery.plugins.module_utils._drill.throughput import (
    NO_BENCHMARK, rate_text, ratio_text, share_text, stock_text)


def esc(value):
    if value is None:
        return ''
    if not isinstance(value, str):
        value = value_text(value)
    return _html_escape(value, quote=True)


_CSS = '''
:root { --ok: #1b5e20; --ok-bg: #e8f5e9; --bad: #b71c1c; --bad-bg: #ffebee; --ink: #1a1a1a; --muted: #555;
  --line: #c8c8c8; --bar: #37474f; --warn-bg: #fff8e1; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 62rem; padding: 1rem; color: var(--ink); background: #fff;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1, h2, h3 { line-height: 1.2; margin: 1.2em 0 .4em; }
h1 { margin: 0; font-size: 1rem; font-weight: 600; letter-spacing: .02em; }
.banner { border: 4px solid; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
.banner.passed { border-color: var(--ok); background: var(--ok-bg); color: var(--ok); }
.banner.failed { border-color: var(--bad); background: var(--bad-bg); color: var(--bad); }
.verdict { font-size: 2.6rem; font-weight: 800; letter-spacing: .06em; margin: .1em 0; }
.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .4rem 0; }
.meta dt { color: var(--muted); }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.reasons, .warnings { border-left: 6px solid var(--bad); background: var(--bad-bg); padding: .5rem 1rem;
  margin: 1rem 0; }
.warnings { border-color: #8d6e00; background: var(--warn-bg); }
.reasons h2, .warnings h2 { margin-top: .3rem; font-size: 1.1rem; }
.reasons li, .warnings li { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #f2f2f2; }
td.num { text-align: right; white-space: nowrap; }
.ok { color: var(--ok); font-weight: 600; white-space: nowrap; }
.bad { color: var(--bad); font-weight: 700; white-space: nowrap; }
section.service { border-top: 2px solid var(--line); margin-top: 1.5rem; }
.badge { display: inline-block; border: 2px solid; border-radius: 4px; padding: 0 .4rem; font-size: .85rem;
  vertical-align: middle; margin-left: .4rem; }
.badge.passed { color: var(--ok); } .badge.failed { color: var(--bad); }
figure { margin: .5rem 0 1rem; }
figcaption { color: var(--muted); font-size: .85rem; }
svg { width: 100%; height: auto; display: block; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font-size: .85rem; }
tr.limiting td { background: var(--warn-bg); font-weight: 600; }
.note { color: var(--muted); font-size: .85rem; }
footer { color: var(--muted); font-size: .8rem; border-top: 1px solid var(--line); margin-top: 2rem;
  padding-top: .5rem; }
@media (max-width: 40rem) { body { padding: .5rem; font-size: 14px; } .verdict { font-size: 2rem; }
  .meta { grid-template-columns: 1fr; } .meta dt { margin-top: .3rem; } }
@media print { body { max-width: none; padding: 0; font-size: 11pt; } .scroll { overflow: visible; }
  section.service { break-inside: auto; } figure, table, tr { break-inside: avoid; } }
'''

_OK = '\u2714'
_BAD = '\u2718'
_LIMITING = '\u25c0'
_CHART_WIDTH = 720
_ROW = 34
_TOP = 8
_AXIS = 30


def _status(ok, ok_text='ok', bad_text='FAILED'):
    if ok:
        return '<span class="ok">%s %s</span>' % (_OK, ok_text)
    return '<span class="bad">%s %s</span>' % (_BAD, bad_text)


def _meta(rows):
    out = ['<dl class="meta">']
    for key, value in rows:
        if value is None or value == '':
            continue
        out.append('<dt>%s</dt><dd>%s</dd>' % (esc(key), value))
    out.append('</dl>')
    return '\n'.join(out)


def _tick_step(scale):
    """A round tick interval giving about four ticks on 0..scale."""
    candidates = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    for step in candidates:
        if scale / step <= 5:
            return step
    return 86400 * max(1, int(math.ceil(scale / 86400 / 5)))


def render_chart(service, rto_target, index):
    """An inline SVG waterfall of the service's steps (each starts where the previous ended)."""
    steps = service['steps']
    total = service['rto_seconds']
    if not steps:
        return '<p>No recovery step was recorded.</p>'
    scale = max(total, 0.001)
    target_fits = rto_target <= max(total * 1.5, 0.001)
    if target_fits:
        scale = max(scale, rto_target)
    label_x = 4
    plot = _CHART_WIDTH - 8
    rows = len(steps) + 1
    height = _TOP + rows * _ROW + _AXIS + (16 if not target_fits else 0)
    pattern = 'failed-hatch-%d' % index
    title_id = 'chart-title-%d' % index

    def x_of(seconds):
        return label_x + plot * (seconds / scale)

    out = ['<svg viewBox="0 0 %d %d" role="img" aria-labelledby="%s" font-family="system-ui, sans-serif" '
           'font-size="12">' % (_CHART_WIDTH, height, title_id),
           '<title id="%s">Recovery steps of %s: %s in total</title>' % (title_id, esc(service['name']),
                                                                         esc(human_duration(total))),
           '<defs><pattern id="%s" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)">'
           '<rect width="6" height="6" fill="#b71c1c"/><rect width="3" height="6" fill="#ef9a9a"/></pattern></defs>'
           % pattern]
    axis_y = _TOP + rows * _ROW
    step_size = _tick_step(scale)
    tick = 0.0
    while tick <= scale + 1e-9:
        x = x_of(tick)
        anchor = 'start' if tick == 0 else ('end' if x > _CHART_WIDTH - 40 else 'middle')
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>' % (x, _TOP, x, axis_y))
        out.append('<text x="%.1f" y="%d" text-anchor="%s" fill="#555">%s</text>'
                   % (x, axis_y + 14, anchor, esc(short_duration(tick) if tick else '0')))
        tick += step_size
    offset = 0.0
    for pos, step in enumerate(steps):
        y = _TOP + pos * _ROW
        x = x_of(offset)
        width = max(plot * (step['seconds'] / scale), 3.0)
        x = min(x, label_x + plot - width)
        fill = '#37474f' if step['ok'] else 'url(#%s)' % pattern
        label = '%s \u2014 %s' % (step['name'], human_duration(step['seconds']))
        if not step['ok']:
            label = '%s FAILED: %s' % (_BAD, label)
        out.append('<text x="%d" y="%d" fill="%s"%s>%s</text>' % (
            label_x, y + 12, '#1a1a1a' if step['ok'] else '#b71c1c', '' if step['ok'] else ' font-weight="bold"',
            esc(label)))
        out.append('<rect x="%.1f" y="%d" width="%.1f" height="13" fill="%s" stroke="%s"><title>%s</title></rect>'
                   % (x, y + 16, width, fill, '#1a1a1a' if not step['ok'] else 'none', esc(label)))
        offset += step['seconds']
    y = _TOP + len(steps) * _ROW
    total_ok = total <= rto_target
    out.append('<text x="%d" y="%d" font-weight="bold" fill="#1a1a1a">%s</text>' % (
        label_x, y + 12, esc('total recovery time \u2014 %s%s' % (
            human_duration(total), '' if total_ok else ' (%s over the RTO target)' % _BAD))))
    out.append('<rect x="%.1f" y="%d" width="%.1f" height="13" fill="%s"/>' % (
        x_of(0), y + 16, max(plot * (total / scale), 2.0), '#607d8b' if total_ok else '#b71c1c'))
    if target_fits:
        x = x_of(rto_target)
        anchor = 'end' if x > _CHART_WIDTH / 2 else 'start'
        shift = -4 if anchor == 'end' else 4
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#b71c1c" stroke-width="2" '
                   'stroke-dasharray="6 3"/>' % (x, _TOP - 4, x, axis_y))
        out.append('<text x="%.1f" y="%d" text-anchor="%s" fill="#b71c1c" font-weight="bold">%s</text>' % (
            x + shift, axis_y + 26, anchor, esc('RTO target %s' % short_duration(rto_target))))
    else:
        out.append('<text x="%d" y="%d" fill="#555">%s</text>' % (
            label_x, axis_y + 30, esc('RTO target %s is off this scale (far above the recovery time)'
                                      % short_duration(rto_target))))
    out.append('</svg>')
    return '\n'.join(out)


def _age_text(service, target):
    if service['rpo_seconds'] is None:
        return '%s unknown (target %s)' % (_BAD, esc(short_duration(target)))
    return '%s (target %s) %s' % (esc(human_duration(service['rpo_seconds'])), esc(short_duration(target)),
                                  _status(service['rpo_ok'], 'within target', 'TARGET MISSED'))


def _rto_text(service, target):
    return '%s (target %s) %s' % (esc(human_duration(service['rto_seconds'])), esc(short_duration(target)),
                                  _status(service['rto_ok'], 'within target', 'TARGET MISSED'))


def _limiting_text(service):
    limiting = service.get('limiting_step')
    if limiting is None:
        return esc('none (no step took any time)')
    return '%s %s \u2014 %s, %d%% of the recovery time' % (
        _LIMITING, esc(limiting['name']), esc(human_duration(limiting['seconds'])), int(round(limiting['share'] * 100)))


def _throughput_cells(found):
    """The share, throughput, stock and ratio cells of a step."""
    share = share_text(found) or ''
    if found['limiting']:
        share = '%s %s, limiting' % (_LIMITING, share)
    stock = stock_text(found)
    ratio = ratio_text(found)
    if ratio is None and found['stock'] is not None:
        ratio = found['note']
    return '<td class="num">%s</td><td class="num">%s</td><td>%s</td><td class="num">%s</td>' % (
        share, esc(rate_text(found) or 'duration only'), esc(stock or ''), esc(ratio or ''))


def _benchmark_text(benchmark):
    if not benchmark['steps']:
        return esc('%s (%s)' % (NO_BENCHMARK, benchmark['problem'] or 'the benchmark lists no step'))
    machine = benchmark['machine'] or {}
    parts = [benchmark['source'] or 'given', 'generated %s' % (benchmark['generated'] or 'at an unknown time')]
    if machine.get('nproc') or machine.get('cpu'):
        parts.append('on %s%s' % ('%s cores ' % machine['nproc'] if machine.get('nproc') else '', machine.get('cpu') or ''))
    if machine.get('load'):
        parts.append('load %s' % machine['load'])
    if benchmark['ignored']:
        parts.append('left out: %s' % '; '.join(benchmark['ignored']))
    return esc(', '.join(part.strip() for part in parts))


def _render_service(service, report, index):
    out = ['<section class="service" id="service-%d">' % index,
           '<h2>%s <small>(%s)</small><span class="badge %s">%s</span></h2>' % (
               esc(service['name']), esc(service['kind']), service['result'],
               esc('%s %s' % (_OK if service['result'] == PASSED else _BAD, service['result'].upper())))]
    if service['error']:
        stopped = 'The drill of this service stopped early: %s' % service['error']
        out.append('<p class="bad">%s %s</p>' % (_BAD, esc(stopped)))
    out.append(_meta([
        ('Set', esc(service['set']) if service['set'] else '%s none fetched' % _BAD),
        ('Stamp', esc(service['stamp'])),
        ('SHA-256 of its manifest', esc(service['manifest_sha256'])),
        ('Set time', esc(service['set_time'])),
        ('Fetched from', esc(service['source'])),
        ('Restored into', esc(service['target'])),
        ('Age of the set (RPO)', _age_text(service, report['rpo_target_seconds'])),
        ('Recovery time (RTO)', _rto_text(service, report['rto_target_seconds'])),
        ('Checks', '%d of %d passed' % (service['checks_total'] - service['checks_failed'], service['checks_total'])),
        ('Step that limits the recovery time', _limiting_text(service)),
    ]))
    out.append('<h3>Recovery steps</h3>')
    out.append('<figure>')
    out.append(render_chart(service, report['rto_target_seconds'], index))
    out.append('<figcaption>Each bar starts where the previous step ended; the last bar is the total recovery '
               'time. Failed steps are hatched and marked %s FAILED.</figcaption>' % _BAD)
    out.append('</figure>')
    if service['steps']:
        out.append('<div class="scroll"><table><thead><tr><th>Step</th><th>Time</th><th>Share of the recovery time</th>'
                   '<th>Throughput</th><th>Stock tool in the last benchmark</th><th>Ratio</th><th>Result</th>'
                   '<th>Error / detail</th></tr></thead><tbody>')
        for step in service['steps']:
            notes = []
            if step['error']:
                notes.append(esc(step['error']))
            if step['detail']:
                notes.append('<pre>%s</pre>' % esc(json.dumps(step['detail'], indent=1, sort_keys=True, default=str)))
            out.append('<tr%s><td>%s</td><td class="num">%s</td>%s<td>%s</td><td>%s</td></tr>' % (
                ' class="limiting"' if step['throughput']['limiting'] else '', esc(step['name']),
                esc(human_duration(step['seconds'])), _throughput_cells(step['throughput']), _status(step['ok']),
                ''.join(notes)))
        out.append('</tbody></table></div>')
        out.append('<p class="note">Throughput is what the step moved (bytes, or identities for an Ory import) over '
                   'its time; the ratio compares it with the plain shell pipeline doing the same kind of work in the '
                   'last benchmark (above 1: faster than the stock tool). The step marked %s takes the largest share '
                   'of the recovery time.</p>' % _LIMITING)
    out.append('<h3>Checks</h3>')
    if service['checks']:
        out.append('<div class="scroll"><table><thead><tr><th>Result</th><th>Check</th><th>Kind</th><th>Detail</th>'
                   '<th>Expected</th><th>Actual</th></tr></thead><tbody>')
        for check in service['checks']:
            out.append('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
                _status(check['ok']), esc(check['name']), esc(check['kind']), esc(check['detail']),
                esc(check['expected']), esc(check['actual'])))
        out.append('</tbody></table></div>')
    else:
        out.append('<p>No check was run.</p>')
    out.append('</section>')
    return '\n'.join(out)


def render_html(report):
    """One self-contained page (inline CSS and SVG, no script, no external reference): bytes."""
    passed = report['result'] == PASSED
    verdict_text = 'PASSED' if passed else 'FAILED'
    context = report['context']
    host = context.get('host') or context.get('inventory_hostname') or ''
    title = 'Recovery drill %s%s \u2014 %s' % (verdict_text, (' \u2014 %s' % host) if host else '', report['started'])
    out = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>%s</title>' % esc(title), '<style>%s</style>' % _CSS, '</head>', '<body>',
           '<header class="banner %s">' % report['result'],
           '<h1>Recovery drill report%s</h1>' % (esc(' \u2014 %s' % host) if host else ''),
           '<div class="verdict">%s %s</div>' % (_OK if passed else _BAD, verdict_text)]
    rows = [(key, esc(value)) for key, value in sorted(context.items())]
    rows += [
        ('Drill started', esc(report['started'])),
        ('Drill finished', esc(report['finished'])),
        ('Duration', esc(report['duration_human'])),
        ('RTO target (recovery time)', esc(report['rto_target_human'])),
        ('RPO target (age of the set)', esc(report['rpo_target_human'])),
        ('Report generated', esc(report['generated'])),
        ('Benchmark of the stock tools', _benchmark_text(report['benchmark'])),
    ]
    out.append(_meta(rows))
    out.append('</header>')
    if report['reasons']:
        out.append('<section class="reasons"><h2>%s Why the drill failed</h2><ul>' % _BAD)
        out.extend('<li>%s</li>' % esc(reason) for reason in report['reasons'])
        out.append('</ul></section>')
    if report['warnings']:
        out.append('<section class="warnings"><h2>Warnings</h2><ul>')
        out.extend('<li>%s</li>' % esc(warning) for warning in report['warnings'])
        out.append('</ul></section>')
    out.append('<h2>Services</h2>')
    if report['services']:
        out.append('<div class="scroll"><table><thead><tr><th>Service</th><th>Kind</th><th>Result</th>'
                   '<th>Recovery time</th><th>Age of the set</th><th>Checks passed</th></tr></thead><tbody>')
        for index, service in enumerate(report['services']):
            out.append('<tr><td><a href="#service-%d">%s</a></td><td>%s</td><td>%s</td><td>%s %s</td><td>%s %s</td>'
                       '<td class="num">%d / %d</td></tr>' % (
                           index, esc(service['name']), esc(service['kind']),
                           _status(service['result'] == PASSED, 'passed', 'FAILED'),
                           esc(human_duration(service['rto_seconds'])), _status(service['rto_ok'], '', 'over'),
                           esc(human_duration(service['rpo_seconds'])) if service['rpo_seconds'] is not None else '',
                           _status(service['rpo_ok'], '', 'unknown' if service['rpo_seconds'] is None else 'over'),
                           service['checks_total'] - service['checks_failed'], service['checks_total']))
        out.append('</tbody></table></div>')
    else:
        out.append('<p class="bad">%s No service was drilled.</p>' % _BAD)
    for index, service in enumerate(report['services']):
        out.append(_render_service(service, report, index))
    out.append('<footer>Report %s, format %s version %d, written by the idp.recovery.drill_report module.</footer>'
               % (esc(report['name']), esc(report['format']), report['format_version']))
    out.extend(['</body>', '</html>'])
    return ('\n'.join(out) + '\n').encode('utf-8')
