"""The connector interface: the small surface every transport offers.

Kept as small as Fabric's Connection (run + streaming stdin) so the ssh and
local connectors are swappable and a fake connector in unit tests is trivial.
Files are written by ops through `run` with stdin (sudo-safe, atomic), so
there is no separate put().
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


class Connector(ABC):
    """One long-lived connection to one host."""

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name
        self.stats = ConnectionStats()

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (with retries); raise UnreachableHost."""

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

    def hold(self, command: Command, *, sudo: bool = False) -> Held:
        """Start `command` with its stdin held open (see Held). A connector that
        cannot hold one (a unit test's fake) raises NotImplementedError."""
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
    holds and no timeout has to guess."""

    @abstractmethod
    def first_line(self, timeout: float) -> str:
        """The first line it prints (stdout and stderr together), without the
        newline; "" when it ended first. Raises TimeoutError after `timeout`."""

    @abstractmethod
    def release(self) -> None:
        """Close its stdin and let it end; safe to call twice."""
