# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""postgres_dump and authentik_dump while the database is being written to.

A writer (a psql process of its own in the source container, driven by a thread) commits many
small transactions - inserts, deletes and updates in several tables, one of them large enough
that the dump takes a while - before, during and after each dump. Every writer transaction
stamps the rows it inserts with its number, so the newest stamp visible in each table tells
which transactions a copy of the database contains.

Each case restores the set into a fresh database (postgres_restore, authentik_restore) of another
container and checks that:

* the writer committed transactions while ``pg_dump`` was connected (the writer reads
  ``pg_stat_activity`` in each of its transactions), and the live row counts afterwards differ
  from the recorded ones: counts taken outside the dump's snapshot could not match;
* every restored table has exactly the row count recorded in the set's metadata;
* every written table of the restored database shows the same newest writer transaction, i.e. all
  tables come from one instant.

With ``snapshot`` (the caller's exported snapshot) the test itself holds that snapshot in a
REPEATABLE READ transaction while the module dumps, and additionally checks that:

* the recorded counts equal ``count(*)`` of every table in that snapshot;
* the restored data equals ``pg_dump --snapshot=<the same>`` taken by the test (data-only; rows
  sorted per table). Sequence values are left out of that comparison: PostgreSQL sequences are
  not transactional, pg_dump records the value it reads, which is at or after the snapshot. The
  test checks instead that every restored sequence is at or beyond its column's highest value.

Without ``snapshot`` the module exports a snapshot of its own, which nobody outside the module can
use once it has finished; the same code then dumps and counts, so the checks above without the
comparison dump apply.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import threading
import time
import uuid

import pytest

import authentik_support as ak
import recovery_support as rs

PREFIX = 'idp-test-load-%s' % uuid.uuid4().hex[:6]
PASSWORD = 'load-%s' % uuid.uuid4().hex[:8]
DATABASE = 'billing'
# large enough that pg_dump of this table runs for a while
ENTRIES = 100000
AUTHENTIK_EVENTS = 40000
# writer transactions are numbered across every writer of the run (the sources outlive one case)
_TRANSACTION_NUMBERS = itertools.count(1)
# the writer must have committed at least this many transactions while pg_dump was connected
MIN_DURING_DUMP = 5
GENERIC_SCHEMA = """
CREATE TABLE public.plan (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.customer (id serial PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL DEFAULT 0,
                              writer_txn int);
CREATE SCHEMA ledger;
CREATE TABLE ledger.entry (id bigserial PRIMARY KEY, customer integer NOT NULL REFERENCES public.customer(id),
                           cents bigint NOT NULL, memo text, writer_txn int);
CREATE INDEX entry_customer ON ledger.entry (customer);
CREATE SCHEMA audit;
CREATE TABLE audit.event (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, what text NOT NULL, writer_txn int);
INSERT INTO public.plan SELECT n, 'plan ' || n FROM generate_series(1, 5) AS n;
INSERT INTO public.customer (name) SELECT 'customer ' || n FROM generate_series(1, 250) AS n;
INSERT INTO ledger.entry (customer, cents, memo)
  SELECT 1 + n %% 250, n * 7, md5(n::text) || md5((n * 3)::text) FROM generate_series(1, %d) AS n;
INSERT INTO audit.event (what) SELECT 'seed ' || n FROM generate_series(1, 1000) AS n;
""" % ENTRIES


def _generic_transaction(n):
    """One writer transaction in the generic database: every written table grows by one row."""
    return """
INSERT INTO public.customer (name, writer_txn) VALUES ('load {n} a', {n}), ('load {n} b', {n});
DELETE FROM public.customer WHERE id = (SELECT min(id) FROM public.customer WHERE writer_txn IS NOT NULL);
UPDATE public.customer SET balance = balance + {n} WHERE id = 1 + {n} % 250;
INSERT INTO ledger.entry (customer, cents, memo, writer_txn)
  SELECT 1 + ({n} * 3 + k) % 250, {n} * 100 + k, md5('{n}/' || k), {n} FROM generate_series(1, 3) AS k;
DELETE FROM ledger.entry WHERE id IN (SELECT id FROM ledger.entry ORDER BY id LIMIT 2);
INSERT INTO audit.event (what, writer_txn) VALUES ('txn {n} a', {n}), ('txn {n} b', {n});
DELETE FROM audit.event WHERE id = (SELECT min(id) FROM audit.event);
""".format(n=n)


GENERIC_WRITTEN = {
    'public.customer': 'SELECT max(writer_txn) FROM public.customer',
    'ledger.entry': 'SELECT max(writer_txn) FROM ledger.entry',
    'audit.event': 'SELECT max(writer_txn) FROM audit.event',
}
GENERIC_SEQUENCES = (('public.customer', 'id'), ('ledger.entry', 'id'), ('audit.event', 'id'))

_NEW_USER = """
INSERT INTO {table} (password, username, name, is_active, date_joined, uuid, email, attributes, path, type,
                     password_change_date, last_updated)
  SELECT 'x', 'load-{n}-' || k, 'Load {n}', true, now(), gen_random_uuid(), 'load@example.org',
         jsonb_build_object('writer_txn', {n}), 'users', 'internal', now(), now()
  FROM generate_series(1, 2) AS k;
DELETE FROM {table} WHERE id = (SELECT min(id) FROM {table} WHERE username LIKE 'load-%');
"""


def _authentik_transaction(n):
    """One writer transaction in the Authentik database: every written table grows by one row."""
    return (_NEW_USER.format(table='public.authentik_core_user', n=n) + _NEW_USER.format(table='t_acme.authentik_core_user', n=n) + """
UPDATE public.authentik_core_user SET last_login = now() WHERE id = 1 + {n} % 300;
INSERT INTO public.authentik_events_event (event_uuid, "user", action, app, context, client_ip, created, expires, brand)
  SELECT gen_random_uuid(), '{{}}', 'load', 'writer', jsonb_build_object('writer_txn', {n}, 'k', k), '10.0.0.2',
         now(), now() + interval '1 day', '{{}}' FROM generate_series(1, 3) AS k;
DELETE FROM public.authentik_events_event
 WHERE event_uuid IN (SELECT event_uuid FROM public.authentik_events_event ORDER BY created, event_uuid LIMIT 2);
""".format(n=n))


AUTHENTIK_WRITTEN = {
    'public.authentik_core_user': "SELECT max((attributes->>'writer_txn')::int) FROM public.authentik_core_user",
    't_acme.authentik_core_user': "SELECT max((attributes->>'writer_txn')::int) FROM t_acme.authentik_core_user",
    'public.authentik_events_event': "SELECT max((context->>'writer_txn')::int) FROM public.authentik_events_event "
                                     "WHERE app = 'writer'",
}
AUTHENTIK_SEQUENCES = (('public.authentik_core_user', 'id'), ('t_acme.authentik_core_user', 'id'))


# ---------------------------------------------------------------------------------------------
# psql processes of the test's own (never the collection's code)

class Session(object):
    """One psql connection kept open (psql in the container); ``query`` returns the output lines of one statement."""

    def __init__(self, container, database, user):
        self.marker = '__test_%s__' % uuid.uuid4().hex
        argv = ['docker', 'exec', '-i', container, 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
                '-U', user, '-d', database]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)

    def query(self, sql):
        self.proc.stdin.write('%s;\n\\echo %s\n' % (sql.strip().rstrip(';'), self.marker))
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError('psql ended: %s' % self.proc.stderr.read())
            if line.rstrip('\n') == self.marker:
                return lines
            lines.append(line.rstrip('\n'))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class HeldSnapshot(Session):
    """A REPEATABLE READ transaction of the test that exports its snapshot and keeps it open."""

    def __init__(self, container, database, user):
        super(HeldSnapshot, self).__init__(container, database, user)
        self.query('BEGIN ISOLATION LEVEL REPEATABLE READ')
        self.id = self.query('SELECT pg_export_snapshot()')[0]

    def one(self, sql):
        return self.query(sql)[0]

    def counts(self):
        return json.loads(self.one(ak.COUNTS_SQL.strip()))

    def close(self):
        if self.proc.poll() is None:
            self.query('ROLLBACK')
        super(HeldSnapshot, self).close()


