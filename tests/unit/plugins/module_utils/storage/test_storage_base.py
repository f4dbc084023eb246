# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

import pytest

from ansible_collections.idp.recovery.plugins.module_utils._storage.base import StorageError


def test_retry_backs_off_and_stops_on_permanent_errors(tmp_path, local_storage):
    storage = local_storage(retries=3, retry_delay=0.5)
    slept = []
    storage.sleep = slept.append
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StorageError('connection refused', transient=True, file='a' if len(calls) == 1 else None)
        return 'done'

    assert storage.retry('upload', flaky) == 'done'
    assert slept == [0.5, 1.0] and [item['attempt'] for item in storage.retried] == [1, 2]

    def refused():
        calls.append(1)
        raise StorageError('AccessDenied', transient=False)

    calls[:] = []
    with pytest.raises(StorageError, match='^AccessDenied$'):
        storage.retry('upload', refused)
    assert len(calls) == 1


def test_retry_gives_up_and_names_the_first_file(tmp_path, local_storage):
    storage = local_storage(retries=2, retry_delay=100.0)
    storage.sleep = lambda delay: None
    attempts = []

    def down():
        attempts.append(1)
        raise StorageError('attempt %d failed' % len(attempts), transient=True,
                           file='payload.bin' if len(attempts) == 1 else None)

    with pytest.raises(StorageError) as caught:
        storage.retry('upload', down)
    assert len(attempts) == 3
    assert 'gave up after 3 attempts' in caught.value.msg and 'attempt 1 failed' in caught.value.msg
    assert caught.value.details['file'] == 'payload.bin'
    assert [item['delay'] for item in storage.retried] == [60.0, 60.0]


def test_storage_cleans_up_as_a_context_manager(local_storage):
    with local_storage() as storage:
        tmpdir = storage.tmpdir()
        assert os.path.isdir(tmpdir)
    assert not os.path.exists(tmpdir)
