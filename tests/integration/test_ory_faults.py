# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Faults really injected into the Ory stand-in: 429 storms, 5xx and time-outs in the middle of a
listing, a repeated page token, an import killed halfway and run again, wrong API keys, and
malformed bundles that must be refused before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ory_support import *  # noqa: F401,F403  pylint: disable=wildcard-import,unused-wildcard-import
from recovery_support import reseal

WRITE_OPERATIONS = ('PATCH /admin/identities', 'POST /admin/identities', 'POST /admin/clients', 'PUT /admin/keys/{set}',
                    'PATCH /admin/relation-tuples', 'PUT /projects/{project_id}')


def _open_set(run_module, root):
    result = run_module('backup_set', root=str(root), service='ory', kind='ory', state='present')
    assert not result.get('failed'), result
    return result['path']


def _ory_files(set_dir):
    found = []
    for current, _dirs, files in os.walk(set_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(current, name), set_dir)
            if rel.startswith('ory') or rel == '.metadata.d/ory.json':
                found.append(rel)
    return found


def _export(run_module, set_dir, keys, source, **extra):
    return run_module('ory_export', set_dir=set_dir, recipients=[keys.age_recipient], **source.connection(**extra))


@pytest.fixture
def exported(ory_standin_factory, run_module, keys, tmp_path):
    """A finalized set exported from a project of 300 identities, and an empty target."""
    source = ory_standin_factory(seed_identities=300, seed_clients=2, default_jwk_sets=True)
    set_dir = _open_set(run_module, tmp_path / 'backups')
    result = _export(run_module, set_dir, keys, source)
    assert not result.get('failed'), result
    final = run_module('backup_set', path=set_dir, state='finalized')
    assert not final.get('failed'), final
    return source, set_dir


def test_429_storm_export_completes(ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=600, seed_clients=2, default_jwk_sets=True)
    source.control('faults', [
        {'method': 'GET', 'path': '/admin/identities', 'status': 429, 'reset': 1, 'times': 3, 'after': 1},
        {'method': 'GET', 'path': '/admin/clients', 'status': 429, 'times': 3},  # no reset header: backoff
        {'method': 'GET', 'path': '/relation-tuples', 'status': 429, 'reset': 1, 'times': 2},
    ])
    # and a real, tight budget: 2 requests a second on the identity list
    source.control('limits', {'buckets': {'kratos-admin-medium': [600, 2]}})
    set_dir = _open_set(run_module, tmp_path / 'backups')
    result = _export(run_module, set_dir, keys, source)
    assert not result.get('failed'), result
    assert result['ory']['counts']['identities'] == 600
    assert result['ory']['requests']['rate_limited'] >= 8
    assert result['ory']['requests']['backoff_seconds'] > 0
    stats = source.stats()
    assert stats['faults_fired'] == 8
    assert stats['contract_violations'] == []


def test_concurrent_identity_writer_gets_429_and_import_finishes(
        exported, ory_standin_factory, run_module, keys, tmp_path):
    _source, set_dir = exported
    target = ory_standin_factory(preset='blank')
    stop = threading.Event()
    other = []

    def hammer():
        # another writer on the same project: Ory answers one of two concurrent identity writes with 429
        number = 0
        while not stop.is_set():
            number += 1
            status, _h, _b = target.api('POST', '/admin/identities', body={
                'schema_id': 'preset://email', 'traits': {'email': 'other%d@example.org' % number}})
            other.append(status)
    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        result = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), include=['config', 'identities'],
                            batch_size=20, state_dir=str(tmp_path / 'state'), **target.connection())
    finally:
        stop.set()
        thread.join()
    assert not result.get('failed'), result
    assert result['created']['identities'] == 300
    stats = target.stats()
    assert stats['concurrent_writes'] > 0, 'the fault was never injected'
    assert result['requests']['rate_limited'] + other.count(429) == stats['concurrent_writes']
    imported = [i for i in target.all_identities() if i.get('external_id')]
    assert len(imported) == 300


