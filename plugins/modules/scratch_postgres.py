#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: scratch_postgres
short_description: A disposable PostgreSQL container to restore into
version_added: 0.1.0
description:
  - Starts a throwaway PostgreSQL server in a container (O(state=present)) for a restore drill, waits until
    it answers queries, and removes it again (O(state=absent)).
  - The container carries the label C(io.idp-recovery.scratch=true) (and C(io.idp-recovery.scratch.created),
    its UTC creation stamp). The module only ever reuses or removes containers with that label; a container
    of the same name without it is refused, never adopted or removed.
  - "No password exists: clients connect over the server's Unix socket inside the container (for example
    through M(idp.recovery.postgres_check) or M(idp.recovery.authentik_restore) with O(name) as their
    C(container) option), where authentication is C(trust). Once the server is ready its C(pg_hba.conf)
    holds only C(local all all trust) and every role's password is removed, so that the random value the
    image's entrypoint may insist on to initialise its cluster (E(POSTGRES_PASSWORD)) opens nothing.
    O(password) is the one exception. No port is published on the host."
  - The image must already be on the Docker engine; it is never pulled. It follows the contract of the
    official C(postgres) image - E(POSTGRES_USER), E(POSTGRES_PASSWORD), E(POSTGRES_DB), E(PGDATA), the
    command C(postgres) with server options - and has an operating system user C(postgres).
  - "Ready means: C(pg_isready) succeeds, then C(SELECT 1) as O(superuser) through C(psql) in the container,
    on the final server (the entrypoint's temporary server during initialisation, which does not listen on
    TCP, does not count). A container that stops or does not become ready within O(ready_timeout) fails
    the task with the tail of its log, and is removed."
  - An existing scratch container of that name is kept when it runs with the same image, O(superuser),
    O(network), O(tmpfs), O(shm_size), O(settings) and O(labels) (not changed unless a role of O(roles) is missing);
    otherwise it is replaced.
author:
  - idp.recovery maintainers (@idp-recovery)
