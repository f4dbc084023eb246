#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: offsite_fetch
short_description: Fetch a complete backup set back from an offsite target and verify it
version_added: 0.1.0
description:
  - Copies one complete backup set C(<target>/<service>/<stamp>/) from an rclone remote, an rsync target (local or
    over SSH) or a mounted directory into C(<dest>/<service>/<stamp>/) on this host, for a restore or a drill.
  - Picks the newest complete set of O(service) on the target, or the one of O(stamp). A set without its
    C(MANIFEST.sha256) on the target is incomplete and is refused.
  - Reads the remote manifest first, then downloads every file it lists (payloads and C(metadata.json)), each into a
    temporary file that is checked against the manifest's SHA-256 before it is renamed into place (mode 0600, in
    directories of mode 0700). The manifest is written last, so an interrupted or failed fetch never looks like a
    complete set; a re-run keeps the files that already match and fetches the rest.
  - Finally every checksum of the local copy is verified again.
  - When O(dest) already holds a complete copy whose checksums match, nothing is downloaded (C(changed=false)). A
    complete local copy that does not match loses its manifest first and is fetched again.
  - Transient failures are retried with a growing delay. The offsite copy is only read, never changed.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.storage
attributes:
  check_mode:
    support: full
    details:
      - Lists the target, reads the remote manifest and reports what would be downloaded (RV(downloaded)); writes
        nothing on this host.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - rclone for O(backend=rclone); rsync (and ssh) for O(backend=rsync).
options:
  service:
    description:
      - The service whose set is fetched (the directory below O(target)). It must be one safe directory name.
    type: str
    required: true
  stamp:
    description:
      - The set to fetch, C(YYYYMMDDTHHMMSSZ). Defaults to the newest complete set of O(service) on the target.
    type: str
  dest:
    description:
      - The local root the set goes to, as C(<dest>/<service>/<stamp>/). Created with mode 0700 when missing.
      - A C(<dest>/<service>) that is a symbolic link is refused; it is never followed.
    type: path
    required: true