class Writer(object):
    """Commits small transactions on a psql connection of its own until stopped.

    Each transaction also reads whether a pg_dump of the collection is connected; ``commits``
    holds (transaction number, pg_dump connections) for every committed transaction.
    """

    def __init__(self, container, database, user, transaction, pause=0.004):
        self.session = Session(container, database, user)
        self.transaction = transaction
        self.pause = pause
        self.commits = []
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='writer', daemon=True)

    def start(self, warm_up=20):
        self._thread.start()
        deadline = time.monotonic() + 60
        while len(self.commits) < warm_up and self.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.error is None, self.error
        assert len(self.commits) >= warm_up, 'the writer did not get going'
        return self

    def _run(self):
        try:
            while not self._stop.is_set():
                n = next(_TRANSACTION_NUMBERS)
                out = self.session.query(
                    'BEGIN;\n%s\nSELECT count(*) FROM pg_stat_activity '
                    "WHERE application_name = 'idp-recovery-pg_dump';\nCOMMIT;" % self.transaction(n).strip())
                self.commits.append((n, int(out[-1])))
                time.sleep(self.pause)
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self.error = '%s: %s' % (type(exc).__name__, exc)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=60)
        self.session.close()
        assert self.error is None, 'the writer failed: %s' % self.error
        return self

    def during_dump(self):
        """Transactions committed while pg_dump was connected."""
        return [n for n, dumping in self.commits if dumping]


