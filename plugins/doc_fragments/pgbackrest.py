# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Where the PostgreSQL server and pgBackRest run (with idp.recovery.docker for docker_host).
    DOCUMENTATION = r'''
options:
  stanza:
    description:
      - The pgBackRest stanza (the name of this server's backups in the repositories).
    type: str
    required: true
  container:
    description:
      - Name of the running container of the PostgreSQL server. pgBackRest and C(psql) then run inside it through
        the Docker engine API, as O(os_user). Without it they run on the host that runs the module (as O(os_user),
        through C(runuser) when the module runs as root).
    type: str
  os_user:
    description:
      - Operating system user that owns the data directory; pgBackRest and C(psql) run as this user.
    type: str
    default: postgres
  config_path:
    description:
      - The pgBackRest configuration file. At the default path pgBackRest finds it without C(--config).
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
requirements:
  - pgBackRest (the Debian package C(pgbackrest)) where the server runs
  - the C(docker) Python library on the host that runs the module, with O(container)
'''

    # The configuration file: repositories and the server.
    CONFIG = r'''
options:
  repos:
    description:
      - The repositories, C(repo1), C(repo2), ... in this order. Each is written as C(repoN-*) options.
    type: list
    elements: dict
    required: true
    suboptions:
      type:
        description:
          - V(posix) - a directory on the server's host (or in its container). V(s3) - an S3 bucket through
            pgBackRest's own S3 client (HTTPS).
        type: str
        choices: [posix, s3]
        default: posix
      path:
        description:
          - The repository path (in the bucket with V(s3)).
        type: str
        default: /var/lib/pgbackrest
      s3_bucket:
        description: The S3 bucket (required with V(s3)).
        type: str
      s3_endpoint:
        description:
          - The S3 endpoint host name (required with V(s3)). pgBackRest checks the certificate's DNS names, so use a
            name, not an IP address, when O(repos[].storage_verify_tls) is on.
        type: str
      s3_region:
        description: The S3 region.
        type: str
        default: us-east-1
      s3_key:
        description:
          - The S3 access key (required with V(s3)); written only into the live configuration file, never into argv
            or results; a staging restore passes it to pgBackRest in its environment instead.
        type: str
      s3_key_secret:
        description:
          - The S3 secret key (required with V(s3)); written only into the live configuration file, never into argv
            or results; a staging restore passes it to pgBackRest in its environment instead.
        type: str
      s3_uri_style:
        description: V(host) (virtual-hosted buckets) or V(path) (C(https://endpoint/bucket/...), for most S3 servers
          that are not AWS).
        type: str
        choices: [host, path]
        default: host
      storage_port:
        description: The S3 endpoint's port (default 443).
        type: int
      storage_verify_tls:
        description: Verify the endpoint's TLS certificate. Turn off only for a test endpoint.
        type: bool
        default: true
      storage_ca:
        description:
          - A CA certificate (PEM text) that signed the endpoint's certificate; written beside the configuration
            file as C(repoN-ca.pem).
        type: str
      storage_ca_file:
        description: A CA file that already exists where the server runs (instead of O(repos[].storage_ca)).
        type: str
      cipher_type:
        description:
          - Repository encryption. V(none) only when the repository is encrypted otherwise and that is intended.
        type: str
        choices: [aes-256-cbc, none]
        default: aes-256-cbc
      cipher_pass:
        description:
          - The repository cipher passphrase (required unless O(repos[].cipher_type=none)). Written only into the
            live configuration file (mode 0640, owned by O(os_user)), never into an argument or a result; a
            staging restore passes it to pgBackRest in its environment instead.
        type: str
      retention_full:
        description: Full backups to keep (C(repoN-retention-full)); older ones and their WAL are expired.
        type: int
      retention_full_type:
        description: Whether O(repos[].retention_full) counts backups or days.
        type: str
        choices: [count, time]
      retention_diff:
        description: Differential backups to keep (C(repoN-retention-diff)).
        type: int
      options:
        description:
          - "More C(repoN-) options without the prefix, for example C({bundle: true, block: true})."
        type: dict
        default: {}
  options:
    description:
      - "More options of the C([global]) section, for example C({process-max: 2, start-fast: true, compress-type: zst,
        archive-async: true, io-timeout: 60}). Booleans become C(y)/C(n)."
    type: dict
    default: {}
  command_options:
    description:
      - "Options for one pgBackRest command only, as C([global:COMMAND]) sections, for example
        C({archive-push: {io-timeout: 10}}) so that a failing archive attempt gives up sooner than a backup."
    type: dict
    default: {}
  pg_path:
    description:
      - The server's data directory. Default - what the server reports (C(SHOW data_directory)).
    type: path
  pg_port:
    description: The server's port.
    type: int
    default: 5432
  pg_user:
    description: The database role pgBackRest connects as (a superuser or one with the backup privileges).
    type: str
    default: postgres
  pg_socket_path:
    description: The directory of the server's Unix socket, when it is not the default.
    type: path
'''
