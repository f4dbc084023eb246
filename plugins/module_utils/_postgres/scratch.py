# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: disposable PostgreSQL containers to restore into (idp.recovery.scratch_postgres).

A scratch container carries the labels of ``_docker.scratch``; only such containers are ever reused or
removed. It is created from an image already on the engine (never pulled), waited for until its final
server answers, then hardened: local ``trust`` only in ``pg_hba.conf`` and no role password (or the one
O(password) for the superuser over the network). A container whose configuration hash differs is replaced.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import secrets
import time

from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import DockerEngine
from ansible_collections.idp.recovery.plugins.module_utils._docker.scratch import (
    CONFIG_LABEL,
    CREATED_LABEL,
    DRILL_LABEL,
    SCRATCH_LABEL,
    SUPERUSER_LABEL,
    image_pgdata,
    is_scratch,
)
from ansible_collections.idp.recovery.plugins.module_utils._postgres.connection import (
    ContainerRunner,
    Database,
    quote_ident,
    quote_literal,
)

OS_USER = 'postgres'
LOG_LINES = 30
HBA = 'local all all trust'
HBA_PASSWORD = 'host all %s all scram-sha-256'
HARDEN_SQL = r"""
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT rolname FROM pg_authid WHERE rolpassword IS NOT NULL LOOP
    EXECUTE format('ALTER ROLE %I PASSWORD NULL', r.rolname);
  END LOOP;
END
$$
"""
VERIFY_SQL = r"""
SELECT (SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'local' OR error IS NOT NULL)::text || '|' ||
       (SELECT count(*) FROM pg_authid WHERE rolpassword IS NOT NULL)::text
"""


def refuse_foreign(engine, name, doing):
    raise RecoveryError('container %s on the Docker engine at %s has no label %s=true: it was not made by '
                        'idp.recovery.scratch_postgres, so it is not %s; choose another name or remove it yourself' % (
                            name, engine.base_url, SCRATCH_LABEL, doing), container=name)


