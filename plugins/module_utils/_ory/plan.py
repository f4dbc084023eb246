# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the plan of an Ory import (reads only).

Before anything is written, the import compares the versions the export recorded with the target's
(``version_gate``) and reads what the target already holds: identities by ``external_id`` and their
identifiers, OAuth2 clients, JWK sets, namespaces and relation tuples. The plan says per kind what
will be created, what exists and what conflicts; check mode stops there.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import re

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, release_line
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import KINDS, remap_tuple, tuple_key
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryAPIError, client_auth, fetch_content

CONFLICT_SAMPLE = 20
# the services the version gate reads, the client that reaches each, and the kinds each one restores
GATED_SERVICES = (
    ('kratos', 'kratos', ('config', 'identities')),
    ('hydra', 'hydra', ('oauth2_clients', 'jwks')),
    ('keto', 'keto_read', ('relationships',)),
)
_RELEASE = re.compile(r'^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.+-]*)?$')


def ory_release_line(version):
    """(major, minor) of an Ory version such as v1.3.1, 25.4.0 or v26.2.0-pre.1; None for anything else."""
    return release_line(_RELEASE, version)


def ory_version_gate(service, export_version, target_version, force=False, target_error=None):
    """Decide whether an export of ``service`` at export_version may be imported into target_version.

    A newer release line (major.minor) than the target's is refused: the import bodies follow the
    export's API, which an older server may not accept. An older line passes with a warning. A version
    that is missing or not a version (an export that recorded none, a target whose /version did not
    answer) is refused too: the gate cannot tell, unless both sides report the very same string.
    ``force`` turns every refusal into a warning.
    Returns a dict (ok, forced, reason, warning, the versions and their lines).
    """
    export_line = ory_release_line(export_version)
    target_line = ory_release_line(target_version)
    result = {'service': service, 'export_version': export_version, 'target_version': target_version,
              'export_line': '%d.%d' % export_line if export_line else None,
              'target_line': '%d.%d' % target_line if target_line else None, 'warning': None}
    reason = None
    if export_version and str(export_version).strip() == str(target_version or '').strip():
        pass  # the same build on both sides, also when it is not a release number (a development build)
    elif export_line is None:
        reason = ('the export records no %s version (%s): the backup set cannot tell which API its bodies follow'
                  % (service, 'not a version: %r' % export_version if export_version else 'api_versions has none'))
    elif target_line is None:
        reason = ('the %s version of the target is unknown (%s)' % (
            service, 'not a version: %r' % target_version if target_version else 'GET /version: %s' % (
                target_error or 'no version in the answer')))
    elif export_line > target_line:
        reason = ('the export comes from %s %s (line %s), newer than the target %s (line %s): the target may refuse '
                  'or misread what a newer release wrote; upgrade the target to line %s or newer' % (
                      service, export_version, result['export_line'], target_version, result['target_line'],
                      result['export_line']))
    elif export_line < target_line:
        result['warning'] = ('the export comes from %s %s (line %s), older than the target %s (line %s): it is '
                             'imported; check the plan and the restored data for what the newer release changed' % (
                                 service, export_version, result['export_line'], target_version,
                                 result['target_line']))
    result['ok'] = reason is None or bool(force)
    result['forced'] = reason is not None and bool(force)
    result['reason'] = reason
    return result


