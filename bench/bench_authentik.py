#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Speed and memory benchmark of idp.recovery.authentik_dump and authentik_restore against pg_dump, gzip and psql.

An Authentik-shaped database (tests/fixtures/authentik, grown with event rows to each size) runs in
a PostgreSQL container started for the benchmark. The modules run exactly as Ansible runs a module
in debug mode (``python -m ansible_collections.idp.recovery.plugins.modules.NAME args.json``), in
container mode, with the real ``zstd`` and ``age`` children. In the same run, alternating with the
module, the plain commands do the same job: ``pg_dump > /dev/null`` inside the container, the same
pg_dump streamed out of the container, ``pg_dump | gzip`` and ``gunzip | psql``; the module also runs
in TCP mode against the host's bare ``pg_dump -h > /dev/null``. Medians are
reported, with the peak resident memory of the module's Python process and of its largest child.

Writes the ``authentik`` section of docs/performance.md and bench/results/authentik.json.
See ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

from perfdoc import DOC_PATH, LINEAR_TOLERANCE, linear, update_section
from run import (
    COLLECTIONS,
    MODULE_SET,
    REPO,
    RESULTS_DIR,
    Bench,
    MiB,
    cell,
    command_output,
    log,
    machine_facts,
    parse_size,
    pass_miss,
    remove,
    run_measured,
    size_label,
)

MODULE_DUMP = 'ansible_collections.idp.recovery.plugins.modules.authentik_dump'
MODULE_RESTORE = 'ansible_collections.idp.recovery.plugins.modules.authentik_restore'
SUPPORT_PATH = os.path.join(REPO, 'tests', 'integration', 'authentik_support.py')
CONTAINER_PREFIX = 'idp-bench-authentik-'
JSON_PATH = os.path.join(RESULTS_DIR, 'authentik.json')
DOC_KEY = 'authentik'

DB_USER = 'authentik'
DB_NAME = 'authentik'
CONTAINER_USER = 'postgres'   # the module's default container_user; the shell commands use it too
ZSTD_LEVEL = 1                # the dump modules' default level (DUMP_ZSTD_LEVEL): the module rows leave it unset
GiB = 1024 * MiB
GOAL_SIZE = GiB               # the goals are stated for a database of at least this size
BIG_SIZE = 2 * GiB            # from this size on: one run, only the module rows and the two bare references
BIG_VARIANTS = ('module', 'module-tcp', 'bare', 'bare-tcp')
PG_PORT = 5432

GOAL_VS_BARE = 0.9            # module throughput / bare pg_dump throughput, at least
GOAL_VS_GZIP = 2.2            # pg_dump | gzip time / module time, at least
GOAL_RESTORE = 1.0            # module restore time / gunzip | psql time, at most
GOAL_RSS_MIB = 128
FLAT_PERCENT = 10             # "flat": the larger database's peak is at most this much above the smaller one's
FLAT_MIB = 8                  # ... or this many MiB, whichever is larger


