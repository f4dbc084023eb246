# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: what is specific to Authentik.

Authentik keeps its state in PostgreSQL (every schema: tenants get their own), plus files
(media or data, custom templates, certificates, blueprints) and a ``.env`` with the secret key.
Its version is in ``authentik_version_history``; a server refuses a database whose release line
(``YEAR.MONTH``) is neither its own nor the previous one, and downgrades are unsupported.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import time

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set, _postgres
from ansible_collections.idp.recovery.plugins.module_utils._archive import FileProducer
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    RecoveryError,
    dump_json,
    ensure_dir,
    remove_quietly,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._crypto import Compression, encrypt_stages, encryption_backend
from ansible_collections.idp.recovery.plugins.module_utils._payload import create_payload
from ansible_collections.idp.recovery.plugins.module_utils._stream import run_to_file

REQUIRED_TABLE = 'public.authentik_core_user'
DEFAULT_APP_CONTAINERS = ['authentik-server', 'authentik-worker']
DEFAULT_HEALTH_PORT = 9000
HEALTH_PATH = '/-/health/ready/'
VERSION_LABEL = 'org.opencontainers.image.version'

# release lines published so far; later lines are assumed to follow the two-month cadence
RELEASE_LINES = [
    (2023, 1), (2023, 2), (2023, 3), (2023, 4), (2023, 5), (2023, 6), (2023, 8), (2023, 10),
    (2024, 2), (2024, 4), (2024, 6), (2024, 8), (2024, 10), (2024, 12),
    (2025, 2), (2025, 4), (2025, 6), (2025, 8), (2025, 10), (2025, 12),
    (2026, 2), (2026, 4), (2026, 6), (2026, 8), (2026, 10),
]

# host directories of a compose deployment (FACTS: up to 2025.8 media, from 2025.12 data)
DEFAULT_FILES = [
    ('data', 'data'),
    ('media', 'media'),
    ('custom-templates', 'custom-templates'),
    ('certs', 'certs'),
    ('blueprints', 'blueprints'),
]
# the same directories as container paths, resolved through a container's mounts
DEFAULT_CONTAINER_FILES = [
    ('data', '/data'),
    ('media', '/media'),
    ('custom-templates', '/templates'),
    ('certs', '/certs'),
    ('blueprints', '/blueprints'),
]

# The newest row of authentik_version_history: Authentik writes one row per version and build it
# starts (lifecycle/system_migrations/version_history_update.py) into a table with a serial id
# (version_history_create.py); rows written in one transaction share their timestamp, and of those
# the one with the higher id was written last.
VERSION_SQL = r"""
SELECT json_build_object(
  'version', (SELECT json_build_object('version', version, 'build', build, 'timestamp', timestamp)
                FROM authentik_version_history ORDER BY timestamp DESC, id DESC LIMIT 1),
  'migrations', (SELECT coalesce(json_object_agg(app, head ORDER BY app), '{}'::json)
                   FROM (SELECT app, max(name) AS head FROM django_migrations GROUP BY app) m))
"""

_LINE = re.compile(r'^v?(\d{4})\.(\d{1,2})(?:\.(\d+))?')


