#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How the wall time of the backup playbook grows from 1 to 6 managed hosts over SSH.

Six managed hosts start once (``tests/integration/fleet_support.py``: containers of the
``idp-recovery/fleet-host`` image, each with its own sshd and PostgreSQL server on 127.0.0.1, a
``ledger`` database of ``--rows`` rows; Ansible logs in as an unprivileged user with a key and
becomes root with sudo). For 1, 2, 4 and 6 hosts, with as many forks as hosts, the same run
alternates two jobs ``--repeat`` times:

* ``playbook``: ``ansible-playbook -f N idp.recovery.backup`` on the first N hosts - dump, encrypt
  to an age recipient, manifest, verification, status file (offsite upload off, so that only the
  fleet is measured);
* ``shell``: the plain pipeline that does the core of the same job on the same N hosts in
  parallel - ``ssh host 'sudo -u postgres pg_dump -Fc -Z0 | zstd -1 | age -r R > file &&
  sha256sum file'``, one ssh per host, then ``wait``.

The growth is the median wall time at N hosts over the median at 1 host (1.0 would be perfectly
parallel); the ratio is the playbook's time over the shell's at the same N.

Writes the ``fleet`` section of docs/performance.md and bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from perfdoc import update_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORT_DIR = os.path.join(REPO, 'tests', 'integration')
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
VENV_BIN = os.path.join(REPO, '.venv', 'bin')
RESULTS = os.path.join(REPO, 'bench', 'results', 'fleet.json')
COUNTS = (1, 2, 4, 6)

sys.path.insert(0, SUPPORT_DIR)
import fleet_support as fs  # noqa: E402  pylint: disable=wrong-import-position


def log(message):
    print(message, flush=True)


