# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the decisions of a database restore, made before anything changes.

Which section of a set's metadata a restore module takes (``pick_database``), where its safety set
goes and how it is encrypted, who owns the recreated database, how a failed step is told, and the
timed ``Steps`` of one restore. See ``_postgres.database_restore`` for the restore itself.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

AUTHENTIK = 'authentik'
POSTGRES = 'postgres'
SECTIONS = (AUTHENTIK, POSTGRES)
MODULES = {AUTHENTIK: 'idp.recovery.authentik_restore', POSTGRES: 'idp.recovery.postgres_restore'}
DUMP_MODULES = {AUTHENTIK: 'idp.recovery.authentik_dump', POSTGRES: 'idp.recovery.postgres_dump'}
# what a restore of each section accepts besides its own sets
ACCEPTS = {AUTHENTIK: (AUTHENTIK,), POSTGRES: (POSTGRES, AUTHENTIK)}
# result keys that say how far a failed restore got
PROGRESS_KEYS = ('steps', 'plan', 'version_gate', 'tables', 'safety_set', 'health', 'rollback_health')


def database_sections(metadata):
    """The sections of a set's metadata that record a database payload, in SECTIONS order."""
    found = []
    for section in SECTIONS:
        database = (metadata.get(section) or {}).get('database') or {}
        if isinstance(database, dict) and database.get('payload'):
            found.append(section)
    return found


def pick_database(metadata, section, set_dir):
    """(source section, database facts) of the set for a restore by the module of ``section``.

    A restore takes its own section first. ``postgres`` also takes the database of an Authentik
    set (only the database: no version gate, files or ``.env``). A set the module cannot restore
    is refused with a message naming the module that can.
    """
    if section not in SECTIONS:
        raise RecoveryError('unknown restore section %r' % (section,))
    present = database_sections(metadata)
    kind = (metadata.get('set') or {}).get('kind')
    for candidate in ACCEPTS[section]:
        if candidate in present:
            return candidate, metadata[candidate]['database']
    if present:
        other = present[0]
        raise RecoveryError(
            'backup set %s is a %s set (kind %s, written by %s): %s cannot restore it; restore it with %s'
            % (set_dir, 'PostgreSQL' if other == POSTGRES else 'Authentik', kind or other, DUMP_MODULES[other],
               MODULES[section], MODULES[other]), path=set_dir, kind=kind)
    what = 'Authentik' if section == AUTHENTIK else 'PostgreSQL'
    raise RecoveryError('backup set %s holds no %s database dump%s' % (set_dir, what, ' (kind %s)' % kind if kind else ''),
                        path=set_dir, kind=kind)


def default_safety_root(set_dir):
    """``<root>/<service>-pre-restore`` for the set ``<root>/<service>/<stamp>``."""
    return os.path.join(os.path.dirname(os.path.dirname(set_dir)),
                        '%s-pre-restore' % os.path.basename(os.path.dirname(set_dir)))


def choose_owner(given, recorded, user, recorded_exists):
    """(owner, source) of the recreated database of a PostgreSQL restore.

    The owner given wins; else the owner recorded in the set when that role exists on the
    target; else the connecting user.
    """
    if given:
        return given, 'the owner option'
    if recorded and recorded_exists:
        return recorded, 'recorded in the set'
    if recorded:
        return user, 'the connecting user: the recorded owner %s does not exist on the target' % recorded
    return user, 'the connecting user'


def safety_encryption(payload_info, safety_recipients, passphrase):
    """How the safety set is encrypted: ('age'|'gpg'|'passphrase', recipients) or a RecoveryError.

    Whoever can read the set can read its safety set: the set's own recipients, unless
    safety_recipients (age) are given.
    """
    encryption = (payload_info or {}).get('encryption') or 'age'
    recipients = (payload_info or {}).get('recipients') or []
    if safety_recipients:
        return 'age', list(safety_recipients)
    if encryption in ('age', 'gpg'):
        return encryption, recipients
    if encryption == 'passphrase':
        if not passphrase:
            raise RecoveryError('the safety set of a passphrase-encrypted set needs passphrase')
        return 'passphrase', []
    raise RecoveryError('the set is unencrypted, so the safety set would be too; give safety_recipients '
                        'or safety_backup=false')


def error_text(exc):
    """The message of a RecoveryError, or type and text of any other exception."""
    if isinstance(exc, RecoveryError):
        return exc.msg
    return '%s: %s' % (type(exc).__name__, exc)


def as_recovery_error(exc):
    """``exc`` itself when it is a RecoveryError, else a RecoveryError saying what it was."""
    if isinstance(exc, RecoveryError):
        return exc
    return RecoveryError('unexpected error: %s' % error_text(exc))


def container_problem(name, state):
    """Why a started app container is not running (from its inspected State), or None while it runs."""
    if state.get('Running') or state.get('Restarting'):
        return None
    return 'app container %s is not running after it was started (status %s, exit code %s%s; see docker logs %s)' % (
        name, state.get('Status') or 'unknown', state.get('ExitCode'),
        ', %s' % state['Error'] if state.get('Error') else '', name)


# ---------------------------------------------------------------------------------------------
# the steps, timed

class Steps(object):
    """The steps of one restore, in order: name, seconds and details; a failed step has failed/error."""

    def __init__(self):
        self.done = []

    def run(self, name, action, *args, **kwargs):
        started = time.time()
        entry = {'name': name}
        try:
            detail = action(*args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-except
            entry.update(seconds=round(time.time() - started, 3), failed=True, error=error_text(exc))
            self.done.append(entry)
            raise
        entry['seconds'] = round(time.time() - started, 3)
        if isinstance(detail, dict):
            entry.update(detail)
        self.done.append(entry)
        return detail

    def total(self):
        return round(sum(step['seconds'] for step in self.done), 3)
