# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the Docker engine API (containers, streamed exec).

A command inside a container runs through the engine's exec API with its output streamed over
the hijacked connection: stdout and stderr arrive multiplexed in frames (an 8-byte header, then
the data), which ``ExecProcess`` takes apart in large reads so that a dump of many gigabytes
passes through with flat memory. Secrets reach the command only through its environment inside
the container (the engine API request), never through an argv that ``ps`` would show.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import select
import socket
import stat
import struct
import time
import traceback

try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError
from ansible_collections.idp.recovery.plugins.module_utils._stream import grow_pipe, pump

DEFAULT_DOCKER_HOST = 'unix:///var/run/docker.sock'
STDERR_KEEP = 64 * 1024
_HEADER = struct.Struct('>BxxxL')


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


def _raw_socket(sock):
    """The socket.socket behind what exec_start(socket=True) returns."""
    raw = getattr(sock, '_sock', sock)
    return getattr(raw, '_sock', raw) if not isinstance(raw, socket.socket) else raw


class ExecProcess(object):
    """A command running in a container, with a Popen-like interface over the exec stream."""

    def __init__(self, engine, container, exec_id, sock, name):
        self.engine = engine
        self.container = container
        self.exec_id = exec_id
        self.name = name
        self._wrapper = sock
        self._sock = _raw_socket(sock)
        self._buf = bytearray(CHUNK_SIZE)
        self._pending = b''
        self._view = memoryview(b'')
        self._pos = 0
        self._frame_left = 0
        self._frame_stream = 0
        self._stderr = bytearray()
        self._eof = False
        self._code = None

    # ----- stdin
    def write(self, data):
        try:
            self._sock.sendall(data)
        except (OSError, IOError) as exc:
            raise RecoveryError('%s in container %s stopped reading its input: %s' % (
                self.name, self.container, exc.strerror or exc), container=self.container)

    def close_stdin(self):
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except (OSError, IOError):
            pass

    # ----- stdout / stderr
    def _fill(self):
        """Read once from the socket; False at the end of the stream."""
        try:
            count = self._sock.recv_into(self._buf)
        except (OSError, IOError) as exc:
            raise RecoveryError('lost the output stream of %s in container %s: %s' % (
                self.name, self.container, exc.strerror or exc), container=self.container)
        if not count:
            self._eof = True
            return False
        # what is left of the previous read is at most a partial frame header
        self._pending = self._pending[self._pos:] + bytes(self._buf[:count])
        self._view = memoryview(self._pending)
        self._pos = 0
        return True

    def _ended_mid_frame(self):
        return RecoveryError('the output stream of %s in container %s ended mid-frame' % (self.name, self.container),
                             container=self.container)

    def read_stdout(self):
        """The next piece of stdout (a bytes-like object); b'' at the end. stderr is kept on the way."""
        while True:
            if self._frame_left:
                if self._pos >= len(self._pending) and not self._fill():
                    raise self._ended_mid_frame()
                take = min(self._frame_left, len(self._pending) - self._pos)
                data = self._view[self._pos:self._pos + take]
                self._pos += take
                self._frame_left -= take
                if self._frame_stream == 1:
                    return data
                if self._frame_stream == 2:
                    self._keep_stderr(data)
                continue
            while len(self._pending) - self._pos < _HEADER.size:
                if not self._fill():
                    if len(self._pending) > self._pos:
                        raise self._ended_mid_frame()
                    return b''
            self._frame_stream, self._frame_left = _HEADER.unpack_from(self._pending, self._pos)
            self._pos += _HEADER.size

    def read_all(self, write):
        """Pass all of stdout to write(data); return the byte count."""
        return pump(self.read_stdout, write)

    def _keep_stderr(self, data):
        self._stderr.extend(data)
        if len(self._stderr) > STDERR_KEEP:
            del self._stderr[:len(self._stderr) - STDERR_KEEP]

    def stderr_text(self):
        return bytes(self._stderr).decode('utf-8', 'replace').strip()

    # ----- end
    def close(self):
        for handle in (self._sock, self._wrapper):
            try:
                handle.close()
            except (OSError, IOError, AttributeError):
                pass

    def kill(self):
        """Stop the command: the engine has no exec kill, so signal its process on this host."""
        pid = self.pid()
        self.close()
        if pid:
            try:
                os.kill(pid, 9)
            except OSError:
                pass

    def pid(self):
        try:
            return self.engine.api.exec_inspect(self.exec_id).get('Pid')
        except (APIError, DockerException):
            return None

    def wait(self, timeout=60):
        """The exit code, once the engine reports the command finished."""
        if self._code is not None:
            return self._code
        deadline = time.time() + timeout
        delay = 0.01
        while True:
            try:
                info = self.engine.api.exec_inspect(self.exec_id)
            except (APIError, DockerException) as exc:
                raise RecoveryError('cannot learn how %s ended in container %s: %s' % (self.name, self.container, exc))
            if not info.get('Running'):
                code = info.get('ExitCode')
                self._code = -1 if code is None else code
                return self._code
            if time.time() > deadline:
                raise RecoveryError('%s in container %s did not finish' % (self.name, self.container))
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class FifoExecProcess(object):
    """A command in a container whose stdout goes into a FIFO that this host reads directly.

    The engine relays a command's output in small frames through the daemon, which caps a dump at
    the daemon's relay speed. When the module runs on the Docker host with access to the
    container's filesystem (``/proc/PID/root``, as root), the command writes into a FIFO created in
    the container instead and this process reads it at pipe speed; stderr and the exit code still
    come through the engine API. ``open_fifo_exec`` returns None when that access is missing, and
    the caller uses the ordinary exec stream.
    """

    def __init__(self, engine, container, argv, env, user, fd, fifo, workdir):
        self.engine = engine
        self.container = container
        self.name = argv[0]
        self.workdir = workdir
        self._fd = fd
        grow_pipe(fd)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN | select.POLLHUP)
        self._writer_seen = False
        self.proc = engine.exec(container, ['sh', '-c', 'exec "$@" > "$0"', fifo] + list(argv), env=env, user=user)

    def read_stdout(self):
        while True:
            try:
                data = os.read(self._fd, CHUNK_SIZE)
            except BlockingIOError:
                # no data, but a writer holds the FIFO
                self._writer_seen = True
                data = None
            if data:
                self._writer_seen = True
                return data
            if data is not None and self._writer_seen:
                return b''
            events = self._poll.poll(200)
            if events:
                self._writer_seen = True
                continue
            if not self._running():
                # the command ended without ever opening the FIFO (it failed before): no output
                return b''

    def _running(self):
        try:
            return bool(self.engine.api.exec_inspect(self.proc.exec_id).get('Running'))
        except (APIError, DockerException):
            return False

    def read_all(self, write):
        return pump(self.read_stdout, write)

    def stderr_text(self):
        return self.proc.stderr_text()

    def wait(self, timeout=3600):
        # the exec stream carries only stderr now: read it to its end, then ask for the exit code
        self.proc.read_all(lambda data: None)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        self.proc.kill()

    def close(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        self.proc.close()
        try:
            self.engine.run(self.container, ['rm', '-rf', self.workdir])
        except RecoveryError:
            pass


def container_root(engine, container):
    """The container's root filesystem as this host sees it (/proc/PID/root), or None without access."""
    pid = (engine.inspect(container).get('State') or {}).get('Pid')
    root = '/proc/%s/root' % pid
    if not pid or not os.access(root, os.R_OK | os.X_OK):
        return None
    return root


def open_in_container(root, path, flags, mode=0o600):
    """Open path of a container from this host without following any symbolic link on the way.

    A link inside a container's filesystem would be resolved against this host's root: walking
    component by component with O_NOFOLLOW keeps every step inside the container.
    """
    parts = [part for part in path.split('/') if part]
    if not parts or '..' in parts:
        raise OSError('refusing path %r' % path)
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=dir_fd), os.fstat(dir_fd)
    finally:
        os.close(dir_fd)


def open_fifo_exec(engine, container, argv, env=None, user=None):
    """A FifoExecProcess for argv in container, or None when this host cannot reach its filesystem."""
    root = container_root(engine, container)
    if root is None:
        return None
    code, out, _err = engine.run(container, [
        'sh', '-c', 'd=$(mktemp -d "${TMPDIR:-/tmp}/idp-fifo.XXXXXXXX") && mkfifo -m 600 "$d/out" && echo "$d"'],
        user=user)
    workdir = out.decode('utf-8', 'replace').strip()
    if code != 0 or not workdir.startswith('/'):
        return None
    fifo = workdir + '/out'
    try:
        fd, _parent = open_in_container(root, fifo, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError('not a FIFO')
        return FifoExecProcess(engine, container, argv, env, user, fd, fifo, workdir)
    except (OSError, IOError):
        engine.run(container, ['rm', '-rf', workdir], user=user)
        return None