def load_support():
    """tests/integration/authentik_support.py: the fixture (schema, seed, PostgreSQL container)."""
    spec = importlib.util.spec_from_file_location('authentik_support', SUPPORT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules['authentik_support'] = module
    spec.loader.exec_module(module)
    return module


AK = load_support()


def human_bytes(count):
    if count >= GiB:
        return '%.2f GiB' % (count / float(GiB))
    return '%.1f MiB' % (count / float(MiB))


def docker(*argv, **kwargs):
    """Run a docker CLI command (untimed plumbing); raise SystemExit with its stderr when it fails."""
    check = kwargs.pop('check', True)
    proc = subprocess.run(['docker'] + list(argv), capture_output=True, check=False, **kwargs)
    if check and proc.returncode != 0:
        raise SystemExit('docker %s failed (exit %d): %s' % (
            ' '.join(argv[:3]), proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()))
    return proc.stdout.decode('utf-8', 'replace').strip()


def flat(small, large):
    """Whether a peak stayed flat from the smaller to the larger database."""
    return large <= small + max(small * FLAT_PERCENT / 100.0, FLAT_MIB)


# ---------------------------------------------------------------------------------------------
# the benchmark

class AuthentikBench(Bench):
    """Bench of run.py (module and shell runs, measured) with an Authentik database in a container."""

    def __init__(self, options):
        super(AuthentikBench, self).__init__(options)
        self.run_dir = os.path.join(self.workdir, 'authentik-run-%d' % os.getpid())
        self.keyfile = os.path.join(self.run_dir, 'age.key')
        self.container = CONTAINER_PREFIX + '%d' % os.getpid()
        self.results = []
        self.postgres_version = None
        self.module_args_seen = None
        self.counter = 0
        self.password = secrets.token_urlsafe(24)
        self.db_host = None

    def warm_modules(self):
        """Nothing here: each size starts with an untimed dump, once the database is loaded."""

    # -- plumbing -------------------------------------------------------------------------------

    def psql(self, sql, database=DB_NAME):
        """A query through psql in the container (untimed); its unaligned output."""
        return docker('exec', '-u', CONTAINER_USER, self.container, 'psql', '-X', '-q', '-A', '-t',
                      '-v', 'ON_ERROR_STOP=1', '--username=' + DB_USER, '--dbname=' + database, '-c', sql)

    def database_size(self):
        return int(self.psql("SELECT pg_database_size('%s')" % DB_NAME, database='postgres'))

    def recreate_database(self):
        """Untimed: drop the database and create it empty (the state a plain restore starts from)."""
        docker('exec', '-u', CONTAINER_USER, self.container, 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
               '--username=' + DB_USER, '--dbname=postgres',
               '-c', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % DB_NAME,
               '-c', 'CREATE DATABASE %s OWNER %s' % (DB_NAME, DB_USER))

    def new_set(self):
        self.counter += 1
        set_dir = os.path.join(self.run_dir, 'sets', '%03d' % self.counter, 'authentik',
                               time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()))
        self.module(MODULE_SET, {'path': set_dir, 'state': 'present', 'service': 'authentik',
                                 'kind': 'authentik'}, 'set-open')
        return set_dir

    def drop_set(self, set_dir):
        remove(os.path.dirname(os.path.dirname(set_dir)))

    def start_container(self):
        log('starting PostgreSQL container %s (%s, data on tmpfs)' % (self.container, AK.POSTGRES_IMAGE))
        AK.run_postgres(self.container, self.password, labels={'org.idp-recovery.bench': 'authentik'})
        self.postgres_version = self.psql('SHOW server_version', database='postgres')
        # TCP mode reaches the server at the container's address, as the integration tests do
        self.db_host = AK.container_ip(self.container)
        log('PostgreSQL %s is ready' % self.postgres_version)

    def load(self, size):
        """Recreate the database and load the fixture grown to ``size`` bytes; return its facts."""
        self.recreate_database()
        log('loading the Authentik fixture, padded to %s (progress every 15 s)' % human_bytes(size))
        done = threading.Event()

        def progress():
            while not done.wait(15):
                try:
                    log('  loading: database at %s' % human_bytes(self.database_size()))
                except SystemExit:
                    pass

        watcher = threading.Thread(target=progress, name='load-progress', daemon=True)
        started = time.time()
        watcher.start()
        try:
            counts = AK.load_fixture(self.container, pad_bytes=size, timeout=7200)
        finally:
            done.set()
            watcher.join()
        seconds = time.time() - started
        db_bytes = self.database_size()
        log('loaded in %.0f s: pg_database_size %s, %d tables, %d rows' % (
            seconds, human_bytes(db_bytes), len(counts), sum(counts.values())))
        return {'pad_bytes': size, 'database_bytes': db_bytes, 'tables': len(counts),
                'rows': sum(counts.values()), 'counts': counts, 'load_seconds': round(seconds, 1)}

    # -- measuring ------------------------------------------------------------------------------

    def alternate(self, title, variants, repeat=None):
        """Run every variant ``repeat`` times, alternating (the order reverses every round)."""
        repeat = repeat or self.options.repeat
        log('%s: %d x %d runs' % (title, repeat, len(variants)))
        samples = {v['name']: [] for v in variants}
        for round_index in range(repeat):
            order = variants if round_index % 2 == 0 else list(reversed(variants))
            for variant in order:
                sample = variant['run']()
                self.settle()
                samples[variant['name']].append(sample)
                log('  %-16s %7.2f s  rss root %6.1f MiB  child %s %6.1f MiB' % (
                    variant['name'], sample['seconds'], sample['root_rss_kib'] / 1024.0,
                    sample['child_name'], sample['child_rss_kib'] / 1024.0))
        return samples

    @staticmethod
    def row(variant, runs, db_bytes, dump_bytes=None):
        seconds = statistics.median(s['seconds'] for s in runs)
        child = max(runs, key=lambda s: s['child_rss_kib'])
        row = {
            'name': variant['name'],
            'label': variant['label'],
            'kind': variant['kind'],
            'runs_seconds': [round(s['seconds'], 3) for s in runs],
            'median_seconds': round(seconds, 3),
            'db_mib_per_s': round(db_bytes / float(MiB) / seconds, 1),
            'dump_mib_per_s': round(dump_bytes / float(MiB) / seconds, 1) if dump_bytes else None,
            'root_name': runs[0]['root_name'],
            'root_rss_mib': round(max(s['root_rss_kib'] for s in runs) / 1024.0, 1),
            'child_name': child['child_name'],
            'child_rss_mib': round(child['child_rss_kib'] / 1024.0, 1),
            'tree_rss_mib': round(max(s['tree_rss_kib'] for s in runs) / 1024.0, 1),
        }
        inner = [s['inner_seconds'] for s in runs if s.get('inner_seconds') is not None]
        if inner:
            row['module_reported_seconds'] = round(statistics.median(inner), 3)
        stages = [s['stages'] for s in runs if s.get('stages')]
        if stages:
            row['stage_median_seconds'] = dict((name, round(statistics.median(s.get(name, 0.0) for s in stages), 3))
                                               for name in stages[0])
        steps = [dict(s['steps']) for s in runs if s.get('steps')]
        if steps:
            # [name, median seconds] in the order the module ran them
            names = [name for name, _seconds in runs[0]['steps'] if all(name in s for s in steps)]
            row['steps_median_seconds'] = [[n, round(statistics.median(s[n] for s in steps), 3)] for n in names]
        return row

    def warm_dump(self):
        """Untimed: one module dump, so that no measured run pays for compiling the modules."""
        set_dir = self.new_set()
        _sample, result = self.module(MODULE_DUMP, self.dump_args(set_dir), 'warm')
        # the options the module really ran with, defaults included
        self.module_args_seen = dict((result.get('invocation') or {}).get('module_args') or {})
        self.drop_set(set_dir)

    def has_option(self, name):
        return name in (self.module_args_seen or {})

    def dump_args(self, set_dir, tcp=False, **extra):
        args = {'set_dir': set_dir, 'user': DB_USER, 'database': DB_NAME,
                'format': 'custom', 'encryption': 'age', 'recipients': [self.recipient],
                'compression': 'zstd'}
        if tcp:
            args.update({'host': self.db_host, 'port': PG_PORT, 'password': self.password})
        else:
            args['container'] = self.container
        args.update(extra)
        return args

    def shell_with_password(self, script):
        """A measured shell run with PGPASSWORD in its environment (never in its argv)."""
        sample = run_measured(['bash', '-c', 'set -euo pipefail; ' + script],
                              env=dict(self.env, PGPASSWORD=self.password))
        if sample['rc'] != 0:
            raise SystemExit('shell pipeline failed (%s): %s\n%s' % (sample['rc'], script, sample['stderr']))
        return sample

    def bench_dump(self, info, big=False):
        db_bytes = info['database_bytes']
        label = info['label']
        last = {}
        container = shlex.quote(self.container)
        recipient = shlex.quote(self.recipient)
        exec_pg = 'docker exec -u %s %s' % (CONTAINER_USER, container)
        dump_custom = 'pg_dump --format=custom --compress=0 --username=%s --dbname=%s' % (DB_USER, DB_NAME)
        dump_plain = 'pg_dump --username=%s --dbname=%s' % (DB_USER, DB_NAME)

        def module_run(keep=True, **extra):
            def run():
                set_dir = self.new_set()
                sample, result = self.module(MODULE_DUMP, self.dump_args(set_dir, **extra), 'dump')
                database = result.get('database') or {}
                if not (result.get('changed') and database.get('changed') and database.get('dump_bytes')):
                    raise SystemExit('authentik_dump did not dump the database: %s' % result)
                sample['inner_seconds'] = database['seconds']
                sample['dump_bytes'] = database['dump_bytes']
                sample['payload_bytes'] = database['size']
                sample['server_version'] = database.get('server_version')
                sample['stages'] = database.get('stage_seconds')
                if not keep:
                    self.drop_set(set_dir)
                    return sample
                if last.get('set'):
                    self.drop_set(last['set'])
                last['set'] = set_dir
                return sample
            return run

        def shell_run(script_for, keep=None, password=False):
            def run():
                out = self.fresh('shell')
                script = script_for(shlex.quote(out))
                sample = self.shell_with_password(script) if password else self.shell(script)
                if keep:
                    if last.get(keep):
                        remove(last[keep])
                    last[keep] = out
                else:
                    remove(out)
                return sample
            return run

        variants = [
            {'name': 'module', 'kind': 'module', 'run': module_run(),
             'label': '`authentik_dump` (container mode, custom format, zstd -%d, age%s)' % (
                 ZSTD_LEVEL, ', container_output: %s' % self.module_args_seen['container_output']
                 if self.has_option('container_output') else '')},
        ]
        if self.has_option('container_output') and self.module_args_seen['container_output'] != 'api':
            variants.append({'name': 'module-api', 'kind': 'module', 'run': module_run(keep=False, container_output='api'),
                             'label': '`authentik_dump` with container_output: api (through the engine\'s exec stream)'})
        variants += [
            {'name': 'bare', 'kind': 'shell',
             'run': shell_run(lambda o: "%s sh -c '%s > /dev/null'" % (exec_pg, dump_custom)),
             'label': "`docker exec C sh -c 'pg_dump -Fc -Z0 DB > /dev/null'` (bare, inside the container)"},
            {'name': 'streamed', 'kind': 'shell',
             'run': shell_run(lambda o: '%s %s > /dev/null' % (exec_pg, dump_custom)),
             'label': '`docker exec C pg_dump -Fc -Z0 DB > /dev/null` (bare, streamed out to the host)'},
            {'name': 'stream-zstd-age', 'kind': 'shell',
             'run': shell_run(lambda o: '%s %s | zstd -%d -q -c | age -r %s > %s' % (
                 exec_pg, dump_custom, ZSTD_LEVEL, recipient, o)),
             'label': '`docker exec C pg_dump -Fc -Z0 DB | zstd -%d -q -c | age -r R > OUT` '
                      '(the module\'s tools in shell)' % ZSTD_LEVEL},
            {'name': 'gzip', 'kind': 'shell',
             'run': shell_run(lambda o: '%s %s | gzip > %s' % (exec_pg, dump_plain, o), keep='gzip'),
             'label': '`docker exec C pg_dump DB | gzip > FILE` (classic)'},
            {'name': 'module-tcp', 'kind': 'module', 'run': module_run(keep=False, tcp=True),
             'label': '`authentik_dump` (TCP mode: host, port, password; custom format, zstd -%d, age)' % ZSTD_LEVEL},
            {'name': 'bare-tcp', 'kind': 'shell',
             'run': shell_run(lambda o: 'pg_dump -h %s -p %d --format=custom --compress=0 --username=%s --dbname=%s '
                              '> /dev/null' % (shlex.quote(self.db_host), PG_PORT, DB_USER, DB_NAME), password=True),
             'label': '`pg_dump -h H -p P -Fc -Z0 DB > /dev/null` (bare, on the host over TCP, PGPASSWORD in '
                      'the environment)'},
        ]
        if big:
            variants = [v for v in variants if v['name'] in BIG_VARIANTS]
        samples = self.alternate('Dump of the %s database' % label, variants, repeat=1 if big else None)
        module_runs = samples['module']
        dump_bytes = int(statistics.median(s['dump_bytes'] for s in module_runs))
        rows = []
        for variant in variants:
            custom = variant['name'] != 'gzip'
            rows.append(self.row(variant, samples[variant['name']], db_bytes, dump_bytes if custom else None))
        gzip_file = last.get('gzip')
        plain_bytes = None
        if gzip_file:
            # untimed: the size of the plain SQL that went through gzip
            plain_bytes = int(subprocess.run('gunzip -c %s | wc -c' % shlex.quote(gzip_file), shell=True, check=True,
                                             stdout=subprocess.PIPE).stdout.decode().strip())
        by_name = dict((row['name'], row) for row in rows)
        for row in rows:
            if row['name'] == 'gzip':
                row['dump_mib_per_s'] = round(plain_bytes / float(MiB) / row['median_seconds'], 1)
            # speed of the module relative to this row (same database): this time / module time; the TCP
            # rows are compared with the module in TCP mode
            module_row = by_name['module-tcp' if row['name'].endswith('-tcp') else 'module']
            row['module_speed_vs_this'] = round(row['median_seconds'] / module_row['median_seconds'], 2)
        self.module(MODULE_SET, {'path': last['set'], 'state': 'finalized'}, 'set-final')
        self.settle()
        return {
            'rows': rows,
            'dump_bytes': dump_bytes,
            'payload_bytes': module_runs[-1]['payload_bytes'],
            'plain_bytes': plain_bytes,
            'gzip_bytes': os.path.getsize(gzip_file) if gzip_file else None,
            'server_version': module_runs[-1]['server_version'],
            'repeat': 1 if big else self.options.repeat,
        }, last['set'], gzip_file

    def restore_args(self, set_dir, safety_root=None):
        args = {'set_dir': set_dir, 'container': self.container, 'user': DB_USER, 'database': DB_NAME,
                'identity': self.keyfile, 'app_containers': [], 'restore_files': False,
                'target_version': AK.VERSION, 'health_url': '', 'safety_backup': bool(safety_root)}
        if safety_root:
            args['safety_root'] = safety_root
        return args

    def check_counts(self, expected, what):
        actual = AK.table_counts(self.container)
        if actual != expected:
            differ = sorted(t for t in set(actual) | set(expected) if actual.get(t) != expected.get(t))
            raise SystemExit('%s left different row counts in %s' % (what, ', '.join(differ[:10])))

    def bench_restore(self, info, set_dir, gzip_file):
        db_bytes = info['database_bytes']
        expected = info['counts']
        container = shlex.quote(self.container)

        def module_run(safety_root=None):
            sample, result = self.module(MODULE_RESTORE, self.restore_args(set_dir, safety_root), 'restore')
            tables = result.get('tables') or {}
            if not result.get('changed') or tables.get('mismatched') or tables.get('checked') != len(expected):
                raise SystemExit('authentik_restore did not restore every table: %s' % result)
            sample['inner_seconds'] = result.get('recovery_seconds')
            sample['steps'] = [[s['name'], s['seconds']] for s in result.get('steps') or []]
            return sample

        def shell_run():
            self.recreate_database()
            self.settle()
            sample = self.shell('gunzip -c %s | docker exec -i -u %s %s psql -q -v ON_ERROR_STOP=1 '
                                '--username=%s --dbname=%s > /dev/null' % (
                                    shlex.quote(gzip_file), CONTAINER_USER, container, DB_USER, DB_NAME))
            self.check_counts(expected, 'gunzip | psql')
            return sample

        variants = [
            {'name': 'module', 'kind': 'module', 'run': module_run,
             'label': '`authentik_restore` (container mode, safety_backup=false)'},
            {'name': 'gunzip-psql', 'kind': 'shell', 'run': shell_run,
             'label': '`gunzip -c FILE | docker exec -i C psql -q -v ON_ERROR_STOP=1 -d DB` '
                      '(into a freshly recreated database)'},
        ]
        samples = self.alternate('Restore of the %s database' % info['label'], variants)
        rows = [self.row(v, samples[v['name']], db_bytes) for v in variants]
        for row in rows:
            # module time / this time
            row['module_time_vs_this'] = round(rows[0]['median_seconds'] / row['median_seconds'], 2)

        log('one more restore with the safety backup on')
        safety_root = os.path.join(self.run_dir, 'safety')
        safety_sample = module_run(safety_root)
        self.settle()
        log('  %-16s %7.2f s  rss root %6.1f MiB  child %s %6.1f MiB' % (
            'module+safety', safety_sample['seconds'], safety_sample['root_rss_kib'] / 1024.0,
            safety_sample['child_name'], safety_sample['child_rss_kib'] / 1024.0))
        remove(safety_root)
        safety = {
            'label': '`authentik_restore` (container mode, safety_backup=true)',
            'seconds': round(safety_sample['seconds'], 3),
            'steps_seconds': safety_sample['steps'],
            'root_rss_mib': round(safety_sample['root_rss_kib'] / 1024.0, 1),
            'child_name': safety_sample['child_name'],
            'child_rss_mib': round(safety_sample['child_rss_kib'] / 1024.0, 1),
            'module_time_vs_reference': round(safety_sample['seconds'] / rows[1]['median_seconds'], 2),
        }
        return {'rows': rows, 'safety_run': safety}

    def bench_size(self, size):
        info = self.load(size)
        info['label'] = human_bytes(info['database_bytes'])
        info['size_option'] = size_label(size)
        log('untimed warm-up dump')
        self.warm_dump()
        big = size >= BIG_SIZE
        dump, set_dir, gzip_file = self.bench_dump(info, big=big)
        # from BIG_SIZE on the restore (and the `pg_dump | gzip` file it is compared with) would take the
        # script well past its time budget: it is measured up to the largest size below
        restore = {'rows': [], 'skipped': 'not measured from %s on' % human_bytes(BIG_SIZE)} if big else \
            self.bench_restore(info, set_dir, gzip_file)
        self.drop_set(set_dir)
        if gzip_file:
            remove(gzip_file)
        result = {key: info[key] for key in ('label', 'size_option', 'pad_bytes', 'database_bytes', 'tables',
                                             'rows', 'load_seconds')}
        result.update({'dump': dump, 'restore': restore})
        self.results.append(result)

    def run(self):
        started = time.time()
        facts = machine_facts(self.python, self.workdir)
        try:
            self.setup()
            self.start_container()
            for size in self.options.sizes:
                self.bench_size(size)
        finally:
            if self.options.keep:
                log('kept container %s and work directory %s' % (self.container, self.run_dir))
            else:
                AK.remove_containers(self.container)
                remove(self.run_dir)
        facts.update({
            'postgresql': self.postgres_version,
            'postgres_image': AK.POSTGRES_IMAGE,
            'docker': command_output(['docker', 'version', '--format', '{{.Server.Version}}']),
            'docker_sdk': command_output([self.python, '-c', 'import docker; print(docker.__version__)']),
            'gzip': command_output(['gzip', '--version']).splitlines()[0],
            'module_container_output': (self.module_args_seen or {}).get('container_output'),
            'euid': os.geteuid(),
            'load_average_end': ' '.join('%.2f' % x for x in os.getloadavg()),
            'duration_seconds': round(time.time() - started, 1),
        })
        return facts


