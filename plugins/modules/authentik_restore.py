#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: authentik_restore
short_description: Restore Authentik from a complete backup set, with a safety dump and a rollback
version_added: 0.1.0
description:
  - Restores a complete backup set written by M(idp.recovery.authentik_dump) into a target database (in its
    container or over TCP), in this order, each step timed and returned (together they are the recovery time).
  - 1. Verify the set (checksums and a full decrypt test of every payload) before touching anything.
  - "2. Version gate: refuse a dump whose Authentik release line is newer than the target's, or more than one
    release line older, unless O(force_version=true)."
  - 3. Stop the app containers (never the database container).
  - 4. Safety dump of the current database (and of the file directories about to be replaced) into a backup set
    of its own.
  - 5. Terminate the connections, drop the database and create it again, empty, with its owner.
  - 6. Restore - C(pg_restore --exit-on-error), in parallel for custom dumps, from a 0700 temporary directory
    removed afterwards; C(psql) with C(ON_ERROR_STOP=1) in one transaction for plain dumps.
  - 7. Compare every table's row count with the counts recorded at backup time; any difference fails, naming
    the tables.
  - 8. Restore the files (safe extraction) and, when asked, the C(.env).
  - 9. Start the app containers and wait until the health URL answers.
  - If anything fails after step 5, the safety dump is restored, the app containers are started again and the
    task fails with both errors.
  - Check mode reports the plan (what would stop, what would be dropped, what would be restored) after
    checking the set's checksums and the version gate, and changes nothing.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.postgres
  - idp.recovery.encryption.DECRYPT
attributes:
  check_mode:
    support: full
    details: Verifies checksums and the version gate, returns the plan, changes nothing.
  diff_mode:
    support: none
