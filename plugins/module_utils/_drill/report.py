# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the work of the drill_report module.

Judges the drill, writes its JSON and HTML reports and their ``latest`` copies and, when asked,
its metrics textfile, and builds the module's result.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import stat
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, ensure_dir, write_file_atomic
from ansible_collections.idp.recovery.plugins.module_utils._drill.html_page import render_html
from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import (
    FAILED, PASSED, build_report, render_json, summary)
from ansible_collections.idp.recovery.plugins.module_utils._drill.metrics import read_previous_success, render_metrics
from ansible_collections.idp.recovery.plugins.module_utils._drill.throughput import (
    MAX_BENCHMARK_BYTES, no_benchmark, parse_benchmark, throughput_summary)
from ansible_collections.idp.recovery.plugins.module_utils._metrics.textfile import (
    check_textfile_path, parse_mode, write_textfile)


def _previous_success(path, warn):
    try:
        with open(path, 'rb') as handle:
            return read_previous_success(handle.read().decode('utf-8', 'replace'))
    except (IOError, OSError) as exc:
        if os.path.exists(path):
            warn('cannot read %s, the time of the last passed drill is not carried over: %s'
                 % (path, exc.strerror or exc))
        return None


def read_benchmark_file(path):
    """The benchmark in the file at path (see parse_benchmark); a file that cannot be used gives its problem."""
    try:
        # non-blocking, so that a FIFO put in its place cannot hang the drill
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return no_benchmark('%s does not exist' % path, path)
        return no_benchmark('%s cannot be read: %s' % (path, exc.strerror or exc), path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return no_benchmark('%s is not a regular file' % path, path)
        if info.st_size > MAX_BENCHMARK_BYTES:
            return no_benchmark('%s is larger than %d bytes' % (path, MAX_BENCHMARK_BYTES), path)
        chunks = []
        size = 0
        while size <= MAX_BENCHMARK_BYTES:
            chunk = os.read(fd, MAX_BENCHMARK_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (IOError, OSError) as exc:
        return no_benchmark('%s cannot be read: %s' % (path, exc.strerror or exc), path)
    finally:
        os.close(fd)
    found = parse_benchmark(b''.join(chunks), path)
    if found['problem']:
        found['problem'] = '%s: %s' % (path, found['problem'])
    return found


def load_benchmark(content, path):
    """The benchmark of the module's options: content (already read elsewhere, path naming it) or the file."""
    path = os.path.abspath(path) if path else None
    if content is not None:
        if isinstance(content, str) and not content.strip():
            return no_benchmark('%s could not be read (missing, empty, not a regular file or larger than %d bytes)'
                                % (path or 'the benchmark', MAX_BENCHMARK_BYTES), path)
        found = parse_benchmark(content, path)
        if found['problem'] and path:
            found['problem'] = '%s: %s' % (path, found['problem'])
        return found
    if not path:
        return no_benchmark('no benchmark file was given')
    return read_benchmark_file(path)


def write_report(params, check_mode, warn):
    """Judge the drill of params (the module's parameters), write its files unless check_mode; the result."""
    finished = params['finished'] if params['finished'] is not None else time.time()
    report = build_report(params['services'], params['started'], finished, params['rto_target'],
                          params['rpo_target'], context=params['context'], name=params['name'],
                          generated=time.time(), require_checks=params['require_checks'],
                          benchmark=load_benchmark(params.get('benchmark'), params.get('benchmark_file')))
    dest_dir = os.path.abspath(params['dest_dir'])
    if os.path.exists(dest_dir) and not os.path.isdir(dest_dir):
        raise RecoveryError('dest_dir %s exists and is not a directory' % dest_dir)
    metrics_file = params['metrics_file']
    metrics_mode = parse_mode(params['metrics_mode'], 'metrics_mode')
    previous = None
    if metrics_file:
        metrics_file = check_textfile_path(metrics_file, 'metrics_file')
        previous = _previous_success(metrics_file, warn)
    paths = {
        'report_json': os.path.join(dest_dir, report['name'] + '.json'),
        'report_html': os.path.join(dest_dir, report['name'] + '.html'),
        'latest_json': os.path.join(dest_dir, 'latest.json'),
        'latest_html': os.path.join(dest_dir, 'latest.html'),
    }
    report['files'] = {'json': os.path.basename(paths['report_json']), 'html': os.path.basename(paths['report_html'])}
    report['last_success_timestamp'] = report['finished_timestamp'] if report['result'] == PASSED else previous
    json_bytes = render_json(report)
    html_bytes = render_html(report)
    metrics_bytes = render_metrics(report, previous) if metrics_file else None
    if not check_mode:
        ensure_dir(dest_dir)
        write_file_atomic(paths['report_json'], json_bytes)
        write_file_atomic(paths['report_html'], html_bytes)
        write_file_atomic(paths['latest_json'], json_bytes)
        write_file_atomic(paths['latest_html'], html_bytes)
        if metrics_file:
            write_textfile(metrics_file, metrics_bytes, metrics_mode)
    result = dict(paths)
    result.update({
        'changed': True,
        'result': report['result'],
        'reasons': report['reasons'],
        'warnings_found': report['warnings'],
        'services': summary(report),
        'rto_target_seconds': report['rto_target_seconds'],
        'rpo_target_seconds': report['rpo_target_seconds'],
        'rto_target_human': report['rto_target_human'],
        'rpo_target_human': report['rpo_target_human'],
        'duration_seconds': report['duration_seconds'],
        'last_success_timestamp': report['last_success_timestamp'],
        'benchmark': report['benchmark'],
        'throughput': throughput_summary(report),
    })
    if metrics_file:
        result['metrics_file'] = metrics_file
    for warning in report['warnings']:
        warn(warning)
    if report['result'] == FAILED and params['fail_on_failure']:
        raise RecoveryError('the restore drill failed: %s' % '; '.join(report['reasons']), **result)
    return result