# ---------------------------------------------------------------------------------------------
# verdicts and report

def verdicts(sizes):
    """The goals, judged on the largest database measured (and flatness between the smallest and it)."""
    largest = max(sizes, key=lambda s: s['database_bytes'])
    smallest = min(sizes, key=lambda s: s['database_bytes'])
    # the rows measured only below BIG_SIZE (streamed, gzip, restore) are judged on the largest size that has them
    full = max([s for s in sizes if (s.get('restore') or {}).get('rows')] or [largest], key=lambda s: s['database_bytes'])
    dump = dict((r['name'], r) for r in full['dump']['rows'])
    dump.update((r['name'], r) for r in largest['dump']['rows'])
    restore = dict((r['name'], r) for r in full['restore']['rows'])
    at = largest['label']
    goal_size = largest['database_bytes'] >= GOAL_SIZE
    out = [
        {'key': 'dump_vs_bare', 'goal': 'dump throughput >= %.1fx bare `pg_dump > /dev/null` inside the container'
         % GOAL_VS_BARE, 'size': at, 'value': dump['bare']['module_speed_vs_this'],
         'shown': '%.2fx' % dump['bare']['module_speed_vs_this'],
         'ok': dump['bare']['module_speed_vs_this'] >= GOAL_VS_BARE},
        {'key': 'dump_vs_streamed', 'goal': 'dump throughput >= %.1fx bare `pg_dump > /dev/null` streamed out of '
         'the container through `docker exec`' % GOAL_VS_BARE, 'size': full['label'],
         'value': dump['streamed']['module_speed_vs_this'], 'shown': '%.2fx' % dump['streamed']['module_speed_vs_this'],
         'ok': dump['streamed']['module_speed_vs_this'] >= GOAL_VS_BARE},
        {'key': 'dump_vs_gzip', 'goal': 'dump >= %.1fx as fast as `pg_dump | gzip`' % GOAL_VS_GZIP, 'size': full['label'],
         'value': dump['gzip']['module_speed_vs_this'], 'shown': '%.2fx' % dump['gzip']['module_speed_vs_this'],
         'ok': dump['gzip']['module_speed_vs_this'] >= GOAL_VS_GZIP},
        {'key': 'restore_vs_psql', 'goal': 'restore time <= %.1fx of `gunzip | psql`' % GOAL_RESTORE,
         'size': full['label'],
         'value': restore['gunzip-psql']['module_time_vs_this'],
         'shown': '%.2fx' % restore['gunzip-psql']['module_time_vs_this'],
         'ok': restore['gunzip-psql']['module_time_vs_this'] <= GOAL_RESTORE},
    ]
    if 'bare-tcp' in dump:
        value = dump['bare-tcp']['module_speed_vs_this']
        out.append({'key': 'dump_vs_bare_tcp', 'goal': 'dump throughput in TCP mode >= %.1fx bare `pg_dump -h H -p P '
                    '> /dev/null` on the host' % GOAL_VS_BARE, 'size': at, 'value': value, 'shown': '%.2fx' % value,
                    'ok': value >= GOAL_VS_BARE})
    out.append(linear_verdict(sizes))
    peaks = []
    for entry in sizes:
        rows = [r for r in entry['dump']['rows'] if r['kind'] == 'module']
        rows += [r for r in (entry.get('restore') or {}).get('rows', []) if r['kind'] == 'module']
        peaks.append({'label': entry['label'], 'python': max(r['root_rss_mib'] for r in rows),
                      'child': max(r['child_rss_mib'] for r in rows),
                      'child_name': max(rows, key=lambda r: r['child_rss_mib'])['child_name']})
    out.append({'key': 'rss', 'goal': 'peak RSS <= %d MiB (Python process and largest child, dump and restore)'
                % GOAL_RSS_MIB, 'size': ', '.join(p['label'] for p in peaks),
                'value': max(max(p['python'], p['child']) for p in peaks),
                'shown': '; '.join('%s: Python %.1f MiB, %s %.1f MiB' % (
                    p['label'], p['python'], p['child_name'], p['child']) for p in peaks),
                'ok': all(p['python'] <= GOAL_RSS_MIB and p['child'] <= GOAL_RSS_MIB for p in peaks)})
    if smallest is not largest:
        small = [p for p in peaks if p['label'] == smallest['label']][0]
        large = [p for p in peaks if p['label'] == largest['label']][0]
        out.append({'key': 'rss_flat', 'goal': 'peak RSS flat from %s to %s (at most +%d%% or +%d MiB)' % (
            smallest['label'], largest['label'], FLAT_PERCENT, FLAT_MIB), 'size': '%s -> %s' % (
                smallest['label'], largest['label']),
            'value': None, 'shown': 'Python %.1f -> %.1f MiB, largest child %.1f -> %.1f MiB' % (
                small['python'], large['python'], small['child'], large['child']),
            'ok': flat(small['python'], large['python']) and flat(small['child'], large['child'])})
    else:
        out.append({'key': 'rss_flat', 'goal': 'peak RSS flat between sizes', 'size': largest['label'],
                    'value': None, 'shown': 'not measured (one size only)', 'ok': None})
    for item in out:
        item.setdefault('goal_size', goal_size)
    return out


