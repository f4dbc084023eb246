# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the Kotauth tenant archive envelope (``bkp1``).

A Kotauth tenant archive is one ASCII line ``bkp1.{salt}.{nonce}.{ciphertext+tag}``, each part
base64url: a 16-byte salt (Kotauth writes and reads only 16; 32 are read here too), a 12-byte nonce and
AES-256-GCM ciphertext with its 128-bit tag, under a key derived with PBKDF2-HMAC-SHA256 and
600,000 iterations from the export passphrase. The plaintext is Kotauth's JSON export (see
``archive.archive_facts``).

An archive's SHA-256 is recorded when it is written into a set, so that a later check tells an
altered archive apart from a wrong passphrase (GCM alone cannot).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import binascii
import hashlib
import json
import os
import re
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
    HAS_CRYPTOGRAPHY = False
else:
    HAS_CRYPTOGRAPHY = True

VERSION = 'bkp1'
ITERATIONS = 600000
SALT_SIZES = (16, 32)
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
MIN_PASSPHRASE = 16
# an archive is read whole to decrypt it (as Kotauth itself does); refuse absurd sizes
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024

WRONG_PASSPHRASE = 'wrong_passphrase'
UNSUPPORTED_VERSION = 'unsupported_version'
MALFORMED = 'malformed'
ALTERED = 'altered'

_VERSION_RE = re.compile(r'^bkp[0-9]+$')
_B64URL_RE = re.compile(r'^[A-Za-z0-9_-]*={0,2}$')


def require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise RecoveryError(missing_required_lib('cryptography', reason='to decrypt Kotauth bkp1 archives'),
                            exception=CRYPTOGRAPHY_IMPORT_ERROR)


class EnvelopeError(RecoveryError):
    """A bkp1 archive that cannot be opened; ``kind`` is one of the four reasons above."""

    def __init__(self, kind, msg, **details):
        super(EnvelopeError, self).__init__(msg, reason=kind, **details)
        self.kind = kind


def b64url_decode(text):
    if not _B64URL_RE.match(text):
        raise ValueError('not base64url')
    text = text.rstrip('=')
    if len(text) % 4 == 1:
        raise ValueError('impossible base64 length')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def parse_envelope(data):
    """(version, salt, nonce, ciphertext+tag) of a bkp1 archive given as bytes; raises EnvelopeError."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode('ascii')
        except UnicodeDecodeError:
            raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it is not one ASCII line')
    else:
        text = data
    text = text.strip()
    if not text:
        raise EnvelopeError(MALFORMED, 'the archive is empty')
    if '\n' in text or '\r' in text:
        raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it is more than one line')
    version = text.split('.', 1)[0]
    if version != VERSION:
        if _VERSION_RE.match(version):
            raise EnvelopeError(UNSUPPORTED_VERSION, 'archive envelope version %s is not supported (only %s): it comes '
                                'from a newer Kotauth; use a newer idp.recovery or Kotauth to read it' % (version, VERSION),
                                envelope_version=version)
        raise EnvelopeError(MALFORMED, 'not a Kotauth archive: it does not start with a version like "%s."' % VERSION)
    parts = text.split('.')
    if len(parts) != 4:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: %d dot-separated parts instead of 4 '
                            '(version, salt, nonce, ciphertext); the archive is truncated or damaged' % (VERSION, len(parts)))
    try:
        salt, nonce, sealed = [b64url_decode(part) for part in parts[1:]]
    except (ValueError, TypeError, binascii.Error):
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a part is not base64url; the archive is damaged' % VERSION)
    if len(salt) not in SALT_SIZES:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a %d-byte salt (expected %s)' % (
            VERSION, len(salt), ' or '.join(str(s) for s in SALT_SIZES)))
    if len(nonce) != NONCE_SIZE:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: a %d-byte nonce (expected %d)' % (VERSION, len(nonce), NONCE_SIZE))
    if len(sealed) < TAG_SIZE:
        raise EnvelopeError(MALFORMED, 'malformed %s envelope: the ciphertext is shorter than its tag; the archive is truncated'
                            % VERSION)
    return version, salt, nonce, sealed


def derive_key(passphrase, salt, iterations=ITERATIONS):
    if not isinstance(passphrase, bytes):
        passphrase = passphrase.encode('utf-8')
    return hashlib.pbkdf2_hmac('sha256', passphrase, salt, iterations, KEY_SIZE)


def decrypt_envelope(data, passphrase):
    """The plaintext of a bkp1 archive; raises EnvelopeError (malformed, unsupported, wrong passphrase)."""
    _version, salt, nonce, sealed = parse_envelope(data)
    require_cryptography()
    if not passphrase:
        raise RecoveryError('a passphrase is needed to open a Kotauth archive')
    try:
        return AESGCM(derive_key(passphrase, salt)).decrypt(nonce, sealed, None)
    except InvalidTag:
        raise EnvelopeError(WRONG_PASSPHRASE, 'wrong passphrase: the AES-GCM tag does not verify with the given passphrase')


def encrypt_envelope(plaintext, passphrase, salt=None, nonce=None, iterations=ITERATIONS):
    """A bkp1 archive of plaintext (for tests and drills; Kotauth writes the real ones)."""
    require_cryptography()
    salt = salt or os.urandom(SALT_SIZES[0])
    nonce = nonce or os.urandom(NONCE_SIZE)
    sealed = AESGCM(derive_key(passphrase, salt, iterations)).encrypt(nonce, plaintext, None)
    return ('%s.%s.%s.%s' % (VERSION, b64url_encode(salt), b64url_encode(nonce), b64url_encode(sealed))).encode('ascii')


def open_archive(data, passphrase, expected_sha256=None):
    """Check and decrypt an archive; return its export document (a dict).

    With ``expected_sha256`` (recorded when the archive was written) a different digest is an
    altered archive, told apart from a wrong passphrase. The envelope's form is checked first, so
    that an unsupported version or a malformed envelope is named as such.
    """
    parse_envelope(data)
    if expected_sha256:
        actual = hashlib.sha256(bytes(data)).hexdigest()
        if actual != expected_sha256:
            raise EnvelopeError(ALTERED, 'the archive was altered: its SHA-256 %s is not the %s recorded when it was '
                                'exported' % (actual, expected_sha256))
    plaintext = decrypt_envelope(data, passphrase)
    try:
        document = json.loads(plaintext.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EnvelopeError(MALFORMED, 'the archive decrypts but does not hold a Kotauth export (not JSON: %s)' % exc)
    finally:
        plaintext = None
    if not isinstance(document, dict):
        raise EnvelopeError(MALFORMED, 'the archive decrypts but does not hold a Kotauth export (not a JSON object)')
    return document


def read_limited(stream, limit=MAX_ARCHIVE_BYTES):
    buf = bytearray()
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise RecoveryError('the Kotauth archive is larger than %d bytes; refusing to hold it in memory' % limit)


def check_passphrase(passphrase):
    if not passphrase:
        raise RecoveryError('kotauth_passphrase is required (or KOTAUTH_BACKUP_PASSPHRASE)')
    if len(passphrase) < MIN_PASSPHRASE:
        raise RecoveryError('kotauth_passphrase must have at least %d characters (Kotauth refuses shorter ones)'
                            % MIN_PASSPHRASE)
