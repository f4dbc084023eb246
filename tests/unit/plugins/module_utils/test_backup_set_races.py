# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Service names, roots, the service lock, writer identity and liveness, exclusive opening."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import socket
import subprocess
import time

import pytest

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, parse_stamp


@pytest.mark.parametrize('name', ['authentik', 'ory-prod', 'pg_17', 'a.b', 'x' * 255, u'caf\u00e9'])
def test_good_service_names(name):
    assert _backup_set.check_service_name(name) == name


@pytest.mark.parametrize('name', ['', '.', '..', '.hidden', '../x', '../../x', '/abs', 'a/b', 'a\\b', 'a\x00b', 'a\nb',
                                  'a\x7f', 'x' * 256, None, 3])
def test_bad_service_names(name):
    with pytest.raises(RecoveryError) as error:
        _backup_set.check_service_name(name)
    assert 'not a valid service name' in error.value.msg


def test_parse_proc_stat_with_a_hostile_command_name():
    fields = ' '.join(str(number) for number in range(3, 53)).replace('3', 'S', 1)
    text = '1234 (evil) 1 2 3 (x) ) %s\n' % fields
    state, start = _backup_set.parse_proc_stat(text)
    assert state == 'S' and start == 22


def test_process_start_time_of_this_and_of_a_gone_process():
    with open('/proc/self/stat') as handle:
        text = handle.read()
    assert _backup_set.process_start_time(os.getpid()) == int(text[text.rindex(')') + 2:].split()[19])
    proc = subprocess.Popen(['true'])
    proc.wait()
    assert _backup_set.process_start_time(proc.pid) is None


def test_writer_running():
    me = _backup_set.writer_identity()
    assert me['pid'] == os.getpid() and me['host'] == socket.gethostname() and me['start_time']
    assert _backup_set.writer_running(me) is True
    assert _backup_set.writer_running(dict(me, start_time=me['start_time'] + 1)) is False
    assert _backup_set.writer_running(dict(me, host='elsewhere.example')) is None
    if me['boot_id']:
        assert _backup_set.writer_running(dict(me, boot_id='another-boot')) is False
    assert _backup_set.writer_running(None) is False
    assert _backup_set.writer_running({'host': me['host']}) is False
    # an old marker without a start time: a running pid counts as alive
    assert _backup_set.writer_running({'host': me['host'], 'pid': os.getpid()}) is True


def _open_set(tmp_path, stamp='20261122T030000Z'):
    set_dir = str(tmp_path / 'root' / 'authentik' / stamp)
    assert _backup_set.create(set_dir, 'authentik', 'authentik')
    return set_dir


def _abandon(set_dir, age=7200):
    proc = subprocess.Popen(['true'])
    proc.wait()
    path = os.path.join(set_dir, _backup_set.MARKER)
    with open(path) as handle:
        marker = json.load(handle)
    marker['writer'] = dict(marker['writer'], pid=proc.pid)
    marker['pid'] = proc.pid
    with open(path, 'w') as handle:
        json.dump(marker, handle)
    when = time.time() - age
    for name in os.listdir(set_dir) + ['.']:
        os.utime(os.path.join(set_dir, name), (when, when))


def test_writer_alive(tmp_path):
    set_dir = _open_set(tmp_path)
    alive, why = _backup_set.writer_alive(set_dir)
    assert alive and 'process %d' % os.getpid() in why
    _abandon(set_dir)
    alive, why = _backup_set.writer_alive(set_dir)
    assert not alive and 'is gone' in why and 'nothing in it changed for' in why
    # a fresh write keeps it within the grace
    alive, why = _backup_set.writer_alive(set_dir, now=time.time() - 7200 + 10)
    assert alive and 'grace' in why
    # a payload being written holds the writer lock (and records this process as the writer)
    _abandon(set_dir)
    _backup_set.begin_payload(set_dir, 'database', 'pg_dump')
    try:
        assert _backup_set.writer_lock_held(set_dir)
        alive, why = _backup_set.writer_alive(set_dir)
        assert alive and 'writer lock' in why
    finally:
        _backup_set.end_payload(set_dir, 'database')
    assert not _backup_set.writer_lock_held(set_dir)
    with open(os.path.join(set_dir, _backup_set.MARKER)) as handle:
        assert json.load(handle)['writer'] == _backup_set.writer_identity()


def test_service_lock(tmp_path):
    service_dir = str(tmp_path / 'authentik')
    with _backup_set.ServiceLock(service_dir, create=False) as lock:
        assert lock.fd is None
    assert not os.path.exists(_backup_set.lock_path(service_dir))
    with _backup_set.ServiceLock(service_dir) as lock:
        assert lock.path == str(tmp_path / '.authentik.lock')
        assert oct(os.stat(lock.path).st_mode & 0o777) == oct(0o600)
        started = time.time()
        with pytest.raises(RecoveryError) as error:
            with _backup_set.ServiceLock(service_dir, timeout=0.3):
                pass
        assert time.time() - started >= 0.3
        assert 'another run has held the lock' in error.value.msg
    with _backup_set.ServiceLock(service_dir, timeout=0.3):
        pass


def test_service_lock_refuses_a_link(tmp_path):
    os.symlink(str(tmp_path / 'elsewhere'), str(tmp_path / '.authentik.lock'))
    with pytest.raises(RecoveryError) as error:
        with _backup_set.ServiceLock(str(tmp_path / 'authentik')):
            pass
    assert 'symbolic link' in error.value.msg
    assert not os.path.lexists(str(tmp_path / 'elsewhere'))


def test_open_new_never_shares_a_set(tmp_path):
    root = str(tmp_path / 'backups')
    paths = [_backup_set.open_new(root, 'authentik', 'authentik') for _dummy in range(3)]
    assert len(set(paths)) == 3
    stamps = [os.path.basename(path) for path in paths]
    assert stamps == sorted(stamps) and all(parse_stamp(stamp) for stamp in stamps)
    for path in paths:
        assert os.path.isfile(os.path.join(path, _backup_set.MARKER))


def test_roots_and_service_directories(tmp_path):
    root = tmp_path / 'backups'
    root.mkdir(mode=0o777)
    os.chmod(str(root), 0o777)
    with pytest.raises(RecoveryError) as error:
        _backup_set.open_new(str(root), 'authentik')
    assert 'world-writable' in error.value.msg
    os.chmod(str(root), 0o700)
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(str(tmp_path / 'elsewhere'), str(root / 'authentik'))
    for action in (lambda: _backup_set.open_new(str(root), 'authentik'),
                   lambda: _backup_set.create(str(root / 'authentik' / '20261122T030000Z')),
                   lambda: _backup_set.list_sets(str(root), 'authentik')):
        with pytest.raises(RecoveryError) as error:
            action()
        assert 'symbolic link' in error.value.msg
    assert os.listdir(str(tmp_path / 'elsewhere')) == []
    assert _backup_set.list_sets(str(root)) == []
