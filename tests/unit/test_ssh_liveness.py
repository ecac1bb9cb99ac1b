"""Unreachable hosts fail fast and honestly (issue 15): a refused first
connect is not retried, a host that stops answering mid-command is declared
unreachable within the configured timeout, -T reaches the connector."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paramiko
import pytest

from gpuprov.connectors import ssh as ssh_mod
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.connectors.ssh_liveness import Liveness
from gpuprov.engine import connect as connect_mod
from gpuprov.errors import UnreachableHost
from tests.unit.fake_sshd import FakeSshd, closed_port


class FreezingProxy:
    """A TCP relay to `port` that can go silent like a cut network: it stops
    reading and forwarding, yet keeps the sockets open (no FIN, no RST)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.frozen = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.frozen.is_set():
                return  # swallowed, and nothing is read any more
            dst.sendall(data)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()












pytestmark = pytest.mark.usefixtures("isolated_home")


def settings(port: int, key_file: Path, **kw: object) -> SshSettings:
    return SshSettings("web1", "127.0.0.1", port=port, user="tester", key_file=key_file,
                       known_hosts=key_file.parent / "known_hosts",
                       host_key_checking="accept-new",
                       ssh_config=key_file.parent / "no_ssh_config", **kw)  # type: ignore[arg-type]


def test_a_refused_first_connect_fails_at_once(key_file, monkeypatch) -> None:
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("a refusal must not be retried"))
    started = time.monotonic()
    with pytest.raises(UnreachableHost) as info:
        SshConnector(settings(closed_port(), key_file)).connect()
    assert info.value.kind == "refused" and "attempts" not in info.value.detail
    assert time.monotonic() - started < 1.0


def test_the_login_after_an_sshd_reload_retries_a_refusal(tmp_path, key_file, host_key,
                                                          client_key, monkeypatch) -> None:
    port = closed_port()
    servers = [FakeSshd(tmp_path, host_key, [client_key], port=port)]
    try:
        conn = SshConnector(settings(port, key_file, connect_timeout=5))
        conn.connect()
        servers[0].listener.shutdown(socket.SHUT_RDWR)  # sshd restarting: refused a moment
        servers[0].listener.close()

        def sleep_then_start(delay: float) -> None:
            if len(servers) == 1:
                servers.append(FakeSshd(tmp_path, host_key, [client_key], port=port))

        monkeypatch.setattr(ssh_mod, "_sleep", sleep_then_start)
        assert conn.run_on_new_connection("echo fresh").stdout == "fresh\n"
        assert len(servers) == 2  # it was refused, retried, and got through
        conn.close()
    finally:
        for server in servers:
            server.stop()


def test_a_host_that_stops_answering_mid_command_is_unreachable_within_the_timeout(
        sshd, key_file) -> None:
    proxy = FreezingProxy(sshd.port)
    conn = SshConnector(settings(proxy.port, key_file, connect_timeout=2, alive_interval=0.5))
    try:
        conn.connect()
        assert conn.run("echo up").stdout == "up\n"
        threading.Timer(0.5, proxy.frozen.set).start()  # the network is cut mid-command
        started = time.monotonic()
        with pytest.raises(UnreachableHost) as info:
            conn.run("sleep 30")  # silent and long: legitimate, until the host goes quiet
        took = time.monotonic() - started
        assert info.value.kind == "timeout" and "stopped answering" in info.value.detail
        assert "may have partly run" in info.value.detail
        # frozen at 0.5 s, declared gone 1.5 s (3 x 0.5 s) after the last reply
        assert 1.0 < took < 4.0
        with pytest.raises(UnreachableHost) as again:  # and never silently reconnected
            conn.run("true")
        assert again.value.kind == "timeout"
    finally:
        conn.close()
        proxy.close()


def test_a_silent_command_on_an_answering_host_is_not_cut(sshd, key_file) -> None:
    conn = SshConnector(settings(sshd.port, key_file, connect_timeout=2, alive_interval=0.3))
    with conn:
        # 2 s without a byte of output: longer than the liveness limit (0.9 s)
        assert conn.run("sleep 2; echo done").stdout == "done\n"


def test_the_liveness_limit_follows_the_connect_timeout(sshd, key_file) -> None:
    assert Liveness(paramiko.Transport(socket.socket()), 10 / 3, 3).limit == pytest.approx(10)
    conn = SshConnector(settings(sshd.port, key_file, connect_timeout=5))
    with conn:
        (liveness,) = conn._liveness
        assert liveness.limit == pytest.approx(5) and not liveness.dead.is_set()
    slow = SshConnector(settings(sshd.port, key_file, connect_timeout=1.5))
    assert slow._alive_interval == 1.0  # never more often than once a second


@pytest.mark.parametrize("command", ["apply", "drift-check", "verify", "facts"])
def test_dash_t_sets_the_connect_timeout(command, tmp_path, monkeypatch) -> None:
    from tests.unit.cli_runner import gpuprov

    seen: list[float] = []
    real = connect_mod.SshConnector

    def spy(settings: SshSettings) -> SshConnector:
        seen.append(settings.connect_timeout)
        return real(settings)

    monkeypatch.setattr(connect_mod, "SshConnector", spy)
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("a refusal must not be retried"))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f"all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n"
                         f"      ansible_port: {closed_port()}\n")
    monkeypatch.chdir(tmp_path)
    gpuprov(command, "-T", "5", str(inventory))
    gpuprov(command, str(inventory))
    assert seen == [5.0, 10.0]
    assert "-T, --timeout" in gpuprov(command, "--help").stdout
