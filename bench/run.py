#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Throughput and memory benchmark of idp.recovery.encrypted_archive against plain shell pipelines.

The module runs exactly as Ansible runs a module in debug mode
(``python -m ansible_collections.idp.recovery.plugins.modules.encrypted_archive args.json``),
in its own process, with the real ``zstd`` and ``age`` children. Each measurement alternates
module and shell runs, repeats them, and reports the median wall time, the throughput against
the plain shell pipeline that does the same job, and the peak resident memory of the module's
Python process and of its largest child.

Writes docs/performance.md and bench/results/latest.json. See ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

from perfdoc import DOC_PATH, FLAT_MIB, FLAT_PERCENT, LINEAR_TOLERANCE, flat, linear, update_section
from perfdoc import pass_miss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, '.build', 'collections')
COLLECTION_LINK = os.path.join(COLLECTIONS, 'ansible_collections', 'idp', 'recovery')
MODULE_ARCHIVE = 'ansible_collections.idp.recovery.plugins.modules.encrypted_archive'
MODULE_SET = 'ansible_collections.idp.recovery.plugins.modules.backup_set'
RESULTS_DIR = os.path.join(REPO, 'bench', 'results')

MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = MiB
CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
GENERATOR_VERSION = 3
DIR_PARTS = 64
RANDOM_FRACTION = 0.12   # share of incompressible 1 MiB blocks in the generated input
TEXT_POOL = 48           # distinct log-like text blocks of 1 MiB each
ZSTD_LEVEL = 3

GOAL_RATIO = 0.9
GOAL_RSS_MIB = 128
# module throughput / reference shell pipeline, at least, by what the measurement does
GOAL_RATIOS = {'encrypt': 0.95, 'extract': 0.90, 'verify': 0.90}
JUDGED_FROM = GiB            # the throughput goals are judged on inputs of at least this size
LARGE_FROM = 2 * GiB         # sizes from here on run --repeat-large times (the whole benchmark stays ~15 min)
STARTUP_SIZE = MiB           # the tiny input that measures the fixed start-up cost of each measurement
PROFILE_TOP = 12             # functions listed from the profile of a module run that misses its goal


# ---------------------------------------------------------------------------------------------
# helpers

def parse_size(text):
    match = re.match(r'^\s*(\d+)\s*([KMG]?)i?B?\s*$', text, re.I)
    if not match:
        raise argparse.ArgumentTypeError('not a size: %r (use e.g. 100M or 1G)' % text)
    factor = {'': 1, 'K': 1024, 'M': MiB, 'G': 1024 * MiB}[match.group(2).upper()]
    return int(match.group(1)) * factor


