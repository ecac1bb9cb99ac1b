"""Become logic (sudo.py) with a fake executor, plus one real-shell check
with a fake `sudo` on PATH that the password never reaches the command."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import Become
from gpuprov.connectors.local import LocalConnector
from gpuprov.connectors.sudo import (
    CHUNK_SIZE,
    MARKER_EXIT_CODE,
    Sudo,
    add_note,
    iter_stdin,
    split_command,
)
from gpuprov.errors import UnreachableHost


class FakeHost:
    """Answers the probe with `mode`, and the password check like sudo would."""

    def __init__(self, mode: str, password: str = "s3cret", validate_stderr: str = "") -> None:
        self.mode = mode
        self.password = password
        self.validate_stderr = validate_stderr
        self.calls: list[tuple[str, bytes]] = []

    def __call__(self, line: str, stdin: bytes) -> tuple[int, str, str]:
        self.calls.append((line, stdin))
        if "id -u" in line:
            time.sleep(0.01)  # widen the window for the concurrency test
            return 0, f"{self.mode}\n", ""
        assert line.startswith("LC_ALL=C sudo -S -k -p ''")
        if self.validate_stderr:
            return 1, "", self.validate_stderr
        if stdin == self.password.encode() + b"\n":
            return 0, "", ""
        return 1, "", "Sorry, try again.\nsudo: no password was provided\n" \
                      "sudo: 1 incorrect password attempt\n"


def sudo_for(host: FakeHost, **become: object) -> Sudo:
    return Sudo("web1", "deploy", Become(**become), host)  # type: ignore[arg-type]


def test_without_sudo_nothing_is_probed() -> None:
    host = FakeHost("nopasswd")
    line, prefix = sudo_for(host).prepare("echo 'hi there'", sudo=False)
    assert line == "sh -c 'echo '\"'\"'hi there'\"'\"''" and prefix == b""
    assert host.calls == []


def test_root_runs_without_sudo_and_probes_once() -> None:
    host = FakeHost("root")
    sudo = sudo_for(host)
    for _ in range(3):
        assert sudo.prepare("id -u", sudo=True) == ("sh -c 'id -u'", b"")
    assert len(host.calls) == 1


def test_passwordless_sudo() -> None:
    line, prefix = sudo_for(FakeHost("nopasswd")).prepare("apt-get update", sudo=True)
    assert line == "sudo -n -- sh -c 'apt-get update'" and prefix == b""


def test_password_is_validated_then_fed_on_stdin_never_argv() -> None:
    host = FakeHost("password")
    sudo = sudo_for(host, password="s3cret")
    line, prefix = sudo.prepare("cat > /etc/x", sudo=True)
    # The password line, then this command's marker (see test_marker_*).
    password, marker, rest = prefix.split(b"\n")
    assert password == b"s3cret" and rest == b""
    assert re.fullmatch(rb"gpuprov-marker-[0-9a-f]{32}", marker)
    assert line.startswith("sudo -S -k -p '' -- sh -c ")
    assert marker.decode() in line and "cat > /etc/x" in line
    assert sudo.prepare("cat > /etc/x", sudo=True)[1] != prefix  # a new marker each time
    assert host.calls[1][1] == b"s3cret\n"  # validated once, alone on stdin
    assert all("s3cret" not in call_line for call_line, _ in host.calls)
    assert len(host.calls) == 2  # no second validation


def test_password_needed_but_not_given() -> None:
    with pytest.raises(UnreachableHost) as info:
        sudo_for(FakeHost("password")).prepare("true", sudo=True)
    assert info.value.kind == "sudo" and "needs a password" in info.value.detail
    assert "--ask-become-pass" in (info.value.hint or "")


def test_wrong_password() -> None:
    with pytest.raises(UnreachableHost) as info:
        sudo_for(FakeHost("password"), password="nope").prepare("true", sudo=True)
    assert info.value.kind == "sudo"
    assert info.value.detail == "wrong sudo password for deploy@web1"
    assert "nope" not in str(info.value)


def test_password_rejected_mid_run_is_reported() -> None:
    sudo = sudo_for(FakeHost("password"), password="s3cret")
    sudo.prepare("true", sudo=True)
    sudo.check(1, "some ordinary failure\n")  # not a password problem: no error
    with pytest.raises(UnreachableHost, match="wrong sudo password"):
        sudo.check(1, "Sorry, try again.\nsudo: 1 incorrect password attempt\n")


def test_other_sudo_failures_are_passed_on() -> None:
    host = FakeHost("password", validate_stderr="deploy is not in the sudoers file.\n")
    with pytest.raises(UnreachableHost, match="not in the sudoers file") as info:
        sudo_for(host, password="s3cret").prepare("true", sudo=True)
    assert info.value.kind == "sudo"


def test_cannot_become_root_without_sudo() -> None:
    with pytest.raises(UnreachableHost, match="sudo is not installed") as info:
        sudo_for(FakeHost("nosudo")).prepare("true", sudo=True)
    assert info.value.kind == "sudo"


def test_become_disabled_runs_as_the_login_user_without_probing() -> None:
    host = FakeHost("nopasswd")
    line, prefix = sudo_for(host, enabled=False).prepare("true", sudo=True)
    assert line == "sh -c true" and prefix == b""
    assert host.calls == []


def test_parallel_first_use_probes_once() -> None:
    host = FakeHost("nopasswd")
    sudo = sudo_for(host)
    threads = [threading.Thread(target=sudo.prepare, args=("true", True)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(host.calls) == 1


def test_iter_stdin_chunks_bytes_files_and_prefix() -> None:
    data = b"x" * (CHUNK_SIZE * 2 + 5)
    assert b"".join(iter_stdin(data, b"pw\n")) == b"pw\n" + data
    assert max(len(c) for c in iter_stdin(data)) == CHUNK_SIZE
    assert b"".join(iter_stdin(io.BytesIO(data))) == data
    assert list(iter_stdin(None)) == [] and list(iter_stdin(None, b"p\n")) == [b"p\n"]


def test_helpers() -> None:
    assert add_note("", "n") == "n\n" and add_note("e", "n") == "e\nn\n"
    assert add_note("e\n", "n") == "e\nn\n"
    assert split_command("echo hi") == ("echo hi", "echo hi")


FAKE_SUDO = """#!/bin/sh
# Enough of sudo for the test: -n fails (password required), -S reads one
# line from stdin and checks it, then runs the command.
feed=no
while [ $# -gt 0 ]; do
    case "$1" in
        -n) echo "sudo: a password is required" >&2; exit 1 ;;
        -S) feed=yes ;;
        -p) shift ;;
        --) shift; break ;;
        -*) ;;
        *) break ;;
    esac
    shift
