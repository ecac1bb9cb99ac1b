"""Running one command over an SSH transport: one exec channel per command.

stdin is streamed by a writer thread, stderr drained by a reader thread and
stdout read here, so a command that fills one pipe never deadlocks the other.
A timeout interrupts the command (signal TERM) and returns exit code 124; a
lost connection is an UnreachableHost that says whether the command may have
run, since it is never re-run implicitly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
from paramiko.message import Message

from gpuprov.connectors.base import ConnectionStats, Held
from gpuprov.connectors.sudo import TIMEOUT_EXIT_CODE, TIMEOUT_NOTE, add_note
from gpuprov.errors import UnreachableHost


class QuickAckSocket:
    """A socket that acknowledges every segment at once (Linux TCP_QUICKACK).

    sshd does not set TCP_NODELAY for non-interactive sessions, so its
    exit-status right after a command's output waits for our ACK; with the
    kernel's delayed ACK that adds ~40 ms to every command. QUICKACK is not
    sticky, hence re-armed after each recv (one cheap setsockopt).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ChannelRunner:
    """Runs commands on one host's transport and counts them in `stats`.

    `label` (user@address of the target) and `host_name` only word the errors;
    `open_timeout` bounds opening a channel (the connect timeout); `timed_out`
    says whether the transport was closed because the host stopped answering.
    """

    def __init__(self, host_name: str, label: str, open_timeout: float,
                 stats: ConnectionStats,
                 timed_out: Callable[[], bool] = lambda: False) -> None:
        self.host_name = host_name
        self.label = label
        self.open_timeout = open_timeout
        self.stats = stats
        self.timed_out = timed_out

    def lost(self, when: str, ran: bool) -> UnreachableHost:
        """The error for a connection gone `when`; `ran`: the command may have run."""
        detail = f"the SSH connection to {self.label} was lost {when}"
        if ran:
            detail += "; the command may have partly run and is not retried"
        if self.timed_out():
            return UnreachableHost(self.host_name, "timeout",
                                   f"{self.label} stopped answering (keepalives unanswered): "
                                   + detail, "the host or its network is down; rerun once it "
                                   "answers again")
        return UnreachableHost(self.host_name, "closed", detail,
                               "the host may have rebooted or sshd restarted; rerun once it is "
                               "back (connect() opens a new connection)")

    def execute(self, transport: paramiko.Transport, line: str, display: str,
                chunks: Iterator[bytes], timeout: float | None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `line`, fed `chunks` on stdin; 124 on timeout."""
        try:
            chan = transport.open_session(timeout=self.open_timeout)
            self.stats.round_trips += 1
            chan.exec_command(line)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _wait_inactive(transport):
                raise self.lost(f"before running `{display}`", ran=False) from exc
            raise UnreachableHost(self.host_name, "closed", f"{self.label} refused a "
                                  f"session for `{display}`: {exc}",
                                  "too many parallel commands for sshd's MaxSessions?") from exc
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        failure: list[BaseException] = []
        reader = threading.Thread(target=_drain, args=(chan.recv_stderr, err), daemon=True)
        writer = threading.Thread(target=self._feed, args=(chan, chunks, failure), daemon=True)
        reader.start()
        writer.start()
        try:
            finished = (_read_until_eof(chan, out, deadline) and _join(reader, deadline)
                        and chan.status_event.wait(_remaining(deadline)))
            if not finished:
                _signal(chan, "TERM")  # best effort: sshd >= 7.9 forwards it
        finally:
            chan.close()  # also unblocks a writer waiting for window space
            writer.join()
            reader.join()
        if failure:
            raise failure[0]
        stdout = b"".join(out).decode("utf-8", errors="replace")
        stderr = b"".join(err).decode("utf-8", errors="replace")
        if not finished:
            return TIMEOUT_EXIT_CODE, stdout, add_note(stderr, TIMEOUT_NOTE.format(timeout))
        if chan.exit_status == -1:  # the channel closed without an exit status
            if _wait_inactive(transport):
                raise self.lost(f"while running `{display}`", ran=True)
            return 255, stdout, add_note(stderr, "[gpuprov] the command ended without an exit "
                                         "status (killed by a signal?)")
        return chan.exit_status, stdout, stderr

    def hold(self, transport: paramiko.Transport, line: str, display: str,
             prefix: bytes) -> Held:
        """Start `line` on a channel of its own whose stdin stays open (see Held),
        fed `prefix` first."""
        try:
            chan = transport.open_session(timeout=self.open_timeout)
            self.stats.round_trips += 1
            chan.set_combine_stderr(True)
            chan.exec_command(line)
            if prefix:
                chan.sendall(prefix)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self.lost(f"before running `{display}`", ran=False) from exc
        return HeldChannel(chan)

    def _feed(self, chan: paramiko.Channel, chunks: Iterator[bytes],
              failure: list[BaseException]) -> None:
        while True:
            try:
                chunk = next(chunks, None)
            except BaseException as exc:
                # Reading the stdin file failed. No EOF: it would make a
                # truncated upload look complete. Interrupt and close instead;
                # that also wakes the reader, and execute() re-raises.
                failure.append(exc)
                _signal(chan, "TERM")
                chan.close()
                return
            try:
                if chunk is None:
                    chan.shutdown_write()
                    return
                chan.sendall(chunk)
            except (OSError, EOFError, paramiko.SSHException):
                return  # the channel closed (command done, or connection lost: reported)
            self.stats.bytes_sent += len(chunk)


class HeldChannel(Held):
    """A held command on its own channel: sshd ends its session, and so its
    stdin, when the channel or the whole connection closes."""

    def __init__(self, chan: paramiko.Channel) -> None:
        super().__init__()
        self._chan = chan

    def _receive(self, timeout: float) -> bytes:
        self._chan.settimeout(timeout)
        return bytes(self._chan.recv(65536))

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._chan.sendall(data)

    def release(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._chan.shutdown_write()
        self._chan.close()


def _read_until_eof(chan: paramiko.Channel, sink: list[bytes], deadline: float | None) -> bool:
    """Read stdout until EOF; False if the deadline passed first."""
    while True:
        chan.settimeout(_remaining(deadline))
        try:
            block = chan.recv(65536)
        except TimeoutError:
            return False
        if not block:
            return True
        sink.append(block)


def _drain(recv: Callable[[int], bytes], sink: list[bytes]) -> None:
    while block := recv(65536):
        sink.append(block)


def _join(thread: threading.Thread, deadline: float | None) -> bool:
    thread.join(_remaining(deadline))
    return not thread.is_alive()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def _wait_inactive(transport: paramiko.Transport, grace: float = 1.0) -> bool:
    # paramiko closes the channels of a dead transport just before it marks
    # the transport inactive: give it a moment before calling the link alive.
    end = time.monotonic() + grace
    while transport.is_active() and time.monotonic() < end:
        time.sleep(0.02)
    return not transport.is_active()


def _signal(chan: paramiko.Channel, name: str) -> None:
    """Send a 'signal' channel request (RFC 4254 6.9); paramiko has no API for it."""
    if chan.closed or not chan.get_transport().is_active():
        return
    msg = Message()
    msg.add_byte(bytes([98]))  # SSH_MSG_CHANNEL_REQUEST
    msg.add_int(chan.remote_chanid)
    msg.add_string("signal")
    msg.add_boolean(False)
    msg.add_string(name)
    with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
        # paramiko has no public call for a channel request of our own
        chan.get_transport()._send_user_message(msg)  # type: ignore[attr-defined]
