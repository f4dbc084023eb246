# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: encryption and compression backends.

Every backend is a stock command-line tool, so that any payload can be undone without this
collection (``age -d``, ``gpg -d``, ``zstd -d``, ``gzip -d``). Backends only build pipeline
stages; ``_stream`` runs them.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._stream import Stage

ENCRYPTIONS = ('age', 'gpg', 'passphrase', 'none')
COMPRESSIONS = ('zstd', 'gzip', 'none')

AGE_MAGIC = b'age-encryption.org/'

_AGE_RECIPIENT = re.compile(r'^(age1[0-9a-z]{50,}|ssh-ed25519 \S+|ssh-rsa \S+)(\s.*)?$')
_FINGERPRINT = re.compile(r'^(0x)?([0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$')

WRONG_KEY = 'wrong_key'
CORRUPT = 'corrupt'
TOOL = 'tool'
UNWRITABLE = 'unwritable'

# what a stage says when the place it writes to is full: the payload is fine, the destination is not
WRITE_ERRORS = ('No space left on device', 'Disk quota exceeded', 'File too large')


class Keys(object):
    """What a run may use to decrypt: none of these is ever logged or returned."""

    def __init__(self, identity=None, identity_content=None, passphrase=None, gpg_homedir=None):
        self.identity = identity
        self.identity_content = identity_content
        self.passphrase = passphrase
        self.gpg_homedir = gpg_homedir

    def can_decrypt(self, encryption):
        if encryption == 'none':
            return True
        if encryption == 'age':
            return bool(self.identity or self.identity_content)
        if encryption == 'passphrase':
            return bool(self.passphrase)
        # gpg: the secret key lives in the keyring; a passphrase may unlock it
        return True


class EncryptionBackend(object):
    name = None

    def encrypt_stage(self):
        raise NotImplementedError

    def decrypt_stage(self, keys):
        raise NotImplementedError

    def public_description(self):
        return {'encryption': self.name}

    def classify(self, stderr):
        return CORRUPT


class AgeBackend(EncryptionBackend):
    """age (X25519 and SSH recipients): the default."""

    name = 'age'

    def __init__(self, recipients=None, recipients_file=None):
        self.recipients = [r.strip() for r in (recipients or []) if r and r.strip()]
        self.recipients_file = recipients_file

    def validate_for_encryption(self):
        if not self.recipients and not self.recipients_file:
            raise RecoveryError('encryption=age needs recipients or recipients_file; refusing to write an unprotected payload')
        for recipient in self.recipients:
            if not _AGE_RECIPIENT.match(recipient):
                raise RecoveryError('not an age recipient (expected age1..., ssh-ed25519 or ssh-rsa public key): %s'
                                    % recipient[:80])
        if self.recipients_file:
            if not os.path.isfile(self.recipients_file):
                raise RecoveryError('recipients_file %s does not exist' % self.recipients_file)
            if not self.file_recipients():
                raise RecoveryError('recipients_file %s holds no recipient' % self.recipients_file)

    def file_recipients(self):
        result = []
        try:
            with open(self.recipients_file, 'r') as handle:
                for line in handle:
                    line = line.strip()
                    if line and not line.startswith('#'):
                        if not _AGE_RECIPIENT.match(line):
                            raise RecoveryError('recipients_file %s: not an age recipient: %s'
                                                % (self.recipients_file, line[:80]))
                        result.append(line)
        except (OSError, IOError) as exc:
            raise RecoveryError('cannot read recipients_file %s: %s' % (self.recipients_file, exc.strerror or exc))
        return result

    def encrypt_stage(self):
        self.validate_for_encryption()
        argv = ['age', '--encrypt']
        for recipient in self.recipients:
            argv += ['-r', recipient]
        if self.recipients_file:
            argv += ['-R', self.recipients_file]
        return Stage('age', argv)

    def decrypt_stage(self, keys):
        if keys.identity_content:
            content = keys.identity_content
            if not isinstance(content, bytes):
                content = content.encode('utf-8')
            if not content.endswith(b'\n'):
                content += b'\n'
            return Stage('age', ['age', '--decrypt', '-i', '/dev/fd/{fd}'], secret=content)
        if keys.identity:
            if not os.path.isfile(keys.identity):
                raise RecoveryError('identity file %s does not exist' % keys.identity)
            return Stage('age', ['age', '--decrypt', '-i', keys.identity])
        raise RecoveryError('decrypting an age payload needs identity or identity_content')

    def public_description(self):
        recipients = list(self.recipients)
        if self.recipients_file and os.path.isfile(self.recipients_file):
            recipients += self.file_recipients()
        return {'encryption': self.name, 'recipients': recipients}

    def classify(self, stderr):
        if 'no identity matched' in stderr:
            return WRONG_KEY
        if 'failed to read' in stderr and 'identit' in stderr:
            return TOOL
        return CORRUPT


