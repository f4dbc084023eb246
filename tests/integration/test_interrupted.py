# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A run killed in the middle of writing a payload (SIGKILL to its whole process group).

The source is a FIFO that the test feeds: the module is provably in the middle of the payload
when it is killed, whatever the speed of the machine."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

from recovery_support import pids_in_group, random_file

CHUNK = 1024 * 1024
FEED_LIMIT = 256 * 1024 * 1024
DEADLINE = 60


def _ok(result):
    assert not result.get('failed'), result
    return result


def _open_fifo_for_writing(path, proc):
    """Open the FIFO once the module opened it for reading (fails when the module died first)."""
    started = time.monotonic()
    while True:
        try:
            return os.open(str(path), os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if proc.poll() is not None:
            raise AssertionError('the module ended before reading its source: %s' % (proc.communicate(),))
        if time.monotonic() - started > DEADLINE:
            raise AssertionError('the module never opened its source')
        time.sleep(0.02)


def _partial_files(set_dir):
    return [name for name in os.listdir(str(set_dir)) if '.partial-' in name]


def _feed_until_payload_bytes(writer, set_dir, proc):
    """Feed fresh random data until the partial payload has bytes (compressors buffer their input)."""
    fed = 0
    while fed < FEED_LIMIT:
        chunk = memoryview(os.urandom(CHUNK))
        while chunk:
            chunk = chunk[os.write(writer, chunk):]
        fed += CHUNK
        partial = _partial_files(set_dir)
        if partial and (set_dir / partial[0]).stat().st_size > 0:
            return partial[0]
        if proc.poll() is not None:
            raise AssertionError('the module ended early: %s' % (proc.communicate(),))
    raise AssertionError('no payload bytes after %d bytes of source' % fed)


def test_killed_while_writing_a_payload(tmp_path, run_module, keys):
    root = tmp_path / 'backups'
    older = root / 'authentik' / '20260110T030000Z'
    _ok(run_module('backup_set', path=older))
    _ok(run_module('encrypted_archive', src=random_file(tmp_path / 'small.dump', 4096),
                   dest=older / 'authentik.dump.zst.age', recipients=[keys.age_recipient]))
    _ok(run_module('backup_set', path=older, state='finalized'))

    killed = root / 'authentik' / '20260111T030000Z'
    _ok(run_module('backup_set', path=killed))
    fifo = tmp_path / 'source.fifo'
    os.mkfifo(str(fifo), 0o600)
    payload = killed / 'authentik.dump.zst.age'
    argv, env, directory = run_module.command('encrypted_archive', src=fifo, dest=payload,
                                              recipients=[keys.age_recipient])
    proc = subprocess.Popen(argv, env=env, cwd=str(directory), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    writer = None
    try:
        writer = _open_fifo_for_writing(fifo, proc)
        os.set_blocking(writer, True)
        partial = _feed_until_payload_bytes(writer, killed, proc)
        # the module now waits for more source data, with age and zstd running below it
        assert len(pids_in_group(proc.pid)) >= 3, 'the pipeline is not running'
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if writer is not None:
            os.close(writer)
    started = time.monotonic()
    while pids_in_group(proc.pid) and time.monotonic() - started < DEADLINE:
        time.sleep(0.02)
    assert pids_in_group(proc.pid) == [], 'processes of the killed run survived'

    assert proc.returncode == -signal.SIGKILL
    assert not (killed / 'MANIFEST.sha256').exists()
    assert not payload.exists()
    assert (killed / partial).exists(), 'the interrupted write left no trace to detect'

    info = _ok(run_module('backup_set_info', root=root))
    by_path = {item['path']: item for item in info['sets']}
    assert by_path[str(killed)]['complete'] is False
    assert by_path[str(killed)]['in_progress'] is True
    assert info['incomplete'] == [str(killed)]
    assert info['latest_complete']['path'] == str(older)
    assert info['latest_complete_by_service']['authentik']['path'] == str(older)

    refused = run_module('backup_set', path=killed, state='finalized')
    assert refused.get('failed'), refused
    assert partial in refused['msg'] and 'interrupted' in refused['msg'], refused['msg']
    assert not (killed / 'MANIFEST.sha256').exists() and not (killed / 'metadata.json').exists()

    refused = run_module('backup_set', path=killed, state='verified')
    assert refused.get('failed') and 'incomplete' in refused['msg'], refused

    # the interrupted set can be removed as a whole
    assert _ok(run_module('backup_set', path=killed, state='absent'))['changed']
    assert not os.path.lexists(str(killed))
