"""One run per host at a time, over real SSH (issue 15): two applies started
at once on the same hosts (one refuses as busy, or waits; never interleaved),
a drift-check during an apply says "busy", not drift, and a controller
SIGKILLed while it holds the lock leaves the host free for the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

ROLE = """
from gpuprov.ops.command import command
from gpuprov.ops.files import directory, file


def tasks(ctx):
    # a run's two writes, with a pause between: another run in between would show,
    # in the files and in the log of starts and ends (a paused run only, so a
    # plain run converges)
    run_id, pause = ctx.vars["run_id"], int(ctx.vars["pause"])
    yield directory("/srv/locktest")
    if pause:
        yield command(f"echo {run_id} start >>/srv/locktest/log", name="log start")
    yield file("/srv/locktest/a", run_id + "\\n")
    if pause:
        yield command(f"sleep {pause}", name="pause")
    yield file("/srv/locktest/b", run_id + "\\n")
    if pause:
        yield command(f"echo {run_id} end >>/srv/locktest/log", name="log end")
"""


def gpuprov(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TERM", None)
    env.pop("GPUPROV_LOCK_PATH", None)
    return subprocess.Popen([sys.executable, "-m", "gpuprov.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    """Exit code and stdout (stderr after it, marked)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + ("\n--- stderr ---\n" + err if err else "")


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> list[FleetHost]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:2]
    assert len(chosen) == 2
    return chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runlock")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(hosts), sort_keys=False))
    role = work / "roles" / "locktest"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text("# What both files say.\nrun_id: none\n"
                                       "# Seconds between the two writes.\npause: 0\n")
    (work / "lock.yml").write_text("- name: lock test\n  hosts: all\n  roles: [locktest]\n")
    return work


def apply(work: Path, run_id: str, pause: int, *extra: str) -> subprocess.Popen[str]:
    return gpuprov("apply", "inventory.yml", "-p", "lock.yml", "-e", f"run_id={run_id}",
                   "-e", f"pause={pause}", "--report", f"{run_id}.json", *extra, cwd=work)


def contents(host: FleetHost) -> tuple[str | None, str | None]:
    return host.read_file("/srv/locktest/a"), host.read_file("/srv/locktest/b")


def wait_for_holder(hosts: list[FleetHost], command: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # held: the file names the holder and flock -n cannot take it (what holds
        # it, `cat` or the shell waiting for a last script, is the lock script's business)
        if all(f"command={command} " in (h.read_file("/run/gpuprov/run.lock") or "")
               and h.exec("flock -n /run/gpuprov/run.lock true", check=False).returncode != 0
               for h in hosts):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {command} took the lock within {timeout:g}s")


def report_hosts(path: Path) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads(path.read_text())["hosts"]}


BOTH_FILES = {"file /srv/locktest/a", "file /srv/locktest/b"}


def log_runs(host: FleetHost) -> list[str]:
    """The run ids in the host's log of starts and ends; AssertionError if two interleave."""
    lines = (host.read_file("/srv/locktest/log") or "").split()
    pairs = list(zip(lines[0::2], lines[1::2], strict=True))
    runs = []
    for start, end in (zip(pairs[0::2], pairs[1::2], strict=True)):
        assert start[1] == "start" and end == (start[0], "end"), (host.name, lines)
        runs.append(start[0])
    return runs


def changed_files(entry: dict) -> set[str]:
    return {c["resource"] for t in entry["tasks"] if t["status"] == "changed"
            for c in t.get("changes", []) if c["resource"].startswith("file /srv/locktest/")}


def nothing_lost(fleet: Fleet, hosts: list[FleetHost], work: Path, run_id: str) -> None:
    assert_nothing_lost(fleet, hosts, work, "-p", "lock.yml", "-e", f"run_id={run_id}",
                        "-e", "pause=0")


def test_two_applies_at_once_one_refuses_as_busy_and_nothing_interleaves(
        fleet: Fleet, workdir: Path, hosts: list[FleetHost]) -> None:
    with injected("two operators at once", detail="no --lock-timeout: one refuses as busy"):
        for host in hosts:
            host.exec("rm -f /srv/locktest/log")
        first, second = apply(workdir, "A", 8), apply(workdir, "B", 8)
        (code_a, out_a), (code_b, out_b) = finish(first), finish(second)
        codes = sorted([code_a, code_b])
        # per host one of them wins; a host's loser fails as busy (exit 2)
        assert 2 in codes, out_a + out_b
        for host in hosts:
            a, b = contents(host)
            assert a == b and a in ("A\n", "B\n"), (host.name, a, b)
            winner = a.strip()
            loser = "B" if winner == "A" else "A"
            assert log_runs(host) == [winner], host.name
            lost = report_hosts(workdir / f"{loser}.json")[host.name]
            won = report_hosts(workdir / f"{winner}.json")[host.name]
            # the refused one says busy and nothing else: no change, no other failure
            assert "busy: apply by " in lost["error"], lost
            assert lost["changed"] == 0, lost
            assert not any(t["status"] == "changed" for t in lost["tasks"]), lost
            assert all("busy" in (t.get("error") or "busy") for t in lost["tasks"]), lost
            # the winner's report has its real changes
            assert "busy" not in json.dumps(won), won
            assert changed_files(won) == BOTH_FILES, won
        assert "busy: apply by" in out_a + out_b
        nothing_lost(fleet, hosts, workdir, "A")