@pytest.mark.parametrize('fault', [
    {'status': 500, 'times': 2},
    {'status': 503, 'times': 1},
    {'kind': 'delay', 'delay': 4, 'times': 1},
    {'kind': 'reset', 'times': 2},
], ids=['500', '503', 'timeout', 'connection-reset'])
def test_transient_failure_mid_pagination_is_retried(fault, ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=1001, seed_clients=1)
    source.control('faults', [dict(fault, method='GET', path='/admin/identities', after=1)])
    set_dir = _open_set(run_module, tmp_path / 'backups')
    result = _export(run_module, set_dir, keys, source, timeout=2)
    assert not result.get('failed'), result
    assert result['ory']['counts']['identities'] == 1001
    assert result['ory']['counts']['identity_pages'] == 3
    assert source.stats()['faults_fired'] == fault['times']
    assert result['ory']['requests']['retries'] >= 1


def test_persistent_500_fails_clearly_and_writes_nothing(ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=501)
    source.control('faults', [{'method': 'GET', 'path': '/admin/identities', 'status': 500, 'times': 1000, 'after': 1}])
    set_dir = _open_set(run_module, tmp_path / 'backups')
    result = _export(run_module, set_dir, keys, source, max_retries=2, max_backoff=0.2)
    assert result.get('failed')
    assert 'GET /admin/identities failed with HTTP 500' in result['msg'] and 'gave up after 3 attempts' in result['msg']
    assert _ory_files(set_dir) == []
    # the set itself is untouched and can still be finalized without an Ory export in it
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')


def test_repeated_page_token_is_refused(ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=1001)
    source.control('faults', [{'method': 'GET', 'path': '/admin/identities', 'kind': 'repeat_token', 'after': 1}])
    set_dir = _open_set(run_module, tmp_path / 'backups')
    result = _export(run_module, set_dir, keys, source)
    assert result.get('failed')
    assert 'refusing to loop' in result['msg']
    assert _ory_files(set_dir) == []


def test_export_interrupted_never_looks_complete(ory_standin_factory, run_module, module_runner, keys, tmp_path):
    source = ory_standin_factory(seed_identities=1500)
    source.control('limits', {'buckets': {'kratos-admin-medium': [600, 1]}})
    set_dir = _open_set(run_module, tmp_path / 'backups')
    argv, env, directory = module_runner.command('ory_export', set_dir=set_dir, recipients=[keys.age_recipient],
                                                 **source.connection())
    proc = subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while source.stats()['by_operation'].get('GET /admin/identities', 0) < 2:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        shutil.rmtree(str(directory), ignore_errors=True)
    leftovers = _ory_files(set_dir)
    assert leftovers and all('.partial-' in rel for rel in leftovers), leftovers
    final = run_module('backup_set', path=set_dir, state='finalized')
    assert final.get('failed') and 'interrupted write' in final['msg'], final


def test_import_killed_halfway_then_run_again(exported, ory_standin_factory, run_module, module_runner, keys, tmp_path):
    source, set_dir = exported
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    # one identity batch a second, so that the import is still running when it is killed
    target.control('limits', {'buckets': {'kratos-admin-low': [600, 1]}})
    state_dir = tmp_path / 'state'
    args = dict(set_dir=set_dir, identity=str(keys.age_identity), batch_size=25, state_dir=str(state_dir),
                return_secrets=True, **target.connection())
    argv, env, directory = module_runner.command('ory_import', **args)
    proc = subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while target.summary()['identities'] < 100:
            assert time.time() < deadline and proc.poll() is None, 'the import ended before it could be killed'
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        shutil.rmtree(str(directory), ignore_errors=True)
    time.sleep(1.5)  # a batch the stand-in was processing when the client died still lands
    halfway = target.summary()['identities']
    assert 100 <= halfway < 300
    assert (state_dir / 'id-map.jsonl').exists()

    target.control('limits', {})
    plan = run_module('ory_import', check_mode=True, **args)
    assert plan['plan']['identities'] == {'create': 300 - halfway, 'existing': halfway, 'conflicts': 0}
    again = run_module('ory_import', **args)
    assert not again.get('failed'), again
    assert again['changed'] is True
    assert again['created']['identities'] == 300 - halfway
    identities = target.all_identities()
    externals = [i['external_id'] for i in identities]
    assert len(identities) == 300 and len(set(externals)) == 300
    assert set(externals) == set(i['id'] for i in source.all_identities())
    id_map = json.loads((state_dir / 'id-map.json').read_text())
    assert sorted(id_map.values()) == sorted(i['id'] for i in identities)
    third = run_module('ory_import', **args)
    assert not third.get('failed') and third['changed'] is False, third


