# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: one connection to a Docker engine (containers, images, networks, archives).

The module options that reach it are ``docker_argument_spec()``, documented by the doc fragment
``idp.recovery.docker``. A command started with ``DockerEngine.exec`` comes back as an
``ExecProcess`` (see ``_docker.exec``).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._docker.exec import ExecProcess
from ansible_collections.idp.recovery.plugins.module_utils._docker.library import (
    APIError, DockerException, HAS_DOCKER, NotFound, docker)

DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'


def docker_argument_spec():
    return dict(docker_host=dict(type='str'))


class DockerEngine(object):
    """A connection to one Docker engine."""

    def __init__(self, base_url=None, timeout=120):
        if not HAS_DOCKER:
            raise RecoveryError('the Python library "docker" is required to reach containers; '
                                'install it on the host that runs the module (pip install docker)')
        self.base_url = base_url or os.environ.get('DOCKER_HOST') or DEFAULT_DOCKER_HOST
        try:
            self.api = docker.APIClient(base_url=self.base_url, version='auto', timeout=timeout)
        except DockerException as exc:
            raise RecoveryError('cannot reach the Docker engine at %s: %s' % (self.base_url, exc))

    def inspect(self, name):
        try:
            return self.api.inspect_container(name)
        except NotFound:
            raise RecoveryError('container %s does not exist on the Docker engine at %s' % (name, self.base_url),
                                container=name)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot inspect container %s: %s' % (name, exc), container=name)

    def exists(self, name):
        try:
            self.api.inspect_container(name)
            return True
        except NotFound:
            return False
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot inspect container %s: %s' % (name, exc), container=name)

    def is_running(self, name):
        state = self.inspect(name).get('State') or {}
        return bool(state.get('Running')) and not state.get('Restarting')

    def require_running(self, name):
        info = self.inspect(name)
        state = info.get('State') or {}
        if not state.get('Running') or state.get('Restarting'):
            raise RecoveryError('container %s is not running (status: %s)' % (name, state.get('Status')), container=name)
        return info

    def stop(self, name, timeout=30):
        try:
            self.api.stop(name, timeout=timeout)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot stop container %s: %s' % (name, exc), container=name)

    def start(self, name):
        try:
            self.api.start(name)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot start container %s: %s' % (name, exc), container=name)

    def project_containers(self, project):
        """Names of the containers of a compose project (running or not)."""
        try:
            found = self.api.containers(all=True, filters={'label': 'com.docker.compose.project=%s' % project})
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot list the containers of compose project %s: %s' % (project, exc))
        return sorted(name.lstrip('/') for item in found for name in (item.get('Names') or [])[:1])

    def image_labels(self, container_info):
        image = container_info.get('Image')
        try:
            return (self.api.inspect_image(image).get('Config') or {}).get('Labels') or {}
        except (APIError, DockerException):
            return {}

    def exec(self, container, argv, env=None, user=None, stdin=False, workdir=None):
        """Start argv in a running container; return an ExecProcess."""
        environment = ['%s=%s' % (k, v) for k, v in sorted((env or {}).items())]
        try:
            created = self.api.exec_create(container, list(argv), stdout=True, stderr=True, stdin=stdin, tty=False,
                                           environment=environment or None, user=user or '', workdir=workdir)
            sock = self.api.exec_start(created['Id'], socket=True, demux=False)
        except NotFound:
            raise RecoveryError('container %s does not exist on the Docker engine at %s' % (container, self.base_url),
                                container=container)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot run %s in container %s: %s' % (argv[0], container, _api_message(exc)),
                                container=container)
        return ExecProcess(self, container, created['Id'], sock, argv[0])

    def run(self, container, argv, env=None, user=None, input_data=None):
        """Run a short command to its end; return (exit code, stdout bytes, stderr text)."""
        proc = self.exec(container, argv, env=env, user=user, stdin=input_data is not None)
        out = []
        try:
            if input_data is not None:
                proc.write(input_data)
                proc.close_stdin()
            proc.read_all(out.append)
        finally:
            proc.close()
        return proc.wait(), b''.join(out), proc.stderr_text()

    # ----- containers this collection creates and removes (scratch databases)
    def image_info(self, image):
        """The image's inspect data, or None when the engine does not hold it (nothing is ever pulled)."""
        try:
            return self.api.inspect_image(image)
        except NotFound:
            return None
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot inspect image %s on the Docker engine at %s: %s' % (
                image, self.base_url, _api_message(exc)), image=image)

    def network_info(self, network):
        """The network's inspect data, or None when the engine has no such network."""
        try:
            return self.api.inspect_network(network)
        except NotFound:
            return None
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot inspect network %s on the Docker engine at %s: %s' % (
                network, self.base_url, _api_message(exc)), network=network)

    def create_container(self, name, image, command=None, env=None, labels=None, network=None, tmpfs=None,
                         shm_size=None, extra_hosts=None, binds=None):
        """Create (not start) a container without published ports; return its ID.

        extra_hosts: {host name: address} added to the container's /etc/hosts; binds: ["SOURCE:PATH:ro", ...]
        (a volume name or a directory of the engine's host)."""
        host_config = self.api.create_host_config(network_mode=network or 'bridge', tmpfs=tmpfs or None,
                                                  shm_size=shm_size or None, extra_hosts=extra_hosts or None,
                                                  binds=list(binds) if binds else None)
        networking_config = None
        if network:
            networking_config = self.api.create_networking_config({network: self.api.create_endpoint_config()})
        environment = ['%s=%s' % (k, v) for k, v in sorted((env or {}).items())]
        try:
            created = self.api.create_container(image, command=command, name=name, environment=environment or None,
                                                labels=dict(labels or {}), host_config=host_config,
                                                networking_config=networking_config, detach=True)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot create container %s from image %s on the Docker engine at %s: %s' % (
                name, image, self.base_url, _api_message(exc)), container=name)
        return created['Id']

    def copy_tree(self, source, path, target, directory):
        """Stream ``path`` of container ``source`` (a tar through the engine) into ``directory`` of container
        ``target`` (which must exist); return the bytes streamed. Memory stays flat."""
        try:
            chunks, _stat = self.api.get_archive(source, path, chunk_size=CHUNK_SIZE)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot read %s of container %s: %s' % (path, source, _api_message(exc)),
                                container=source, path=path)
        counted = [0]

        def counting():
            for chunk in chunks:
                counted[0] += len(chunk)
                yield chunk
        try:
            if not self.api.put_archive(target, directory, counting()):
                raise RecoveryError('the Docker engine did not unpack %s into %s of container %s' % (
                    path, directory, target), container=target)
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot copy %s of container %s into %s of container %s: %s' % (
                path, source, directory, target, _api_message(exc)), container=target, path=path)
        return counted[0]

    def remove_container(self, name, volumes=True):
        """Remove a container (running or not) with its anonymous volumes; True when it existed."""
        try:
            self.api.remove_container(name, v=volumes, force=True)
        except NotFound:
            return False
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot remove container %s: %s' % (name, _api_message(exc)), container=name)
        return True

    def logs_tail(self, name, lines=30):
        """The last lines of a container's output (stdout and stderr), as text; '' when unavailable."""
        try:
            data = self.api.logs(name, stdout=True, stderr=True, tail=lines)
        except (APIError, DockerException):
            return ''
        return data.decode('utf-8', 'replace').strip() if isinstance(data, bytes) else str(data).strip()

    def containers_with_labels(self, labels):
        """Containers (running or not) carrying every label of ``labels`` ({key: value or None for any})."""
        wanted = ['%s=%s' % (k, v) if v is not None else k for k, v in sorted(labels.items())]
        try:
            found = self.api.containers(all=True, filters={'label': wanted})
        except (APIError, DockerException) as exc:
            raise RecoveryError('cannot list containers on the Docker engine at %s: %s' % (
                self.base_url, _api_message(exc)))
        return [{'name': (item.get('Names') or ['/'])[0].lstrip('/'), 'id': item.get('Id'),
                 'labels': item.get('Labels') or {}, 'state': item.get('State')} for item in found]


def _api_message(exc):
    explanation = getattr(exc, 'explanation', None)
    if explanation:
        return explanation if isinstance(explanation, str) else explanation.decode('utf-8', 'replace')
    return str(exc)
