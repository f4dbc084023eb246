# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Real parts of the point-in-time recovery tests.

* ``TlsS3``: ``rclone serve s3`` with a self-signed certificate (made with ``openssl`` for the DNS
  name ``s3.idp-recovery.test``: pgBackRest checks DNS names, not IP addresses) listening on the
  Docker bridge gateway, so that containers reach it as ``s3.idp-recovery.test`` through an
  ``/etc/hosts`` entry. pgBackRest's own S3 client talks HTTPS to it and verifies the certificate
  against the CA given in its configuration. It can be stopped and started again on the same port
  and directory (the repository's objects are files below ``root/<bucket>``).
* ``start_postgres``: a PostgreSQL container from the local image with that host entry.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from offsite_support import RCLONE, Server
from prerequisites import not_installed

S3_NAME = 's3.idp-recovery.test'
ACCESS_KEY = 'idprecoverypitr'
SECRET_KEY = 'pitr-secret-%s' % os.urandom(6).hex()
BUCKET = 'idp-pitr'
IMAGE = os.environ.get('IDP_PITR_POSTGRES_IMAGE', 'idp-recovery/postgres:15')


def docker(*argv, check=True, stdin=None, timeout=120):
    proc = subprocess.run(['docker'] + [str(a) for a in argv], input=stdin, capture_output=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError('docker %s failed: %s' % (' '.join(str(a) for a in argv[:3]),
                                                       proc.stderr.decode('utf-8', 'replace')))
    return proc.stdout.decode('utf-8', 'replace')


def bridge_gateway():
    out = docker('network', 'inspect', 'bridge', '-f', '{{ range .IPAM.Config }}{{ .Gateway }}{{ end }}').strip()
    return out or '172.17.0.1'


def free_port_on(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _wait_for(address, port, proc, log, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError('rclone exited with %s:\n%s' % (proc.returncode, Path(log).read_text(errors='replace')))
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError('nothing listens on %s:%d' % (address, port))


class TlsS3(Server):
    """rclone serve s3 over HTTPS on the bridge gateway."""

    def __init__(self, workdir):
        workdir = Path(workdir)
        self.root = workdir / 's3'
        (self.root / BUCKET).mkdir(parents=True, exist_ok=True)
        self.cert = workdir / 's3-cert.pem'
        key = workdir / 's3-key.pem'
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', str(key),
                        '-out', str(self.cert), '-days', '2', '-subj', '/CN=%s' % S3_NAME,
                        '-addext', 'subjectAltName=DNS:%s' % S3_NAME], capture_output=True, check=True)
        os.chmod(str(key), 0o600)
        self.address = bridge_gateway()
        port = free_port_on(self.address)
        super(TlsS3, self).__init__(
            [RCLONE, 'serve', 's3', str(self.root), '--addr', '%s:%d' % (self.address, port),
             '--cert', str(self.cert), '--key', str(key), '--auth-key', '%s,%s' % (ACCESS_KEY, SECRET_KEY),
             '--config', '/dev/null'],
            port, workdir / 'rclone-s3.log')

    def start(self):
        handle = open(str(self.log), 'ab')
        try:
            self.proc = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            handle.close()
        _wait_for(self.address, self.port, self.proc, self.log)
        return self

    def repo(self, cipher_pass, path='/pgbackrest', **extra):
        repo = {'type': 's3', 'path': path, 's3_bucket': BUCKET, 's3_endpoint': S3_NAME, 'storage_port': self.port,
                's3_key': ACCESS_KEY, 's3_key_secret': SECRET_KEY, 's3_uri_style': 'path',
                'storage_ca': self.cert.read_text(), 'cipher_pass': cipher_pass, 'retention_full': 2}
        repo.update(extra)
        return repo

    def archive_files(self, stanza, path='pgbackrest'):
        """The WAL segment objects of the stanza's archive, {segment name: object key}."""
        base = self.root / BUCKET / path
        return dict((item.name[:24], str(item.relative_to(base))) for item in (base / 'archive' / stanza).rglob('*')
                    if item.is_file() and len(item.name) > 24 and item.name[:24].isalnum() and item.name[24] == '-')

    def delete_object(self, key, path='pgbackrest'):
        """Delete an object through the S3 API (the server's own view stays consistent): rclone's S3 client."""
        env = dict(os.environ, RCLONE_CONFIG_PITRS3_TYPE='s3', RCLONE_CONFIG_PITRS3_PROVIDER='Other',
                   RCLONE_CONFIG_PITRS3_ENDPOINT='https://%s:%d' % (self.address, self.port),
                   RCLONE_CONFIG_PITRS3_ACCESS_KEY_ID=ACCESS_KEY, RCLONE_CONFIG_PITRS3_SECRET_ACCESS_KEY=SECRET_KEY)
        proc = subprocess.run([RCLONE, 'deletefile', '--config', '/dev/null', '--no-check-certificate',
                               'pitrs3:%s/%s/%s' % (BUCKET, path, key)], capture_output=True, env=env, timeout=60,
                              check=False)
        if proc.returncode != 0:
            raise AssertionError('rclone deletefile failed: %s' % proc.stderr.decode('utf-8', 'replace'))


def start_postgres(name, s3, password='pitr-live-password', user='authentik', database='authentik'):
    """A PostgreSQL container from the local image that reaches the S3 endpoint by name."""
    env = dict(os.environ, POSTGRES_PASSWORD=password)
    proc = subprocess.run(['docker', 'run', '-d', '--name', name, '--hostname', name,
                           '--add-host', '%s:%s' % (S3_NAME, s3.address), '-e', 'POSTGRES_USER=%s' % user,
                           '-e', 'POSTGRES_DB=%s' % database, '-e', 'POSTGRES_PASSWORD', IMAGE],
                          env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError('docker run %s failed: %s' % (name, proc.stderr.decode('utf-8', 'replace')))
    wait_sql(name)
    return name


def sql(container, text, user='authentik', database='authentik'):
    return docker('exec', '-i', '-u', 'postgres', container, 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
                  '-U', user, '-d', database, '-f', '-', stdin=text.encode('utf-8')).strip()


def wait_sql(container, timeout=60):
    """Wait for the final server (the entrypoint's initialisation server does not listen on TCP)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(['docker', 'exec', container, 'pg_isready', '-q', '-h', '127.0.0.1'], capture_output=True,
                         check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError('PostgreSQL in %s is not ready' % container)
        time.sleep(0.3)


def wait_archived(container, timeout=90):
    """Switch WAL and wait until the switched segment is archived; return its name."""
    segment = sql(container, 'SELECT pg_walfile_name(pg_switch_wal())')
    deadline = time.monotonic() + timeout
    while True:
        last = sql(container, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last and last[8:] >= segment[8:]:
            return segment
        if time.monotonic() > deadline:
            raise AssertionError('segment %s not archived after %s s (last %s)' % (segment, timeout, last))
        time.sleep(0.3)


def remove(*names):
    if names:
        subprocess.run(['docker', 'rm', '-f', '-v'] + list(names), capture_output=True, check=False)


def have_prerequisites():
    if shutil.which('docker') is None or subprocess.run(['docker', 'info'], capture_output=True,
                                                        check=False).returncode != 0:
        not_installed('the Docker engine is not reachable')
    if subprocess.run(['docker', 'image', 'inspect', IMAGE], capture_output=True, check=False).returncode != 0:
        not_installed('image %s is missing (tests/images/build.sh --if-needed)' % IMAGE)
    if shutil.which('openssl') is None:
        not_installed('openssl is not installed')
