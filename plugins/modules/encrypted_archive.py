#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: encrypted_archive
short_description: Turn a file or directory into one compressed, encrypted payload, and back
version_added: 0.1.0
description:
  - With O(state=present), streams O(src) (a file, or a directory as a POSIX tar stream) through a compressor and an
    encryptor into the payload file O(dest), hashing it on the way and renaming it into place only when every step
    succeeded. A failed run leaves no partial payload.
  - With O(state=extracted), streams the payload O(src) back through the decryptor and decompressor into O(dest), a
    directory for tar payloads, a file for single-file payloads. Extraction happens in a temporary directory beside
    O(dest) and is moved into place only when everything succeeded; a failed extraction leaves nothing behind.
  - Extraction refuses, naming the member, absolute names, C(..), devices, FIFOs, duplicate names, hard links to
    anything but an earlier regular member, members below a symbolic link, and symbolic links that lead outside
    O(dest). A link is resolved through every other link of the archive (a chain such as C(a/b -> ..) and
    C(x -> a/b/../../etc) is refused), and links are created only after the last member, once all of them are known
    to stay inside.
  - When the payload's backup set records the size of its source (C(source.bytes) in its metadata),
    extraction stops as soon as it passes that size, with an error saying so, and removes what it wrote. A payload
    without a recorded size is bounded only by the free space beside O(dest).
  - A payload O(src) inside a complete backup set is extracted only when the set's manifest lists it, it is a regular
    file reached without any symbolic link, and it and C(metadata.json) match the manifest and the SHA-256 recorded
    for the payload; a newer C(format_version) of the set is refused too. See M(idp.recovery.backup_set).
  - Every payload is a stock format. C(age -d -i KEY payload | zstd -d | tar -x) (or C(gpg -d), C(gzip -d)) undoes it
    without this collection.
  - Memory stays flat whatever the payload size; the work is done by C(zstd)/C(gzip), C(age) and C(gpg) in a pipeline.
  - When O(dest) lies inside an open backup set (see M(idp.recovery.backup_set)), the payload's description (format,
    compression, encryption, public recipients, sizes, content digest) is recorded for the set's C(metadata.json).
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
  - idp.recovery.encryption.ENCRYPT
  - idp.recovery.encryption.DECRYPT
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - With O(state=present) the payload is rewritten only when the source content, compression, encryption or
        recipients differ from what O(dest) records. Encryption is not deterministic, so the comparison uses the
        content digest of the source recorded in the set's metadata.
      - With O(state=extracted) nothing is written when O(dest) already holds the recorded content.
options:
  src:
    description:
      - With O(state=present), the file or directory to archive.
      - With O(state=extracted), the payload file to extract.
    type: path
    required: true
  dest:
    description:
      - With O(state=present), the payload file to write, normally inside a backup set. Suggested names end with
        the format and filters, for example C(media.tar.zst.age) or C(authentik.dump.zst.age).
      - With O(state=extracted), the directory (tar payloads) or file (single-file payloads) to create.
    type: path
    required: true
  state:
    description:
      - V(present) writes the payload, V(extracted) restores its content.
    type: str
    choices: [present, extracted]
    default: present
  compression:
    description:
      - The compressor of the payload. Defaults to V(zstd) when writing. When extracting, the compression recorded in
        the set's metadata (or told by the file name) is used and this option only overrides it.
    type: str
    choices: [zstd, gzip, none]
  compression_level:
    description:
      - Compression level (zstd 1-19, default 3; gzip 1-9, default 6).
    type: int
  compression_threads:
    description:
      - With O(state=present) and O(compression=zstd), the number of zstd worker threads (C(zstd -T)). V(0), the
        default, starts one per CPU core, so compression, the slowest step of the pipeline, is not held to one core.
      - V(1) compresses on one core, as a plain C(zstd -3) does; use it to leave the other cores to the services
        of a busy host.
      - The payload is a standard zstd stream whatever the number, and the same size at the same level (zstd
        splits its input the same way for any number of workers). Measured on 2 cores, level 3 - V(0) about 0.6x
        the wall time of V(1), a few percent more CPU time in all, and about 14 MiB more memory for C(zstd)
        (about 62 MiB instead of 48 MiB).
    type: int
    default: 0
  format:
    description:
      - Only for O(state=extracted) on a payload outside a backup set whose name does not tell its format.
      - V(tar) for a directory payload, V(raw) for a single-file payload.
    type: str
    choices: [tar, raw]
  force:
    description:
      - With O(state=present), rewrite O(dest) even when it already holds the same content.
      - With O(state=extracted), replace an existing, different O(dest). The old content is moved aside and removed
        only after the new content is in place. Without it a different, non-empty O(dest) is refused.
    type: bool
    default: false
