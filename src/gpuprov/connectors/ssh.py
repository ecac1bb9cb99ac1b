"""The SSH connector: one long-lived paramiko Transport per host.

Every run() is an exec channel on that transport, so a task costs one round
trip, not a TCP connect + key exchange + auth each time. Connection setup
follows OpenSSH where users expect it (ssh_config, ProxyJump, key order,
known_hosts with accept-new) and turns every failure into an UnreachableHost
kind with a hint a person can act on. Setup is retried with backoff for the
transient cases (an sshd reload refuses connections for a moment); a command
is never re-run implicitly, since it may have half-run.

Commands are handed to the login shell as `sh -c '<cmd>'`, so they get POSIX
sh semantics with sh, bash, dash, ksh or zsh as login shell (fish and csh
quote differently and are not supported as the remote user's shell).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko
from paramiko.message import Message

from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Session
from gpuprov.connectors.ssh_auth import (
    Agent,
    authenticate,
    check_host_key,
    keys_for,
    prefer_key_types,
)
from gpuprov.connectors.ssh_config import (
    Hop,
    SetupError,
    known_hosts_for,
    load_config,
    resolve_chain,
)
from gpuprov.connectors.sudo import (
    TIMEOUT_EXIT_CODE,
    TIMEOUT_NOTE,
    Sudo,
    add_note,
    iter_stdin,
    split_command,
)
from gpuprov.errors import UnreachableHost

# paramiko logs failed handshakes with tracebacks at ERROR; without a handler
# Python prints them on stderr, on top of our own classified error.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_sleep = time.sleep  # tests patch this to keep backoff instant


class _QuickAckSocket:
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

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


@dataclass(frozen=True)
class SshSettings:
    """What an SshConnector is built from; `address` (ansible_host) defaults to `host_name`.

    Explicit port/user/key_file win over ~/.ssh/config (or `ssh_config`);
    `known_hosts` replaces ~/.ssh/known_hosts (and /etc/ssh/ssh_known_hosts).
    """

    host_name: str
    address: str | None = None
    port: int | None = None
    user: str | None = None
    key_file: str | Path | None = None
    known_hosts: Path | None = None
    strict_host_keys: bool = False
    become: Become = field(default_factory=Become)
    connect_timeout: float = 10.0
    retries: int = 5
    retry_budget: float = 15.0
    ssh_config: Path | None = None
    use_agent: bool = True
    keepalive: int = 30
    #: login password, tried after the keys (onboarding a host that has no key yet)
    password: str | None = field(default=None, repr=False)


class SshConnector(Connector):
    """One host over SSH, as `settings` describe it (resolved through ssh_config here)."""

    def __init__(self, settings: SshSettings) -> None:
        super().__init__(settings.host_name)
        self.settings = settings
        config = load_config(settings.ssh_config)
        key_file = Path(settings.key_file).expanduser() if settings.key_file else None
        self.hops = resolve_chain(config, settings.host_name,
                                  settings.address or settings.host_name, settings.user,
                                  settings.port, key_file)
        self.target = self.hops[-1]
        options = config.lookup(self.target.alias)
        self.strict_host_keys = (settings.strict_host_keys
                                 or options.get("stricthostkeychecking") == "yes")
        self.known_hosts = known_hosts_for(settings.known_hosts, options)
        self._transports: list[paramiko.Transport] = []
        self._agent = Agent(settings.use_agent)
        self._lock = threading.RLock()
        self._sudo = Sudo(settings.host_name, self.target.user, settings.become, self._exec_raw)
        #: the key the target accepted (the operator's identity, for session())
        self._auth_key: paramiko.PKey | None = None
        self._auth_password = False

    # -- connection setup ---------------------------------------------------

    def connect(self) -> None:
        with self._lock:
            if self._transports and self._transports[-1].is_active():
                return
            self._close_transports()
            started, slept = time.monotonic(), 0.0
            delay, attempt = 0.5, 0
            while True:
                attempt += 1
                try:
                    self._transports = self._open_chain()
                    return
                except SetupError as exc:
                    # `slept` keeps the budget honest when sleep is patched out.
                    spent = max(time.monotonic() - started, slept)
                    if (not exc.retry or attempt > self.settings.retries
                            or spent + delay > self.settings.retry_budget):
                        tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                        raise UnreachableHost(self.host_name, exc.kind, exc.detail + tries,
                                              exc.hint) from exc
                _sleep(delay)
                slept += delay
                delay *= 2

    def close(self) -> None:
        with self._lock:
            self._close_transports()
            self._agent.close()

    def _close_transports(self) -> None:
        for transport in reversed(self._transports):  # target first, then jump hosts
            transport.close()
        self._transports = []

    def _open_chain(self) -> list[paramiko.Transport]:
        opened: list[paramiko.Transport] = []
        sock: socket.socket | paramiko.Channel | paramiko.ProxyCommand | None = None
        try:
            for index, hop in enumerate(self.hops):
                try:
                    if sock is None:
                        sock = self._proxy_command(hop) if hop.proxy_command else self._tcp(hop)
                    transport = self._handshake(hop, sock)
                    opened.append(transport)
                    self._login(hop, transport)
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
            if isinstance(sock, socket.socket | _QuickAckSocket | paramiko.ProxyCommand):
                sock.close()
            raise

    def _tcp(self, hop: Hop) -> socket.socket:
        where = f"{hop.address}:{hop.port}"
        if hop.address.rstrip(".").lower().endswith(".invalid"):
            # RFC 6761: never resolvable, and must not be sent to DNS servers.
            raise SetupError("dns", f"cannot resolve {hop.address}: the .invalid domain never "
                             "resolves", "check the host name / ansible_host")
        try:
            sock = socket.create_connection((hop.address, hop.port),
                                            timeout=self.settings.connect_timeout)
        except socket.gaierror as exc:
            raise SetupError("dns", f"cannot resolve {hop.address}: {exc.strerror or exc}",
                             "check the host name / ansible_host, DNS or /etc/hosts") from exc
        except ConnectionRefusedError as exc:
            raise SetupError("refused", f"connection to {where} refused",
                             f"is sshd running and listening on port {hop.port}? A firewall "
                             "may also reject it; try: nc -vz " + f"{hop.address} {hop.port}",
                             retry=True) from exc
        except TimeoutError as exc:
            raise SetupError("timeout", f"no answer from {where} within "
                             f"{self.settings.connect_timeout:g}s", "the host may be down or a "
                             "firewall drops SSH; check the address", retry=True) from exc
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
                # Kind "timeout": same meaning to a person (host/network down),
                # and worth retrying while a host reboots.
                raise SetupError("timeout", f"{where}: {exc.strerror}", "the host or its network "
                                 "is down, or the address is wrong", retry=True) from exc
            raise SetupError("closed", f"{where}: {exc.strerror or exc}",
                             retry=exc.errno == errno.ECONNRESET) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # many small round trips
        return _QuickAckSocket(sock) if hasattr(socket, "TCP_QUICKACK") else sock

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

    def _handshake(self, hop: Hop, sock: object) -> paramiko.Transport:
        timeout = self.settings.connect_timeout
        transport = paramiko.Transport(sock)  # type: ignore[arg-type]
        transport.banner_timeout = transport.handshake_timeout = timeout
        transport.auth_timeout = max(timeout, 30.0)
        prefer_key_types(transport, self.known_hosts.key_types(hop.known_name))
        try:
            transport.start_client(timeout=timeout)
        except paramiko.ProxyCommandFailure as exc:
            transport.close()
            raise SetupError("proxy", f"ProxyCommand for {hop.alias} failed: {exc}") from exc
        except paramiko.IncompatiblePeer as exc:
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
        if not transport.completion_event.is_set():  # start_client's timeout returns quietly
            transport.close()
            raise SetupError("timeout", f"{hop.label}: SSH handshake did not finish within "
                             f"{timeout:g}s", retry=True)
        try:
            check_host_key(transport, self.known_hosts, self.host_name, hop,
                           self.strict_host_keys)
        except SetupError:
            transport.close()
            raise
        transport.set_keepalive(self.settings.keepalive)  # keep NAT/firewall state for long runs
        return transport

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
            sock = self._tcp(self.target)
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
            known_host_key_types=tuple(self.known_hosts.key_types(self.target.known_name)))

    def run_on_new_connection(self, command: Command | str, *,
                              sudo: bool = False) -> CommandResult:
        # A connector of its own: new transport, agent and sudo probe (proving
        # sudo still works over a new login is the point).
        fresh = SshConnector(self.settings)
        try:
            fresh.connect()   # retries with backoff: sshd refuses briefly after a reload
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
        line, prefix = self._sudo.prepare(shell, sudo)
        code, out, err = self._execute(line, display, iter_stdin(stdin, prefix), timeout)
        if sudo:
            self._sudo.check(code, err)
        return CommandResult(display, code, out, err)

    def _exec_raw(self, line: str, stdin: bytes) -> tuple[int, str, str]:
        return self._execute(line, "(sudo check)", iter_stdin(None, stdin), timeout=30)

    def _live_transport(self) -> paramiko.Transport:
        with self._lock:
            if not self._transports:
                self.connect()
            transport = self._transports[-1]
        if not transport.is_active():
            raise self._lost("before running the next command", ran=False)
        return transport

    def _lost(self, when: str, ran: bool) -> UnreachableHost:
        detail = f"the SSH connection to {self.target.label} was lost {when}"
        if ran:
            detail += "; the command may have partly run and is not retried"
        return UnreachableHost(self.host_name, "closed", detail,
                               "the host may have rebooted or sshd restarted; rerun once it is "
                               "back (connect() opens a new connection)")

    def _execute(self, line: str, display: str, chunks: Iterator[bytes],
                 timeout: float | None) -> tuple[int, str, str]:
        transport = self._live_transport()
        try:
            chan = transport.open_session(timeout=self.settings.connect_timeout)
            self.stats.round_trips += 1
            chan.exec_command(line)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if _wait_inactive(transport):
                raise self._lost(f"before running `{display}`", ran=False) from exc
            raise UnreachableHost(self.host_name, "closed", f"{self.target.label} refused a "
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
                raise self._lost(f"while running `{display}`", ran=True)
            return 255, stdout, add_note(stderr, "[gpuprov] the command ended without an exit "
                                         "status (killed by a signal?)")
        return chan.exit_status, stdout, stderr

    def _feed(self, chan: paramiko.Channel, chunks: Iterator[bytes],
              failure: list[BaseException]) -> None:
        while True:
            try:
                chunk = next(chunks, None)
            except BaseException as exc:
                # Reading the stdin file failed. No EOF: it would make a
                # truncated upload look complete. Interrupt and close instead;
                # that also wakes the reader, and _execute re-raises.
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
        chan.get_transport()._send_user_message(msg)
