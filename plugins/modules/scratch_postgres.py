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
  - idp.recovery.docker
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
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.idp.recovery.plugins.module_utils._docker.engine import docker_argument_spec
from ansible_collections.idp.recovery.plugins.module_utils._module import run_module
from ansible_collections.idp.recovery.plugins.module_utils._postgres.scratch import run_scratch_postgres


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
    run_module(module, run_scratch_postgres)


if __name__ == '__main__':
    main()
