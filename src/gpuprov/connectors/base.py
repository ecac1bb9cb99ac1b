"""The connector interface: the small surface every transport offers.

Kept as small as Fabric's Connection (run + streaming stdin) so the ssh and
local connectors are swappable and a fake connector in unit tests is trivial.
Files are written by ops through `run` with stdin (sudo-safe, atomic), so
there is no separate put().
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from gpuprov.command import Command


@dataclass(frozen=True)
class CommandResult:
    command: str          # as displayed (secrets masked)
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class ConnectionStats:
    """Counted per host and shown with -v and in the JSON report."""

    connections: int = 0
    round_trips: int = 0
    bytes_sent: int = 0


@dataclass
class Become:
    """How to gain root: sudo -n, or sudo -S fed a password on stdin."""

    enabled: bool = True
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Session:
    """How the operator got onto the host: what a change to sshd must keep working
    (a preflight of sshd changes reads it)."""

    user: str
    #: "publickey", or None for the local connector (no SSH involved)
    auth: str | None = None
    #: the operator's key: "ssh-ed25519", "ssh-rsa", ... and its size in bits
    key_type: str | None = None
    key_bits: int | None = None
    #: host key types the controller's known_hosts holds for this host
    known_host_key_types: tuple[str, ...] = ()


#: told of each command a connector ran, for -vv: the command as displayed
#: (secrets masked), its exit code (None: held open, still running), stdout, stderr
Trace = Callable[[str, int | None, str, str], None]


class Connector(ABC):
    """One long-lived connection to one host."""

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name
        self.stats = ConnectionStats()
        #: set by whoever shows the commands (the engine, for -vv); a callable,
        #: so this layer needs nothing of the layers that print
        self.trace: Trace | None = None

    def _ran(self, display: str, ran: tuple[int, str, str]) -> tuple[int, str, str]:
        """`ran` (exit code, stdout, stderr), the trace (if any) told of it."""
        if self.trace is not None:
            self.trace(display, *ran)
        return ran

    def _started(self, display: str, held: Held) -> Held:
        """`held`, the trace (if any) told of it: a command still running."""
        if self.trace is not None:
            self.trace(display, None, "", "")
        return held

    @abstractmethod
    def connect(self, *, expect_refusal: bool = False) -> None:
        """Open the connection (with retries); raise UnreachableHost. A refused
        connection is retried only with `expect_refusal` (sshd may be restarting);
        otherwise nothing listens, and waiting would only delay the verdict."""

    @abstractmethod
    def run(self, command: Command | str, *, sudo: bool = False,
            stdin: bytes | BinaryIO | None = None, timeout: float | None = None) -> CommandResult:
        """Run a POSIX sh command; never raises for a non-zero exit.

        Raises UnreachableHost when the transport itself fails.
        """

    def run_on_new_connection(self, command: Command | str, *,
                              sudo: bool = False) -> CommandResult:
        """Run a command over a brand-new connection (not the long-lived one),
        proving that a fresh login still works, e.g. after sshd was reloaded.
        Raises UnreachableHost when the new connection cannot be set up."""
        return self.run(command, sudo=sudo)

    def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
        """Start `command`, feed it `stdin`, and hold its stdin open (see Held).
        A connector that cannot hold one (a unit test's fake) raises
        NotImplementedError."""
        raise NotImplementedError

    @abstractmethod
    def session(self) -> Session:
        """Who is logged in and how (valid after connect())."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; safe to call twice."""

    def __enter__(self) -> Connector:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Held(ABC):
    """A command kept running for as long as the controller holds it (the host's
    run lock): its stdin stays open until release(); it ends when that closes,
    or when the connection or the controller dies, so the kernel frees what it
    holds and no timeout has to guess.

    Its output (stdout and stderr together) is read line by line; what was
    received beyond a line waits for the next read."""

    def __init__(self) -> None:
        self._buffer = b""
        self._eof = False

    @abstractmethod
    def _receive(self, timeout: float) -> bytes:
        """The next bytes of output; b"" when it ended. TimeoutError after `timeout`."""

    def next_line(self, timeout: float) -> str:
        """The next line it prints, without the newline; "" (or the unterminated
        rest) when it ended first. Raises TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            try:
                block = self._receive(max(0.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise TimeoutError(f"no answer within {timeout:g}s") from exc
            self._eof = not block
            self._buffer += block
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace")

    def read_until(self, end: str, timeout: float) -> tuple[str, str]:
        """(the lines before the first line that starts with `end`, each with its
        newline; the rest of that line). ValueError when the output ends first."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            if self._eof and not self._buffer:
                raise ValueError(f"the output ended before {end!r}")
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if line.startswith(end):
                return "".join(lines), line[len(end):]
            lines.append(line + "\n")

    def send(self, data: bytes) -> None:
        """Write `data` to its stdin, for it to read as it ends (the run lock's
        last script, run as the lock is let go); a command that has ended
        already is not an error. NotImplementedError where it cannot."""
        raise NotImplementedError

    @abstractmethod
    def release(self) -> None:
        """Close its stdin and let it end; safe to call twice."""
