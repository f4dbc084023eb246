# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Deterministic sample data for the Ory admin API stand-in.

Identities carry real password hashes (bcrypt through the C library's ``crypt``, argon2id through
``cryptography``), OIDC links (some with the initial tokens Kratos keeps), TOTP, lookup secrets and
WebAuthn credentials; OAuth2 clients with known secrets, clients that authenticate with their keys
(private_key_jwt) and a public client; JWK sets with private keys (RSA and EC); and
relation tuples whose subjects are identity IDs or subject sets (nested, and naming identities).
``password_for(i)`` tells the password of identity ``i``, so that a test can prove a restored hash
still checks the original password.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import uuid
import warnings

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import crypt  # pylint: disable=deprecated-module

BCRYPT_COST = 4
ARGON2_MEMORY_KIB = 64
ARGON2_ITERATIONS = 1
B64 = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

IDENTITY_SCHEMA = {
    '$id': 'https://schemas.example.org/presets/kratos/identity.email.schema.json',
    '$schema': 'http://json-schema.org/draft-07/schema#',
    'title': 'Person',
    'type': 'object',
    'properties': {
        'traits': {
            'type': 'object',
            'properties': {
                'email': {
                    'type': 'string', 'format': 'email', 'title': 'E-Mail',
                    'ory.sh/kratos': {
                        'credentials': {'password': {'identifier': True}, 'code': {'identifier': True, 'via': 'email'},
                                        'totp': {'account_name': True}},
                        'recovery': {'via': 'email'},
                        'verification': {'via': 'email'},
                    },
                },
                'name': {'type': 'object', 'properties': {'first': {'type': 'string'}, 'last': {'type': 'string'}}},
            },
            'required': ['email'],
            'additionalProperties': False,
        },
    },
}
OPL = '''import { Namespace, Context } from "@ory/keto-namespace-types"

class User implements Namespace {
  related: {
    delegates: User[]
  }
}

class Group implements Namespace {
  related: {
    members: (User | SubjectSet<Group, "members">)[]
  }
}

class Document implements Namespace {
  related: {
    owners: (User | SubjectSet<Group, "members">)[]
    viewers: (User | SubjectSet<Group, "members"> | SubjectSet<User, "delegates">)[]
  }

  permits = {
    view: (ctx: Context): boolean =>
      this.related.viewers.includes(ctx.subject) || this.related.owners.includes(ctx.subject),
  }
}
'''


def subject_set_tuples(identity_ids):
    """Relation tuples with subject sets, in the shapes real permission models have.

    ``Group:group-<g>#members`` holds ``Group:team-<g>#members``, which holds ``Group:squad-<g>#members``
    (subject sets nested two deep below the ``Document:shared-<g>#viewers`` tuples), whose members are
    identities; ``User:<identity ID>#delegates`` names other identities and ``Document:doc-<i>#viewers``
    grants the subject set ``User:<identity ID>#delegates`` (a subject set whose object is an identity).
    """
    ids = list(identity_ids)
    out = []
    for group in range(min(3, len(ids))):
        out.append({'namespace': 'Group', 'object': 'group-%d' % group, 'relation': 'members',
                    'subject_set': {'namespace': 'Group', 'object': 'team-%d' % group, 'relation': 'members'}})
        out.append({'namespace': 'Group', 'object': 'team-%d' % group, 'relation': 'members',
                    'subject_set': {'namespace': 'Group', 'object': 'squad-%d' % group, 'relation': 'members'}})
        out.append({'namespace': 'Group', 'object': 'squad-%d' % group, 'relation': 'members',
                    'subject_id': ids[len(ids) - 1 - group]})
    for index in range(1, min(len(ids) - 1, 60), 20):
        out.append({'namespace': 'User', 'object': ids[index], 'relation': 'delegates', 'subject_id': ids[index + 1]})
        out.append({'namespace': 'Document', 'object': 'doc-%d' % index, 'relation': 'viewers',
                    'subject_set': {'namespace': 'User', 'object': ids[index], 'relation': 'delegates'}})
    return out


