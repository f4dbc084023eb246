#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark of idp.recovery.offsite_upload against a plain ``rclone copy`` to a local S3 endpoint.

An S3 endpoint (``rclone serve s3`` on 127.0.0.1, over a directory of the work directory) receives
the same backup set from both sides in the same run, alternating: the module, run as Ansible runs
it in debug mode (``python -m ...offsite_upload args.json``), and ``rclone copy SET
offsite:bucket/...`` with the same remote definition and the same number of transfers. Each run
writes to a fresh prefix. The module's verification (remote MD5 against the local files, whose
SHA-256 is checked against the manifest in the same read) is reported separately, next to
``rclone check --one-way`` of the same files as its stock counterpart.

Writes the ``offsite`` section of docs/performance.md and bench/results/offsite.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

from perfdoc import update_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
VENV_BIN = os.path.join(REPO, '.venv', 'bin')
RESULTS = os.path.join(REPO, 'bench', 'results', 'offsite.json')
MODULE = 'ansible_collections.idp.recovery.plugins.modules.offsite_upload'
MiB = 1024 * 1024
GOAL_RATIO = 0.9
ACCESS_KEY = 'idprecoverybench'
SECRET_KEY = 'idp-recovery-bench-%s' % os.urandom(6).hex()
BUCKET = 'bench'
SERVICE = 'authentik'
STAMP = '20261122T030000Z'


def log(message):
    print(message, flush=True)


