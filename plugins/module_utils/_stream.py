# -*- coding: utf-8 -*-
# Copyright (c) idp.recovery contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: streaming pipelines of stock tools.

A pipeline is a chain of child processes (compressor, encryptor, or the reverse) connected by
pipes. Python feeds the first one and reads the last one in fixed-size chunks, so memory stays
flat whatever the payload size. Secrets reach a child only through an inherited pipe (a file
descriptor), never through argv or the environment of this process.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import fcntl
import hashlib
import os
import stat
import subprocess
# These helpers run without an AnsibleModule at hand and stream (pipes between stages, secrets and
# data on stdin, outputs read as they come): AnsibleModule.run_command cannot do that.
# pylint: disable=ansible-bad-function
import tempfile
import threading

from ansible_collections.idp.recovery.plugins.module_utils._common import (
    CHUNK_SIZE,
    FILE_MODE,
    RecoveryError,
    close_quietly,
    fsync_dir,
    remove_quietly,
    temp_path_beside,
)

STDERR_TAIL = 4096
# after a consumer failed, how much more output to read so that every stage reaches its own verdict
VERDICT_DRAIN = 64 * 1024 * 1024
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)


def grow_pipe(handle):
    """Ask for a 1 MiB pipe buffer (handle: a file object or a descriptor), so a stage can run ahead while Python hashes or writes a chunk.

    Linux allows it to every user by default (fs.pipe-max-size); when refused, the default stays.
    """
    try:
        fcntl.fcntl(handle if isinstance(handle, int) else handle.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
    except (OSError, IOError, ValueError):
        pass


class Stage(object):
    """One child process of a pipeline.

    ``argv`` may contain the placeholder ``{fd}``: it is replaced by the number of a pipe that
    carries ``secret`` (bytes) to the child, which then reads it like a file (``/dev/fd/N``) or as
    a descriptor (``--passphrase-fd N``).
    """

    def __init__(self, name, argv, secret=None, env=None):
        self.name = name
        self.argv = list(argv)
        self.secret = secret
        self.env = env
        self.proc = None
        self.stderr = None
        self.killed = False

    def stderr_tail(self):
        """The last STDERR_TAIL bytes the stage wrote to stderr (while its pipeline runs)."""
        return _read_tail(self.stderr)


class PipelineError(RecoveryError):
    """A pipeline failed; ``failures`` holds (stage name, exit code, stderr tail)."""

    def __init__(self, msg, failures=None, **details):
        super(PipelineError, self).__init__(msg, **details)
        self.failures = failures or []


def _read_tail(handle):
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - STDERR_TAIL))
    return handle.read().decode('utf-8', 'replace').strip()


