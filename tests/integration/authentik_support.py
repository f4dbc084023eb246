#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Authentik test fixture: an Authentik-shaped PostgreSQL database, the files of an
Authentik installation (data/media, custom templates, certificates, blueprints), its `.env`,
and containers for PostgreSQL and the authentik-server / authentik-worker stand-ins.

Used by the integration tests (``import authentik_support``) and, as a command, by the
Molecule scenario ``authentik``::

    authentik_support.py load CONTAINER [--users N] [--version V] [--pad-bytes B]
    authentik_support.py counts CONTAINER            # exact row counts as JSON
    authentik_support.py files COMPOSE_DIR           # sample files, one directory per mount
    authentik_support.py env PATH [--pg-pass-env VAR]  # a .env with random secrets (0600)
    authentik_support.py snapshot DIR                # names, modes and digests as JSON

Only the standard library and the docker CLI are used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE_DIR = ROOT / 'tests' / 'fixtures' / 'authentik'
SCHEMA_SQL = FIXTURE_DIR / 'schema.sql'
SEED_SQL = FIXTURE_DIR / 'seed.sql'

VERSION = '2025.10.1'
USERS = 3000
DB_USER = 'authentik'
DB_NAME = 'authentik'
POSTGRES_IMAGE = os.environ.get('IDP_AUTHENTIK_POSTGRES_IMAGE', 'idp-recovery/postgres:15')
SERVER_IMAGE = os.environ.get('IDP_AUTHENTIK_SERVER_IMAGE', 'idp-recovery/authentik-standin:%s' % VERSION)
WORKER_IMAGE = os.environ.get('IDP_AUTHENTIK_WORKER_IMAGE', SERVER_IMAGE)
STANDIN_REPO = 'idp-recovery/authentik-standin'
STANDIN_LABEL = 'org.idp-recovery.standin'

# (name in a backup set, directory below the compose directory, path in the worker container),
# the layout of Authentik 2025.12 and later (media below ./data/media).
FILE_MOUNTS = (
    ('data', 'data', '/data'),
    ('custom-templates', 'custom-templates', '/templates'),
    ('certs', 'certs', '/certs'),
    ('blueprints', 'blueprints', '/blueprints'),
)
# The tables of the fixture and the schemas they are in (schema.sql).
KEY_TABLES = (
    'authentik_core_user', 'authentik_core_group', 'authentik_core_user_groups',
    'authentik_core_application', 'authentik_core_token', 'authentik_flows_flow',
    'authentik_outposts_outpost', 'authentik_brands_brand', 'authentik_crypto_certificatekeypair',
    'authentik_version_history', 'django_migrations',
)
TENANT_SCHEMA = 't_acme'

COUNTS_SQL = """
SELECT coalesce(json_object_agg(name, rows ORDER BY name), '{}')
FROM (
    SELECT format('%s.%s', n.nspname, c.relname) AS name,
           (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname),
                                                false, true, '')))[1]::text::bigint AS rows
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
) AS t
"""


class FixtureError(Exception):
    """A fixture step failed; the message says which and why."""


def _run(argv, stdin=None, timeout=600, check=True):
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FixtureError('%s timed out after %s s' % (' '.join(argv[:4]), timeout)) from exc
    if check and proc.returncode != 0:
        raise FixtureError('%s failed (exit %d): %s' % (
            ' '.join(argv[:4]), proc.returncode, proc.stderr.decode('utf-8', 'replace').strip()))
    return proc


# Database -----------------------------------------------------------------------------------

def psql(container, sql, database=DB_NAME, user=DB_USER, variables=None, timeout=600):
    """Run SQL with psql inside ``container`` (ON_ERROR_STOP, one transaction); return stdout."""
    argv = ['docker', 'exec', '-i', container, 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
            '--single-transaction', '-U', user, '-d', database]
    for key, value in sorted((variables or {}).items()):
        argv += ['-v', '%s=%s' % (key, value)]
    argv += ['-f', '-']
    data = sql if isinstance(sql, bytes) else sql.encode('utf-8')
    return _run(argv, stdin=data, timeout=timeout).stdout.decode('utf-8')


def load_fixture(container, users=USERS, version=VERSION, database=DB_NAME, user=DB_USER,
                 pad_bytes=0, tenant_users=None, events=None, build=None, timeout=1800):
    """Create the Authentik-shaped schema in an empty database and fill it (deterministic).

    ``pad_bytes`` grows the database to at least that size with event rows (benchmarks).
    Returns the exact row counts per table (``schema.table``)."""
    variables = {'users': int(users), 'version': version, 'pad_bytes': int(pad_bytes)}
    if tenant_users is not None:
        variables['tenant_users'] = int(tenant_users)
    if events is not None:
        variables['events'] = int(events)
    if build is not None:
        variables['build'] = build
    sql = SCHEMA_SQL.read_bytes() + b'\n' + SEED_SQL.read_bytes()
    psql(container, sql, database=database, user=user, variables=variables, timeout=timeout)
    return table_counts(container, database=database, user=user)


