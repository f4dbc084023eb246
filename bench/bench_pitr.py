#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Point-in-time recovery of a database of at least 1 GB against a logical restore of the same data.

A live PostgreSQL container (the local image, with pgBackRest) holds the Authentik-shaped fixture
grown with event rows to --size. It archives WAL through pgBackRest into an encrypted S3 repository
served by ``rclone serve s3`` over HTTPS on the Docker bridge (the same parts as the integration
tests). After a full backup, rows are written, the time T is noted, more rows are written, and:

* ``idp.recovery.pgbackrest_restore`` restores the backup plus WAL up to T into a new staging
  container and waits for the promoted server (run as Ansible runs a module in debug mode);
* in the same run, ``pg_restore -j2`` restores a ``pg_dump -Fc`` of the same database (taken at T's
  state) into a new database of an already running container - the plain logical restore.

Reports wall times and their ratio (medians of --runs), checks that the restored copy holds the
rows before T and none after, and writes the ``pitr`` section of docs/performance.md and
bench/results/pitr.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from perfdoc import update_section
from run import REPO, RESULTS_DIR, Bench, MiB, log, machine_facts, parse_size, size_label

sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
import authentik_support as ak  # noqa: E402  pylint: disable=wrong-import-position
import pitr_support as ps  # noqa: E402  pylint: disable=wrong-import-position

MODULES = 'ansible_collections.idp.recovery.plugins.modules.'
PREFIX = 'idp-bench-pitr-'
LIVE = PREFIX + 'live'
STAGING = PREFIX + 'staging'
LOGICAL = PREFIX + 'logical'
STANZA = 'bench'
CIPHER = 'bench-cipher-%s' % os.urandom(8).hex()
JSON_PATH = os.path.join(RESULTS_DIR, 'pitr.json')
GiB = 1024 * MiB
ROWS_BEFORE = 20000
ROWS_AFTER = 5000


class PitrBench(Bench):
    """The module runner and measurement plumbing of bench/run.py, for the pgBackRest modules."""

    def run_module(self, name, args, tag):
        sample, result = self.module(MODULES + name, args, tag)
        return sample, result