def _gpg_base(keys_or_homedir):
    argv = ['gpg', '--batch', '--no-tty', '--quiet', '--yes']
    homedir = keys_or_homedir
    if isinstance(keys_or_homedir, Keys):
        homedir = keys_or_homedir.gpg_homedir
    if homedir:
        argv += ['--homedir', homedir]
    return argv


def _gpg_classify(stderr):
    if 'Bad session key' in stderr or 'No secret key' in stderr or 'Bad passphrase' in stderr:
        return WRONG_KEY
    return CORRUPT


class GpgBackend(EncryptionBackend):
    """OpenPGP public-key encryption to recipients named by fingerprint."""

    name = 'gpg'

    def __init__(self, recipients=None, gpg_homedir=None):
        self.recipients = [r.replace(' ', '') for r in (recipients or []) if r and r.strip()]
        self.gpg_homedir = gpg_homedir

    def encrypt_stage(self):
        if not self.recipients:
            raise RecoveryError('encryption=gpg needs recipients (key fingerprints); refusing to write an unprotected payload')
        for recipient in self.recipients:
            if not _FINGERPRINT.match(recipient):
                raise RecoveryError('gpg recipients must be key fingerprints (40 or 64 hex digits, or a 16-digit key id): %s'
                                    % recipient[:80])
        argv = _gpg_base(self.gpg_homedir) + ['--trust-model', 'always', '--encrypt']
        for recipient in self.recipients:
            argv += ['--recipient', recipient]
        return Stage('gpg', argv + ['--output', '-'])

    def decrypt_stage(self, keys):
        decrypt = ['--decrypt', '--output', '-']
        if keys.passphrase:
            # the passphrase unlocks the secret key
            return Stage('gpg', _gpg_base(keys) + ['--pinentry-mode', 'loopback', '--passphrase-fd', '{fd}'] + decrypt,
                         secret=keys.passphrase.encode('utf-8'))
        return Stage('gpg', _gpg_base(keys) + decrypt)

    def public_description(self):
        return {'encryption': self.name, 'recipients': list(self.recipients)}

    def classify(self, stderr):
        return _gpg_classify(stderr)


class PassphraseBackend(EncryptionBackend):
    """OpenPGP symmetric encryption (AES-256) with a passphrase; undone by ``gpg -d``."""

    name = 'passphrase'

    def __init__(self, passphrase=None, gpg_homedir=None):
        self.passphrase = passphrase
        self.gpg_homedir = gpg_homedir

    @staticmethod
    def _secret_stage(argv, passphrase, homedir):
        if not passphrase:
            raise RecoveryError('encryption=passphrase needs a passphrase')
        return Stage('gpg', _gpg_base(homedir) + [
            '--pinentry-mode', 'loopback', '--no-symkey-cache', '--passphrase-fd', '{fd}'] + argv,
            secret=passphrase.encode('utf-8'))

    def encrypt_stage(self):
        return self._secret_stage(['--symmetric', '--cipher-algo', 'AES256', '--s2k-digest-algo', 'SHA512',
                                   '--s2k-mode', '3', '--output', '-'], self.passphrase, self.gpg_homedir)

    def decrypt_stage(self, keys):
        return self._secret_stage(['--decrypt', '--output', '-'], keys.passphrase, keys.gpg_homedir or self.gpg_homedir)

    def classify(self, stderr):
        return _gpg_classify(stderr)


