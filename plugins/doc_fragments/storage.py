# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    # Options of modules that read or write backup sets on a storage target; their argument spec is
    # storage_argument_spec() of plugins/module_utils/_storage/base.py.
    DOCUMENTATION = r'''
options:
  backend:
    description:
      - How the target is reached.
      - V(rclone) uses any rclone remote (S3, SFTP, WebDAV, B2, ...), defined in O(rclone_config) or by
        O(rclone_remote_type) and O(rclone_remote_options).
      - V(rsync) uses rsync to a directory on this host, or on O(ssh_host) over SSH with a key.
      - V(local) uses a directory of this host, typically a mounted file system.
    type: str
    required: true
    choices: [rclone, rsync, local]
  target:
    description:
      - The top of the backup layout on the target; sets live in C(<target>/<service>/<stamp>/), as under the local
        backup root.
      - With O(backend=rclone), an rclone path C(REMOTE:path), for example V(offsite:idp-backups/prod).
      - With O(backend=rsync), a directory path, on O(ssh_host) when it is set.
      - With O(backend=local), a directory that must already exist (so that an unmounted file system is noticed
        instead of filling the root file system).
    type: str
    required: true
  rclone_config:
    description:
      - An rclone configuration file that defines the remote named in O(target). Defaults to rclone's own default
        (C(~/.config/rclone/rclone.conf) of the user running the module).
    type: path
  rclone_remote_type:
    description:
      - Define the remote named in O(target) from options instead of a config file, for example V(s3), V(sftp),
        V(webdav) or V(b2). The remote name must be made of letters, digits and underscores.
    type: str
  rclone_remote_options:
    description:
      - The options of the remote defined by O(rclone_remote_type), as in an rclone config file, for example
        C(provider), C(endpoint), C(access_key_id), C(secret_access_key) for S3, or C(host), C(user), C(pass),
        C(key_file) for SFTP.
      - Give plain values. Options that rclone keeps obscured (such as C(pass)) are obscured by the module
        (C(rclone obscure) reading from standard input).
      - Passed to the rclone child process only, as C(RCLONE_CONFIG_<NAME>_<OPTION>) environment variables; never on
        a command line, in a file or in the result. Every value is treated as a secret, so Ansible masks it wherever
        it appears in output.
    type: dict
  rclone_flags:
    description:
      - Extra rclone flags, for example V(--bwlimit=20M) or V(--s3-no-check-bucket). They appear in the process list, so
        never put secrets here.
    type: list
    elements: str
    default: []
  rclone_binary:
    description:
      - The rclone executable. Defaults to C(rclone) on E(PATH).
    type: path
  ssh_host:
    description:
      - With O(backend=rsync), the SSH host that holds O(target). Without it, O(target) is a directory of this host.
      - rsync 3.2.3 or newer is needed on both ends.
    type: str
  ssh_user:
    description:
      - The SSH user on O(ssh_host).
    type: str
  ssh_port:
    description:
      - The SSH port of O(ssh_host).
    type: int
  ssh_private_key:
    description:
      - The private key file that authenticates to O(ssh_host). SSH runs in batch mode and never asks for a password.
    type: path
  ssh_known_hosts:
    description:
      - A known_hosts file that holds the host key of O(ssh_host). The host key is always checked strictly; without
        this option, the user's own known_hosts files are used.
    type: path
  rsync_binary:
    description:
      - The rsync executable. Defaults to C(rsync) on E(PATH).
    type: path
  transfers:
    description:
      - How many files rclone copies in parallel (C(--transfers)).
    type: int
    default: 4
  retries:
    description:
      - How many times a failed operation is tried again when the failure may be transient (connection refused or
        reset, timeouts, server errors). Refused credentials, unknown hosts and full disks are not retried.
    type: int
    default: 3
  retry_delay:
    description:
      - Seconds before the first retry; the delay doubles with every retry, up to 60 seconds.
    type: float
    default: 2.0
  timeout:
    description:
      - Seconds to wait for a connection, and for data on an established connection, before the attempt fails.
    type: int
    default: 60
'''
