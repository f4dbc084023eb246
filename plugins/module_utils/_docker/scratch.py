# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the containers it creates and removes itself (scratch and staging databases).

Every such container carries ``SCRATCH_LABEL=true``; nothing without it is ever replaced or removed.
The PostgreSQL images keep their data directory in ``PGDATA`` (``DEFAULT_PGDATA`` when unset).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

SCRATCH_LABEL = 'io.idp-recovery.scratch'
CREATED_LABEL = 'io.idp-recovery.scratch.created'
CONFIG_LABEL = 'io.idp-recovery.scratch.config'
SUPERUSER_LABEL = 'io.idp-recovery.scratch.superuser'
DRILL_LABEL = 'io.idp-recovery.drill'
PITR_LABEL = 'io.idp-recovery.pitr'
DEFAULT_PGDATA = '/var/lib/postgresql/data'


def config_labels(info):
    """The labels of an inspected container or image ({} when none)."""
    return (info.get('Config') or {}).get('Labels') or {}


def is_scratch(info):
    """Whether an inspected container was made by this collection (it carries SCRATCH_LABEL=true)."""
    return config_labels(info).get(SCRATCH_LABEL) == 'true'


def config_env(info, key):
    """The value of KEY in the environment of an inspected container or image, or None when it is not set."""
    prefix = key + '='
    found = None
    for item in (info.get('Config') or {}).get('Env') or []:
        if item.startswith(prefix):
            found = item[len(prefix):]
    return found


def image_pgdata(image_info):
    """The data directory of a PostgreSQL image: its PGDATA, or DEFAULT_PGDATA when unset or empty."""
    return config_env(image_info, 'PGDATA') or DEFAULT_PGDATA