def _identity_ids(item):
    return [v for v in (item.get('subject_id'), item['object'], (item.get('subject_set') or {}).get('object')) if v]


def test_identity_failure_midway_leaves_only_tuples_of_existing_identities(ory_standin_factory, run_module, keys,
                                                                           tmp_path):
    """The tuples go to Keto while the identities are written: when the identities fail halfway, every tuple in the
    target names identities that are there (with their new IDs), no client is created, and a rerun converges."""
    source = ory_standin_factory(seed_identities=2000, seed_clients=2, default_jwk_sets=True)
    set_dir = _open_set(run_module, tmp_path / 'backups')
    assert not _export(run_module, set_dir, keys, source).get('failed')
    assert not run_module('backup_set', path=set_dir, state='finalized').get('failed')
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    # one identity batch a second, so that tuples are written before the identities fail halfway
    target.control('limits', {'buckets': {'kratos-admin-low': [600, 1]}})
    target.control('faults', [{'method': 'PATCH', 'path': '/admin/identities', 'status': 500, 'times': 1000, 'after': 14}])
    state_dir = tmp_path / 'state'
    args = dict(set_dir=set_dir, identity=str(keys.age_identity), batch_size=100, state_dir=str(state_dir),
                return_secrets=True, **target.connection(max_retries=1, max_backoff=0.2))
    failed = run_module('ory_import', **args)
    assert failed.get('failed') and 'PATCH /admin/identities failed with HTTP 500' in failed['msg'], failed
    summary = target.summary()
    halfway = summary['identities']
    assert 0 < halfway < 2000 and summary['clients'] == 0, summary
    landed = target.all_tuples()
    assert landed, 'no tuple was written beside the identities'
    old_ids = set(i['id'] for i in source.all_identities())
    partial = dict((i['external_id'], i['id']) for i in target.all_identities() if i.get('external_id'))
    assert all(not set(_identity_ids(t)) & old_ids for t in landed)
    assert set(json.dumps(t, sort_keys=True) for t in landed) <= remapped_tuples(source.all_tuples(), partial)

    target.control('faults', [])
    target.control('limits', {})
    again = run_module('ory_import', **args)
    assert not again.get('failed'), again
    assert again['created']['identities'] == 2000 - halfway
    id_map = json.loads((state_dir / 'id-map.json').read_text())
    assert len(id_map) == 2000
    assert set(json.dumps(t, sort_keys=True) for t in target.all_tuples()) == remapped_tuples(source.all_tuples(), id_map)
    assert target.summary()['clients'] == source.summary()['clients']
    third = run_module('ory_import', **args)
    assert not third.get('failed') and third['changed'] is False, third