def password_for(index):
    return 'correct horse %d battery' % index


def bcrypt_hash(password, rng):
    salt = ''.join(rng.choice(B64) for _dummy in range(22))
    return crypt.crypt(password, '$2b$%02d$%s' % (BCRYPT_COST, salt))


def argon2_hash(password, rng):
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    salt = bytes(rng.getrandbits(8) for _dummy in range(16))
    digest = Argon2id(salt=salt, length=32, iterations=ARGON2_ITERATIONS, lanes=1,
                      memory_cost=ARGON2_MEMORY_KIB).derive(password.encode('utf-8'))

    def enc(data):
        return base64.b64encode(data).decode('ascii').rstrip('=')
    return '$argon2id$v=19$m=%d,t=%d,p=1$%s$%s' % (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, enc(salt), enc(digest))


def check_password(password, hashed):
    """True when hashed (bcrypt or argon2id as made here) checks password."""
    if hashed.startswith('$2'):
        return crypt.crypt(password, hashed) == hashed
    if hashed.startswith('$argon2id$'):
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
        _empty, _name, _version, params, salt, digest = hashed.split('$')
        opts = dict(p.split('=') for p in params.split(','))

        def dec(text):
            return base64.b64decode(text + '=' * (-len(text) % 4))
        want = dec(digest)
        got = Argon2id(salt=dec(salt), length=len(want), iterations=int(opts['t']), lanes=int(opts['p']),
                       memory_cost=int(opts['m'])).derive(password.encode('utf-8'))
        return got == want
    return False


def _uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _totp_url(rng, email):
    secret = base64.b32encode(bytes(rng.getrandbits(8) for _dummy in range(20))).decode('ascii').rstrip('=')
    return 'otpauth://totp/Example:%s?algorithm=SHA1&digits=6&issuer=Example&period=30&secret=%s' % (email, secret)


def identity_records(count, seed=1, hash_pool=0, with_extras=True):
    """Yield (identity credentials dict as the stand-in stores it, traits, extras) for ``count`` people.

    Even numbers get bcrypt, odd numbers argon2id. With ``hash_pool`` > 0, only that many distinct
    hashes are computed and reused (for benchmarks where hashing time is not the point).
    """
    rng = random.Random(seed)
    pool = {}
    for index in range(count):
        email = 'user%06d@example.org' % index
        algo = 'bcrypt' if index % 2 == 0 else 'argon2'
        if hash_pool:
            key = (algo, index % hash_pool)
            if key not in pool:
                pool[key] = (bcrypt_hash if algo == 'bcrypt' else argon2_hash)(password_for(key[1] * 2 + (algo != 'bcrypt')), rng)
            hashed = pool[key]
        else:
            hashed = (bcrypt_hash if algo == 'bcrypt' else argon2_hash)(password_for(index), rng)
        traits = {'email': email, 'name': {'first': 'First%d' % index, 'last': 'Last%d' % index}}
        creds = {'password': {'identifiers': [email], 'config': {'hashed_password': hashed}}}
        if with_extras and index % 5 == 0:
            provider = {'provider': 'google', 'subject': 'google-%d' % index}
            if index % 10 == 0:
                provider.update({'initial_id_token': 'eyJhbGciOi.id.%d' % index,
                                 'initial_access_token': 'ya29.access.%d' % index,
                                 'initial_refresh_token': '1//refresh.%d' % index})
            creds['oidc'] = {'identifiers': ['google:google-%d' % index], 'config': {'providers': [provider]}}
        if with_extras and index % 7 == 0:
            creds['totp'] = {'identifiers': [], 'config': {'totp_url': _totp_url(rng, email)}}
        if with_extras and index % 11 == 0:
            codes = [{'code': '%08x' % rng.getrandbits(32)} for _dummy in range(4)]
            codes[0]['used_at'] = '2026-01-02T03:04:05Z'
            creds['lookup_secret'] = {'identifiers': [], 'config': {'recovery_codes': codes}}
        if with_extras and index % 13 == 0:
            cred_id = [rng.getrandbits(8) for _dummy in range(16)]
            creds['webauthn'] = {'identifiers': [], 'config': {
                'credentials': [{
                    'id': cred_id, 'public_key': [rng.getrandbits(8) for _dummy in range(32)],
                    'attestation_type': 'none', 'display_name': 'key %d' % index, 'is_passwordless': False,
                    'added_at': '2026-01-02T03:04:05Z',
                    'authenticator': {'aaguid': [0] * 16, 'sign_count': 3, 'clone_warning': False},
                    'flags': {'user_present': True, 'user_verified': True, 'backup_eligible': False,
                              'backup_state': False},
                }],
                'user_handle': [rng.getrandbits(8) for _dummy in range(16)],
            }}
        extras = {
            'metadata_public': {'plan': 'pro'} if index % 3 == 0 else None,
            'metadata_admin': {'crm_id': index} if index % 4 == 0 else None,
            'state': 'inactive' if index % 97 == 0 else 'active',
            'verified': index % 2 == 0,
        }
        yield creds, traits, extras