class Pipeline(object):
    """Start a chain of stages; ``stdin`` is a file object, a file descriptor or PIPE.

    ``stdout``, a file descriptor, is where the last stage writes (its ``stdout`` property is then
    None); by default it writes into a pipe that the caller reads.
    """

    def __init__(self, stages, stdin=subprocess.PIPE, stdout=None):
        self.stages = list(stages)
        self._stdin = stdin
        self._stdout = stdout
        self._started = False

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.kill()
        self.close()
        return False

    @property
    def stdin(self):
        return self.stages[0].proc.stdin

    @property
    def stdout(self):
        return self.stages[-1].proc.stdout

    def start(self):
        upstream = self._stdin
        for index, stage in enumerate(self.stages):
            argv = stage.argv
            pass_fds = ()
            secret_r = None
            if stage.secret is not None:
                secret_r, secret_w = os.pipe()
                if len(stage.secret) > 60000:
                    os.close(secret_r)
                    os.close(secret_w)
                    raise RecoveryError('secret material for %s is too large' % stage.name)
                os.write(secret_w, stage.secret)
                os.close(secret_w)
                argv = [a.replace('{fd}', str(secret_r)) for a in argv]
                pass_fds = (secret_r,)
            stage.stderr = tempfile.TemporaryFile()
            env = None
            if stage.env:
                env = dict(os.environ)
                env.update(stage.env)
            try:
                last = index == len(self.stages) - 1
                stage.proc = subprocess.Popen(
                    argv, stdin=upstream, stdout=self._stdout if last and self._stdout is not None else subprocess.PIPE,
                    stderr=stage.stderr, bufsize=CHUNK_SIZE, pass_fds=pass_fds, close_fds=True, env=env)
            except OSError as exc:
                self.kill()
                self.close()
                raise RecoveryError('cannot run %s: %s' % (argv[0], exc.strerror or exc))
            finally:
                if secret_r is not None:
                    os.close(secret_r)
            if stage.proc.stdout is not None:
                grow_pipe(stage.proc.stdout)
            if index == 0 and stage.proc.stdin is not None:
                grow_pipe(stage.proc.stdin)
            if index > 0:
                # the child holds its own copy of the pipe now
                self.stages[index - 1].proc.stdout.close()
            upstream = stage.proc.stdout
        self._started = True
        return self

    def kill(self):
        for stage in self.stages:
            if stage.proc is not None and stage.proc.poll() is None:
                try:
                    stage.proc.kill()
                    stage.killed = True
                except OSError:
                    pass

    def wait(self):
        """Wait for every stage; return a list of failures (name, code, stderr tail).

        A stage this pipeline killed is not a failure of its own: whatever made us kill it is.
        """
        failures = []
        for stage in self.stages:
            if stage.proc is None:
                continue
            code = stage.proc.wait()
            if code != 0 and not stage.killed:
                failures.append((stage.name, code, _read_tail(stage.stderr)))
        return failures

    def close(self):
        for stage in self.stages:
            if stage.proc is not None:
                for handle in (stage.proc.stdin, stage.proc.stdout):
                    if handle is not None:
                        try:
                            handle.close()
                        except (OSError, IOError):
                            pass
                if stage.proc.poll() is None:
                    stage.proc.wait()
            if stage.stderr is not None:
                stage.stderr.close()
                stage.stderr = None


class Feeder(threading.Thread):
    """Run ``produce(sink)`` in a thread, writing into the first stage's stdin."""

    def __init__(self, produce, sink):
        super(Feeder, self).__init__(name='idp-recovery-feeder')
        self.daemon = True
        self.produce = produce
        self.sink = sink
        self.error = None
        self.broken_pipe = False

    def run(self):
        try:
            self.produce(self.sink)
        except BrokenPipeError:
            self.broken_pipe = True
        except RecoveryError as exc:
            self.error = exc
        except (OSError, IOError) as exc:
            if getattr(exc, 'errno', None) == 32:
                self.broken_pipe = True
            else:
                self.error = RecoveryError('cannot read the source: %s' % (exc.strerror or exc))
        except Exception as exc:  # pylint: disable=broad-except
            self.error = RecoveryError('cannot read the source: %s' % exc)
        finally:
            try:
                self.sink.close()
            except (OSError, IOError):
                pass


# written data is handed to the disk in steps of this size, so that the final fsync has little left to wait for
WRITEBACK_STEP = 32 * 1024 * 1024


def start_writeback(fd, start, end):
    """Start (not wait for) writing bytes start..end of a file open at fd to disk; return end.

    POSIX_FADV_DONTNEED makes Linux start the write-back of the range at once; pages still being
    written stay cached. Where it is missing, the final fsync does all the work, as before.
    """
    try:
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError, ValueError):
        pass
    return end