def seconds_per_gib(entry, name='module'):
    rows = [r for r in entry['dump']['rows'] if r['name'] == name]
    return rows[0]['median_seconds'] / (entry['database_bytes'] / float(GiB)) if rows else None


def linear_verdict(sizes):
    """The module's dump time per GiB at the largest size against that at the size nearest 1 GiB."""
    largest = max(sizes, key=lambda s: s['database_bytes'])
    others = [s for s in sizes if s is not largest]
    item = {'key': 'dump_linear', 'goal': 'module dump time per GiB at the largest size within %d%% of that at 1 GiB '
            '(container mode)' % round(LINEAR_TOLERANCE * 100), 'value': None, 'ok': None, 'goal_size': True}
    if largest['database_bytes'] < BIG_SIZE or not others:
        item.update({'size': largest['label'], 'shown': 'not measured (no size of %s or more)' % human_bytes(BIG_SIZE)})
        return item
    base = min(others, key=lambda s: abs(s['database_bytes'] - GiB))
    low, high = seconds_per_gib(base), seconds_per_gib(largest)
    item.update({'size': '%s -> %s' % (base['label'], largest['label']), 'value': round(high / low, 2),
                 'shown': '%.2f -> %.2f s/GiB (%+.0f%%)' % (low, high, (high / low - 1) * 100),
                 'ok': linear(low, high)})
    tcp_low, tcp_high = seconds_per_gib(base, 'module-tcp'), seconds_per_gib(largest, 'module-tcp')
    if tcp_low and tcp_high:
        item['shown'] += '; TCP mode %.2f -> %.2f s/GiB (%+.0f%%)' % (tcp_low, tcp_high, (tcp_high / tcp_low - 1) * 100)
    return item