class NoEncryption(EncryptionBackend):
    name = 'none'

    def encrypt_stage(self):
        return None

    def decrypt_stage(self, keys):
        return None

    def public_description(self):
        return {'encryption': 'none'}


def encryption_backend(name, recipients=None, recipients_file=None, passphrase=None, gpg_homedir=None):
    if name == 'age':
        return AgeBackend(recipients, recipients_file)
    if name == 'gpg':
        return GpgBackend(recipients, gpg_homedir)
    if name == 'passphrase':
        return PassphraseBackend(passphrase, gpg_homedir)
    if name == 'none':
        return NoEncryption()
    raise RecoveryError('unknown encryption %r (choose from %s)' % (name, ', '.join(ENCRYPTIONS)))


class Compression(object):
    def __init__(self, name, level=None, threads=None):
        """threads: zstd worker threads (``zstd -T``; 0: one per core); None leaves zstd's own default."""
        if name not in COMPRESSIONS:
            raise RecoveryError('unknown compression %r (choose from %s)' % (name, ', '.join(COMPRESSIONS)))
        self.name = name
        self.level = level
        self.threads = threads

    def compress_stage(self):
        if self.name == 'zstd':
            level = 3 if self.level is None else self.level
            if not 1 <= level <= 19:
                raise RecoveryError('compression_level for zstd must be between 1 and 19')
            threads = []
            if self.threads is not None:
                if not 0 <= self.threads <= 256:
                    raise RecoveryError('compression_threads must be between 0 and 256')
                threads = ['-T%d' % self.threads]
            return Stage('zstd', ['zstd', '-q', '-c', '--no-progress', '-%d' % level] + threads)
        if self.name == 'gzip':
            level = 6 if self.level is None else self.level
            if not 1 <= level <= 9:
                raise RecoveryError('compression_level for gzip must be between 1 and 9')
            return Stage('gzip', ['gzip', '-c', '-n', '-%d' % level])
        return None

    def decompress_stage(self):
        if self.name == 'zstd':
            return Stage('zstd', ['zstd', '-q', '-d', '-c', '--no-progress'])
        if self.name == 'gzip':
            return Stage('gzip', ['gzip', '-d', '-c'])
        return None

    def test_stage(self):
        """A stage that decompresses and checks its whole input and writes nothing, or None.

        ``zstd -t`` does what ``zstd -d -c > /dev/null`` does without a pipe for its output; its
        stderr ends with its report ``NAME : N bytes`` (see reported_size).
        """
        if self.name == 'zstd':
            return Stage('zstd', ['zstd', '-t', '--no-progress'])
        return None


_TESTED_REPORT = re.compile(r':\s*(\d+) bytes\s*$')


def reported_size(report):
    """The decompressed size that a test stage reported on stderr, or None."""
    for line in reversed(report.splitlines()):
        match = _TESTED_REPORT.search(line)
        if match:
            return int(match.group(1))
    return None


def encrypt_stages(compression, backend):
    return [s for s in (compression.compress_stage(), backend.encrypt_stage()) if s is not None]


def decrypt_stages(compression, backend, keys):
    return [s for s in (backend.decrypt_stage(keys), compression.decompress_stage()) if s is not None]