done
if [ "$feed" = yes ]; then
    IFS= read -r pw
    if [ "$pw" != "s3cret" ]; then
        echo "Sorry, try again." >&2; echo "sudo: 1 incorrect password attempt" >&2; exit 1
    fi
fi
exec "$@"
"""


def test_password_never_leaks_into_the_commands_stdin(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sudo", FAKE_SUDO), ("id", "#!/bin/sh\necho 1000\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def exec_raw(line: str, stdin: bytes) -> tuple[int, str, str]:
        proc = subprocess.run(["/bin/sh", "-c", line], input=stdin, capture_output=True,
                              env=env, timeout=10)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    sudo = Sudo("localhost", "me", Become(password="s3cret"), exec_raw)
    line, prefix = sudo.prepare("cat", sudo=True)
    assert exec_raw(line, prefix + b"payload\nline 2\n") == (0, "payload\nline 2\n", "")
    wrong = Sudo("localhost", "me", Become(password="bad"), exec_raw)
    with pytest.raises(UnreachableHost, match="wrong sudo password for me@localhost"):
        wrong.prepare("cat", sudo=True)


# sudo that stops asking mid-run: once the file named by $FAKE_SUDO_NOPASSWD
# exists (a NOPASSWD rule added by a role), -n works and -S reads nothing.
FAKE_SUDO_CHANGING = """#!/bin/sh
feed=no
while [ $# -gt 0 ]; do
    case "$1" in
        -n) [ -e "$FAKE_SUDO_NOPASSWD" ] || { echo "sudo: a password is required" >&2; exit 1; } ;;
        -S) feed=yes ;;
        -p) shift ;;
        --) shift; break ;;
        -*) ;;
        *) break ;;
    esac
    shift
done
if [ "$feed" = yes ] && [ ! -e "$FAKE_SUDO_NOPASSWD" ]; then
    IFS= read -r pw
    [ "$pw" = "$FAKE_SUDO_PASSWORD" ] || { echo "Sorry, try again." >&2; exit 1; }