def verdict_text(item):
    if item['ok'] is None:
        return 'not judged'
    text = pass_miss(item['ok'])
    if not item['goal_size'] and item['key'] not in ('rss_flat', 'dump_linear'):
        text += ' (below the goal size of %s)' % human_bytes(GOAL_SIZE)
    return text


def transport_sentence(facts):
    mode = facts.get('module_container_output')
    if not mode:
        return 'The module reads the dump through the same exec stream (through the engine API).'
    if mode == 'api':
        return 'The module ran with `container_output: api`: it reads the dump through the same exec stream.'
    runs_as = 'root' if facts.get('euid') == 0 else 'uid %s' % facts.get('euid')
    return ('The module ran with `container_output: %s` (its default), which reads the dump through a FIFO '
            'inside the container when the module can reach the container\'s file system (the benchmark runs '
            'as %s on the Docker host) and through the exec stream otherwise; the row "container_output: api" '
            'shows the module on the exec stream.' % (mode, runs_as))


def child_cell(row):
    if not row.get('child_name'):
        return '-'
    return '%.1f MiB (%s)' % (row['child_rss_mib'], row['child_name'])


def seconds_list(runs):
    return ' '.join('%.2f' % s for s in runs)


def render_markdown(results):
    facts = results['facts']
    sizes = results['sizes']
    options = results['options']
    out = []
    add = out.append
    add('## Authentik dump and restore')
    add('')
    add('`bench/bench_authentik.py`, %s%s. The raw numbers are in `bench/results/authentik.json`.' % (
        facts['date_utc'], ', quick run (one size, one run each)' if options.get('quick') else ''))
    add('')
    add('### Goals')
    add('')
    add('On an Authentik-shaped database of at least %s (`pg_database_size`):' % human_bytes(GOAL_SIZE))
    add('')
    add('- **Dump throughput**: `authentik_dump` at least %.1fx the throughput of a bare `pg_dump > /dev/null`, '
        'and at least %.1fx as fast as the classic `pg_dump | gzip`.' % (GOAL_VS_BARE, GOAL_VS_GZIP))
    add('- **Memory**: the peak RSS of the module\'s Python process and of its largest child at most %d MiB, '
        'flat from a database of about 100 MB to the largest one measured (4 GB by default).' % GOAL_RSS_MIB)
    add('- **Dump over TCP**: `authentik_dump` in TCP mode at least %.1fx the throughput of the host\'s bare '
        '`pg_dump -h H -p P > /dev/null`; the time per GiB linear (within %d%%) from 1 GB to the largest size.'
        % (GOAL_VS_BARE, round(LINEAR_TOLERANCE * 100)))
    add('- **Restore**: `authentik_restore` takes at most %.1fx the time of `gunzip | psql` of the same data.'
        % GOAL_RESTORE)
    add('')
    add('### Summary')
    add('')
    add('| Goal | Database | Measured | Verdict |')
    add('|---|---|---|---|')
    for item in results['verdicts']:
        add('| %s | %s | %s | **%s** |' % (cell(item['goal']), item['size'], cell(item['shown']), verdict_text(item)))
    add('')
    add('"Bare inside the container" is the literal `pg_dump > /dev/null`: the dump goes nowhere, nothing '
        'leaves the container. "Bare, streamed out" is the same pg_dump whose output crosses the Docker '
        'engine\'s exec stream (`docker exec`) to the host and is thrown away there: the cost of getting the '
        'bytes out of the container, without compression or encryption. %s Both verdicts are reported; neither '
        'is picked over the other.' % transport_sentence(facts))
    add('')
    add('| Database | Dump: module s | bare inside s | bare streamed s | `pg_dump \\| gzip` s | module vs bare inside | '
        'module vs streamed | module vs gzip | Restore: module s | `gunzip \\| psql` s | module/psql time |')
    add('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')

    def secs(rows, name, key='median_seconds', fmt='%.2f'):
        return fmt % rows[name][key] if name in rows else '-'

    for entry in sizes:
        dump = dict((r['name'], r) for r in entry['dump']['rows'])
        restore = dict((r['name'], r) for r in (entry.get('restore') or {}).get('rows', []))
        add('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            entry['label'], secs(dump, 'module'), secs(dump, 'bare'), secs(dump, 'streamed'), secs(dump, 'gzip'),
            secs(dump, 'bare', 'module_speed_vs_this', '%.2fx'), secs(dump, 'streamed', 'module_speed_vs_this', '%.2fx'),
            secs(dump, 'gzip', 'module_speed_vs_this', '%.2fx'), secs(restore, 'module'), secs(restore, 'gunzip-psql'),
            secs(restore, 'gunzip-psql', 'module_time_vs_this', '%.2fx')))
    add('')
    add('"module vs X" is the module\'s speed relative to X (X\'s median time / the module\'s); "module/psql '
        'time" is the module\'s median restore time / that of `gunzip | psql` (lower is better); "-": not measured '
        'at that size (see Method).')
    add('')
    tcp = [e for e in sizes if any(r['name'] == 'bare-tcp' for r in e['dump']['rows'])]
    if tcp:
        add('| Database | TCP: module s | bare `pg_dump -h` s | module vs bare over TCP | container mode: module s |')
        add('|---|---:|---:|---:|---:|')
        for entry in tcp:
            dump = dict((r['name'], r) for r in entry['dump']['rows'])
            add('| %s | %.2f | %.2f | %.2fx | %.2f |' % (
                entry['label'], dump['module-tcp']['median_seconds'], dump['bare-tcp']['median_seconds'],
                dump['bare-tcp']['module_speed_vs_this'], dump['module']['median_seconds']))
        add('')
    add('### Method')
    add('')
    add('- **Database.** A PostgreSQL container started for the benchmark from the local image `%s` (data '
        'directory on tmpfs, as in the integration tests), loaded with the Authentik-shaped fixture of '
        '`tests/fixtures/authentik` (%d users, an Authentik %s version history and migrations, a tenant schema) '
        'and grown with `authentik_events_event` rows (about 1 KiB of JSONB each) until `pg_database_size` '
        'reaches each size. The container is removed at the end (`--keep` keeps it); nothing is reused from '
        'one benchmark run to the next.' % (facts.get('postgres_image', ''), AK.USERS, AK.VERSION))
    add('- **Module runs.** Each module runs in its own process exactly as Ansible runs a module in debug mode: '
        '`python -m ansible_collections.idp.recovery.plugins.modules.authentik_dump args.json` with '
        '`{"ANSIBLE_MODULE_ARGS": {...}}`, in container mode (`container: C`: pg_dump and pg_restore run inside '
        'the database container, started through the Docker engine API; how the dump leaves the container is '
        'said under the summary). '
        '`authentik_dump` writes a custom-format dump (`pg_dump --format=custom --compress=0`), compressed with '
        'zstd -%d (its default: `compression_level` is left unset) and encrypted with age to a fresh X25519 key, into a fresh backup set each run; its time '
        'includes interpreter start-up, the server and Authentik facts, the exact row counts of every table in '
        'the dump\'s snapshot, the `pg_restore --list` check of the stream, the SHA-256, fsync and metadata. '
        'The same module also runs in TCP mode (`host`: the container\'s address, `port: %d`, `password`), with '
        'the host\'s pg_dump and pg_restore; its reference is the host\'s bare `pg_dump -h H -p %d -Fc -Z0 DB > '
        '/dev/null` with `PGPASSWORD` in its environment ("module vs this" of the TCP rows compares them with the '
        'module in TCP mode).' % (options.get('zstd_level', ZSTD_LEVEL), PG_PORT, PG_PORT))
    add('- **Restore runs.** `authentik_restore` restores the last set of the dump measurement into the same '
        'container with `app_containers: []`, `restore_files: false`, `target_version: %s` (the fixture\'s), '
        '`health_url: \'\'` and **`safety_backup: false`**: no app container to stop, no files, no health '
        'check, no safety dump. Its time includes the full verification of the set (checksums and a decrypt '
        'test of every payload) with the decrypted dump written into the container at the same time (step '
        '`verify`), dropping and recreating the database, `pg_restore --jobs=2` and the comparison of every table\'s row count. One more run with '
        '`safety_backup: true` (a full dump of the target into a safety set first) is reported on its own. '
        'The reference, `gunzip -c FILE | docker exec -i C psql -q -v ON_ERROR_STOP=1 -d DB`, restores the '
        'plain dump written by the `pg_dump | gzip` runs into a database dropped and created just before '
        '(untimed); its row counts are checked afterwards (untimed).' % AK.VERSION)
    add('- **Shell runs.** `bash -o pipefail`; every `docker exec` runs as the `%s` user, as the module does. '
        'The shell version of the module\'s pipeline (`pg_dump | zstd | age`) is an extra row that shows the '
        'cost of the module itself over the same tools.' % CONTAINER_USER)
    add('- **Order and repetition.** Module and shell runs alternate (the order reverses every round); each '
        'runs %d time(s) and the median is reported; every run is listed. An untimed module dump runs first on '
        'each database. After every run, `sync` (untimed) flushes dirty pages.' % options['repeat'])
    add('- **Large databases.** From %s on, each variant runs once, and only the module rows (container and TCP '
        'mode) and the two bare references (`pg_dump > /dev/null` inside the container and over TCP) run: growing '
        'the fixture costs about 40 s per GB, and the restore with the `pg_dump | gzip` file it is compared with '
        'would take the whole benchmark past about 20 minutes, so the restore, streamed and gzip rows are judged at '
        'the largest size below. "Linear" compares the module\'s median dump time per GiB at the largest size with '
        'that at the size nearest 1 GiB (within %d%%).' % (human_bytes(BIG_SIZE), round(LINEAR_TOLERANCE * 100)))
    add('- **Throughput** is `pg_database_size` divided by the median wall time ("DB MiB/s"), and the bytes '
        'pg_dump produced divided by it ("dump MiB/s": the custom-format size the module reports, the same '
        'for every custom-format row; the plain SQL size for `pg_dump | gzip`).')
    add('- **Memory.** A monitor thread polls `VmHWM` of the process and of every descendant every 50 ms. '
        '"Python" is the module\'s own interpreter; "largest child" is the largest peak among its children '
        '(`zstd`, `age`; for the shell rows: `docker`, `gzip`, ...). pg_dump and pg_restore run inside the '
        'container, outside the measured tree. "Flat" means the peak at the larger database is at most %d%% '
        'or %d MiB (whichever is larger) above the peak at the smaller one.' % (FLAT_PERCENT, FLAT_MIB))
    add('')
    add('### Machine')
    add('')
    add('| | |')
    add('|---|---|')
    for label, key in (('CPU', 'cpu'), ('CPUs (nproc)', 'nproc'), ('Memory', 'memory_mib'), ('Kernel', 'kernel'),
                       ('File system of the work directory', 'filesystem'), ('PostgreSQL', 'postgresql'),
                       ('Docker engine', 'docker'), ('Docker SDK for Python', 'docker_sdk'), ('Python', 'python'),
                       ('ansible-core', 'ansible_core'), ('zstd', 'zstd'), ('age', 'age'), ('gzip', 'gzip'),
                       ('Load average at start', 'load_average_start'), ('Load average at end', 'load_average_end'),
                       ('Duration of the benchmark', 'duration_seconds')):
        value = facts.get(key, '')
        if key == 'memory_mib':
            value = '%d MiB' % value
        if key == 'duration_seconds':
            value = '%s s' % value
        add('| %s | %s |' % (label, value))
    add('')
    add('The machine is shared: other work running at the same time shows as noise in the individual runs, '
        'which is why each comparison is made in the same run, alternating.')
    add('')
    add('### Results')
    for entry in sizes:
        dump = entry['dump']
        add('')
        add('#### Dump, database of %s' % entry['label'])
        add('')
        add('%d tables, %d rows; pg_dump custom format %s, plain SQL %s; module payload (zstd -%d + age) %s, '
            '`pg_dump | gzip` file %s. Loading the fixture took %.0f s.' % (
                entry['tables'], entry['rows'], human_bytes(dump['dump_bytes']),
                human_bytes(dump['plain_bytes']) if dump.get('plain_bytes') else '-',
                options.get('zstd_level', ZSTD_LEVEL), human_bytes(dump['payload_bytes']),
                human_bytes(dump['gzip_bytes']) if dump.get('gzip_bytes') else '-', entry['load_seconds']))
        add('')
        add('| Command | Median s | DB MiB/s | dump MiB/s | Module speed vs this | Python peak RSS | '
            'Largest child peak RSS | Runs (s) |')
        add('|---|---:|---:|---:|---:|---:|---:|---|')
        for row in dump['rows']:
            extra = ''
            if row.get('module_reported_seconds') is not None:
                extra = ' (dump inside the module: %.2f s)' % row['module_reported_seconds']
            add('| %s | %.2f | %.1f | %s | %s | %s | %s | %s |' % (
                cell(row['label']), row['median_seconds'], row['db_mib_per_s'],
                '%.1f' % row['dump_mib_per_s'] if row['dump_mib_per_s'] else '-',
                '-' if row['name'] in ('module', 'module-tcp') else '%.2fx' % row['module_speed_vs_this'],
                '%.1f MiB' % row['root_rss_mib'] if row['kind'] == 'module' else '-',
                child_cell(row), seconds_list(row['runs_seconds']) + extra))
        add('')
        add(where_time_goes_dump(dump))
        restore = entry.get('restore')
        if not (restore or {}).get('rows'):
            continue
        add('')
        add('#### Restore, database of %s' % entry['label'])
        add('')
        add('| Command | Median s | DB MiB/s | Module time / this | Python peak RSS | Largest child peak RSS | '
            'Runs (s) |')
        add('|---|---:|---:|---:|---:|---:|---|')
        for row in restore['rows']:
            add('| %s | %.2f | %.1f | %s | %s | %s | %s |' % (
                cell(row['label']), row['median_seconds'], row['db_mib_per_s'],
                '-' if row['kind'] == 'module' else '%.2fx' % row['module_time_vs_this'],
                '%.1f MiB' % row['root_rss_mib'] if row['kind'] == 'module' else '-',
                child_cell(row), seconds_list(row['runs_seconds'])))
        safety = restore['safety_run']
        add('| %s, one run | %.2f | %.1f | - | %.1f MiB | %.1f MiB (%s) | %.2f (%.2fx of `gunzip \\| psql`) |' % (
            cell(safety['label']), safety['seconds'], entry['database_bytes'] / float(MiB) / safety['seconds'],
            safety['root_rss_mib'], safety['child_rss_mib'], safety['child_name'] or '-', safety['seconds'],
            safety['module_time_vs_reference']))
        add('')
        add(where_time_goes_restore(restore))
    add('')
    return '\n'.join(out)


