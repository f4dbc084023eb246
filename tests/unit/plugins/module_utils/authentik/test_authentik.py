# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._authentik import deployment as authentik_deployment
from ansible_collections.idp.recovery.plugins.module_utils._authentik import version as authentik_version
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    failure_lines,
    quote_ident,
    quote_literal,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.facts import compare_counts


@pytest.mark.parametrize('version, line', [
    ('2025.10.1', (2025, 10)),
    ('v2024.2.0', (2024, 2)),
    ('2026.2', (2026, 2)),
    ('2025.10.1-rc1', (2025, 10)),
    ('latest', None),
    ('', None),
    (None, None),
])
def test_release_line(version, line):
    assert authentik_version.release_line(version) == line


@pytest.mark.parametrize('line, previous', [
    ((2025, 10), (2025, 8)),
    ((2024, 2), (2023, 10)),
    ((2023, 1), None),
    ((2025, 7), (2025, 6)),     # not a published line: the newest published one before it
    ((2027, 2), (2026, 12)),    # after the table: the two-month cadence
    ((2026, 12), (2026, 10)),
])
def test_previous_line(line, previous):
    assert authentik_version.previous_line(line) == previous


def test_gate_accepts_same_line_and_previous_line():
    assert authentik_version.version_gate('2025.10.1', '2025.10.4')['ok']
    assert authentik_version.version_gate('2025.8.3', '2025.10.0')['ok']
    assert authentik_version.version_gate('2023.10.7', '2024.2.1')['ok']


def test_gate_refuses_newer_dump_and_says_why():
    gate = authentik_version.version_gate('2026.2.1', '2025.10.1')
    assert not gate['ok'] and not gate['forced']
    assert 'newer than the target' in gate['reason'] and 'downgrades' in gate['reason']


def test_gate_refuses_a_dump_two_lines_older():
    gate = authentik_version.version_gate('2025.6.2', '2025.10.1')
    assert not gate['ok']
    assert 'more than one release line older' in gate['reason']


def test_gate_refuses_unknown_versions():
    assert 'records no Authentik version' in authentik_version.version_gate(None, '2025.10.1')['reason']
    assert 'give target_version' in authentik_version.version_gate('2025.10.1', None)['reason']
    assert not authentik_version.version_gate('2025.10.1', 'latest')['ok']


def test_force_passes_the_gate_but_keeps_the_reason():
    gate = authentik_version.version_gate('2026.2.1', '2025.10.1', force=True)
    assert gate['ok'] and gate['forced'] and gate['reason']


def test_version_from_image_label_then_tag():
    info = {'Config': {'Image': 'ghcr.io/goauthentik/server:2025.10.2'}}
    assert authentik_version.version_from_image(info, {'org.opencontainers.image.version': '2025.12.0'}) == '2025.12.0'
    assert authentik_version.version_from_image(info, {}) == '2025.10.2'
    assert authentik_version.version_from_image({'Config': {'Image': 'localhost:5000/authentik'}}, {}) is None
    assert authentik_version.version_from_image({'Config': {'Image': 'authentik:latest'}}, {}) is None


def test_file_specs_defaults_and_validation(tmp_path):
    from_compose = authentik_deployment.file_specs(None, str(tmp_path), None)
    assert [s['name'] for s in from_compose] == ['data', 'media', 'custom-templates', 'certs', 'blueprints']
    assert from_compose[0]['path'] == str(tmp_path / 'data')
    from_container = authentik_deployment.file_specs(None, None, 'authentik-worker')
    assert dict((s['name'], s['container_path']) for s in from_container)['custom-templates'] == '/templates'
    assert authentik_deployment.file_specs(None, None, None) == []
    with pytest.raises(RecoveryError, match='appears twice'):
        authentik_deployment.file_specs([{'name': 'a', 'path': '/x'}, {'name': 'a', 'path': '/y'}], None, None)
    with pytest.raises(RecoveryError, match='exactly one of path or container_path'):
        authentik_deployment.file_specs([{'name': 'a'}], None, None)
    with pytest.raises(RecoveryError, match='give files_container'):
        authentik_deployment.file_specs([{'name': 'a', 'container_path': '/data'}], None, None)
    with pytest.raises(RecoveryError, match='not a valid name'):
        authentik_deployment.file_specs([{'name': '../etc', 'path': '/x'}], None, None)


def test_resolve_mount_takes_the_longest_prefix():
    info = {'Mounts': [
        {'Destination': '/data', 'Source': '/srv/ak/data'},
        {'Destination': '/data/media', 'Source': '/mnt/media'},
        {'Destination': '/templates', 'Source': '/srv/ak/custom-templates'},
    ]}
    assert authentik_deployment.resolve_mount(info, '/data') == '/srv/ak/data'
    assert authentik_deployment.resolve_mount(info, '/data/media/public') == '/mnt/media/public'
    assert authentik_deployment.resolve_mount(info, '/templates') == '/srv/ak/custom-templates'
    assert authentik_deployment.resolve_mount(info, '/datax') is None
    assert authentik_deployment.resolve_mount(info, '/certs') is None


def test_compare_counts_names_every_difference():
    expected = {'public.a': 3, 'public.b': 0, 'public.c': 5}
    actual = {'public.a': 3, 'public.b': 1, 'public.d': 2, 'public.e': 0}
    assert compare_counts(expected, actual) == [
        {'table': 'public.b', 'expected': 0, 'actual': 1},
        {'table': 'public.c', 'expected': 5, 'actual': None},
        {'table': 'public.d', 'expected': None, 'actual': 2},
    ]
    assert compare_counts(expected, dict(expected)) == []


def test_failure_lines_of_client_tools():
    stderr = '\n'.join([
        'pg_dump: warning: there are circular foreign-key constraints on this table:',
        'pg_dump: error: Dumping the contents of table "x" failed: PQgetResult() failed.',
        'pg_restore: error: could not execute query: ERROR:  relation "y" already exists',
        'psql:<stdin>:12: ERROR:  syntax error at or near "x"',
        'FATAL:  terminating connection due to administrator command',
    ])
    assert len(failure_lines(stderr)) == 4
    assert failure_lines('pg_dump: warning: something harmless') == []


def test_quoting():
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote_literal("it's") == "'it''s'"


def test_pending_payload_blocks_finalize(tmp_path):
    set_dir = str(tmp_path / 'svc' / '20260101T000000Z')
    _backup_set.create(set_dir)
    _backup_set.begin_payload(set_dir, 'database', 'pg_dump of db')
    with pytest.raises(RecoveryError, match='database .pg_dump of db. started and did not finish'):
        _backup_set.finalize(set_dir)
    assert not _backup_set.is_complete(set_dir)
    _backup_set.end_payload(set_dir, 'database')
    changed, metadata = _backup_set.finalize(set_dir)
    assert changed and 'pending' not in metadata
    with open(os.path.join(set_dir, 'metadata.json')) as handle:
        assert 'pending' not in json.load(handle)
