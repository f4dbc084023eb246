# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: a consistent dump of one PostgreSQL database.

A ``psql`` session holds a REPEATABLE READ transaction and exports its snapshot; ``pg_dump
--snapshot`` dumps exactly that snapshot while the session counts every table's rows in it, so the
counts recorded with a dump are the counts of the dump. Given a snapshot exported by the caller,
the session imports it first (``SET TRANSACTION SNAPSHOT``) and exports it again for ``pg_dump``:
the dump and the counts are then of the caller's instant. ``DumpSanity`` checks the stream as it
goes by (a complete trailer, the data of the required tables).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import re
import threading
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import failure_lines, quote_literal
from ansible_collections.idp.recovery.plugins.module_utils._postgres.facts import COUNT_ROWS_SQL

# how much of a custom-format dump the TOC check may read before giving up on it
LIST_CHECK_LIMIT = 256 * 1024 * 1024
CUSTOM_TRAILER = b'\0' * 5
TAIL_KEEP = 1024
PLAIN_TRAILER = b'PostgreSQL database dump complete'

# what PostgreSQL itself accepts as a snapshot identifier (SET TRANSACTION SNAPSHOT)
_SNAPSHOT_CHARS = frozenset('0123456789ABCDEF-')
SNAPSHOT_ID_MAX = 64


def check_snapshot_id(snapshot):
    """The identifier of an exported snapshot, as given; RecoveryError when it cannot be one."""
    text = snapshot if isinstance(snapshot, str) else ''
    if not text or len(text) > SNAPSHOT_ID_MAX or not set(text) <= _SNAPSHOT_CHARS or '-' not in text.strip('-'):
        raise RecoveryError('snapshot %r is not a snapshot identifier: give the value pg_export_snapshot() returned '
                            '(upper-case hexadecimal digits and dashes, such as 00000003-0000001B-1)'
                            % (snapshot if not isinstance(snapshot, str) else snapshot[:80],))
    return text


class DumpSanity(object):
    """Watches a dump stream go by: keeps its tail and checks its table of contents.

    For the custom format a ``pg_restore --list`` reads the head of the stream (it needs only the
    table of contents and stops there), so a dump without the data of a required table fails
    without a second pass over the payload.
    """

    def __init__(self, db, fmt, required_tables):
        self.db = db
        self.fmt = fmt
        self.required = list(required_tables or [])
        self.tail = b''
        self.bytes = 0
        self.toc = None
        self._lister = None
        self._list_out = []
        self._list_done = threading.Event()
        self._reader = None
        self._fed = 0
        self._plain_seen = set()
        self._plain_carry = b''
        if fmt == 'custom':
            self._lister = db.spawn(['pg_restore', '--list'], stdin=True)
            self._reader = threading.Thread(target=self._read_list, name='idp-recovery-toc')
            self._reader.daemon = True
            self._reader.start()

    def _read_list(self):
        try:
            self._lister.read_all(self._list_out.append)
        except RecoveryError:
            pass
        finally:
            self._list_done.set()

    def feed(self, data):
        size = len(data)
        self.bytes += size
        if size >= TAIL_KEEP:
            self.tail = bytes(data[-TAIL_KEEP:])
        else:
            self.tail = (self.tail + bytes(data))[-TAIL_KEEP:]
        if self._lister is not None and not self._list_done.is_set():
            if self._fed < LIST_CHECK_LIMIT:
                self._lister.write_while(data, lambda: not self._list_done.is_set())
                self._fed += size
            else:
                self._lister.close_stdin()
        elif self.fmt == 'plain' and len(self._plain_seen) < len(self.required):
            text = self._plain_carry + bytes(data)
            for table in self.required:
                if table not in self._plain_seen and ('\nCOPY %s ' % _qualified(table)).encode('utf-8') in text:
                    self._plain_seen.add(table)
            self._plain_carry = text[-256:]

    def finish(self):
        """Raise when the stream that went by is not a complete dump with the required data."""
        problems = []
        if self.bytes == 0:
            raise RecoveryError('pg_dump produced no output at all (0 bytes)')
        if self.fmt == 'custom':
            if not self.tail.endswith(CUSTOM_TRAILER):
                problems.append('the custom-format dump is truncated (its last data block is not terminated)')
            self._lister.close_stdin()
            self._list_done.wait(60)
            code = self._lister.wait()
            listing = b''.join(bytes(part) for part in self._list_out).decode('utf-8', 'replace')
            self._lister.close()
            if code != 0 or not listing.strip():
                raise RecoveryError('pg_restore --list cannot read the dump: %s' % (
                    self._lister.stderr_text() or 'exit code %s' % code))
            self.toc = listing
            for table in self.required:
                schema, name = _split(table)
                if not re.search(r'^\d+; \d+ \d+ TABLE DATA %s %s ' % (re.escape(schema), re.escape(name)), listing, re.M):
                    problems.append('the dump holds no data for table %s (pg_restore --list)' % table)
        else:
            # PostgreSQL 17.6 / 15.14 and later put an \unrestrict line after the marker
            if PLAIN_TRAILER not in self.tail:
                problems.append('the plain dump is truncated (no "dump complete" line at its end)')
            for table in self.required:
                if table not in self._plain_seen:
                    problems.append('the dump holds no data for table %s' % table)
        if problems:
            raise RecoveryError('the dump is not usable: %s' % '; '.join(problems))

    def abort(self):
        if self._lister is not None:
            self._lister.kill()
            self._lister.close()