def release_line(version):
    """(year, month) of an Authentik version string like 2025.10.1, or None."""
    match = _LINE.match(str(version or '').strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def line_text(line):
    return '%d.%d' % line


def previous_line(line):
    """The release line before ``line`` (None when it is older than every known line)."""
    if line in RELEASE_LINES:
        index = RELEASE_LINES.index(line)
        return RELEASE_LINES[index - 1] if index else None
    if line > RELEASE_LINES[-1]:
        year, month = line
        guess = (year, month - 2) if month > 2 else (year - 1, month + 10)
        return max(guess, RELEASE_LINES[-1])
    earlier = [known for known in RELEASE_LINES if known < line]
    return earlier[-1] if earlier else None


def version_gate(dump_version, target_version, force=False):
    """Decide whether a dump of dump_version may be restored under target_version.

    Returns a dict (ok, reason, dump_line, target_line); ok is True when forced.
    """
    dump_line = release_line(dump_version)
    target_line = release_line(target_version)
    result = {'dump_version': dump_version, 'target_version': target_version, 'forced': False,
              'dump_line': line_text(dump_line) if dump_line else None,
              'target_line': line_text(target_line) if target_line else None}
    reason = None
    if dump_line is None:
        reason = 'the backup set records no Authentik version (authentik_version_history was empty or missing)'
    elif target_line is None:
        reason = ('the Authentik version of the target is unknown (%s); give target_version'
                  % ('not a version: %r' % target_version if target_version else 'no app container image label or tag'))
    elif dump_line > target_line:
        reason = ('the dump comes from Authentik %s (line %s), newer than the target %s (line %s): Authentik does not '
                  'support downgrades; run an image of line %s or newer' % (
                      dump_version, line_text(dump_line), target_version, line_text(target_line), line_text(dump_line)))
    elif dump_line < target_line and dump_line != previous_line(target_line):
        reason = ('the dump comes from Authentik %s (line %s), more than one release line older than the target %s '
                  '(line %s): Authentik upgrades must not skip release lines; restore under line %s first, or under '
                  'a line at most one older than the dump' % (
                      dump_version, line_text(dump_line), target_version, line_text(target_line),
                      line_text(dump_line)))
    result['ok'] = reason is None or bool(force)
    result['forced'] = reason is not None and bool(force)
    result['reason'] = reason
    return result


def version_from_image(container_info, labels):
    """An app container's Authentik version: the image's OCI version label, else its tag."""
    version = (labels or {}).get(VERSION_LABEL)
    if release_line(version):
        return version
    image = (container_info.get('Config') or {}).get('Image') or ''
    tag = image.rsplit(':', 1)[1] if ':' in image.rsplit('/', 1)[-1] else ''
    if release_line(tag):
        return tag
    return None


def file_specs(files, compose_dir, files_container):
    """The file directories to capture or restore: [{name, path|container_path, required}]."""
    if files:
        specs = []
        seen = set()
        for item in files:
            name = item.get('name')
            if not name or not re.match(r'^[A-Za-z0-9][A-Za-z0-9._-]*$', name):
                raise RecoveryError('files: %r is not a valid name (letters, digits, ".", "_", "-")' % (name,))
            if name in seen:
                raise RecoveryError('files: the name %s appears twice' % name)
            seen.add(name)
            if bool(item.get('path')) == bool(item.get('container_path')):
                raise RecoveryError('files: %s needs exactly one of path or container_path' % name)
            if item.get('container_path') and not files_container:
                raise RecoveryError('files: %s has a container_path; give files_container' % name)
            specs.append({'name': name, 'path': item.get('path'), 'container_path': item.get('container_path'),
                          'required': bool(item.get('required'))})
        return specs
    if compose_dir:
        return [{'name': name, 'path': os.path.join(compose_dir, sub), 'container_path': None, 'required': False}
                for name, sub in DEFAULT_FILES]
    if files_container:
        return [{'name': name, 'path': None, 'container_path': cpath, 'required': False}
                for name, cpath in DEFAULT_CONTAINER_FILES]
    return []


def resolve_mount(container_info, container_path):
    """The host path behind a container path, through the container's mounts (or None)."""
    best = None
    for mount in container_info.get('Mounts') or []:
        dest = (mount.get('Destination') or '').rstrip('/') or '/'
        if container_path == dest or container_path.startswith(dest.rstrip('/') + '/'):
            if best is None or len(dest) > len(best[0]):
                best = (dest, mount.get('Source'))
    if best is None or not best[1]:
        return None
    rest = container_path[len(best[0]):].lstrip('/')
    return os.path.join(best[1], rest) if rest else best[1]


# ---------------------------------------------------------------------------------------------
# dump into an open backup set

DB_PAYLOAD = {'custom': 'database.pgdump', 'plain': 'database.sql'}
ENV_PAYLOAD = 'dotenv'
FILES_DIR = 'files'


def payload_name(base, compressor, backend):
    suffix = {'zstd': '.zst', 'gzip': '.gz'}.get(compressor.name, '')
    suffix += {'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg'}.get(backend.name, '')
    return base + suffix


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


def read_facts(snapshot, require_authentik=True):
    """Server and Authentik facts, read inside the dump's snapshot."""
    facts = snapshot.query_json(_postgres.SERVER_SQL) or {}
    present = snapshot.query_json(
        "SELECT json_build_object('history', to_regclass('public.authentik_version_history') IS NOT NULL, "
        "'migrations', to_regclass('public.django_migrations') IS NOT NULL, "
        "'users', to_regclass('public.authentik_core_user') IS NOT NULL)") or {}
    if require_authentik and not present.get('users'):
        raise RecoveryError('database %s has no table authentik_core_user: this is not an Authentik database '
                            '(or the wrong database name)' % snapshot.db.where)
    authentik = {'version': None, 'migrations': {}}
    if present.get('history') and present.get('migrations'):
        authentik = snapshot.query_json(VERSION_SQL) or authentik
    return facts, authentik


def dump_database(db, set_dir, fmt, backend, compressor, strict=True, section='authentik', snapshot=None):
    """Dump the database into the set (streamed, compressed, encrypted); return (rel, payload info, metadata).

    strict: the database must be Authentik's, with data in authentik_core_user (off for the
    safety dump of a restore target, which saves whatever state the target is in).
    section: the key of metadata.json that receives the database facts; any other than
    ``authentik`` (a generic PostgreSQL database) records no Authentik version or migrations.
    snapshot: dump from this snapshot exported by the caller (see ``_postgres.SnapshotDump``).
    """
    required_tables = (REQUIRED_TABLE,) if strict else ()
    rel = payload_name(DB_PAYLOAD[fmt], compressor, backend)
    dest = os.path.join(set_dir, rel)
    stages = encrypt_stages(compressor, backend)
    started = time.time()
    # until the dump is complete and described, the set cannot be finalized
    _backup_set.begin_payload(set_dir, 'database', 'pg_dump of %s into %s' % (db.where, rel))
    with _postgres.SnapshotDump(db, fmt, list(required_tables), snapshot=snapshot) as dump:
        facts, authentik = read_facts(dump, strict)
        dump.start_counts()
        sha256, size = run_to_file(dump.produce, stages, dest)
        try:
            counts = dump.counts_result()
        except RecoveryError:
            remove_quietly(dest)
            raise
        sanity = dump.sanity
        snapshot_id = dump.source
    seconds = round(time.time() - started, 3)
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
    return rel, info, metadata


def database_step(db, set_dir, fmt, backend, compressor, force=False, check_mode=False, section='authentik',
                  snapshot=None):
    """The database payload of a dump module: kept when the set holds one (unless force), planned in
    check mode, else dumped (from the caller's exported snapshot when given). Returns (database
    result, section metadata or None)."""
    strict = section == 'authentik'
    if snapshot is not None:
        _postgres.check_snapshot_id(snapshot)
    rel, info = recorded_database_payload(set_dir)
    recorded = _backup_set.read_metadata(set_dir).get(section) or {}
    if rel and not force:
        return _database_result(rel, info, recorded.get('database') or {}, changed=False), recorded
    if check_mode:
        planned = {'changed': True, 'format': fmt, 'payload': payload_name(DB_PAYLOAD[fmt], compressor, backend)}
        if snapshot is not None:
            # the given snapshot must be importable now; nothing is dumped
            with _postgres.SnapshotDump(db, fmt, snapshot=snapshot) as dump:
                facts = dump.query_json(_postgres.SERVER_SQL) or {}
            planned['snapshot'] = dump.source
        else:
            facts = _postgres.server_facts(db)
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
        'tables': len(database.get('tables') or {}),
        'rows_total': database.get('rows_total'),
        'snapshot': database.get('snapshot'),
        'server_version': database.get('server_version'),
        'database_size': database.get('size'),
    }