notes:
  - The payloads stay encrypted; verify and decrypt them with M(idp.recovery.backup_set) (O(idp.recovery.backup_set#module:state=verified)).
seealso:
  - module: idp.recovery.offsite_upload
  - module: idp.recovery.backup_set
'''

EXAMPLES = r'''
- name: Fetch the newest complete authentik set from the S3 bucket
  idp.recovery.offsite_fetch:
    backend: rclone
    target: offsite:idp-backups/prod
    rclone_remote_type: s3
    rclone_remote_options:
      provider: Minio
      endpoint: https://s3.example.org
      access_key_id: "{{ vault_s3_access_key }}"
      secret_access_key: "{{ vault_s3_secret_key }}"
    service: authentik
    dest: /var/backups/idp-fetched
  register: fetched

- name: Verify it, decrypting every payload
  idp.recovery.backup_set:
    path: "{{ fetched.path }}"
    state: verified
    identity: /etc/idp-recovery/age.key
'''

RETURN = r'''
path:
  description: The local set directory.
  returned: always
  type: str
  sample: /var/backups/idp-fetched/authentik/20261122T030000Z
service:
  description: The service of the set.
  returned: always
  type: str
stamp:
  description: The stamp of the set.
  returned: always
  type: str
  sample: 20261122T030000Z
source:
  description: Where the set was read (never a secret).
  returned: always
  type: str
  sample: offsite:idp-backups/prod/authentik/20261122T030000Z
available:
  description: The stamps of the complete sets of O(service) on the target, oldest first.
  returned: always
  type: list
  elements: str
downloaded:
  description: The files downloaded (or, in check mode, to be downloaded), the manifest last.
  returned: always
  type: list
  elements: str
bytes:
  description: Bytes downloaded.
  returned: always
  type: int
size_bytes:
  description: Total size of the files of the set.
  returned: always
  type: int
files:
  description: The checksum verification of the local copy (path, sha256, size, ok).
  returned: unless in check mode
  type: list
  elements: dict
retries:
  description: The transient failures that were retried, with the delay before each retry.
  returned: always
  type: list
  elements: dict
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set, _storage
from ansible_collections.idp.recovery.plugins.module_utils._common import (
    FILE_MODE,
    RecoveryError,
    ensure_dir,
    fsync_dir,
    parse_stamp,
    remove_quietly,
    temp_path_beside,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._stream import hash_file

MANIFEST_LINE = re.compile(r'^([0-9a-f]{64}) [ *](.+)$')


def parse_manifest(data, source):
    entries = []
    for number, line in enumerate(data.decode('utf-8', 'replace').splitlines(), 1):
        if not line:
            continue
        match = MANIFEST_LINE.match(line)
        if not match:
            raise RecoveryError('%s line %d is not a sha256sum line: the offsite manifest is damaged' % (source, number))
        rel = _backup_set.safe_relpath(match.group(2))
        if rel == _backup_set.MANIFEST:
            raise RecoveryError('%s lists itself' % source)
        entries.append((rel, match.group(1)))
    if not entries:
        raise RecoveryError('%s lists no file' % source)
    return entries


def choose(sets, service, stamp, where):
    complete = [item for item in sets if item['complete']]
    stamps = [item['stamp'] for item in complete]
    if stamp:
        found = [item for item in sets if item['stamp'] == stamp]
        if not found:
            raise RecoveryError('the target %s holds no set %s/%s; complete sets there: %s'
                                % (where, service, stamp, ', '.join(stamps) or 'none'), available=stamps)
        if not found[0]['complete']:
            raise RecoveryError('the set %s/%s on %s is incomplete (no %s): it is never restored; complete sets there: %s'
                                % (service, stamp, where, _backup_set.MANIFEST, ', '.join(stamps) or 'none'),
                                available=stamps)
        return found[0], stamps
    if not complete:
        raise RecoveryError('the target %s holds no complete set of %s' % (where, service), available=stamps)
    return complete[-1], stamps


def local_copy_ok(set_dir):
    if not _backup_set.is_complete(set_dir):
        return False, None
    try:
        results, unlisted = _backup_set.verify_checksums(set_dir)
    except RecoveryError:
        return False, None
    return all(item['ok'] for item in results), (results, unlisted)


def run(module):
    params = module.params
    service, stamp = params['service'], params['stamp']
    _backup_set.check_service_name(service)
    if stamp and parse_stamp(stamp) is None:
        raise RecoveryError('%r is not a set stamp (YYYYMMDDTHHMMSSZ)' % stamp)
    storage = _storage.storage_from_params(params)
    try:
        result = fetch(module, storage, service, stamp)
    finally:
        storage.cleanup()
    result['retries'] = storage.retried
    return result


def fetch(module, storage, service, stamp):
    dest = os.path.abspath(module.params['dest'])
    _backup_set.check_service_dir(os.path.join(dest, service))
    chosen, stamps = choose(_storage.list_remote_sets(storage, service), service, stamp, storage.describe())
    rel_dir = '%s/%s' % (service, chosen['stamp'])
    set_dir = os.path.join(dest, service, chosen['stamp'])
    result = {'changed': False, 'path': set_dir, 'service': service, 'stamp': chosen['stamp'],
              'source': storage.describe(rel_dir), 'available': stamps, 'downloaded': [], 'bytes': 0,
              'size_bytes': chosen['size_bytes']}

    ok, verified = local_copy_ok(set_dir)
    if ok:
        result['files'] = verified[0]
        if verified[1]:
            module.warn('files not listed in the manifest (never restored): %s' % ', '.join(verified[1]))
        return result

    manifest_rel = rel_dir + '/' + _backup_set.MANIFEST
    manifest = storage.read_file(manifest_rel)
    entries = parse_manifest(manifest, storage.describe(manifest_rel))
    result['changed'] = True
    if module.check_mode:
        result['downloaded'] = [rel for rel, _digest in entries] + [_backup_set.MANIFEST]
        return result

    ensure_dir(set_dir)
    # a damaged complete copy stops looking complete before anything in it changes
    if os.path.exists(os.path.join(set_dir, _backup_set.MANIFEST)):
        os.unlink(os.path.join(set_dir, _backup_set.MANIFEST))
        fsync_dir(set_dir)
    for rel, expected in entries:
        final = os.path.join(set_dir, rel)
        if os.path.isfile(final) and hash_file(final)[0] == expected:
            continue
        ensure_dir(os.path.dirname(final))
        tmp = temp_path_beside(final, 'fetch')
        try:
            storage.download(rel_dir + '/' + rel, tmp)
            actual, size = hash_file(tmp)
            if actual != expected:
                raise RecoveryError('the offsite copy of %s is damaged: its SHA-256 is %s, the manifest says %s; the local '
                                    'copy %s stays incomplete (no manifest) and is never restored'
                                    % (storage.describe(rel_dir + '/' + rel), actual, expected, set_dir), file=rel)
            os.chmod(tmp, FILE_MODE)
            os.rename(tmp, final)
        except BaseException:
            remove_quietly(tmp)
            raise
        fsync_dir(os.path.dirname(final))
        result['downloaded'].append(rel)
        result['bytes'] += size
    write_file_atomic(os.path.join(set_dir, _backup_set.MANIFEST), manifest)
    result['downloaded'].append(_backup_set.MANIFEST)
    result['bytes'] += len(manifest)

    results, unlisted = _backup_set.verify_checksums(set_dir)
    failed = [item['error'] for item in results if not item['ok']]
    if failed:
        raise RecoveryError('the fetched set %s failed verification: %s' % (set_dir, '; '.join(failed)), files=results)
    if unlisted:
        module.warn('files not listed in the manifest (never restored): %s' % ', '.join(unlisted))
    result['files'] = results
    return result


def main():
    argument_spec = _storage.storage_argument_spec()
    argument_spec.update(
        service=dict(type='str', required=True),
        stamp=dict(type='str'),
        dest=dict(type='path', required=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