def tool(name):
    candidate = os.path.join(VENV_BIN, name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def age_keys(directory):
    """(recipient, identity text) of a fresh age key."""
    path = os.path.join(directory, 'age.key')
    subprocess.run([tool('age-keygen'), '-o', path], check=True, capture_output=True)
    os.chmod(path, 0o600)
    with open(path) as handle:
        identity = handle.read()
    recipient = [line.split(':', 1)[1].strip() for line in identity.splitlines()
                 if line.startswith('# public key:')][0]
    return recipient, identity


def environment(workdir):
    home = os.path.join(workdir, 'ansible')
    for sub in ('tmp', 'remote_tmp'):
        os.makedirs(os.path.join(home, sub), mode=0o700, exist_ok=True)
    env = dict(os.environ)
    env.update({
        'PATH': '%s:%s' % (VENV_BIN, os.environ.get('PATH', '/usr/bin:/bin')),
        'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
        'ANSIBLE_HOME': home,
        'ANSIBLE_LOCAL_TEMP': os.path.join(home, 'tmp'),
        'ANSIBLE_HOST_KEY_CHECKING': 'True',
        'ANSIBLE_RETRY_FILES_ENABLED': 'False',
    })
    return env


def shell_job(fleet, hosts, recipient):
    """The plain pipeline on every host at once: one ssh per host, then wait; seconds."""
    procs = []
    started = time.monotonic()
    for host in hosts:
        remote = ("sudo bash -c 'set -o pipefail; umask 077; "
                  "sudo -u postgres pg_dump -Fc -Z0 -h /run/postgresql -p %d %s | zstd -1 -q | age -r %s "
                  "> /var/tmp/shell-ref.age && sha256sum /var/tmp/shell-ref.age > /var/tmp/shell-ref.sha256'"
                  % (host.pg_port, fs.DATABASE, recipient))
        argv = ['ssh', '-i', str(fleet.key), '-p', str(host.ssh_port), '-o', 'BatchMode=yes',
                '-o', 'UserKnownHostsFile=%s' % fleet.known_hosts, '-o', 'StrictHostKeyChecking=yes',
                '%s@127.0.0.1' % fs.LOGIN_USER, remote]
        procs.append((host, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    for host, proc in procs:
        _out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit('the shell pipeline failed on %s: %s' % (host.name, err.decode('utf-8', 'replace')))
    seconds = time.monotonic() - started
    for host in hosts:
        if int(host.exec('stat', '-c', '%s', '/var/tmp/shell-ref.age').strip()) <= 0:
            raise SystemExit('the shell pipeline wrote an empty file on %s' % host.name)
    return seconds


def playbook_job(fleet, hosts, env):
    """ansible-playbook -f N idp.recovery.backup on these hosts; seconds."""
    limit = ','.join(h.name for h in hosts)
    rc, stdout, stderr, seconds = fleet.playbook('idp.recovery.backup', env, len(hosts), extra=['--limit', limit])
    if rc != 0:
        raise SystemExit('the backup playbook failed on %s (rc %d):\n%s\n%s' % (limit, rc, stdout[-4000:],
                                                                                stderr[-2000:]))
    recap = fs.play_recap(stdout)
    for host in hosts:
        counts = recap.get(host.name) or {}
        if counts.get('failed') or counts.get('unreachable') or not counts.get('ok'):
            raise SystemExit('%s did not complete: %s' % (host.name, counts))
        status = host.read_json('/var/lib/idp-recovery/last-backup.json')
        if status.get('result') != 'ok':
            raise SystemExit('%s: the status file says %s' % (host.name, status.get('result')))
    return seconds


def machine():
    return {
        'cpus': os.cpu_count(),
        'platform': platform.platform(),
        'python': platform.python_version(),
        'load': ' '.join('%.2f' % x for x in os.getloadavg()),
    }


def render(result):
    lines = [
        '## Fleet: the backup playbook over SSH, 1 to 6 hosts',
        '',
        'Generated by `bench/bench_fleet.py` (`make bench BENCH=fleet`) on %s; %d CPUs, load %s at the end.'
        % (result['finished'], result['machine']['cpus'], result['machine']['load']),
        'Managed hosts are containers reached over SSH with a key as an unprivileged user and `become` through '
        'sudo, each with its own PostgreSQL server and a database of %d rows. Forks = hosts. `playbook` is '
        '`ansible-playbook -f N idp.recovery.backup` (dump, age encryption, manifest, verification, status file; '
        'offsite off); `shell` is `ssh host \'pg_dump -Fc -Z0 | zstd -1 | age -r R > file && sha256sum file\'` '
        'on the same hosts at once. Median of %d alternating runs each.' % (result['rows'], result['repeat']),
        '',
        '| hosts | playbook (s) | shell (s) | playbook / shell | growth from 1 host | per host (s) |',
        '|---:|---:|---:|---:|---:|---:|',
    ]
    for row in result['rows_measured']:
        lines.append('| %d | %.1f | %.2f | %.1fx | %.2fx | %.1f |' % (
            row['hosts'], row['playbook_seconds'], row['shell_seconds'], row['ratio'], row['growth'],
            row['playbook_seconds'] / row['hosts']))
    top = result['rows_measured'][-1]
    lines += [
        '',
        'From 1 to %d hosts the playbook\'s wall time grows %.2fx (the shell pipeline\'s %.2fx): the hosts run '
        'in parallel, and what grows is the controller\'s work per host (one SSH connection and one fork each on '
        '%d CPUs). Its fixed cost is Ansible\'s - module transfer, verification, the status file - which the bare '
        'pipeline does not do, so the ratio is large for small databases and says nothing about dump speed '
        '(see the Authentik section for that).' % (top['hosts'], top['growth'], top['shell_growth'],
                                                   result['machine']['cpus']),
    ]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--repeat', type=int, default=3, help='alternating runs of each job per host count')
    parser.add_argument('--rows', type=int, default=200000, help='rows of each host\'s database')
    parser.add_argument('--no-doc', action='store_true', help='print the section; leave docs/performance.md')
    options = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix='idp-bench-fleet-')
    os.chmod(workdir, 0o700)
    env = environment(workdir)
    recipient, identity = age_keys(workdir)
    fleet = fs.Fleet(os.path.join(workdir, 'fleet'), prefix='idp-bench-fleet')
    rows = []
    try:
        log('fleet: starting %d hosts with %d rows each' % (max(COUNTS), options.rows))
        for n in range(1, max(COUNTS) + 1):
            fleet.add('bench%d' % n, rows=options.rows)
        dummy_offsite = {'backend': 'rclone', 'target': 'offsite:unused', 'rclone_remote_type': 'local',
                         'rclone_remote_options': {}}
        fleet.inventory(dummy_offsite, recipient, identity, backup_offsite_enabled=False)
        # warm: the first run per host pays for fact caching of the interpreter and the first sudo
        playbook_job(fleet, fleet.hosts, env)
        shell_job(fleet, fleet.hosts, recipient)
        for count in COUNTS:
            hosts = fleet.hosts[:count]
            played, shelled = [], []
            for attempt in range(options.repeat):
                played.append(playbook_job(fleet, hosts, env))
                shelled.append(shell_job(fleet, hosts, recipient))
                log('fleet: %d hosts, run %d: playbook %.1f s, shell %.2f s'
                    % (count, attempt + 1, played[-1], shelled[-1]))
            rows.append({'hosts': count, 'forks': count, 'playbook_runs': played, 'shell_runs': shelled,
                         'playbook_seconds': statistics.median(played), 'shell_seconds': statistics.median(shelled)})
    finally:
        fleet.close()
        shutil.rmtree(workdir, ignore_errors=True)
    for row in rows:
        row['ratio'] = row['playbook_seconds'] / row['shell_seconds']
        row['growth'] = row['playbook_seconds'] / rows[0]['playbook_seconds']
        row['shell_growth'] = row['shell_seconds'] / rows[0]['shell_seconds']
    result = {'rows': options.rows, 'repeat': options.repeat, 'rows_measured': rows, 'machine': machine(),
              'finished': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}
    markdown = render(result)
    if options.no_doc:
        print(markdown)
        return 0
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, 'w') as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write('\n')
    update_section('fleet', markdown)
    log(markdown)
    return 0


if __name__ == '__main__':
    sys.exit(main())
