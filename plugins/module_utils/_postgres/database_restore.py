# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the one restore engine of database backup sets.

A set written by ``authentik_dump`` keeps its database facts under the metadata key
``authentik.database`` (beside its files and ``.env``), a set written by ``postgres_dump``
under ``postgres.database``; the payload format is the same. Both are restored by ``Restore``,
parameterised by the section of the module that runs it:

verify -> (Authentik: version gate) -> stop the app containers -> safety set -> drop and create
the database -> restore -> compare every row count -> (Authentik: files and ``.env``) -> start
the app containers -> health check. Any failure after the drop - including app containers that
do not start, or do not become healthy within ``health_timeout`` - rolls back: the apps are
stopped, the safety set is restored (database and, for Authentik, the file directories), the apps
are started again on it and their health is checked again; the error says how that went.

The safety set is a complete backup set of kind ``<section>-safety`` whose database facts are
under the same section, so the module that took it restores it like any other set.

The decisions it takes before anything changes are in ``_postgres.restore_plan``.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import threading
import time

from ansible.module_utils.urls import open_url

from ansible_collections.idp.recovery.plugins.module_utils import _backup_set
from ansible_collections.idp.recovery.plugins.module_utils._postgres.payload import dump_database
from ansible_collections.idp.recovery.plugins.module_utils._authentik.deployment import DEFAULT_HEALTH_PORT, HEALTH_PATH, file_specs, host_paths
from ansible_collections.idp.recovery.plugins.module_utils._authentik.files import dump_files
from ansible_collections.idp.recovery.plugins.module_utils._authentik.version import version_from_image, version_gate
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    Compression,
    Keys,
    encryption_backend,
    keys_from_params,
)
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._payload import (
    describe_payload,
    extract_payload,
    read_payload,
    verify_set,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import database_from_params
from ansible_collections.idp.recovery.plugins.module_utils._postgres.facts import (
    compare_counts,
    count_rows,
    database_exists,
    role_exists,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.load import recreate_database, restore_dump, stage_dump
from ansible_collections.idp.recovery.plugins.module_utils._postgres.restore_plan import (
    AUTHENTIK,
    MODULES,
    POSTGRES,
    PROGRESS_KEYS,
    SECTIONS,
    Steps,
    as_recovery_error,
    choose_owner,
    container_problem,
    default_safety_root,
    error_text,
    pick_database,
    safety_encryption,
)
from ansible_collections.idp.recovery.plugins.module_utils._stream import FileDigest


def restore_argument_spec(app_containers, **extra):
    """The options every database restore module takes (documented in the idp.recovery.restore fragment)."""
    spec = dict(
        set_dir=dict(type='path', required=True),
        owner=dict(type='str'),
        app_containers=dict(type='list', elements='str', default=list(app_containers)),
        safety_backup=dict(type='bool', default=True),
        safety_root=dict(type='path'),
        safety_recipients=dict(type='list', elements='str'),
        jobs=dict(type='int', default=2),
        tmpdir=dict(type='str'),
        health_url=dict(type='str'),
        health_timeout=dict(type='int', default=300),
    )
    spec.update(extra)
    return spec


# ---------------------------------------------------------------------------------------------
# landing the dump while the set is verified

class StagingDump(object):
    """Lands a custom dump in its temporary directory in a thread, while the set is still being verified.

    Nothing that the restore changes depends on it: the database is dropped only after the verification
    passed, and a staging that failed (or was not finished) is discarded and the dump is landed again
    in the restore step, with the errors of that step. The landed dump counts only when the SHA-256 of
    the payload bytes it was decrypted from (``digest``) is the manifest's (``expected``), the one the
    verification checked.
    """

    def __init__(self, db, feed, tmpdir, digest, expected):
        self.staged = None
        self.error = None
        self.seconds = None
        self._cancel = threading.Event()
        self._db = db
        self._feed = feed
        self._tmpdir = tmpdir
        self._digest = digest
        self._expected = expected
        self._thread = threading.Thread(target=self._run, name='stage-dump')
        self._thread.daemon = True

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        started = time.time()

        def feed(write):
            def checked(data):
                if self._cancel.is_set():
                    raise RecoveryError('landing the dump was cancelled')
                write(data)
            self._feed(checked)
        try:
            staged = stage_dump(self._db, feed, self._tmpdir)
            if self._digest.hexdigest() != self._expected:
                staged.remove()
                raise RecoveryError('the payload read while landing the dump differs from the manifest')
            self.staged = staged
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc
        self.seconds = round(time.time() - started, 3)

    def finish(self):
        """Wait for the dump to land; whether it did, how long it took (in all) and why not."""
        self._thread.join()
        return {'landed': self.staged is not None, 'seconds': self.seconds,
                'error': error_text(self.error) if self.error is not None else None}

    def discard(self):
        """Stop landing and remove what was landed."""
        self._cancel.set()
        self._thread.join()
        staged, self.staged = self.staged, None
        if staged is not None:
            staged.remove()


# ---------------------------------------------------------------------------------------------
# the restore

class DatabaseRestore(object):
    """One restore of a complete set by the module of ``section`` (``authentik`` or ``postgres``)."""

    def __init__(self, module, section=AUTHENTIK):
        if section not in SECTIONS:
            raise RecoveryError('unknown restore section %r' % (section,))
        self.module = module
        self.section = section
        self.authentik_target = section == AUTHENTIK
        self.params = dict(module.params)
        self.set_dir = os.path.abspath(self.params['set_dir'])
        self.keys = keys_from_params(self.params)
        self.steps = Steps()
        self.result = {'changed': False, 'set_dir': self.set_dir, 'steps': self.steps.done}
        self.engine = None
        self.db = None
        self.apps = []
        self.stopped = []
        self.safety_set = None
        self.safety_keys = None
        self.files = []
        self.metadata = {}
        self.manifest = {}
        self.authentik = {}
        self.dbmeta = {}
        self.source_section = section
        self.owner = None
        self.owner_source = None
        self.restore_role = None

    @property
    def app_label(self):
        return 'Authentik' if self.authentik_target else 'application'

    @property
    def app_name(self):
        """What the messages call the application (in the middle of a sentence)."""
        return 'Authentik' if self.authentik_target else 'the application'

    # ----- planning (read-only)
    def load_set(self):
        if not os.path.isdir(self.set_dir):
            raise RecoveryError('backup set %s does not exist' % self.set_dir, path=self.set_dir)
        if not _backup_set.is_complete(self.set_dir):
            raise RecoveryError('backup set %s is incomplete (no %s): it is never restored'
                                % (self.set_dir, _backup_set.MANIFEST), path=self.set_dir)
        # a link, a newer format_version, or a payload path outside the set or not in the manifest is refused
        self.metadata = _backup_set.read_metadata(self.set_dir)
        self.manifest = dict(_backup_set.read_manifest(self.set_dir))
        self.source_section, self.dbmeta = pick_database(self.metadata, self.section, self.set_dir)
        _backup_set.payload_path(self.set_dir, self.dbmeta['payload'], self.manifest,
                                 '%s.database.payload' % self.source_section)
        self.authentik = (self.metadata.get(AUTHENTIK) or {}) if self.authentik_target else {}
        if not self.params.get('database'):
            if not self.dbmeta.get('name'):
                raise RecoveryError('backup set %s records no database name; give database' % self.set_dir,
                                    path=self.set_dir)
            self.params['database'] = self.dbmeta['name']

    def app_containers(self):
        params = self.params
        if params.get('compose_project'):
            names = []
            for name in self.engine.project_containers(params['compose_project']):
                info = self.engine.inspect(name)
                service = ((info.get('Config') or {}).get('Labels') or {}).get('com.docker.compose.service')
                if service not in params['keep_services']:
                    names.append(name)
        else:
            names = list(params['app_containers'] or [])
        db_container = params['container']
        db_id = self.engine.inspect(db_container)['Id'] if db_container else None
        found = []
        for name in names:
            if not self.engine.exists(name):
                raise RecoveryError('app container %s does not exist on the Docker engine at %s; set app_containers to '
                                    'the names of the %s containers (or [] when none runs there)%s'
                                    % (name, self.engine.base_url, self.app_label,
                                       ', or compose_project' if self.authentik_target else ''), container=name)
            info = self.engine.inspect(name)
            if name == db_container or info['Id'] == db_id:
                if params.get('compose_project'):
                    continue
                raise RecoveryError('app_containers names the database container %s: it is never stopped' % name)
            found.append({'name': name, 'info': info, 'running': bool((info.get('State') or {}).get('Running'))})
        return found

    def target_version(self, apps):
        if self.params['target_version']:
            return self.params['target_version'], 'target_version'
        for app in apps:
            version = version_from_image(app['info'], self.engine.image_labels(app['info']))
            if version:
                return version, 'image of %s' % app['name']
        return None, None

    def file_plan(self):
        if not self.authentik_target:
            return []
        payloads = {}
        for name, item in sorted((self.authentik.get('files') or {}).items()):
            if item.get('payload'):
                _backup_set.payload_path(self.set_dir, item['payload'], self.manifest,
                                         'authentik.files.%s.payload' % name)
                payloads[name] = item['payload']
        if not self.params['restore_files'] or not payloads:
            return []
        specs = file_specs(self.params['files'], self.params['compose_dir'], self.params['files_container'])
        specs = dict((spec['name'], spec) for spec in specs)
        missing = sorted(set(payloads) - set(specs))
        if missing:
            raise RecoveryError('the set holds file payloads %s without a destination: give files or compose_dir, '
                                'or restore_files=false' % ', '.join(missing))
        engine = self.engine
        if engine is None and any(specs[n]['container_path'] for n in payloads):
            engine = self.engine = DockerEngine(self.params['docker_host'])
        resolved = host_paths([specs[n] for n in payloads], engine, self.params['files_container'])
        plan = []
        for spec in resolved:
            if not spec['host_path']:
                raise RecoveryError('files: %s is not mounted in %s' % (spec['where'], self.params['files_container']))
            plan.append({'name': spec['name'], 'payload': payloads[spec['name']], 'dest': spec['host_path'],
                         'container_path': spec['container_path']})
        return plan

    def env_plan(self):
        if not self.authentik_target or not self.params['restore_env']:
            return None
        env = self.authentik.get('env') or {}
        if not env.get('payload'):
            raise RecoveryError('restore_env=true but the set holds no .env payload')
        _backup_set.payload_path(self.set_dir, env['payload'], self.manifest, 'authentik.env.payload')
        dest = self.params['env_file'] or (os.path.join(self.params['compose_dir'], '.env')
                                           if self.params['compose_dir'] else None)
        if not dest:
            raise RecoveryError('restore_env=true needs env_file or compose_dir')
        return {'payload': env['payload'], 'dest': dest}

    def safety_plan(self, target_exists):
        if not self.params['safety_backup']:
            return None
        if not target_exists:
            return {'skipped': 'database %s does not exist on the target: nothing to save' % self.db.database}
        root = self.params['safety_root'] or default_safety_root(self.set_dir)
        info = (self.metadata.get('payloads') or {}).get(self.dbmeta['payload']) or {}
        encryption, recipients = safety_encryption(info, self.params['safety_recipients'], self.params['passphrase'])
        if encryption == 'age':
            backend = encryption_backend('age', recipients=recipients)
        elif encryption == 'gpg':
            backend = encryption_backend('gpg', recipients=recipients, gpg_homedir=self.params['gpg_homedir'])
        else:
            backend = encryption_backend('passphrase', passphrase=self.params['passphrase'],
                                         gpg_homedir=self.params['gpg_homedir'])
        if backend.name == 'age':
            backend.validate_for_encryption()
        return {'root': root, 'dir': os.path.join(root, make_stamp()), 'backend': backend,
                'encryption': backend.name}

    def resolve_owner(self):
        """Owner of the recreated database and the role pg_restore creates the objects as."""
        given = self.params.get('owner')
        if self.authentik_target:
            self.owner = given or self.params['user']
            self.restore_role = given
            return {'owner': self.owner, 'source': 'the owner option' if given else 'the connecting user'}
        recorded = self.dbmeta.get('owner')
        exists = bool(recorded) and not given and role_exists(self.db, recorded)
        self.owner, source = choose_owner(given, recorded, self.params['user'], exists)
        self.restore_role = self.owner
        return {'owner': self.owner, 'source': source}

    # ----- the steps
    def verify(self, checksums_only, staging=None):
        """Verify the set; ``staging`` (landing the dump meanwhile) is waited for once the set passed."""
        checks, _unlisted = verify_set(self.set_dir, self.keys, decrypt='never' if checksums_only else 'always')
        detail = {'files': len(checks), 'decrypted': sum(1 for c in checks if c.get('decrypted'))}
        if staging is not None:
            detail['dump_landed'] = staging.finish()
        return detail

    def stop_apps(self, apps):
        for app in apps:
            if app['running']:
                self.engine.stop(app['name'])
                self.stopped.append(app['name'])
        return {'stopped': list(self.stopped)}

    def start_apps(self):
        """Start every app container this restore stopped; each must then be running."""
        started = []
        problems = []
        for name in self.stopped:
            try:
                self.engine.start(name)
            except RecoveryError as exc:
                problems.append(exc.msg)
                continue
            started.append(name)
        problems.extend(p for p in (self.container_problem(name) for name in started) if p)
        if problems:
            raise RecoveryError('; '.join(problems))
        return {'started': started}

    def stop_started(self):
        """Stop the app containers of this restore that run now (before the rollback replaces their database)."""
        stopped = []
        for name in self.stopped:
            state = self.engine.inspect(name).get('State') or {}
            if state.get('Running') or state.get('Restarting'):
                self.engine.stop(name)
                stopped.append(name)
        return {'stopped': stopped}

    def container_problem(self, name):
        """Why the started app container ``name`` is not running, or None."""
        try:
            state = self.engine.inspect(name).get('State') or {}
        except RecoveryError as exc:
            return exc.msg
        return container_problem(name, state)

    def safety_dump(self, plan, files):
        set_dir = plan['dir']
        kind = '%s-safety' % self.section
        service = os.path.basename(plan['root'])
        _backup_set.create(set_dir, service=service, kind=kind)
        compressor = Compression('zstd')
        try:
            dump_database(self.db, set_dir, 'custom', plan['backend'], compressor, strict=False,
                          section=self.section)
            if self.authentik_target:
                specs = [{'name': f['name'], 'host_path': f['dest'], 'where': f['dest'], 'required': False}
                         for f in files]
                backend = plan['backend']
                options = {'recipients': getattr(backend, 'recipients', None), 'passphrase': self.params['passphrase'],
                           'gpg_homedir': self.params['gpg_homedir']}
                dump_files(set_dir, specs, backend.name, ('zstd', None), options)
            _backup_set.finalize(set_dir, caller_metadata={'restore_of': self.set_dir}, service=service, kind=kind)
        except RecoveryError as exc:
            if _backup_set.looks_like_set(set_dir) and not _backup_set.is_complete(set_dir):
                _backup_set.remove(set_dir)
            raise RecoveryError('the safety dump failed, nothing was changed: %s' % exc.msg)
        self.safety_set = set_dir
        self.safety_keys = self.keys
        return {'safety_set': set_dir}

    def recreate(self):
        recreate_database(self.db, self.owner, encoding=self.dbmeta.get('encoding'))
        return {'database': self.db.database, 'owner': self.owner}

    @staticmethod
    def database_payload(set_dir, dbmeta, keys, digest=None):
        """(format, feed) of the database payload of a set: feed(write) streams the plaintext dump.

        digest: a FileDigest that sees every byte of the payload file that is decrypted (see read_payload).
        """
        path = _backup_set.payload_path(set_dir, dbmeta['payload'])
        description = describe_payload(path)
        fmt = dbmeta.get('format') or description['recorded'].get('dump_format') or 'custom'

        def feed(write):
            def consume(stream):
                readinto = getattr(stream, 'readinto1', None) or stream.readinto
                buf = bytearray(1024 * 1024)
                view = memoryview(buf)
                while True:
                    count = readinto(buf)
                    if not count:
                        return
                    write(view[:count])
            read_payload(path, description, keys, consume, digest=digest)
        return fmt, feed

    def restore_database(self, set_dir, dbmeta, keys, staging=None):
        """Restore the set's dump into the recreated database; ``staging``: a StagingDump of this very dump."""
        fmt, feed = self.database_payload(set_dir, dbmeta, keys)
        staged = staging.staged if staging is not None else None
        restore_dump(self.db, fmt, feed, jobs=self.params['jobs'], owner=self.restore_role,
                     tmpdir=self.params['tmpdir'], staged=staged)
        return {'format': fmt, 'payload': dbmeta['payload'], 'staged_during_verify': staged is not None}

    def compare(self, dbmeta):
        actual = count_rows(self.db)
        problems = compare_counts(dbmeta.get('tables') or {}, actual)
        self.result['tables'] = {'checked': len(dbmeta.get('tables') or {}), 'mismatched': problems}
        if problems:
            raise RecoveryError('row counts differ after the restore: %s' % ', '.join(
                '%s (expected %s, found %s)' % (p['table'], p['expected'], p['actual']) for p in problems[:20]))
        return {'tables': len(dbmeta.get('tables') or {}), 'rows': sum((dbmeta.get('tables') or {}).values())}

    def restore_files(self, files, env):
        restored = []
        for item in files:
            extract_payload(_backup_set.payload_path(self.set_dir, item['payload'], self.manifest), item['dest'],
                            self.keys, force=True, verified=True)
            restored.append(item['name'])
        if env:
            extract_payload(_backup_set.payload_path(self.set_dir, env['payload'], self.manifest), env['dest'],
                            self.keys, force=True, verified=True)
            os.chmod(env['dest'], 0o600)
            restored.append('.env')
        return {'restored': restored}

    def rollback_files(self):
        """Put back the directories that the safety set captured (only those this restore may have replaced)."""
        restored = []
        captured = (_backup_set.read_metadata(self.safety_set).get(AUTHENTIK) or {}).get('files') or {}
        for item in self.files:
            payload = (captured.get(item['name']) or {}).get('payload')
            if payload:
                extract_payload(_backup_set.payload_path(self.safety_set, payload), item['dest'], self.safety_keys,
                                force=True, verified=True)
                restored.append(item['name'])
        return {'restored': restored}

    def health(self, url, key='health'):
        """Wait until ``url`` answers 200 while every started app container runs; the result goes to ``key``."""
        deadline = time.time() + self.params['health_timeout']
        started = time.time()
        url = self.current_health_url(url)
        last = None
        while True:
            status = None
            try:
                response = open_url(url, timeout=5, validate_certs=False)
                status = response.getcode()
                last = 'HTTP %s' % status
            except Exception as exc:  # pylint: disable=broad-except
                last = getattr(exc, 'code', None) and 'HTTP %s' % exc.code or str(exc)
            problems = [p for p in (self.container_problem(name) for name in self.stopped) if p]
            if problems:
                raise RecoveryError('%s did not become ready at %s: %s (last answer: %s)' % (
                    self.app_name, url, '; '.join(problems), last))
            if status == 200:
                health = {'url': url, 'status': status, 'waited': round(time.time() - started, 3)}
                self.result[key] = health
                return health
            if time.time() > deadline:
                raise RecoveryError('%s did not become ready at %s within %s s (last answer: %s)' % (
                    self.app_name, url, self.params['health_timeout'], last))
            time.sleep(1)

    def current_health_url(self, planned):
        """The default Authentik health URL again from the address the app container has now (a container that
        was stopped and started may have another); a given health_url as it is."""
        if self.params['health_url'] is not None or not self.authentik_target or not self.apps:
            return planned
        try:
            return self.health_url(self.apps) or planned
        except RecoveryError:
            return planned

    def health_url(self, apps):
        url = self.params['health_url']
        if url is not None:
            return url or None
        if not self.authentik_target:
            return None
        for app in apps:
            info = self.engine.inspect(app['name'])
            networks = (info.get('NetworkSettings') or {}).get('Networks') or {}
            for net in sorted(networks):
                address = networks[net].get('IPAddress')
                if address:
                    return 'http://%s:%d%s' % (address, DEFAULT_HEALTH_PORT, HEALTH_PATH)
            break
        return None

    def version_gate(self, apps, plan):
        """Authentik only: refuse a dump of a newer release line, or of one more than a line older."""
        params = self.params
        version, source = self.target_version(apps)
        gate = version_gate((self.authentik.get('version') or {}).get('version'), version,
                            params['force_version'])
        gate['target_version_source'] = source
        self.result['version_gate'] = gate
        if not gate['ok']:
            raise RecoveryError('version gate: %s; set force_version=true to restore anyway' % gate['reason'],
                                version_gate=gate, plan=plan, steps=self.steps.done)
        if gate['forced']:
            self.module.warn('version gate overridden by force_version: %s' % gate['reason'])

    def make_plan(self, apps, target_exists, files, env, safety):
        database = {'target': self.db.where, 'exists': target_exists, 'drop': target_exists,
                    'restore': self.dbmeta['payload'], 'format': self.dbmeta.get('format'),
                    'tables': len(self.dbmeta.get('tables') or {}),
                    'rows': sum((self.dbmeta.get('tables') or {}).values())}
        safety_set = (safety or {}).get('dir') or (safety or {}).get('skipped')
        if self.authentik_target:
            return {
                'stop': [a['name'] for a in apps if a['running']],
                'database': database,
                'files': [{'name': f['name'], 'dest': f['dest']} for f in files],
                'env': env['dest'] if env else None,
                'safety_set': safety_set,
            }
        database.update({'name': self.db.database, 'recorded_name': self.dbmeta.get('name'),
                         'owner': self.owner, 'owner_source': self.owner_source,
                         'server_version': self.dbmeta.get('server_version'),
                         'set_section': self.source_section})
        return {'stop': [a['name'] for a in apps if a['running']], 'database': database, 'safety_set': safety_set}

    # ----- the whole restore
    def run(self):
        params = self.params
        check_mode = self.module.check_mode
        self.load_set()
        self.db, self.engine = database_from_params(params)
        if self.engine is None and (params['app_containers'] or params.get('compose_project')):
            self.engine = DockerEngine(params['docker_host'])
        apps = self.apps = self.app_containers() if self.engine is not None else []
        if self.source_section != self.section and apps:
            self.module.warn('%s is an Authentik set: only its database is restored, without the version gate, files '
                             'or .env, and the app containers start on it again; restore Authentik with %s'
                             % (self.set_dir, MODULES[AUTHENTIK]))
        target_exists = database_exists(self.db, self.db.database)
        self.owner_source = self.resolve_owner()['source']
        files = self.files = self.file_plan()
        env = self.env_plan()
        safety = self.safety_plan(target_exists)
        plan = self.make_plan(apps, target_exists, files, env, safety)
        self.result['plan'] = plan

        staging = None if check_mode else self.start_staging()
        try:
            return self._run_verified(plan, apps, files, env, safety, staging)
        finally:
            if staging is not None:
                staging.discard()

    def start_staging(self):
        """Land a custom dump in its temporary directory while the set is verified (nothing changes by it)."""
        expected = self.manifest.get(self.dbmeta['payload'])
        digest = FileDigest()
        try:
            fmt, feed = self.database_payload(self.set_dir, self.dbmeta, self.keys, digest)
        except RecoveryError:
            return None  # the verification says what is wrong with the payload
        if fmt != 'custom' or not expected:
            return None
        return StagingDump(self.db, feed, self.params['tmpdir'], digest, expected).start()

    def _run_verified(self, plan, apps, files, env, safety, staging):
        params = self.params
        check_mode = self.module.check_mode
        self.steps.run('verify', self.verify, check_mode, staging)
        if staging is not None and staging.staged is None:
            staging = None
        if self.authentik_target:
            self.version_gate(apps, plan)
        health_url = self.health_url(apps) if apps or params['health_url'] else None
        plan['health_url'] = health_url
        if check_mode:
            self.result['changed'] = True
            self.result['recovery_seconds'] = self.steps.total()
            return self.result

        self.result['changed'] = True
        try:
            self.steps.run('stop_apps', self.stop_apps, apps)
            if safety and safety.get('dir'):
                self.steps.run('safety_backup', self.safety_dump, safety, files)
                self.result['safety_set'] = self.safety_set
        except Exception as exc:  # pylint: disable=broad-except
            restart_error = self._restart_quietly('start_apps')
            raise RecoveryError(as_recovery_error(exc).msg + ('; restarting the app containers failed too: %s'
                                                              % restart_error if restart_error else ''),
                                steps=self.steps.done, plan=plan)
        # from here on the target is replaced: every failure rolls back to the safety set
        try:
            self.steps.run('recreate_database', self.recreate)
            self.steps.run('restore_database', self.restore_database, self.set_dir, self.dbmeta, self.keys, staging)
            self.steps.run('compare_counts', self.compare, self.dbmeta)
            if self.authentik_target:
                self.steps.run('restore_files', self.restore_files, files, env)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._rollback(as_recovery_error(exc), plan, health_url)
        try:
            self.steps.run('start_apps', self.start_apps)
            if health_url:
                self.steps.run('health', self.health, health_url)
        except Exception as exc:  # pylint: disable=broad-except
            raise self._rollback(as_recovery_error(exc), plan, health_url, unhealthy=True)
        self.result['recovery_seconds'] = self.steps.total()
        return self.result

    def _restart_quietly(self, step):
        """Start the stopped app containers again as the step ``step``; the error message, or None."""
        try:
            self.steps.run(step, self.start_apps)
        except Exception as exc:  # pylint: disable=broad-except
            return error_text(exc)
        return None

    def _rollback(self, error, plan, health_url=None, unhealthy=False):
        """Put the safety set back after ``error`` and start the apps on it again; the error to raise.

        ``unhealthy``: the error is that the app containers did not start or did not become healthy on
        the restored database (they were started); they are stopped before the rollback.
        """
        if unhealthy:
            messages = ['%s did not become healthy on the restored database: %s' % (self.app_name, error.msg)]
        else:
            messages = ['restore failed: %s' % error.msg]
        details = {'rolled_back': False, 'safety_set': self.safety_set}
        if not self.safety_set:
            reason = self._no_safety_reason(plan)
            if unhealthy:
                messages.append('no safety set was taken (%s), so nothing was rolled back: the restored data is kept'
                                % reason)
            else:
                messages.append('no safety set was taken (%s), the database was not rolled back' % reason)
                self._restart_after_rollback(messages, None, rolled_back=False)
            return RecoveryError('; '.join(messages), steps=self.steps.done, plan=plan, **details)

        if unhealthy and self.stopped:
            try:
                self.steps.run('rollback_stop_apps', self.stop_started)
            except RecoveryError as exc:
                messages.append('stopping the app containers for the rollback failed: %s; the database was NOT rolled '
                                'back (it holds the restored data), the safety set is kept at %s'
                                % (exc.msg, self.safety_set))
                return RecoveryError('; '.join(messages), steps=self.steps.done, plan=plan, **details)
        rolled_back = False
        try:
            safety_meta = (_backup_set.read_metadata(self.safety_set).get(self.section) or {}).get('database') or {}
            self.steps.run('rollback_recreate', self.recreate)
            self.steps.run('rollback_restore', self.restore_database, self.safety_set, safety_meta,
                           self.safety_keys or Keys())
            self.steps.run('rollback_compare', self.compare, safety_meta)
            if self.authentik_target:
                self.steps.run('rollback_files', self.rollback_files)
            rolled_back = True
            messages.append('the %s was rolled back to the safety set %s' % (
                'restored data (database and file directories)' if self.authentik_target and self.files
                else 'database', self.safety_set))
        except Exception as exc:  # pylint: disable=broad-except
            messages.append('rolling back to the safety set %s failed too: %s; the database is in an UNKNOWN state, '
                            'the safety set is kept at %s' % (self.safety_set, error_text(exc), self.safety_set))
        details['rolled_back'] = rolled_back
        details['healthy_after_rollback'] = self._restart_after_rollback(messages, health_url, rolled_back)
        return RecoveryError('; '.join(messages), steps=self.steps.done, plan=plan, **details)

    def _no_safety_reason(self, plan):
        if not self.params['safety_backup']:
            return 'safety_backup=false'
        return plan.get('safety_set') or 'none was planned'

    def _restart_after_rollback(self, messages, health_url, rolled_back):
        """Start the app containers again (and check health on the safety copy); healthy: True, False or None."""
        started = ''
        if self.stopped:
            restart_error = self._restart_quietly('rollback_start_apps')
            if restart_error:
                messages.append('the app containers did NOT start %s: %s%s' % (
                    'on the safety copy' if rolled_back else 'again', restart_error,
                    '; the database holds the safety copy, the safety set is kept at %s' % self.safety_set
                    if rolled_back else ''))
                return False
            started = 'the app containers were started again'
        if not (rolled_back and health_url):
            if started:
                messages.append(started + (' on the safety copy (no health check)' if rolled_back else ''))
            return None
        try:
            health = self.steps.run('rollback_health', self.health, health_url, 'rollback_health')
        except Exception as exc:  # pylint: disable=broad-except
            messages.append('%s is NOT healthy on the safety copy either: %s; the database holds the state from before '
                            'the restore, so the data is probably not the cause - look at the logs of %s; the safety '
                            'set is kept at %s' % (self.app_name, error_text(exc),
                                                   ', '.join(self.stopped) or self.app_name, self.safety_set))
            return False
        messages.append('%s%s is healthy again on the safety copy (%s answered %s after %s s)' % (
            started + ' and ' if started else '', self.app_name, health['url'], health['status'], health['waited']))
        return True


def run_restore(module, section):
    """The restore of a module (``section`` 'authentik' or 'postgres'); on failure the error says how far it got."""
    restore = DatabaseRestore(module, section)
    try:
        return restore.run()
    except RecoveryError as exc:
        # whatever failed, say how far the restore got
        for key in PROGRESS_KEYS:
            if key in restore.result and key not in exc.details:
                exc.details[key] = restore.result[key]
        exc.details.setdefault('recovery_seconds', restore.steps.total())
        raise


def run_authentik(module):
    return run_restore(module, AUTHENTIK)


def run_postgres(module):
    return run_restore(module, POSTGRES)
