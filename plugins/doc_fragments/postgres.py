# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # How to reach a PostgreSQL database: inside its container or over TCP (the options of
    # module_utils/_postgres database_argument_spec(); modules extend idp.recovery.docker with it).
    DOCUMENTATION = r'''
options:
  container:
    description:
      - Name of the running database container. C(pg_dump), C(pg_restore) and C(psql) then run inside it
        through the Docker engine API (the client tools always match the server), connecting over its
        Unix socket as O(user).
      - Exactly one of O(container) and O(host) is required.
    type: str
  container_user:
    description:
      - Operating system user the client tools run as inside O(container).
    type: str
    default: postgres
  container_output:
    description:
      - How a dump leaves O(container).
      - V(auto) - through a FIFO created in the container and read directly from this host, when the module
        runs on the Docker host with access to the container's filesystem (as root); otherwise like V(api).
        Several times faster than the engine's relay.
      - V(api) - always through the Docker engine API's output stream.
    type: str
    choices: [auto, api]
    default: auto
  host:
    description:
      - Host name or address of the server, reached over TCP with the client tools of the host that runs
        the module (libpq). Their major version must not be older than the server's.
      - Exactly one of O(container) and O(host) is required.
    type: str
  port:
    description:
      - TCP port with O(host).
    type: int
    default: 5432
  user:
    description:
      - Database role to connect as.
    type: str
  password:
    description:
      - Password of O(user). Passed to the client tools through their environment (E(PGPASSWORD)), never on
        a command line. Not needed when the server trusts local connections in O(container).
    type: str
  database:
    description:
      - Database name.
    type: str
  sslmode:
    description:
      - libpq C(sslmode) with O(host).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
requirements:
  - the C(docker) Python library on the host that runs the module, with O(container)
  - PostgreSQL client tools (C(pg_dump), C(pg_restore), C(psql)) on the host that runs the module, with O(host)
'''

    # The options of the modules that dump a database (postgres_dump, authentik_dump).
    DUMP = r'''
options:
  snapshot:
    description:
      - Dump from this snapshot instead of one of the module's own - the value C(SELECT pg_export_snapshot()) returned
        in a transaction of the caller, in the same database. The dump, the row counts and the facts recorded in the
        set are then those of that snapshot; several databases (or a database and other data the caller reads in the
        same transaction) are captured at one instant.
      - The caller keeps that transaction open until the module has begun the dump (holding it until the module ends
        is simplest). A value that is not a snapshot identifier fails the task before anything is read or written; a
        snapshot that cannot be imported (ended, or of another database) fails it like any failed dump. Check mode
        imports it too.
      - Ignored when the set already holds a database dump and O(force=false).
    type: str
'''