# ---------------------------------------------------------------------------------------------
# what a database holds

def _sql(container, sql, database, user):
    return ak.psql(container, sql, database=database, user=user).strip()


def newest_writer_txn(container, database, user, written):
    """{table: newest writer transaction visible in it}."""
    return dict((table, int(_sql(container, query, database, user) or 0)) for table, query in written.items())


def data_digest(container, database, user, snapshot=None):
    """pg_dump --data-only of a database (of ``snapshot`` when given): {table: [rows, sha256 of its sorted rows]}.

    The rows of each table are sorted (a restore need not keep their physical order); sequence
    values are not data of a snapshot and are left out.
    """
    argv = ['docker', 'exec', container, 'pg_dump', '--data-only', '--format=plain', '-U', user, '-d', database]
    if snapshot:
        argv.append('--snapshot=%s' % snapshot)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tables = {}
    current = None
    rows = []
    for line in proc.stdout:
        if current is None:
            if line.startswith(b'COPY '):
                current = line.split(b' ', 2)[1].decode('utf-8')
                rows = []
            continue
        if line == b'\\.\n':
            digest = hashlib.sha256(b''.join(sorted(rows))).hexdigest()
            tables[current] = [len(rows), digest]
            current = None
        else:
            rows.append(line)
    err = proc.stderr.read().decode('utf-8', 'replace')
    assert proc.wait() == 0, 'pg_dump of %s in %s failed: %s' % (database, container, err)
    return tables


def sequences_ahead(container, database, user, columns):
    """{table.column: whether its sequence is at or beyond the column's highest value}."""
    found = {}
    for table, column in columns:
        found['%s.%s' % (table, column)] = _sql(container, (
            "SELECT (SELECT last_value FROM {seq}) >= coalesce((SELECT max({col}) FROM {table}), 0)"
        ).format(seq=_sql(container, "SELECT pg_get_serial_sequence('%s', '%s')" % (table, column), database, user),
                 col=column, table=table), database, user) == 't'
    return found


# ---------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('under-load')


@pytest.fixture(scope='module')
def generic_source():
    """PostgreSQL 15 with the database billing: three written tables (one large) and one never written."""
    name = PREFIX + '-pg'
    try:
        ak.run_postgres(name, PASSWORD, user='postgres', database='postgres')
        subprocess.run(['docker', 'exec', name, 'createdb', '-U', 'postgres', DATABASE], check=True, capture_output=True)
        ak.psql(name, GENERIC_SCHEMA, database=DATABASE, user='postgres')
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def authentik_source():
    """PostgreSQL 15 with the Authentik-shaped database and many event rows."""
    name = PREFIX + '-ak'
    try:
        ak.run_postgres(name, PASSWORD)
        ak.load_fixture(name, users=300, events=AUTHENTIK_EVENTS)
        yield name
    finally:
        ak.remove_containers(name)