def where_time_goes_dump(dump):
    rows = dict((r['name'], r) for r in dump['rows'])
    module = rows['module']
    parts = []
    if 'streamed' in rows:
        transport = rows['streamed']['median_seconds'] - rows['bare']['median_seconds']
        parts.append('Streaming pg_dump\'s output out of the container through `docker exec` took %.2f s more than '
                     'the bare dump inside it (%.2f s against %.2f s).' % (
                         transport, rows['streamed']['median_seconds'], rows['bare']['median_seconds']))
    for name, mode in (('module', 'container mode'), ('module-tcp', 'TCP mode')):
        row = rows.get(name)
        if not row or row.get('module_reported_seconds') is None:
            continue
        text = ('In %s, of the module\'s %.2f s the dump itself (snapshot, pg_dump through zstd and age into the '
                'set, row counts, `pg_restore --list`) took %.2f s; the rest is start-up, the set\'s bookkeeping and '
                'the facts.' % (mode, row['median_seconds'], row['module_reported_seconds']))
        if row.get('stage_median_seconds'):
            text += ' Stages of that dump as the module reports them (medians, s): %s.' % stages_text(
                row['stage_median_seconds'])
        parts.append(text)
    tools = rows.get('stream-zstd-age')
    if tools:
        parts.append('The module\'s tools in shell (`docker exec C pg_dump | zstd | age`) took %.2f s (module speed '
                     '%.2fx of it).' % (tools['median_seconds'], tools['module_speed_vs_this']))
    return ' '.join(parts)


