"""SshConnector against an in-process paramiko server on 127.0.0.1.

The server runs exec requests with /bin/sh in a temp dir (tests only send
harmless commands: echo, cat, printf, exit N). HOME points to tmp_path and
ssh-agent is disabled, so the real ~/.ssh is never read or written.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import paramiko
import pytest

from gpuprov.command import MASK, Command, Secret
from gpuprov.connectors import ssh as ssh_mod
from gpuprov.connectors.base import Become
from gpuprov.connectors.hostkeys import fingerprint
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.errors import UnreachableHost
from tests.unit.fake_sshd import DIE, FakeSshd, closed_port

pytestmark = pytest.mark.usefixtures("isolated_home")


def make(sshd: FakeSshd, key_file: Path, known_hosts: Path, **kw) -> SshConnector:
    kw.setdefault("ssh_config", key_file.parent / "no_ssh_config")
    # These tests exercise the connector on a fresh fake server each time, so
    # they accept its key; the host key policy itself is tested with an
    # explicit host_key_checking (None: the real default, strict).
    kw.setdefault("host_key_checking", "accept-new")
    return SshConnector(SshSettings("web1", "127.0.0.1", port=sshd.port, user="tester",
                                    key_file=key_file, known_hosts=known_hosts,
                                    connect_timeout=5, **kw))


def test_run_exit_codes_and_streams(sshd, key_file, known_hosts) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        ok = conn.run("echo out; echo err >&2")
        failed = conn.run(Command("sh", "-c", "exit 7"))
        utf8 = conn.run("printf 'caf\\303\\251 \\377'")
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.ok) == (0, "out\n", "err\n", True)
    assert failed.exit_code == 7 and not failed.ok
    assert utf8.stdout == "café \ufffd"  # invalid utf-8 replaced, not an exception


def test_commands_get_sh_semantics_and_secrets_are_masked(sshd, key_file, known_hosts) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        result = conn.run(Command("printf", "%s|", "a b", "it's", Secret("hunter2")))
    assert result.stdout == "a b|it's|hunter2|"
    assert "hunter2" not in result.command and "********" in result.command
    assert sshd.commands[-1].startswith("sh -c ")


def test_trace_is_told_each_command_as_displayed(sshd, key_file, known_hosts) -> None:
    # -vv (issue 17): the connector tells a callable, and needs nothing above it
    told: list[tuple[str, int | None, str, str]] = []
    with make(sshd, key_file, known_hosts) as conn:
        conn.trace = lambda *event: told.append(event)
        conn.run(Command("printf", "%s", Secret("hunter2")))
        conn.run("echo err >&2; exit 3")
        trips = conn.stats.round_trips
    assert told == [(f"printf %s {MASK}", 0, "hunter2", ""),
                    ("echo err >&2; exit 3", 3, "", "err\n")]
    assert trips == 2


def test_stdin_streaming_of_megabytes(sshd, key_file, known_hosts) -> None:
    payload = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, not chunk-aligned
    with make(sshd, key_file, known_hosts) as conn:
        from_bytes = conn.run("wc -c", stdin=payload)
        from_file = conn.run("cat > upload.bin && wc -c < upload.bin", stdin=io.BytesIO(payload))
    assert from_bytes.stdout.strip() == str(len(payload))
    assert from_file.stdout.strip() == str(len(payload))
    assert (sshd.workdir / "upload.bin").read_bytes() == payload
    assert conn.stats.bytes_sent == 2 * len(payload)


def test_stdin_read_error_interrupts_instead_of_sending_eof(sshd, key_file,
                                                             known_hosts) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("disk on fire")
            return b"x" * 1000

    with make(sshd, key_file, known_hosts) as conn:
        with pytest.raises(OSError, match="disk on fire"):
            conn.run("cat > part.bin && mv part.bin done.bin", stdin=Broken(), timeout=10)
        assert conn.run("echo alive").ok  # the connection is still usable
    assert sshd.signals == ["TERM"]  # interrupted, not fed an EOF
    assert not (sshd.workdir / "done.bin").exists()


def test_one_connection_many_round_trips(sshd, key_file, known_hosts) -> None:
    conn = make(sshd, key_file, known_hosts)
    for i in range(5):
        assert conn.run(f"echo {i}").stdout == f"{i}\n"  # first run connects lazily
    conn.close()
    conn.close()  # safe twice
    assert (conn.stats.connections, conn.stats.round_trips) == (1, 5)
    assert sshd.accepted == 1


def test_no_delayed_ack_stall_per_command(sshd, key_file, known_hosts) -> None:
    # Like sshd, the fake server leaves Nagle on; without TCP_QUICKACK on our
    # side every command would wait ~40 ms for a delayed ACK (0.8 s here).
    with make(sshd, key_file, known_hosts) as conn:
        conn.run("true")
        started = time.perf_counter()
        for _ in range(20):
            conn.run("true")
        assert time.perf_counter() - started < 0.6


def test_timeout_returns_124_and_connection_survives(sshd, key_file, known_hosts) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        slow = conn.run("sleep 5", timeout=0.3)
        after = conn.run("echo still here")
    assert slow.exit_code == 124 and "timed out" in slow.stderr
    assert sshd.signals == ["TERM"]
    assert after.stdout == "still here\n" and conn.stats.connections == 1


def test_accept_new_records_key_with_port(sshd, key_file, known_hosts, host_key) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        conn.run("true")
    line = known_hosts.read_text()
    assert line == f"[127.0.0.1]:{sshd.port} {host_key.get_name()} {host_key.get_base64()}\n"
    with make(sshd, key_file, known_hosts, host_key_checking="strict") as conn:  # now known
        assert conn.run("echo ok").stdout == "ok\n"
    assert known_hosts.read_text() == line  # not recorded twice


def test_hashed_known_hosts_entry_is_accepted(sshd, key_file, known_hosts, host_key) -> None:
    hashed = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{sshd.port}")
    known_hosts.write_text(f"{hashed} {host_key.get_name()} {host_key.get_base64()}\n")
    with make(sshd, key_file, known_hosts, host_key_checking="strict") as conn:
        assert conn.run("echo ok").ok


def test_unknown_host_is_refused_by_default(sshd, key_file, known_hosts, host_key) -> None:
    # host_key_checking=None: nothing in the inventory, no ssh_config: strict
    with pytest.raises(UnreachableHost) as info:
        make(sshd, key_file, known_hosts, host_key_checking=None).connect()
    err = info.value
    assert err.kind == "host-key-unknown"
    assert f"{host_key.get_name()} {fingerprint(host_key)}" in err.detail
    hint = err.hint or ""
    assert "gpuprov onboard web1" in hint and "--accept-new-host-keys" in hint
    assert "ssh-keyscan" in hint and not known_hosts.exists()
    assert not sshd.auth_attempts  # nothing offered to an unverified host


def test_changed_key_names_both_fingerprints_and_line(sshd, key_file, known_hosts,
                                                      host_key) -> None:
    old = paramiko.ECDSAKey.generate()
    known_hosts.write_text("# fleet keys\n"
                           f"other.example {old.get_name()} {old.get_base64()}\n"
                           f"[127.0.0.1]:{sshd.port} {old.get_name()} {old.get_base64()}\n")
    before = known_hosts.read_text()
    for policy in ("accept-new", "strict"):  # never accepted, whatever the policy
        with pytest.raises(UnreachableHost) as info:
            make(sshd, key_file, known_hosts, host_key_checking=policy).connect()
        err = info.value
        assert err.kind == "host-key-changed" and err.host == "web1"
        assert fingerprint(old) in err.detail and fingerprint(host_key) in err.detail
        assert f"{known_hosts}:3" in err.detail
        assert "ssh-keygen -R" in (err.hint or "")
    assert known_hosts.read_text() == before
    assert not sshd.auth_attempts  # no key was offered to an impostor


def test_auth_failure_lists_keys_tried(sshd, tmp_path, known_hosts, isolated_home) -> None:
    stranger = tmp_path / "id_stranger"
    paramiko.ECDSAKey.generate().write_private_key_file(str(stranger))
    default = isolated_home / ".ssh" / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(default))
    conn = make(sshd, stranger, known_hosts)
    with pytest.raises(UnreachableHost) as info:
        conn.connect()
    assert info.value.kind == "auth"
    assert str(stranger) in info.value.detail and "'tester'" in info.value.detail
    assert str(default) not in info.value.detail  # explicit key wins over defaults
    # Without an explicit key, the defaults under ~/.ssh are tried.
    conn = SshConnector(SshSettings("web1", "127.0.0.1", port=sshd.port, user="tester",
                                    known_hosts=known_hosts, connect_timeout=5))
    with pytest.raises(UnreachableHost) as info:
        conn.connect()
    assert str(default) in info.value.detail


def test_ssh_config_and_proxyjump_chain(sshd, key_file, known_hosts, isolated_home,
                                        client_key, host_key) -> None:
    # Two jump hosts (both the fake server), then the target: three transports.
    # The second jump has no config entry, so it uses the default key.
    client_key.write_private_key_file(str(isolated_home / ".ssh" / "id_ecdsa"))
    (isolated_home / ".ssh" / "config").write_text(f"""
