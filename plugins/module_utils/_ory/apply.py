# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: import of an Ory export bundle into a clean target project.

The order is config (identity schemas and the OPL re-embedded), identities (the batch endpoint,
strictly serial, the old ID kept in ``external_id``), OAuth2 clients (secrets from a supplied map
or newly generated), JWK sets, and relation tuples with identity subject IDs remapped to the new
IDs. The tuples go to Keto while the identities are still being written: a tuple is sent once every
identity it names has its new ID (one that names none at once), so no tuple ever names an identity
that is not in the target; the clients and JWK sets follow the identities.
Every step first reads what the target already holds (the plan, plan.py), so that a second run
after a partial failure skips what is there and reports ``changed: false`` when nothing is left to
do. The whole bundle is decrypted, parsed and checked before the first write.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import secrets
import threading
import time
import uuid

from ansible.module_utils.six.moves.urllib.parse import quote

from ansible_collections.idp.recovery.plugins.module_utils._common import (
    RecoveryError,
    dump_json,
    ensure_dir,
    fsync_dir,
    iso,
    utcnow,
    write_file_atomic,
)
from ansible_collections.idp.recovery.plugins.module_utils._crypto import ENCRYPTION_SUFFIX, Compression, encrypt_stages, encryption_backend
from ansible_collections.idp.recovery.plugins.module_utils._ory.bundle import (
    RELATIONSHIPS_FILE,
    PayloadWriter,
    dumps,
    remap_tuple,
    tuple_key,
    write_relationships_file,
)
from ansible_collections.idp.recovery.plugins.module_utils._ory.client import OryAPIError, backoff_delay, client_auth
from ansible_collections.idp.recovery.plugins.module_utils._ory.plan import (
    CONFLICT_SAMPLE,
    ImportPlanner,
    describe_conflicts,
    sample_conflicts,
    work_left,
)

BATCH_MAX = 1000
TUPLE_BATCH = 500
LOOKUP_LIMIT = 50
# relation tuples held back at most while they wait for the new ID of an identity (some 10 MB); the reading of the
# tuples pauses when that many wait
DEFER_MAX = 20000
PATCH_NAMESPACE = uuid.UUID('5b0c3f7e-8f1e-4c55-9a43-2e9f0b7a51d1')