STAGE_TEXT = (
    ('snapshot_facts', 'snapshot and facts'),
    ('pg_dump', 'pg_dump to its end (row counts, zstd and age alongside)'),
    ('list_check_wait', 'then waiting for `pg_restore --list`'),
    ('drain_fsync', 'then zstd/age tail, fsync and rename'),
    ('counts_wait', 'then waiting for the row counts'),
    ('counts_wall', 'row count query from start to answer (overlaps pg_dump)'),
)


def stages_text(stages):
    return ', '.join('%s %.2f' % (text, stages[name]) for name, text in STAGE_TEXT if name in stages)


def where_time_goes_restore(restore):
    module = restore['rows'][0]
    safety = restore['safety_run']

    def listed(steps):
        return ', '.join('%s %.2f' % (name, seconds) for name, seconds in steps if seconds >= 0.005)

    text = 'Steps of the module restore, as the module reports them (medians, s; steps under 0.01 s left out): %s.' % (
        listed(module.get('steps_median_seconds') or []))
    if safety.get('steps_seconds'):
        text += ' With the safety backup: %s.' % listed(safety['steps_seconds'])
    return text


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='100M,1G,4G',
                        help='comma-separated database sizes (pg_database_size; default: 100M,1G,4G); from 2G on '
                             'one run each, module and bare pg_dump rows only, no restore')
    parser.add_argument('--repeat', type=int, default=3, help='runs per variant; the median is kept (default: 3)')
    parser.add_argument('--quick', action='store_true', help='short check: only 100M, one run per variant')
    parser.add_argument('--keep', action='store_true',
                        help='keep the PostgreSQL container (%sPID) and the work directory' % CONTAINER_PREFIX)
    parser.add_argument('--workdir', default=os.environ.get('IDP_RECOVERY_BENCH_DIR', '/var/tmp/idp-recovery-bench'),
                        help='work directory for the backup sets and dumps (default: /var/tmp/idp-recovery-bench); '
                             'what the benchmark writes there is removed at the end')
    parser.add_argument('--python', default=sys.executable,
                        help='interpreter that runs the modules (default: the one running this script)')
    parser.add_argument('--collections', default=COLLECTIONS,
                        help='directory holding ansible_collections/idp/recovery to benchmark '
                             '(default: .build/collections, a link to this tree)')
    parser.add_argument('--no-doc', action='store_true',
                        help='do not rewrite docs/performance.md (the JSON is still written)')
    parser.add_argument('--json', default=JSON_PATH, help='where to write the JSON results (default: %s)'
                        % os.path.relpath(JSON_PATH, REPO))
    parser.add_argument('--render', metavar='JSON',
                        help='only rewrite the section of docs/performance.md from saved JSON results')
    options = parser.parse_args(argv)
    if options.render:
        with open(options.render) as handle:
            update_section(DOC_KEY, render_markdown(json.load(handle)))
        log('rewrote %s from %s' % (DOC_PATH, options.render))
        return 0
    if options.quick:
        options.sizes = '100M'
        options.repeat = 1
    options.sizes = sorted(parse_size(s) for s in options.sizes.split(',') if s.strip())
    if options.repeat < 1:
        parser.error('--repeat must be at least 1')
    for tool in ('docker', 'age', 'age-keygen', 'zstd', 'gzip', 'gunzip', 'bash'):
        if shutil.which(tool) is None:
            parser.error('%s is not installed' % tool)
    if subprocess.run(['docker', 'image', 'inspect', AK.POSTGRES_IMAGE], capture_output=True,
                      check=False).returncode != 0:
        parser.error('the image %s is missing (make setup builds it)' % AK.POSTGRES_IMAGE)

    bench = AuthentikBench(options)
    facts = bench.run()
    results = {
        'facts': facts,
        'options': {'sizes': [size_label(s) for s in options.sizes], 'repeat': options.repeat,
                    'quick': options.quick, 'collections': os.path.abspath(options.collections),
                    'zstd_level': ZSTD_LEVEL, 'container_user': CONTAINER_USER},
        'goals': {'dump_vs_bare': GOAL_VS_BARE, 'dump_vs_gzip': GOAL_VS_GZIP, 'restore_time': GOAL_RESTORE,
                  'rss_mib': GOAL_RSS_MIB, 'flat_percent': FLAT_PERCENT, 'flat_mib': FLAT_MIB,
                  'goal_size_bytes': GOAL_SIZE, 'dump_vs_bare_tcp': GOAL_VS_BARE,
                  'dump_linear_percent': round(LINEAR_TOLERANCE * 100), 'big_size_bytes': BIG_SIZE},
        'sizes': bench.results,
        'verdicts': verdicts(bench.results),
    }
    os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
    with open(options.json, 'w') as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write('\n')
    if not options.no_doc:
        update_section(DOC_KEY, render_markdown(results))
    log('done in %.0f s; results in %s%s' % (facts['duration_seconds'], options.json,
                                             '' if options.no_doc else ' and ' + DOC_PATH))
    for item in results['verdicts']:
        log('%-16s %-60s %s' % (item['key'], item['shown'][:60], verdict_text(item)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
