# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: what pgBackRest and PostgreSQL say - ``pgbackrest info --output=json``, pgBackRest's
error output, the restored backup set, and a server's log of its recovery (WAL segments, where redo stopped)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import datetime
import json
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

SEGMENTS_PER_LOG = 0x100  # 16 MiB WAL segments: 256 per log file number

_SEGMENT_RE = re.compile(r'^[0-9A-F]{24}$')
_ERROR_RE = re.compile(r'(?:^|\s)(?:ERROR|ASSERT): \[(\d+)\]: (.*)$')
_WARN_RE = re.compile(r'(?:^|\s)WARN: (.*(?:\n {3,}\S.*)*)', re.M)
_GARBAGE_RE = re.compile(r'(found outside of section at line \d+):.*?(?= FormatError:| HINT:|\)$|$)')
_SET_RE = re.compile(r'restore backup set (\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?)')
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_REDO_DONE_RE = re.compile(r'redo done at ([0-9A-F]+/[0-9A-F]+)')
_STOP_RE = re.compile(r'recovery stopping (?:before|after|at) .*$')
_LAST_TX_RE = re.compile(r'last completed transaction was at log time (.+)$')
_FATAL_RE = re.compile(r'\b(FATAL|PANIC):\s+(.*)$')

_CIPHER_HINT = ('the repository cipher passphrase (cipher_pass) does not match the one the repository was '
                'created with, or the repository is not encrypted as configured')


# ---------------------------------------------------------------------------------------------
# info JSON