PASSWORDLESS_SHAPES = ('oidc', 'passkey', 'code', 'saml')


def passwordless_records(count, seed=1):
    """Yield (credentials, traits, extras) for ``count`` people who never set a password.

    They rotate through what real projects have: social sign-in only (some with two providers),
    passkey only, one-time code only (nothing but what the schema extension creates) and SAML
    single sign-on (half of them with TOTP). Each one still gets the empty password credential
    of the schema extension when created (server.py, prepare_identity).
    """
    rng = random.Random(seed * 7919 + 17)
    for index in range(count):
        email = 'pwless%06d@example.org' % index
        shape = PASSWORDLESS_SHAPES[index % len(PASSWORDLESS_SHAPES)]
        traits = {'email': email, 'name': {'first': 'Nopass%d' % index, 'last': shape.upper()}}
        creds = {}
        if shape == 'oidc':
            providers = [{'provider': 'google', 'subject': 'g-pwless-%d' % index}]
            if index % 8 == 0:
                providers.append({'provider': 'github', 'subject': str(100000 + index)})
            creds['oidc'] = {'identifiers': ['%s:%s' % (p['provider'], p['subject']) for p in providers],
                             'config': {'providers': providers}}
        elif shape == 'passkey':
            creds['passkey'] = {'identifiers': [], 'config': {'credentials': [{
                'id': [rng.getrandbits(8) for _dummy in range(16)],
                'public_key': [rng.getrandbits(8) for _dummy in range(77)],
                'attestation_type': 'none', 'display_name': 'passkey %d' % index, 'is_passwordless': True,
                'added_at': '2026-02-03T04:05:06Z',
                'authenticator': {'aaguid': [rng.getrandbits(8) for _dummy in range(16)], 'sign_count': 0,
                                  'clone_warning': False},
                'flags': {'user_present': True, 'user_verified': True, 'backup_eligible': True, 'backup_state': True},
            }]}}
        elif shape == 'saml':
            creds['saml'] = {'identifiers': ['acme-sso:%s' % email],
                             'config': {'providers': [{'provider': 'acme-sso', 'subject': email}]}}
            if index % 8 == 3:
                creds['totp'] = {'identifiers': [], 'config': {'totp_url': _totp_url(rng, email)}}
        extras = {'metadata_public': None, 'metadata_admin': {'shape': shape}, 'state': 'active', 'verified': True}
        yield creds, traits, extras


