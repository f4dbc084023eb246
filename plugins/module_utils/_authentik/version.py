# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Authentik versions and the restore gate.

Authentik's version is in ``authentik_version_history``; a server refuses a database whose release
line (``YEAR.MONTH``) is neither its own nor the previous one, and downgrades are unsupported.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re

from ansible_collections.idp.recovery.plugins.module_utils import _common

VERSION_LABEL = 'org.opencontainers.image.version'

# release lines published so far; later lines are assumed to follow the two-month cadence
RELEASE_LINES = [
    (2023, 1), (2023, 2), (2023, 3), (2023, 4), (2023, 5), (2023, 6), (2023, 8), (2023, 10),
    (2024, 2), (2024, 4), (2024, 6), (2024, 8), (2024, 10), (2024, 12),
    (2025, 2), (2025, 4), (2025, 6), (2025, 8), (2025, 10), (2025, 12),
    (2026, 2), (2026, 4), (2026, 6), (2026, 8), (2026, 10),
]

_LINE = re.compile(r'^v?(\d{4})\.(\d{1,2})(?:\.(\d+))?')


def release_line(version):
    """(year, month) of an Authentik version string like 2025.10.1, or None."""
    return _common.release_line(_LINE, version)


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
