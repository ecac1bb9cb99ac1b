"""The SSH connector: one long-lived paramiko Transport per host.

Every run() is an exec channel on that transport, so a task costs one round
trip, not a TCP connect + key exchange + auth each time. Connection setup
follows OpenSSH where users expect it (ssh_config, ProxyJump, key order,
known_hosts, strict unless told accept-new) and turns every failure into an UnreachableHost
kind with a hint a person can act on. Setup is retried with backoff for the
transient cases (ssh_retry: a refusal only when expected, a silent host within
one connect timeout); a command is never re-run
implicitly, since it may have half-run; a silent host is gone (ssh_liveness).

Commands are handed to the login shell as `sh -c '<cmd>'`, so they get POSIX
sh semantics with sh, bash, dash, ksh or zsh as login shell (fish and csh
quote differently and are not supported as the remote user's shell).

This module owns the connection's lifecycle; where to connect is resolved in
ssh_config, who is who (host key, login) in ssh_auth, and a command's I/O on
its channel in ssh_channel.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko

from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Held, Session
from gpuprov.connectors.hostcerts import CERT_SUFFIX
from gpuprov.connectors.hostkeys import Confirm, KnownHosts
from gpuprov.connectors.ssh_auth import (
    Agent,
    authenticate,
    check_host_key,
    keys_for,
    prefer_key_types,
)
from gpuprov.connectors.ssh_channel import ChannelRunner, QuickAckSocket
from gpuprov.connectors.ssh_config import (
    Hop,
    SetupError,
    host_key_policy,
    known_hosts_for,
    load_config,
    resolve_chain,
)
from gpuprov.connectors.ssh_liveness import Liveness
from gpuprov.connectors.ssh_retry import SetupRetry
from gpuprov.connectors.sudo import Sudo, iter_stdin, split_command
from gpuprov.errors import UnreachableHost

# paramiko logs failed handshakes with tracebacks at ERROR; without a handler
# Python prints them on stderr, on top of our own classified error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_sleep = time.sleep  # tests patch this to keep backoff instant


#: what a hop's transport runs over, other than a channel of the previous hop
_Sock = socket.socket | QuickAckSocket | paramiko.ProxyCommand


@dataclass(frozen=True)
class SshSettings:
    """What an SshConnector is built from; `address` (ansible_host) defaults to `host_name`.

    Explicit port/user/key_file win over ~/.ssh/config (or `ssh_config`);
    `known_hosts` replaces ~/.ssh/known_hosts (and /etc/ssh/ssh_known_hosts).
    `host_key_checking` ("strict" or "accept-new") wins over StrictHostKeyChecking
    in ssh_config; None: ssh_config decides, strict by default.
    `confirm_host_key` asks a person about an unknown key (a terminal only).
    """

    host_name: str
    address: str | None = None
    port: int | None = None
    user: str | None = None
    key_file: str | Path | None = None
    known_hosts: Path | None = None
    host_key_checking: str | None = None
    confirm_host_key: Confirm | None = field(default=None, repr=False, compare=False)
    become: Become = field(default_factory=Become)
    connect_timeout: float = 10.0
    retries: int = 5
    retry_budget: float = 15.0
    ssh_config: Path | None = None
    use_agent: bool = True
    #: liveness probes every N s (None: connect_timeout / 3, >= 1), see ssh_liveness
    alive_interval: float | None = None
    alive_count_max: int = 3
    #: login password, tried after the keys (onboarding a host that has no key yet)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SshRoute:
    """Settings resolved through ssh_config: the hops to the target and how
    its host keys are checked. Resolved once per host, shared by the fresh
    connections a run opens on purpose (they must go the same way)."""

    hops: tuple[Hop, ...]
    #: "strict" or "accept-new", one per hop (each hop's own ssh_config entry)
    policies: tuple[str, ...]
    known_hosts: KnownHosts

    @classmethod
    def resolve(cls, settings: SshSettings) -> SshRoute:
        config = load_config(settings.ssh_config)
        key_file = Path(settings.key_file).expanduser() if settings.key_file else None
        hops = resolve_chain(config, settings.host_name, settings.address or settings.host_name,
                             settings.user, settings.port, key_file)
        options = config.lookup(hops[-1].alias)
        policies = tuple(host_key_policy(settings.host_key_checking, config.lookup(hop.alias))
                         for hop in hops)
        return cls(tuple(hops), policies, known_hosts_for(settings.known_hosts, options))


class SshConnector(Connector):
    """One host over SSH, as `settings` describe it (resolved through ssh_config
    here unless a resolved `route` is given)."""

    def __init__(self, settings: SshSettings, route: SshRoute | None = None) -> None:
        super().__init__(settings.host_name)
        self.settings = settings
        self.route = route or SshRoute.resolve(settings)
        self.hops = list(self.route.hops)
        self.target = self.hops[-1]
        self.known_hosts = self.route.known_hosts
        self._transports: list[paramiko.Transport] = []
        self._liveness: list[Liveness] = []
        self._alive_interval = settings.alive_interval or max(settings.connect_timeout / 3, 1.0)
        self._agent = Agent(settings.use_agent)
        self._lock = threading.RLock()
        self._channels = ChannelRunner(settings.host_name, self.target.label,
                                       settings.connect_timeout, self.stats, timed_out=lambda:
                                       any(live.dead.is_set() for live in self._liveness))
        self._sudo = Sudo(settings.host_name, self.target.user, settings.become, self._exec_raw)
        #: the key the target accepted (the operator's identity, for session())
        self._auth_key: paramiko.PKey | None = None
        self._auth_password = False

    # -- connection setup ---------------------------------------------------

    def connect(self, *, expect_refusal: bool = False) -> None:
        """Open the connection; a refusal is retried only with `expect_refusal`."""
        with self._lock:
            if self._transports and self._transports[-1].is_active():
                return
            self._close_transports()
            retry = SetupRetry(self.settings.connect_timeout, self.settings.retries,
                               self.settings.retry_budget, expect_refusal)
            while True:
                try:
                    self._transports = self._open_chain(retry.next_timeout())
                    return
                except SetupError as exc:
                    delay = retry.backoff(exc)
                    if delay is None:
                        raise UnreachableHost(self.host_name, exc.kind, exc.detail
                                              + retry.tries(), exc.hint) from exc
                _sleep(delay)

    def close(self) -> None:
        with self._lock:
            self._close_transports()
            self._agent.close()

    def _close_transports(self) -> None:
        self._liveness = []  # their threads end with their transports
        for transport in reversed(self._transports):  # target first, then jump hosts
            transport.close()
        self._transports = []

    def _open_chain(self, timeout: float) -> list[paramiko.Transport]:
        opened: list[paramiko.Transport] = []
        sock: _Sock | paramiko.Channel | None = None
        try:
            for index, hop in enumerate(self.hops):
                try:
                    if sock is None:
                        sock = (self._proxy_command(hop) if hop.proxy_command
                                else self._tcp(hop, timeout))
                    transport = self._handshake(hop, sock, self.route.policies[index], timeout)
                    opened.append(transport)
                    self._login(hop, transport)
                    self._watch(transport)
                    self.stats.connections += 1
                    if index + 1 < len(self.hops):
                        sock = self._jump_channel(transport, hop, self.hops[index + 1])
                except SetupError as exc:
                    if index + 1 < len(self.hops) and exc.kind in ("dns", "refused", "timeout",
                                                                   "closed"):
                        # The host itself may be fine; say which hop failed.
                        raise SetupError("proxy", f"jump host {hop.label}: {exc.kind}: "
                                         f"{exc.detail}", exc.hint, exc.retry) from exc
                    raise
            return opened
        except BaseException:
            for transport in reversed(opened):
                transport.close()
            if isinstance(sock, _Sock):
                sock.close()
            raise

    def _tcp(self, hop: Hop, timeout: float) -> socket.socket | QuickAckSocket:
        where = f"{hop.address}:{hop.port}"
        if hop.address.rstrip(".").lower().endswith(".invalid"):
            # RFC 6761: never resolvable, and must not be sent to DNS servers.
            raise SetupError("dns", f"cannot resolve {hop.address}: the .invalid domain never "
                             "resolves", "check the host name / ansible_host")
        try:
            sock = socket.create_connection((hop.address, hop.port), timeout=timeout)
        except socket.gaierror as exc:
            raise SetupError("dns", f"cannot resolve {hop.address}: {exc.strerror or exc}",
                             "check the host name / ansible_host, DNS or /etc/hosts") from exc
        except ConnectionRefusedError as exc:
            raise SetupError("refused", f"connection to {where} refused",
                             f"is sshd running and listening on port {hop.port}? A firewall "
                             "may also reject it; try: nc -vz " + f"{hop.address} {hop.port}",
                             retry=True) from exc
        except TimeoutError as exc:
            raise SetupError("timeout", f"no answer from {where} within {timeout:.3g}s",
                             "the host may be down or a firewall drops SSH; check the address",
                             retry=True) from exc
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
                # Kind "timeout": same meaning to a person (host/network down).
                raise SetupError("timeout", f"{where}: {exc.strerror}", "the host or its network "
                                 "is down, or the address is wrong", retry=True) from exc
            raise SetupError("closed", f"{where}: {exc.strerror or exc}",
                             retry=exc.errno == errno.ECONNRESET) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # many small round trips
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # unacked data: fail then, not after ~15 min
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(self._alive_interval * self.settings.alive_count_max * 1000))
        return QuickAckSocket(sock) if hasattr(socket, "TCP_QUICKACK") else sock

    def _proxy_command(self, hop: Hop) -> paramiko.ProxyCommand:
        assert hop.proxy_command is not None
        try:
            return paramiko.ProxyCommand(hop.proxy_command)
        except (OSError, paramiko.SSHException) as exc:
            raise SetupError("proxy", f"ProxyCommand {hop.proxy_command!r} failed: {exc}",
                             "check ProxyCommand in your ssh config") from exc

    def _jump_channel(self, transport: paramiko.Transport, hop: Hop, nxt: Hop) -> paramiko.Channel:
        try:
            return transport.open_channel("direct-tcpip", (nxt.address, nxt.port),
                                          ("127.0.0.1", 0), timeout=self.settings.connect_timeout)
        except paramiko.ChannelException as exc:
            raise SetupError("proxy", f"jump host {hop.label} could not reach {nxt.address}:"
                             f"{nxt.port}: {exc.text}", "check the address as seen from the jump "
                             "host, and AllowTcpForwarding on it", retry=True) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SetupError("proxy", f"jump host {hop.label} dropped the forwarding to "
                             f"{nxt.address}:{nxt.port}: {exc}", retry=True) from exc

    def _handshake(self, hop: Hop, sock: object, policy: str,
                   timeout: float) -> paramiko.Transport:
        transport = paramiko.Transport(sock)  # type: ignore[arg-type]
        transport.banner_timeout = transport.handshake_timeout = timeout
        transport.auth_timeout = max(timeout, 30.0)
        prefer_key_types(transport, self.known_hosts.key_types(hop.known_name))
        try:
            transport.start_client(timeout=timeout)
        except paramiko.ProxyCommandFailure as exc:
            transport.close()
            raise SetupError("proxy", f"ProxyCommand for {hop.alias} failed: {exc}") from exc
        except paramiko.IncompatiblePeer as exc:  # type: ignore[attr-defined]  # not in stubs
            transport.close()
            raise SetupError("closed", f"{hop.label}: no common SSH algorithms: {exc}",
                             "the server is too old or restricted for paramiko") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            transport.close()
            # Closed during the banner/kex: typically sshd restarting or
            # MaxStartups throttling; both pass, so retry.
            raise SetupError("closed", f"{hop.label} closed the connection during the SSH "
                             f"handshake: {exc or type(exc).__name__}",
                             "check that this port is sshd, and the server's sshd log",
                             retry=True) from exc
        done = transport.completion_event
        if done is None or not done.is_set():  # start_client's timeout returns quietly
            transport.close()
            raise SetupError("timeout", f"{hop.label}: SSH handshake did not finish within "
                             f"{timeout:g}s", retry=True)
        try:
            check_host_key(transport, self.known_hosts, self.host_name, hop,
                           policy, self.settings.confirm_host_key)
        except SetupError:
            transport.close()
            raise
        return transport

    def _watch(self, transport: paramiko.Transport) -> None:
        liveness = Liveness(transport, self._alive_interval, self.settings.alive_count_max)
        liveness.start()
        self._liveness.append(liveness)

    def _login(self, hop: Hop, transport: paramiko.Transport) -> None:
        # The password is for the target only: onboarding a host that has no key
        # yet, never a jump host.
        is_target = hop is self.target
        key = authenticate(hop, transport, keys_for(hop, self._agent),
                           self.settings.password if is_target else None)
        if is_target:
            if key is not None:
                self._auth_key = key
            else:
                self._auth_password = True

    def host_key(self) -> paramiko.PKey:
        """The target's host key from a key exchange alone: no login, no
        known_hosts check (first contact shows it to a person before trusting it)."""
        if len(self.hops) > 1 or self.target.proxy_command:
            raise UnreachableHost(self.host_name, "proxy", "first contact through a jump host "
                                  "or ProxyCommand is not supported",
                                  "record the host key yourself (ssh-keyscan), then rerun")
        try:
            sock = self._tcp(self.target, self.settings.connect_timeout)
        except SetupError as exc:
            raise UnreachableHost(self.host_name, exc.kind, exc.detail, exc.hint) from exc
        transport = paramiko.Transport(sock)  # type: ignore[arg-type]
        timeout = self.settings.connect_timeout
        try:
            transport.banner_timeout = transport.handshake_timeout = timeout
            prefer_key_types(transport, self.known_hosts.key_types(self.target.known_name)
                             or ["ssh-ed25519"])
            transport.start_client(timeout=timeout)
            return transport.get_remote_server_key()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise UnreachableHost(self.host_name, "closed", f"{self.target.label}: SSH key "
                                  f"exchange failed: {exc or type(exc).__name__}") from exc
        finally:
            transport.close()

    def session(self) -> Session:
        key = self._auth_key
        auth = "publickey" if key is not None else "password" if self._auth_password else None
        return Session(
            self.target.user, auth=auth,
            key_type=key.get_name() if key is not None else None,
            key_bits=key.get_bits() if key is not None else None,
            # plain types only: what sshd's HostKeyAlgorithms must keep offering
            known_host_key_types=tuple(t for t in self.known_hosts.key_types(
                self.target.known_name) if not t.endswith(CERT_SUFFIX)))

    def run_on_new_connection(self, command: Command | str, *,
                              sudo: bool = False) -> CommandResult:
        # A connector of its own: new transport, agent and sudo probe (proving
        # sudo still works over a new login is the point).
        fresh = SshConnector(self.settings, self.route)
        fresh.trace = self.trace
        try:
            # retries with backoff: sshd refuses briefly after a reload
            fresh.connect(expect_refusal=True)
            return fresh.run(command, sudo=sudo)
        finally:
            fresh.close()
            self.stats.connections += fresh.stats.connections
            self.stats.round_trips += fresh.stats.round_trips

    # -- running commands ------------------------------------------------------

    def run(self, command: Command | str, *, sudo: bool = False,
            stdin: bytes | BinaryIO | None = None, timeout: float | None = None) -> CommandResult:
        """Run a command; a timeout gives exit code 124 (see sudo.TIMEOUT_EXIT_CODE)."""
        shell, display = split_command(command)
        code, out, err = self._ran(display, self._sudo.run(
            shell, sudo, stdin, lambda line, chunks: self._channels.execute(
                self._live_transport(), line, display, chunks, timeout)))
        return CommandResult(display, code, out, err)

    def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
        return self._started(command.display(), self._sudo.hold(
            command.shell(), sudo, stdin, lambda line, data: self._channels.hold(
                self._live_transport(), line, command.display(), data)))

    def _exec_raw(self, line: str, stdin: bytes) -> tuple[int, str, str]:
        return self._ran("(sudo check)", self._channels.execute(
            self._live_transport(), line, "(sudo check)", iter_stdin(None, stdin), timeout=30))

    def _live_transport(self) -> paramiko.Transport:
        with self._lock:
            if not self._transports:
                self.connect()
            transport = self._transports[-1]
        if not transport.is_active():
            raise self._channels.lost("before running the next command", ran=False)
        return transport
