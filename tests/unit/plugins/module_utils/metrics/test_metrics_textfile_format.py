# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._metrics.textfile import (
    escape_help, escape_label, format_textfile, format_value, metrics_textfile, parse_mode, write_textfile)


def _text(metrics):
    return format_textfile(metrics).decode('utf-8')


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


# ----------------------------------------------------------------------------------------- escaping

def test_label_value_escapes_quote_backslash_and_newline():
    value = 'a"b\\c\nd'
    assert escape_label(value) == 'a\\"b\\\\c\\nd'
    text = _text([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'service': value}}])
    assert text == '# HELP idp_x X.\n# TYPE idp_x gauge\nidp_x{service="a\\"b\\\\c\\nd"} 1\n'
    assert len(text.splitlines()) == 3


def test_help_escapes_backslash_and_newline_but_not_quotes():
    assert escape_help('a "b" \\ c\nd') == 'a "b" \\\\ c\\nd'
    text = _text([{'name': 'idp_x', 'help': 'two\nlines', 'value': 1}])
    assert text.splitlines()[0] == '# HELP idp_x two\\nlines'


@pytest.mark.parametrize('value, text', [
    (True, '1'), (False, '0'), (3, '3'), (-7, '-7'), (2.0, '2'), (14400.0, '14400'), (1.5, '1.5'),
    (352.5, '352.5'), (1790000000.5, '1790000000.5'), (0.00001, '1e-05'), (1e20, '1e+20'),
    (float('nan'), 'NaN'), (float('inf'), '+Inf'), (float('-inf'), '-Inf'),
])
def test_values(value, text):
    assert format_value(value) == text


# ----------------------------------------------------------------------------------------- layout

def test_samples_of_one_metric_share_one_help_and_type_in_first_seen_order():
    help_text = 'Result of the last run.'
    text = _text([
        {'name': 'idp_result', 'help': help_text, 'value': 1, 'labels': {'service': 'a', 'kind': 'k'}},
        {'name': 'idp_size_bytes', 'help': 'Size.', 'type': 'gauge', 'value': 10, 'labels': {'service': 'a'}},
        {'name': 'idp_result', 'help': help_text, 'value': 0, 'labels': {'service': 'b', 'kind': 'k'}},
        {'name': 'idp_runs_total', 'help': 'Runs.', 'type': 'counter', 'value': '4'},
    ])
    assert text == (
        '# HELP idp_result Result of the last run.\n# TYPE idp_result gauge\n'
        'idp_result{service="a",kind="k"} 1\nidp_result{service="b",kind="k"} 0\n'
        '# HELP idp_size_bytes Size.\n# TYPE idp_size_bytes gauge\nidp_size_bytes{service="a"} 10\n'
        '# HELP idp_runs_total Runs.\n# TYPE idp_runs_total counter\nidp_runs_total 4\n')


def test_a_metric_without_value_is_declared_without_sample():
    text = _text([{'name': 'idp_last_success', 'help': 'Last success.', 'value': None},
                  {'name': 'idp_last_success', 'help': 'Last success.', 'labels': {'service': 'a'}}])
    assert text == '# HELP idp_last_success Last success.\n# TYPE idp_last_success gauge\n'


def test_numbers_and_booleans_as_labels_and_numeric_strings_as_values():
    text = _text([{'name': 'idp:x', 'help': 'X.', 'value': ' 2.50 ', 'labels': {'port': 5432, 'tls': True}}])
    assert text.splitlines()[-1] == 'idp:x{port="5432",tls="true"} 2.5'


def test_no_metric_is_an_empty_file():
    assert format_textfile([]) == b''