class ScratchPostgres(object):
    """One scratch PostgreSQL container of idp.recovery.scratch_postgres: made present (ready, hardened) or absent."""

    def __init__(self, module, engine):
        self.module = module
        self.params = module.params
        self.engine = engine
        self.name = self.params['name']
        self.network = self.params['network'] or 'bridge'
        self.superuser = self.params['superuser']
        self.removed = []

    # ----- helpers
    def check_labels(self):
        labels = dict((str(k), str(v)) for k, v in (self.params['labels'] or {}).items())
        own = sorted(k for k in labels if k == SCRATCH_LABEL or k.startswith(SCRATCH_LABEL + '.'))
        if own:
            raise RecoveryError('labels %s belong to the module; choose other keys' % ', '.join(own))
        return labels

    def require_image(self):
        image = self.params['image']
        info = self.engine.image_info(image)
        if info is None:
            raise RecoveryError(
                'image %s is not on the Docker engine at %s, and scratch_postgres never pulls images: load it there '
                'first (docker pull / docker load -i FILE / docker import / docker build on that engine) or name an '
                'image that "docker image ls" on that engine lists' % (image, self.engine.base_url), image=image)
        return info

    def require_network(self):
        if self.params['network'] and self.engine.network_info(self.params['network']) is None:
            raise RecoveryError('network %s does not exist on the Docker engine at %s' % (
                self.params['network'], self.engine.base_url), network=self.params['network'])

    def config_hash(self, image_info, labels):
        wanted = {'image': image_info.get('Id'), 'superuser': self.superuser, 'network': self.network, 'labels': labels,
                  'tmpfs': self.params['tmpfs'], 'shm_size': self.params['shm_size'],
                  'password': bool(self.params['password']),
                  'settings': dict((str(k), str(v)) for k, v in (self.params['settings'] or {}).items())}
        return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode('utf-8')).hexdigest()[:16]

    def command(self):
        argv = ['postgres', '-c', 'listen_addresses=*']
        for key, value in sorted((self.params['settings'] or {}).items()):
            if isinstance(value, bool):
                value = 'on' if value else 'off'
            argv += ['-c', '%s=%s' % (key, value)]
        return argv

    def database(self, database='postgres'):
        runner = ContainerRunner(self.engine, self.name, OS_USER, 'api')
        return Database(runner, database, self.superuser)

    def fail_with_logs(self, why):
        logs = self.engine.logs_tail(self.name, LOG_LINES)
        removed = self.engine.remove_container(self.name)
        raise RecoveryError('scratch PostgreSQL %s (image %s) %s; it was removed%s. Its last log lines:\n%s' % (
            self.name, self.params['image'], why, '' if removed else ' (already gone)', logs or '(no output)'),
            container=self.name, log=logs.splitlines())

    # ----- readiness
    def wait_ready(self):
        deadline = time.monotonic() + self.params['ready_timeout']
        db = self.database()
        last = None
        while True:
            info = self.engine.inspect(self.name)
            state = info.get('State') or {}
            if not state.get('Running') or state.get('Restarting'):
                self.fail_with_logs('stopped while starting (status %s, exit code %s)' % (
                    state.get('Status'), state.get('ExitCode')))
            try:
                code, _out, err = self.engine.run(self.name, ['pg_isready', '-q', '--username=%s' % self.superuser,
                                                              '--dbname=postgres'], user=OS_USER)
                if code == 0:
                    # the entrypoint's temporary server (initialisation) does not listen on TCP
                    if db.run_sql("SELECT 1 WHERE current_setting('listen_addresses') <> ''").strip() == '1':
                        return
                    last = 'the initialisation server is still running'
                else:
                    last = err or 'pg_isready exit code %s' % code
            except RecoveryError as exc:
                last = exc.msg
            if time.monotonic() > deadline:
                self.fail_with_logs('did not become ready within %s s (last: %s)' % (self.params['ready_timeout'], last))
            time.sleep(0.5)

    def harden(self):
        """Only local trust in pg_hba.conf, no password on any role - or, with O(password), that password for
        O(superuser) over the network and nothing else."""
        db = self.database()
        hba_file = db.run_sql('SHOW hba_file').strip()
        password = self.params['password']
        rules = HBA + ('\n' + HBA_PASSWORD % quote_ident(self.superuser) if password else '')
        code, _out, err = self.engine.run(self.name, [
            'sh', '-c', 'umask 077 && printf "%s\\n" "$2" > "$1.idp-new" && mv "$1.idp-new" "$1"', 'sh', hba_file, rules],
            user=OS_USER)
        if code != 0:
            raise RecoveryError('cannot write %s in scratch container %s: %s' % (hba_file, self.name, err))
        with db.session() as session:
            session.query(HARDEN_SQL)
            if password:
                # sent on psql's stdin inside the container, never in an argument
                session.query("SET password_encryption = 'scram-sha-256'; ALTER ROLE %s PASSWORD %s" % (
                    quote_ident(self.superuser), quote_literal(password)))
            session.query('SELECT pg_reload_conf()')
            verdict = session.query(VERIFY_SQL).strip()
        if verdict != ('1|1' if password else '0|0'):
            raise RecoveryError('scratch container %s allows other logins than intended (%s)' % (self.name, verdict))

    def ensure_roles(self, exists):
        created = []
        wanted = [role for role in self.params['roles'] if role != self.superuser]
        if not wanted:
            return created
        if not exists:
            return list(wanted)
        db = self.database()
        with db.session() as session:
            for role in wanted:
                found = session.query('SELECT count(*) FROM pg_roles WHERE rolname = %s' % quote_literal(role))
                if found.strip() == '1':
                    continue
                if not self.module.check_mode:
                    session.query('CREATE ROLE %s LOGIN' % quote_ident(role))
                created.append(role)
        return created

    def facts(self):
        out = self.database().run_sql("SELECT current_setting('server_version') || '|' || "
                                      "current_setting('server_version_num')").strip()
        version, _sep, number = out.rpartition('|')
        return version, int(number) if number.isdigit() else None

    # ----- states
    def remove_stale(self, labels):
        if not self.params['remove_stale']:
            return
        drill = labels.get(DRILL_LABEL)
        if not drill:
            raise RecoveryError('remove_stale needs the label %s in labels' % DRILL_LABEL)
        for item in self.engine.containers_with_labels({SCRATCH_LABEL: 'true', DRILL_LABEL: drill}):
            if item['name'] == self.name or item['id'] == self.name:
                continue
            if not self.module.check_mode:
                self.engine.remove_container(item['id'])
            self.removed.append(item['name'])

    def present(self):
        if self.params['ready_timeout'] < 0:
            raise RecoveryError('ready_timeout must be 0 or more seconds')
        labels = self.check_labels()
        image_info = self.require_image()
        self.require_network()
        config = self.config_hash(image_info, labels)
        self.remove_stale(labels)
        result = {'container': self.name, 'image': self.params['image'], 'network': self.network,
                  'superuser': self.superuser, 'created': False, 'replaced': None, 'removed': self.removed}
        info = self.engine.inspect(self.name) if self.engine.exists(self.name) else None
        if info is not None:
            if not is_scratch(info):
                refuse_foreign(self.engine, self.name, 'reused')
            result['replaced'] = self.differences(info, config)
            if result['replaced'] and not self.module.check_mode:
                self.engine.remove_container(self.name)
        create = info is None or bool(result['replaced'])
        if create:
            result['created'] = True
            if self.module.check_mode:
                all_labels = dict(labels, **{SCRATCH_LABEL: 'true', SUPERUSER_LABEL: self.superuser, CONFIG_LABEL: config})
                result.update(id=None, ip_address=None, server_version=None, server_version_num=None,
                              labels=all_labels, roles_created=self.ensure_roles(False), changed=True)
                return result
            self.create(image_info, labels, config)
        try:
            self.wait_ready()
            if create:
                self.harden()
            result['roles_created'] = self.ensure_roles(True)
            result['server_version'], result['server_version_num'] = self.facts()
        except RecoveryError:
            if create:
                self.engine.remove_container(self.name)
            raise
        info = self.engine.inspect(self.name)
        network = ((info.get('NetworkSettings') or {}).get('Networks') or {}).get(self.network) or {}
        result.update(id=info.get('Id'), ip_address=network.get('IPAddress') or None,
                      labels=(info.get('Config') or {}).get('Labels') or {})
        result['changed'] = bool(create or result['roles_created'] or self.removed)
        return result

    @staticmethod
    def differences(info, config):
        """Why an existing scratch container does not fit (a text), or None."""
        state = info.get('State') or {}
        if not state.get('Running') or state.get('Restarting'):
            return 'it is not running (status %s)' % state.get('Status')
        if ((info.get('Config') or {}).get('Labels') or {}).get(CONFIG_LABEL) != config:
            return 'its image, settings or labels differ'
        return None

    def create(self, image_info, labels, config):
        env = {'POSTGRES_USER': self.superuser, 'POSTGRES_DB': 'postgres',
               # the entrypoint may refuse to initialise without it; harden() takes it away again
               'POSTGRES_PASSWORD': secrets.token_urlsafe(32)}
        pgdata = image_pgdata(image_info)
        all_labels = dict(labels)
        all_labels.update({SCRATCH_LABEL: 'true', CREATED_LABEL: make_stamp(), SUPERUSER_LABEL: self.superuser,
                           CONFIG_LABEL: config})
        self.engine.create_container(self.name, self.params['image'], command=self.command(), env=env,
                                     labels=all_labels, network=self.params['network'],
                                     tmpfs={pgdata: ''} if self.params['tmpfs'] else None,
                                     shm_size=self.params['shm_size'])
        try:
            self.engine.start(self.name)
        except RecoveryError:
            self.fail_with_logs('could not start')

    def absent(self):
        result = {'removed': self.removed}
        if self.name:
            result['container'] = self.name
            result['id'] = None
            if self.engine.exists(self.name):
                info = self.engine.inspect(self.name)
                if not is_scratch(info):
                    refuse_foreign(self.engine, self.name, 'removed')
                if not self.module.check_mode:
                    self.engine.remove_container(self.name)
                self.removed.append(self.name)
        if self.params['prune_labels']:
            wanted = dict((str(k), None if v is None else str(v)) for k, v in self.params['prune_labels'].items())
            wanted[SCRATCH_LABEL] = 'true'
            for item in self.engine.containers_with_labels(wanted):
                if item['name'] in self.removed:
                    continue
                if not self.module.check_mode:
                    self.engine.remove_container(item['id'])
                self.removed.append(item['name'])
        result['changed'] = bool(self.removed)
        return result


def run_scratch_postgres(module):
    """idp.recovery.scratch_postgres: the container of the module options present or absent; the module result."""
    engine = DockerEngine(module.params['docker_host'])
    scratch = ScratchPostgres(module, engine)
    if module.params['state'] == 'absent':
        return scratch.absent()
    return scratch.present()
