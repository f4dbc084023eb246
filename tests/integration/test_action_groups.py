# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The action groups of meta/runtime.yml against the modules' real options.

module_defaults hands every option given to a group to every module of that group, and a module
fails on an option it does not accept. So each group is checked against what ansible-doc reports
for each of its modules, with the option lists the README documents for the group.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import re
import subprocess

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _groups():
    with open(os.path.join(ROOT, 'meta', 'runtime.yml')) as handle:
        return yaml.safe_load(handle)['action_groups']


def _documented():
    """{group: (modules, options)} from the README's table of groups."""
    with open(os.path.join(ROOT, 'README.md')) as handle:
        text = handle.read()
    rows = {}
    for line in text.splitlines():
        match = re.match(r'^\| `([a-z]+)` \| (.+?) \| (.+) \|$', line)
        if match and match.group(1) in _groups():
            rows[match.group(1)] = (set(re.findall(r'`([a-z_]+)`', match.group(2))),
                                    set(re.findall(r'`([a-z_]+)`', match.group(3))))
    return rows


def _module_options(test_env, names):
    out = subprocess.run(['ansible-doc', '--json', '-t', 'module'] + ['idp.recovery.%s' % name for name in names],
                         env=test_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True, timeout=300)
    docs = json.loads(out.stdout)
    return dict((name.split('.')[-1], set(doc['doc'].get('options') or {})) for name, doc in docs.items())


def test_every_group_is_documented_with_its_modules():
    documented = _documented()
    assert sorted(documented) == sorted(_groups())
    for group, members in _groups().items():
        assert documented[group][0] == set(members), group


def test_every_module_of_a_group_accepts_every_option_of_the_group(test_env):
    groups = _groups()
    options = _module_options(test_env, sorted(set(name for members in groups.values() for name in members)))
    problems = []
    for group, (_modules, wanted) in sorted(_documented().items()):
        assert wanted, group
        for member in groups[group]:
            missing = sorted(wanted - options[member])
            if missing:
                problems.append('%s: %s lacks %s' % (group, member, ', '.join(missing)))
    assert problems == []


def test_a_group_default_reaches_the_module(run_playbook, tmp_path):
    """A value given only through group/idp.recovery.storage is what the module uses."""
    target = tmp_path / 'offsite'
    target.mkdir(mode=0o700)
    play_tasks = [{
        'name': 'Retention with the target given by the group',
        'module_defaults': {'group/idp.recovery.storage': {'backend': 'local', 'target': str(target)}},
        'idp.recovery.backup_retention': {'keep_last': 1},
        'register': 'retention',
    }, {
        'name': 'Show it',
        'ansible.builtin.debug': {'msg': 'TARGET={{ retention.target }}'},
    }]
    rc, stdout, stderr = run_playbook(play_tasks)
    assert rc == 0, stdout + stderr
    assert 'TARGET=%s' % target in stdout