@pytest.mark.parametrize('metrics, message', [
    ([{'name': 'idp-backup', 'help': 'X.', 'value': 1}], r"metrics\[0\]: 'idp-backup' is not a valid metric name"),
    ([{'name': '1idp', 'help': 'X.', 'value': 1}], 'is not a valid metric name'),
    ([{'name': '', 'help': 'X.', 'value': 1}], 'is not a valid metric name'),
    ([{'name': None, 'help': 'X.', 'value': 1}], 'is not a valid metric name'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'bad-name': 'v'}}], "'bad-name' is not a valid label"),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'__name__': 'v'}}], "'__name__' is not a valid label"),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'0a': 'v'}}], "'0a' is not a valid label"),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'a': None}}], r'idp_x\)\.labels\.a must be a string'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'a': ['v']}}], 'must be a string, got list'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': 'a=b'}], 'must be a dict of label names'),
    ([{'name': 'idp_x', 'help': '', 'value': 1}], r'idp_x\)\.help must be a non-empty string'),
    ([{'name': 'idp_x', 'help': 'X.', 'type': 'histogram', 'value': 1}], 'type must be one of gauge, counter'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 'many'}], r"idp_x\)\.value must be a number, got 'many'"),
    ([{'name': 'idp_x', 'help': 'X.', 'value': [1]}], 'must be a number, got list'),
    ([{'name': 'idp_x', 'help': 'X.', 'type': 'counter', 'value': -1}], 'negative, which a counter cannot be'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1}, {'name': 'idp_x', 'help': 'Y.', 'value': 2}],
     r'metrics\[1\] \(idp_x\): every entry of one metric needs the same help and type'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1}, {'name': 'idp_x', 'help': 'X.', 'type': 'counter', 'value': 2}],
     'the same help and type'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1, 'labels': {'a': '1', 'b': '2'}},
      {'name': 'idp_x', 'help': 'X.', 'value': 2, 'labels': {'b': '2', 'a': '1'}}],
     r'the labels b="2", a="1" are given twice'),
    ([{'name': 'idp_x', 'help': 'X.', 'value': 1}, {'name': 'idp_x', 'help': 'X.', 'value': 2}],
     r'the labels \(none\) are given twice'),
    (['idp_x 1'], r'metrics\[0\] must be a dict'),
    ({'name': 'idp_x'}, 'metrics must be a list'),
])
def test_bad_metrics_are_refused(metrics, message):
    with pytest.raises(RecoveryError, match=message):
        format_textfile(metrics)


@pytest.mark.parametrize('value, mode', [('0644', 0o644), ('640', 0o640), (0o600, 0o600), (420, 0o644)])
def test_parse_mode(value, mode):
    assert parse_mode(value) == mode


@pytest.mark.parametrize('value', ['rw-r--r--', '99999', True, None, -1, 0o10000])
def test_parse_mode_refuses(value):
    with pytest.raises(RecoveryError, match='mode must be an octal mode such as 0644'):
        parse_mode(value)


# ----------------------------------------------------------------------------------------- writing

def test_write_is_atomic_idempotent_and_keeps_the_mode(tmp_path):
    path = tmp_path / 'x.prom'
    data = format_textfile([{'name': 'idp_x', 'help': 'X.', 'value': 1}])
    assert write_textfile(str(path), data, 0o644, check_mode=True) is True
    assert not path.exists()
    assert write_textfile(str(path), data, 0o644) is True
    assert path.read_bytes() == data and _mode(path) == 0o644
    assert write_textfile(str(path), data, 0o644) is False
    assert write_textfile(str(path), data, 0o640, check_mode=True) is True
    assert _mode(path) == 0o644
    assert write_textfile(str(path), data, 0o640) is True
    assert _mode(path) == 0o640 and path.read_bytes() == data
    other = format_textfile([{'name': 'idp_x', 'help': 'X.', 'value': 2}])
    assert write_textfile(str(path), other, 0o640, check_mode=True) is True
    assert path.read_bytes() == data
    assert write_textfile(str(path), other, 0o640) is True
    assert path.read_bytes() == other
    assert sorted(os.listdir(str(tmp_path))) == ['x.prom']


def test_metrics_textfile_result_and_diff(tmp_path):
    params = {'path': str(tmp_path / 'x.prom'), 'mode': '0644',
              'metrics': [{'name': 'idp_x', 'help': 'X.', 'type': 'gauge', 'value': 1, 'labels': None}]}
    result = metrics_textfile(params, check_mode=False, diff=True)
    assert result['changed'] is True and result['metrics'] == 1 and result['path'] == str(tmp_path / 'x.prom')
    assert result['diff']['before'] == '' and result['diff']['after'] == '# HELP idp_x X.\n# TYPE idp_x gauge\nidp_x 1\n'
    again = metrics_textfile(params)
    assert again['changed'] is False and 'diff' not in again


def test_metrics_textfile_needs_an_existing_directory(tmp_path):
    params = {'path': str(tmp_path / 'missing' / 'x.prom'), 'mode': '0644', 'metrics': []}
    with pytest.raises(RecoveryError, match='the directory of path .* does not exist'):
        metrics_textfile(params)
    with pytest.raises(RecoveryError, match='path .* is a directory'):
        metrics_textfile(dict(params, path=str(tmp_path)))
