# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the database payload of a dump set.

``database_step`` is the database part of ``postgres_dump`` and ``authentik_dump`` (and of a
restore's safety set): ``pg_dump`` from one snapshot, streamed through the set's compressor and
encryptor, with the server's facts and every table's row count in ``metadata.json`` (and, in the
``authentik`` section, Authentik's version and migration heads).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._authentik.database import REQUIRED_TABLE, read_facts
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, remove_quietly
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, payload_suffix
from ansible_collections.idp.recovery.plugins.module_utils._postgres.dump import SnapshotDump, check_snapshot_id
from ansible_collections.idp.recovery.plugins.module_utils._postgres.facts import SERVER_SQL, server_facts
from ansible_collections.idp.recovery.plugins.module_utils._stream import run_to_file

DB_PAYLOAD = {'custom': 'database.pgdump', 'plain': 'database.sql'}
# zstd level of a database dump when compression_level is not given: on two cores the dump shares the
# machine with the server's COPY, and zstd -1 needs about 40% less CPU than -3 (see the dump modules' docs)
DUMP_ZSTD_LEVEL = 1


def dump_compression(name, level=None):
    """The compressor of a database dump: ``level``, or for zstd DUMP_ZSTD_LEVEL when it is None."""
    if level is None and name == 'zstd':
        level = DUMP_ZSTD_LEVEL
    return Compression(name, level)


def payload_name(base, compressor, backend):
    """The name of a payload ``base`` written through ``compressor`` and ``backend``."""
    return base + payload_suffix(compressor, backend)


def recorded_database_payload(set_dir):
    """(rel, info) of the database payload already in the set, or (None, None)."""
    payloads = _backup_set.read_metadata(set_dir).get('payloads') or {}
    for rel, info in sorted(payloads.items()):
        if rel.startswith('database.') and os.path.isfile(os.path.join(set_dir, rel)):
            return rel, info
    return None, None


def open_set(set_dir):
    if not os.path.isdir(set_dir) or not _backup_set.looks_like_set(set_dir):
        raise RecoveryError('%s is not an open backup set; open it first (idp.recovery.backup_set state=present)'
                            % set_dir, path=set_dir)
    if _backup_set.is_complete(set_dir):
        raise RecoveryError('backup set %s is already finalized; open a new set for a new dump' % set_dir,
                            path=set_dir)


def dump_database(db, set_dir, fmt, backend, compressor, strict=True, section='authentik', snapshot=None):
    """Dump the database into the set (streamed, compressed, encrypted); return (rel, payload info, metadata).

    strict: the database must be Authentik's, with data in authentik_core_user (off for the
    safety dump of a restore target, which saves whatever state the target is in).
    section: the key of metadata.json that receives the database facts; any other than
    ``authentik`` (a generic PostgreSQL database) records no Authentik version or migrations.
    snapshot: dump from this snapshot exported by the caller (see ``SnapshotDump``).
    """
    required_tables = (REQUIRED_TABLE,) if strict else ()
    rel = payload_name(DB_PAYLOAD[fmt], compressor, backend)
    dest = os.path.join(set_dir, rel)
    stages = encrypt_stages(compressor, backend)
    started = time.time()
    # until the dump is complete and described, the set cannot be finalized
    _backup_set.begin_payload(set_dir, 'database', 'pg_dump of %s into %s' % (db.where, rel))
    with SnapshotDump(db, fmt, list(required_tables), snapshot=snapshot) as dump:
        facts, authentik = read_facts(dump, strict)
        facts_done = time.time()
        dump.start_counts()
        sha256, size = run_to_file(dump.produce, stages, dest)
        written = time.time()
        try:
            counts = dump.counts_result()
        except RecoveryError:
            remove_quietly(dest)
            raise
        sanity = dump.sanity
        snapshot_id = dump.source
        timings = dict(dump.timings)
    seconds = round(time.time() - started, 3)
    stage_seconds = _stage_seconds(timings, facts_done - started, written - facts_done)
    info = backend.public_description()
    info.update({
        'format': 'raw',
        'dump_format': fmt,
        'compression': compressor.name,
        'size': size,
        'sha256': sha256,
        'source': {'type': 'postgresql', 'database': db.database, 'where': db.where, 'bytes': sanity.bytes},
        'seconds': seconds,
    })
    metadata = {
        'version': authentik.get('version'),
        'migrations': authentik.get('migrations') or {},
        'database': {
            'name': db.database,
            'server_version': facts.get('server_version'),
            'server_version_num': facts.get('server_version_num'),
            'size': facts.get('database_size'),
            'encoding': facts.get('encoding'),
            'owner': facts.get('owner'),
            'schemas': facts.get('schemas') or [],
            'payload': rel,
            'format': fmt,
            'dump_bytes': sanity.bytes,
            'snapshot_consistent': True,
            'snapshot': snapshot_id,
            'snapshot_given': snapshot is not None,
            'tables': counts,
            'rows_total': sum(counts.values()),
            'seconds': seconds,
        },
    }
    if section != 'authentik':
        metadata = {'database': metadata['database']}
    try:
        _backup_set.write_fragment(set_dir, 'payload-' + rel, {'payloads': {rel: info}})
        _backup_set.write_fragment(set_dir, section + '-database', {section: metadata})
    except RecoveryError:
        remove_quietly(dest)
        raise
    _backup_set.end_payload(set_dir, 'database')
    # reported with the module's result only, not recorded in the set
    info['stage_seconds'] = stage_seconds
    return rel, info, metadata


def _stage_seconds(timings, facts, to_file):
    """Wall seconds of the dump's stages, in the order they end.

    snapshot_facts: the session, its snapshot and the facts; pg_dump: pg_dump from its start to its
    exit (the row counts and the compressor run alongside); list_check_wait: the wait for
    ``pg_restore --list`` after pg_dump's end; drain_fsync: the rest of writing the payload (the
    compressor's and encryptor's tail, fsync, rename); counts_wait: the wait for the row counts
    after that (counts_wall: from the query's start to its answer, an upper bound of its time).
    """
    stages = {'snapshot_facts': facts}
    for name in ('pg_dump', 'list_check_wait', 'counts_wait', 'counts_wall'):
        if name in timings:
            stages[name] = timings[name]
    stages['drain_fsync'] = max(0.0, to_file - timings.get('pg_dump', 0.0) - timings.get('list_check_wait', 0.0))
    return dict((name, round(value, 3)) for name, value in stages.items())


def database_step(db, set_dir, fmt, backend, compressor, force=False, check_mode=False, section='authentik',
                  snapshot=None):
    """The database payload of a dump module: kept when the set holds one (unless force), planned in
    check mode, else dumped (from the caller's exported snapshot when given). Returns (database
    result, section metadata or None)."""
    strict = section == 'authentik'
    if snapshot is not None:
        check_snapshot_id(snapshot)
    rel, info = recorded_database_payload(set_dir)
    recorded = _backup_set.read_metadata(set_dir).get(section) or {}
    if rel and not force:
        return _database_result(rel, info, recorded.get('database') or {}, changed=False), recorded
    if check_mode:
        planned = {'changed': True, 'format': fmt, 'payload': payload_name(DB_PAYLOAD[fmt], compressor, backend)}
        if snapshot is not None:
            # the given snapshot must be importable now; nothing is dumped
            with SnapshotDump(db, fmt, snapshot=snapshot) as dump:
                facts = dump.query_json(SERVER_SQL) or {}
            planned['snapshot'] = dump.source
        else:
            facts = server_facts(db)
        planned.update({'server_version': facts.get('server_version'), 'database_size': facts.get('database_size')})
        return planned, None
    if rel:
        os.unlink(os.path.join(set_dir, rel))
    rel, info, metadata = dump_database(db, set_dir, fmt, backend, compressor, strict=strict, section=section,
                                        snapshot=snapshot)
    return _database_result(rel, info, metadata['database'], changed=True), metadata


def _database_result(rel, info, database, changed):
    return {
        'payload': rel,
        'changed': changed,
        'format': info.get('dump_format'),
        'size': info.get('size'),
        'dump_bytes': (info.get('source') or {}).get('bytes'),
        'seconds': info.get('seconds'),
        'stage_seconds': info.get('stage_seconds'),
        'tables': len(database.get('tables') or {}),
        'rows_total': database.get('rows_total'),
        'snapshot': database.get('snapshot'),
        'server_version': database.get('server_version'),
        'database_size': database.get('size'),
    }