fi
exec "$@"
"""


@pytest.fixture
def changing_sudo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake sudo whose password is a command that would create `pwned`;
    returns the file that, once created, makes it stop asking."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("sudo", FAKE_SUDO_CHANGING), ("id", "#!/bin/sh\necho 1000\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SUDO_NOPASSWD", str(tmp_path / "nopasswd"))
    monkeypatch.setenv("FAKE_SUDO_PASSWORD", f"touch {tmp_path / 'pwned'}")
    return tmp_path / "nopasswd"


def test_marker_keeps_the_password_from_running_when_sudo_stops_asking(
        changing_sudo: Path) -> None:
    pwned = changing_sudo.with_name("pwned")
    with LocalConnector(become=Become(password=os.environ["FAKE_SUDO_PASSWORD"])) as conn:
        first = conn.run("sh -s", sudo=True, stdin=b"echo first; cat\n")
        assert (first.exit_code, first.stdout) == (0, "first\n")  # cat: nothing left over
        changing_sudo.touch()  # NOPASSWD added between two commands
        second = conn.run("sh -s", sudo=True, stdin=b"echo second\n")
        assert (second.exit_code, second.stdout, second.stderr) == (0, "second\n", "")
    changing_sudo.unlink()
    with LocalConnector(become=Become(password=os.environ["FAKE_SUDO_PASSWORD"])) as conn:
        assert conn.run("true", sudo=True).ok
        changing_sudo.touch()
        stream = io.BytesIO(b"skipped\nx\ny\n")
        stream.readline()  # a rerun starts where the stream stood, not at 0
        assert conn.run("cat", sudo=True, stdin=stream).stdout == "x\ny\n"
    assert not pwned.exists()


def test_marker_refusal_is_rerun_once_in_the_new_mode(changing_sudo: Path) -> None:
    runs: list[str] = []

    def execute(line: str, chunks: Iterator[bytes]) -> tuple[int, str, str]:
        runs.append(line)
        proc = subprocess.run(["/bin/sh", "-c", line], input=b"".join(chunks),
                              capture_output=True, timeout=10)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def exec_raw(line: str, stdin: bytes) -> tuple[int, str, str]:
        return execute(line, iter([stdin]))

    sudo = Sudo("localhost", "me", Become(password=os.environ["FAKE_SUDO_PASSWORD"]), exec_raw)
    assert sudo.mode() == "password"
    changing_sudo.touch()
    runs.clear()
    assert sudo.run("sh -s", True, b"echo ok\n", execute) == (0, "ok\n", "")
    assert [line.split(" -- ")[0] for line in runs] == [
        "sudo -S -k -p ''", "sh -c " + shlex.quote(sudo_probe()), "sudo -n"]
    assert sudo.mode() == "nopasswd"
    assert not changing_sudo.with_name("pwned").exists()


def sudo_probe() -> str:
    from gpuprov.connectors import sudo as sudo_module
    return sudo_module._PROBE


def test_marker_refusal_with_a_stream_read_once_is_an_error(changing_sudo: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"echo never\n")
    os.close(write_fd)
    with LocalConnector(become=Become(password=os.environ["FAKE_SUDO_PASSWORD"])) as conn, \
            os.fdopen(read_fd, "rb") as pipe:
        assert conn.run("true", sudo=True).ok  # password mode found
        changing_sudo.touch()
        with pytest.raises(UnreachableHost, match="stopped asking for the password") as info:
            conn.run("sh -s", sudo=True, stdin=pipe)
        assert info.value.kind == "sudo"
        assert conn.run("echo again", sudo=True).stdout == "again\n"  # next run: nopasswd
    assert not changing_sudo.with_name("pwned").exists()


def test_marker_guard_refuses_anything_but_its_marker() -> None:
    line, prefix = Sudo("h", "u", Become(password="pw"), lambda *_: (0, "password\n", "")) \
        .prepare("echo ran", sudo=True)
    guarded = shlex.split(line)[-1]  # what sudo would run with sh -c
    for stdin in (b"pw\n", b"", b"pw\n" + prefix):
        proc = subprocess.run(["/bin/sh", "-c", guarded], input=stdin, capture_output=True)
        assert proc.returncode == MARKER_EXIT_CODE and proc.stdout == b""
        assert Sudo.refused(proc.returncode, proc.stderr.decode())
    ok = subprocess.run(["/bin/sh", "-c", guarded], input=prefix.split(b"\n", 1)[1],
                        capture_output=True)
    assert (ok.returncode, ok.stdout) == (0, b"ran\n")


def test_password_with_a_line_break_is_refused() -> None:
    with pytest.raises(UnreachableHost, match="line break"):
        sudo_for(FakeHost("password"), password="a\ntouch x").prepare("true", sudo=True)


def test_a_held_command_finds_out_how_to_become_root_in_its_own_round_trip(
        changing_sudo: Path) -> None:
    changing_sudo.touch()  # NOPASSWD
    with LocalConnector(become=Become()) as conn:
        held = conn.hold(Command("sh", "-s"), sudo=True, stdin=b"echo held; exit\n")
        assert held.next_line(5) == "held"
        held.release()
        assert conn.stats.round_trips == 1  # no probe of its own
        assert conn.run("echo again", sudo=True).stdout == "again\n"
        assert conn.stats.round_trips == 2


def test_a_held_command_where_sudo_wants_a_password_is_run_after_the_usual_probe(
        changing_sudo: Path) -> None:
    password = os.environ["FAKE_SUDO_PASSWORD"]
    with LocalConnector(become=Become(password=password)) as conn:
        held = conn.hold(Command("sh", "-s"), sudo=True, stdin=b"echo held; exit\n")
        assert held.next_line(5) == "held"
        held.release()
        # the try (ran nothing), the probe, the password check, the command
        assert conn.stats.round_trips == 4
    assert not changing_sudo.with_name("pwned").exists()
    with LocalConnector(become=Become()) as conn, \
            pytest.raises(UnreachableHost, match="needs a password"):
        conn.hold(Command("sh", "-s"), sudo=True, stdin=b"echo never\n")
