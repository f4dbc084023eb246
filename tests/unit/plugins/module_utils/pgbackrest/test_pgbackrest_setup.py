# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._pgbackrest import config, setup


@pytest.mark.parametrize('value, text', [(True, 'on'), (False, 'off'), (60, '60'), ('60s', '60s')])
def test_setting_text(value, text):
    assert setup.setting_text(value) == text


@pytest.mark.parametrize('have, want, same', [
    ('60', '60s', True), (None, '60s', False), ('60', '60', False), ('30', '60s', False), ('60s', '60s', False)])
def test_same_unit_value(have, want, same):
    assert setup.same_unit_value(have, want) is same


def test_log_path_and_the_server_options():
    assert config.log_path(None) == config.log_path({}) == '/var/log/pgbackrest'
    assert config.log_path({'log-path': '/srv/log'}) == '/srv/log'
    spec = config.server_argument_spec()
    assert spec['docker_host'] == {'type': 'str'} and spec['config_path']['default'] == config.CONFIG_PATH
