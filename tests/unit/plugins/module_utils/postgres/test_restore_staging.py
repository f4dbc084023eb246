# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import stat
import threading

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.database_restore import StagingDump
from ansible_collections.idp.recovery.plugins.module_utils._postgres.load import stage_dump


class _LocalDb(object):
    runner = None


class _Digest(object):
    def __init__(self, value='ab' * 32):
        self.value = value

    def hexdigest(self):
        return self.value


def _staging(feed, tmp_path, digest=None):
    return StagingDump(_LocalDb(), feed, str(tmp_path), digest or _Digest(), 'ab' * 32).start()


def _feed(chunks):
    def feed(write):
        for chunk in chunks:
            write(chunk)
    return feed


def test_stage_dump_lands_a_private_file_and_removes_it(tmp_path):
    staged = stage_dump(_LocalDb(), _feed([b'PGDMP', b'-data']), str(tmp_path))
    workdir = os.path.dirname(staged.path)
    with open(staged.path, 'rb') as handle:
        assert handle.read() == b'PGDMP-data'
    assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(staged.path).st_mode) == 0o600
    staged.remove()
    staged.remove()
    assert not os.path.exists(workdir)


def test_stage_dump_removes_its_directory_when_the_feed_fails(tmp_path):
    def feed(write):
        write(b'PGDMP')
        raise RecoveryError('decryption failed')
    with pytest.raises(RecoveryError, match='decryption failed'):
        stage_dump(_LocalDb(), feed, str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


def test_staging_reports_a_failure_and_lands_nothing(tmp_path):
    def feed(write):
        raise RecoveryError('wrong key')
    staging = _staging(feed, tmp_path)
    detail = staging.finish()
    assert detail['landed'] is False and 'wrong key' in detail['error']
    assert staging.staged is None
    staging.discard()
    assert os.listdir(str(tmp_path)) == []


def test_staging_discard_stops_a_landing_and_removes_it(tmp_path):
    release = threading.Event()

    def feed(write):
        write(b'PGDMP')
        release.wait(10)
        write(b'more')   # cancelled: this write raises
        write(b'never')

    staging = _staging(feed, tmp_path)
    timer = threading.Timer(0.2, release.set)
    timer.start()
    staging.discard()
    timer.join()
    assert staging.staged is None
    assert os.listdir(str(tmp_path)) == []


def test_staging_discard_removes_a_landed_dump(tmp_path):
    staging = _staging(_feed([b'PGDMP']), tmp_path)
    assert staging.finish()['landed'] is True
    assert os.path.exists(staging.staged.path)
    staging.discard()
    assert os.listdir(str(tmp_path)) == []


def test_staging_refuses_a_dump_read_from_other_bytes_than_the_manifest_lists(tmp_path):
    staging = _staging(_feed([b'PGDMP']), tmp_path, _Digest('cd' * 32))
    detail = staging.finish()
    assert detail['landed'] is False and 'differs from the manifest' in detail['error']
    assert os.listdir(str(tmp_path)) == []