def table_counts(container, database=DB_NAME, user=DB_USER):
    """Exact row counts of every table outside the system schemas, as {"schema.table": rows}."""
    return json.loads(psql(container, COUNTS_SQL, database=database, user=user))


def newest_version(container, database=DB_NAME, user=DB_USER):
    """(version, build) of the newest authentik_version_history row."""
    out = psql(container, 'SELECT version, build FROM authentik_version_history ORDER BY "timestamp" DESC, id DESC '
               'LIMIT 1', database=database, user=user).strip()
    version, _sep, build = out.partition('|')
    return version, build


def migration_heads(container, database=DB_NAME, user=DB_USER):
    """{app: newest migration name} from public.django_migrations."""
    out = psql(container, "SELECT coalesce(json_object_agg(app, head), '{}') FROM "
               '(SELECT app, max(name) AS head FROM django_migrations GROUP BY app) AS h',
               database=database, user=user)
    return json.loads(out)


# Files --------------------------------------------------------------------------------------

def _pseudo_random(seed, size):
    """Deterministic bytes that do not compress."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(('%s/%d' % (seed, counter)).encode()).digest()
        counter += 1
    return bytes(out[:size])


def _write(path, data, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode('utf-8'))
    path.chmod(mode)


def make_files(compose_dir):
    """The files an Authentik installation keeps beside its database, below ``compose_dir``
    (one directory per mount, FILE_MOUNTS). Returns {set name: host directory}."""
    compose_dir = Path(compose_dir)
    data = compose_dir / 'data'
    media = data / 'media'
    for n in range(1, 13):
        _write(media / 'application-icons' / ('app-%d.svg' % (2 * n)),
               '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><title>app %d</title></svg>\n' % n)
    for n in (3, 6, 9):
        _write(media / 'flow-backgrounds' / ('flow-%d.jpg' % n), _pseudo_random('background-%d' % n, 96 * 1024))
    _write(media / 'public' / 'acme-logo.svg', '<svg xmlns="http://www.w3.org/2000/svg"/>\n')
    _write(media / 'public' / 'acme.ico', _pseudo_random('favicon', 4096))
    _write(media / 'public' / 'logo ünïcödé.svg', '<svg xmlns="http://www.w3.org/2000/svg"><title>✓</title></svg>\n')
    (media / 'source-icons').mkdir(parents=True, exist_ok=True)
    link = media / 'brand-logo.svg'
    if not link.is_symlink():
        os.symlink('public/acme-logo.svg', str(link))

    templates = compose_dir / 'custom-templates'
    _write(templates / 'email' / 'password_reset.html',
           '{% extends "email/base.html" %}\n{% block content %}Reset your ACME password.{% endblock %}\n')
    _write(templates / 'if' / 'flow.html', '{% extends "base/skeleton.html" %}\n{% block head %}{% endblock %}\n')

    certs = compose_dir / 'certs'
    _write(certs / 'auth.acme.example' / 'fullchain.pem',
           '-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n'
           % hashlib.sha512(b'fullchain').hexdigest())
    _write(certs / 'auth.acme.example' / 'privkey.pem',
           '-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n'
           % hashlib.sha512(b'privkey').hexdigest(), mode=0o600)

    blueprints = compose_dir / 'blueprints'
    _write(blueprints / 'custom' / 'acme-groups.yaml',
           'version: 1\nmetadata:\n  name: ACME groups\nentries:\n'
           '  - model: authentik_core.group\n    identifiers:\n      name: acme-admins\n'
           '    attrs:\n      is_superuser: true\n')
    for directory in (data, media, templates, certs, blueprints):
        directory.chmod(0o755)
    certs.chmod(0o750)
    return {name: str(compose_dir / subdir) for name, subdir, _mount in FILE_MOUNTS}


def write_env(path, pg_pass=None, secret_key=None):
    """An Authentik .env (mode 0600) with random PG_PASS and AUTHENTIK_SECRET_KEY unless given.
    Returns the values written."""
    values = {
        'PG_PASS': pg_pass or secrets.token_urlsafe(36),
        'AUTHENTIK_SECRET_KEY': secret_key or secrets.token_urlsafe(60),
        'AUTHENTIK_ERROR_REPORTING__ENABLED': 'false',
        'COMPOSE_PORT_HTTP': '9000',
        'COMPOSE_PORT_HTTPS': '9443',
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(''.join('%s=%s\n' % item for item in values.items()))
    path.chmod(0o600)
    return values


def snapshot(root):
    """Names, types, modes, sizes, digests and link targets of a tree: what a restore of the
    files must give back. {relative path: [type, mode or target, size, sha256]}."""
    root = Path(root)
    entries = {}
    for current, dirs, files in os.walk(str(root)):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(current, name)
            rel = os.path.relpath(full, str(root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ['l', os.readlink(full)]
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ['d', oct(stat.S_IMODE(st.st_mode))]
            else:
                with open(full, 'rb') as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                entries[rel] = ['f', oct(stat.S_IMODE(st.st_mode)), st.st_size, digest]
    return entries


# Containers ---------------------------------------------------------------------------------

def container_ip(container, network=None):
    """The container's address on ``network`` (default: its first network)."""
    out = _run(['docker', 'inspect', '-f', '{{ json .NetworkSettings.Networks }}', container]).stdout
    networks = json.loads(out)
    if network is None:
        network = sorted(networks)[0]
    return networks[network]['IPAddress']