options:
  set_dir:
    description:
      - The complete backup set to restore.
    type: path
    required: true
  user:
    description:
      - Database role to connect as. It must be allowed to drop and create the database (the Authentik
        compose deployment's role is).
    type: str
    default: authentik
  database:
    description:
      - The database to replace.
    type: str
    default: authentik
  owner:
    description:
      - Owner of the recreated database and of the restored objects. Defaults to O(user).
    type: str
  app_containers:
    description:
      - Containers to stop before the restore and to start afterwards (only those that were running).
      - The database container is never stopped; naming it is an error.
      - Set to an empty list when no app container runs on this Docker host.
    type: list
    elements: str
    default: [authentik-server, authentik-worker]
  compose_project:
    description:
      - Instead of O(app_containers), every container of this compose project except the database container and
        those of O(keep_services).
    type: str
  keep_services:
    description:
      - With O(compose_project), compose services that keep running (the database, a Redis).
    type: list
    elements: str
    default: [postgresql, postgres, db, redis]
  target_version:
    description:
      - Authentik version of the target. Defaults to the C(org.opencontainers.image.version) label (else the tag)
        of the image of the first app container.
    type: str
  force_version:
    description:
      - Restore even when the version gate refuses. Authentik does not support downgrades; use only with a
        reason.
    type: bool
    default: false
  safety_backup:
    description:
      - Dump the current target into a backup set of its own before dropping anything.
    type: bool
    default: true
  safety_root:
    description:
      - Where the safety set goes (C(SAFETY_ROOT/STAMP)). Defaults to C(SERVICE-pre-restore) beside the
        service directory of O(set_dir).
    type: path
  safety_recipients:
    description:
      - age recipients of the safety set. Defaults to the recipients recorded in O(set_dir) (whoever can read
        the set can read its safety set); with a passphrase set, O(passphrase) is used.
    type: list
    elements: str
  jobs:
    description:
      - Parallel jobs of C(pg_restore) for custom dumps (1 restores in a single transaction).
    type: int
    default: 2
  tmpdir:
    description:
      - Directory for the temporary decrypted custom dump (inside the database container with O(container)).
        Defaults to C(/tmp) there, to the system temporary directory on this host.
    type: str
  restore_files:
    description:
      - Restore the file directories of the set.
    type: bool
    default: true
  compose_dir:
    description:
      - The Authentik deployment directory; gives the default destinations of the files and of the C(.env).
    type: path
  files:
    description:
      - Destinations of the file payloads by name (as in M(idp.recovery.authentik_dump)). A payload of the set
        without a destination fails the task before anything changes, unless O(restore_files=false).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the payload.
        type: str
        required: true
      path:
        description: Directory on the host.
        type: path
      container_path:
        description: Directory inside O(files_container), resolved through its mounts.
        type: str
      required:
        description: Ignored on restore.
        type: bool
        default: false
  files_container:
    description:
      - Container whose mounts resolve O(files[].container_path).
    type: str
  restore_env:
    description:
      - Restore the C(.env) of the set (mode 0600). Off by default - the target usually has its own.
    type: bool
    default: false
  env_file:
    description:
      - Where the C(.env) goes with O(restore_env=true). Defaults to C(.env) in O(compose_dir).
    type: path
  health_url:
    description:
      - URL that answers 200 once Authentik is ready. Defaults to
        C(http://IP:9000/-/health/ready/) with the address of the first app container. An empty string skips
        the health check.
    type: str
  health_timeout:
    description:
      - Seconds to wait for O(health_url).
    type: int
    default: 300
notes:
  - Run the module on the Docker host of the app containers.
  - A safety set is a complete backup set; restore it with this module like any other.
seealso:
  - module: idp.recovery.authentik_dump
  - module: idp.recovery.backup_set_info
'''

EXAMPLES = r'''
- name: Find the newest complete Authentik set
  idp.recovery.backup_set_info:
    root: /var/backups/idp
    service: authentik
  register: sets

- name: Show the plan
  idp.recovery.authentik_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: authentik-postgres
    compose_dir: /opt/authentik
    identity: /etc/idp-recovery/age.key
  check_mode: true

- name: Restore
  idp.recovery.authentik_restore:
    set_dir: "{{ sets.latest_complete.path }}"
    container: authentik-postgres
    compose_dir: /opt/authentik
    identity: /etc/idp-recovery/age.key
  register: restored

- name: Report the recovery time
  ansible.builtin.debug:
    msg: "restored in {{ restored.recovery_seconds }} s"
'''

RETURN = r'''
steps:
  description: Each step with its name, duration in seconds and details.
  returned: always
  type: list
  elements: dict
  sample: [{name: verify, seconds: 1.2}, {name: restore_database, seconds: 8.4}]
recovery_seconds:
  description: Total duration of the steps.
  returned: always
  type: float
plan:
  description: What the restore does (or did) - containers to stop, database to replace, files, safety set.
  returned: always
  type: dict
version_gate:
  description: The decision of the version gate (dump and target versions and lines, ok, reason, forced).
  returned: always
  type: dict
tables:
  description: Tables compared after the restore (C(checked)) and those that differ (C(mismatched)).
  returned: when the database was restored
  type: dict
safety_set:
  description: The backup set holding the target's state from before the restore.
  returned: when a safety backup was taken
  type: str
health:
  description: The health check (url, status, seconds waited).
  returned: when a health check ran
  type: dict
rolled_back:
  description: Whether a failure after the drop was answered by restoring the safety set.
  returned: on failure after the drop
  type: bool
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

from ansible_collections.idp.recovery.plugins.module_utils import _authentik, _backup_set, _postgres
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._crypto import (
    Compression,
    Keys,
    decrypt_argument_spec,
    encryption_backend,
    keys_from_params,
)
from ansible_collections.idp.recovery.plugins.module_utils._payload import (
    describe_payload,
    extract_payload,
    read_payload,
    verify_set,
)


class Steps(object):
    def __init__(self):
        self.done = []

    def run(self, name, action, *args, **kwargs):
        started = time.time()
        entry = {'name': name}
        try:
            detail = action(*args, **kwargs)
        except RecoveryError as exc:
            entry.update(seconds=round(time.time() - started, 3), failed=True, error=exc.msg)
            self.done.append(entry)
            raise
        entry['seconds'] = round(time.time() - started, 3)
        if isinstance(detail, dict):
            entry.update(detail)
        self.done.append(entry)
        return detail

    def total(self):
        return round(sum(step['seconds'] for step in self.done), 3)


class Restore(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.set_dir = os.path.abspath(self.params['set_dir'])
        self.keys = keys_from_params(self.params)
        self.steps = Steps()
        self.result = {'changed': False, 'set_dir': self.set_dir, 'steps': self.steps.done}
        self.engine = None
        self.db = None
        self.stopped = []
        self.safety_set = None
        self.safety_keys = None
        self.files = []

    # ----- planning (read-only)
    def load_set(self):
        if not os.path.isdir(self.set_dir):
            raise RecoveryError('backup set %s does not exist' % self.set_dir, path=self.set_dir)
        if not _backup_set.is_complete(self.set_dir):
            raise RecoveryError('backup set %s is incomplete (no %s): it is never restored'
                                % (self.set_dir, _backup_set.MANIFEST), path=self.set_dir)
        self.metadata = _backup_set.read_metadata(self.set_dir)
        self.authentik = self.metadata.get('authentik') or {}
        self.dbmeta = self.authentik.get('database') or {}
        if not self.dbmeta.get('payload'):
            raise RecoveryError('backup set %s holds no Authentik database dump' % self.set_dir, path=self.set_dir)

    def app_containers(self):
        params = self.params
        if params['compose_project']:
            names = []
            for name in self.engine.project_containers(params['compose_project']):
                info = self.engine.inspect(name)
                service = ((info.get('Config') or {}).get('Labels') or {}).get('com.docker.compose.service')
                if service not in params['keep_services']:
                    names.append(name)
        else:
            names = list(params['app_containers'])
        db_container = params['container']
        db_id = self.engine.inspect(db_container)['Id'] if db_container else None
        found = []
        for name in names:
            if not self.engine.exists(name):
                raise RecoveryError('app container %s does not exist on the Docker engine at %s; set app_containers to '
                                    'the names of the Authentik containers (or [] when none runs there), or '
                                    'compose_project' % (name, self.engine.base_url), container=name)
            info = self.engine.inspect(name)
            if name == db_container or info['Id'] == db_id:
                if params['compose_project']:
                    continue
                raise RecoveryError('app_containers names the database container %s: it is never stopped' % name)
            found.append({'name': name, 'info': info, 'running': bool((info.get('State') or {}).get('Running'))})
        return found

    def target_version(self, apps):
        if self.params['target_version']:
            return self.params['target_version'], 'target_version'
        for app in apps:
            version = _authentik.version_from_image(app['info'], self.engine.image_labels(app['info']))
            if version:
                return version, 'image of %s' % app['name']
        return None, None

    def file_plan(self):
        payloads = {}
        for name, item in sorted((self.authentik.get('files') or {}).items()):
            if item.get('payload'):
                payloads[name] = item['payload']
        if not self.params['restore_files'] or not payloads:
            return []
        specs = _authentik.file_specs(self.params['files'], self.params['compose_dir'], self.params['files_container'])
        specs = dict((spec['name'], spec) for spec in specs)
        missing = sorted(set(payloads) - set(specs))
        if missing:
            raise RecoveryError('the set holds file payloads %s without a destination: give files or compose_dir, '
                                'or restore_files=false' % ', '.join(missing))
        engine = self.engine
        if engine is None and any(specs[n]['container_path'] for n in payloads):
            from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
            engine = self.engine = DockerEngine(self.params['docker_host'])
        resolved = _authentik.host_paths([specs[n] for n in payloads], engine, self.params['files_container'])
        plan = []
        for spec in resolved:
            if not spec['host_path']:
                raise RecoveryError('files: %s is not mounted in %s' % (spec['where'], self.params['files_container']))
            plan.append({'name': spec['name'], 'payload': payloads[spec['name']], 'dest': spec['host_path'],
                         'container_path': spec['container_path']})
        return plan

    def env_plan(self):
        if not self.params['restore_env']:
            return None
        env = self.authentik.get('env') or {}
        if not env.get('payload'):
            raise RecoveryError('restore_env=true but the set holds no .env payload')
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
        root = self.params['safety_root'] or os.path.join(
            os.path.dirname(os.path.dirname(self.set_dir)),
            '%s-pre-restore' % os.path.basename(os.path.dirname(self.set_dir)))
        info = (self.metadata.get('payloads') or {}).get(self.dbmeta['payload']) or {}
        encryption = info.get('encryption') or 'age'
        if self.params['safety_recipients']:
            backend = encryption_backend('age', recipients=self.params['safety_recipients'])
        elif encryption == 'age':
            backend = encryption_backend('age', recipients=info.get('recipients') or [])
        elif encryption == 'gpg':
            backend = encryption_backend('gpg', recipients=info.get('recipients') or [],
                                         gpg_homedir=self.params['gpg_homedir'])
        elif encryption == 'passphrase':
            backend = encryption_backend('passphrase', passphrase=self.params['passphrase'],
                                         gpg_homedir=self.params['gpg_homedir'])
        else:
            raise RecoveryError('the set is unencrypted, so the safety set would be too; give safety_recipients '
                                'or safety_backup=false')
        if backend.name == 'age':
            backend.validate_for_encryption()
        elif backend.name == 'passphrase' and not self.params['passphrase']:
            raise RecoveryError('the safety set of a passphrase-encrypted set needs passphrase')
        return {'root': root, 'dir': os.path.join(root, make_stamp()), 'backend': backend,
                'encryption': backend.name}

    # ----- the steps
    def verify(self, checksums_only):
        checks, _unlisted = verify_set(self.set_dir, self.keys, decrypt='never' if checksums_only else 'always')
        return {'files': len(checks), 'decrypted': sum(1 for c in checks if c.get('decrypted'))}

    def stop_apps(self, apps):
        for app in apps:
            if app['running']:
                self.engine.stop(app['name'])
                self.stopped.append(app['name'])
        return {'stopped': list(self.stopped)}

    def start_apps(self):
        started = []
        for name in self.stopped:
            self.engine.start(name)
            started.append(name)
        return {'started': started}

    def safety_dump(self, plan, files):
        set_dir = plan['dir']
        _backup_set.create(set_dir, service=os.path.basename(plan['root']), kind='authentik-safety')
        compressor = Compression('zstd')
        try:
            _authentik.dump_database(self.db, set_dir, 'custom', plan['backend'], compressor, strict=False)
            specs = [{'name': f['name'], 'host_path': f['dest'], 'where': f['dest'], 'required': False} for f in files]
            backend = plan['backend']
            options = {'recipients': getattr(backend, 'recipients', None), 'passphrase': self.params['passphrase'],
                       'gpg_homedir': self.params['gpg_homedir']}
            _authentik.dump_files(set_dir, specs, backend.name, ('zstd', None), options)
            _backup_set.finalize(set_dir, caller_metadata={'restore_of': self.set_dir}, service=os.path.basename(plan['root']),
                                 kind='authentik-safety')
        except RecoveryError as exc:
            if _backup_set.looks_like_set(set_dir) and not _backup_set.is_complete(set_dir):
                _backup_set.remove(set_dir)
            raise RecoveryError('the safety dump failed, nothing was changed: %s' % exc.msg)
        self.safety_set = set_dir
        self.safety_keys = self.keys
        return {'safety_set': set_dir}

    def recreate(self):
        owner = self.params['owner'] or self.params['user']
        _postgres.recreate_database(self.db, owner, encoding=self.dbmeta.get('encoding'))
        return {'database': self.db.database, 'owner': owner}

    def restore_database(self, set_dir, dbmeta, keys):
        path = os.path.join(set_dir, dbmeta['payload'])
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
            read_payload(path, description, keys, consume)

        _postgres.restore_dump(self.db, fmt, feed, jobs=self.params['jobs'], owner=self.params['owner'],
                               tmpdir=self.params['tmpdir'])
        return {'format': fmt, 'payload': dbmeta['payload']}

    def compare(self, dbmeta):
        actual = _postgres.count_rows(self.db)
        problems = _postgres.compare_counts(dbmeta.get('tables') or {}, actual)
        self.result['tables'] = {'checked': len(dbmeta.get('tables') or {}), 'mismatched': problems}
        if problems:
            raise RecoveryError('row counts differ after the restore: %s' % ', '.join(
                '%s (expected %s, found %s)' % (p['table'], p['expected'], p['actual']) for p in problems[:20]))
        return {'tables': len(dbmeta.get('tables') or {}), 'rows': sum((dbmeta.get('tables') or {}).values())}

    def restore_files(self, files, env):
        restored = []
        for item in files:
            extract_payload(os.path.join(self.set_dir, item['payload']), item['dest'], self.keys, force=True)
            restored.append(item['name'])
        if env:
            extract_payload(os.path.join(self.set_dir, env['payload']), env['dest'], self.keys, force=True)
            os.chmod(env['dest'], 0o600)
            restored.append('.env')
        return {'restored': restored}

    def rollback_files(self):
        """Put back the directories that the safety set captured (only those this restore may have replaced)."""
        restored = []
        captured = (_backup_set.read_metadata(self.safety_set).get('authentik') or {}).get('files') or {}
        for item in self.files:
            payload = (captured.get(item['name']) or {}).get('payload')
            if payload:
                extract_payload(os.path.join(self.safety_set, payload), item['dest'], self.safety_keys, force=True)
                restored.append(item['name'])
        return {'restored': restored}

    def health(self, url):
        deadline = time.time() + self.params['health_timeout']
        started = time.time()
        last = None
        while True:
            try:
                response = open_url(url, timeout=5, validate_certs=False)
                status = response.getcode()
                if status == 200:
                    health = {'url': url, 'status': status, 'waited': round(time.time() - started, 3)}
                    self.result['health'] = health
                    return health
                last = 'HTTP %s' % status
            except Exception as exc:  # pylint: disable=broad-except
                last = getattr(exc, 'code', None) and 'HTTP %s' % exc.code or str(exc)
            if time.time() > deadline:
                raise RecoveryError('Authentik did not become ready at %s within %s s (last answer: %s)' % (
                    url, self.params['health_timeout'], last))
            time.sleep(1)

    def health_url(self, apps):
        url = self.params['health_url']
        if url is not None:
            return url or None
        for app in apps:
            info = self.engine.inspect(app['name'])
            networks = (info.get('NetworkSettings') or {}).get('Networks') or {}
            for net in sorted(networks):
                address = networks[net].get('IPAddress')
                if address:
                    return 'http://%s:%d%s' % (address, _authentik.DEFAULT_HEALTH_PORT, _authentik.HEALTH_PATH)
            break
        return None

    # ----- the whole restore
    def run(self):
        params = self.params
        check_mode = self.module.check_mode
        self.load_set()
        self.db, self.engine = _postgres.database_from_params(params)
        if self.engine is None and (params['app_containers'] or params['compose_project']):
            from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine
            self.engine = DockerEngine(params['docker_host'])
        apps = self.app_containers() if self.engine is not None else []
        target_exists = _postgres.database_exists(self.db, self.db.database)
        files = self.files = self.file_plan()
        env = self.env_plan()
        safety = self.safety_plan(target_exists)
        plan = {
            'stop': [a['name'] for a in apps if a['running']],
            'database': {'target': self.db.where, 'exists': target_exists, 'drop': target_exists,
                         'restore': self.dbmeta['payload'], 'format': self.dbmeta.get('format'),
                         'tables': len(self.dbmeta.get('tables') or {}),
                         'rows': sum((self.dbmeta.get('tables') or {}).values())},
            'files': [{'name': f['name'], 'dest': f['dest']} for f in files],
            'env': env['dest'] if env else None,
            'safety_set': (safety or {}).get('dir') or (safety or {}).get('skipped'),
        }
        self.result['plan'] = plan

        self.steps.run('verify', self.verify, check_mode)
        version, source = self.target_version(apps)
        gate = _authentik.version_gate((self.authentik.get('version') or {}).get('version'), version,
                                       params['force_version'])
        gate['target_version_source'] = source
        self.result['version_gate'] = gate
        if not gate['ok']:
            raise RecoveryError('version gate: %s; set force_version=true to restore anyway' % gate['reason'],
                                version_gate=gate, plan=plan, steps=self.steps.done)
        if gate['forced']:
            self.module.warn('version gate overridden by force_version: %s' % gate['reason'])
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
        except RecoveryError as exc:
            restart_error = self._restart_quietly()
            raise RecoveryError(exc.msg + ('; restarting the app containers failed too: %s' % restart_error
                                           if restart_error else ''), steps=self.steps.done, plan=plan)
        try:
            self.steps.run('recreate_database', self.recreate)
            self.steps.run('restore_database', self.restore_database, self.set_dir, self.dbmeta, self.keys)
            self.steps.run('compare_counts', self.compare, self.dbmeta)
            self.steps.run('restore_files', self.restore_files, files, env)
        except RecoveryError as exc:
            raise self._rollback(exc, plan)
        self.steps.run('start_apps', self.start_apps)
        if health_url:
            self.steps.run('health', self.health, health_url)
        self.result['recovery_seconds'] = self.steps.total()
        return self.result

    def _restart_quietly(self):
        try:
            self.start_apps()
        except RecoveryError as exc:
            return exc.msg
        return None

    def _rollback(self, error, plan):
        messages = ['restore failed: %s' % error.msg]
        rolled_back = False
        if self.safety_set:
            try:
                safety_meta = (_backup_set.read_metadata(self.safety_set).get('authentik') or {}).get('database') or {}
                self.steps.run('rollback_recreate', self.recreate)
                self.steps.run('rollback_restore', self.restore_database, self.safety_set, safety_meta,
                               self.safety_keys or Keys())
                self.steps.run('rollback_compare', self.compare, safety_meta)
                self.steps.run('rollback_files', self.rollback_files)
                rolled_back = True
                messages.append('the database was rolled back to the safety set %s' % self.safety_set)
            except RecoveryError as exc:
                messages.append('rolling back to the safety set %s failed too: %s' % (self.safety_set, exc.msg))
        else:
            messages.append('no safety set was taken, the database was not rolled back')
        restart_error = self._restart_quietly()
        if restart_error:
            messages.append('restarting the app containers failed: %s' % restart_error)
        elif self.stopped:
            messages.append('the app containers were started again')
        return RecoveryError('; '.join(messages), steps=self.steps.done, plan=plan, rolled_back=rolled_back,
                             safety_set=self.safety_set)


def run(module):
    restore = Restore(module)
    try:
        return restore.run()
    except RecoveryError as exc:
        # whatever failed, say how far the restore got
        for key in ('steps', 'plan', 'version_gate', 'tables', 'safety_set'):
            if key in restore.result and key not in exc.details:
                exc.details[key] = restore.result[key]
        exc.details.setdefault('recovery_seconds', restore.steps.total())
        raise


def main():
    file_options = dict(
        name=dict(type='str', required=True),
        path=dict(type='path'),
        container_path=dict(type='str'),
        required=dict(type='bool', default=False),
    )
    argument_spec = dict(
        set_dir=dict(type='path', required=True),
        owner=dict(type='str'),
        app_containers=dict(type='list', elements='str', default=list(_authentik.DEFAULT_APP_CONTAINERS)),
        compose_project=dict(type='str'),
        keep_services=dict(type='list', elements='str', default=['postgresql', 'postgres', 'db', 'redis']),
        target_version=dict(type='str'),
        force_version=dict(type='bool', default=False),
        safety_backup=dict(type='bool', default=True),
        safety_root=dict(type='path'),
        safety_recipients=dict(type='list', elements='str'),
        jobs=dict(type='int', default=2),
        tmpdir=dict(type='str'),
        restore_files=dict(type='bool', default=True),
        compose_dir=dict(type='path'),
        files=dict(type='list', elements='dict', options=file_options),
        files_container=dict(type='str'),
        restore_env=dict(type='bool', default=False),
        env_file=dict(type='path'),
        health_url=dict(type='str'),
        health_timeout=dict(type='int', default=300),
    )
    argument_spec.update(_postgres.database_argument_spec(user='authentik', database='authentik'))
    argument_spec.update(decrypt_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=_postgres.DATABASE_MUTUALLY_EXCLUSIVE + [('app_containers', 'compose_project')],
                           required_one_of=_postgres.DATABASE_REQUIRED_ONE_OF)
    try:
        result = run(module)
    except RecoveryError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