extends_documentation_fragment:
  - idp.recovery.attributes
  - idp.recovery.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details: Reports what would be created, replaced or removed, and changes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the container.
      - Required unless O(state=absent) with O(prune_labels).
    type: str
  state:
    description:
      - V(present) - the container exists, runs and answers queries.
      - V(absent) - the container (and its anonymous volumes) is gone.
    type: str
    choices: [present, absent]
    default: present
  image:
    description:
      - The PostgreSQL image, for example C(postgres:17) or C(idp-recovery/postgres:15). Required with
        O(state=present). Never pulled - load or build it on the engine first.
    type: str
  docker_host:
    description:
      - Docker engine to talk to. Defaults to E(DOCKER_HOST), else C(unix:///var/run/docker.sock).
    type: str
  network:
    description:
      - A network to attach the container to. By default the engine's default bridge network.
    type: str
  labels:
    description:
      - Extra labels of the container. Keys below C(io.idp-recovery.scratch) are the module's own.
      - C(io.idp-recovery.drill) names the drill the container belongs to (see O(remove_stale)).
    type: dict
    default: {}
  tmpfs:
    description:
      - Keep the data directory (E(PGDATA) of the image) on a tmpfs (in memory).
    type: bool
    default: false
  shm_size:
    description:
      - Size of C(/dev/shm), for example C(256m) (parallel restores and large sorts use it).
    type: str
  settings:
    description:
      - Server settings given to C(postgres) as C(-c NAME=VALUE), for example C(max_wal_size) or
        C(maintenance_work_mem). A setting the server does not know makes it stop at start-up.
    type: dict
    default: {}
  ready_timeout:
    description:
      - Seconds to wait for the server to become ready (V(0) - it is probed once).
    type: int
    default: 120
  superuser:
    description:
      - The cluster's superuser (E(POSTGRES_USER)); connect as this role.
    type: str
    default: postgres
  password:
    description:
      - A password for O(superuser), for an app that must reach the restored database over the container's
        network (a staging Authentik pointed at it). Then C(pg_hba.conf) also allows O(superuser), and only it,
        with C(scram-sha-256) from any address; no port is published on the host either way.
      - Set over psql's standard input inside the container, never in an argument or the container's
        environment.
    type: str
  roles:
    description:
      - Roles created once the server is ready (C(LOGIN), no password), such as the owner role a restored
        dump needs (C(authentik)). Existing roles are left alone.
    type: list
    elements: str
    default: []
  remove_stale:
    description:
      - With O(state=present), also remove every other scratch container whose C(io.idp-recovery.drill) label
        equals the one in O(labels) (leftovers of an interrupted drill). Requires that label in O(labels).
    type: bool
    default: false
  prune_labels:
    description:
      - With O(state=absent), also remove every scratch container carrying all of these labels (a value of
        V(null) matches any value). O(name) may then be left out.
    type: dict
notes:
  - Containers without the label C(io.idp-recovery.scratch=true) are never touched.
requirements:
  - the C(docker) Python library on the host that runs the module
seealso:
  - module: idp.recovery.postgres_check
  - module: idp.recovery.authentik_restore
'''

EXAMPLES = r'''
- name: Start a scratch PostgreSQL for the drill
  idp.recovery.scratch_postgres:
    name: drill-authentik-scratch
    image: postgres:17
    tmpfs: true
    shm_size: 256m
    roles: [authentik]
    labels:
      io.idp-recovery.drill: "{{ drill_id }}"
    remove_stale: true
  register: scratch

- name: Check the restored database in it
  idp.recovery.postgres_check:
    container: "{{ scratch.container }}"
    user: "{{ scratch.superuser }}"
    database: authentik
    checks:
      - name: users restored
        sql: SELECT count(*) FROM authentik_core_user
        expect: 1
        compare: ge

- name: Remove the scratch PostgreSQL
  idp.recovery.scratch_postgres:
    name: drill-authentik-scratch
    state: absent

- name: Remove every scratch container of a drill
  idp.recovery.scratch_postgres:
    state: absent
    prune_labels:
      io.idp-recovery.drill: "{{ drill_id }}"
'''

RETURN = r'''
container:
  description: Name of the container.
  returned: when O(name) is given
  type: str
  sample: drill-authentik-scratch
id:
  description: Container ID (null in check mode before it exists, and after O(state=absent)).
  returned: when O(name) is given
  type: str
image:
  description: The image as given.
  returned: with O(state=present)
  type: str
  sample: postgres:17
ip_address:
  description: The container's address on RV(network) (null in check mode before it exists).
  returned: with O(state=present)
  type: str
  sample: 172.17.0.4
network:
  description: The network the container is attached to.
  returned: with O(state=present)
  type: str
  sample: bridge
server_version:
  description: PostgreSQL's C(server_version) (null in check mode before it exists).
  returned: with O(state=present)
  type: str
  sample: "17.11 (Debian 17.11-1.pgdg130+1)"
server_version_num:
  description: PostgreSQL's C(server_version_num).
  returned: with O(state=present)
  type: int
  sample: 170011
superuser:
  description: The role to connect as.
  returned: with O(state=present)
  type: str
  sample: postgres
created:
  description: Whether this run created the container (also when it replaced one).
  returned: with O(state=present)
  type: bool
replaced:
  description: Why an existing scratch container was replaced (null when it was not).
  returned: with O(state=present)
  type: str
roles_created:
  description: Roles of O(roles) created by this run.
  returned: with O(state=present)
  type: list
  elements: str
labels:
  description: The container's labels.
  returned: with O(state=present)
  type: dict
  sample:
    io.idp-recovery.scratch: "true"
    io.idp-recovery.scratch.created: 20260301T020304Z
    io.idp-recovery.drill: monthly-20260301
removed:
  description: Scratch containers removed by this run (by O(state=absent), O(prune_labels) or O(remove_stale)).
  returned: always
  type: list
  elements: str
  sample: [drill-authentik-scratch]
'''

import hashlib
import json
import secrets
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils import _postgres
from ansible_collections.idp.recovery.plugins.module_utils._common import RecoveryError, make_stamp
from ansible_collections.idp.recovery.plugins.module_utils._docker import DockerEngine, docker_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module

SCRATCH_LABEL = 'io.idp-recovery.scratch'
CREATED_LABEL = 'io.idp-recovery.scratch.created'
CONFIG_LABEL = 'io.idp-recovery.scratch.config'
SUPERUSER_LABEL = 'io.idp-recovery.scratch.superuser'
DRILL_LABEL = 'io.idp-recovery.drill'
DEFAULT_PGDATA = '/var/lib/postgresql/data'
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


def is_scratch(info):
    return ((info.get('Config') or {}).get('Labels') or {}).get(SCRATCH_LABEL) == 'true'


def refuse_foreign(engine, name, doing):
    raise RecoveryError('container %s on the Docker engine at %s has no label %s=true: it was not made by '
                        'idp.recovery.scratch_postgres, so it is not %s; choose another name or remove it yourself' % (
                            name, engine.base_url, SCRATCH_LABEL, doing), container=name)


class Scratch(object):
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
        runner = _postgres.ContainerRunner(self.engine, self.name, OS_USER, 'api')
        return _postgres.Database(runner, database, self.superuser)

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
        rules = HBA + ('\n' + HBA_PASSWORD % _postgres.quote_ident(self.superuser) if password else '')
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
                    _postgres.quote_ident(self.superuser), _postgres.quote_literal(password)))
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
                found = session.query('SELECT count(*) FROM pg_roles WHERE rolname = %s' % _postgres.quote_literal(role))
                if found.strip() == '1':
                    continue
                if not self.module.check_mode:
                    session.query('CREATE ROLE %s LOGIN' % _postgres.quote_ident(role))
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
        pgdata = DEFAULT_PGDATA
        for item in (image_info.get('Config') or {}).get('Env') or []:
            if item.startswith('PGDATA='):
                pgdata = item.split('=', 1)[1] or DEFAULT_PGDATA
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


def run(module):
    engine = DockerEngine(module.params['docker_host'])
    scratch = Scratch(module, engine)
    if module.params['state'] == 'absent':
        return scratch.absent()
    return scratch.present()


def main():
    argument_spec = dict(
        name=dict(type='str'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        image=dict(type='str'),
        network=dict(type='str'),
        labels=dict(type='dict', default={}),
        tmpfs=dict(type='bool', default=False),
        shm_size=dict(type='str'),
        settings=dict(type='dict', default={}),
        ready_timeout=dict(type='int', default=120),
        superuser=dict(type='str', default='postgres'),
        password=dict(type='str', no_log=True),
        roles=dict(type='list', elements='str', default=[]),
        remove_stale=dict(type='bool', default=False),
        prune_labels=dict(type='dict'),
    )
    argument_spec.update(docker_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_if=[('state', 'present', ('name', 'image'))],
                           required_one_of=[('name', 'prune_labels')])
    run_module(module, run)


if __name__ == '__main__':
    main()
