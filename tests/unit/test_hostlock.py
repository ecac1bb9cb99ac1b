"""The host's run lock (engine/hostlock.py): the command it runs, the busy
reason, timeouts with a fake connector, and real processes contending for a
lock file in a temp dir through the local connector."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Held, Session
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.hostlock import (
    EXCLUSIVE,
    LOCK_PATH,
    SHARED,
    HostBusy,
    HostLock,
    LockInfo,
    busy_reason,
    lock_command,
    lock_mode,
)
from gpuprov.errors import GpuprovError

# -- the command and the busy reason ---------------------------------------------


def test_apply_takes_the_lock_exclusive_and_read_only_commands_shared() -> None:
    assert lock_mode("apply") == EXCLUSIVE
    for command in ("check", "drift-check", "verify"):
        assert lock_mode(command) == SHARED


def test_lock_command_quotes_its_values_and_holds_on_stdin() -> None:
    info = LockInfo("apply", "ann@ctl", 1_700_000_000, 42)
    cmd = lock_command(info, 5, LOCK_PATH)
    assert isinstance(cmd, Command)
    shell = cmd.shell()
    assert shell.startswith("sh -c '")
    assert "flock -w" in shell and "flock -n" in shell and "exec cat >/dev/null" in shell
    assert shell.endswith(" gpuprov-lock /run/gpuprov/run.lock -x 5 "
                          "'command=apply who=ann@ctl since=1700000000 pid=42' 0 ''")
    shared = lock_command(LockInfo("drift-check", "a@b", 0, 1), 0, "/tmp/x").shell()
    assert " gpuprov-lock /tmp/x -s 0 'command=drift-check " in shared


def test_lock_info_round_trips_and_names_the_holder() -> None:
    info = LockInfo("apply", "ann@ctl", 1_700_000_000, 42)
    assert LockInfo.parse(info.line()) == info
    since = time.strftime("%H:%M", time.localtime(1_700_000_000))
    assert busy_reason(info.line()) == f"busy: apply by ann@ctl since {since} (pid 42)"


@pytest.mark.parametrize("line", ["", "garbage", "command=apply who=x since=soon pid=1"])
def test_an_unreadable_holder_line_still_says_busy(line: str) -> None:
    assert busy_reason(line) == "busy: another gpuprov run holds the host's lock"


# -- HostLock with a fake connector -----------------------------------------------


class FakeHeld(Held):
    def __init__(self, answer: str | None) -> None:
        super().__init__()
        self.answer = answer
        self.released = 0
        self.timeouts: list[float] = []

    def _receive(self, timeout: float) -> bytes:
        self.timeouts.append(timeout)
        if self.answer is None:
            raise TimeoutError
        answer, self.answer = self.answer, ""
        return answer.encode() + b"\n" if answer else b""

    def release(self) -> None:
        self.released += 1


class FakeConnector(Connector):
    def __init__(self, answer: str | None) -> None:
        super().__init__("gpu1")
        self.held = FakeHeld(answer)
        self.commands: list[tuple[Command, bool]] = []

    def connect(self) -> None:
        pass

    def run(self, command: Command | str, *, sudo: bool = False, stdin: object = None,
            timeout: float | None = None) -> CommandResult:
        raise AssertionError("the lock is taken by hold(), never run()")

    def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
        self.commands.append((command, sudo))
        return self.held

    def session(self) -> Session:
        return Session("ann")

    def close(self) -> None:
        pass


def test_locked_host_is_held_until_release_and_taken_as_root() -> None:
    conn = FakeConnector("locked")
    lock = HostLock(conn, "apply", wait=3)
    assert lock.acquire() is True
    [(command, sudo)] = conn.commands
    assert sudo is True and "/run/gpuprov/run.lock -x 3 " in command.shell()
    assert conn.held.released == 0
    lock.release()
    lock.release()
    assert conn.held.released == 1


def test_busy_host_fails_with_the_holders_name_and_lets_go_of_the_channel() -> None:
    holder = LockInfo("apply", "bob@ctl2", time.time(), 7)
    conn = FakeConnector("busy " + holder.line())
    with pytest.raises(HostBusy) as caught:
        HostLock(conn, "drift-check", wait=0).acquire()
    assert caught.value.message.startswith("busy: apply by bob@ctl2 since ")
    assert "waited 0s" in caught.value.message
    assert conn.held.released == 1


def test_the_host_may_take_the_lock_timeout_plus_a_grace_to_answer() -> None:
    conn = FakeConnector(None)
    with pytest.raises(GpuprovError, match="no answer while taking the run lock"):
        HostLock(conn, "apply", wait=12).acquire()
    assert conn.held.timeouts == [pytest.approx(42.0)]
    assert conn.held.released == 1


def test_a_host_without_flock_is_an_error_not_busy() -> None:
    conn = FakeConnector("error: flock (util-linux) is not installed")
    with pytest.raises(GpuprovError, match="flock") as caught:
        HostLock(conn, "apply").acquire()
    assert not isinstance(caught.value, HostBusy)


def test_a_connector_that_cannot_hold_runs_without_a_lock() -> None:
    class NoHold(FakeConnector):
        def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
            raise NotImplementedError

    assert HostLock(NoHold("locked"), "apply").acquire() is False


# -- real processes, a lock file in a temp dir -----------------------------------


def local() -> LocalConnector:
    return LocalConnector("localhost", Become(enabled=False))


def test_two_applies_exclude_each_other(tmp_path: Path) -> None:
    path = str(tmp_path / "gpuprov" / "run.lock")
    first = HostLock(local(), "apply", 0, path)
    assert first.acquire()
    assert LockInfo.parse(Path(path).read_text().strip()) == first.info
    with pytest.raises(HostBusy, match=r"busy: apply by \S+@\S+ since \d\d:\d\d"):
        HostLock(local(), "apply", 0, path).acquire()
    first.release()
    second = HostLock(local(), "apply", 0, path)
    assert second.acquire()
    second.release()


def test_drift_checks_share_the_lock_and_an_apply_excludes_them(tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    one, two = HostLock(local(), "drift-check", 0, path), HostLock(local(), "drift-check", 0, path)
    assert one.acquire() and two.acquire()
    with pytest.raises(HostBusy):
        HostLock(local(), "apply", 0, path).acquire()
    one.release()
    two.release()
    apply = HostLock(local(), "apply", 0, path)
    assert apply.acquire()
    with pytest.raises(HostBusy, match="busy: apply by"):
        HostLock(local(), "drift-check", 0, path).acquire()
    apply.release()


def test_lock_timeout_waits_that_long_then_fails(tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    holder = HostLock(local(), "apply", 0, path)
    assert holder.acquire()
    start = time.monotonic()
    with pytest.raises(HostBusy, match="waited 1s"):
        HostLock(local(), "apply", 1, path).acquire()
    assert 0.9 <= time.monotonic() - start < 10
    holder.release()


def test_a_waiter_gets_the_lock_as_soon_as_the_holder_lets_go(tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    holder = HostLock(local(), "apply", 0, path)
    assert holder.acquire()
    timer = threading.Timer(0.5, holder.release)
    timer.start()
    waiter = HostLock(local(), "apply", 20, path)
    start = time.monotonic()
    assert waiter.acquire()
    assert time.monotonic() - start < 10
    timer.join()
    waiter.release()


def test_a_controller_killed_while_holding_leaves_the_host_free(tmp_path: Path) -> None:
    path = str(tmp_path / "run.lock")
    script = (
        "import sys, time\n"
        "from gpuprov.connectors.base import Become\n"
        "from gpuprov.connectors.local import LocalConnector\n"
        "from gpuprov.engine.hostlock import HostLock\n"
        "conn = LocalConnector('localhost', Become(enabled=False))\n"
        f"lock = HostLock(conn, 'apply', 0, {path!r})\n"
        "assert lock.acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")
    controller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert controller.stdout is not None
    assert controller.stdout.readline().strip() == b"held"
    with pytest.raises(HostBusy):
        HostLock(local(), "apply", 0, path).acquire()
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    # The kernel closed the dead controller's pipe: the holder's `cat` ends and flock goes.
    nxt = HostLock(local(), "apply", 5, path)
    start = time.monotonic()
    assert nxt.acquire()
    assert time.monotonic() - start < 3
    nxt.release()


# -- the ssh connector's held channel, with a stand-in channel --------------------


class FakeChannel:
    def __init__(self, blocks: list[bytes | None]) -> None:
        self.blocks = blocks
        self.calls: list[str] = []

    def settimeout(self, timeout: float | None) -> None:
        self.calls.append(f"timeout {timeout is not None}")

    def recv(self, size: int) -> bytes:
        block = self.blocks.pop(0)
        if block is None:
            raise TimeoutError
        return block

    def shutdown_write(self) -> None:
        self.calls.append("eof")

    def close(self) -> None:
        self.calls.append("close")


def test_held_channel_reads_its_first_line_across_packets_and_ends_with_eof() -> None:
    from gpuprov.connectors.ssh_channel import HeldChannel

    chan = FakeChannel([b"loc", b"ked\nmore", b""])
    held = HeldChannel(chan)  # type: ignore[arg-type]
    assert held.next_line(5) == "locked"
    assert held.next_line(5) == "more"  # what came with the first line is kept
    held.release()
    assert chan.calls[-2:] == ["eof", "close"]
    assert HeldChannel(FakeChannel([b"busy x", b""])).next_line(5) == "busy x"  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match="no answer within 5s"):
        HeldChannel(FakeChannel([None])).next_line(5)  # type: ignore[arg-type]


def test_the_script_fed_to_the_lock_runs_once_it_is_held(tmp_path: Path) -> None:
    from gpuprov.facts.base import gather_script, parse_batch
    from gpuprov.facts.system import KernelRelease

    path = str(tmp_path / "run.lock")
    script, marker = gather_script([KernelRelease()])
    lock = HostLock(local(), "drift-check", 0, path)
    assert lock.acquire(script)
    assert lock.exit_code == 0
    assert parse_batch([KernelRelease()], lock.output, marker)[KernelRelease()]
    # the lock is still held after the script: an apply finds it busy
    with pytest.raises(HostBusy):
        HostLock(local(), "apply", 0, path).acquire("echo never")
    lock.release()
    # a busy host runs nothing of the script it was fed
    first = HostLock(local(), "apply", 0, path)
    assert first.acquire()
    marker_file = tmp_path / "ran"
    with pytest.raises(HostBusy):
        HostLock(local(), "apply", 0, path).acquire(f"touch {marker_file}")
    assert not marker_file.exists()
    first.release()