def _split(table):
    if '.' in table:
        return table.split('.', 1)
    return 'public', table


def _qualified(table):
    schema, name = _split(table)
    return '%s.%s' % (schema, name)


class SnapshotDump(object):
    """Open a REPEATABLE READ snapshot, read facts in it, then dump exactly it.

    Use as a context manager; ``query_json(sql)`` runs queries in the snapshot, ``start_counts`` /
    ``counts_result`` count every table's rows in it, ``produce`` is the producer for
    ``_stream.run_to_file`` (pg_dump of the snapshot, with the sanity checks).

    ``snapshot``: the identifier of a snapshot exported by the caller (``pg_export_snapshot()`` in
    the same database, in a transaction the caller keeps open until this session has imported it).
    The session imports it and exports it again, so ``pg_dump`` depends on this session only.
    Without it the session exports a snapshot of its own.
    """

    def __init__(self, db, fmt='custom', required_tables=None, snapshot=None):
        if fmt not in ('custom', 'plain'):
            raise RecoveryError('unknown dump format %s' % fmt)
        self.db = db
        self.fmt = fmt
        self.required_tables = required_tables or []
        self.given = check_snapshot_id(snapshot) if snapshot is not None else None
        self.session = None
        self.snapshot = None
        self.counts = None
        self.sanity = None
        self.dump_stderr = ''
        # wall seconds of the dump's stages (reported with the result, see stage_seconds)
        self.timings = {}
        self._counts_sent = None

    def __enter__(self):
        self.session = self.db.session()
        try:
            self.session.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
            if self.given:
                self._import()
            self.snapshot = self.session.query('SELECT pg_export_snapshot()').strip()
        except RecoveryError:
            self.session.close()
            raise
        return self

    def _import(self):
        try:
            self.session.query('SET TRANSACTION SNAPSHOT %s' % quote_literal(self.given))
        except RecoveryError as exc:
            raise RecoveryError('cannot dump from snapshot %s: %s. Export it with pg_export_snapshot() in database '
                                '%s itself and keep that transaction open until the dump has begun'
                                % (self.given, exc.msg, self.db.database), database=self.db.database)

    @property
    def source(self):
        """The snapshot the dump and the counts are of: the caller's when given, else this session's."""
        return self.given or self.snapshot

    def __exit__(self, exc_type, exc, tb):
        try:
            self.session.query('ROLLBACK')
        except RecoveryError:
            pass
        self.session.close()
        return False

    def query_json(self, sql):
        return self.session.query_json(sql)

    def start_counts(self):
        """Count every table's rows in the snapshot while the dump runs (read by counts_result)."""
        self._counts_sent = time.time()
        self.session.send(COUNT_ROWS_SQL)

    def counts_result(self):
        waited = time.time()
        text = self.session.receive()
        done = time.time()
        self.timings['counts_wait'] = done - waited
        if self._counts_sent is not None:
            # an upper bound of the query's own time: it ran alongside pg_dump from _counts_sent on
            self.timings['counts_wall'] = done - self._counts_sent
        try:
            self.counts = json.loads(text) if text else {}
        except ValueError:
            raise RecoveryError('unexpected answer to the row count query: %s' % text[:200])
        return self.counts

    def argv(self):
        argv = ['pg_dump', '--snapshot=%s' % self.snapshot, '--format=%s' % self.fmt, '--no-sync']
        if self.fmt == 'custom':
            # compression happens later in the pipeline (zstd), much faster than pg_dump's zlib
            argv.append('--compress=0')
        return argv + self.db.conn_args()

    def produce(self, sink):
        """Producer for run_to_file: stream pg_dump's output into sink, then check it."""
        self.sanity = DumpSanity(self.db, self.fmt, self.required_tables)
        proc = None
        started = time.time()
        try:
            proc = self.db.spawn(self.argv(), bulk_output=True)
            sanity = self.sanity
            write = sink.write
            while True:
                data = proc.read_stdout()
                if not data:
                    break
                sanity.feed(data)
                write(data)
            code = proc.wait()
            ended = time.time()
            self.timings['pg_dump'] = ended - started
            self.dump_stderr = proc.stderr_text()
            failed = failure_lines(self.dump_stderr)
            if code != 0 or failed:
                raise RecoveryError('pg_dump failed in %s (exit code %s): %s' % (
                    self.db.runner.where, code, ' / '.join((failed or self.dump_stderr.splitlines())[-3:]) or 'no message'))
            sanity.finish()
            self.timings['list_check_wait'] = time.time() - ended
        except BaseException:
            if proc is not None:
                proc.kill()
            self.sanity.abort()
            raise
        finally:
            if proc is not None:
                proc.close()