Host target
    HostName 127.0.0.1
    Port {sshd.port}
    User tester
    IdentityFile {key_file}
    ProxyJump bastion1,tester@127.0.0.1:{sshd.port}
Host bastion1
    HostName 127.0.0.1
    Port {sshd.port}
    User tester
    IdentityFile {key_file}
""")
    # every hop is checked strictly (the default): all three are this server
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {host_key.get_name()} "
                           f"{host_key.get_base64()}\n")
    conn = SshConnector(SshSettings("gpu7", "target", known_hosts=known_hosts, connect_timeout=5))
    with conn:
        assert conn.run("echo via jumps").stdout == "via jumps\n"
        assert conn.run("echo again").ok
    assert [h.alias for h in conn.hops] == ["bastion1", "127.0.0.1", "target"]
    assert sshd.forwards == [("127.0.0.1", sshd.port)] * 2
    assert conn.stats.connections == 3 and conn.stats.round_trips == 2


def test_explicit_arguments_win_over_ssh_config(tmp_path, isolated_home) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        "Host box\n  HostName 10.9.8.7\n  Port 2222\n  User cfguser\n  IdentityFile ~/k1\n")
    from_config = SshConnector(SshSettings("box"))
    assert (from_config.target.address, from_config.target.port,
            from_config.target.user) == ("10.9.8.7", 2222, "cfguser")
    assert from_config.target.identity_files == [isolated_home / "k1"]
    explicit = SshConnector(SshSettings("box", port=22, user="me", key_file=tmp_path / "k2"))
    assert (explicit.target.port, explicit.target.user) == (22, "me")
    assert explicit.target.identity_files == [tmp_path / "k2"]


def test_expected_refusal_is_classified_and_retried_with_backoff(key_file, known_hosts,
                                                                 monkeypatch) -> None:
    # Retrying a refusal is what the engine asks for right after an sshd reload
    # (issue 15: the first connect of a run is not retried, see test_ssh_liveness.py).
    sleeps: list[float] = []
    monkeypatch.setattr(ssh_mod, "_sleep", sleeps.append)
    conn = SshConnector(SshSettings("web1", "127.0.0.1", port=closed_port(), key_file=key_file,
                                    known_hosts=known_hosts, retries=4))
    with pytest.raises(UnreachableHost) as info:
        conn.connect(expect_refusal=True)
    assert info.value.kind == "refused" and "after 5 attempts" in info.value.detail
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def test_expected_refusal_then_server_comes_back(tmp_path, key_file, known_hosts, host_key,
                                                 client_key, monkeypatch) -> None:
    port = closed_port()
    servers: list[FakeSshd] = []

    def sleep_then_start(delay: float) -> None:  # sshd is back after the second retry
        if len(servers) == 0 and delay >= 1.0:
            servers.append(FakeSshd(tmp_path, host_key, [client_key], port=port))

    monkeypatch.setattr(ssh_mod, "_sleep", sleep_then_start)
    try:
        conn = SshConnector(SshSettings("web1", "127.0.0.1", port=port, key_file=key_file,
                                        known_hosts=known_hosts, host_key_checking="accept-new"))
        conn.connect(expect_refusal=True)
        with conn:
            assert conn.run("echo back").stdout == "back\n"
        assert conn.stats.connections == 1
    finally:
        for server in servers:
            server.stop()


def test_retry_budget_bounds_total_time(key_file, known_hosts, monkeypatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(ssh_mod, "_sleep", sleeps.append)
    conn = SshConnector(SshSettings("web1", "127.0.0.1", port=closed_port(), key_file=key_file,
                                    known_hosts=known_hosts, retries=50, retry_budget=3.0))
    with pytest.raises(UnreachableHost):
        conn.connect(expect_refusal=True)
    assert sum(sleeps) <= 3.0


def test_auth_and_host_key_errors_are_not_retried(sshd, tmp_path, known_hosts,
                                                  monkeypatch) -> None:
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("must not retry"))
    stranger = tmp_path / "id_stranger"
    paramiko.ECDSAKey.generate().write_private_key_file(str(stranger))
    with pytest.raises(UnreachableHost, match=r"\(auth\)"):
        make(sshd, stranger, known_hosts).connect()
    assert sshd.accepted == 1


def test_dns_failure_fails_fast_without_leaving_the_machine(key_file, known_hosts,
                                                            monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"tried to resolve or connect: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("dns must not be retried"))
    started = time.monotonic()
    with pytest.raises(UnreachableHost) as info:
        SshConnector(SshSettings("ghost", "ghost.gpuprov.invalid", key_file=key_file,
                                 known_hosts=known_hosts)).connect()
    assert info.value.kind == "dns" and "ghost.gpuprov.invalid" in info.value.detail
    assert time.monotonic() - started < 1.0


def test_gaierror_is_classified_as_dns(key_file, known_hosts, monkeypatch) -> None:
    def resolver_says_no(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", resolver_says_no)
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("dns must not be retried"))
    with pytest.raises(UnreachableHost) as info:
        SshConnector(SshSettings("ghost", "ghost.lab", key_file=key_file,
                                 known_hosts=known_hosts)).connect()
    assert info.value.kind == "dns" and "Name or service not known" in info.value.detail


def test_server_dying_mid_command_is_closed_not_rerun(sshd, key_file, known_hosts) -> None:
    conn = make(sshd, key_file, known_hosts)
    conn.connect()
    with pytest.raises(UnreachableHost) as info:
        conn.run(f"echo {DIE}")
    assert info.value.kind == "closed" and "may have partly run" in info.value.detail
    assert sum(DIE in c for c in sshd.commands) == 1  # sent once, never re-run
    with pytest.raises(UnreachableHost) as info:  # no silent reconnect either
        conn.run("echo next")
    assert info.value.kind == "closed"
    conn.connect()  # an explicit connect() opens a new connection
    assert conn.run("echo next").stdout == "next\n" and conn.stats.connections == 2
    conn.close()


def test_handshake_with_a_non_ssh_server_is_closed(key_file, known_hosts, monkeypatch) -> None:
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: None)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def hang_up() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.close()  # like sshd refusing at MaxStartups or mid-restart

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        with pytest.raises(UnreachableHost) as info:
            SshConnector(SshSettings("web1", "127.0.0.1", port=listener.getsockname()[1],
                                     key_file=key_file, known_hosts=known_hosts,
                                     retries=1)).connect()
        assert info.value.kind == "closed" and "after 2 attempts" in info.value.detail
    finally:
        listener.close()


def test_sudo_as_root_via_password(sshd, key_file, known_hosts) -> None:
    # The fake server runs as whoever runs the tests; cover both cases.
    conn = make(sshd, key_file, known_hosts, become=Become(password="pw"))
    with conn:
        if conn.run("id -u").stdout.strip() == "0":
            assert conn.run("id -u", sudo=True).stdout == "0\n"
        else:
            pytest.skip("sudo paths are covered by test_sudo.py with a fake executor")


def test_session_names_the_user_and_the_key_that_logged_in(sshd, key_file, known_hosts,
                                                          client_key, host_key) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        session = conn.session()
    assert (session.user, session.auth) == ("tester", "publickey")
    assert (session.key_type, session.key_bits) == (client_key.get_name(), client_key.get_bits())
    assert session.known_host_key_types == (host_key.get_name(),)  # recorded on first contact


def test_run_on_new_connection_opens_another_login_and_keeps_the_first(sshd, key_file,
                                                                      known_hosts) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        conn.run("true")
        fresh = conn.run_on_new_connection("echo fresh")
        again = conn.run("echo old")
    assert fresh.stdout == "fresh\n" and again.stdout == "old\n"
    assert sshd.accepted == 2 and conn.stats.connections == 2


def test_run_on_new_connection_goes_the_route_resolved_at_the_start(sshd, key_file,
                                                                    known_hosts) -> None:
    config = key_file.parent / "ssh_config"
    config.write_text(f"Host web1\n  HostName 127.0.0.1\n  Port {sshd.port}\n"
                      "  StrictHostKeyChecking accept-new\n")  # honoured: the key is recorded
    conn = SshConnector(SshSettings("web1", user="tester", key_file=key_file,
                                    known_hosts=known_hosts, connect_timeout=5,
                                    ssh_config=config))
    with conn:
        conn.run("true")
        # the run's own sshd change may leave the operator's config unreadable
        # or different: the confirming login must still reach the same host
        config.write_text("Host web1\n  HostName 127.0.0.2\n  Port 1\n")
        fresh = conn.run_on_new_connection("echo fresh")
    assert fresh.stdout == "fresh\n" and sshd.accepted == 2


def test_run_on_new_connection_raises_when_the_login_is_refused(sshd, key_file,
                                                                known_hosts) -> None:
    with make(sshd, key_file, known_hosts) as conn:
        conn.run("true")
        sshd.authorized.clear()   # the new config rejects the operator's key
        with pytest.raises(UnreachableHost) as err:
            conn.run_on_new_connection("true")
        assert err.value.kind == "auth"
        assert conn.run("echo still").stdout == "still\n"


def test_password_login_after_the_keys_and_session_says_so(sshd, tmp_path, known_hosts,
                                                           isolated_home) -> None:
    sshd.password = "s3cret pass"
    key_file = tmp_path / "not_authorized"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(key_file))
    with make(sshd, key_file, known_hosts, password="s3cret pass") as conn:
        assert conn.run("echo in").stdout == "in\n"
        assert conn.session().auth == "password"
    assert [a[1] for a in sshd.auth_attempts][-1] == "password"


def test_a_wrong_password_is_an_auth_error_naming_the_user(sshd, tmp_path, known_hosts,
                                                           isolated_home) -> None:
    sshd.password = "right"
    key_file = tmp_path / "not_authorized"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(key_file))
    with pytest.raises(UnreachableHost) as err:
        make(sshd, key_file, known_hosts, password="wrong").connect()
    assert err.value.kind == "auth"
    assert "rejected the password for user 'tester'" in err.value.detail


def test_host_key_is_read_without_logging_in(sshd, key_file, known_hosts, host_key) -> None:
    conn = make(sshd, key_file, known_hosts)
    assert conn.host_key().asbytes() == host_key.asbytes()
    assert sshd.auth_attempts == []
    assert not conn.known_hosts.verify("web1", conn.target.known_name, host_key)
    conn.known_hosts.record("web1", conn.target.known_name, host_key)
    assert conn.known_hosts.verify("web1", conn.target.known_name, host_key)


def test_settings_keep_the_login_password_out_of_their_repr() -> None:
    settings = SshSettings("web1", password="s3cret pass")
    assert "s3cret" not in repr(settings) and "web1" in repr(settings)