def size_label(size):
    if size % (1024 * MiB) == 0:
        return '%dG' % (size // (1024 * MiB))
    if size % MiB == 0:
        return '%dM' % (size // MiB)
    return str(size)


def human_size(size):
    if size % (1024 * MiB) == 0:
        return '%d GiB' % (size // (1024 * MiB))
    return '%d MiB' % (size // MiB) if size % MiB == 0 else '%d bytes' % size


def log(msg):
    sys.stderr.write('[bench %s] %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


def remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def command_output(argv):
    try:
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              check=False).stdout.decode('utf-8', 'replace').strip()
    except OSError as exc:
        return 'unavailable (%s)' % exc


# ---------------------------------------------------------------------------------------------
# test inputs

_WORDS = ('user login logout token refresh grant client authorize consent flow stage identity tenant '
          'oauth2 openid scope email profile GET POST PUT DELETE /api/v3/core/users/ /application/o/token/ '
          '/admin/identities /admin/clients 200 201 204 302 400 401 403 404 INFO WARNING DEBUG ERROR '
          'authentik.core authentik.flows ory.kratos ory.hydra kotauth.tenant postgres '
          'password_changed mfa_enrolled webauthn totp recovery_code').split()


def _text_block(rng):
    """1 MiB of log-like lines: a vocabulary, time stamps, counters and some random hex."""
    lines = []
    total = 0
    while total < CHUNK:
        line = '2025-%02d-%02dT%02d:%02d:%02d.%06dZ %-7s %s event=%s id=%s uid=%d ip=10.%d.%d.%d %s%s\n' % (
            rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
            rng.randint(0, 999999), rng.choice(_WORDS[34:38]), rng.choice(_WORDS[38:44]), rng.choice(_WORDS),
            '%016x' % rng.getrandbits(64), rng.randint(1, 10 ** 6), rng.randint(0, 255), rng.randint(0, 255),
            rng.randint(0, 255), ' '.join(rng.choice(_WORDS) for _dummy in range(rng.randint(2, 9))),
            (' sig=' + '%x' % rng.getrandbits(rng.choice((32, 64, 128)))) if rng.random() < 0.3 else '')
        lines.append(line)
        total += len(line)
    return ''.join(lines).encode('ascii')[:CHUNK]


def generate_stream(size, seed):
    """Yield 1 MiB blocks: log-like text from a pool, mixed with fresh random blocks.

    A text block never repeats within the previous 4 MiB, farther than the 2 MiB window of
    zstd level 3, so the repeats do not make the data look more compressible than it is.
    """
    rng = random.Random(seed)
    pool = [_text_block(rng) for _dummy in range(TEXT_POOL)]
    recent = []
    written = 0
    while written < size:
        count = min(CHUNK, size - written)
        if rng.random() < RANDOM_FRACTION:
            block = os.urandom(count)
        else:
            while True:
                index = rng.randrange(len(pool))
                if index not in recent:
                    break
            recent = (recent + [index])[-4:]
            block = pool[index][:count]
        yield block
        written += count


def _input_meta(size):
    return {'generator': GENERATOR_VERSION, 'size': size, 'parts': DIR_PARTS,
            'random_fraction': RANDOM_FRACTION, 'text_pool': TEXT_POOL}


def _inputs_ok(paths, size):
    try:
        with open(paths['meta']) as handle:
            if json.load(handle) != _input_meta(size):
                return False
        if os.path.getsize(paths['file']) != size:
            return False
        return sum(os.path.getsize(os.path.join(paths['dir'], n)) for n in os.listdir(paths['dir'])) == size
    except (OSError, ValueError):
        return False


def prepare_inputs(inputs_dir, size):
    """A file of ``size`` bytes and a directory holding the same bytes in DIR_PARTS files."""
    label = size_label(size)
    paths = {
        'file': os.path.join(inputs_dir, 'input-%s.bin' % label),
        'dir': os.path.join(inputs_dir, 'input-%s.d' % label),
        'meta': os.path.join(inputs_dir, 'input-%s.json' % label),
    }
    if _inputs_ok(paths, size):
        log('reusing input %s (%s)' % (paths['file'], human_size(size)))
        return paths
    for key in ('file', 'dir', 'meta'):
        if os.path.lexists(paths[key]):
            remove(paths[key])
    os.makedirs(inputs_dir, exist_ok=True)
    log('generating input %s (%s)' % (paths['file'], human_size(size)))
    started = time.time()
    with open(paths['file'], 'wb') as out:
        for block in generate_stream(size, seed=size):
            out.write(block)
    os.mkdir(paths['dir'])
    part = -(-size // DIR_PARTS)
    with open(paths['file'], 'rb') as source:
        for index in range(DIR_PARTS):
            data_left = min(part, size - index * part)
            if data_left <= 0:
                break
            with open(os.path.join(paths['dir'], 'part-%02d.bin' % index), 'wb') as out:
                while data_left > 0:
                    data = source.read(min(CHUNK, data_left))
                    out.write(data)
                    data_left -= len(data)
    with open(paths['meta'], 'w') as handle:
        json.dump(_input_meta(size), handle)
    log('generated in %.1f s' % (time.time() - started))
    return paths


def warm_up(paths):
    """Read the inputs once so both sides read them from the page cache."""
    files = [paths['file']] + [os.path.join(paths['dir'], n) for n in sorted(os.listdir(paths['dir']))]
    for path in files:
        with open(path, 'rb', buffering=0) as handle:
            while handle.read(4 * MiB):
                pass


def zstd_ratio(path):
    """Compression ratio of zstd -3 on a file (computed once per input, untimed)."""
    proc = subprocess.Popen(['zstd', '-%d' % ZSTD_LEVEL, '-q', '-c', path], stdout=subprocess.PIPE)
    total = 0
    while True:
        data = proc.stdout.read(4 * MiB)
        if not data:
            break
        total += len(data)
    proc.wait()
    return os.path.getsize(path) / float(total)


# ---------------------------------------------------------------------------------------------
# running a process tree and measuring it

def _read_status(pid):
    name = None
    hwm = None
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('Name:'):
                name = line.split(None, 1)[1].strip()
            elif line.startswith('VmHWM:'):
                hwm = int(line.split()[1])
                break
    return name, hwm


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name: state, ppid, ... (field 3 onwards)."""
    with open('/proc/%d/stat' % pid) as handle:
        data = handle.read()
    return data[data.rindex(')') + 2:].split()


def _ppid(pid):
    return int(_stat_fields(pid)[1])


def _cpu_seconds(pid):
    """User + system CPU time of the process itself (utime + stime), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)


class TreeMonitor(threading.Thread):
    """Poll the peak RSS (VmHWM) of a process and of every descendant.

    Peaks are kept per (pid, name): a child sampled between fork and exec still carries its
    parent's name and memory and is not mistaken for the program it becomes.
    """

    def __init__(self, root, argv, interval=0.05):
        super(TreeMonitor, self).__init__(name='tree-monitor', daemon=True)
        self.root = root
        # until it has exec'd, the root still shares this process's memory: not counted
        self.root_cmdline = ('\0'.join(argv) + '\0').encode('utf-8', 'surrogateescape')
        self.root_execed = False
        self.interval = interval
        self.tree = {root}
        self.peaks = {}
        self.cpu = {}    # (pid, name): user + system seconds, as last seen
        self._halt = threading.Event()

    def run(self):
        while True:
            self.sample()
            if self._halt.wait(self.interval):
                break

    def stop(self):
        self._halt.set()
        self.join()

    def sample(self):
        try:
            names = os.listdir('/proc')
        except OSError:
            names = []
        for entry in names:
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid <= self.root or pid in self.tree:
                continue
            try:
                if _ppid(pid) in self.tree:
                    self.tree.add(pid)
            except (OSError, ValueError, IndexError):
                pass
        if not self.root_execed:
            try:
                with open('/proc/%d/cmdline' % self.root, 'rb') as handle:
                    self.root_execed = handle.read() == self.root_cmdline
            except OSError:
                pass
        for pid in list(self.tree):
            if pid == self.root and not self.root_execed:
                continue
            try:
                name, hwm = _read_status(pid)
            except (OSError, ValueError):
                continue
            if hwm is None:
                continue
            key = (pid, name)
            if hwm > self.peaks.get(key, 0):
                self.peaks[key] = hwm
            try:
                self.cpu[key] = _cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                pass


def run_measured(argv, env=None, stdout=None):
    """Run argv; return wall seconds, exit code, stdout text and the memory peaks (KiB)."""
    out_handle = open(stdout, 'wb') if stdout else subprocess.DEVNULL
    err_path = (stdout or os.devnull) + '.err' if stdout else None
    err_handle = open(err_path, 'wb') if err_path else subprocess.PIPE
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_handle, stderr=err_handle, env=env, close_fds=True)
        monitor = TreeMonitor(proc.pid, argv)
        monitor.start()
        stderr_text = ''
        if err_handle is subprocess.PIPE:
            stderr_text = proc.stderr.read().decode('utf-8', 'replace')
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        monitor.stop()
    finally:
        if stdout:
            out_handle.close()
            err_handle.close()
    if err_path:
        with open(err_path, 'rb') as handle:
            stderr_text = handle.read().decode('utf-8', 'replace')
        os.unlink(err_path)
    root_name = None
    root_peak = 0
    child_name = None
    child_peak = 0
    for (pid, name), peak in monitor.peaks.items():
        if pid == proc.pid:
            root_name = root_name or name
            root_peak = max(root_peak, peak)
    for (pid, name), peak in monitor.peaks.items():
        if pid != proc.pid and name != root_name and peak > child_peak:
            child_name, child_peak = name, peak
    cpu = {}
    for (pid, name), seconds in monitor.cpu.items():
        label = '%s (main)' % name if pid == proc.pid else name
        cpu[label] = cpu.get(label, 0.0) + seconds
    return {
        'seconds': elapsed,
        'rc': proc.returncode,
        'stderr': stderr_text[-2000:],
        'root_name': root_name,
        'root_rss_kib': root_peak,
        'child_name': child_name,
        'child_rss_kib': child_peak,
        'tree_rss_kib': usage.ru_maxrss,
        # CPU of the whole tree (wait4 counts every descendant that was waited for) and, sampled every
        # 50 ms, of each process by name: a process's last 50 ms can be missing from the sampled figures
        'cpu_seconds': usage.ru_utime + usage.ru_stime,
        'cpu_by_process': cpu,
    }


# ---------------------------------------------------------------------------------------------
# the benchmark

class Bench(object):
    def __init__(self, options):
        self.options = options
        self.python = options.python
        self.workdir = os.path.abspath(options.workdir)
        self.inputs_dir = os.path.join(self.workdir, 'inputs')
        self.run_dir = os.path.join(self.workdir, 'run-%d' % os.getpid())
        self.keyfile = os.path.join(self.run_dir, 'age.key')
        self.recipient = None
        self.env = dict(os.environ)
        self.collections = os.path.abspath(options.collections)
        self.env['PYTHONPATH'] = self.collections + ((os.pathsep + self.env['PYTHONPATH'])
                                                     if self.env.get('PYTHONPATH') else '')
        self.env.setdefault('LC_ALL', 'C.UTF-8')
        self.counter = 0
        self.measurements = []
        self.startup = []        # the same measurements on a tiny input: the fixed cost of every run
        self.profile_out = None  # while set, the next module run runs under cProfile into this file
        sizes = [s for s in getattr(options, 'sizes', None) or [] if isinstance(s, int)]
        judged = [s for s in sizes if s >= JUDGED_FROM]
        self.profile_size = min(judged) if judged else max(sizes or [0])

    # -- plumbing -------------------------------------------------------------------------------

    def fresh(self, tag):
        self.counter += 1
        return os.path.join(self.run_dir, 'out', '%03d-%s' % (self.counter, tag))

    def module(self, module_name, args, tag):
        """Run a module as Ansible does in debug mode; return the measurement and its result."""
        args_path = os.path.join(self.run_dir, 'args-%s.json' % tag)
        with open(args_path, 'w') as handle:
            json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
        out_path = os.path.join(self.run_dir, 'result-%s.json' % tag)
        profile = ['-m', 'cProfile', '-o', self.profile_out] if self.profile_out else []
        sample = run_measured([self.python] + profile + ['-m', module_name, args_path], env=self.env, stdout=out_path)
        with open(out_path, 'rb') as handle:
            text = handle.read().decode('utf-8', 'replace')
        os.unlink(out_path)
        os.unlink(args_path)
        try:
            result = json.loads(text[text.index('{'):])
        except ValueError:
            result = {'failed': True, 'msg': 'no JSON result: %s %s' % (text[-500:], sample['stderr'])}
        if sample['rc'] != 0 or result.get('failed'):
            raise SystemExit('module %s failed: %s' % (module_name, result.get('msg') or sample['stderr']))
        return sample, result

    def shell(self, script):
        sample = run_measured(['bash', '-c', 'set -euo pipefail; ' + script], env=self.env)
        if sample['rc'] != 0:
            raise SystemExit('shell pipeline failed (%s): %s\n%s' % (sample['rc'], script, sample['stderr']))
        return sample

    def settle(self):
        """Untimed: flush dirty pages so one run's write-back does not slow the next one."""
        os.sync()

    def open_set(self, tag):
        set_dir = os.path.join(self.run_dir, 'sets', tag, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()) +
                               '-%03d' % self.counter)
        self.counter += 1
        self.module(MODULE_SET, {'path': set_dir, 'state': 'present', 'service': 'bench', 'kind': 'files'},
                    'set-open')
        return set_dir

    def setup(self):
        os.makedirs(self.run_dir)
        os.makedirs(os.path.join(self.run_dir, 'out'))
        if self.collections == COLLECTIONS and not os.path.exists(COLLECTION_LINK):
            os.makedirs(os.path.dirname(COLLECTION_LINK), exist_ok=True)
            os.symlink(REPO, COLLECTION_LINK)
        subprocess.run(['age-keygen', '-o', self.keyfile], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        self.recipient = subprocess.run(['age-keygen', '-y', self.keyfile], check=True,
                                        stdout=subprocess.PIPE).stdout.decode().strip()
        self.warm_modules()

    def warm_modules(self):
        """Untimed: one small round trip, so that no measured run pays for compiling the modules."""
        tiny = os.path.join(self.run_dir, 'warm.txt')
        with open(tiny, 'wb') as handle:
            handle.write(b'warm-up\n' * 1000)
        set_dir = self.open_set('warm')
        payload = os.path.join(set_dir, 'warm.zst.age')
        self.module(MODULE_ARCHIVE, {'src': tiny, 'dest': payload, 'recipients': [self.recipient]}, 'warm')
        self.module(MODULE_SET, {'path': set_dir, 'state': 'finalized'}, 'warm')
        self.module(MODULE_SET, {'path': set_dir, 'state': 'verified', 'identity': self.keyfile}, 'warm')
        self.module(MODULE_ARCHIVE, {'src': payload, 'dest': tiny + '.out', 'state': 'extracted',
                                     'identity': self.keyfile}, 'warm')
        remove(set_dir)
        remove(tiny)
        remove(tiny + '.out')

    # -- measurements ---------------------------------------------------------------------------

    def repeat_for(self, size):
        return self.options.repeat_large if size >= LARGE_FROM else self.options.repeat

    def measure(self, key, title, short, size, size_label_text, variants, notes=None):
        """Run every variant ``repeat`` times, alternating them; keep the medians.

        ``variants`` is a list of dicts: name, label, kind ('module' or 'shell'), baseline (bool),
        command (the shell command, for shell rows) and run(): a callable returning a sample dict,
        which cleans up after itself.
        """
        startup = size == STARTUP_SIZE
        repeat = self.options.repeat if startup else self.repeat_for(size)
        log('%s: %d x %d runs' % (title, repeat, len(variants)))
        samples = {v['name']: [] for v in variants}
        for round_index in range(repeat):
            order = variants if round_index % 2 == 0 else list(reversed(variants))
            for variant in order:
                sample = variant['run']()
                self.settle()
                samples[variant['name']].append(sample)
                log('  %-14s %7.2f s  rss root %6.1f MiB  child %s %6.1f MiB' % (
                    variant['name'], sample['seconds'], sample['root_rss_kib'] / 1024.0,
                    sample['child_name'], sample['child_rss_kib'] / 1024.0))
        rows = []
        for variant in variants:
            runs = samples[variant['name']]
            seconds = statistics.median(s['seconds'] for s in runs)
            child = max(runs, key=lambda s: s['child_rss_kib'])
            row = {
                'name': variant['name'],
                'label': variant['label'],
                'kind': variant['kind'],
                'baseline': variant.get('baseline', False),
                'runs_seconds': [round(s['seconds'], 3) for s in runs],
                'median_seconds': round(seconds, 3),
                'mib_per_s': round(size / MiB / seconds, 1),
                'root_name': runs[0]['root_name'],
                'root_rss_mib': round(max(s['root_rss_kib'] for s in runs) / 1024.0, 1),
                'child_name': child['child_name'],
                'child_rss_mib': round(child['child_rss_kib'] / 1024.0, 1),
                'tree_rss_mib': round(max(s['tree_rss_kib'] for s in runs) / 1024.0, 1),
                'cpu_seconds': round(statistics.median(s['cpu_seconds'] for s in runs), 2),
                'cpu_by_process': median_by_name([s['cpu_by_process'] for s in runs]),
            }
            if variant.get('command'):
                row['command'] = variant['command']
            inner = [s['inner_seconds'] for s in runs if s.get('inner_seconds') is not None]
            if inner:
                row['module_reported_seconds'] = round(statistics.median(inner), 3)
            rows.append(row)
        module_row = [r for r in rows if r['kind'] == 'module'][0]
        for row in rows:
            row['module_vs_this'] = round(module_row['mib_per_s'] / row['mib_per_s'], 3)
        baseline = [r for r in rows if r['baseline']][0]
        kind = key.rsplit('-', 1)[0]
        measurement = {
            'key': key,
            'kind': kind,
            'repeat': repeat,
            'title': title,
            'short': short,
            'size_bytes': size,
            'size': size_label_text,
            'rows': rows,
            'baseline': baseline['name'],
            'notes': notes or [],
        }
        # rounded as reported, so that the verdict matches the number shown
        measurement['ratio'] = round(module_row['mib_per_s'] / baseline['mib_per_s'], 2)
        measurement['goal_ratio'] = GOAL_RATIOS[kind.split('-', maxsplit=1)[0]]
        measurement['judged'] = size >= JUDGED_FROM
        measurement['goals'] = {
            'throughput': measurement['ratio'] >= measurement['goal_ratio'],
            'python_rss': module_row['root_rss_mib'] <= GOAL_RSS_MIB,
            'child_rss': module_row['child_rss_mib'] <= GOAL_RSS_MIB,
        }
        log('  => module %.1f MiB/s, shell %.1f MiB/s, ratio %.2f' % (
            module_row['mib_per_s'], baseline['mib_per_s'], measurement['ratio']))
        if startup:
            self.startup.append(measurement)
            return measurement
        if size == self.profile_size and not measurement['goals']['throughput'] and self.options.profile:
            measurement['profile'] = self.profile_run([v for v in variants if v['kind'] == 'module'][0])
        self.measurements.append(measurement)
        return measurement

    def profile_run(self, variant):
        """One more run of the module under cProfile; its top functions by own time."""
        log('  profiling one module run')
        self.profile_out = os.path.join(self.run_dir, 'module.prof')
        try:
            sample = variant['run']()
        finally:
            prof, self.profile_out = self.profile_out, None
        self.settle()
        summary = profile_summary(prof, PROFILE_TOP)
        summary['wall_seconds'] = round(sample['seconds'], 3)
        remove(prof)
        return summary

    def bench_size(self, size):
        label = size_label(size)
        paths = prepare_inputs(self.inputs_dir, size)
        log('warm-up read of %s' % label)
        warm_up(paths)
        zstd_check = round(zstd_ratio(paths['file']), 2)
        log('zstd -%d ratio of the input: %.2f' % (ZSTD_LEVEL, zstd_check))
        recipient = shlex.quote(self.recipient)
        key = shlex.quote(self.keyfile)
        last_set = {}

        def module_present(src, fmt):
            name = 'payload.tar.zst.age' if fmt == 'tar' else 'payload.zst.age'

            def run():
                set_dir = self.open_set('%s-%s' % (fmt, label))
                dest = os.path.join(set_dir, name)
                sample, result = self.module(MODULE_ARCHIVE, {
                    'src': src, 'dest': dest, 'state': 'present', 'encryption': 'age',
                    'recipients': [self.recipient], 'compression': 'zstd',
                    'compression_level': ZSTD_LEVEL}, 'present')
                if not result.get('changed'):
                    raise SystemExit('encrypted_archive did not write %s: %s' % (dest, result.get('msg')))
                sample['inner_seconds'] = result['payload']['seconds']
                previous = last_set.get(fmt)
                if previous:
                    remove(previous[0])
                last_set[fmt] = (set_dir, dest)
                return sample
            return run

        def shell_run(script_for, cleanup=True):
            def run():
                out = self.fresh('shell')
                sample = self.shell(script_for(shlex.quote(out)))
                if cleanup:
                    remove(out)
                return sample
            return run

        src_file = shlex.quote(paths['file'])
        src_parent = shlex.quote(os.path.dirname(paths['file']))
        src_base = shlex.quote(os.path.basename(paths['file']))
        src_dir = shlex.quote(paths['dir'])
        zstd_c = 'zstd -%d -q -c' % ZSTD_LEVEL

        # 1. encrypt a single file
        self.measure('encrypt-file-' + label, 'Encrypt one file of %s' % human_size(size), 'Encrypt a file',
                     size, label, [
            {'name': 'module', 'kind': 'module', 'run': module_present(paths['file'], 'raw'),
             'label': '`encrypted_archive` state=present (file → .zst.age)'},
            {'name': 'shell', 'kind': 'shell',
             'run': shell_run(lambda o: '%s < %s | age -r %s > %s' % (zstd_c, src_file, recipient, o)),
             'label': '`zstd -3 -q -c < FILE | age -r R > OUT`', 'command': 'zstd -3 -q -c < FILE | age -r R > OUT'},
            {'name': 'shell-tar', 'kind': 'shell',
             'run': shell_run(lambda o: 'tar -C %s -cf - %s | %s | age -r %s > %s' % (
                 src_parent, src_base, zstd_c, recipient, o)),
             'label': '`tar -cf - FILE | zstd -3 -q -c | age -r R > OUT`',
             'command': 'tar -cf - FILE | zstd -3 -q -c | age -r R > OUT'},
            {'name': 'shell-fsync', 'kind': 'shell', 'baseline': True,
             'run': shell_run(lambda o: '%s < %s | age -r %s > %s && sync %s' % (
                 zstd_c, src_file, recipient, o, o)),
             'label': '`zstd -3 -q -c < FILE | age -r R > OUT && sync OUT` (fsync, as the module does)',
             'command': 'zstd -3 -q -c < FILE | age -r R > OUT && sync OUT'},
            {'name': 'shell-T0', 'kind': 'shell',
             'run': shell_run(lambda o: '%s -T0 < %s | age -r %s > %s && sync %s' % (
                 zstd_c, src_file, recipient, o, o)),
             'label': '`zstd -3 -T0 -q -c < FILE | age -r R > OUT && sync OUT` (zstd threads, as the module by default)',
             'command': 'zstd -3 -T0 -q -c < FILE | age -r R > OUT && sync OUT'},
        ], notes=['zstd -3 compresses this input %.2fx.' % zstd_check,
                  'The module runs zstd with one worker thread per core (its default compression_threads=0, `-T0`).'])

        # 2. encrypt a directory
        self.measure('encrypt-dir-' + label, 'Encrypt a directory of %d files, %s' % (DIR_PARTS, human_size(size)),
                     'Encrypt a directory', size, label, [
                         {'name': 'module', 'kind': 'module', 'run': module_present(paths['dir'], 'tar'),
                          'label': '`encrypted_archive` state=present (directory → .tar.zst.age)'},
                         {'name': 'shell', 'kind': 'shell',
                          'run': shell_run(lambda o: 'tar -C %s -cf - . | %s | age -r %s > %s' % (
                              src_dir, zstd_c, recipient, o)),
                          'label': '`tar -C DIR -cf - . | zstd -3 -q -c | age -r R > OUT`',
                          'command': 'tar -C DIR -cf - . | zstd -3 -q -c | age -r R > OUT'},
                         {'name': 'shell-fsync', 'kind': 'shell', 'baseline': True,
                          'run': shell_run(lambda o: 'tar -C %s -cf - . | %s | age -r %s > %s && sync %s' % (
                              src_dir, zstd_c, recipient, o, o)),
                          'label': '… `&& sync OUT` (fsync, as the module does)',
                          'command': 'tar -C DIR -cf - . | zstd -3 -q -c | age -r R > OUT && sync OUT'},
                         {'name': 'shell-T0', 'kind': 'shell',
                          'run': shell_run(lambda o: 'tar -C %s -cf - . | %s -T0 | age -r %s > %s && sync %s' % (
                              src_dir, zstd_c, recipient, o, o)),
                          'label': '`tar -C DIR -cf - . | zstd -3 -T0 -q -c | age -r R > OUT && sync OUT` (zstd threads, as the module by default)',
                          'command': 'tar -C DIR -cf - . | zstd -3 -T0 -q -c | age -r R > OUT && sync OUT'},
        ], notes=['The module runs zstd with one worker thread per core (its default compression_threads=0, `-T0`).'])

        # finalize the last set of each kind: the payloads for the read direction
        payloads = {}
        for fmt in ('raw', 'tar'):
            set_dir, dest = last_set[fmt]
            self.module(MODULE_SET, {'path': set_dir, 'state': 'finalized', 'service': 'bench'}, 'set-final')
            payloads[fmt] = (set_dir, dest)
        self.settle()

        def module_extract(fmt):
            def run():
                out = self.fresh('extract')
                sample, result = self.module(MODULE_ARCHIVE, {
                    'src': payloads[fmt][1], 'dest': out, 'state': 'extracted', 'identity': self.keyfile},
                    'extract')
                if not (result.get('changed') and result.get('bytes') == size and result.get('digest_checked')):
                    raise SystemExit('encrypted_archive did not extract %s as expected: %s' % (out, result))
                remove(out)
                return sample
            return run

        raw_payload = shlex.quote(payloads['raw'][1])
        tar_payload = shlex.quote(payloads['tar'][1])

        # 3. extract a single file
        self.measure('extract-file-' + label, 'Extract one file of %s' % human_size(size), 'Extract a file',
                     size, label, [
            {'name': 'module', 'kind': 'module', 'run': module_extract('raw'),
             'label': '`encrypted_archive` state=extracted (.zst.age → file)'},
            {'name': 'shell', 'kind': 'shell', 'baseline': True,
             'run': shell_run(lambda o: 'age -d -i %s %s | zstd -d -q -c > %s' % (key, raw_payload, o)),
             'label': '`age -d -i KEY P | zstd -d -q -c > OUT`', 'command': 'age -d -i KEY P | zstd -d -q -c > OUT'},
            {'name': 'shell-fsync', 'kind': 'shell',
             'run': shell_run(lambda o: 'age -d -i %s %s | zstd -d -q -c > %s && sync %s' % (
                 key, raw_payload, o, o)),
             'label': '… `&& sync OUT` (fsync, as the module does)',
             'command': 'age -d -i KEY P | zstd -d -q -c > OUT && sync OUT'},
        ], notes=['The module also checks the SHA-256 of the written file against the digest recorded at '
                  'backup time (computed while writing).'])

        # 4. extract a directory
        self.measure('extract-dir-' + label, 'Extract a directory of %d files, %s' % (DIR_PARTS, human_size(size)),
                     'Extract a directory', size, label, [
                         {'name': 'module', 'kind': 'module', 'run': module_extract('tar'),
                          'label': '`encrypted_archive` state=extracted (.tar.zst.age → directory)'},
                         {'name': 'shell', 'kind': 'shell', 'baseline': True,
                          'run': shell_run(lambda o: 'mkdir %s && age -d -i %s %s | zstd -d -q -c | tar -x -C %s' % (
                              o, key, tar_payload, o)),
                          'label': '`age -d -i KEY P | zstd -d -q -c | tar -x -C OUT`',
                          'command': 'age -d -i KEY P | zstd -d -q -c | tar -x -C OUT'},
        ], notes=['The module extracts with its own safe tar reader into a temporary directory, '
                  'compares the content digest of what it wrote with the one recorded at backup '
                  'time, then renames the directory into place.'])

        def module_verify(fmt):
            def run():
                sample, result = self.module(MODULE_SET, {
                    'path': payloads[fmt][0], 'state': 'verified', 'identity': self.keyfile,
                    'decrypt': 'always'}, 'verify')
                if not all(f.get('decrypted') for f in result['files'] if f['path'].endswith('.age')):
                    raise SystemExit('verified did not decrypt every payload: %s' % result['files'])
                return sample
            return run

        # 5. full read test
        for fmt, payload, what in (('raw', raw_payload, 'one file'), ('tar', tar_payload, 'a directory')):
            kind = 'file' if fmt == 'raw' else 'dir'
            self.measure('verify-%s-%s' % (kind, label), 'Full read test of a set holding %s of %s' % (
                what, human_size(size)), 'Read test, %s payload' % ('file' if fmt == 'raw' else 'directory'),
                size, label, [
                    {'name': 'module', 'kind': 'module', 'run': module_verify(fmt),
                     'label': '`backup_set` state=verified with identity'},
                    {'name': 'shell', 'kind': 'shell', 'baseline': True,
                     'run': shell_run(lambda o, p=payload: 'age -d -i %s %s | zstd -d -q -c > /dev/null' % (key, p),
                                      cleanup=False),
                     'label': '`age -d -i KEY P | zstd -d -q -c > /dev/null`',
                     'command': 'age -d -i KEY P | zstd -d -q -c > /dev/null'},
                    {'name': 'shell-sha', 'kind': 'shell',
                     'run': shell_run(lambda o, p=payload: 'cd %s && sha256sum -c --quiet MANIFEST.sha256 && '
                                      'age -d -i %s %s | zstd -d -q -c > /dev/null' % (
                                          shlex.quote(payloads[fmt][0]), key, p), cleanup=False),
                     'label': '`sha256sum -c MANIFEST.sha256 && age -d … | zstd -d … > /dev/null` (same work)',
                     'command': 'sha256sum -c MANIFEST.sha256 && age -d -i KEY P | zstd -d -q -c > /dev/null'},
            ], notes=['`verified` first checks the SHA-256 of every file in the manifest, then decrypts and '
                      'decompresses each payload to its end%s.' % (
                          ' and walks the tar stream member by member' if fmt == 'tar' else '')])

        for fmt in ('raw', 'tar'):
            remove(payloads[fmt][0])

    def run(self):
        self.setup()
        started = time.time()
        facts = machine_facts(self.python, self.workdir)
        try:
            log('fixed start-up cost: every measurement on an input of %s' % human_size(STARTUP_SIZE))
            self.bench_size(STARTUP_SIZE)
            for size in self.options.sizes:
                self.bench_size(size)
        finally:
            remove(self.run_dir)
            if self.options.purge:
                remove(self.workdir)
        facts['load_average_end'] = ' '.join('%.2f' % x for x in os.getloadavg())
        facts['duration_seconds'] = round(time.time() - started, 1)
        return facts


# ---------------------------------------------------------------------------------------------
# where the time goes, linearity and the verdicts

def median_by_name(samples):
    """{name: median seconds} over runs of {name: seconds}; a name missing from a run counts 0 there."""
    names = sorted(set(name for sample in samples for name in sample))
    return {name: round(statistics.median(sample.get(name, 0.0) for sample in samples), 2) for name in names}


def _short_path(path):
    for marker in ('ansible_collections/', 'site-packages/', '/lib/python'):
        if marker in path:
            return path[path.index(marker) + (len(marker) if marker != '/lib/python' else 1):]
    return path


def profile_summary(path, top=PROFILE_TOP):
    """The functions of a cProfile dump that took the most time of their own."""
    import pstats  # pylint: disable=import-outside-toplevel
    stats = pstats.Stats(path)
    entries = []
    for (filename, line, func), (_cc, calls, own, cumulative, _callers) in stats.stats.items():  # pylint: disable=no-member
        where = func if filename == '~' else '%s:%d(%s)' % (_short_path(filename), line, func)
        entries.append({'function': where, 'calls': calls, 'tottime': round(own, 3), 'cumtime': round(cumulative, 3)})
    entries.sort(key=lambda e: -e['tottime'])
    return {'total_seconds': round(stats.total_tt, 3), 'top': entries[:top]}  # pylint: disable=no-member


def per_gib(seconds, size, fixed=0.0):
    """Seconds per GiB of input, optionally without a fixed start-up cost."""
    return (seconds - fixed) * GiB / float(size)


def linearity(points, base_from=JUDGED_FROM, tolerance=LINEAR_TOLERANCE):
    """Linearity of [(size, seconds)]: the time per GiB at the largest size against that at the smallest
    size of at least ``base_from``; None when fewer than two sizes reach it."""
    sizes = sorted(size for size, _seconds in points)
    seconds = dict(points)
    base = [size for size in sizes if size >= base_from]
    if len(base) < 2:
        return {'base': None, 'top': None, 'change': None, 'ok': None}
    base_size, top_size = base[0], sizes[-1]
    base_rate, top_rate = per_gib(seconds[base_size], base_size), per_gib(seconds[top_size], top_size)
    return {'base': base_size, 'top': top_size, 'change': round(top_rate / base_rate - 1.0, 3),
            'ok': linear(base_rate, top_rate, tolerance)}


def _module_row(m):
    return [r for r in m['rows'] if r['kind'] == 'module'][0]


def _reference_row(m):
    return [r for r in m['rows'] if r['name'] == m['baseline']][0]


def scale_report(measurements, startup):
    """Per kind of measurement: time per GiB at each size, the start-up cost, linearity and memory flatness."""
    fixed = dict((m['kind'], m) for m in startup)
    out = []
    kinds = []
    for m in measurements:
        if m['kind'] not in kinds:
            kinds.append(m['kind'])
    for kind in kinds:
        runs = sorted((m for m in measurements if m['kind'] == kind), key=lambda m: m['size_bytes'])
        tiny = fixed.get(kind)
        module_fixed = _module_row(tiny)['median_seconds'] if tiny else 0.0
        shell_fixed = _reference_row(tiny)['median_seconds'] if tiny else 0.0
        points = []
        for m in runs:
            module, shell = _module_row(m), _reference_row(m)
            points.append({
                'size': m['size'], 'size_bytes': m['size_bytes'],
                'module_s_per_gib': round(per_gib(module['median_seconds'], m['size_bytes']), 2),
                'module_s_per_gib_net': round(per_gib(module['median_seconds'], m['size_bytes'], module_fixed), 2),
                'shell_s_per_gib': round(per_gib(shell['median_seconds'], m['size_bytes']), 2),
                'shell_s_per_gib_net': round(per_gib(shell['median_seconds'], m['size_bytes'], shell_fixed), 2),
                'python_rss_mib': module['root_rss_mib'], 'child_rss_mib': module['child_rss_mib'],
            })
        small, large = runs[0], runs[-1]
        memory_ok = None
        if small is not large:
            memory_ok = (flat(_module_row(small)['root_rss_mib'], _module_row(large)['root_rss_mib']) and
                         flat(_module_row(small)['child_rss_mib'], _module_row(large)['child_rss_mib']))
        out.append({
            'kind': kind, 'short': runs[0]['short'],
            'startup_module_seconds': module_fixed, 'startup_shell_seconds': shell_fixed,
            'points': points,
            'module': linearity([(m['size_bytes'], _module_row(m)['median_seconds']) for m in runs]),
            'shell': linearity([(m['size_bytes'], _reference_row(m)['median_seconds']) for m in runs]),
            'memory_flat': memory_ok, 'memory_from': small['size'], 'memory_to': large['size'],
        })
    return out


VERDICT_KINDS = (('encrypt', ('encrypt-file', 'encrypt-dir')), ('extract', ('extract-file', 'extract-dir')),
                 ('read_test', ('verify-file', 'verify-dir')))


def _all_ok(oks):
    oks = list(oks)
    if not oks or any(ok is None for ok in oks):
        return None if not any(ok is False for ok in oks) else False
    return all(oks)


def archive_verdicts(measurements, scale):
    """The goals of this benchmark, judged on the inputs of at least JUDGED_FROM."""
    out = []
    for key, kinds in VERDICT_KINDS:
        found = [m for m in measurements if m['kind'] in kinds]
        judged = [m for m in found if m['judged']]
        parts = []
        for kind in kinds:
            ratios = ['%.2fx (%s)' % (m['ratio'], m['size']) for m in judged if m['kind'] == kind]
            if ratios:
                parts.append('%s %s' % ('file' if kind.endswith('file') else 'directory', ', '.join(ratios)))
        goal = GOAL_RATIOS[kinds[0].split('-', maxsplit=1)[0]]
        shown = '; '.join(parts) if parts else 'not judged below %s' % human_size(JUDGED_FROM)
        out.append({'key': key, 'goal': 'module >= %.2fx of the reference' % goal, 'goal_ratio': goal,
                    'value': min((m['ratio'] for m in judged), default=None), 'shown': shown,
                    'ok': _all_ok(m['goals']['throughput'] for m in judged) if judged else None})
    peaks = [(max(_module_row(m)['root_rss_mib'], _module_row(m)['child_rss_mib']), m['short'], m['size'])
             for m in measurements]
    top = max(peaks) if peaks else (0, '-', '-')
    out.append({'key': 'rss', 'goal': 'peak RSS <= %d MiB' % GOAL_RSS_MIB, 'value': top[0],
                'shown': '%.1f MiB (%s, %s)' % top, 'ok': top[0] <= GOAL_RSS_MIB if peaks else None})
    flats = [item['memory_flat'] for item in scale]
    out.append({'key': 'rss_flat', 'goal': 'peak RSS flat (at most +%d%% or +%d MiB)' % (FLAT_PERCENT, FLAT_MIB),
                'size': '%s -> %s' % (scale[0]['memory_from'], scale[0]['memory_to']) if scale else '-',
                'value': None, 'shown': ', '.join('%s %s' % (i['short'], pass_miss(i['memory_flat'])) for i in scale),
                'ok': _all_ok(flats)})
    judged = [i for i in scale if i['module']['ok'] is not None]
    if judged:
        worst = max(judged, key=lambda i: abs(i['module']['change']))
        shown = 'time per GiB, %s -> %s: worst %+.0f%% (%s)' % (
            size_label(worst['module']['base']), size_label(worst['module']['top']), worst['module']['change'] * 100,
            worst['short'])
    else:
        shown = 'not judged: needs two sizes of at least %s' % human_size(JUDGED_FROM)
    out.append({'key': 'linear', 'goal': 'time per GiB at the largest size within %d%% of that at %s' % (
        LINEAR_TOLERANCE * 100, human_size(JUDGED_FROM)), 'value': None, 'shown': shown,
        'ok': _all_ok(i['module']['ok'] for i in judged) if judged else None})
    return out


# ---------------------------------------------------------------------------------------------
# reporting

def machine_facts(python, workdir):
    cpu = 'unknown'
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    with open('/proc/meminfo') as handle:
        for line in handle:
            if line.startswith('MemTotal:'):
                mem = int(line.split()[1]) // 1024
    pipe_max = ''
    try:
        with open('/proc/sys/fs/pipe-max-size') as handle:
            pipe_max = handle.read().strip()
    except OSError:
        pass
    ansible_version = command_output([python, '-c', 'from ansible.release import __version__; print(__version__)'])
    fs = ' '.join(command_output(['findmnt', '-no', 'FSTYPE,SOURCE', '-T', os.path.dirname(workdir) or '/']).split())
    return {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
        'nproc': os.cpu_count(),
        'memory_mib': mem,
        'cpu': cpu,
        'kernel': platform.release(),
        'python': command_output([python, '-c', 'import sys; print(sys.version.split()[0])']),
        'ansible_core': ansible_version,
        'zstd': command_output(['zstd', '--version']).replace('*', '').strip(),
        'age': command_output(['age', '--version']),
        'tar': command_output(['tar', '--version']).splitlines()[0],
        'filesystem': fs,
        'pipe_max_size': pipe_max,
        'load_average_start': ' '.join('%.2f' % x for x in os.getloadavg()),
    }


def cell(text):
    """Escape the pipe characters of a Markdown table cell (also inside code spans)."""
    return text.replace('|', '\\|')


def throughput_verdict(m):
    """PASS/MISS of a measurement's throughput goal; inputs below JUDGED_FROM are shown, not judged."""
    if not m.get('judged', True):
        return 'not judged (%s: start-up)' % m['size']
    return pass_miss(m['goals']['throughput'])


def cpu_text(row):
    by_cpu = sorted(row.get('cpu_by_process', {}).items(), key=lambda item: -item[1])
    parts = ['%s %.2f' % (name, seconds) for name, seconds in by_cpu if seconds >= 0.01]
    return '%.2f s: %s' % (row['cpu_seconds'], ', '.join(parts) or '-') if 'cpu_seconds' in row else '-'


def table_section(out, heading, text, header, rule):
    """Append a heading, a paragraph and the head of a table to the lines ``out``."""
    out.extend([heading, '', text, '', header, rule])


def render_scale(scale, out):
    add = out.append
    table_section(
        out, '### Scale: time per GiB and memory from the smallest to the largest input',
        'Seconds per GiB of input (median wall time / size); "net" leaves out the fixed start-up cost measured on '
        'an input of %s (the next table). The time grows linearly when the module\'s time per GiB at the largest '
        'size is within %d%% of that at %s; the reference pipeline\'s change is shown next to it, since the machine '
        'itself can be the cause. Memory is flat when the peak at the largest input is at most %d%% or %d MiB above '
        'the peak at the smallest.' % (
            human_size(STARTUP_SIZE), LINEAR_TOLERANCE * 100, human_size(JUDGED_FROM), FLAT_PERCENT, FLAT_MIB),
        '| Measurement | Start-up: module / reference s | Module s/GiB (net) by size | Reference s/GiB (net) by size '
        '| Module change | Reference change | Linear | Python / child peak RSS by size | Memory flat |',
        '|---|---:|---|---|---:|---:|---|---|---|')
    for item in scale:
        def by_size(key):
            return ', '.join('%s %.2f (%.2f)' % (p['size'], p[key], p[key + '_net']) for p in item['points'])

        def change(lin):
            return '%+.1f%% (%s -> %s)' % (lin['change'] * 100, size_label(lin['base']), size_label(lin['top'])) \
                if lin['change'] is not None else '-'
        add('| %s | %.2f / %.2f | %s | %s | %s | %s | %s | %s | %s |' % (
            item['short'], item['startup_module_seconds'], item['startup_shell_seconds'], by_size('module_s_per_gib'),
            by_size('shell_s_per_gib'), change(item['module']), change(item['shell']), pass_miss(item['module']['ok']),
            ', '.join('%s %.1f / %.1f' % (p['size'], p['python_rss_mib'], p['child_rss_mib']) for p in item['points']),
            pass_miss(item['memory_flat'])))
    add('')


def render_startup(startup, out):
    add = out.append
    table_section(
        out, '### Fixed start-up cost',
        'Every measurement run once more on an input of %s (one file, or a directory of %d small files): what a run '
        'costs whatever the size. For the module this is the interpreter start-up, the import of '
        '`ansible.module_utils.basic`, argument parsing and the backup set\'s bookkeeping; for the shell, starting '
        'bash and the tools. It weighs on the inputs below %s, which are shown but not judged.' % (
            human_size(STARTUP_SIZE), DIR_PARTS, human_size(JUDGED_FROM)),
        '| Measurement | Module s | Reference s | Module - reference s | Module CPU (user+sys) |', '|---|---:|---:|---:|---|')
    for m in startup:
        module, ref = _module_row(m), _reference_row(m)
        add('| %s | %.3f | %.3f | %.3f | %s |' % (
            m['short'], module['median_seconds'], ref['median_seconds'],
            module['median_seconds'] - ref['median_seconds'], cpu_text(module)))
    add('')


def render_time_spent(measurements, out):
    """Where the time goes in every judged measurement that misses its goal: CPU by process, and a profile."""
    missed = [m for m in measurements if m.get('judged', True) and not m['goals']['throughput']]
    if not missed:
        return
    add = out.append
    add('### Where the time goes (goals missed)')
    add('')
    add('For each measurement that misses its goal: the CPU time (user + system) of every process of the run, '
        'module and reference side by side (medians over the runs; the total is `wait4()`\'s, which counts every '
        'descendant; the split by process is sampled from `/proc/<pid>/stat` every 50 ms, so a process\'s last '
        'moments can be missing from it), and, at %s, the functions of the module\'s own Python process that took '
        'the most time of their own in one more run under `cProfile` (which slows the Python side: its wall time '
        'is shown). Time a process spends blocked in `read`/`poll` on a pipe is time it waits for the tools.'
        % ', '.join(sorted(set(m['size'] for m in missed if m.get('profile'))) or ['no size']))
    for m in missed:
        module, ref = _module_row(m), _reference_row(m)
        add('')
        add('#### %s: %.2fx (goal >= %.2fx)' % (m['title'], m['ratio'], m['goal_ratio']))
        add('')
        add('| Run | Wall s | CPU, by process (s) |')
        add('|---|---:|---|')
        add('| module | %.2f | %s |' % (module['median_seconds'], cpu_text(module)))
        command = cell(ref.get('command') or ref['label'].strip('`'))
        add('| reference `%s` | %.2f | %s |' % (command, ref['median_seconds'], cpu_text(ref)))
        extra = ''
        if module.get('module_reported_seconds') is not None:
            extra = ' The module reports %.2f s for its pipeline itself (`payload.seconds` of its result).' % (
                module['module_reported_seconds'])
        add('')
        add('The module took %.2f s more than the reference; its own Python process used %.2f s of CPU.%s' % (
            module['median_seconds'] - ref['median_seconds'],
            sum(v for k, v in module.get('cpu_by_process', {}).items() if k.endswith('(main)')), extra))
        prof = m.get('profile')
        if prof:
            add('')
            add('Profile of one module run (%.2f s wall under cProfile, %.2f s in profiled Python functions), top %d '
                'by own time:' % (prof['wall_seconds'], prof['total_seconds'], len(prof['top'])))
            add('')
            add('| Function | Calls | Own s | Cumulative s |')
            add('|---|---:|---:|---:|')
            for entry in prof['top']:
                add('| `%s` | %d | %.3f | %.3f |' % (
                    cell(entry['function']), entry['calls'], entry['tottime'], entry['cumtime']))
    add('')


def render_markdown(facts, repeat, measurements, startup=None, verdicts=None, repeat_large=None):
    startup = startup or []
    scale = scale_report(measurements, startup)
    verdicts = verdicts or archive_verdicts(measurements, scale)
    out = []
    add = out.append
    add('## Encrypted archives')
    add('')
    add('`bench/run.py`, %s. The raw numbers are in `bench/results/latest.json`.' % facts['date_utc'])
    add('')
    add('### Goals')
    add('')
    add('- **Throughput**, judged on inputs of at least %s: encrypting moves data at least %.2fx as fast as '
        '`tar | zstd -3 | age` followed by `sync` (the module fsyncs what it writes, so the synced pipeline is the '
        'reference; the unsynced one stays in the tables); extracting at least %.2fx as fast as '
        '`age -d | zstd -d | tar -x`; the read test at least %.2fx as fast as `age -d | zstd -d > /dev/null`. '
        'Measured end to end, module start-up included. Smaller inputs are shown with their fixed start-up cost '
        '(measured below), not judged.' % (
            human_size(JUDGED_FROM), GOAL_RATIOS['encrypt'], GOAL_RATIOS['extract'], GOAL_RATIOS['verify']))
    add('- **Scale**: the module\'s time per GiB at the largest input within %d%% of that at %s.'
        % (LINEAR_TOLERANCE * 100, human_size(JUDGED_FROM)))
    add('- **Memory**: the module\'s Python process stays under %d MiB peak RSS whatever the payload size, and '
        'so does each child (`zstd`, `age`, `tar`); flat from the smallest input to the largest (at most +%d%% or '
        '+%d MiB).' % (GOAL_RSS_MIB, FLAT_PERCENT, FLAT_MIB))
    add('')
    add('### Summary')
    add('')
    add('| Goal | Measured | Verdict |')
    add('|---|---|---|')
    for item in verdicts:
        goal = item['goal']
        if item['key'] in dict(VERDICT_KINDS):
            goal = '%s: %s' % (item['key'].replace('_', ' '), goal)
        add('| %s | %s | **%s** |' % (cell(goal), cell(item['shown']), pass_miss(item['ok'])))
    add('')
    add('| Measurement | Size | Module MiB/s | Reference MiB/s | Module/reference | Goal | Throughput verdict | '
        'Python peak RSS | Largest child peak RSS | Memory goal |')
    add('|---|---|---:|---:|---:|---:|---|---:|---:|---|')
    for m in measurements:
        module_row = [r for r in m['rows'] if r['kind'] == 'module'][0]
        base = [r for r in m['rows'] if r['name'] == m['baseline']][0]
        add('| %s | %s | %.1f | %.1f | %.2fx | >= %.2fx | %s | %.1f MiB | %.1f MiB (%s) | %s |' % (
            m['short'], m['size'], module_row['mib_per_s'], base['mib_per_s'], m['ratio'],
            m.get('goal_ratio', GOAL_RATIO), throughput_verdict(m), module_row['root_rss_mib'],
            module_row['child_rss_mib'], module_row['child_name'] or '-',
            pass_miss(m['goals']['python_rss'] and m['goals']['child_rss'])))
    add('')
    if scale:
        render_scale(scale, out)
    if startup:
        render_startup(startup, out)
    render_time_spent(measurements, out)
    add('### Method')
    add('')
    add('- **Inputs.** For each size, one file and one directory holding the same bytes split into %d files. '
        'The data is a mix of log-like text blocks (time stamps, identifiers, a small vocabulary) and %d%% '
        'random 1 MiB blocks, so that `zstd -3` compresses it about 2-2.5x, like real dumps and media, not like '
        'zeros or noise. The inputs are generated once and kept in the work directory (`--workdir`, default '
        '`/var/tmp/idp-recovery-bench`) for the next run; everything else is removed at the end, and '
        '`--purge` removes the inputs too.'
        % (DIR_PARTS, int(RANDOM_FRACTION * 100)))
    add('- **Module runs.** Each module runs in its own process exactly as Ansible runs a module in debug mode: '
        '`python -m ansible_collections.idp.recovery.plugins.modules.encrypted_archive args.json` with '
        '`{"ANSIBLE_MODULE_ARGS": {...}}`, age to a fresh X25519 test key, zstd level %d. Each '
        '`state=present` run writes into a fresh backup set, so idempotence never short-circuits it. The time '
        'includes interpreter start-up, argument parsing, the content digest of the source, the SHA-256 of the '
        'payload, the fsync and the metadata fragment.' % ZSTD_LEVEL)
    add('- **Shell runs.** The same job as a plain `bash -o pipefail` pipeline of the same tools, writing to the '
        'same file system. Extra rows show variants: with `tar` around a single file, with `sync OUT` (the '
        'module fsyncs its output, plain shell redirection does not), and with `sha256sum -c` for the read test.')
    add('- **Order and repetition.** Module and shell runs alternate (the order reverses every round); each '
        'runs %d time(s)%s and the median is reported. Before each size, the inputs are read once so that both '
        'sides read from the page cache; after every run, `sync` (untimed) flushes dirty pages so one run\'s '
        'write-back does not slow the next.' % (repeat, (
            ', %d time(s) on inputs of %s and more, to keep the whole benchmark within about 15 minutes (the '
            'runs are listed in each table)' % (repeat_large, human_size(LARGE_FROM)))
            if repeat_large is not None and repeat_large != repeat else ''))
    add('- **Throughput** is input (plain) bytes divided by median wall time. Module/reference is module '
        'throughput divided by the throughput of the reference shell pipeline (marked **reference** in each '
        'table: for encrypting, the pipeline followed by `sync`, since the module fsyncs its output).')
    add('- **Where the time goes.** Every run also records the CPU time of each process (see the section of that '
        'name); a measurement at %s that misses its goal gets one more module run under `cProfile`.'
        % human_size(JUDGED_FROM))
    add('- **Memory.** A monitor thread polls `/proc/<pid>/status` `VmHWM` of the process and of every '
        'descendant every 50 ms. "Python" is the module\'s own interpreter; "largest child" is the largest '
        'peak among its children (`zstd`, `age`, `tar`). The whole-tree maximum reported by `wait4()` '
        '(`ru_maxrss`) is kept in the JSON as a cross-check; it is an upper bound, since it also counts the '
        'launching process before `exec`.')
    add('')
    add('### What the module does that the shell pipeline does not')
    add('')
    add('The reference pipelines only move bytes. The module also makes the result trustworthy, and that work '
        'is in its times:')
    add('')
    add('- writing: the SHA-256 content digest of the source (recorded so that a restore can be checked and a '
        'rerun can be skipped), the SHA-256 of the payload (for the manifest), a temporary name, `fsync` and '
        'rename, and a metadata fragment for the backup set; the source passes through the module\'s process '
        'on its way to `zstd` (one more pipe than `zstd < FILE`);')
    add('- extracting: the SHA-256 of the payload checked against its set\'s manifest (computed from the bytes '
        'fed to the decryptor, in the same pass), a tar reader in Python that refuses unsafe members, the content '
        'digest of what was extracted compared with the one recorded at backup time (a single file is written by '
        '`zstd` itself and read back behind it for that digest), `fsync` of a single-file result, and a temporary '
        'name renamed into place;')
    add('- the read test: the SHA-256 of every file in the manifest (of a payload, computed from the bytes fed to '
        'the decryptor, in the same pass), and, for a directory payload, a walk of the tar stream member by member '
        '(so `zstd` writes into a pipe, not to /dev/null);')
    add('- every run: starting a Python interpreter and importing `ansible.module_utils.basic` '
        '(about 0.1-0.2 s), which weighs on the small inputs.')
    add('')
    add('### Machine')
    add('')
    add('| | |')
    add('|---|---|')
    for label, key in (('CPU', 'cpu'), ('CPUs (nproc)', 'nproc'), ('Memory', 'memory_mib'), ('Kernel', 'kernel'),
                       ('File system of the work directory', 'filesystem'), ('Python', 'python'),
                       ('ansible-core', 'ansible_core'), ('zstd', 'zstd'), ('age', 'age'), ('tar', 'tar'),
                       ('pipe-max-size', 'pipe_max_size'), ('Load average at start', 'load_average_start'),
                       ('Load average at end', 'load_average_end'), ('Duration of the benchmark', 'duration_seconds')):
        value = facts.get(key, '')
        if key == 'memory_mib':
            value = '%d MiB' % value
        if key == 'duration_seconds':
            value = '%s s' % value
        add('| %s | %s |' % (label, value))
    add('')
    add('The numbers are wall-clock times on this machine; other work running on it at the same time shows as '
        'noise in the individual runs (listed in each table).')
    add('')
    add('### Results')
    for m in measurements:
        add('')
        add('#### %s' % m['title'])
        add('')
        add('| Command | Median s | MiB/s | Module/this | Python peak RSS | Largest child peak RSS | Runs (s) |')
        add('|---|---:|---:|---:|---:|---:|---|')
        for row in m['rows']:
            python_rss = '%.1f MiB' % row['root_rss_mib'] if row['kind'] == 'module' else '-'
            extra = ''
            if row.get('module_reported_seconds') is not None:
                extra = ' (pipeline inside the module: %.2f s)' % row['module_reported_seconds']
            add('| %s%s | %.2f | %.1f | %s | %s | %.1f MiB (%s) | %s |' % (
                cell(row['label']), ' **reference**' if row['baseline'] else '', row['median_seconds'],
                row['mib_per_s'], '-' if row['kind'] == 'module' else '%.2fx' % row['module_vs_this'],
                python_rss, row['child_rss_mib'], row['child_name'] or '-',
                ' '.join('%.2f' % s for s in row['runs_seconds']) + extra))
        add('')
        add('Goals: throughput %.2fx of the reference (goal >= %.2fx): **%s**; Python peak RSS (goal <= %d MiB): '
            '**%s**; largest child (goal <= %d MiB): **%s**.' % (
                m['ratio'], m.get('goal_ratio', GOAL_RATIO), throughput_verdict(m), GOAL_RSS_MIB,
                pass_miss(m['goals']['python_rss']), GOAL_RSS_MIB, pass_miss(m['goals']['child_rss'])))
        for note in m['notes']:
            add('')
            add(note)
    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'findings.md')
    if os.path.isfile(findings):
        add('')
        with open(findings) as handle:
            add(handle.read().rstrip())
    add('')
    return '\n'.join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='100M,1G,4G',
                        help='comma-separated input sizes (default: 100M,1G,4G)')
    parser.add_argument('--repeat', type=int, default=3, help='runs per variant; the median is kept (default: 3)')
    parser.add_argument('--repeat-large', type=int, default=1,
                        help='runs per variant on inputs of %s and more (default: 1)' % human_size(LARGE_FROM))
    parser.add_argument('--no-profile', dest='profile', action='store_false',
                        help='no cProfile run of the module where a goal is missed')
    parser.add_argument('--quick', action='store_true', help='smoke run: only 100M, one run per variant')
    parser.add_argument('--workdir', default=os.environ.get('IDP_RECOVERY_BENCH_DIR', '/var/tmp/idp-recovery-bench'),
                        help='work directory for inputs and outputs (default: /var/tmp/idp-recovery-bench); '
                             'the inputs stay there for the next run, everything else is removed')
    parser.add_argument('--purge', action='store_true', help='also remove the generated inputs at the end')
    parser.add_argument('--python', default=sys.executable,
                        help='interpreter that runs the modules (default: the one running this script)')
    parser.add_argument('--collections', default=COLLECTIONS,
                        help='directory holding ansible_collections/idp/recovery to benchmark '
                             '(default: .build/collections, a link to this tree)')
    parser.add_argument('--no-doc', action='store_true',
                        help='do not rewrite docs/performance.md (the JSON is still written)')
    parser.add_argument('--json', default=os.path.join(RESULTS_DIR, 'latest.json'),
                        help='where to write the JSON results (default: bench/results/latest.json)')
    parser.add_argument('--render', metavar='JSON',
                        help='only rewrite docs/performance.md from saved JSON results, without running anything')
    options = parser.parse_args(argv)
    if options.render:
        with open(options.render) as handle:
            saved = json.load(handle)
        update_section('archive', render_markdown(saved['facts'], saved['options']['repeat'], saved['measurements'],
                                                  saved.get('startup'), saved.get('verdicts'),
                                                  saved['options'].get('repeat_large')))
        log('rewrote %s from %s' % (DOC_PATH, options.render))
        return 0
    if options.quick:
        options.sizes = '100M'
        options.repeat = 1
    options.sizes = sorted(parse_size(s) for s in options.sizes.split(',') if s.strip())
    if options.repeat < 1 or options.repeat_large < 1:
        parser.error('--repeat and --repeat-large must be at least 1')
    if STARTUP_SIZE in options.sizes:
        parser.error('%s is the start-up measurement, not a size to choose' % size_label(STARTUP_SIZE))
    for tool in ('age', 'age-keygen', 'zstd', 'tar', 'bash', 'sha256sum'):
        if shutil.which(tool) is None:
            parser.error('%s is not installed' % tool)

    bench = Bench(options)
    facts = bench.run()
    scale = scale_report(bench.measurements, bench.startup)
    verdicts = archive_verdicts(bench.measurements, scale)
    results = {
        'facts': facts,
        'startup': bench.startup,
        'scale': scale,
        'verdicts': verdicts,
        'options': {'sizes': [size_label(s) for s in options.sizes], 'repeat': options.repeat,
                    'repeat_large': options.repeat_large, 'large_from': size_label(LARGE_FROM),
                    'collections': os.path.abspath(options.collections),
                    'quick': options.quick, 'zstd_level': ZSTD_LEVEL, 'dir_parts': DIR_PARTS,
                    'random_fraction': RANDOM_FRACTION},
        'goals': {'ratio': GOAL_RATIO, 'rss_mib': GOAL_RSS_MIB, 'ratios': GOAL_RATIOS,
                  'judged_from': size_label(JUDGED_FROM), 'linear_tolerance': LINEAR_TOLERANCE,
                  'flat_percent': FLAT_PERCENT, 'flat_mib': FLAT_MIB},
        'measurements': bench.measurements,
    }
    os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
    with open(options.json, 'w') as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write('\n')
    if not options.no_doc:
        update_section('archive', render_markdown(facts, options.repeat, bench.measurements, bench.startup, verdicts,
                                                  options.repeat_large))
    misses = [v['key'] for v in verdicts if v['ok'] is False]
    log('done in %.0f s; results in %s%s' % (facts['duration_seconds'], options.json,
                                             '' if options.no_doc else ' and ' + DOC_PATH))
    if misses:
        log('goals missed: %s' % ', '.join(misses))
    return 0


if __name__ == '__main__':
    sys.exit(main())
