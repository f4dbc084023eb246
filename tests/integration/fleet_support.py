# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A fleet of managed hosts reached over SSH, for the fleet tests and the fleet benchmark.

Each host is a container of the ``idp-recovery/fleet-host`` image (``tests/images/build.sh
fleet-host``) on the host network: its own sshd on 127.0.0.1:<port>, which admits only the user
``deploy`` with the run's SSH key (no password), passwordless sudo for ``become``, and its own
PostgreSQL server on 127.0.0.1:<port> with a ``ledger`` database. The offsite endpoint on
127.0.0.1 (``offsite_support.S3Endpoint``) is reachable from every host; the hosts use the
controller's rclone binary, mounted read-only.

* ``Fleet(workdir, prefix)``: ``add(name, database=True)`` starts a host (``database=False``: sshd
  only, the PostgreSQL server never runs - a host whose database is down), ``unreachable(name)``
  names an inventory host whose SSH port nothing listens on, ``inventory(...)`` writes the 0600
  inventory, ``playbook(name, ...)`` runs ``ansible-playbook -f N`` and ``close()`` removes the
  containers it started (by ID).
* ``play_recap(stdout)`` parses the PLAY RECAP of the default callback (with ANSIBLE_NOCOLOR=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import conftest
from offsite_support import RCLONE, free_port
from prerequisites import not_installed

IMAGE = os.environ.get('IDP_FLEET_IMAGE', 'idp-recovery/fleet-host:15')
LOGIN_USER = 'deploy'
DATABASE = 'ledger'
SERVICE = 'ledger'
ROWS = 2000
LABEL = 'io.idp-recovery.fleet-test'
SCHEMA = """
CREATE TABLE public.account (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO public.account (name) SELECT 'account ' || n FROM generate_series(1, {rows}) AS n;
"""
RECAP = re.compile(r'^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$')


def _docker(*argv, check=True, timeout=120):
    return subprocess.run(['docker'] + [str(a) for a in argv], capture_output=True, check=check, timeout=timeout)


def need_image():
    """The fleet host image that ``make setup`` builds; its absence fails the test."""
    if shutil.which('docker') is None or _docker('info', check=False).returncode != 0:
        not_installed('the Docker engine is not reachable (make setup starts it)')
    if _docker('image', 'inspect', IMAGE, check=False).returncode != 0:
        not_installed('%s is missing: run make setup (tests/images/build.sh fleet-host)' % IMAGE)


def ssh_key(directory):
    """A fresh ed25519 key pair for this run: (private key path (0600), public key text)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = directory / 'id_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'idp-recovery-fleet', '-f', str(key)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(str(key), 0o600)
    return key, (directory / 'id_ed25519.pub').read_text().strip()


def _wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError('nothing listens on 127.0.0.1:%d after %.0f s' % (port, timeout))


def play_recap(stdout):
    """{host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from the PLAY RECAP lines."""
    recap = {}
    lines = stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith('PLAY RECAP'))
    except ValueError:
        raise AssertionError('no PLAY RECAP in the output:\n%s' % stdout[-4000:])
    for line in lines[start + 1:]:
        match = RECAP.match(line.strip())
        if not match:
            continue
        counts = dict((k, int(v)) for k, v in (item.split('=') for item in match.group('counts').split()))
        recap[match.group('host')] = counts
    return recap


class FleetHost(object):
    def __init__(self, name, ssh_port, pg_port, container, password, database):
        self.name = name
        self.ssh_port = ssh_port
        self.pg_port = pg_port
        self.container = container
        self.password = password
        self.database = database

    def exec(self, *argv, user='root', check=True):
        """A command in the host's container; its stdout as text."""
        proc = _docker('exec', '-u', user, self.container, *argv, check=False)
        if check and proc.returncode != 0:
            raise AssertionError('%s on %s exited with %s: %s' % (argv, self.name, proc.returncode,
                                                                  proc.stderr.decode(errors='replace')))
        return proc.stdout.decode('utf-8', 'replace')

    def read_json(self, path):
        return json.loads(self.exec('cat', path))

    def psql(self, sql, database=DATABASE):
        return self.exec('psql', '-X', '-At', '-h', '/run/postgresql', '-p', str(self.pg_port), '-U', 'postgres',
                         '-d', database, '-c', sql, user='postgres').strip()


class Fleet(object):
    """Managed hosts in containers; every container this object starts is removed by close()."""

    def __init__(self, workdir, prefix='fleet'):
        need_image()
        self.workdir = Path(workdir)
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_id = '%s-%s' % (prefix, uuid.uuid4().hex[:6])
        self.key, self.public_key = ssh_key(self.workdir / 'ssh')
        self.known_hosts = self.workdir / 'ssh' / 'known_hosts'
        self.hosts = []
        self.unreachable_hosts = []
        self._containers = []

    def add(self, name, database=True, rows=ROWS):
        """Start a managed host; with ``database=False`` its PostgreSQL server never runs."""
        ssh_port, pg_port = free_port(), free_port()
        password = 'fleet-%s' % uuid.uuid4().hex
        env_file = self.workdir / ('%s.env' % name)
        conftest._write_private(env_file, 'AUTHORIZED_KEY=%s\nSSH_PORT=%d\nSSH_LISTEN=127.0.0.1\nPOSTGRES_PASSWORD=%s\n'  # pylint: disable=protected-access
                                % (self.public_key, ssh_port, password))
        command = (['postgres', '-c', 'port=%d' % pg_port, '-c', 'listen_addresses=127.0.0.1'] if database
                   else ['sleep', 'infinity'])
        proc = _docker('run', '-d', '--network', 'host', '--name', '%s-%s' % (self.run_id, name),
                       '--label', '%s=%s' % (LABEL, self.run_id), '--env-file', env_file,
                       '--tmpfs', '/var/lib/postgresql/data:uid=%s,mode=0700' % self._postgres_uid(),
                       '-v', '%s:/usr/local/bin/rclone:ro' % os.path.realpath(RCLONE), IMAGE, *command)
        env_file.unlink()
        container = proc.stdout.decode().strip()
        self._containers.append(container)
        host = FleetHost(name, ssh_port, pg_port, container, password, database)
        _wait_port(ssh_port)
        if database:
            deadline = time.time() + 60
            while _docker('exec', container, 'pg_isready', '-q', '-h', '127.0.0.1', '-p', pg_port,
                          check=False).returncode != 0:
                if time.time() > deadline:
                    raise AssertionError('PostgreSQL of %s did not start: %s' % (
                        name, _docker('logs', container, check=False).stderr.decode(errors='replace')))
                time.sleep(0.2)
            host.exec('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', '/run/postgresql', '-p', str(pg_port),
                      '-U', 'postgres', '-c', 'CREATE DATABASE %s' % DATABASE, user='postgres')
            host.psql(SCHEMA.format(rows=rows))
        scan = subprocess.run(['ssh-keyscan', '-t', 'ed25519', '-p', str(ssh_port), '127.0.0.1'],
                              capture_output=True, check=True, timeout=30)
        with open(str(self.known_hosts), 'ab') as handle:
            handle.write(scan.stdout)
        self.hosts.append(host)
        return host

    _pg_uid = None

    @classmethod
    def _postgres_uid(cls):
        if cls._pg_uid is None:
            cls._pg_uid = _docker('run', '--rm', '--entrypoint', 'id', IMAGE, '-u', 'postgres').stdout.decode().strip()
        return cls._pg_uid

    def unreachable(self, name):
        """An inventory host whose SSH port nothing listens on."""
        self.unreachable_hosts.append((name, free_port()))

    def inventory(self, offsite, recipient, identity, forks_group='fleet', **extra):
        """Write the inventory (0600) for the backup and drill playbooks; its path."""
        hosts = {}
        members = [(h.name, h.ssh_port, h.pg_port, h.password) for h in self.hosts]
        # an unreachable host is configured like the others: only its SSH port is closed
        members += [(name, port, 5432, 'unused') for name, port in self.unreachable_hosts]
        for name, ssh_port, pg_port, password in members:
            hosts[name] = {
                'ansible_port': ssh_port,
                'backup_services': [{'name': SERVICE, 'kind': 'postgres', 'host': '127.0.0.1', 'port': pg_port,
                                     'user': 'postgres', 'password': password, 'database': DATABASE}],
                'drill_services': [{'name': SERVICE, 'kind': 'postgres', 'staging': {
                    'host': '127.0.0.1', 'port': pg_port, 'user': 'postgres', 'password': password,
                    'database': DATABASE + '_drill', 'safety_backup': False},
                    'sql_checks': [{'name': 'accounts are there', 'sql': 'SELECT count(*) FROM public.account',
                                    'expect': ROWS}]}],
            }
        offsite = dict(offsite, target=offsite['target'] + '/{{ inventory_hostname }}')
        group_vars = {
            'ansible_connection': 'ssh',
            'ansible_host': '127.0.0.1',
            'ansible_user': LOGIN_USER,
            'ansible_become': True,
            'ansible_ssh_private_key_file': str(self.key),
            'ansible_ssh_common_args': '-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o ConnectTimeout=5'
                                       % self.known_hosts,
            'ansible_python_interpreter': '/usr/bin/python3',
            'backup_recipients': [recipient],
            'backup_offsite_enabled': True,
            'backup_offsite': offsite,
            'drill_offsite': offsite,
            'drill_identity_content': identity,
            'drill_fleet_report': str(self.workdir / 'fleet-drill.json'),
        }
        group_vars.update(extra)
        inventory = self.workdir / 'inventory.json'
        if inventory.exists():
            inventory.unlink()
        conftest._write_private(inventory, json.dumps(  # pylint: disable=protected-access
            {'all': {'children': {forks_group: {'hosts': hosts, 'vars': group_vars}}}}, indent=2))
        return inventory

    def playbook(self, playbook, env, forks, timeout=900, extra=()):
        """``ansible-playbook -i <inventory> -f forks playbook [extra...]``: (rc, stdout, stderr, seconds)."""
        argv = [str(conftest.TOOL_BIN / 'ansible-playbook'), '-i', str(self.workdir / 'inventory.json'),
                '-f', str(forks), playbook] + list(extra)
        env = dict(env, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_REMOTE_TEMP='~/.ansible/tmp',
                   ANSIBLE_PIPELINING='True')
        for name in ('ANSIBLE_STDOUT_CALLBACK', 'ANSIBLE_PYTHON_INTERPRETER'):
            env.pop(name, None)
        started = time.monotonic()
        proc = subprocess.run(argv, env=env, cwd=str(self.workdir), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=timeout, check=False)
        return (proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace'),
                time.monotonic() - started)

    def close(self):
        for container in self._containers:
            _docker('rm', '-f', '-v', container, check=False)
        self._containers = []