@pytest.fixture(scope='module')
def target():
    """A fresh PostgreSQL 15 server every case restores into (a database of its own each)."""
    name = PREFIX + '-target'
    try:
        ak.run_postgres(name, PASSWORD, user='postgres', database='postgres')
        yield name
    finally:
        ak.remove_containers(name)


class Case(object):
    """One dump module, its source database and how to restore its set."""

    def __init__(self, module, container, database, user, transaction, written, sequences, section):
        self.module = module
        self.container = container
        self.database = database
        self.user = user
        self.transaction = transaction
        self.written = written
        self.sequences = sequences
        self.section = section

    def writer(self):
        return Writer(self.container, self.database, self.user, self.transaction)

    def hold_snapshot(self):
        return HeldSnapshot(self.container, self.database, self.user)

    def dump_args(self, set_dir, keys):
        return dict(set_dir=set_dir, container=self.container, user=self.user, database=self.database,
                    recipients=[keys.age_recipient])

    def restore(self, run_module, set_dir, container, database, keys):
        args = dict(set_dir=set_dir, container=container, database=database, user='postgres',
                    identity=str(keys.age_identity), app_containers=[], safety_backup=False)
        if self.module == 'authentik_dump':
            args.update(restore_files=False, target_version=ak.VERSION, health_url='')
            return run_module('authentik_restore', **args)
        return run_module('postgres_restore', **args)


@pytest.fixture(params=['postgres_dump', 'authentik_dump'])
def case(request):
    if request.param == 'postgres_dump':
        source = request.getfixturevalue('generic_source')
        return Case('postgres_dump', source, DATABASE, 'postgres', _generic_transaction, GENERIC_WRITTEN,
                    GENERIC_SEQUENCES, 'postgres')
    source = request.getfixturevalue('authentik_source')
    return Case('authentik_dump', source, ak.DB_NAME, ak.DB_USER, _authentik_transaction, AUTHENTIK_WRITTEN,
                AUTHENTIK_SEQUENCES, 'authentik')


def _open_set(run_module, workdir, case):
    root = workdir / ('backups-%s' % uuid.uuid4().hex[:8])
    opened = run_module('backup_set', root=str(root), service=case.section, kind=case.section, state='present')
    assert opened.get('failed') is not True, opened
    return opened['path']


def _recorded(run_module, set_dir, case):
    """Finalize the set; the database facts its metadata.json records."""
    finalized = run_module('backup_set', path=set_dir, state='finalized')
    assert finalized.get('failed') is not True, finalized
    with open(set_dir + '/metadata.json', encoding='utf-8') as handle:
        return json.load(handle)[case.section]['database']


def _check_overlap_and_restore(run_module, case, writer, started, set_dir, recorded, target, keys, database):
    """The checks of every case; returns the restored database's newest writer transactions.

    started: the newest writer transaction committed before the dump module was started.
    """
    during = writer.during_dump()
    assert len(during) >= MIN_DURING_DUMP, (
        'the writer committed only %d transactions while pg_dump ran (of %d)' % (len(during), len(writer.commits)))
    live = ak.table_counts(case.container, database=case.database, user=case.user)
    changed = sorted(table for table in case.written if live[table] != recorded['tables'][table])
    assert changed == sorted(case.written), (
        'the writer did not change the counts of %s after the snapshot: live %s, recorded %s'
        % (sorted(set(case.written) - set(changed)), live, recorded['tables']))

    restored = case.restore(run_module, set_dir, target, database, keys)
    assert restored.get('failed') is not True, restored.get('msg')
    assert restored['tables']['mismatched'] == [], restored['tables']
    counts = ak.table_counts(target, database=database, user='postgres')
    assert counts == recorded['tables']
    assert recorded['rows_total'] == sum(counts.values())

    newest = newest_writer_txn(target, database, 'postgres', case.written)
    assert len(set(newest.values())) == 1, 'the restored tables are not of one instant: %s' % newest
    # everything committed before the module started is in the dump, nothing committed while pg_dump ran
    assert started <= list(newest.values())[0] < min(during), (
        'the dump holds writer transaction %s: not between %s (committed before the dump) and %s (while pg_dump ran)'
        % (newest, started, min(during)))
    assert all(sequences_ahead(target, database, 'postgres', case.sequences).values())
    return newest


# ---------------------------------------------------------------------------------------------
# the cases