def _iso(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_info(text, stanza):
    """The interesting parts of ``pgbackrest info --output=json`` for one stanza."""
    try:
        data = json.loads(text)
    except ValueError:
        raise RecoveryError('pgbackrest info did not return JSON: %s' % text[:200])
    if not isinstance(data, list):
        raise RecoveryError('pgbackrest info returned %s, not a list of stanzas' % type(data).__name__)
    entry = next((item for item in data if isinstance(item, dict) and item.get('name') == stanza), None)
    if entry is None:
        raise RecoveryError('pgbackrest info knows no stanza %s' % stanza, stanza=stanza)
    status = entry.get('status') or {}
    backups = []
    for item in entry.get('backup') or []:
        stamp = item.get('timestamp') or {}
        archive = item.get('archive') or {}
        info = item.get('info') or {}
        lsn = item.get('lsn') or {}
        backups.append({
            'label': item.get('label'), 'type': item.get('type'), 'prior': item.get('prior'),
            'start': _iso(stamp.get('start')), 'stop': _iso(stamp.get('stop')),
            'start_epoch': stamp.get('start'), 'stop_epoch': stamp.get('stop'),
            'archive_start': archive.get('start'), 'archive_stop': archive.get('stop'),
            'lsn_start': lsn.get('start'), 'lsn_stop': lsn.get('stop'),
            'size': info.get('size'), 'delta': info.get('delta'),
            'repo_size': (info.get('repository') or {}).get('size'),
            'repo': (item.get('database') or {}).get('repo-key'), 'error': bool(item.get('error')),
        })
    backups.sort(key=lambda b: (b['stop_epoch'] or 0, b['label'] or ''))
    good = [b for b in backups if not b['error']]
    archives = [a for a in entry.get('archive') or [] if isinstance(a, dict)]
    dbs = entry.get('db') or []
    current_db = max((d.get('id') or 0 for d in dbs), default=None)
    current = [a for a in archives if (a.get('database') or {}).get('id') == current_db] or archives
    return {
        'stanza': stanza,
        'ok': status.get('code') == 0,
        'status_code': status.get('code'),
        'status_message': status.get('message'),
        'cipher': entry.get('cipher'),
        'repos': [{'key': r.get('key'), 'cipher': r.get('cipher'), 'status_code': (r.get('status') or {}).get('code'),
                   'status_message': (r.get('status') or {}).get('message')} for r in entry.get('repo') or []],
        'backups': backups,
        'latest_backup': good[-1]['label'] if good else None,
        'latest_backup_stop': good[-1]['stop'] if good else None,
        'latest_full': next((b['label'] for b in reversed(good) if b['type'] == 'full'), None),
        'archive_min': min((a.get('min') for a in current if a.get('min')), default=None),
        'archive_max': max((a.get('max') for a in current if a.get('max')), default=None),
        'backup_lock_held': bool(((status.get('lock') or {}).get('backup') or {}).get('held')),
    }


# ---------------------------------------------------------------------------------------------
# pgBackRest's output

def restored_backup_set(output):
    """The backup label ``pgbackrest restore --log-level-console=info`` says it restored."""
    labels = _SET_RE.findall(output)
    return labels[-1] if labels else None


def pgbackrest_errors(stderr):
    """[(code, message)] of the ERROR lines of pgBackRest's output (continuation lines joined)."""
    errors = []
    current = None
    for line in stderr.splitlines():
        match = _ERROR_RE.search(line)
        if match:
            current = [int(match.group(1)), match.group(2).strip()]
            errors.append(current)
        elif current is not None and line.startswith(' ') and line.strip():
            current[1] += ' ' + line.strip()
        else:
            current = None
    return [tuple(item) for item in errors]


def describe_failure(what, code, stderr):
    errors = pgbackrest_errors(stderr)
    detail = '; '.join('[%d] %s' % item for item in errors) if errors else (
        ' / '.join([line for line in stderr.splitlines() if line.strip()][-4:]) or 'exit code %s' % code)
    # a repository pgBackRest skipped says why in a warning (a wrong passphrase: "no backup set found")
    warnings = [' '.join(match.group(1).split()) for match in _WARN_RE.finditer(stderr)]
    if warnings:
        detail += ' (after: %s)' % '; '.join(warnings[-3:])
    # a wrong passphrase decrypts the info files to garbage: leave the garbage out of the message
    detail = _GARBAGE_RE.sub(r'\1', detail)
    hint = ''
    if 'CryptoError' in stderr or 'cipher header' in stderr or 'is or was the repo encrypted' in stderr or (
            'unable to load info file' in stderr and 'FormatError' in stderr):
        hint = ' - ' + _CIPHER_HINT
    return '%s failed (exit code %s): %s%s' % (what, code, detail, hint)


# ---------------------------------------------------------------------------------------------
# WAL segments and the server log of a recovery

def next_segment(segment):
    """The WAL segment after ``segment`` (24 hex digits, 16 MiB segments)."""
    if not segment or not _SEGMENT_RE.match(segment):
        raise RecoveryError('%r is not a WAL segment name' % (segment,))
    tli, log, seg = int(segment[:8], 16), int(segment[8:16], 16), int(segment[16:], 16) + 1
    if seg >= SEGMENTS_PER_LOG:
        log, seg = log + 1, 0
    return '%08X%08X%08X' % (tli, log, seg)


def read_recovery_log(text):
    """What a server's log says about its recovery."""
    restored = _RESTORED_RE.findall(text)
    found = {'restored_segments': len(restored), 'last_restored_segment': restored[-1] if restored else None,
             'redo_done_lsn': None, 'stop_line': None, 'last_transaction_log_time': None, 'fatal': []}
    for line in text.splitlines():
        match = _REDO_DONE_RE.search(line)
        if match:
            found['redo_done_lsn'] = match.group(1)
        match = _STOP_RE.search(line)
        if match:
            found['stop_line'] = match.group(0).strip()
        match = _LAST_TX_RE.search(line)
        if match:
            found['last_transaction_log_time'] = match.group(1).strip()
        match = _FATAL_RE.search(line)
        if match:
            found['fatal'].append(match.group(2).strip())
    return found


def explain_recovery_failure(log, archive_max=None):
    """A clear message for a server that stopped during recovery (from read_recovery_log)."""
    fatal = log['fatal'][-1] if log['fatal'] else 'the server stopped during recovery'
    if 'recovery ended before configured recovery target was reached' in fatal or \
            'WAL ends before' in fatal or 'requested recovery stop point is before consistent' in fatal:
        last = log['last_restored_segment']
        missing = next_segment(last) if last else None
        where = ' (redo stopped at LSN %s)' % log['redo_done_lsn'] if log['redo_done_lsn'] else ''
        if missing and archive_max and archive_max[8:] > missing[8:]:
            return ('%s: the WAL archive has a gap - segment %s is missing from the repository after %s, while later '
                    'segments up to %s exist%s; the target lies beyond the gap and cannot be reached' % (
                        fatal, missing, last, archive_max, where)), missing
        if missing:
            return ('%s: the last WAL segment in the repository that recovery used is %s; %s is not there (the '
                    'archive ends at %s)%s - the target is later than anything archived' % (
                        fatal, last, missing, archive_max or 'unknown', where)), missing
    return fatal, None
