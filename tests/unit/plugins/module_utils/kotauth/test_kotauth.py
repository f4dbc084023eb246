# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import email.parser
import hashlib
import json
import os

import pytest

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ansible_collections.idp.recovery.plugins.module_utils._kotauth import archive as kotauth_archive
from ansible_collections.idp.recovery.plugins.module_utils._kotauth import client as kotauth_client
from ansible_collections.idp.recovery.plugins.module_utils._kotauth import envelope as kotauth_envelope
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError

PASSPHRASE = 'correct horse battery staple'


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _independent_envelope(plaintext, passphrase, salt_size=16):
    """A bkp1 archive built from the format's description, without the code under test."""
    salt, nonce = os.urandom(salt_size), os.urandom(12)
    key = hashlib.pbkdf2_hmac('sha256', passphrase.encode('utf-8'), salt, 600000, 32)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return ('bkp1.%s.%s.%s' % (_b64(salt), _b64(nonce), _b64(sealed))).encode('ascii')


DOCUMENT = {
    'exportVersion': 1, 'schemaVersion': 42, 'exportedAt': 1768186800, 'kotauthVersion': '1.4.2',
    'manifest': {'redactedFields': ['applications.clientSecret', 'tenant.smtpPassword', 'users.totpSeed', 'sessions',
                                    'somethingNew'],
                 'includedExtras': ['auditLog'], 'notes': ['n']},
    'tenant': {'slug': 'acme', 'smtp': {'enabled': True}},
    'applications': [{'clientId': 'a'}, {'clientId': 'b'}],
    'users': [{'username': 'u1', 'mfaEnabled': True, 'passwordHash': '$2a$10$x'}, {'username': 'u2'}],
    'roles': [], 'groups': [{'name': 'g'}], 'auditLog': [{'eventType': 'LOGIN'}], 'signingKeys': None,
}


@pytest.fixture(scope='module')
def envelope():
    return _independent_envelope(json.dumps(DOCUMENT).encode('utf-8'), PASSPHRASE)


def test_decrypts_an_independently_built_archive(envelope):
    assert kotauth_envelope.open_archive(envelope, PASSPHRASE) == DOCUMENT
    # with a trailing newline, as a downloaded file has it, and a 32-byte salt as Kotauth's docs describe
    assert kotauth_envelope.open_archive(envelope + b'\n', PASSPHRASE) == DOCUMENT
    long_salt = _independent_envelope(b'{"schemaVersion": 1}', PASSPHRASE, salt_size=32)
    assert kotauth_envelope.open_archive(long_salt, PASSPHRASE) == {'schemaVersion': 1}


def test_encrypt_round_trip_and_form():
    sealed = kotauth_envelope.encrypt_envelope(b'{"a": 1}', PASSPHRASE)
    version, salt, nonce, body = kotauth_envelope.parse_envelope(sealed)
    assert (version, len(salt), len(nonce), len(body)) == ('bkp1', 16, 12, len(b'{"a": 1}') + 16)
    assert b'=' not in sealed and sealed.count(b'.') == 3
    assert kotauth_envelope.decrypt_envelope(sealed, PASSPHRASE) == b'{"a": 1}'


def _kind(data, passphrase=PASSPHRASE, expected=None):
    with pytest.raises(kotauth_envelope.EnvelopeError) as info:
        kotauth_envelope.open_archive(data, passphrase, expected)
    return info.value.kind


