# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Prometheus textfiles for node_exporter's textfile collector.

One formatter for every metrics file the collection writes (the drill report's and the
``metrics_textfile`` module's): metric and label names checked, label values and help texts
escaped per the text exposition format, samples of one metric grouped under one HELP and TYPE,
and the file replaced atomically only when its content or mode differs.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import math
import os
import re
import stat

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, write_file_atomic

METRIC_NAME_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL_NAME_RE = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*$')
TYPES = ('gauge', 'counter')
DEFAULT_TYPE = 'gauge'
DEFAULT_MODE = 0o644


def escape_label(value):
    """A label value escaped per the Prometheus text exposition format (backslash, double quote, newline)."""
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def escape_help(text):
    """A HELP text escaped per the Prometheus text exposition format (backslash, newline)."""
    return text.replace('\\', '\\\\').replace('\n', '\\n')


def format_value(value):
    """A sample value as the exposition format writes it: integers without a fraction, NaN, +Inf, -Inf."""
    if isinstance(value, bool):
        return '1' if value else '0'
    if isinstance(value, int):
        return '%d' % value
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    if value.is_integer() and abs(value) < 1e15:
        return '%d' % value
    return repr(value)


def parse_mode(value, what='mode'):
    """A file mode (int) from an octal string such as '0644' or an integer."""
    try:
        mode = int(value, 8) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise RecoveryError('%s must be an octal mode such as 0644, got %r' % (what, value))
    if isinstance(value, bool) or not 0 <= mode <= 0o7777:
        raise RecoveryError('%s must be an octal mode such as 0644, got %r' % (what, value))
    return mode


def _value(value, metric_type, what):
    if value is None:
        return None
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise RecoveryError('%s must be a number, got %r' % (what, value))
    if not isinstance(value, (int, float)):
        raise RecoveryError('%s must be a number, got %s' % (what, type(value).__name__))
    if metric_type == 'counter' and value < 0:
        raise RecoveryError('%s is negative, which a counter cannot be: %r' % (what, value))
    return value


def _label_text(value, what):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise RecoveryError('%s must be a string, got %s' % (what, 'null' if value is None else type(value).__name__))


def _labels(labels, what):
    if labels is None:
        return ()
    if not isinstance(labels, dict):
        raise RecoveryError('%s must be a dict of label names to values, got %s' % (what, type(labels).__name__))
    pairs = []
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME_RE.match(name) or name.startswith('__'):
            raise RecoveryError('%s: %r is not a valid label name: use letters, digits and _, do not start with a '
                                'digit or with __' % (what, name))
        pairs.append((name, _label_text(value, '%s.%s' % (what, name))))
    return tuple(pairs)


def _families(metrics):
    """[(name, help, type, [(labels, value)])] in the order the names first appear; raises RecoveryError."""
    if not isinstance(metrics, list):
        raise RecoveryError('metrics must be a list, got %s' % type(metrics).__name__)
    families = {}
    order = []
    for index, metric in enumerate(metrics):
        what = 'metrics[%d]' % index
        if not isinstance(metric, dict):
            raise RecoveryError('%s must be a dict, got %s' % (what, type(metric).__name__))
        name = metric.get('name')
        if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
            raise RecoveryError('%s: %r is not a valid metric name: use letters, digits, _ and :, and do not start '
                                'with a digit' % (what, name))
        what = '%s (%s)' % (what, name)
        help_text = metric.get('help')
        if not isinstance(help_text, str) or not help_text.strip():
            raise RecoveryError('%s.help must be a non-empty string describing the metric' % what)
        metric_type = metric.get('type') or DEFAULT_TYPE
        if metric_type not in TYPES:
            raise RecoveryError('%s.type must be one of %s, got %r' % (what, ', '.join(TYPES), metric_type))
        labels = _labels(metric.get('labels'), what + '.labels')
        value = _value(metric.get('value'), metric_type, what + '.value')
        family = families.get(name)
        if family is None:
            family = families[name] = {'help': help_text, 'type': metric_type, 'samples': [], 'seen': set()}
            order.append(name)
        elif family['help'] != help_text or family['type'] != metric_type:
            raise RecoveryError('%s: every entry of one metric needs the same help and type, and this one differs '
                                'from an earlier one' % what)
        if value is None:
            continue
        key = tuple(sorted(labels))
        if key in family['seen']:
            raise RecoveryError('%s: the labels %s are given twice for this metric' % (
                what, ', '.join('%s="%s"' % (label, escape_label(text)) for label, text in labels) or '(none)'))
        family['seen'].add(key)
        family['samples'].append((labels, value))
    return [(name, families[name]['help'], families[name]['type'], families[name]['samples']) for name in order]


def format_textfile(metrics):
    """The textfile (bytes) of metrics: a list of {name, help, type (gauge), value, labels (dict)}.

    Entries with one name share one HELP and TYPE; an entry whose value is None declares its
    metric without a sample.
    """
    lines = []
    for name, help_text, metric_type, samples in _families(metrics):
        lines.append('# HELP %s %s' % (name, escape_help(help_text)))
        lines.append('# TYPE %s %s' % (name, metric_type))
        for labels, value in samples:
            text = ','.join('%s="%s"' % (label, escape_label(label_value)) for label, label_value in labels)
            lines.append('%s%s %s' % (name, '{%s}' % text if text else '', format_value(value)))
    return ''.join(line + '\n' for line in lines).encode('utf-8')


def check_textfile_path(path, what='path'):
    """The absolute path of a textfile to write; its directory must exist and it must not be a directory."""
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise RecoveryError('the directory of %s %s does not exist' % (what, path))
    if os.path.isdir(path):
        raise RecoveryError('%s %s is a directory' % (what, path))
    return path


def read_textfile(path):
    """(content bytes, mode) of an existing file, or (None, None) when it is missing or cannot be read."""
    try:
        with open(path, 'rb') as handle:
            return handle.read(), stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
    except (IOError, OSError):
        return None, None


def write_textfile(path, data, mode=DEFAULT_MODE, check_mode=False, current=None):
    """Replace path with data (atomically) unless it holds exactly that with that mode; True when changed.

    ``current`` is what read_textfile() returned, when the caller read it already.
    """
    before, before_mode = current if current is not None else read_textfile(path)
    if before == data and before_mode == mode:
        return False
    if not check_mode:
        if before == data:
            try:
                os.chmod(path, mode)
            except OSError as exc:
                raise RecoveryError('cannot set the mode of %s: %s' % (path, exc.strerror or exc), path=path)
        else:
            write_file_atomic(path, data, mode)
    return True


def metrics_textfile(params, check_mode=False, diff=False):
    """The work of the metrics_textfile module: format, compare, write; the module's result."""
    mode = parse_mode(params['mode'])
    data = format_textfile(params['metrics'])
    path = check_textfile_path(params['path'])
    current = read_textfile(path)
    result = {
        'path': path,
        'changed': write_textfile(path, data, mode, check_mode, current),
        'metrics': len(params['metrics']),
    }
    if diff:
        result['diff'] = {
            'before': (current[0] or b'').decode('utf-8', 'replace'), 'before_header': path,
            'after': data.decode('utf-8'), 'after_header': path,
        }
    return result