def test_dump_of_its_own_snapshot_under_load(run_module, case, target, keys, workdir):
    set_dir = _open_set(run_module, workdir, case)
    writer = case.writer().start()
    try:
        started = writer.commits[-1][0]
        dumped = run_module(case.module, **case.dump_args(set_dir, keys))
    finally:
        writer.stop()
    assert dumped.get('failed') is not True, dumped
    recorded = _recorded(run_module, set_dir, case)
    assert recorded['snapshot_given'] is False
    assert recorded['snapshot'] == dumped['database']['snapshot']
    _check_overlap_and_restore(run_module, case, writer, started, set_dir, recorded, target, keys,
                               'own_%s' % case.section)


def test_dump_of_the_callers_snapshot_equals_pg_dump_of_it(run_module, case, target, keys, workdir):
    set_dir = _open_set(run_module, workdir, case)
    writer = case.writer().start()
    held = None
    try:
        # committed before the snapshot is taken, hence in it
        started = writer.commits[-1][0]
        held = case.hold_snapshot()
        in_snapshot = held.counts()
        newest_in_snapshot = dict((table, int(held.one(query) or 0)) for table, query in case.written.items())
        planned = run_module(case.module, check_mode=True, snapshot=held.id, **case.dump_args(set_dir, keys))
        dumped = run_module(case.module, snapshot=held.id, **case.dump_args(set_dir, keys))
        # while the test's transaction still holds the snapshot
        comparison = data_digest(case.container, case.database, case.user, snapshot=held.id)
    finally:
        if held is not None:
            held.close()
        writer.stop()
    assert planned.get('failed') is not True, planned
    assert planned['database']['snapshot'] == held.id
    assert dumped.get('failed') is not True, dumped
    recorded = _recorded(run_module, set_dir, case)
    assert recorded['snapshot'] == held.id and recorded['snapshot_given'] is True
    assert dumped['database']['snapshot'] == held.id
    assert recorded['tables'] == in_snapshot
    assert dict((table, rows) for table, (rows, _digest) in comparison.items()) == in_snapshot

    database = 'given_%s' % case.section
    newest = _check_overlap_and_restore(run_module, case, writer, started, set_dir, recorded, target, keys,
                                        database)
    assert newest == newest_in_snapshot
    restored = data_digest(target, database, 'postgres')
    assert restored == comparison, 'tables whose data differ from pg_dump --snapshot: %s' % sorted(
        table for table in set(restored) | set(comparison) if restored.get(table) != comparison.get(table))


def test_a_snapshot_that_is_not_held_fails_clearly(run_module, generic_source, keys, tmp_path):
    held = HeldSnapshot(generic_source, DATABASE, 'postgres')
    gone = held.id
    held.close()
    opened = run_module('backup_set', root=str(tmp_path / 'backups'), service='billing', kind='postgres',
                        state='present')
    set_dir = opened['path']
    args = dict(set_dir=set_dir, container=generic_source, user='postgres', database=DATABASE,
                recipients=[keys.age_recipient])
    before = rs.listing(set_dir)

    malformed = run_module('postgres_dump', snapshot="1'; DROP TABLE plan; --", **args)
    assert malformed.get('failed') is True, malformed
    assert 'is not a snapshot identifier' in malformed['msg'], malformed['msg']
    assert rs.listing(set_dir) == before

    planned = run_module('postgres_dump', check_mode=True, snapshot=gone, **args)
    assert planned.get('failed') is True, planned
    assert 'cannot dump from snapshot %s' % gone in planned['msg'], planned['msg']
    assert 'invalid snapshot identifier' in planned['msg'], planned['msg']
    assert rs.listing(set_dir) == before

    ended = run_module('postgres_dump', snapshot=gone, **args)
    assert ended.get('failed') is True, ended
    assert 'cannot dump from snapshot %s' % gone in ended['msg'], ended['msg']
    assert not [name for name in rs.listing(set_dir) if name.startswith('database.')], 'a payload was written'
    # like any failed dump: the set cannot be finalized until a dump succeeds
    assert run_module('backup_set', path=set_dir, state='finalized').get('failed') is True
    assert _sql(generic_source, 'SELECT count(*) FROM public.plan', DATABASE, 'postgres') == '5'