def test_wrong_project_key_is_a_clear_error(ory_standin_factory, run_module, keys, tmp_path):
    source = ory_standin_factory(seed_identities=10)
    set_dir = _open_set(run_module, tmp_path / 'backups')
    wrong = 'ory_pat_wrong-key-%d' % os.getpid()
    result = _export(run_module, set_dir, keys, source, project_api_key=wrong)
    assert result.get('failed')
    assert 'HTTP 401' in result['msg'] and 'project API key' in result['msg'], result['msg']
    assert wrong not in json.dumps(result)
    assert _ory_files(set_dir) == []
    result = _export(run_module, set_dir, keys, source, workspace_api_key='ory_wak_wrong')
    assert result.get('failed')
    assert 'HTTP 401' in result['msg'] and 'workspace API key' in result['msg'], result['msg']
    assert _ory_files(set_dir) == []
    checked = run_module('ory_export', check_mode=True, set_dir=set_dir, recipients=[keys.age_recipient],
                         **source.connection(project_api_key=wrong))
    assert checked.get('failed') and 'HTTP 401' in checked['msg']


def _rewrite_payload(set_dir, rel, keys, change):
    """Decrypt a payload with stock tools, change its JSON, encrypt it again and fix the manifest line."""
    path = Path(set_dir) / rel
    data = read_json_payload_cli(path, keys.age_identity)
    data = change(data)
    plain = json.dumps(data).encode('utf-8')
    zstd = subprocess.run(['zstd', '-q', '-c'], input=plain, stdout=subprocess.PIPE, check=True).stdout
    enc = subprocess.run(['age', '-e', '-r', keys.age_recipient], input=zstd, stdout=subprocess.PIPE, check=True).stdout
    path.write_bytes(enc)
    # manifest and metadata.json agree again, as a forger who rewrites the whole set makes them
    reseal(set_dir, rel)


def _with_unknown_field(items):
    items[17]['id'] = 'b7e9a6f0-0000-4000-8000-000000000000'
    return items


def _with_identifiers(items):
    items[3]['credentials']['password']['identifiers'] = ['x@example.org']
    return items


@pytest.mark.parametrize('case', ['unknown-field', 'credential-identifiers', 'truncated', 'bad-tuple', 'checksum',
                                  'incomplete'])
def test_malformed_bundle_is_refused_before_any_write(case, exported, ory_standin_factory, run_module, keys):
    _source, set_dir = exported
    target = ory_standin_factory(preset='blank', default_jwk_sets=True)
    identities = 'ory/restore/identities.json.zst.age'
    expected = {
        'unknown-field': 'fields the import API refuses: id',
        'credential-identifiers': 'credentials.password must be {"config": {...}}',
        'truncated': 'holds 290 items, the export recorded 300',
        'bad-tuple': 'needs exactly one of subject_id and subject_set',
        'checksum': 'does not match its checksum',
        'incomplete': 'is incomplete',
    }[case]
    if case == 'unknown-field':
        _rewrite_payload(set_dir, identities, keys, _with_unknown_field)
    elif case == 'credential-identifiers':
        _rewrite_payload(set_dir, identities, keys, _with_identifiers)
    elif case == 'truncated':
        _rewrite_payload(set_dir, identities, keys, lambda items: items[:290])
    elif case == 'bad-tuple':
        def both_subjects(items):
            items[0]['subject_set'] = {'namespace': 'Group', 'object': 'g', 'relation': 'members'}
            items[0]['subject_id'] = items[0].get('subject_id') or 'someone'
            return items
        _rewrite_payload(set_dir, 'ory/restore/relationships.json.zst.age', keys, both_subjects)
    elif case == 'checksum':
        path = Path(set_dir) / identities
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xff
        path.write_bytes(bytes(data))
    elif case == 'incomplete':
        (Path(set_dir) / 'MANIFEST.sha256').unlink()
    before = target.stats()['by_operation']
    result = run_module('ory_import', set_dir=set_dir, identity=str(keys.age_identity), return_secrets=True,
                        **target.connection())
    assert result.get('failed'), result
    assert expected in result['msg'], result['msg']
    after = target.stats()['by_operation']
    writes = dict((op, after.get(op, 0) - before.get(op, 0)) for op in WRITE_OPERATIONS)
    assert not any(writes.values()), writes
    summary = target.summary()
    assert summary['identities'] == 0 and summary['clients'] == 0 and summary['tuples'] == 0