class ImportPlanner(object):
    """Reads what the target holds and plans the import of a bundle into it; writes nothing.

    ``plan(bundle)`` returns, per kind, what would be created and what exists already, and keeps what the
    writes need (the target's identities by external ID, the old ID -> external ID index, the clients,
    JWK set actions and tuples of the target, the secrets to generate). ``version_gates`` compares the
    export's API versions with the target's. The Importer (apply.py) builds on it.
    """

    def __init__(self, connection, params, keys, check_mode=False):
        self.conn = connection
        self.params = params
        self.keys = keys
        self.check_mode = check_mode
        self.include = set(params.get('include') or KINDS)
        self.warnings = []
        self.result = {'created': {}, 'existing': {}, 'conflicts': {}, 'updated': {}}
        self.by_external = {}
        self.target_identifiers = {}
        self.index = {}

    # -- target state

    def list_target_identities(self):
        self.by_external = {}
        self.target_identifiers = {}
        kratos = self.conn.client('kratos')
        for page in kratos.pages_by_link('/admin/identities', page_size=500):
            for identity in page:
                ext = identity.get('external_id')
                if ext:
                    self.by_external[ext] = identity['id']
                for kind, cred in (identity.get('credentials') or {}).items():
                    if kind in ('password', 'oidc', 'saml', 'passkey'):
                        for ident in (cred or {}).get('identifiers') or []:
                            self.target_identifiers[(kind, ident)] = ext or identity['id']

    def load_index(self, bundle, plan=None):
        """old ID -> external ID (the same string object when they are equal, to save memory).

        With ``plan``, count what exists and find identifier conflicts on the way, without keeping
        the identifiers.
        """
        self.index = {}
        conflicts = self.result['conflicts'].setdefault('identities', [])

        def add(item):
            old_id, ext = item['id'], item['external_id']
            self.index[old_id] = old_id if ext == old_id else ext
            if plan is None:
                return
            if ext in self.by_external:
                plan['existing'] += 1
                return
            plan['create'] += 1
            for kind, values in (item.get('identifiers') or {}).items():
                for ident in values:
                    owner = self.target_identifiers.get((kind, ident))
                    if owner is not None and owner != ext:
                        conflicts.append({'external_id': ext, 'old_id': old_id, 'credential': kind,
                                          'identifier': ident, 'reason': 'identifier in use by another identity'})
        bundle.stream('restore/identity-index.json', add)

    # -- the plan

    def plan(self, bundle):
        plan = {}
        network = self.conn.is_network
        if 'config' in self.include and network and bundle.rel('restore/project.json'):
            plan['config'] = 'update' if self.config_differs(bundle) else 'same'
        if 'identities' in self.include and bundle.has('identities'):
            self.list_target_identities()
            counts = {'create': 0, 'existing': 0}
            self.load_index(bundle, counts)
            conflicts = self.result['conflicts']['identities']
            create, existing = counts['create'], counts['existing']
            if create and plan.get('config') != 'update':
                known = set(s.get('id') for s in self.conn.client('kratos').get_json('/schemas', query={'page_size': 500}) or [])
                for schema_id in sorted(set(bundle.schema_ids) - known):
                    conflicts.append({'schema_id': schema_id, 'reason': 'identity schema %s is not in the target project '
                                      '(restore the config first)' % schema_id})
            plan['identities'] = {'create': create, 'existing': existing, 'conflicts': len(conflicts)}
        if 'oauth2_clients' in self.include and bundle.has('oauth2_clients'):
            target = set()
            for page in self.conn.client('hydra').pages_by_link('/admin/clients', page_size=500):
                target.update(c['client_id'] for c in page)
            wanted = []
            bundle.stream('restore/oauth2-clients.json', lambda c: wanted.append((c['client_id'], client_auth(c)[1])))
            self.target_clients = target
            create = [(cid, kind) for cid, kind in wanted if cid not in target]
            plan['oauth2_clients'] = {'create': len(create), 'existing': len(wanted) - len(create), 'conflicts': 0}
            supplied = self.params.get('client_secrets') or {}
            # only a client that authenticates with a shared secret needs one: a private_key_jwt client signs
            # its assertion with its own keys, a public client has no credential (ory/fosite
            # client_authentication.go, AuthenticateClient)
            missing = [cid for cid, kind in create if kind == 'secret' and cid not in supplied]
            unused = sorted(cid for cid, kind in create if kind != 'secret' and cid in supplied)
            if unused:
                self.warnings.append('client_secrets names %d clients that authenticate without a shared secret '
                                     '(private_key_jwt or none): their secret is not used (%s)'
                                     % (len(unused), ', '.join(unused[:CONFLICT_SAMPLE])))
            plan['oauth2_clients']['secrets_supplied'] = len([c for c, kind in create if kind == 'secret' and c in supplied])
            plan['oauth2_clients']['secrets_to_generate'] = len(missing)
            plan['oauth2_clients']['without_secret'] = {'keys': len([1 for _c, kind in create if kind == 'keys']),
                                                        'none': len([1 for _c, kind in create if kind == 'none'])}
            self.secrets_to_generate = missing
        if 'jwks' in self.include and bundle.has('jwks'):
            sets = bundle.jwk_sets()
            hydra = self.conn.client('hydra')
            actions = {}
            for name, body in sorted(sets.items()):
                try:
                    current = hydra.get_json('/admin/keys/%s' % name)
                except OryAPIError as exc:
                    if exc.status != 404:
                        raise
                    current = None
                if current is None or not current.get('keys'):
                    actions[name] = 'create'
                elif _jwk_fingerprint(current.get('keys')) == _jwk_fingerprint(body.get('keys')):
                    actions[name] = 'same'
                else:
                    actions[name] = 'replace' if self.params.get('replace_jwk_sets', True) else 'conflict'
            plan['jwk_sets'] = actions
            self.jwk_actions = actions
        if 'relationships' in self.include and bundle.has('relationships'):
            plan['relationships'] = self.plan_tuples(bundle, plan.get('config') == 'update')
        return plan

    target_clients = ()
    secrets_to_generate = ()
    jwk_actions = None

    def plan_tuples(self, bundle, config_pending):
        if not self.index and bundle.has('identities'):
            # subjects are remapped through the identities of the bundle, imported now or before
            self.list_target_identities()
            self.load_index(bundle)
        elif not bundle.has('identities'):
            self.warnings.append('the export holds no identities: relation tuple subjects are restored as they were, '
                                 'not remapped to new identity IDs')
        keto = self.conn.client('keto_read')
        namespaces = set(n.get('name') for n in (keto.get_json('/namespaces') or {}).get('namespaces') or [])
        self.target_tuples = set()
        wanted_namespaces = set()

        def note(item):
            wanted_namespaces.add(item['namespace'])
        bundle.stream('restore/relationships.json', note)
        missing = sorted(wanted_namespaces - namespaces)
        if missing and not config_pending:
            self.result['conflicts']['relationships'] = [
                {'namespace': n, 'reason': 'namespace is not defined in the target (restore the config first)'} for n in missing]
        for namespace in sorted(wanted_namespaces & namespaces):
            for page in keto.pages_by_token('/relation-tuples', query={'namespace': namespace}, page_size=1000):
                for item in page.get('relation_tuples') or []:
                    self.target_tuples.add(tuple_key(item))
        counts = {'create': 0, 'existing': 0, 'unmapped': 0, 'conflicts': len(missing) if not config_pending else 0}

        def count(item):
            mapped = self.remap(item)
            if mapped is None:
                # it names identities of the bundle that are not in the target: created first, or left out
                counts['create' if 'identities' in self.include and bundle.has('identities') else 'unmapped'] += 1
            elif tuple_key(mapped) in self.target_tuples:
                counts['existing'] += 1
            else:
                counts['create'] += 1
        bundle.stream('restore/relationships.json', count)
        return counts

    target_tuples = ()

    def remap(self, item):
        """The tuple with identity IDs (subject, object, subject set object) replaced by the new IDs; None when
        it cannot be mapped yet."""
        return remap_tuple(item, self.new_id_of)

    def new_id_of(self, value):
        """The new ID of an identity of the bundle; False for a value that is none; None when not in the target."""
        if not value or value not in self.index:
            return False
        return self.by_external.get(self.index[value])

    # -- config

    def normalized_services(self, services):
        """Services config with schema and OPL locations replaced by a digest of their content."""
        out = json.loads(json.dumps(services))
        identity = ((out.get('identity') or {}).get('config') or {}).get('identity') or {}
        for entry in identity.get('schemas') or []:
            entry['url'] = 'sha256:' + _sha256(_canonical_json(fetch_content(entry.get('url') or '', self.conn, 'schema')))
        namespaces = ((out.get('permission') or {}).get('config') or {}).get('namespaces')
        if isinstance(namespaces, dict) and namespaces.get('location'):
            namespaces['location'] = 'sha256:' + _sha256(fetch_content(namespaces['location'], self.conn, 'OPL'))
        return out

    def config_differs(self, bundle):
        body = bundle.load('restore/project.json')
        current = self.conn.client('console').get_json('/projects/%s' % self.project_id())
        self.project_body = body
        self.current_project = current
        wanted = self.normalized_services(body.get('services') or {})
        have = self.normalized_services(dict((k, v) for k, v in (current.get('services') or {}).items()
                                             if k in ('identity', 'oauth2', 'permission')))
        return wanted != have

    project_body = None
    current_project = None

    def project_id(self):
        project_id = self.params.get('project_id')
        if not project_id:
            raise RecoveryError('restoring the project configuration of Ory Network needs project_id of the target '
                                '(or leave config out of include)')
        return project_id

    # -- the version gate

    def version_gates(self, bundle, network):
        """Compare the versions the export recorded with the target's, for each service whose data is restored.

        The target's versions come from ``GET /version`` of each admin API (ory/x healthx/handler.go,
        Handler.Version, mounted by Kratos, Hydra and Keto); on Ory Network the project URL answers it for the
        whole project (the project document itself carries no version). Only reads: check mode runs it too.
        """
        recorded = bundle.ory.get('api_versions') or {}
        kinds = set(k for k in self.include if bundle.has(k) and (k != 'config' or network))
        force = bool(self.params.get('force_version'))
        gates = {}
        answers = {}
        for service, client_name, service_kinds in GATED_SERVICES:
            if not kinds & set(service_kinds):
                continue
            url = self.conn.url_for(client_name)
            if url not in answers:
                try:
                    answers[url] = ((self.conn.client(client_name).get_json('/version') or {}).get('version'), None)
                except (OryAPIError, RecoveryError) as exc:
                    answers[url] = (None, exc.msg)
            target_version, error = answers[url]
            gates[service] = ory_version_gate(service, recorded.get(service), target_version, force, error)
        refused = [g['reason'] for g in gates.values() if g['reason'] and not g['ok']]
        if refused:
            raise RecoveryError('version gate: %s; set force_version=true to import anyway; nothing was written'
                                % '; '.join(refused), version_gate=gates)
        for service in sorted(gates):
            gate = gates[service]
            if gate['forced']:
                self.warnings.append('version gate overridden by force_version: %s' % gate['reason'])
            elif gate['warning']:
                self.warnings.append('version gate: %s' % gate['warning'])
        return gates


def work_left(plan):
    """Whether a plan leaves anything to write."""
    if plan.get('config') == 'update':
        return True
    for key in ('identities', 'oauth2_clients', 'relationships'):
        if (plan.get(key) or {}).get('create'):
            return True
    return any(action in ('create', 'replace') for action in (plan.get('jwk_sets') or {}).values())


def sample_conflicts(conflicts):
    return dict((k, v[:CONFLICT_SAMPLE]) for k, v in conflicts.items())


def describe_conflicts(conflicts):
    return ', '.join('%d %s' % (len(v), k) for k, v in sorted(conflicts.items()))


def _jwk_fingerprint(keys):
    return sorted(json.dumps(k, sort_keys=True) for k in keys or [])


def _canonical_json(content):
    try:
        return json.dumps(json.loads(content.decode('utf-8')), sort_keys=True, separators=(',', ':')).encode('utf-8')
    except (ValueError, UnicodeDecodeError):
        return content


def _sha256(content):
    return hashlib.sha256(content).hexdigest()