def write_all(fd, data):
    """os.write until all of data (a bytes-like object) is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class AtomicHashedFile(object):
    """A file written under a temporary name, hashed as it is written, renamed on commit().

    Its write-back to disk starts every WRITEBACK_STEP bytes, while the rest is still being
    produced, so commit()'s fsync waits only for the last step instead of the whole file.
    """

    def __init__(self, path, mode=FILE_MODE):
        self.path = path
        self.mode = mode
        self.tmp = temp_path_beside(path, 'partial')
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._flushed = 0
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def write(self, data):
        self.sha256.update(data)
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise RecoveryError('cannot write %s: %s' % (self.path, exc.strerror or exc), path=self.path)
        self.size += len(data)
        if self.size - self._flushed >= WRITEBACK_STEP:
            self._flushed = start_writeback(self._fd, self._flushed, self.size)

    def commit(self):
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.chmod(self.tmp, self.mode)
            os.rename(self.tmp, self.path)
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            self.abort()
            raise RecoveryError('cannot write %s: %s' % (self.path, exc.strerror or exc), path=self.path)
        return self.sha256.hexdigest()

    def abort(self):
        self._fd = close_quietly(self._fd)
        remove_quietly(self.tmp)


def copy_stream(reader, write, chunk_size=CHUNK_SIZE):
    """Copy a readable binary stream to a write callable in chunks; return the byte count."""
    total = 0
    # readinto1: at most one read(2) per call, so whatever the pipe holds is handed on at once
    # instead of waiting until a whole chunk has arrived
    readinto = getattr(reader, 'readinto1', None) or getattr(reader, 'readinto', None)
    if readinto is not None:
        buf = bytearray(chunk_size)
        view = memoryview(buf)
        while True:
            count = readinto(buf)
            if not count:
                break
            write(view[:count])
            total += count
        return total
    while True:
        data = reader.read(chunk_size)
        if not data:
            break
        write(data)
        total += len(data)
    return total


class PipeSkimmer(object):
    """A pipe read by a consumer that keeps little of it: readinto1() copies into the caller's buffer,
    skip() splices into /dev/null, so skipped bytes are never copied into this process.

    of(stream) gives one for a stream that is a pipe (None otherwise, or without os.splice); what
    a buffered stream already holds is handed on first.
    """

    def __init__(self, fd, head=b''):
        self._fd = fd
        self._head = memoryview(head)

    @classmethod
    def of(cls, stream):
        splice = getattr(os, 'splice', None)
        try:
            fd = stream.fileno()
            if splice is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return None
        except (AttributeError, OSError, IOError, ValueError):
            return None
        # at most one read(2): whatever the buffer holds, or the next piece of the pipe
        head = stream.read(len(stream.peek(1))) if hasattr(stream, 'peek') else b''
        return cls(fd, head)

    def readinto1(self, buf):
        if self._head:
            count = min(len(buf), len(self._head))
            buf[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return os.readv(self._fd, [buf])

    def skip(self, size=None):
        """Skip size bytes (None: to the end of the pipe); return how many there were."""
        total = 0
        if self._head:
            total = len(self._head) if size is None else min(size, len(self._head))
            self._head = self._head[total:]
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            while size is None or total < size:
                try:
                    count = os.splice(self._fd, null, CHUNK_SIZE if size is None else min(CHUNK_SIZE, size - total))
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # a kernel that cannot splice into /dev/null
                    return total + self._read_away(None if size is None else size - total)
                if not count:
                    break
                total += count
        finally:
            os.close(null)
        return total

    def _read_away(self, size):
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        total = 0
        while size is None or total < size:
            count = self.readinto1(view if size is None else view[:min(CHUNK_SIZE, size - total)])
            if not count:
                break
            total += count
        return total


def discard(stream):
    """Read a binary stream to its end, keeping nothing; return the byte count (a pipe is spliced away)."""
    skimmer = PipeSkimmer.of(stream)
    if skimmer is None:
        return copy_stream(stream, lambda data: None)
    return skimmer.skip()


def pump(read, write):
    """Call read() until it returns nothing, handing each piece to write(); return the byte count."""
    total = 0
    while True:
        data = read()
        if not data:
            return total
        write(data)
        total += len(data)


def hash_file(path, algorithm='sha256'):
    """Stream a file through a hash; return (hexdigest, size)."""
    digest = hashlib.new(algorithm)
    size = 0
    try:
        with open(path, 'rb', buffering=0) as handle:
            size = copy_stream(handle, digest.update)
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)
    return digest.hexdigest(), size


def run_to_file(produce, stages, dest):
    """Run ``produce(sink)`` through ``stages`` into ``dest`` atomically.

    Returns (sha256 of dest, size of dest). On any failure nothing is left at dest or beside it.
    """
    out = AtomicHashedFile(dest)
    try:
        if not stages:
            produce(out)
            return out.commit(), out.size
        with Pipeline(stages) as pipe:
            feeder = Feeder(produce, pipe.stdin)
            feeder.start()
            write_error = None
            try:
                copy_stream(pipe.stdout, out.write)
            except RecoveryError as exc:
                write_error = exc
                pipe.kill()
            feeder.join()
            failures = pipe.wait()
        if write_error is not None:
            raise write_error
        if feeder.error is not None:
            raise feeder.error
        if failures:
            raise PipelineError(describe_failures(failures), failures=failures)
        if feeder.broken_pipe:
            raise RecoveryError('the pipeline stopped reading before the end of the source')
        return out.commit(), out.size
    except BaseException:
        out.abort()
        raise


def run_from_file(path, stages, consume, output=None):
    """Stream the file at path through ``stages`` and hand the output stream to ``consume``.

    ``consume(stream)`` must read the stream to its end. Returns what consume returns; raises
    PipelineError when a stage fails, after the consumer finished or failed.
    With ``output`` (a file descriptor) the last stage writes there itself, and ``consume(pipeline)``
    follows what it writes until the stages end (FileFollower); a consumer that fails stops the stages.
    """
    try:
        source = open(path, 'rb', buffering=0)
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path)
    with source:
        if not stages:
            if output is None:
                return consume(source)
            copy_stream(source, lambda data: write_all(output, data))
            return consume(None)
        with Pipeline(stages, stdin=source, stdout=output) as pipe:
            consumer_error = None
            result = None
            try:
                if output is not None:
                    result = consume(pipe)
                else:
                    result = consume(pipe.stdout)
                    # drain what the consumer left (a trailer), so every stage can finish
                    copy_stream(pipe.stdout, lambda data: None)
            except RecoveryError as exc:
                consumer_error = exc
                # a consumer often fails because a stage failed (wrong key, corrupted data): read
                # on, within a bound, so that the stages finish and tell; killed stages say nothing
                if output is not None or not _drain(pipe.stdout, VERDICT_DRAIN):
                    pipe.kill()
            failures = pipe.wait()
        if failures:
            raise PipelineError(describe_failures(failures), failures=failures)
        if consumer_error is not None:
            raise consumer_error
        return result


class FileDigest(object):
    """The SHA-256 and the size of every byte handed to update()."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data):
        self.sha256.update(data)
        self.size += len(data)

    def hexdigest(self):
        return self.sha256.hexdigest()


