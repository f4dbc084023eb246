# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The suite's rule for missing prerequisites (``prerequisites``): what `make setup` provides is
never skipped, a missing privilege is skipped only outside CI, and ``CI`` is read one way."""

from __future__ import annotations

import pytest

import prerequisites


@pytest.mark.parametrize('value, expected', [
    (None, False), ('', False), ('0', False), ('false', False), ('False', False), ('no', False),
    ('OFF', False), ('true', True), ('1', True), ('yes', True), ('woodpecker', True), ('TRUE', True),
])
def test_ci_is_read_one_way(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv('CI', raising=False)
    else:
        monkeypatch.setenv('CI', value)
    assert prerequisites.in_ci() is expected


@pytest.mark.parametrize('value', [None, 'false', 'true', '1'])
def test_what_setup_installs_is_a_failure_everywhere(monkeypatch, value):
    if value is None:
        monkeypatch.delenv('CI', raising=False)
    else:
        monkeypatch.setenv('CI', value)
    with pytest.raises(pytest.fail.Exception, match='rclone is missing; run `make setup`'):
        prerequisites.not_installed('rclone is missing')


def test_a_missing_privilege_fails_in_ci(monkeypatch):
    monkeypatch.setenv('CI', '1')
    with pytest.raises(pytest.fail.Exception, match='cannot mount'):
        prerequisites.not_permitted('cannot mount')


def test_a_missing_privilege_is_a_skip_outside_ci(monkeypatch):
    monkeypatch.setenv('CI', 'false')
    with pytest.raises(pytest.skip.Exception, match='cannot mount'):
        prerequisites.not_permitted('cannot mount')
