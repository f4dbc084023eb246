# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the manifest does not cover is never used: payload_path, format_version, links, metadata."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import shutil

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

PAYLOAD = b'the database dump' * 100


def _complete(tmp_path, stamp='20261122T030000Z'):
    """A finalized set: db.age at the top, files/media.age below, both recorded with sha256 and size."""
    set_dir = str(tmp_path / 'root' / 'billing' / stamp)
    _backup_set.create(set_dir, 'billing', 'postgres')
    os.mkdir(os.path.join(set_dir, 'files'))
    for rel, data in (('db.age', PAYLOAD), ('files/media.age', b'media' * 10)):
        with open(os.path.join(set_dir, rel), 'wb') as handle:
            handle.write(data)
        _backup_set.write_fragment(set_dir, 'payload-' + rel.replace('/', '_'), {'payloads': {rel: {
            'encryption': 'age', 'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data)}}})
    _backup_set.finalize(set_dir, {'postgres': {'database': {'name': 'billing', 'payload': 'db.age'}}})
    return set_dir


def _rewrite_metadata(set_dir, change):
    """Change metadata.json and make the manifest agree again (what whoever can rewrite the set can do)."""
    path = os.path.join(set_dir, 'metadata.json')
    with open(path) as handle:
        metadata = json.load(handle)
    change(metadata)
    with open(path, 'w') as handle:
        json.dump(metadata, handle)
    _rehash(set_dir, 'metadata.json')


def _rehash(set_dir, rel):
    path = os.path.join(set_dir, 'MANIFEST.sha256')
    with open(os.path.join(set_dir, rel), 'rb') as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    lines = []
    with open(path) as handle:
        for line in handle.read().splitlines():
            lines.append('%s  %s' % (digest, rel) if line.endswith('  ' + rel) else line)
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')


def _drop_line(set_dir, rel):
    path = os.path.join(set_dir, 'MANIFEST.sha256')
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if not line.endswith('  ' + rel)]
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')


def _errors(set_dir):
    results, _unlisted = _backup_set.verify_checksums(set_dir)
    return [item['error'] for item in results if not item['ok']]


def test_an_intact_set_verifies_and_gives_its_payload_paths(tmp_path):
    set_dir = _complete(tmp_path)
    assert _errors(set_dir) == []
    assert _backup_set.payload_path(set_dir, 'db.age') == os.path.join(set_dir, 'db.age')
    assert _backup_set.payload_path(set_dir, 'files/media.age') == os.path.join(set_dir, 'files', 'media.age')
    assert _backup_set.verified_file(set_dir, 'files/media.age') == os.path.join(set_dir, 'files', 'media.age')


@pytest.mark.parametrize('rel', ['/etc/passwd', '../billing/x', 'files/../db.age', '', 'a//b', 'a\\b', None, 7])
def test_payload_path_refuses_what_is_not_a_relative_path_inside(tmp_path, rel):
    set_dir = _complete(tmp_path)
    with pytest.raises(RecoveryError, match='is refused') as caught:
        _backup_set.payload_path(set_dir, rel, what='postgres.database.payload')
    if isinstance(rel, str) and rel:
        assert 'postgres.database.payload' in caught.value.msg


def test_payload_path_refuses_a_file_the_manifest_does_not_list(tmp_path):
    set_dir = _complete(tmp_path)
    _drop_line(set_dir, 'db.age')
    with pytest.raises(RecoveryError, match='db.age .*is not listed in its MANIFEST.sha256'):
        _backup_set.payload_path(set_dir, 'db.age')
    # the manifest can be given, as a dict or as read_manifest's list
    manifest = _backup_set.read_manifest(set_dir)
    with pytest.raises(RecoveryError, match='not listed'):
        _backup_set.payload_path(set_dir, 'db.age', manifest)
    with pytest.raises(RecoveryError, match='not listed'):
        _backup_set.payload_path(set_dir, 'db.age', dict(manifest))


def test_payload_path_refuses_a_link_to_an_identical_file(tmp_path):
    set_dir = _complete(tmp_path)
    outside = str(tmp_path / 'outside.age')
    shutil.move(os.path.join(set_dir, 'db.age'), outside)
    os.symlink(outside, os.path.join(set_dir, 'db.age'))
    with pytest.raises(RecoveryError, match='db.age is a symbolic link'):
        _backup_set.payload_path(set_dir, 'db.age')


def test_payload_path_refuses_a_linked_parent_directory(tmp_path):
    set_dir = _complete(tmp_path)
    outside = str(tmp_path / 'elsewhere')
    shutil.move(os.path.join(set_dir, 'files'), outside)
    os.symlink(outside, os.path.join(set_dir, 'files'))
    with pytest.raises(RecoveryError, match='files/media.age: files is a symbolic link'):
        _backup_set.payload_path(set_dir, 'files/media.age')
    assert any('files is a symbolic link' in error for error in _errors(set_dir))


def test_payload_path_refuses_a_directory_and_a_missing_file(tmp_path):
    set_dir = _complete(tmp_path)
    os.unlink(os.path.join(set_dir, 'files', 'media.age'))
    os.mkdir(os.path.join(set_dir, 'files', 'media.age'))
    with pytest.raises(RecoveryError, match='not a regular file'):
        _backup_set.payload_path(set_dir, 'files/media.age')
    os.unlink(os.path.join(set_dir, 'db.age'))
    with pytest.raises(RecoveryError, match='db.age: missing'):
        _backup_set.payload_path(set_dir, 'db.age')


def test_regular_file_keeps_to_the_set_when_the_set_is_reached_through_a_link(tmp_path):
    set_dir = _complete(tmp_path)
    # the set directory itself may be reached through a link (a mount point, say): only what is below counts
    alias = str(tmp_path / 'alias')
    os.symlink(set_dir, alias)
    assert _backup_set.regular_file(alias, 'db.age') == os.path.join(alias, 'db.age')
    assert _errors(alias) == []


def test_an_unlisted_file_is_an_error(tmp_path):
    set_dir = _complete(tmp_path)
    _drop_line(set_dir, 'db.age')
    results, unlisted = _backup_set.verify_checksums(set_dir)
    assert unlisted == ['db.age']
    failed = dict((item['path'], item['error']) for item in results if not item['ok'])
    assert list(failed) == ['db.age']
    assert 'not listed in the manifest' in failed['db.age']


def test_a_planted_file_and_a_planted_link_are_errors(tmp_path):
    set_dir = _complete(tmp_path)
    with open(os.path.join(set_dir, 'planted'), 'wb') as handle:
        handle.write(b'x')
    os.symlink('/etc', os.path.join(set_dir, 'files', 'etc'))
    results, unlisted = _backup_set.verify_checksums(set_dir)
    assert unlisted == ['files/etc', 'planted']
    failed = dict((item['path'], item['error']) for item in results if not item['ok'])
    assert 'not a regular file' in failed['files/etc'] and 'not listed' in failed['planted']


def test_leftovers_of_an_interrupted_finalize_are_not_unlisted(tmp_path):
    """The marker and the fragments may outlive the manifest when finalize is interrupted; neither is ever read."""
    set_dir = _complete(tmp_path)
    os.mkdir(os.path.join(set_dir, '.metadata.d'))
    with open(os.path.join(set_dir, '.metadata.d', 'payload-db.json'), 'w') as handle:
        handle.write('{}')
    with open(os.path.join(set_dir, '.in-progress'), 'w') as handle:
        handle.write('{}')
    assert _errors(set_dir) == []


def test_a_payload_that_is_not_the_one_recorded_fails_even_with_a_matching_manifest(tmp_path):
    set_dir = _complete(tmp_path)
    older = _complete(tmp_path, '20261121T030000Z')
    with open(os.path.join(older, 'db.age'), 'wb') as handle:
        handle.write(b'an older dump' * 100)
    shutil.copy(os.path.join(older, 'db.age'), os.path.join(set_dir, 'db.age'))
    _rehash(set_dir, 'db.age')
    errors = _errors(set_dir)
    assert len(errors) == 1 and errors[0].startswith('db.age: ')
    assert 'metadata.json recorded' in errors[0] and 'not the payload this set wrote' in errors[0]
    with pytest.raises(RecoveryError, match='failed verification: db.age'):
        _backup_set.verified_file(set_dir, 'db.age')


def test_a_payload_of_another_size_fails(tmp_path):
    set_dir = _complete(tmp_path)
    _rewrite_metadata(set_dir, lambda m: m['payloads']['db.age'].update(size=3))
    assert any('1700 bytes, metadata.json recorded 3 bytes' in error for error in _errors(set_dir))


@pytest.mark.parametrize('payload', ['/tmp/x/evil', '../../other/20261121T030000Z/db.age', 'missing.age'])
def test_paths_in_metadata_must_be_listed_relative_paths(tmp_path, payload):
    set_dir = _complete(tmp_path)
    _rewrite_metadata(set_dir, lambda m: m['postgres']['database'].update(payload=payload))
    errors = _errors(set_dir)
    assert len(errors) == 1 and 'postgres.database.payload' in errors[0], errors
    with pytest.raises(RecoveryError, match='refused'):
        _backup_set.payload_path(set_dir, payload)


def test_metadata_paths_finds_every_named_file():
    metadata = {
        'payloads': {'a.age': {'source': {'path': '/srv/data', 'files': 3}}},
        'authentik': {'database': {'payload': 'database.age'}, 'files': {'media': {'payload': 'files/media.age'}},
                      'env': {'payload': 'env.age'}},
        'kotauth': {'tenants': {'acme': {'payload': 'kotauth/acme.bkp1.age'}}},
        'ory': {'files': {'ory/restore/identities.json.age': 'identities'}},
        'restore_of': '/var/backups/x',
    }
    assert sorted(_backup_set.metadata_paths(metadata)) == sorted([
        ('payloads', 'a.age'),
        ('authentik.database.payload', 'database.age'),
        ('authentik.env.payload', 'env.age'),
        ('authentik.files.media.payload', 'files/media.age'),
        ('kotauth.tenants.acme.payload', 'kotauth/acme.bkp1.age'),
        ('ory.files', 'ory/restore/identities.json.age'),
    ])


def test_a_newer_format_version_is_refused_saying_what_is_needed(tmp_path):
    set_dir = _complete(tmp_path)
    _rewrite_metadata(set_dir, lambda m: m.update(format_version=99))
    for action in (_backup_set.read_metadata, _backup_set.verify_checksums):
        with pytest.raises(RecoveryError) as caught:
            action(set_dir)
        assert 'format_version 99' in caught.value.msg
        assert 'reads format_version %d and older' % _backup_set.FORMAT_VERSION in caught.value.msg
        assert caught.value.details['format_version'] == 99


@pytest.mark.parametrize('version', [None, '1', 0, True])
def test_an_invalid_format_version_is_refused(tmp_path, version):
    set_dir = _complete(tmp_path)
    _rewrite_metadata(set_dir, lambda m: m.update(format_version=version))
    with pytest.raises(RecoveryError, match='no valid format_version'):
        _backup_set.read_metadata(set_dir)


def test_the_current_format_version_is_read():
    assert _backup_set.check_format({'format_version': _backup_set.FORMAT_VERSION}, 'x')


@pytest.mark.parametrize('name', ['metadata.json', 'MANIFEST.sha256'])
def test_a_linked_metadata_or_manifest_is_refused(tmp_path, name):
    set_dir = _complete(tmp_path)
    outside = str(tmp_path / name)
    shutil.move(os.path.join(set_dir, name), outside)
    os.symlink(outside, os.path.join(set_dir, name))
    with pytest.raises(RecoveryError, match='%s is a symbolic link' % name):
        _backup_set.verify_checksums(set_dir)
    with pytest.raises(RecoveryError, match='symbolic link'):
        _backup_set.payload_path(set_dir, 'db.age') if name == 'MANIFEST.sha256' else _backup_set.read_metadata(set_dir)


def test_a_manifest_listing_a_file_twice_is_refused(tmp_path):
    set_dir = _complete(tmp_path)
    with open(os.path.join(set_dir, 'MANIFEST.sha256')) as handle:
        first = handle.readline()
    with open(os.path.join(set_dir, 'MANIFEST.sha256'), 'a') as handle:
        handle.write(first)
    with pytest.raises(RecoveryError, match='a second time'):
        _backup_set.read_manifest(set_dir)


def test_a_manifest_without_metadata_fails(tmp_path):
    set_dir = _complete(tmp_path)
    _drop_line(set_dir, 'metadata.json')
    errors = _errors(set_dir)
    assert any(error.startswith('metadata.json: not listed in the manifest') for error in errors), errors


def test_finalize_still_refuses_links_and_leftovers(tmp_path):
    set_dir = str(tmp_path / 'root' / 'billing' / '20261122T030000Z')
    _backup_set.create(set_dir, 'billing', 'postgres')
    os.symlink('/etc', os.path.join(set_dir, 'etc'))
    with pytest.raises(RecoveryError, match='not a regular file'):
        _backup_set.set_files(set_dir)
    os.unlink(os.path.join(set_dir, 'etc'))
    with open(os.path.join(set_dir, 'db.age'), 'wb') as handle:
        handle.write(b'x')
    assert _backup_set.set_files(set_dir) == ['db.age']


def _drill_service(**extra):
    service = {'name': 'ledger', 'kind': 'postgres', 'set': '/b/ledger/20261122T030000Z', 'stamp': '20261122T030000Z',
               'steps': [{'name': 'verify', 'seconds': 1.0}],
               'checks': [{'name': 'rows', 'kind': 'row_counts', 'ok': True}]}
    service.update(extra)
    return service


def test_the_drill_report_records_the_manifest_digest():
    from ansible_collections.idp.recovery.plugins.module_utils._drill.html_page import render_html
    from ansible_collections.idp.recovery.plugins.module_utils._drill.judge import build_report
    digest = hashlib.sha256(b'manifest').hexdigest()
    started = 1795316400.0  # 2026-11-22T03:00:00Z
    report = build_report([_drill_service(manifest_sha256=digest.upper())], started, started + 60, '4h', '24h')
    assert report['services'][0]['manifest_sha256'] == digest
    assert digest.encode() in render_html(report)
    report = build_report([_drill_service()], started, started + 60, '4h', '24h')
    assert report['services'][0]['manifest_sha256'] is None
    with pytest.raises(RecoveryError, match='manifest_sha256 must be a SHA-256'):
        build_report([_drill_service(manifest_sha256='abc')], started, started + 60, '4h', '24h')