def host_paths(specs, engine, files_container):
    """Attach the host path of each spec (resolving container paths through the mounts)."""
    info = engine.inspect(files_container) if files_container and any(s['container_path'] for s in specs) else None
    resolved = []
    for spec in specs:
        item = dict(spec)
        if spec['container_path']:
            item['host_path'] = resolve_mount(info, spec['container_path'])
            item['where'] = '%s:%s' % (files_container, spec['container_path'])
        else:
            item['host_path'] = spec['path']
            item['where'] = spec['path']
        resolved.append(item)
    return resolved


def dump_files(set_dir, specs, encryption, compression, encrypt_options, check_mode=False):
    """Each directory as a tar payload, or a <name>.skip marker when it is missing and optional."""
    results = {}
    for spec in specs:
        name = spec['name']
        src = spec.get('host_path')
        if not src or not os.path.isdir(src):
            why = ('%s is not mounted in the container' % spec['where']) if not src else ('%s does not exist' % src)
            if spec['required']:
                raise RecoveryError('files: %s is required but %s' % (name, why), name=name)
            marker = os.path.join(FILES_DIR, '%s.skip' % name)
            results[name] = {'skipped': True, 'reason': why, 'marker': marker,
                             'changed': not os.path.isfile(os.path.join(set_dir, marker))}
            if not check_mode and results[name]['changed']:
                ensure_dir(os.path.join(set_dir, FILES_DIR))
                write_file_atomic(os.path.join(set_dir, marker), dump_json({'name': name, 'skipped': why}))
                _backup_set.write_fragment(set_dir, 'authentik-files-' + name,
                                           {'authentik': {'files': {name: results[name]}}})
            continue
        suffix = payload_name('', Compression(compression[0], compression[1]), encryption_backend(encryption, **encrypt_options))
        rel = '%s/%s.tar%s' % (FILES_DIR, name, suffix)
        result = create_payload(src, os.path.join(set_dir, rel), encryption, compression, check_mode=check_mode,
                                **encrypt_options)
        results[name] = {'payload': rel, 'changed': result['changed'], 'source': spec['where']}
        if not check_mode:
            results[name]['files'] = (result['payload'].get('source') or {}).get('files')
            _backup_set.write_fragment(set_dir, 'authentik-files-' + name,
                                       {'authentik': {'files': {name: {'payload': rel, 'source': spec['where']}}}})
    return results


