# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Passphrases and identities never show: not in -vvv output, not in files of the set, not in
the command line or environment of any process while a decryption runs."""

from __future__ import annotations

import errno
import os
import select
import stat
import time

import pytest
from recovery_support import kill_tree, make_tree, random_file, snapshot

DEADLINE = 60


def _secret_line(identity_content):
    return [line for line in identity_content.splitlines() if line.startswith('AGE-SECRET-KEY-')][0]


def _files_containing(directory, needles):
    found = []
    for current, _dirs, files in os.walk(str(directory)):
        for name in files:
            path = os.path.join(current, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
            with open(path, 'rb') as handle:
                data = handle.read()
            found += ['%s holds %s...' % (path, needle[:8]) for needle in needles if needle.encode() in data]
    return found


def test_secrets_stay_out_of_verbose_output(tmp_path, run_playbook, keys, test_env):
    """-vvv with the default callback: task results, invocations and failures are all printed."""
    passphrase = 'vvv-passphrase-%s' % os.urandom(12).hex()
    identity_content = keys.age_identity_content
    other_identity = keys.age_other_identity.read_text()
    secrets = [passphrase, _secret_line(identity_content), _secret_line(other_identity)]
    tree = make_tree(tmp_path / 'media')
    dump = random_file(tmp_path / 'authentik.dump', 64 * 1024)
    set_dir = tmp_path / 'backups' / 'authentik' / '20260112T030000Z'
    restore = tmp_path / 'restore'
    tasks = [
        {'name': 'open', 'idp.recovery.backup_set': {'path': str(set_dir)}},
        {'name': 'file with a passphrase', 'idp.recovery.encrypted_archive': {
            'src': str(dump), 'dest': str(set_dir / 'authentik.dump.zst.gpg'),
            'encryption': 'passphrase', 'passphrase': passphrase}},
        {'name': 'tree for age', 'idp.recovery.encrypted_archive': {
            'src': str(tree), 'dest': str(set_dir / 'media.tar.zst.age'), 'recipients': [keys.age_recipient]}},
        {'name': 'finalize', 'idp.recovery.backup_set': {'path': str(set_dir), 'state': 'finalized'}},
        {'name': 'verify', 'idp.recovery.backup_set': {
            'path': str(set_dir), 'state': 'verified', 'decrypt': 'always',
            'identity_content': identity_content, 'passphrase': passphrase}},
        {'name': 'restore file', 'idp.recovery.encrypted_archive': {
            'state': 'extracted', 'src': str(set_dir / 'authentik.dump.zst.gpg'),
            'dest': str(restore / 'authentik.dump'), 'passphrase': passphrase}},
        {'name': 'restore tree', 'idp.recovery.encrypted_archive': {
            'state': 'extracted', 'src': str(set_dir / 'media.tar.zst.age'),
            'dest': str(restore / 'media'), 'identity_content': identity_content}},
        {'name': 'restore with the wrong identity', 'ignore_errors': True, 'idp.recovery.encrypted_archive': {
            'state': 'extracted', 'src': str(set_dir / 'media.tar.zst.age'), 'dest': str(restore / 'other'),
            'identity_content': other_identity, 'passphrase': passphrase}},
    ]
    rc, stdout, stderr = run_playbook(tasks, verbosity=3, callback='default')
    assert rc == 0, stdout[-3000:] + stderr
    # the run really did what the secrets were for
    assert (restore / 'authentik.dump').read_bytes() == dump.read_bytes()
    assert snapshot(restore / 'media') == snapshot(tree)
    assert not os.path.lexists(str(restore / 'other'))
    assert 'wrong key or passphrase' in stdout
    assert '"decrypted": true' in stdout
    assert 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' in stdout, 'the run was not verbose'

    for secret in secrets:
        assert secret not in stdout, 'a secret shows in stdout'
        assert secret not in stderr, 'a secret shows in stderr'
    assert _files_containing(set_dir, secrets) == []
    assert _files_containing(test_env['ANSIBLE_HOME'], secrets) == []


@pytest.mark.parametrize('check', [False, True], ids=['run', 'check'])
def test_role_loop_results_hold_no_service_secret(tmp_path, run_playbook, keys, check):
    """The json callback (like AWX's job events) records every loop result with its item: the
    backup role's loops over services must not put a service's password or API key there."""
    password = 'loop-password-%s' % os.urandom(12).hex()
    api_key = 'loop-api-key-%s' % os.urandom(12).hex()
    tasks = [{'name': 'back up', 'ansible.builtin.include_role': {'name': 'idp.recovery.backup'}, 'vars': {
        'backup_root': str(tmp_path / 'backups'),
        'backup_status_dir': str(tmp_path / 'status'),
        'backup_recipients': [keys.age_recipient],
        'backup_offsite_enabled': False,
        'backup_services': [
            # nothing listens on port 1: the dump fails after the loop has started
            {'name': 'pg', 'kind': 'postgres', 'host': '127.0.0.1', 'port': 1, 'database': 'x',
             'user': 'u', 'password': password},
            {'name': 'ory', 'kind': 'ory', 'project_url': 'http://127.0.0.1:1', 'project_api_key': api_key,
             'max_retries': 0, 'timeout': 5},
        ]}}]
    rc, stdout, stderr = run_playbook(tasks, check=check)
    if check:
        assert rc == 0, stdout[-3000:] + stderr
        assert 'pg (postgres): a new set under' in stdout, 'the check-mode plan did not run'
    else:
        assert rc != 0, 'a backup of an unreachable database passed'
        assert 'pg: the backup failed' in stdout, 'the service loop did not run'
    for secret in (password, api_key):
        assert secret not in stdout, 'a service secret shows in the json results'
        assert secret not in stderr, 'a service secret shows in stderr'


def _wait_readable_fifo(path, proc, what):
    """Block until a writer wrote into the FIFO at path (or the playbook ended, or the deadline)."""
    fd = os.open(str(path), os.O_RDONLY | os.O_NONBLOCK)
    try:
        started = time.monotonic()
        while time.monotonic() - started < DEADLINE:
            ready, _w, _x = select.select([fd], [], [], 0.2)
            if ready and os.read(fd, 64):
                return
            if proc.poll() is not None:
                raise AssertionError('the playbook ended before %s: %s' % (what, proc.communicate()))
        raise AssertionError('timed out waiting for %s' % what)
    finally:
        os.close(fd)


def _release(path, proc):
    started = time.monotonic()
    while True:
        try:
            fd = os.open(str(path), os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        if proc.poll() is not None or time.monotonic() - started > DEADLINE:
            raise AssertionError('the held stage went away')
        time.sleep(0.01)
    try:
        os.write(fd, b'go\n')
    finally:
        os.close(fd)


def _scan_processes(secret):
    """(processes whose command line or environment holds secret, command lines of all processes)."""
    leaks = []
    cmdlines = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        for part in ('cmdline', 'environ'):
            try:
                with open('/proc/%s/%s' % (entry, part), 'rb') as handle:
                    data = handle.read()
            except OSError:
                continue
            if secret in data:
                leaks.append('%s/%s' % (entry, part))
            if part == 'cmdline':
                cmdlines.append(data.split(b'\0'))
    return leaks, cmdlines


def _hold_stage_wrapper(directory, tool):
    """A stand-in on PATH for ``tool`` that says when it starts and waits for a go before exec'ing
    the real tool: the stages before it stay alive, blocked on a full pipe, for as long as needed."""
    real = None
    for candidate in os.environ.get('PATH', '').split(os.pathsep) + ['/usr/bin', '/bin']:
        if os.access(os.path.join(candidate, tool), os.X_OK):
            real = os.path.join(candidate, tool)
            break
    assert real, '%s not found' % tool
    directory.mkdir()
    ready, go = directory / 'ready', directory / 'go'
    os.mkfifo(str(ready), 0o600)
    os.mkfifo(str(go), 0o600)
    wrapper = directory / tool
    wrapper.write_text('#!/bin/sh\necho started > %s\nread answer < %s\nexec %s "$@"\n' % (ready, go, real))
    wrapper.chmod(0o700)
    return ready, go


def test_secrets_stay_out_of_process_lists(tmp_path, run_module, run_playbook, keys, test_env):
    passphrase = 'proc-passphrase-%s' % os.urandom(12).hex()
    identity_content = keys.age_identity_content
    secrets = {'passphrase': passphrase.encode(), 'identity': _secret_line(identity_content).encode()}
    dump = random_file(tmp_path / 'authentik.dump', 8 * 1024 * 1024)
    payloads = {'passphrase': tmp_path / 'authentik.dump.zst.gpg', 'identity': tmp_path / 'authentik.dump.zst.age'}
    for kind, args in (('passphrase', {'encryption': 'passphrase', 'passphrase': passphrase}),
                       ('identity', {'recipients': [keys.age_recipient]})):
        written = run_module('encrypted_archive', src=dump, dest=payloads[kind], **args)
        assert not written.get('failed'), written
    ready, go = _hold_stage_wrapper(tmp_path / 'hold', 'zstd')
    restore = tmp_path / 'restore'
    tasks = [
        {'name': 'restore with a passphrase', 'idp.recovery.encrypted_archive': {
            'state': 'extracted', 'src': str(payloads['passphrase']), 'dest': str(restore / 'from-gpg'),
            'passphrase': passphrase}},
        {'name': 'restore with an identity', 'idp.recovery.encrypted_archive': {
            'state': 'extracted', 'src': str(payloads['identity']), 'dest': str(restore / 'from-age'),
            'identity_content': identity_content}},
    ]
    proc = run_playbook.start(tasks, extra_env={'PATH': '%s:%s' % (tmp_path / 'hold', test_env['PATH'])})
    try:
        for kind, decryptor, marker in (('passphrase', b'gpg', b'--passphrase-fd'), ('identity', b'age', b'/dev/fd/')):
            _wait_readable_fifo(ready, proc, 'the %s decryption' % kind)
            # the decryptor runs now, blocked on a full pipe: look at every process
            for secret_name, secret in secrets.items():
                leaks, cmdlines = _scan_processes(secret)
                assert leaks == [], '%s visible in %s' % (secret_name, leaks)
            running = [argv for argv in cmdlines if argv and os.path.basename(argv[0]) == decryptor
                       and any(marker in arg for arg in argv)]
            assert running, 'no %s process found while the %s decryption ran' % (decryptor.decode(), kind)
            _release(go, proc)
        stdout, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.returncode is None:
            # stop the whole run, held stages included (Ansible's workers leave its process group)
            kill_tree(proc.pid)
            proc.communicate()
    assert proc.returncode == 0, stdout.decode()[-3000:] + stderr.decode()
    assert (restore / 'from-gpg').read_bytes() == dump.read_bytes()
    assert (restore / 'from-age').read_bytes() == dump.read_bytes()