def run_from_file_hashed(path, stages, consume, digest, output=None):
    """run_from_file(), reading the file once: each chunk read goes to the first stage, then through digest.update().

    The file is read to its end even when the stages stop reading early (a wrong key, a damaged
    or truncated file), so digest covers the whole file whenever this returns or raises. A file
    that cannot be read raises RecoveryError('cannot read PATH: ...', reason='unreadable').
    """
    try:
        source = open(path, 'rb', buffering=0)
    except (OSError, IOError) as exc:
        raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path, reason='unreadable')
    read_end, write_end = os.pipe()
    grow_pipe(write_end)
    sink = os.fdopen(write_end, 'wb', buffering=0)

    def tap(out):
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        feeding = True
        while True:
            try:
                count = source.readinto(buf)
            except (OSError, IOError) as exc:
                raise RecoveryError('cannot read %s: %s' % (path, exc.strerror or exc), path=path, reason='unreadable')
            if not count:
                return
            if feeding:
                try:
                    write_all(out.fileno(), view[:count])
                except BrokenPipeError:
                    # the stages stopped (and will say why): hash the rest, feed nothing more
                    feeding = False
            digest.update(view[:count])

    feeder = Feeder(tap, sink)
    with source:
        feeder.start()
        try:
            # run_from_file takes over read_end (open() accepts a descriptor) and closes it when done,
            # so the feeder can never block on a pipe that nobody reads
            result = run_from_file(read_end, stages, consume, output)
        except RecoveryError:
            feeder.join()
            # a file that could not be read explains whatever the stages made of it
            if feeder.error is not None:
                raise feeder.error
            raise
        feeder.join()
    if feeder.error is not None:
        raise feeder.error
    return result


def _drain(stream, limit):
    """Read and discard up to limit bytes; True when the stream ended."""
    total = 0
    try:
        while total <= limit:
            data = stream.read(CHUNK_SIZE)
            if not data:
                return True
            total += len(data)
    except (OSError, IOError, ValueError):
        pass
    return False


def describe_failures(failures):
    parts = []
    for name, code, tail in failures:
        last = [line for line in tail.splitlines() if line.strip() and 'report unexpected' not in line]
        parts.append('%s exited with %s%s' % (name, code, (': ' + ' / '.join(last[-3:])) if last else ''))
    return '; '.join(parts)