def test_the_error_kinds_are_distinct(envelope):
    assert _kind(envelope, 'a wrong passphrase here') == kotauth_envelope.WRONG_PASSPHRASE
    assert _kind(b'bkp2' + envelope[4:]) == kotauth_envelope.UNSUPPORTED_VERSION
    assert _kind(b'bkp10.a.b.c') == kotauth_envelope.UNSUPPORTED_VERSION
    for bad in (envelope.rsplit(b'.', 1)[0], b'', b'hello', envelope + b'.x', b'bkp1.!!!.AAAA.AAAA',
                envelope.replace(b'.', b'\n.', 1), b'bkp1.' + _b64(os.urandom(16)).encode() + b'.' + _b64(b'short').encode()
                + b'.' + _b64(os.urandom(40)).encode(), u'bkp1.é'.encode('utf-8')):
        assert _kind(bad) == kotauth_envelope.MALFORMED, bad
    digest = hashlib.sha256(envelope).hexdigest()
    index = len(envelope) - 10
    flipped = envelope[:index] + (b'A' if envelope[index:index + 1] != b'A' else b'B') + envelope[index + 1:]
    assert _kind(flipped, expected=digest) == kotauth_envelope.ALTERED
    # without a recorded digest, GCM alone cannot tell an altered archive from a wrong passphrase
    assert _kind(flipped) == kotauth_envelope.WRONG_PASSPHRASE
    assert kotauth_envelope.open_archive(envelope, PASSPHRASE, digest) == DOCUMENT


def test_archive_facts_are_safe():
    facts = kotauth_archive.archive_facts(DOCUMENT)
    assert facts['schema_version'] == 42 and facts['export_version'] == 1 and facts['kotauth_version'] == '1.4.2'
    assert facts['exported_at'] == '2026-01-12T03:00:00Z'
    assert facts['counts']['users'] == 2 and facts['counts']['applications'] == 2 and facts['counts']['signing_keys'] == 0
    assert facts['counts']['audit_events'] == 1 and facts['users_with_mfa'] == 1 and facts['smtp_enabled']
    assert facts['included_extras'] == ['auditLog']
    assert '$2a$' not in json.dumps(facts)
    with pytest.raises(kotauth_envelope.EnvelopeError):
        kotauth_archive.archive_facts({'manifest': {}})


def test_post_restore_actions_follow_the_redacted_fields():
    actions = kotauth_archive.post_restore_actions(kotauth_archive.archive_facts(DOCUMENT))
    assert [a['id'] for a in actions] == ['client_secrets', 'smtp', 'mfa_reenrolment', 'sessions', 'review']
    assert '2 application(s)' in actions[0]['action'] and '1 user(s) with MFA' in actions[2]['action']
    assert 'somethingNew' in actions[-1]['action']


def test_schema_gate():
    assert kotauth_archive.schema_gate(42, 42)['decision'] == 'same'
    older = kotauth_archive.schema_gate(41, 42)
    assert older['ok'] and older['decision'] == 'older' and older['message']
    newer = kotauth_archive.schema_gate(43, 42)
    assert not newer['ok'] and newer['decision'] == 'newer' and 'nothing was sent' in newer['message']


def test_multipart_body_is_readable_and_binary_safe():
    content = b'bkp1.abc.def.ghi'
    ctype, body = kotauth_client.multipart_body([('file', 'x.bkp1', 'application/octet-stream', content),
                                                 ('newSlug', None, None, b'acme-2')])
    message = email.parser.BytesParser().parsebytes(b'Content-Type: ' + ctype.encode() + b'\r\n\r\n' + body)
    parts = dict((p.get_param('name', header='content-disposition'), p.get_payload(decode=True))
                 for p in message.get_payload())
    assert parts == {'file': content, 'newSlug': b'acme-2'}


def test_problem_message_and_client_checks():
    body = json.dumps({'type': 'about:blank', 'title': 'Wrong passphrase', 'status': 422, 'detail': 'no'}).encode()
    assert kotauth_client.problem_message(422, body) == ('Wrong passphrase: no', 'Wrong passphrase')
    assert kotauth_client.problem_message(502, b'<html>bad gateway</html>')[0] == '<html>bad gateway</html>'
    with pytest.raises(RecoveryError):
        kotauth_client.KotauthClient('ftp://x', 'k')
    with pytest.raises(RecoveryError):
        kotauth_client.KotauthClient('https://auth.example.org', None)
    with pytest.raises(RecoveryError):
        kotauth_envelope.check_passphrase('short')
    with pytest.raises(RecoveryError):
        kotauth_client.check_slug('Not A Slug')
