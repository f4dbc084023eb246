#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark of ory_export and ory_import against the Ory admin API stand-in under production rate limits.

Project A holds N identities (default 50,000; ``--quick``: 5,000) with password hashes, OIDC links,
TOTP, lookup secrets and WebAuthn, OAuth2 clients, the default JWK sets and relation tuples. The
stand-in enforces the rate limits Ory publishes for the Production tier (prod environment) per
bucket, as fixed one-second (burst) and one-minute (sustained) windows.

Measured, each as a separate process run exactly like Ansible runs a module in debug mode:

* ``ory_export`` of A into a backup set, then ``ory_import`` of that set into an empty project B;
* wall time against the **limit-bound minimum**: for each rate-limit bucket, the time the stand-in's
  limiter needs to accept the requests the run made in that bucket if they were sent back to back
  with no time spent on anything else (from the moment of the bucket's first request), summed over
  buckets;
* failed requests (4xx/5xx other than 429) and rate-limited ones (429);
* peak RSS (``VmHWM``) of the module's Python process and of its largest child (``zstd``, ``age``);
* the same jobs done by a plain shell pipeline (``curl`` loop that honours the rate-limit headers,
  ``zstd``, ``age``, ``jq``) against fresh projects in the same run.

Writes the ``ory`` section of docs/performance.md (through bench/perfdoc.py) and
bench/results/ory.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from perfdoc import update_section
from run import run_measured

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from ory_standin.server import minimum_duration  # noqa: E402  pylint: disable=wrong-import-position
from ory_standin.spec import load_thresholds  # noqa: E402  pylint: disable=wrong-import-position
import ory_support  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS = os.path.join(REPO, '.build', 'collections')
RESULTS = os.path.join(REPO, 'bench', 'results', 'ory.json')
MODULE = 'ansible_collections.idp.recovery.plugins.modules.%s'
GOAL_RATIO = 1.10
GOAL_RSS_MIB = 128
TIER = 'Production'

SHELL_EXPORT = r'''
set -euo pipefail
url="$BASE/admin/identities?page_size=500&include_credential=password&include_credential=oidc&include_credential=totp&include_credential=lookup_secret&include_credential=webauthn"
pages=0
while :; do
  status=$(curl -sS -o "$WORK/body" -D "$WORK/head" -w '%{http_code}' -H @"$WORK/auth" "$url")
  reset=$(tr -d '\r' < "$WORK/head" | awk -F': ' 'tolower($1)=="x-ratelimit-reset"{print $2}')
  if [ "$status" = 429 ]; then sleep "${reset:-1}"; continue; fi
  [ "$status" = 200 ] || { echo "HTTP $status" >&2; exit 1; }
  cat "$WORK/body"; echo
  pages=$((pages + 1))
  remaining=$(tr -d '\r' < "$WORK/head" | awk -F': ' 'tolower($1)=="x-ratelimit-remaining"{print $2}')
  [ "${remaining:-1}" = 0 ] && sleep "${reset:-1}"
  url=$(tr -d '\r' < "$WORK/head" | sed -n 's/^[Ll]ink: <\([^>]*\)>; rel="next".*/\1/p')
  [ -n "$url" ] || break
done | zstd -q -c | age -r "$RECIPIENT" > "$WORK/identities.pages.jsonl.zst.age"
'''

SHELL_IMPORT = r'''
set -euo pipefail
age -d -i "$IDENTITY" "$PAYLOAD" | zstd -q -d -c \
  | jq -c '. as $all | range(0; length; 1000) as $i | {identities: [$all[$i:$i+1000][] | {create: .}]}' \
  | while IFS= read -r batch; do
      while :; do
        status=$(printf '%s' "$batch" | curl -sS -o "$WORK/body" -D "$WORK/head" -w '%{http_code}' -X PATCH \
          -H @"$WORK/auth" -H 'Content-Type: application/json' --data-binary @- "$BASE/admin/identities")
        reset=$(tr -d '\r' < "$WORK/head" | awk -F': ' 'tolower($1)=="x-ratelimit-reset"{print $2}')
        if [ "$status" = 429 ]; then sleep "${reset:-1}"; continue; fi
        [ "$status" = 200 ] || { echo "HTTP $status" >&2; cat "$WORK/body" >&2; exit 1; }
        remaining=$(tr -d '\r' < "$WORK/head" | awk -F': ' 'tolower($1)=="x-ratelimit-remaining"{print $2}')
        [ "${remaining:-1}" = 0 ] && sleep "${reset:-1}"
        break
      done
    done
'''


def log(text):
    sys.stderr.write(text + '\n')
    sys.stderr.flush()


def run_module(name, args, workdir, env):
    path = os.path.join(workdir, '%s-args.json' % name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    out = os.path.join(workdir, '%s.out' % name)
    sample = run_measured([sys.executable, '-m', MODULE % name, path], env=env, stdout=out)
    with open(out) as handle:
        text = handle.read()
    sample['result'] = json.loads(text[text.index('{'):]) if '{' in text else {'failed': True, 'msg': text[-2000:]}
    return sample


def limit_minimum(stats, thresholds):
    """Sum over buckets of the limiter's minimum time for the requests the run made in it."""
    total = 0.0
    detail = {}
    for bucket, seen in sorted(stats.get('buckets', {}).items()):
        limits = thresholds.get((bucket, TIER, 'prod'))
        if not limits:
            continue
        rpm, rps = limits
        seconds = minimum_duration(seen['count'], rpm, rps, seen['first'])
        detail[bucket] = {'requests': seen['count'], 'rpm': rpm, 'rps': rps, 'minimum_seconds': round(seconds, 2),
                          'standin_busy_seconds': round(seen.get('busy_seconds', 0.0), 2)}
        total += seconds
    return total, detail


# Buckets a module writes side by side: per module, lanes that run concurrently, each lane a sequence of buckets in
# dependency order. ory_import sends the relation tuples (Keto) while the identities (Kratos) are written and the
# OAuth2 clients and JWK sets (Hydra) follow the identities; every other bucket comes one after the other.
CONCURRENT = {
    'ory_import': (('kratos-admin-low', 'hydra-admin-low'), ('keto-admin-low',)),
}


def critical_minimum(detail, name):
    """The limit-bound minimum along the critical path: the buckets of ``detail`` summed, except that the concurrent
    lanes of the module count as the longest of them (each lane its buckets' minimums summed)."""
    lanes = CONCURRENT.get(name, ())
    inside = set(b for lane in lanes for b in lane)
    serial = sum(d['minimum_seconds'] for b, d in detail.items() if b not in inside)
    longest = max([sum(detail[b]['minimum_seconds'] for b in lane if b in detail) for lane in lanes] or [0.0])
    return serial + longest


def failures(stats):
    failed = sum(n for code, n in stats['status'].items() if code.isdigit() and int(code) >= 400 and int(code) != 429)
    return failed, stats['status'].get('429', 0)


ALIGN = [True]


def align_to_minute():
    """Start 1 s after a whole minute, so that every run meets the one-minute windows in the same phase."""
    if ALIGN[0]:
        time.sleep(61.0 - (time.time() % 60.0) if time.time() % 60.0 > 1.0 else 1.0 - time.time() % 60.0)


def measure_module(label, name, args, standin, workdir, env, thresholds):
    standin.control('limits', {'tier': TIER, 'env': 'prod'})
    standin.control('reset-stats', {})
    align_to_minute()
    log('%s: running %s' % (label, name))
    sample = run_module(name, args, workdir, env)
    stats = standin.stats()
    result = sample['result']
    if result.get('failed') or sample['rc'] != 0:
        raise SystemExit('%s failed: %s' % (name, result.get('msg') or sample['stderr']))
    minimum, detail = limit_minimum(stats, thresholds)
    critical = critical_minimum(detail, name)
    failed, limited = failures(stats)
    # even a client that costs nothing waits for the limits and for the stand-in's own work, bucket by bucket
    served = sum(max(d['minimum_seconds'], d['standin_busy_seconds']) for d in detail.values())
    row = {
        'label': label,
        'seconds': round(sample['seconds'], 2),
        'minimum_seconds': round(minimum, 2),
        'ratio': round(sample['seconds'] / minimum, 2) if minimum else None,
        'critical_minimum_seconds': round(critical, 2),
        'critical_ratio': round(sample['seconds'] / critical, 2) if critical else None,
        'standin_bound_seconds': round(served, 2),
        'standin_bound_ratio': round(sample['seconds'] / served, 2) if served else None,
        'requests': stats['requests'],
        'failed_requests': failed,
        'rate_limited_requests': limited,
        'python_rss_mib': round(sample['root_rss_kib'] / 1024.0, 1),
        'child_rss_mib': round(sample['child_rss_kib'] / 1024.0, 1),
        'child_name': sample['child_name'],
        'buckets': detail,
        'standin_busy_seconds': round(sum(d['standin_busy_seconds'] for d in detail.values()), 2),
        'client_stats': (result.get('ory') or {}).get('requests') or result.get('requests'),
        'phases_seconds': result.get('phases_seconds'),
    }
    log('  %.1f s (limit-bound minimum %.1f s, %.2fx; critical path %.1f s, %.2fx), %d requests, %d failed, '
        '%d rate limited, rss %.1f MiB' % (sample['seconds'], minimum, row['ratio'] or 0, critical, row['critical_ratio'] or 0,
                                           stats['requests'], failed, limited, row['python_rss_mib']))
    return row, result


def measure_shell(label, script, standin, workdir, environment, thresholds):
    standin.control('limits', {'tier': TIER, 'env': 'prod'})
    standin.control('reset-stats', {})
    env = dict(os.environ)
    env.update(environment)
    env['BASE'] = standin.url
    env['WORK'] = workdir
    auth = os.path.join(workdir, 'auth')
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as handle:
        handle.write('Authorization: Bearer %s\n' % standin.api_key)
    log('%s: running the shell pipeline' % label)
    align_to_minute()
    started = time.perf_counter()
    proc = subprocess.run(['bash', '-c', script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit('%s shell pipeline failed: %s' % (label, proc.stderr.decode('utf-8', 'replace')[-2000:]))
    stats = standin.stats()
    minimum, _detail = limit_minimum(stats, thresholds)
    failed, limited = failures(stats)
    log('  %.1f s (limit-bound minimum %.1f s), %d requests, %d rate limited' % (seconds, minimum, stats['requests'], limited))
    return {'label': label, 'seconds': round(seconds, 2), 'minimum_seconds': round(minimum, 2),
            'ratio': round(seconds / minimum, 2) if minimum else None, 'requests': stats['requests'],
            'failed_requests': failed, 'rate_limited_requests': limited}


def markdown(data):
    lines = ['## Ory export and import', '',
             '`bench/bench_ory.py`, %s, %d identities%s. The raw numbers are in `bench/results/ory.json`.'
             % (data['date'], data['identities'], ' (`--quick`)' if data['quick'] else ''), '',
             '### Goals', '',
             '- **Rate limits, not the collection, set the pace**: export and import of %d identities against the Ory '
             'stand-in with the %s-tier limits take at most %.2fx the limit-bound minimum, with zero failed '
             'requests.' % (data['identities'], TIER, GOAL_RATIO),
             '- **Memory**: the module\'s Python process stays under %d MiB peak RSS (pages stream into `zstd | age`).'
             % GOAL_RSS_MIB, '',
             '### Summary', '',
             '| Run | Wall time | Limit-bound minimum | Ratio | Ratio goal | Critical-path minimum | Ratio to it '
             '| Stand-in-bound minimum | Ratio to it '
             '| Requests | Failed | 429 | Python peak RSS | Largest child | Memory goal |',
             '|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for row in data['module']:
        critical = row.get('critical_minimum_seconds', row['minimum_seconds'])
        cells = (
            row['label'], row['seconds'], row['minimum_seconds'], row['ratio'],
            'PASS' if row['ratio'] <= GOAL_RATIO and row['failed_requests'] == 0 else 'MISS',
            critical, row.get('critical_ratio') or (row['seconds'] / critical if critical else 0),
            row['standin_bound_seconds'], row['standin_bound_ratio'], row['requests'],
            row['failed_requests'], row['rate_limited_requests'], row['python_rss_mib'], row['child_rss_mib'],
            row['child_name'] or '-', 'PASS' if row['python_rss_mib'] <= GOAL_RSS_MIB else 'MISS')
        lines.append('| %s | %.1f s | %.1f s | %.2fx | %s | %.1f s | %.2fx | %.1f s | %.2fx | %d | %d | %d | %.1f MiB '
                     '| %.1f MiB (%s) | %s |' % cells)
    lines += ['', 'The verdict is against the summed limit-bound minimum, as the goal defines it. The critical-path '
              'minimum is the tighter lower bound of a module that writes buckets side by side (see Method); it is '
              'shown for information.', '',
              'The stand-in-bound minimum is, per bucket, the larger of the limit-bound minimum and the time the '
              'stand-in itself spent answering, summed: no client can be faster than either.', '',
              '### Against the plain shell pipeline', '',
              '| Job | Module | Shell | Module/shell time | Shell limit-bound minimum | Shell ratio |', '|---|---:|---:|---:|---:|---:|']
    for row in data['shell']:
        module = next(m for m in data['module'] if m['label'] == row['compare'])
        lines.append('| %s | %.1f s | %.1f s | %.2fx | %.1f s | %.2fx |' % (
            row['job'], module['seconds'], row['seconds'], module['seconds'] / row['seconds'], row['minimum_seconds'],
            row['ratio']))
    lines += ['', 'The shell pipelines do less than the modules: the export one writes only the raw identity pages '
              '(no import-ready files, clients, keys, tuples or metadata), the import one sends only the identities '
              '(no plan, no validation pass, no ID map, no clients, keys or tuples). Their own limit-bound minimum is '
              'computed the same way.', '',
              '### Where the time goes', '']
    for row in data['module']:
        lines.append('- %s: ' % row['label'] + '; '.join(
            '%s %d requests (%d rpm, %d rps) need %.1f s, the stand-in worked %.1f s on them'
            % (b, d['requests'], d['rpm'], d['rps'], d['minimum_seconds'], d['standin_busy_seconds'])
            for b, d in sorted(row['buckets'].items())) + '; the client waited %.1f s for rate limits and %.1f s in backoff%s.'
            % ((row['client_stats'] or {}).get('paced_seconds', 0), (row['client_stats'] or {}).get('backoff_seconds', 0),
               '; phases: ' + ', '.join('%s %.1f s' % (k, v) for k, v in sorted(row['phases_seconds'].items()))
               if row.get('phases_seconds') else ''))
    lines += ['', '### Method', '',
              '- The stand-in (`tests/ory_standin/server.py`) limits each bucket of Ory\'s published table '
              '(`x-ory-ratelimit-bucket` of the spec, thresholds of the %s tier, prod) with fixed one-second and '
              'one-minute windows aligned to the clock, and answers `x-ratelimit-remaining` / `x-ratelimit-reset` '
              '(whole seconds) and `x-ratelimit-limit` as Ory documents it (`8, 8;w=1, 175;w=60`). When nothing remains '
              'in a one-second (burst) window, the client waits until one second after the answer to the window\'s '
              'first request (the window began before that request arrived), not for the whole seconds of the reset; '
              'a spent one-minute window waits for the reset. The import sends the relation tuples (Keto bucket) while '
              'the identities are written (Kratos bucket), each tuple once the identities it names have their new '
              'IDs, and writes OAuth2 clients and JWK sets (Hydra buckets) after the identities; those phases overlap '
              'and the summed minimum counts them apart.' % TIER,
              '- %s' % ('Each run starts 1 s after a whole minute, so that module and shell meet the one-minute windows '
                        'in the same phase.' if data['aligned'] else 'Runs start whenever the previous one ended '
                        '(not aligned to the minute windows): the minimum differs from run to run.'),
              '- The limit-bound minimum replays, per bucket, the number of requests the run made in it through the '
              'same limiter with zero time per request, from the time of the bucket\'s first request, and sums the '
              'buckets (the phases run one after the other).',
              '- The critical-path minimum replays each bucket the same way, but of the buckets a module writes side '
              'by side it counts only the longest lane along the dependency order (ory_import: Kratos identity '
              'writes then Hydra clients and keys, against the Keto tuple writes) and sums the rest. It is a lower '
              'bound that ignores that the last tuples wait for the last identity batch. The verdict stays against '
              'the summed minimum, which the goal names and which is the larger (the easier) bound: a run that '
              'passes against the critical path passes against it too, not the other way round.',
              '- Password hashes are drawn from a pool of %d distinct bcrypt (cost 4) and argon2id hashes: hashing '
              'speed is not measured here.' % data['hash_pool'],
              '- Peak RSS is `VmHWM` of `/proc/<pid>/status`, polled every 50 ms for the module process and its '
              'children (`run_measured` of `bench/run.py`).',
              '- Machine: %s, Python %s; load average at the end %s (the machine is shared: the stand-in, the '
              'module and the tools compete for the same cores).'
              % (data['machine'], data['python'], ' / '.join(str(x) for x in data['load_average']))]
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description='Ory export/import benchmark against the stand-in')
    parser.add_argument('--quick', action='store_true', help='5,000 identities instead of 50,000')
    parser.add_argument('--identities', type=int)
    parser.add_argument('--hash-pool', type=int, default=256)
    parser.add_argument('--no-shell', action='store_true', help='skip the shell pipelines')
    parser.add_argument('--render', action='store_true',
                        help='only rewrite the docs/performance.md section from bench/results/ory.json')
    parser.add_argument('--no-align', action='store_true',
                        help='do not wait for a whole minute before each run (default with --quick)')
    args = parser.parse_args()
    ALIGN[0] = not (args.no_align or args.quick)
    if args.render:
        with open(RESULTS) as handle:
            update_section('ory', markdown(json.load(handle)))
        return 0
    count = args.identities or (5000 if args.quick else 50000)
    thresholds = load_thresholds()
    env = dict(os.environ)
    env['PYTHONPATH'] = COLLECTIONS
    env['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS
    env['PATH'] = '%s:%s' % (os.path.dirname(sys.executable), env.get('PATH', ''))
    work = tempfile.mkdtemp(prefix='bench-ory-')
    os.chmod(work, 0o700)
    standins = []
    try:
        identity = os.path.join(work, 'age.key')
        subprocess.run(['age-keygen', '-o', identity], check=True, stderr=subprocess.DEVNULL)
        recipient = subprocess.run(['age-keygen', '-y', identity], check=True, stdout=subprocess.PIPE).stdout.decode().strip()

        def start(**options):
            standin = ory_support.start_standin(os.path.join(work, 'standins'), validate=False, **options)
            standins.append(standin)
            return standin
        log('seeding project A with %d identities' % count)
        source = start(seed_identities=count, seed_clients=10, default_jwk_sets=True, hash_pool=args.hash_pool)
        target = start(preset='blank', default_jwk_sets=True)
        summary = source.summary()

        sys.path.insert(0, COLLECTIONS)
        from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
        set_dir = os.path.join(work, 'backups', 'ory', datetime.datetime.utcnow().strftime('%Y%m%dT%H%M%SZ'))
        _backup_set.create(set_dir, 'ory', 'ory')
        rows = []
        export_row, _result = measure_module('Export (ory_export)', 'ory_export', dict(
            set_dir=set_dir, recipients=[recipient], **source.connection(timeout=60, max_backoff=30)), source, work, env,
            thresholds)
        rows.append(export_row)
        _backup_set.finalize(set_dir)
        import_row, result = measure_module('Import (ory_import)', 'ory_import', dict(
            set_dir=set_dir, identity=identity, return_secrets=True, state_dir=os.path.join(work, 'state'),
            **target.connection(timeout=60, max_backoff=30)), target, work, env, thresholds)
        rows.append(import_row)
        landed = target.summary()
        if landed['identities'] != count or landed['tuples'] != summary['tuples']:
            raise SystemExit('the import is incomplete: %r' % landed)
        shell = []
        if not args.no_shell:
            row = measure_shell('export', SHELL_EXPORT, source, work, {'RECIPIENT': recipient}, thresholds)
            row.update(job='Export identities', compare='Export (ory_export)')
            shell.append(row)
            fresh = start(preset='sample')
            payload = os.path.join(set_dir, 'ory', 'restore', 'identities.json.zst.age')
            row = measure_shell('import', SHELL_IMPORT, fresh, work, {'IDENTITY': identity, 'PAYLOAD': payload}, thresholds)
            row.update(job='Import identities', compare='Import (ory_import)')
            shell.append(row)
            if fresh.summary()['identities'] != count:
                raise SystemExit('the shell import is incomplete')
        data = {
            'aligned': ALIGN[0],
            'load_average': [round(x, 2) for x in os.getloadavg()],
            'date': datetime.datetime.utcnow().replace(microsecond=0).isoformat() + 'Z',
            'identities': count,
            'quick': bool(args.quick),
            'hash_pool': args.hash_pool,
            'tier': TIER,
            'source': summary,
            'module': rows,
            'shell': shell,
            'goals': {'ratio': GOAL_RATIO, 'rss_mib': GOAL_RSS_MIB},
            'machine': '%s, %d cores' % (platform.machine(), os.cpu_count() or 0),
            'python': platform.python_version(),
        }
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, 'w') as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        update_section('ory', markdown(data))
        log('wrote docs/performance.md (section ory) and %s' % os.path.relpath(RESULTS, REPO))
    finally:
        for standin in standins:
            standin.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
