# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: commands inside a container, streamed through the engine's exec API.

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

from ansible_collections.idp.recovery.plugins.module_utils._common import CHUNK_SIZE, RecoveryError, close_quietly
from ansible_collections.idp.recovery.plugins.module_utils._docker.library import APIError, DockerException
from ansible_collections.idp.recovery.plugins.module_utils._stream import grow_pipe, pump

STDERR_KEEP = 64 * 1024
_HEADER = struct.Struct('>BxxxL')


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
        self._fd = close_quietly(self._fd)
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