class Importer(ImportPlanner):
    """Plans (ImportPlanner) and then writes an import: ``run(bundle)``."""

    def __init__(self, connection, params, keys, check_mode=False):
        super(Importer, self).__init__(connection, params, keys, check_mode)
        self.batch_size = min(BATCH_MAX, max(1, params.get('batch_size') or BATCH_MAX))
        self.state_dir = None
        self.map_log = None
        self.map_fd = None
        # the tuple writer running beside the identities: told of every new ID (MappingFeed); halt() tells it failed
        self.feed = None
        self.halt = None

    # -- config

    def apply_config(self):
        body = dict(self.project_body)
        body['name'] = self.current_project.get('name') or body.get('name')
        body['services'] = dict((k, v) for k, v in body['services'].items() if k in ('identity', 'oauth2', 'permission'))
        answer = self.conn.client('console').request('PUT', '/projects/%s' % self.project_id(), json_body=body).json() or {}
        for warning in answer.get('warnings') or []:
            self.warnings.append('project update: %s' % (warning.get('message') or warning))
        self.result['updated']['config'] = True

    # -- identities

    def import_identities(self, bundle):
        sender = SerialSender()
        pending = []
        created = [0]

        def send(items, prepared):
            created[0] += self.send_batch(items, prepared)

        def add(body):
            if self.halt is not None and self.halt():
                raise Stopped()
            if body['external_id'] in self.by_external:
                return
            pending.append(body)
            if len(pending) >= self.batch_size:
                # one batch in flight while the next one is read and encoded: the writes stay strictly serial
                batch = list(pending)
                sender.submit(send, batch, self.prepare_batch(batch))
                del pending[:]
        try:
            bundle.stream('restore/identities.json', add)
            if pending:
                sender.submit(send, list(pending), self.prepare_batch(pending))
        finally:
            try:
                sender.drain()
            finally:
                self.close_map_log()
        self.result['created']['identities'] = created[0]
        self.write_id_map()

    def write_id_map(self):
        """id-map.json, written as a stream: old ID -> new ID of every identity of the bundle in the target."""
        path = os.path.join(self.state_dir, 'id-map.json')
        tmp = path + '.partial-%s' % os.urandom(4).hex()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(b'{')
                first = True
                for old_id, ext in self.index.items():
                    new = self.by_external.get(ext)
                    if new is None:
                        continue
                    handle.write((b'' if first else b',') + b'\n' + json.dumps(old_id).encode('utf-8') + b': '
                                 + json.dumps(new).encode('utf-8'))
                    first = False
                handle.write(b'\n}\n')
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @staticmethod
    def prepare_batch(items):
        """(patch ID -> identity body, the encoded PATCH /admin/identities body) of a batch."""
        patches = []
        by_patch = {}
        for body in items:
            patch_id = str(uuid.uuid5(PATCH_NAMESPACE, body['external_id']))
            by_patch[patch_id] = body
            patches.append({'patch_id': patch_id, 'create': body})
        return by_patch, json.dumps({'identities': patches}, separators=(',', ':')).encode('utf-8')

    def send_batch(self, items, prepared=None):
        kratos = self.conn.client('kratos')
        attempt = 0
        made = 0
        conflicts = self.result['conflicts'].setdefault('identities', [])
        while items:
            by_patch, data = prepared or self.prepare_batch(items)
            prepared = None
            try:
                answer = kratos.request('PATCH', '/admin/identities', encoded_json=data, retry_errors=False).json() or {}
            except OryAPIError as exc:
                if exc.status == 409:
                    answer = {'identities': [{'patch_id': p, 'action': 'error', 'error': {'code': 409, 'message': exc.msg}}
                                             for p in by_patch]}
                elif exc.details.get('retryable') and attempt < kratos.retries:
                    # the batch may have been applied: look at the target again before sending what is missing
                    attempt += 1
                    time.sleep(backoff_delay(attempt, kratos.max_backoff))
                    self.list_target_identities()
                    self.publish(None)
                    items = [b for b in items if b['external_id'] not in self.by_external]
                    continue
                else:
                    raise
            failed = []
            new_pairs = []
            for entry in answer.get('identities') or []:
                body = by_patch.get(entry.get('patch_id'))
                if body is None:
                    continue
                if entry.get('action') == 'create' and entry.get('identity'):
                    self.by_external[body['external_id']] = entry['identity']
                    new_pairs.append((body['external_id'], entry['identity']))
                    made += 1
                else:
                    failed.append((body, entry.get('error') or {}))
            self.log_pairs(new_pairs)
            self.publish([ext for ext, _new in new_pairs])
            items = []
            if failed:
                self.resolve_failed(failed, conflicts)
                self.publish(None)
        return made

    def publish(self, externals):
        """Tell the tuple writer which identities (external IDs; None: any) have their new ID now."""
        if self.feed is not None:
            self.feed.publish(externals)

    def resolve_failed(self, failed, conflicts):
        """Items the batch refused: already there (a former run) or a real conflict."""
        kratos = self.conn.client('kratos')
        if len(failed) > LOOKUP_LIMIT:
            self.list_target_identities()
        for body, error in failed:
            ext = body['external_id']
            if ext not in self.by_external and len(failed) <= LOOKUP_LIMIT:
                try:
                    found = kratos.get_json('/admin/identities/by/external/%s' % _quote(ext))
                    self.by_external[ext] = found['id']
                except OryAPIError as exc:
                    if exc.status != 404:
                        raise
            if ext in self.by_external:
                continue
            conflicts.append({'external_id': ext, 'reason': error.get('reason') or error.get('message') or 'refused',
                              'code': error.get('code')})

    def log_pairs(self, pairs):
        """Append the new IDs of a batch to id-map.jsonl as it lands (in the kernel at once, so a killed run leaves
        them); it is flushed to disk once, when the identities are done. A rerun reads the target, not this file."""
        if not pairs:
            return
        data = b''.join(dumps({'external_id': ext, 'id': new}) + b'\n' for ext, new in pairs)
        if self.map_fd is None:
            self.map_fd = os.open(self.map_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self.map_fd, data)

    def close_map_log(self):
        if self.map_fd is None:
            return
        try:
            os.fsync(self.map_fd)
        finally:
            os.close(self.map_fd)
            self.map_fd = None

    # -- clients

    def import_clients(self, bundle):
        hydra = self.conn.client('hydra')
        supplied = self.params.get('client_secrets') or {}
        generated = {}
        report = []
        created = [0]

        def add(client):
            cid = client['client_id']
            method, kind = client_auth(client)
            if cid in self.target_clients:
                report.append({'client_id': cid, 'secret': 'unchanged' if kind == 'secret' else kind, 'action': 'existing',
                               'token_endpoint_auth_method': method})
                return
            body = dict(client)
            if kind != 'secret':
                # 'keys' (private_key_jwt: jwks or jwks_uri travel in the body) or 'none' (a public client). Hydra
                # makes up a secret for a client created without one and returns it for every client that is not
                # public (ory/hydra client/handler.go, CreateClient); the token endpoint never accepts it for
                # these methods (ory/fosite client_authentication.go), so the answer is not read
                source = kind
            elif cid in supplied:
                body['client_secret'] = supplied[cid]
                source = 'supplied'
            else:
                body['client_secret'] = generated[cid] = secrets.token_urlsafe(32)
                source = 'generated'
            try:
                hydra.request('POST', '/admin/clients', json_body=body, ok=(201, 200), retry_errors=False)
            except OryAPIError as exc:
                if exc.status != 409 and not exc.details.get('retryable'):
                    raise
                # a former attempt may have created it: it counts as created only when it is there now
                try:
                    hydra.get_json('/admin/clients/%s' % _quote(cid))
                except OryAPIError:
                    raise exc
                generated.pop(cid, None)
                if kind != 'secret':
                    report.append({'client_id': cid, 'secret': kind, 'action': 'existing', 'token_endpoint_auth_method': method,
                                   'note': 'created by an interrupted attempt'})
                    return
                report.append({'client_id': cid, 'secret': 'unknown', 'action': 'existing', 'token_endpoint_auth_method': method,
                               'note': 'created by an interrupted attempt; rotate its secret'})
                return
            created[0] += 1
            report.append({'client_id': cid, 'secret': source, 'action': 'created', 'token_endpoint_auth_method': method})
        bundle.stream('restore/oauth2-clients.json', add)
        self.result['created']['oauth2_clients'] = created[0]
        self.rotation_report = report
        self.generated_secrets = generated
        write_file_atomic(os.path.join(self.state_dir, 'rotation-report.json'), dump_json(report))
        if generated:
            self.write_secrets(generated)

    rotation_report = ()
    generated_secrets = None
    secrets_file = None

    def write_secrets(self, generated):
        params = self.params
        if not params.get('encryption'):
            return
        backend = encryption_backend(params['encryption'], params.get('recipients'), params.get('recipients_file'),
                                     params.get('passphrase'), params.get('gpg_homedir'))
        suffix = ENCRYPTION_SUFFIX[backend.name]
        dest = os.path.join(self.state_dir, 'client-secrets-%s.json%s' % (time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()), suffix))
        writer = PayloadWriter(dest, encrypt_stages(Compression('none'), backend), os.urandom(4).hex())
        try:
            writer.write(dumps(generated))
            writer.commit()
            writer.publish()
        except BaseException:
            writer.abort()
            raise
        self.secrets_file = dest

    # -- JWK sets

    def import_jwks(self, bundle):
        hydra = self.conn.client('hydra')
        sets = bundle.jwk_sets()
        done = []
        for name, action in sorted((self.jwk_actions or {}).items()):
            if action in ('create', 'replace'):
                hydra.request('PUT', '/admin/keys/%s' % _quote(name), json_body={'keys': sets[name]['keys']})
                done.append(name)
        self.result['created']['jwk_sets'] = len(done)
        self.result['updated']['jwk_sets'] = done

    # -- tuples

    def import_tuples(self, bundle, feed=None):
        """Write the tuples the target lacks, with the new identity IDs. With ``feed`` (MappingFeed), the identities are
        still being written: a tuple that names one without its new ID yet waits for it (at most DEFER_MAX wait; the
        reading pauses beyond), and only once the identities are done is a tuple that still cannot be mapped left out."""
        keto = self.conn.client('keto_write')
        sender = SerialSender()
        batch = []
        created = [0]
        unmapped = [0]
        waiting = {}  # external ID of an identity without its new ID yet -> the tuples that wait for it
        held = [0]
        final = [feed is None]
        missing = []

        def send(items):
            keto.request('PATCH', '/admin/relation-tuples', json_body=[{'action': 'insert', 'relation_tuple': t}
                                                                       for t in items], ok=(204, 200))
            created[0] += len(items)

        def flush():
            if batch:
                sender.submit(send, list(batch))
                del batch[:]

        def lookup(value):
            new = self.new_id_of(value)
            if new is None:
                missing.append(value)
            return new

        def place(item):
            del missing[:]
            mapped = remap_tuple(item, lookup)
            if mapped is None:
                if final[0]:
                    unmapped[0] += 1
                else:
                    waiting.setdefault(self.index[missing[-1]], []).append(item)
                    held[0] += 1
                return
            key = tuple_key(mapped)
            if key in self.target_tuples:
                return
            self.target_tuples.add(key)
            batch.append(mapped)
            if len(batch) >= TUPLE_BATCH:
                flush()

        def catch_up(block):
            news, done = feed.take(block)
            again = []
            for externals in news:
                if externals is None:
                    for items in waiting.values():
                        again.extend(items)
                    waiting.clear()
                    continue
                for ext in externals:
                    again.extend(waiting.pop(ext, ()))
            if done:
                final[0] = True
                for items in waiting.values():
                    again.extend(items)
                waiting.clear()
            held[0] -= len(again)
            for item in again:
                place(item)

        def add(item):
            place(item)
            if not final[0]:
                catch_up(False)
                while held[0] > DEFER_MAX and not final[0]:
                    catch_up(True)
        try:
            bundle.stream('restore/relationships.json', add)
            while not final[0]:
                catch_up(True)
            flush()
        finally:
            sender.drain()
        self.result['created']['relationships'] = created[0]
        if unmapped[0]:
            self.warnings.append('%d relation tuples name an identity that was not imported; they were left out' % unmapped[0])

    def write_relationships(self, bundle):
        """<state_dir>/relationships.json: the bundle's tuples with the new identity IDs, for the stock CLI."""
        path = os.path.join(self.state_dir, RELATIONSHIPS_FILE)
        written, left_out = write_relationships_file(
            path, lambda handle: bundle.stream('restore/relationships.json', handle), self.new_id_of)
        self.relationships_file = path
        if left_out:
            self.warnings.append('%d relation tuples name an identity that is not in the target; %s leaves them out'
                                 % (left_out, path))
        return written

    relationships_file = None

    # -- the run

    def timed(self, kind, step, bundle):
        mark = time.time()
        step(bundle)
        self.phases[kind] = round(time.time() - mark, 2)

    def timed_steps(self, steps, bundle):
        for kind, step in steps:
            self.timed(kind, step, bundle)

    def run(self, bundle):
        refused = self.params.get('refuse_endpoints') or []
        if refused:
            # before anything is read from the target: a drill must never write into the live project
            from ansible_collections.idp.recovery.plugins.module_utils._guard.locations import url_refusal
            match = url_refusal(list(self.conn.endpoints().values()), refused)
            if match:
                raise RecoveryError('refused: the target %s reaches the same server as %s, which must not be written '
                                    '(refuse_endpoints); nothing was written' % match)
        started = time.time()
        network = self.conn.is_network
        phases = self.phases = {}
        gates = self.version_gates(bundle, network)
        validated = bundle.validate(self.include, network)
        phases['validate'] = round(time.time() - started, 2)
        plan = self.plan(bundle)
        phases['plan'] = round(time.time() - started - phases['validate'], 2)
        conflicts = dict((k, v) for k, v in self.result['conflicts'].items() if v)
        to_do = work_left(plan)
        result = {'plan': plan, 'validated': validated, 'conflicts': sample_conflicts(conflicts), 'changed': to_do,
                  'version_gate': gates,
                  'source': {'set_dir': bundle.set_dir, 'project_id': bundle.ory.get('project_id'),
                             'deployment': bundle.ory.get('deployment')}}
        if conflicts and self.params.get('fail_on_conflict', True):
            raise RecoveryError('the target project holds data that conflicts with the export; nothing was written (%s)'
                                % describe_conflicts(conflicts), plan=plan, conflicts=sample_conflicts(conflicts))
        if self.secrets_to_generate and self.params.get('encryption'):
            # the new secrets can be encrypted: prove it before any client is created
            encrypt_stages(Compression('none'), encryption_backend(
                self.params['encryption'], self.params.get('recipients'), self.params.get('recipients_file'),
                self.params.get('passphrase'), self.params.get('gpg_homedir')))
        if self.secrets_to_generate and not self.params.get('return_secrets') and not self.params.get('encryption'):
            raise RecoveryError('%d OAuth2 clients need a new secret (none was supplied in client_secrets): give recipients '
                                '(the new secrets are written encrypted) or return_secrets=true; nothing was written'
                                % len(self.secrets_to_generate), clients=list(self.secrets_to_generate)[:CONFLICT_SAMPLE])
        if self.check_mode or not to_do:
            result['msg'] = 'nothing to do' if not to_do else 'check mode: nothing was written'
            result['warnings'] = self.warnings
            return result
        self.state_dir = self.params.get('state_dir') or (bundle.set_dir.rstrip('/') + '.ory-import')
        ensure_dir(self.state_dir)
        self.map_log = os.path.join(self.state_dir, 'id-map.jsonl')
        if plan.get('config') == 'update':
            mark = time.time()
            self.apply_config()
            phases['config'] = round(time.time() - mark, 2)
        hydra_steps = [(kind, step) for kind, step in (('oauth2_clients', self.import_clients), ('jwk_sets', self.import_jwks))
                       if kind in plan]
        if 'identities' in plan and 'relationships' in plan:
            # the tuples go to Keto's bucket while the identities go to Kratos's, each one request at a time: a tuple
            # as soon as the identities it names have their new IDs. OAuth2 clients and JWK sets (Hydra's buckets)
            # follow the identities as before (a failed identity import creates no client); a failure on either
            # side stops both
            self.conn.client('keto_write')
            self.conn.client('hydra')
            feed = self.feed = MappingFeed()
            beside = SerialSender()
            beside.submit(self.timed, 'relationships', lambda b: self.import_tuples(b, feed), bundle)
            self.halt = beside.failed
            try:
                self.timed('identities', self.import_identities, bundle)
                self.halt = None
                feed.finish()
                self.timed_steps(hydra_steps, bundle)
            except Stopped:
                beside.drain()  # the tuple writer failed: its error, as it would be raised without the identities beside
                raise
            except BaseException:
                feed.stop()
                beside.settle()
                raise
            finally:
                self.halt = self.feed = None
            beside.drain()
        elif 'relationships' in plan and hydra_steps:
            # OAuth2 clients and JWK sets go to Hydra's buckets while the tuples go to Keto's: the two run side by
            # side, each one request at a time
            self.conn.client('hydra')
            beside = SerialSender()
            beside.submit(self.timed_steps, hydra_steps, bundle)
            try:
                self.timed('relationships', self.import_tuples, bundle)
            except BaseException:
                beside.settle()
                raise
            beside.drain()
        else:
            if 'identities' in plan:
                self.timed('identities', self.import_identities, bundle)
            self.timed_steps(hydra_steps, bundle)
            if 'relationships' in plan:
                self.timed('relationships', self.import_tuples, bundle)
        if bundle.has('relationships') and bundle.has('identities') and self.index:
            # the tuples with the new identity IDs, for a restore of them with the stock ory CLI
            self.write_relationships(bundle)
        conflicts = dict((k, v) for k, v in self.result['conflicts'].items() if v)
        report = {
            'finished_at': iso(utcnow()),
            'duration_seconds': round(time.time() - started, 3),
            'created': self.result['created'],
            'updated': self.result['updated'],
            'plan': plan,
            'conflicts': sample_conflicts(conflicts),
            'warnings': self.warnings,
            'requests': self.conn.stats(),
            'phases_seconds': phases,
            'source': result['source'],
        }
        write_file_atomic(os.path.join(self.state_dir, 'import-report.json'), dump_json(report))
        fsync_dir(self.state_dir)
        result.update({
            'created': self.result['created'],
            'updated': self.result['updated'],
            'state_dir': self.state_dir,
            'id_map': os.path.join(self.state_dir, 'id-map.json') if 'identities' in plan else None,
            'rotation_report': list(self.rotation_report),
            'secrets_file': self.secrets_file,
            'relationships_file': self.relationships_file,
            'duration_seconds': report['duration_seconds'],
            'requests': report['requests'],
            'phases_seconds': phases,
            'conflicts': sample_conflicts(conflicts),
            'warnings': self.warnings,
        })
        if self.params.get('return_secrets') and self.generated_secrets:
            result['client_secrets'] = self.generated_secrets
        if conflicts:
            if self.params.get('fail_on_conflict', True):
                raise RecoveryError('the import finished with conflicts: %s' % describe_conflicts(conflicts),
                                    **dict((k, v) for k, v in result.items() if k not in ('changed', 'client_secrets')))
            self.warnings.append('left out because of conflicts: %s' % describe_conflicts(conflicts))
        return result


