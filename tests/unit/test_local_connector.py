"""LocalConnector: the connector interface on this machine via /bin/sh -c."""

from __future__ import annotations

import io
import os

import pytest

from gpuprov.command import Command, Secret
from gpuprov.connectors.base import Become
from gpuprov.connectors.local import LocalConnector
from gpuprov.connectors.sudo import TIMEOUT_EXIT_CODE


@pytest.fixture
def conn() -> LocalConnector:
    with LocalConnector() as connector:
        yield connector


def test_exit_codes_stdout_stderr(conn: LocalConnector) -> None:
    ok = conn.run("echo out; echo err >&2")
    failed = conn.run("exit 3")
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.ok) == (0, "out\n", "err\n", True)
    assert failed.exit_code == 3 and not failed.ok


def test_posix_sh_semantics_and_quoting(conn: LocalConnector) -> None:
    result = conn.run(Command("printf", "%s|", "a b", "it's", "$HOME", ";"))
    assert result.stdout == "a b|it's|$HOME|;|"


def test_invalid_utf8_is_replaced(conn: LocalConnector) -> None:
    assert conn.run("printf 'caf\\303\\251 \\377'").stdout == "café \ufffd"


def test_stdin_bytes_and_file_objects(conn: LocalConnector, tmp_path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 11)
    assert conn.run("wc -c", stdin=payload).stdout.strip() == str(len(payload))
    target = tmp_path / "upload.bin"
    with open(tmp_path / "src.bin", "wb") as f:
        f.write(payload)
    with open(tmp_path / "src.bin", "rb") as f:
        assert conn.run(f"cat > {target}", stdin=f).ok
    assert target.read_bytes() == payload
    assert conn.run("cat", stdin=io.BytesIO(b"abc")).stdout == "abc"


def test_command_that_ignores_stdin_does_not_hang(conn: LocalConnector) -> None:
    assert conn.run("exit 0", stdin=b"x" * (4 * 1024 * 1024)).exit_code == 0


def test_secrets_are_masked_in_result(conn: LocalConnector) -> None:
    result = conn.run(Command("echo", "token:", Secret("hunter2")))
    assert result.stdout == "token: hunter2\n"
    assert result.command == "echo token: ********"
    assert "hunter2" not in repr(result.command)


def test_timeout_gives_124_and_kills_the_group(conn: LocalConnector, tmp_path) -> None:
    marker = tmp_path / "late"
    result = conn.run(f"(sleep 3; touch {marker}) & sleep 5", timeout=0.3)
    assert result.exit_code == TIMEOUT_EXIT_CODE and "timed out after 0.3s" in result.stderr
    assert conn.run("echo fine").stdout == "fine\n"


def test_stdin_read_error_is_raised_not_hidden(conn: LocalConnector) -> None:
    class Broken(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        conn.run("cat > /dev/null", stdin=Broken())


def test_stats_count_runs_and_bytes() -> None:
    conn = LocalConnector("here")
    for _ in range(3):
        conn.run("true")
    conn.run("cat", stdin=b"12345")
    conn.close()
    conn.close()
    assert (conn.stats.connections, conn.stats.round_trips, conn.stats.bytes_sent) == (1, 4, 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="as non-root this would need a real sudo")
def test_sudo_as_root_runs_directly() -> None:
    conn = LocalConnector(become=Become(enabled=True))
    assert conn.run("id -u", sudo=True).stdout == "0\n"
    assert conn.run("id -u", sudo=True).ok
    assert conn.stats.round_trips == 3  # one probe, then the two commands