notes:
  - Needs C(age), C(gpg), C(zstd) or C(gzip) on the managed host, as the chosen options require.
  - Extraction refuses absolute member paths, C(..), symbolic links pointing outside O(dest), hard links to anything
    but an earlier regular member, device files and FIFOs. Ownership is restored only when running as root.
seealso:
  - module: idp.recovery.backup_set
  - module: idp.recovery.backup_set_info
'''

EXAMPLES = r'''
- name: Archive the media directory into an open backup set, encrypted to two age recipients
  idp.recovery.encrypted_archive:
    src: /srv/authentik/data/media
    dest: "{{ set_path }}/media.tar.zst.age"
    recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsr4Wv7qFZ4ZrL8mS7rY8l1s3dSvXfOq8h3S9tX2Q0k backup@example.org

- name: Archive one file with a passphrase (OpenPGP symmetric, gpg -d undoes it)
  idp.recovery.encrypted_archive:
    src: /srv/authentik/.env
    dest: "{{ set_path }}/env.zst.gpg"
    encryption: passphrase
    passphrase: "{{ vault_backup_passphrase }}"
  no_log: true

- name: Restore the media directory from a payload
  idp.recovery.encrypted_archive:
    src: "{{ set_path }}/media.tar.zst.age"
    dest: /srv/authentik/data/media
    state: extracted
    identity: /etc/idp-recovery/age.key
    force: true
'''

RETURN = r'''
src:
  description: The source (O(state=present)) or payload (O(state=extracted)).
  returned: always
  type: str
dest:
  description: The payload (O(state=present)) or restored path (O(state=extracted)).
  returned: always
  type: str
format:
  description: V(tar) for a directory payload, V(raw) for a single-file payload.
  returned: always
  type: str
  sample: tar
payload:
  description: What the payload records (public data only).
  returned: O(state=present) and not in check mode
  type: dict
  contains:
    encryption:
      description: The encryption.
      type: str
      sample: age
    recipients:
      description: The public recipients (age recipients or OpenPGP fingerprints).
      type: list
      elements: str
    compression:
      description: The compression.
      type: str
      sample: zstd
    size:
      description: Size of the payload file in bytes.
      type: int
    sha256:
      description: SHA-256 of the payload file.
      type: str
    seconds:
      description: Time spent writing the payload.
      type: float
    source:
      description: The source path, type, content digest, file count and byte count.
      type: dict
files:
  description: Number of files extracted.
  returned: O(state=extracted) and changed, not in check mode
  type: int
bytes:
  description: Number of content bytes extracted.
  returned: O(state=extracted) and changed, not in check mode
  type: int
digest_checked:
  description: Whether the extracted content was compared with the content digest recorded at backup time.
  returned: O(state=extracted) and changed, not in check mode
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    check_encryption_allowed,
    decrypt_argument_spec,
    encrypt_argument_spec,
    keys_from_params,
)
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._payload import create_payload, extract_payload


def run(module):
    params = module.params
    if params['state'] == 'present':
        encryption = params['encryption'] or 'age'
        check_encryption_allowed(encryption, params['allow_unencrypted'])
        return create_payload(
            params['src'], params['dest'], encryption,
            (params['compression'] or 'zstd', params['compression_level'], params['compression_threads']),
            recipients=params['recipients'], recipients_file=params['recipients_file'],
            passphrase=params['passphrase'], gpg_homedir=params['gpg_homedir'],
            force=params['force'], check_mode=module.check_mode)
    return extract_payload(
        params['src'], params['dest'], keys_from_params(params), encryption=params['encryption'],
        compression=params['compression'], fmt=params['format'], force=params['force'],
        check_mode=module.check_mode)


def main():
    argument_spec = dict(
        src=dict(type='path', required=True),
        dest=dict(type='path', required=True),
        state=dict(type='str', choices=['present', 'extracted'], default='present'),
        compression=dict(type='str', choices=['zstd', 'gzip', 'none']),
        compression_level=dict(type='int'),
        compression_threads=dict(type='int', default=0),
        format=dict(type='str', choices=['tar', 'raw']),
        force=dict(type='bool', default=False),
    )
    argument_spec.update(encrypt_argument_spec())
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, run)


if __name__ == '__main__':
    main()