def sql(container, text):
    return ps.sql(container, text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--size', default='1G', help='database size to grow the fixture to (default 1G)')
    parser.add_argument('--runs', type=int, default=1, help='restores of each kind (default 1)')
    parser.add_argument('--workdir', default=os.path.join(REPO, '.build', 'bench-pitr'))
    parser.add_argument('--python', default=sys.executable)
    parser.add_argument('--collections', default=os.path.join(REPO, '.build', 'collections'))
    parser.add_argument('--no-doc', action='store_true', help='do not write docs/performance.md')
    options = parser.parse_args(argv)
    size = parse_size(options.size)
    bench = PitrBench(options)
    os.makedirs(bench.run_dir, exist_ok=True)
    facts = machine_facts(options.python, bench.workdir)
    ps.have_prerequisites()
    s3 = ps.TlsS3(bench.run_dir).start()
    ps.remove(LIVE, STAGING, LOGICAL)
    try:
        log('live server and fixture (%s)' % size_label(size))
        ps.start_postgres(LIVE, s3)
        ak.load_fixture(LIVE, users=5000, pad_bytes=size, user='authentik', database='authentik', timeout=3600)
        db_bytes = int(sql(LIVE, "SELECT pg_database_size('authentik')"))
        common = {'stanza': STANZA, 'container': LIVE, 'pg_user': 'authentik', 'repos': [s3.repo(CIPHER)],
                  'options': {'process-max': 2, 'start-fast': True, 'compress-type': 'zst'}}
        bench.run_module('pgbackrest_setup', common, 'setup')
        plain = {'stanza': STANZA, 'container': LIVE, 'pg_user': 'authentik'}
        bench.run_module('pgbackrest', dict(plain, command='stanza-create'), 'stanza')
        log('full backup')
        backup_sample, backup = bench.run_module('pgbackrest', dict(plain, command='backup', backup_type='full'), 'backup')

        sql(LIVE, 'CREATE TABLE bench_after_backup (id int PRIMARY KEY, at timestamptz DEFAULT now())')
        sql(LIVE, 'INSERT INTO bench_after_backup (id) SELECT g FROM generate_series(1, %d) g' % ROWS_BEFORE)
        time.sleep(1.1)
        target = sql(LIVE, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        log('logical dump of the state at T (untimed: it is the logical backup)')
        ps.docker('exec', '-u', 'postgres', LIVE, 'pg_dump', '-U', 'authentik', '-Fc', '-Z', '1', '-d', 'authentik',
                  '-f', '/tmp/bench.dump', timeout=3600)
        time.sleep(1.1)
        sql(LIVE, 'INSERT INTO bench_after_backup (id) SELECT g FROM generate_series(%d, %d) g'
            % (ROWS_BEFORE + 1, ROWS_BEFORE + ROWS_AFTER))
        ps.wait_archived(LIVE, timeout=300)

        ps.start_postgres(LOGICAL, s3)
        dump_host = os.path.join(bench.run_dir, 'bench.dump')
        ps.docker('cp', '%s:/tmp/bench.dump' % LIVE, dump_host, timeout=3600)
        ps.docker('cp', dump_host, '%s:/tmp/bench.dump' % LOGICAL, timeout=3600)
        dump_bytes = os.path.getsize(dump_host)
        os.unlink(dump_host)

        pitr_runs, logical_runs = [], []
        for index in range(options.runs):
            log('run %d: point-in-time restore' % (index + 1))
            ps.remove(STAGING)
            bench.settle()
            sample, restored = bench.run_module('pgbackrest_restore', dict(
                common, staging_container=STAGING, image=ps.IMAGE, extra_hosts={ps.S3_NAME: s3.address},
                target_type='time', target=target, ready_timeout=3600), 'restore-%d' % index)
            rows = sql(STAGING, 'SELECT count(*) FROM bench_after_backup')
            if rows != str(ROWS_BEFORE) or not restored.get('target_reached'):
                raise SystemExit('the point-in-time copy is wrong: %s rows (expected %d), %s' % (
                    rows, ROWS_BEFORE, restored.get('recovery_stop')))
            pitr_runs.append({'wall_seconds': sample['seconds'], 'restore_seconds': restored['restore_seconds'],
                              'recovery_seconds': restored['recovery_seconds'],
                              'total_seconds': restored['total_seconds'],
                              'restored_segments': restored['restored_segments'],
                              'module_rss_kib': sample['root_rss_kib']})
            ps.remove(STAGING)

            log('run %d: pg_restore -j2' % (index + 1))
            sql(LOGICAL, 'DROP DATABASE IF EXISTS restored')
            bench.settle()
            sample = bench.shell('docker exec -u postgres %s sh -c %s' % (
                LOGICAL, "'createdb -U authentik restored && pg_restore -j2 -U authentik -d restored /tmp/bench.dump'"))
            rows = ps.sql(LOGICAL, 'SELECT count(*) FROM bench_after_backup', database='restored')
            if rows != str(ROWS_BEFORE):
                raise SystemExit('the logical copy is wrong: %s rows' % rows)
            logical_runs.append({'wall_seconds': sample['seconds']})
    finally:
        ps.remove(LIVE, STAGING, LOGICAL)
        s3.stop()

    pitr_wall = statistics.median(r['wall_seconds'] for r in pitr_runs)
    pitr_total = statistics.median(r['total_seconds'] for r in pitr_runs)
    logical = statistics.median(r['wall_seconds'] for r in logical_runs)
    result = {
        'facts': facts, 'size_requested': size, 'database_bytes': db_bytes, 'dump_bytes': dump_bytes,
        'backup_seconds': backup_sample['seconds'], 'backup_label': backup.get('backup_label'),
        'pitr': pitr_runs, 'logical': logical_runs,
        'median': {'pitr_wall': pitr_wall, 'pitr_total': pitr_total, 'logical': logical,
                   'ratio_wall': pitr_wall / logical, 'ratio_total': pitr_total / logical},
        'load_average_end': ' '.join('%.2f' % x for x in os.getloadavg()),
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(JSON_PATH, 'w') as handle:
        json.dump(result, handle, indent=2)
    markdown = render(result, options.runs)
    print(markdown)
    if not options.no_doc:
        update_section('pitr', markdown)
    return 0


def render(result, runs):
    facts = result['facts']
    median = result['median']
    pitr = result['pitr'][0]
    lines = [
        '## Point-in-time recovery (pgBackRest) against a logical restore',
        '',
        'Command: `make bench BENCH=pitr` (`bench/bench_pitr.py`). %s, %s cores, %s MiB, load average %s at the start, '
        '%s at the end; median of %d run(s).' % (
            facts['date_utc'], facts['nproc'], facts['memory_mib'], facts['load_average_start'],
            result['load_average_end'], runs),
        '',
        'The database: %.2f GiB (`pg_database_size`), the Authentik-shaped fixture grown with event rows; a full '
        'backup (`pgbackrest backup --type=full`, zstd, AES-256-CBC, into `rclone serve s3` over HTTPS on the Docker '
        'bridge) took %.1f s. After it, %d rows are written, T is noted, %d more rows are written and the WAL is '
        'archived. Both restores are checked: the copy holds the %d rows before T and none after.'
        % (result['database_bytes'] / GiB, result['backup_seconds'], ROWS_BEFORE, ROWS_AFTER, ROWS_BEFORE),
        '',
        '| restore to T | wall time | of which |',
        '|---|---|---|',
        '| `idp.recovery.pgbackrest_restore` (backup + WAL to T into a new container, promoted, answering) | '
        '%.1f s | pgbackrest restore %.1f s, WAL replay to T %.1f s, %d WAL segments fetched |'
        % (median['pitr_wall'], pitr['restore_seconds'], pitr['recovery_seconds'], pitr['restored_segments']),
        '| `createdb && pg_restore -j2` of a `pg_dump -Fc -Z1` (%.0f MiB) into a running container | %.1f s | - |'
        % (result['dump_bytes'] / MiB, median['logical']),
        '',
        '**Point-in-time restore / logical restore: %.2fx** of the wall time (%.2fx counting only the module\'s own '
        'measure, from the container\'s creation to the promoted server). The logical restore does not include '
        'starting its container or taking the dump; the point-in-time restore includes starting a new container.'
        % (median['ratio_wall'], median['ratio_total']),
    ]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
