# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs that race: two backups opening a set in the same second, retention while a writer is
alive, retention and backups of one service under one lock, and two finalizes of one set."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import parse_module_output
from recovery_support import random_file, sha256sum_check

SERVICE = 'authentik'
HOUR = 3600


def _ok(result):
    assert not result.get('failed'), result
    return result


def _start_together(module_runner, calls):
    """Start one module process per (name, args) at the same moment; return their results in order."""
    prepared = [module_runner.command(name, **args) for name, args in calls]
    procs = []
    try:
        for argv, env, directory in prepared:
            procs.append(subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            result = parse_module_output(out.decode('utf-8', 'replace'))
            assert result is not None, 'no result (rc %s): %s %s' % (proc.returncode, out, err)
            result['_rc'] = proc.returncode
            result['_stderr'] = err.decode('utf-8', 'replace')
            results.append(result)
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for _argv, _env, directory in prepared:
            shutil.rmtree(str(directory), ignore_errors=True)


def _epoch(set_path):
    stamp = os.path.basename(set_path)
    return datetime.datetime.strptime(stamp, '%Y%m%dT%H%M%SZ').replace(tzinfo=datetime.timezone.utc).timestamp()


def _wait_for_second_start():
    """Sleep until just after a second boundary, so that two processes started now share a second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.02)


def _start_time(pid):
    """Field 22 of /proc/<pid>/stat, read here independently of the collection's code."""
    with open('/proc/%d/stat' % pid) as handle:
        text = handle.read()
    return int(text[text.rindex(')') + 2:].split()[19])


def _boot_id():
    with open('/proc/sys/kernel/random/boot_id') as handle:
        return handle.read().strip()


def _set_writer(set_dir, pid, start_time):
    marker_path = os.path.join(str(set_dir), '.in-progress')
    with open(marker_path) as handle:
        marker = json.load(handle)
    marker['pid'] = pid
    marker['writer'] = {'host': os.uname()[1], 'boot_id': _boot_id(), 'pid': pid, 'start_time': start_time}
    with open(marker_path, 'w') as handle:
        json.dump(marker, handle)


def _age(path, seconds):
    """Set the mtime of path and of everything below it to seconds ago."""
    when = time.time() - seconds
    for current, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            os.utime(os.path.join(current, name), (when, when), follow_symlinks=False)
    os.utime(str(path), (when, when))


def _dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleepers():
    """Start real long-running processes; every one is killed at the end."""
    started = []

    def start(argv=None):
        proc = subprocess.Popen(argv or ['sleep', '600'], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _complete(run_module, root, stamp, payload_bytes=2048):
    path = root / SERVICE / stamp
    _ok(run_module('backup_set', path=path, kind='authentik'))
    random_file(path / 'payload.bin', payload_bytes)
    _ok(run_module('backup_set', path=path, state='finalized'))
    return path


def _incomplete(run_module, root, stamp):
    path = root / SERVICE / stamp
    _ok(run_module('backup_set', path=path, kind='authentik'))
    random_file(path / 'payload.bin.partial-x', 1024)
    return path


# ---------------------------------------------------------------------------------------------
# opening a set

def test_two_backups_opening_in_the_same_second_get_their_own_sets(tmp_path, module_runner):
    root = tmp_path / 'backups'
    collided = 0
    seen = set()
    for _round in range(6):
        _wait_for_second_start()
        results = _start_together(module_runner, [('backup_set', {'root': root, 'service': SERVICE, 'kind': 'authentik'})
                                                  for _dummy in range(2)])
        for result in results:
            _ok(result)
            assert result['changed'] is True and result['complete'] is False
        paths = [result['path'] for result in results]
        assert paths[0] != paths[1], 'two runs share the set %s' % paths[0]
        first, second = sorted(paths)
        # the two collided when the later set was created right at the start of the second after
        # the other's: its run found the other's stamp taken and waited for the next second
        if _epoch(second) - _epoch(first) == 1 and os.stat(second).st_mtime - _epoch(second) < 0.15:
            collided += 1
        for path in paths:
            assert path not in seen
            seen.add(path)
            marker = json.loads((tmp_path / path / '.in-progress').read_text())
            assert marker['service'] == SERVICE and marker['writer']['pid'] == marker['pid']
            assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
    assert collided, 'the two runs never opened a set in the same second; the race was not exercised'
    assert sorted(os.listdir(str(root / SERVICE))) == sorted(os.path.basename(path) for path in seen)
    lock = root / ('.%s.lock' % SERVICE)
    assert lock.is_file() and oct(os.stat(str(lock)).st_mode & 0o777) == oct(0o600)


def test_open_waits_for_the_service_lock(tmp_path, run_module, sleepers):
    root = tmp_path / 'backups'
    root.mkdir(mode=0o700)
    lock = root / ('.%s.lock' % SERVICE)
    holder = sleepers([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n'
        'fcntl.flock(fd, fcntl.LOCK_EX)\n'
        'print("locked", flush=True)\n'
        'time.sleep(3)\n'), str(lock)])
    assert holder.stdout.readline().strip() == b'locked'
    started = time.time()
    opened = _ok(run_module('backup_set', root=root, service=SERVICE))
    assert time.time() - started >= 1.5, 'the set was opened while another run held the service lock'
    assert os.path.isfile(os.path.join(opened['path'], '.in-progress'))


# ---------------------------------------------------------------------------------------------
# retention and live writers

def test_retention_never_removes_a_set_whose_writer_is_alive(tmp_path, run_module, sleepers):
    root = tmp_path / 'backups'
    _complete(run_module, root, '20261120T030000Z')
    live = _incomplete(run_module, root, '20261121T030000Z')
    locked = _incomplete(run_module, root, '20261121T090000Z')
    dead = _incomplete(run_module, root, '20261121T150000Z')
    reused = _incomplete(run_module, root, '20261121T210000Z')
    _complete(run_module, root, '20261122T030000Z')

    writer = sleepers()
    _set_writer(live, writer.pid, _start_time(writer.pid))
    # a process that holds the set's writer lock while it writes (the marker names a dead process)
    holder = sleepers([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        'fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n'
        'fcntl.flock(fd, fcntl.LOCK_SH)\n'
        'print("locked", flush=True)\n'
        'time.sleep(600)\n'), str(locked)])
    assert holder.stdout.readline().strip() == b'locked'
    _set_writer(locked, _dead_pid(), 1)
    _set_writer(dead, _dead_pid(), 1)
    # a running process with the recorded pid but another start time: the pid was reused
    other = sleepers()
    _set_writer(reused, other.pid, _start_time(other.pid) + 12345)
    for path in (live, locked, dead, reused):
        _age(path, 2 * HOUR)

    args = {'backend': 'local', 'target': str(root), 'service': SERVICE, 'keep_last': 1}
    checked = _ok(run_module('backup_retention', check_mode=True, **args))
    result = _ok(run_module('backup_retention', **args))
    assert result['removed'] == checked['removed'] == [
        'authentik/20261120T030000Z', 'authentik/20261121T150000Z', 'authentik/20261121T210000Z']
    assert live.is_dir() and locked.is_dir()
    assert not dead.exists() and not reused.exists()
    by_stamp = dict((item['stamp'], item) for item in result['sets'])
    assert by_stamp['20261121T030000Z']['alive'] is True
    assert by_stamp['20261121T030000Z']['reasons'] == [
        'incomplete, a run is still writing it: its writer, process %d on %s, is running' % (writer.pid, os.uname()[1])]
    assert 'writer lock' in by_stamp['20261121T090000Z']['reasons'][0]
    assert by_stamp['20261121T150000Z']['alive'] is False and 'is gone' in by_stamp['20261121T150000Z']['writer']

    # once the writers are gone (and nothing was written for longer than the grace), the sets go
    writer.kill()
    writer.wait()
    holder.kill()
    holder.wait()
    again = _ok(run_module('backup_retention', **args))
    assert again['removed'] == ['authentik/20261121T030000Z', 'authentik/20261121T090000Z']
    assert sorted(os.listdir(str(root / SERVICE))) == ['20261122T030000Z']