class Stopped(Exception):
    """The writer on the other side failed: this one stops."""


class MappingFeed(object):
    """From the identity writer to the tuple writer beside it: which identities (external IDs; None: any) got their
    new ID, whether the identities are done, and a stop when they failed."""

    def __init__(self):
        self._cond = threading.Condition()
        self._news = []
        self._done = False
        self._stopped = False

    def publish(self, externals):
        with self._cond:
            self._news.append(externals)
            self._cond.notify_all()

    def finish(self):
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def take(self, block):
        """(the news since the last call, whether the identities are done); with ``block``, wait for either."""
        if not block and not (self._news or self._done or self._stopped):
            return [], False
        with self._cond:
            while block and not (self._news or self._done or self._stopped):
                self._cond.wait()
            if self._stopped:
                raise Stopped()
            news, self._news = self._news, []
            return news, self._done


class SerialSender(object):
    """Runs one call at a time in a background thread, so that reading the next batch overlaps the
    current request; submit() waits for the previous call and re-raises its error."""

    def __init__(self):
        self._thread = None
        self._error = []

    def _run(self, func, args):
        try:
            func(*args)
        except BaseException as exc:  # pylint: disable=broad-except
            self._error.append(exc)

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error:
            raise self._error.pop(0)

    def submit(self, func, *args):
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(func, args), name='idp-recovery-writer')
        self._thread.daemon = True
        self._thread.start()

    def drain(self):
        self.wait()

    def failed(self):
        """Whether a call has ended with an error (wait() raises it)."""
        return bool(self._error)

    def settle(self):
        """Wait for the call in flight; an error of it gives way to the one the caller is raising."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _quote(value):
    return quote(value, safe='')