def tool(name):
    candidate = os.path.join(VENV_BIN, name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# memory

def _status(pid):
    found = {}
    try:
        with open('/proc/%d/status' % pid) as handle:
            for line in handle:
                if line.startswith(('VmHWM:', 'Name:', 'PPid:')):
                    key, value = line.split(':', 1)
                    found[key] = value.strip()
    except OSError:
        return None
    return found


def _children(pid):
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as handle:
            return [int(item) for item in handle.read().split()]
    except OSError:
        return []


class PeakMonitor(threading.Thread):
    """Polls VmHWM of a process and of every descendant every 50 ms."""

    def __init__(self, pid):
        super(PeakMonitor, self).__init__(daemon=True)
        self.pid = pid
        self.root_kib = 0
        self.child_kib = 0
        self.child_name = None
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            pending = [self.pid]
            while pending:
                pid = pending.pop()
                status = _status(pid)
                if status is None:
                    continue
                peak = int(status.get('VmHWM', '0 kB').split()[0])
                if pid == self.pid:
                    self.root_kib = max(self.root_kib, peak)
                elif peak > self.child_kib:
                    self.child_kib = peak
                    self.child_name = status.get('Name')
                pending.extend(_children(pid))
            self.stopped.wait(0.05)


def timed(argv, env, monitor=False):
    started = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    watcher = PeakMonitor(proc.pid) if monitor else None
    if watcher:
        watcher.start()
    out, err = proc.communicate()
    seconds = time.time() - started
    if watcher:
        watcher.stopped.set()
        watcher.join()
    if proc.returncode != 0 and not out.strip().startswith(b'{'):
        raise SystemExit('%s failed (%d):\n%s' % (argv[:3], proc.returncode, err.decode('utf-8', 'replace')[-3000:]))
    return seconds, out, err, watcher


# ---------------------------------------------------------------------------------------------
# the set and the endpoint

def make_set(workdir, size):
    """A complete set of age-encrypted random payloads (3/4 and 1/4 of size), kept for later runs."""
    sys.path.insert(0, COLLECTIONS)
    from ansible_collections.idp.recovery.plugins.module_utils import _backup_set  # pylint: disable=import-outside-toplevel
    root = os.path.join(workdir, 'backups-%d' % size)
    set_dir = os.path.join(root, SERVICE, STAMP)
    if _backup_set.is_complete(set_dir):
        return set_dir
    shutil.rmtree(root, ignore_errors=True)
    key = os.path.join(workdir, 'age.key')
    if not os.path.exists(key):
        subprocess.run(['age-keygen', '-o', key], check=True, stderr=subprocess.DEVNULL)
    recipient = subprocess.run(['age-keygen', '-y', key], check=True, stdout=subprocess.PIPE).stdout.decode().strip()
    _backup_set.create(set_dir, SERVICE, 'authentik')
    for name, part in (('authentik.dump.zst.age', size * 3 // 4), ('media.tar.zst.age', size // 4)):
        dest = os.path.join(set_dir, name)
        subprocess.run('head -c %d /dev/urandom | age -r %s -o %s' % (part, recipient, dest), shell=True, check=True)
        _backup_set.write_fragment(set_dir, name, {'payloads': {name: {
            'format': 'raw', 'compression': 'zstd', 'encryption': 'age', 'recipients': [recipient],
            'size': os.path.getsize(dest)}}})
    _backup_set.finalize(set_dir)
    return set_dir


class Endpoint(object):
    def __init__(self, workdir):
        self.root = os.path.join(workdir, 's3')
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(os.path.join(self.root, BUCKET))
        self.port = free_port()
        self.log = open(os.path.join(workdir, 's3.log'), 'ab')
        self.proc = subprocess.Popen([tool('rclone'), 'serve', 's3', self.root, '--addr', '127.0.0.1:%d' % self.port,
                                      '--auth-key', '%s,%s' % (ACCESS_KEY, SECRET_KEY), '--config', '/dev/null'],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise SystemExit('rclone serve s3 did not start')
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def options(self):
        return {'provider': 'Rclone', 'endpoint': 'http://127.0.0.1:%d' % self.port,
                'access_key_id': ACCESS_KEY, 'secret_access_key': SECRET_KEY}

    def env(self):
        env = dict(os.environ)
        env.update(dict(('RCLONE_CONFIG_OFFSITE_%s' % key.upper(), value) for key, value in self.options().items()))
        env['RCLONE_CONFIG_OFFSITE_TYPE'] = 's3'
        env['RCLONE_CONFIG'] = '/dev/null'
        return env

    def clear(self, prefix):
        shutil.rmtree(os.path.join(self.root, BUCKET, prefix), ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# runs

def run_module(endpoint, set_dir, prefix, workdir, transfers):
    args = {'path': set_dir, 'backend': 'rclone', 'target': 'offsite:%s/%s' % (BUCKET, prefix),
            'rclone_remote_type': 's3', 'rclone_remote_options': endpoint.options(), 'transfers': transfers,
            'rclone_binary': tool('rclone')}
    args_file = os.path.join(workdir, 'args.json')
    fd = os.open(args_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS, RCLONE_CONFIG='/dev/null')
    seconds, out, _err, watcher = timed([sys.executable, '-m', MODULE, args_file], env, monitor=True)
    os.unlink(args_file)
    result = json.loads(out.decode('utf-8'))
    if result.get('failed') or not result.get('changed'):
        raise SystemExit('the module did not upload: %s' % result.get('msg', result))
    return {
        'seconds': seconds,
        'verify_seconds': result['verification']['seconds'],
        'upload_seconds': seconds - result['verification']['seconds'],
        'module_copy_seconds': result['seconds'],
        'bytes': result['bytes'],
        'root_rss_kib': watcher.root_kib,
        'child_rss_kib': watcher.child_kib,
        'child_name': watcher.child_name,
        'methods': result['verification']['methods'],
    }


def run_rclone(endpoint, set_dir, prefix, transfers):
    dest = 'offsite:%s/%s/%s/%s' % (BUCKET, prefix, SERVICE, STAMP)
    seconds, _out, _err, watcher = timed([tool('rclone'), 'copy', set_dir, dest, '--transfers', str(transfers)],
                                         endpoint.env(), monitor=True)
    check, _out, _err, _watcher = timed([tool('rclone'), 'check', '--one-way', set_dir, dest], endpoint.env())
    return {'seconds': seconds, 'check_seconds': check, 'rss_kib': max(watcher.root_kib, watcher.child_kib)}


def machine():
    cpu = platform.processor() or ''
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    version = subprocess.run([tool('rclone'), 'version'], stdout=subprocess.PIPE, check=False).stdout.decode().split('\n')[0]
    return {'cpu': cpu, 'nproc': os.cpu_count(), 'kernel': platform.release(), 'python': platform.python_version(),
            'rclone': version, 'load': ' '.join('%.2f' % value for value in os.getloadavg())}


def markdown(report):
    m = report['summary']
    lines = [
        '## Offsite upload',
        '',
        '`bench/bench_offsite.py`%s, %s. The raw numbers are in `bench/results/offsite.json`.' % (
            ' --quick' if report['quick'] else '', report['finished']),
        '',
        '### Goal',
        '',
        '- **Throughput**: uploading a set with `offsite_upload` (verification excluded) takes at most 1/%.1f of the time '
        'of a plain `rclone copy` of the same files to the same endpoint (ratio >= %.1fx).' % (GOAL_RATIO, GOAL_RATIO),
        '',
        '### Summary',
        '',
        '| Set | Runs | `rclone copy` s | Module upload s | Upload ratio | Goal | Module verification s | '
        '`rclone check --one-way` s | Module total s | Python peak RSS | rclone peak RSS |',
        '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|',
        '| %s | %d | %.2f | %.2f | %.2fx | %s | %.2f | %.2f | %.2f | %.1f MiB | %.1f MiB |' % (
            m['size_label'], m['runs'], m['rclone_seconds'], m['module_upload_seconds'], m['ratio'],
            'PASS' if m['ratio'] >= GOAL_RATIO else 'MISS', m['module_verify_seconds'], m['rclone_check_seconds'],
            m['module_seconds'], m['python_rss_mib'], m['rclone_rss_mib']),
        '',
        '### Method',
        '',
        '- **Set.** One complete backup set of %s: two age-encrypted payloads of random data (3/4 and 1/4 of the size, '
        'incompressible like any encrypted payload), `metadata.json` and `MANIFEST.sha256`, made once and kept in the work '
        'directory.' % m['size_label'],
        '- **Endpoint.** `rclone serve s3` on 127.0.0.1 over a directory on the same disk, reached by rclone\'s S3 backend '
        '(`provider = Rclone`). Both sides use the same remote definition (environment variables), the same `--transfers %d` '
        'and a fresh prefix for every run.' % report['transfers'],
        '- **Module runs.** `python -m ansible_collections.idp.recovery.plugins.modules.offsite_upload args.json`, as Ansible '
        'runs a module in debug mode. "Module upload" is its wall time minus its own verification time: interpreter start, '
        'argument parsing, reading the local set, the remote listing, `rclone copy` of the payloads and metadata, the '
        'manifest upload last and reading the manifest back. "Module verification" is the remote MD5 listing compared with '
        'the local files, read once and checked against the manifest\'s SHA-256 in the same pass (methods: %s).' % (
            ', '.join(m['methods'])),
        '- **Reference.** `rclone copy SET offsite:bucket/PREFIX/authentik/STAMP --transfers %d`, and `rclone check --one-way` '
        'of the same files afterwards as the stock counterpart of the verification.' % report['transfers'],
        '- **Order and repetition.** Module and reference alternate, the order reverses every round; the median of %d '
        'run(s) is reported. `sync` (untimed) follows every run.' % m['runs'],
        '- **Memory.** A monitor thread polls `VmHWM` in `/proc/<pid>/status` of the module\'s Python process and of its '
        'children (rclone) every 50 ms.',
        '',
        '### Machine',
        '',
        '| | |',
        '|---|---|',
    ]
    for key in ('cpu', 'nproc', 'kernel', 'python', 'rclone', 'load'):
        lines.append('| %s | %s |' % (key, report['machine'][key]))
    lines += ['', 'Other work running on the machine at the same time shows as noise in the individual runs:', '',
              '| Run | Module total s | Module upload s | Module verification s | `rclone copy` s | `rclone check` s |',
              '|---:|---:|---:|---:|---:|---:|']
    for index, (mod, ref) in enumerate(zip(report['module_runs'], report['rclone_runs']), 1):
        lines.append('| %d | %.2f | %.2f | %.2f | %.2f | %.2f |' % (
            index, mod['seconds'], mod['upload_seconds'], mod['verify_seconds'], ref['seconds'], ref['check_seconds']))
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--quick', action='store_true', help='a 128 MiB set and one run (a smoke test of the benchmark)')
    parser.add_argument('--size-mib', type=int, default=1024, help='size of the set in MiB (default 1024)')
    parser.add_argument('--runs', type=int, default=3, help='runs of each side (default 3)')
    parser.add_argument('--transfers', type=int, default=4, help='rclone --transfers on both sides (default 4)')
    parser.add_argument('--workdir', default='/var/tmp/idp-recovery-bench-offsite')
    parser.add_argument('--no-doc', action='store_true', help='do not update docs/performance.md')
    options = parser.parse_args()
    size = (128 if options.quick else options.size_mib) * MiB
    runs = 1 if options.quick else options.runs
    os.makedirs(options.workdir, mode=0o700, exist_ok=True)
    started = time.time()
    log('offsite benchmark: set of %d MiB, %d run(s)' % (size // MiB, runs))
    set_dir = make_set(options.workdir, size)
    endpoint = Endpoint(options.workdir)
    module_runs = []
    rclone_runs = []
    try:
        for index in range(runs):
            order = ('module', 'rclone') if index % 2 == 0 else ('rclone', 'module')
            for side in order:
                prefix = 'run%d-%s' % (index, side)
                if side == 'module':
                    sample = run_module(endpoint, set_dir, prefix, options.workdir, options.transfers)
                    module_runs.append(sample)
                    log('  module  %6.2f s (upload %.2f s, verification %.2f s), python %.1f MiB, %s %.1f MiB' % (
                        sample['seconds'], sample['upload_seconds'], sample['verify_seconds'],
                        sample['root_rss_kib'] / 1024.0, sample['child_name'], sample['child_rss_kib'] / 1024.0))
                else:
                    sample = run_rclone(endpoint, set_dir, prefix, options.transfers)
                    rclone_runs.append(sample)
                    log('  rclone  %6.2f s (check %.2f s)' % (sample['seconds'], sample['check_seconds']))
                endpoint.clear(prefix)
                subprocess.run(['sync'], check=False)
    finally:
        endpoint.stop()
    median = statistics.median
    summary = {
        'size_bytes': size,
        'size_label': '%d MiB' % (size // MiB) if size < 1024 * MiB else '%g GiB' % (size / (1024.0 * MiB)),
        'runs': runs,
        'rclone_seconds': median(item['seconds'] for item in rclone_runs),
        'rclone_check_seconds': median(item['check_seconds'] for item in rclone_runs),
        'module_seconds': median(item['seconds'] for item in module_runs),
        'module_upload_seconds': median(item['upload_seconds'] for item in module_runs),
        'module_verify_seconds': median(item['verify_seconds'] for item in module_runs),
        'python_rss_mib': round(max(item['root_rss_kib'] for item in module_runs) / 1024.0, 1),
        'rclone_rss_mib': round(max(item['child_rss_kib'] for item in module_runs) / 1024.0, 1),
        'methods': sorted(set(method for item in module_runs for method in item['methods'])),
    }
    summary['ratio'] = round(summary['rclone_seconds'] / summary['module_upload_seconds'], 3)
    summary['goal_met'] = summary['ratio'] >= GOAL_RATIO
    report = {
        'benchmark': 'offsite',
        'quick': options.quick,
        'finished': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'duration_seconds': round(time.time() - started, 1),
        'transfers': options.transfers,
        'goal_ratio': GOAL_RATIO,
        'machine': machine(),
        'summary': summary,
        'module_runs': module_runs,
        'rclone_runs': rclone_runs,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, 'w') as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write('\n')
    if not options.no_doc:
        update_section('offsite', markdown(report))
    log('upload ratio %.2fx (goal >= %.1fx): %s; verification %.2f s (rclone check %.2f s); python peak RSS %.1f MiB' % (
        summary['ratio'], GOAL_RATIO, 'PASS' if summary['goal_met'] else 'MISS', summary['module_verify_seconds'],
        summary['rclone_check_seconds'], summary['python_rss_mib']))


if __name__ == '__main__':
    main()
