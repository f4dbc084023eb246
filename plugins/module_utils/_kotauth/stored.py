# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: Kotauth tenant archives inside a backup set.

An archive is stored as ``kotauth/<slug>.bkp1[.zst|.gz][.age|.gpg]`` under the set's own
compression and encryption; ``metadata.json`` records its safe facts under ``kotauth.tenants.<slug>``
and its envelope's SHA-256. These read it back out, whole, and open it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._crypto import payload_suffix
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.archive import archive_facts
from ansible_collections.idp.recovery.plugins.module_utils._kotauth.envelope import open_archive, read_limited
from ansible_collections.idp.recovery.plugins.module_utils._payload import describe_payload, read_payload

PAYLOAD_DIR = 'kotauth'
CONTENT = 'kotauth-bkp1'


def payload_rel(slug, compressor, backend):
    """The payload's path in the set, named after the set's compression and encryption."""
    return '%s/%s.bkp1%s' % (PAYLOAD_DIR, slug, payload_suffix(compressor, backend))


def recorded_tenants(set_dir):
    """The tenants ``metadata.json`` records, by slug."""
    return ((_backup_set.read_metadata(set_dir).get('kotauth') or {}).get('tenants') or {})


def read_archive(set_dir, slug, keys, passphrase):
    """(archive bytes, export document, facts, recorded tenant metadata) of one tenant of a complete set."""
    tenants = recorded_tenants(set_dir)
    if slug not in tenants:
        raise RecoveryError('backup set %s holds no Kotauth tenant %s (it holds: %s)' % (
            set_dir, slug, ', '.join(sorted(tenants)) or 'none'), path=set_dir)
    recorded = tenants[slug]
    path = _backup_set.payload_path(set_dir, recorded.get('payload'), what='kotauth.tenants.%s.payload' % slug)
    data = read_envelope_payload(path, keys)
    document = open_archive(data, passphrase, recorded.get('envelope_sha256'))
    return data, document, archive_facts(document), recorded


def read_envelope_payload(path, keys, description=None):
    """The archive bytes inside a payload (through the set's encryption and compression)."""
    description = description or describe_payload(path)
    return read_payload(path, description, keys, read_limited)


def verify_payload(path, keys, passphrase, recorded_info):
    """Offline check of a bkp1 payload: outer layer, digest, envelope and GCM tag."""
    data = read_envelope_payload(path, keys)
    expected = (recorded_info.get('envelope') or {}).get('sha256')
    document = open_archive(data, passphrase, expected)
    facts = archive_facts(document)
    return {'plain_bytes': len(data), 'bkp1': True, 'schema_version': facts['schema_version']}