def client_records(count=3, seed=2):
    """OAuth2 clients (with the secret each one was created with)."""
    rng = random.Random(seed)
    clients = []
    for index in range(count):
        secret = 'secret-%d-%016x' % (index, rng.getrandbits(64))
        clients.append({
            'client_id': 'svc-%d' % index if index else _uuid(rng),
            'client_name': 'Service %d' % index,
            'client_secret': secret,
            'grant_types': ['client_credentials'] if index != 2 else ['authorization_code', 'refresh_token'],
            'response_types': ['token'] if index != 2 else ['code'],
            'redirect_uris': [] if index != 2 else ['https://app.example.org/callback'],
            'scope': 'read write',
            'audience': ['https://api.example.org'],
            'token_endpoint_auth_method': 'client_secret_basic' if index % 2 == 0 else 'client_secret_post',
            'metadata': {'team': 'platform'},
            'client_credentials_grant_access_token_lifespan': '30m',
        })
    return clients


def keyed_client_records():
    """OAuth2 clients without a shared secret, as real projects hold them: two service clients that
    authenticate with a signed assertion (private_key_jwt), one with its public keys inline and one
    with a jwks_uri, and a public single-page app (none) that uses the authorization code flow."""
    return [
        {
            'client_id': 'svc-keys-inline',
            'client_name': 'Billing worker (private_key_jwt, inline keys)',
            'grant_types': ['client_credentials'],
            'response_types': ['token'],
            'scope': 'billing:read',
            'audience': ['https://api.example.org'],
            'token_endpoint_auth_method': 'private_key_jwt',
            'token_endpoint_auth_signing_alg': 'RS256',
            'jwks': {'keys': [public_jwk(rsa_jwk('billing-worker-2026'))]},
            'metadata': {'team': 'billing'},
        },
        {
            'client_id': 'svc-keys-uri',
            'client_name': 'Reporting (private_key_jwt, jwks_uri)',
            'grant_types': ['client_credentials'],
            'response_types': ['token'],
            'scope': 'reports:read',
            'token_endpoint_auth_method': 'private_key_jwt',
            'token_endpoint_auth_signing_alg': 'ES256',
            'jwks_uri': 'https://reporting.example.org/.well-known/jwks.json',
        },
        {
            'client_id': 'spa-public',
            'client_name': 'Web app (public client)',
            'grant_types': ['authorization_code', 'refresh_token'],
            'response_types': ['code'],
            'redirect_uris': ['https://app.example.org/callback'],
            'scope': 'openid offline_access',
            'token_endpoint_auth_method': 'none',
        },
    ]


def public_jwk(jwk):
    """The public part of a JWK (what a client registers in its jwks)."""
    private = ('d', 'p', 'q', 'dp', 'dq', 'qi')
    return dict((k, v) for k, v in jwk.items() if k not in private)


def ec_jwk(kid, use='sig', alg='ES256'):
    """A P-256 key with its private part, like the ones Hydra generates for ES256 (jwk/generator_ecdsa256.go)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()

    def b64(number):
        return base64.urlsafe_b64encode(number.to_bytes(32, 'big')).decode('ascii').rstrip('=')
    return {'kty': 'EC', 'kid': kid, 'use': use, 'alg': alg, 'crv': 'P-256', 'x': b64(numbers.public_numbers.x),
            'y': b64(numbers.public_numbers.y), 'd': b64(numbers.private_value)}


def rsa_jwk(kid, use='sig', alg='RS256'):
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.private_numbers()
    pub = numbers.public_numbers

    def b64(number):
        raw = number.to_bytes((number.bit_length() + 7) // 8, 'big')
        return base64.urlsafe_b64encode(raw).decode('ascii').rstrip('=')
    return {'kty': 'RSA', 'kid': kid, 'use': use, 'alg': alg, 'n': b64(pub.n), 'e': b64(pub.e), 'd': b64(numbers.d),
            'p': b64(numbers.p), 'q': b64(numbers.q), 'dp': b64(numbers.dmp1), 'dq': b64(numbers.dmq1),
            'qi': b64(numbers.iqmp)}


def jwk_digest(jwk):
    return hashlib.sha256(repr(sorted(jwk.items())).encode('utf-8')).hexdigest()


def random_token(nbytes=24):
    return base64.urlsafe_b64encode(os.urandom(nbytes)).decode('ascii').rstrip('=')