def dump_env(set_dir, env_file, backend, check_mode=False):
    """The .env, encrypted only; its content and digest are never recorded or returned."""
    if backend.name == 'none':
        raise RecoveryError('the .env holds the secret key and database password: it is captured only encrypted; '
                            'set an encryption other than none or drop env_file')
    if not os.path.isfile(env_file):
        raise RecoveryError('env_file %s does not exist' % env_file, path=env_file)
    rel = payload_name(ENV_PAYLOAD, Compression('none'), backend)
    dest = os.path.join(set_dir, rel)
    if os.path.isfile(dest) and _backup_set.payload_info(set_dir, rel):
        return {'payload': rel, 'changed': False}
    if check_mode:
        return {'payload': rel, 'changed': True}
    producer = FileProducer(env_file)
    sha256, size = run_to_file(producer, encrypt_stages(Compression('none'), backend), dest)
    info = backend.public_description()
    info.update({'format': 'raw', 'compression': 'none', 'size': size, 'sha256': sha256, 'secret': True,
                 'source': {'type': 'file', 'path': env_file, 'bytes': producer.bytes}})
    try:
        _backup_set.write_fragment(set_dir, 'payload-' + rel, {'payloads': {rel: info}})
        _backup_set.write_fragment(set_dir, 'authentik-env', {'authentik': {'env': {'payload': rel}}})
    except RecoveryError:
        remove_quietly(dest)
        raise
    return {'payload': rel, 'changed': True}