def test_two_applies_at_once_with_a_lock_timeout_run_one_after_the_other(
        fleet: Fleet, workdir: Path, hosts: list[FleetHost]) -> None:
    with injected("two operators at once", detail="--lock-timeout: one waits"):
        for host in hosts:
            host.exec("rm -f /srv/locktest/log")
        first = apply(workdir, "H", 4, "--lock-timeout", "120")
        second = apply(workdir, "I", 4, "--lock-timeout", "120")
        (code_h, out_h), (code_i, out_i) = finish(first), finish(second)
        assert (code_h, code_i) == (0, 0), out_h + out_i
        for host in hosts:
            # both ran whole, one after the other; the files hold the later one's id
            order = log_runs(host)
            assert sorted(order) == ["H", "I"], (host.name, order)
            assert contents(host) == (f"{order[1]}\n",) * 2, host.name
            for run_id in order:
                # each report's changes are real: the files changed from the
                # earlier run's content to this one's
                entry = report_hosts(workdir / f"{run_id}.json")[host.name]
                assert "busy" not in json.dumps(entry), entry
                assert changed_files(entry) == BOTH_FILES, entry
            later = report_hosts(workdir / f"{order[1]}.json")[host.name]
            diffs = [c.get("diff", "") for t in later["tasks"] for c in t.get("changes", [])
                     if c["resource"] == "file /srv/locktest/a"]
            assert diffs and f"-{order[0]}\n" in diffs[0] and f"+{order[1]}\n" in diffs[0], later
        nothing_lost(fleet, hosts, workdir, "I")


def test_with_a_lock_timeout_the_second_apply_waits_and_then_runs_whole(
        workdir: Path, hosts: list[FleetHost]) -> None:
    first = apply(workdir, "C", 5)
    wait_for_holder(hosts, "apply")
    second = apply(workdir, "D", 0, "--lock-timeout", "120")
    (code_c, out_c), (code_d, out_d) = finish(first), finish(second)
    assert (code_c, code_d) == (0, 0), out_c + out_d
    for host in hosts:
        assert contents(host) == ("D\n", "D\n"), host.name


def test_a_drift_check_during_an_apply_reports_busy_not_drift(
        workdir: Path, hosts: list[FleetHost]) -> None:
    running = apply(workdir, "E", 15)
    wait_for_holder(hosts, "apply")
    check = gpuprov("drift-check", "inventory.yml", "-p", "lock.yml", "-e", "run_id=E",
                    "-e", "pause=0", "--format", "json", cwd=workdir)
    out, err = check.communicate(timeout=300)
    # a busy host failed to be checked: 2 (issue 17: it was 1), never drift (3)
    assert check.returncode == 2, out + err
    data = json.loads(out)
    assert data["in_sync"] is False
    assert (data["exit_code"], data["status"]) == (2, "failed")
    assert data["summary"]["failed"] == len(hosts) and data["summary"]["drifted"] == 0
    for host in hosts:
        entry = data["hosts"][host.name]
        assert entry["drift"] == [], entry
        assert entry["error"].startswith("busy: apply by "), entry
    code_e, out_e = finish(running)
    assert code_e == 0, out_e
    code, out = finish(gpuprov("drift-check", "inventory.yml", "-p", "lock.yml", "-e",
                               "run_id=E", "-e", "pause=0", cwd=workdir))
    assert code == 0, out


def test_a_controller_killed_holding_the_lock_leaves_the_host_free(
        workdir: Path, hosts: list[FleetHost]) -> None:
    killed = apply(workdir, "F", 60)
    wait_for_holder(hosts, "apply")
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=30)
    start = time.monotonic()
    code, out = finish(apply(workdir, "G", 0))
    assert code == 0, out
    assert "busy" not in out
    assert time.monotonic() - start < 60
    for host in hosts:
        assert contents(host) == ("G\n", "G\n"), host.name
