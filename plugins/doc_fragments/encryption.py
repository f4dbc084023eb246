# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Options to write encrypted payloads.
    ENCRYPT = r'''
options:
  encryption:
    description:
      - How payloads are encrypted. Every choice is undone by a stock tool without this collection.
      - V(age) encrypts to O(recipients) or O(recipients_file) (C(age -d -i KEY)).
      - V(gpg) encrypts to OpenPGP keys named by fingerprint in O(recipients) (C(gpg -d)).
      - V(passphrase) encrypts symmetrically with AES-256 through OpenPGP (C(gpg -d), asks the passphrase).
      - V(none) writes plaintext and is refused unless O(allow_unencrypted=true).
      - Defaults to V(age) when writing. When reading, the encryption recorded in the set's metadata (or
        read from the payload header) is used and this option only overrides it.
    type: str
    choices: [age, gpg, passphrase, none]
  recipients:
    description:
      - With O(encryption=age), age X25519 recipients (C(age1...)) and SSH public keys (C(ssh-ed25519 ...), C(ssh-rsa ...)).
      - With O(encryption=gpg), OpenPGP key fingerprints present in the keyring of O(gpg_homedir).
      - Public parts only; they are recorded in the set's metadata.
    type: list
    elements: str
    default: []
  recipients_file:
    description:
      - A file of age recipients, one a line (C(age -R)). Combined with O(recipients).
    type: path
  allow_unencrypted:
    description:
      - Permit O(encryption=none). Plaintext payloads are refused otherwise.
    type: bool
    default: false
'''

    # Options to read (decrypt) payloads.
    DECRYPT = r'''
options:
  identity:
    description:
      - Path of an age identity file (C(age-keygen) output or an SSH private key) on the managed host, to decrypt age payloads.
    type: path
  identity_content:
    description:
      - The content of an age identity, to decrypt age payloads without a key file on disk.
      - Passed to C(age) through an inherited pipe, never on a command line or in a file.
    type: str
  passphrase:
    description:
      - The passphrase for payloads encrypted with V(passphrase), or for the OpenPGP secret key that decrypts V(gpg) payloads.
      - Passed to C(gpg) through a file descriptor, never on a command line, in the environment or in a file.
    type: str
  gpg_homedir:
    description:
      - The GnuPG home directory holding the keys. Defaults to the C(gpg) default of the user running the module.
    type: path
'''