def sniff_encryption(path):
    """Tell the encryption of a payload from its first bytes: age, gpg, passphrase or None."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(32)
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)
    if head.startswith(AGE_MAGIC):
        return 'age'
    if head and head[0] & 0x80:
        first = head[0]
        tag = (first & 0x3f) if first & 0x40 else ((first >> 2) & 0x0f)
        if tag == 1:
            return 'gpg'
        if tag == 3:
            return 'passphrase'
    return None


COMPRESSION_SUFFIX = {'zstd': '.zst', 'gzip': '.gz', 'none': ''}
ENCRYPTION_SUFFIX = {'age': '.age', 'gpg': '.gpg', 'passphrase': '.gpg', 'none': ''}


def payload_suffix(compressor, backend):
    """The suffixes a payload written through ``compressor`` and ``backend`` carries, e.g. ``.zst.age``
    (the reverse of ``describe_from_name``)."""
    return COMPRESSION_SUFFIX.get(compressor.name, '') + ENCRYPTION_SUFFIX.get(backend.name, '')


def describe_from_name(path):
    """Guess (format, compression, encryption) from suffixes like .tar.zst.age."""
    parts = os.path.basename(path).split('.')[1:]
    encryption = {'age': 'age', 'gpg': 'gpg', 'pgp': 'gpg', 'asc': 'gpg'}.get(parts[-1] if parts else '')
    if encryption:
        parts = parts[:-1]
    compression = {'zst': 'zstd', 'zstd': 'zstd', 'gz': 'gzip'}.get(parts[-1] if parts else '', 'none')
    if compression != 'none':
        parts = parts[:-1]
    fmt = 'tar' if parts and parts[-1] == 'tar' else 'raw'
    return fmt, compression, encryption


def explain_failure(path, failures, backend):
    """Turn pipeline failures into one clear sentence naming the payload."""
    # a stage that writes the output itself and found no room: the others only saw it stop
    for name, code, tail in failures:
        for error in WRITE_ERRORS:
            if error in tail:
                return UNWRITABLE, '%s: cannot write what it holds: %s: %s' % (path, name, error)
    # the decryptor is the authority: look at it first
    for name, code, tail in failures:
        if name in ('age', 'gpg'):
            kind = backend.classify(tail)
            detail = _last_line(tail)
            if kind == WRONG_KEY:
                return WRONG_KEY, '%s: cannot decrypt: wrong key or passphrase (%s: %s)' % (path, name, detail)
            if kind == TOOL:
                return TOOL, '%s: cannot decrypt: %s: %s' % (path, name, detail)
            return CORRUPT, '%s: payload is corrupted or truncated (%s: %s)' % (path, name, detail)
    name, code, tail = failures[0]
    return CORRUPT, '%s: payload is corrupted or truncated (%s exited with %s: %s)' % (path, name, code, _last_line(tail))


def _last_line(text):
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and 'report unexpected' not in line and 'block_filter' not in line]
    if not lines:
        return 'no message'
    return re.sub(r'^(age: error: |age: |gpg: )', '', lines[-1])


def encrypt_argument_spec():
    """Options of modules that write encrypted payloads (see doc fragment encryption.ENCRYPT)."""
    return dict(
        encryption=dict(type='str', choices=list(ENCRYPTIONS)),
        recipients=dict(type='list', elements='str', default=[]),
        recipients_file=dict(type='path'),
        allow_unencrypted=dict(type='bool', default=False),
    )


def decrypt_argument_spec():
    """Options of modules that read encrypted payloads (see doc fragment encryption.DECRYPT)."""
    return dict(
        identity=dict(type='path'),
        identity_content=dict(type='str', no_log=True),
        passphrase=dict(type='str', no_log=True),
        gpg_homedir=dict(type='path'),
    )


def keys_from_params(params):
    return Keys(identity=params.get('identity'), identity_content=params.get('identity_content'),
                passphrase=params.get('passphrase'), gpg_homedir=params.get('gpg_homedir'))


def check_encryption_allowed(encryption, allow_unencrypted):
    if encryption == 'none' and not allow_unencrypted:
        raise RecoveryError('encryption=none writes plaintext payloads and is refused; set allow_unencrypted=true '
                            'if that is really intended')