def wait_for_postgres(container, timeout=90):
    """Wait until PostgreSQL in ``container`` accepts TCP connections."""
    deadline = time.monotonic() + timeout
    while True:
        proc = _run(['docker', 'exec', container, 'pg_isready', '-q', '-h', '127.0.0.1', '-t', '2'], check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise FixtureError('PostgreSQL in %s is not ready after %s s' % (container, timeout))
        time.sleep(0.5)


def run_postgres(name, password, network=None, image=POSTGRES_IMAGE, user=DB_USER, database=DB_NAME,
                 labels=None):
    """Start an Authentik-style PostgreSQL container (data on tmpfs) and wait until it is ready."""
    argv = ['docker', 'run', '-d', '--name', name, '--hostname', name,
            '-e', 'POSTGRES_USER=%s' % user, '-e', 'POSTGRES_DB=%s' % database,
            '-e', 'POSTGRES_PASSWORD', '--tmpfs', '/var/lib/postgresql/data']
    if network:
        argv += ['--network', network]
    for key, value in sorted((labels or {}).items()):
        argv += ['--label', '%s=%s' % (key, value)]
    argv.append(image)
    env = dict(os.environ, POSTGRES_PASSWORD=password)
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise FixtureError('docker run %s failed: %s' % (name, proc.stderr.decode('utf-8', 'replace').strip()))
    wait_for_postgres(name)
    return name


def run_standin(name, mode, db_host, password, network, image=None, user=DB_USER, database=DB_NAME,
                volumes=(), labels=None, environment=None):
    """Start an authentik-server (mode ``server``) or authentik-worker (``worker``) container:
    the stand-in image by default, or a real Authentik image given as ``image``.
    ``volumes`` are docker ``-v`` strings (host:container); ``environment`` more variables
    (such as the stand-in's test knob AUTHENTIK_STANDIN_UNREADY_SQL)."""
    if mode not in ('server', 'worker'):
        raise FixtureError('mode must be server or worker, not %r' % (mode,))
    image = image or (SERVER_IMAGE if mode == 'server' else WORKER_IMAGE)
    argv = ['docker', 'run', '-d', '--name', name, '--hostname', name, '--network', network,
            '-e', 'AUTHENTIK_POSTGRESQL__HOST=%s' % db_host,
            '-e', 'AUTHENTIK_POSTGRESQL__NAME=%s' % database,
            '-e', 'AUTHENTIK_POSTGRESQL__USER=%s' % user,
            '-e', 'AUTHENTIK_POSTGRESQL__PASSWORD']
    for volume in volumes:
        argv += ['-v', volume]
    for key, value in sorted((labels or {}).items()):
        argv += ['--label', '%s=%s' % (key, value)]
    for key, value in sorted((environment or {}).items()):
        argv += ['-e', '%s=%s' % (key, value)]
    argv += [image, mode]
    env = dict(os.environ, AUTHENTIK_POSTGRESQL__PASSWORD=password)
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise FixtureError('docker run %s failed: %s' % (name, proc.stderr.decode('utf-8', 'replace').strip()))
    return name


def health(url, timeout=5):
    """HTTP status of a health endpoint (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec - a test URL
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_ready(server, network=None, timeout=120, path='/-/health/ready/'):
    """Wait until the server container answers 200 on its readiness endpoint; return the URL."""
    url = 'http://%s:9000%s' % (container_ip(server, network), path)
    deadline = time.monotonic() + timeout
    while health(url) != 200:
        state = _run(['docker', 'inspect', '-f', '{{ .State.Status }}', server], check=False).stdout.decode().strip()
        if state != 'running' or time.monotonic() > deadline:
            logs = _run(['docker', 'logs', '--tail', '20', server], check=False)
            raise FixtureError('%s is not ready (container %s, waited up to %s s): %s' % (
                url, state or 'missing', timeout, (logs.stdout + logs.stderr).decode('utf-8', 'replace').strip()))
        time.sleep(0.5)
    return url


def ensure_standin_image(version=VERSION, timeout=900):
    """Build the stand-in image unless it is current (tests/images/build.sh --if-needed): its
    recipe label covers the Dockerfile, the script and the base image, so a changed stand-in is
    rebuilt, and an image already in place costs one ``docker image inspect``. A real Authentik
    image given by IDP_AUTHENTIK_SERVER_IMAGE is left alone."""
    if SERVER_IMAGE != '%s:%s' % (STANDIN_REPO, version):
        return
    _run([str(ROOT / 'tests' / 'images' / 'build.sh'), '--if-needed', 'authentik-standin',
          '--authentik-version', version], timeout=timeout)


def remove_containers(*names):
    """Remove containers (and their anonymous volumes); missing ones are fine."""
    if names:
        _run(['docker', 'rm', '-f', '-v'] + list(names), check=False)


# Command line -------------------------------------------------------------------------------

def pids_in_container(container, pattern):
    """Host PIDs of the processes matching pattern that run in the container (and nowhere else)."""
    container_id = subprocess.run(['docker', 'inspect', '-f', '{{.Id}}', container], capture_output=True,
                                  check=True).stdout.decode().strip()
    found = subprocess.run(['pgrep', '-f', pattern], capture_output=True, check=False).stdout.decode().split()
    mine = []
    for pid in found:
        try:
            with open('/proc/%s/cgroup' % pid, encoding='utf-8') as handle:
                if container_id in handle.read():
                    mine.append(pid)
        except OSError:
            pass
    return mine


def run_killing_in_container(command, container, pattern, timeout=300):
    """Run a module command (argv, env, cwd as module_runner.command gives them) and SIGKILL the first
    process matching pattern inside the container while it runs - a real fault, only in that container.
    Returns (the module's JSON result, the PIDs killed)."""
    argv, env, directory = command
    proc = subprocess.Popen(argv, env=env, cwd=str(directory), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = []

    def kill_first():
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            pids = pids_in_container(container, pattern)
            if pids:
                subprocess.run(['kill', '-9'] + pids, check=False)
                killed.extend(pids)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first)
    killer.start()
    out, _err = proc.communicate(timeout=timeout)
    killer.join()
    return json.loads(out.decode().strip().splitlines()[-1]), killed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    sub = parser.add_subparsers(dest='command', required=True)
    load = sub.add_parser('load', help='create and fill the Authentik-shaped database')
    load.add_argument('container')
    load.add_argument('--users', type=int, default=USERS)
    load.add_argument('--tenant-users', type=int)
    load.add_argument('--version', default=VERSION)
    load.add_argument('--pad-bytes', type=int, default=0)
    load.add_argument('--database', default=DB_NAME)
    load.add_argument('--user', default=DB_USER)
    counts = sub.add_parser('counts', help='exact row counts of every table as JSON')
    counts.add_argument('container')
    counts.add_argument('--database', default=DB_NAME)
    counts.add_argument('--user', default=DB_USER)
    files = sub.add_parser('files', help='sample files of an Authentik installation')
    files.add_argument('compose_dir')
    env = sub.add_parser('env', help='an .env with random secrets (0600)')
    env.add_argument('path')
    env.add_argument('--pg-pass-env', metavar='VAR',
                     help='take PG_PASS from this environment variable instead of a random one')
    snap = sub.add_parser('snapshot', help='names, modes and digests of a tree as JSON')
    snap.add_argument('root')
    args = parser.parse_args(argv)

    try:
        if args.command == 'load':
            result = load_fixture(args.container, users=args.users, version=args.version, database=args.database,
                                  user=args.user, pad_bytes=args.pad_bytes, tenant_users=args.tenant_users)
        elif args.command == 'counts':
            result = table_counts(args.container, database=args.database, user=args.user)
        elif args.command == 'files':
            result = make_files(args.compose_dir)
        elif args.command == 'env':
            pg_pass = None
            if args.pg_pass_env:
                pg_pass = os.environ.get(args.pg_pass_env)
                if not pg_pass:
                    raise FixtureError('the environment variable %s is empty or not set' % args.pg_pass_env)
            write_env(args.path, pg_pass=pg_pass)
            result = {'path': args.path}
        else:
            result = snapshot(args.root)
    except (FixtureError, OSError) as exc:
        print('authentik_support: %s' % exc, file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