def test_retention_keeps_a_set_written_to_within_the_grace(tmp_path, run_module):
    root = tmp_path / 'backups'
    _complete(run_module, root, '20261120T030000Z')
    between_tasks = _incomplete(run_module, root, '20261121T030000Z')
    _complete(run_module, root, '20261122T030000Z')
    # the module that opened the set has exited; the run's next task has not started yet
    _set_writer(between_tasks, _dead_pid(), 1)
    args = {'backend': 'local', 'target': str(root), 'service': SERVICE, 'keep_last': 1}
    result = _ok(run_module('backup_retention', **args))
    assert result['removed'] == ['authentik/20261120T030000Z']
    assert between_tasks.is_dir()
    removed = _ok(run_module('backup_retention', incomplete_grace=0, **args))
    assert removed['removed'] == ['authentik/20261121T030000Z']


def test_retention_waits_for_a_backup_holding_the_service_lock(tmp_path, run_module, sleepers):
    root = tmp_path / 'backups'
    _complete(run_module, root, '20261120T030000Z')
    _complete(run_module, root, '20261122T030000Z')
    holder = sleepers([sys.executable, '-c', (
        'import fcntl, os, sys, time\n'
        'fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n'
        'fcntl.flock(fd, fcntl.LOCK_EX)\n'
        'print("locked", flush=True)\n'
        'time.sleep(3)\n'), str(root / ('.%s.lock' % SERVICE))])
    assert holder.stdout.readline().strip() == b'locked'
    started = time.time()
    result = _ok(run_module('backup_retention', backend='local', target=str(root), keep_last=1))
    assert time.time() - started >= 1.5, 'retention decided while a backup held the service lock'
    assert result['removed'] == ['authentik/20261120T030000Z']


# ---------------------------------------------------------------------------------------------
# finalize

def test_two_concurrent_finalizes_of_one_set(tmp_path, module_runner, run_module):
    for round_number in range(5):
        path = tmp_path / 'backups' / SERVICE / ('2026112%dT030000Z' % round_number)
        _ok(run_module('backup_set', path=path, kind='authentik'))
        for index in range(4):
            random_file(path / ('payload-%d.bin' % index), 4 * 1024 * 1024)
        results = _start_together(module_runner, [('backup_set', {'path': path, 'state': 'finalized'})
                                                  for _dummy in range(2)])
        for result in results:
            text = json.dumps(result)
            assert 'Traceback' not in text and 'FileNotFoundError' not in text and 'Errno' not in text, result
            assert 'Traceback' not in result['_stderr'], result['_stderr']
            if result.get('failed'):
                assert 'finalized concurrently by another run' in result['msg'], result
        changed = [result['changed'] for result in results if not result.get('failed')]
        assert changed.count(True) == 1, results
        assert not (path / '.in-progress').exists() and not (path / '.metadata.d').exists()
        assert sha256sum_check(path).returncode == 0
