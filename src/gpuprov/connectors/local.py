"""The local connector: the same small interface, on this machine.

Used when gpuprov runs without an inventory (drift-check / apply on this
machine) and for pull mode (`apply --local`). Commands go through
`/bin/sh -c` exactly like on a target, and sudo works the same way (see
sudo.py), so a role cannot behave differently here.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import select
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import BinaryIO

from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Held, Session
from gpuprov.connectors.sudo import (
    TIMEOUT_EXIT_CODE,
    TIMEOUT_NOTE,
    Sudo,
    add_note,
    iter_stdin,
    split_command,
)

# After SIGTERM on timeout, how long the process group gets before SIGKILL.
_KILL_GRACE = 2.0


class LocalConnector(Connector):
    """Runs commands on this machine with subprocess."""

    def __init__(self, host_name: str = "localhost", become: Become | None = None) -> None:
        super().__init__(host_name)
        self.become = become if become is not None else Become()
        self.user = getpass.getuser()
        self._sudo = Sudo(host_name, self.user, self.become, self._exec_raw)
        self._connected = False

    def connect(self, *, expect_refusal: bool = False) -> None:
        # Nothing to open, but count it so stats read the same as for ssh.
        if not self._connected:
            self._connected = True
            self.stats.connections += 1

    def close(self) -> None:
        self._connected = False

    def session(self) -> Session:
        return Session(self.user)

    def run(self, command: Command | str, *, sudo: bool = False,
            stdin: bytes | BinaryIO | None = None, timeout: float | None = None) -> CommandResult:
        self.connect()
        shell, display = split_command(command)
        code, out, err = self._ran(display, self._sudo.run(
            shell, sudo, stdin, lambda line, chunks: self._execute(line, chunks, timeout)))
        return CommandResult(display, code, out, err)

    def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
        self.connect()
        return self._started(command.display(),
                             self._sudo.hold(command.shell(), sudo, stdin, self._hold))

    def _hold(self, line: str, prefix: bytes) -> Held:
        self.stats.round_trips += 1
        # Its own session, so release() can end sudo, sh and what they started together.
        proc = subprocess.Popen(["/bin/sh", "-c", line], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(prefix)
            proc.stdin.flush()
        return _HeldProcess(proc)

    def _exec_raw(self, line: str, stdin: bytes) -> tuple[int, str, str]:
        return self._ran("(sudo check)", self._execute(line, iter_stdin(None, stdin), timeout=30))

    def _execute(self, line: str, chunks: Iterator[bytes],
                 timeout: float | None) -> tuple[int, str, str]:
        self.stats.round_trips += 1
        # A session of its own, so a timeout can kill the whole process group
        # (sudo, sh and whatever they started), not just /bin/sh.
        proc = subprocess.Popen(["/bin/sh", "-c", line], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        out: list[bytes] = []
        err: list[bytes] = []
        failure: list[BaseException] = []
        threads = [
            threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
            threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
            threading.Thread(target=self._feed, args=(proc, chunks, failure), daemon=True),
        ]
        for thread in threads:
            thread.start()
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            code = _kill_group(proc)
        for thread in threads:
            thread.join()
        if failure:
            raise failure[0]
        stdout = b"".join(out).decode("utf-8", errors="replace")
        stderr = b"".join(err).decode("utf-8", errors="replace")
        if timed_out:
            assert timeout is not None
            return TIMEOUT_EXIT_CODE, stdout, add_note(stderr, TIMEOUT_NOTE.format(timeout))
        # A negative code is a signal; report it the way a shell would.
        return (128 - code if code < 0 else code), stdout, stderr

    def _feed(self, proc: subprocess.Popen[bytes], chunks: Iterator[bytes],
              failure: list[BaseException]) -> None:
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
                self.stats.bytes_sent += len(chunk)
        except BrokenPipeError:
            pass  # the command stopped reading; its exit code tells the story
        except BaseException as exc:  # a stdin file failed to read
            # Kill rather than close stdin: EOF would make a truncated upload
            # look complete to the command.
            failure.append(exc)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()


class _HeldProcess(Held):
    """A held command as a child process: if the controller dies, the kernel
    closes the pipe and the command sees the end of its stdin."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__()
        self._proc = proc

    def _receive(self, timeout: float) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            raise TimeoutError
        return os.read(fd, 65536)

    def send(self, data: bytes) -> None:
        stdin = self._proc.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(BrokenPipeError, ValueError):
                stdin.write(data)
                stdin.flush()

    def release(self) -> None:
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        try:
            proc.wait(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _drain(stream: BinaryIO | None, sink: list[bytes]) -> None:
    assert stream is not None
    for block in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        sink.append(block)
    stream.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> int:
    for sig, grace in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()

