"""Report layer: live/plain progress, recap, diffs, JSON report, drift formats."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

import gpuprov
from gpuprov.command import MASK, Command, Secret
from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED, HostResult, RunResult, TaskResult
from gpuprov.errors import TaskFailed, UnreachableHost
from gpuprov.ops.base import Change, Diff, Step
from gpuprov.output import report
from gpuprov.output.drift import (
    drift_data,
    drift_json,
    drift_prometheus,
    drift_table,
    drift_table_text,
    escape_label,
)
from gpuprov.output.progress import Progress
from gpuprov.output.report import render_diffs, render_recap, write_json_report, write_text_atomic

SECRET = "hunter2"
FAIL_ERROR = str(TaskFailed("bad-1", "package nvidia-driver-580", "apt-get install -y x", 100,
                            "E: Unable to locate package x\nE: [bold]no[/bold] such thing"))
UNREACHABLE_ERROR = str(UnreachableHost("gone-1", "timeout", "no answer after 10s",
                                        hint="is the host up?"))


def daemon_change() -> Change:
    return Change("file /etc/docker/daemon.json", "update", "update daemon.json",
                  steps=[Step(Command("mv", "/tmp/x", "/etc/docker/daemon.json"))],
                  diff=Diff("/etc/docker/daemon.json", '{"a": 1}\n', '{"a": 2}\n'))


def secret_change() -> Change:
    return Change("file /etc/jupyter/passwd", "update", "set the jupyter password",
                  steps=[Step(Command("echo", Secret(SECRET)), stdin=f"{SECRET}\n".encode())],
                  diff=Diff("/etc/jupyter/passwd", "old-hash\n", f"{SECRET}\n", secret=True))


def driver_change() -> Change:
    return Change("package nvidia-driver-580", "install", "install nvidia-driver-580",
                  unknown="depends on the NVIDIA apt repo", reboot_required=True)


def make_run(command: str = "apply") -> RunResult:
    run = RunResult(command, check=command != "apply", started=1000.0, finished=1012.5)
    ok = run.host("ok-1")
    ok.tasks = [TaskResult("base", "sysctl", OK), TaskResult("base", "motd", SKIPPED)]
    ok.seconds, ok.connections, ok.round_trips = 1.25, 1, 3
    chg = run.host("chg-1")
    chg.tasks = [TaskResult("base", "sysctl", OK),
                 TaskResult("docker", "daemon.json", CHANGED, [daemon_change()]),
                 TaskResult("jupyter", "password", CHANGED, [secret_change(), driver_change()])]
    chg.seconds, chg.reboot_pending, chg.connections, chg.round_trips = 2.5, True, 1, 7
    bad = run.host("bad-1")
    bad.tasks = [TaskResult("base", "sysctl", OK),
                 TaskResult("nvidia_driver", "package nvidia-driver-580", FAILED,
                            error=FAIL_ERROR)]
    bad.seconds = 3.0
    gone = run.host("gone-1")
    gone.unreachable, gone.seconds = UNREACHABLE_ERROR, 10.0
    return run


def plain_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=120), buf


def replay(progress: Progress, run: RunResult) -> None:
    progress.play_started("site", list(run.hosts))
    for h in run.hosts.values():
        progress.host_started(h.host)
        for task in h.tasks:
            progress.task_finished(h.host, task)
        progress.host_finished(h)


# -- progress ---------------------------------------------------------------------

def test_plain_progress_prints_only_events_that_matter() -> None:
    console, buf = plain_console()
    with Progress(console) as progress:
        replay(progress, make_run())
    # the host's name once, at the start of the line, not again in its own error
    fail_lines = ["    " + ln for ln in FAIL_ERROR.removeprefix("bad-1: ").splitlines()]
    assert buf.getvalue().splitlines() == [
        "ok-1 | started site",
        "ok-1 | done: 1 ok, 0 changed, 1 skipped (1.2s)",
        "chg-1 | started site",
        "chg-1 | changed | docker: daemon.json — update daemon.json",
        "chg-1 | changed | jupyter: password — set the jupyter password",
        "chg-1 | changed | jupyter: password — install nvidia-driver-580"
        " (unknown: depends on the NVIDIA apt repo)",
        "chg-1 | done: 1 ok, 2 changed, reboot pending (2.5s)",
        "bad-1 | started site",
        "bad-1 | failed | nvidia_driver: package nvidia-driver-580",
        *fail_lines,
        "bad-1 | done: 1 ok, 0 changed, 1 failed (3.0s)",
        "gone-1 | started site",
        "gone-1 | unreachable | timeout: no answer after 10s",
        "      hint: is the host up?",
    ]


def test_plain_progress_verbose_shows_ok_tasks_and_play() -> None:
    console, buf = plain_console()
    with Progress(console, verbose=1) as progress:
        replay(progress, make_run())
    lines = buf.getvalue().splitlines()
    assert lines[0] == "PLAY | site (4 hosts)"
    assert "ok-1 | ok | base: sysctl" in lines
    assert "ok-1 | skipped | base: motd" in lines
    assert "bad-1 | ok | base: sysctl" in lines


def test_plain_progress_diff_is_indented_and_secret_masked() -> None:
    console, buf = plain_console()
    with Progress(console, diff=True) as progress:
        replay(progress, make_run())
    out = buf.getvalue()
    assert SECRET not in out
    lines = out.splitlines()
    i = lines.index("chg-1 | changed | docker: daemon.json — update daemon.json")
    assert lines[i + 1:i + 6] == [
        "    --- /etc/docker/daemon.json",
        "    +++ /etc/docker/daemon.json",
        "    @@ -1 +1 @@",
        '    -{"a": 1}',
        '    +{"a": 2}',
    ]
    assert f"    {MASK} (secret content changed)" in lines


def test_plain_progress_message_and_markup_is_literal() -> None:
    console, buf = plain_console()
    progress = Progress(console)
    progress.message("ws-[1]", "rebooting, waiting for it to come back")
    progress.host_finished(HostResult("ws-[1]", error="facts: [red]boom[/red]\nline two"))
    progress.close()
    assert buf.getvalue().splitlines() == [
        "ws-[1] | rebooting, waiting for it to come back",
        "ws-[1] | failed | facts: [red]boom[/red]",
        "    line two",
        "ws-[1] | done: 0 ok, 0 changed, 1 failed (0.0s)",
    ]


def test_plain_progress_long_lines_are_not_wrapped() -> None:
    console, buf = plain_console()
    progress = Progress(console)
    long_summary = "x" * 300
    progress.task_finished("h", TaskResult("r", "t", CHANGED,
                                           [Change("file /x", "update", long_summary)]))
    assert buf.getvalue() == f"h | changed | r: t — {long_summary}\n"


def test_live_progress_from_threads() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120, height=40)
    run = make_run()
    progress = Progress(console, verbose=1, diff=True)
    assert progress.live
    progress.play_started("site", list(run.hosts))

    def work(h: HostResult) -> None:
        progress.host_started(h.host)
        for _ in range(40):       # events for ~0.4 s: Live's refresh thread runs meanwhile
            progress.message(h.host, "working")
            time.sleep(0.01)
        for task in h.tasks:
            progress.task_finished(h.host, task)
        progress.host_finished(h)

    threads = [threading.Thread(target=work, args=(h,)) for h in run.hosts.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "deadlock between Progress and Live"
    table = progress.table()
    progress.close()
    cells = {c.header: [str(x) for x in c._cells] for c in table.columns}
    assert cells["host"] == ["ok-1", "chg-1", "bad-1", "gone-1"]
    assert cells["state"] == ["done", "done", "failed", "unreachable"]
    assert cells["changed"] == ["0", "2", "0", "0"]
    assert cells["failed"] == ["0", "0", "1", "0"]
    out = buf.getvalue()
    # With -v changes are printed above the table; a failure is a row's state
    # and its error waits for the recap (once, in full); diffs wait for
    # render_diffs(), they would scroll the table away.
    assert "exit code: 100" not in out and "hint: is the host up?" not in out
    assert "docker: daemon.json — update daemon.json" in out
    assert "+++ /etc/docker/daemon.json" not in out
    assert SECRET not in out


def test_live_counts_add_up_over_plays() -> None:
    # The executor hands host_finished one play's HostResult; the row keeps the run's totals.
    progress = Progress(Console(file=io.StringIO(), force_terminal=True, width=120))
    for play in ("one", "two"):
        progress.play_started(play, ["h"])
        progress.host_started("h")
        task = TaskResult("r", play, CHANGED, [Change("file /x", "update", "x")])
        progress.task_finished("h", task)
        progress.host_finished(HostResult("h", tasks=[task], seconds=1.0))
    progress.host_started("h")
    progress.host_finished(HostResult("h", error="h: facts script failed"))
    table = progress.table()
    progress.close()
    cells = {c.header: [str(x) for x in c._cells] for c in table.columns}
    assert cells["changed"] == ["2"]
    assert cells["failed"] == ["1"]
    assert cells["state"] == ["failed"]


def test_live_table_shows_only_active_hosts_when_too_many() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, height=12)
    progress = Progress(console)
    hosts = [f"h{i}" for i in range(30)]
    progress.play_started("site", hosts)
    progress.host_started("h7")
    progress.close()
    table = progress.table()
    assert [str(c) for c in table.columns[0]._cells] == ["h7"]
    assert "1 running, 29 waiting (29 not shown)" in str(table.caption)


# -- recap --------------------------------------------------------------------------

def recap_text(run: RunResult, verbose: int = 0) -> str:
    console, buf = plain_console()
    render_recap(run, console, verbose=verbose)
    return buf.getvalue()


def row_of(text: str, host: str) -> list[str]:
    for line in text.splitlines():
        if line.split()[:1] == [host]:
            return line.split()
    raise AssertionError(f"no row for {host} in\n{text}")


def test_recap_rows_and_errors() -> None:
    # One plain line per host (Ansible's PLAY RECAP), no more a table: a
    # table is cut to 80 columns in a pipe and folds host names (issue 17).
    run = make_run()
    run.aborted = "max fail percentage 20% reached"
    text = recap_text(run)
    assert text.splitlines()[0] == "gpuprov apply recap"
    assert row_of(text, "ok-1") == ["ok-1", "ok=1", "changed=0", "failed=0", "unreachable=0",
                                    "skipped=1", "1.2s"]
    assert row_of(text, "chg-1") == ["chg-1", "ok=1", "changed=2", "failed=0", "unreachable=0",
                                     "skipped=0", "2.5s", "reboot", "pending"]
    assert row_of(text, "bad-1") == ["bad-1", "ok=1", "changed=0", "failed=1", "unreachable=0",
                                     "skipped=0", "3.0s"]
    assert row_of(text, "gone-1") == ["gone-1", "ok=0", "changed=0", "failed=0",
                                      "unreachable=1", "skipped=0", "10.0s"]
    # the summary line (output/summary.py; issue 17: counts of every outcome), last
    assert text.splitlines()[-1] == (
        "4 hosts: 1 ok, 1 changed (2 tasks), 1 failed, 1 unreachable in 12.5s")
    # The full error: command, exit code and stderr tail, markup kept literal.
    assert "command: apt-get install -y x" in text
    assert "exit code: 100" in text
    assert "E: [bold]no[/bold] such thing" in text
    # under the host's name, said once: not again inside its own message
    assert "unreachable gone-1\n    timeout: no answer after 10s\n      hint: is the host up?\n" \
        in text
    assert "failed bad-1\n    task 'package nvidia-driver-580' failed\n" in text
    assert text.count("gone-1") == 2 and text.count("bad-1") == 2
    assert "reboot needed, not done: chg-1" in text
    assert "run aborted: max fail percentage 20% reached" in text
    assert SECRET not in text


def test_recap_verbose_adds_connections_and_round_trips() -> None:
    text = recap_text(make_run(), verbose=1)
    assert row_of(text, "chg-1")[-8:] == ["2.5s", "1", "connection,", "7", "round", "trips",
                                          "reboot", "pending"]
    assert "round trip" not in recap_text(make_run())


def test_recap_counts_a_host_error_as_failed() -> None:
    run = RunResult("apply", check=False)
    run.host("h").error = "h: facts script failed"
    text = recap_text(run)
    assert row_of(text, "h")[:4] == ["h", "ok=0", "changed=0", "failed=1"]
    assert "failed h\n    facts script failed\n" in text
    assert "1 host: 0 ok, 0 changed, 1 failed, 0 unreachable" in text


# -- diffs --------------------------------------------------------------------------

def test_render_diffs_groups_by_host_and_masks() -> None:
    console, buf = plain_console()
    text = render_diffs(make_run(), console)
    assert text.startswith("=== chg-1: docker: daemon.json\n--- /etc/docker/daemon.json\n")
    assert "=== chg-1: jupyter: password\n" in text
    assert f"{MASK} (secret content changed)" in text
    assert SECRET not in text
    assert "ok-1" not in text and "bad-1" not in text
    assert text.count("===") == 2
    assert buf.getvalue() == text


# -- JSON report and atomic writes -------------------------------------------------------

def test_json_report_content_and_secret_masked(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json_report(path, make_run(), extra={"inventory": "inv.yml"})
    raw = path.read_text()
    assert SECRET not in raw
    data = json.loads(raw)
    assert data["gpuprov"] == gpuprov.__version__
    assert data["inventory"] == "inv.yml"
    assert data["summary"] == {"hosts": 4, "changed": 1, "failed": 1, "unreachable": 1,
                               "reboot_pending": 1}
    chg = next(h for h in data["hosts"] if h["host"] == "chg-1")
    secret = chg["tasks"][2]["changes"][0]
    assert secret["commands"] == [f"echo {MASK}"]
    assert MASK in secret["diff"]
    assert os.listdir(tmp_path) == ["report.json"]


def test_atomic_write_is_0600_whatever_the_umask_or_old_mode(tmp_path: Path) -> None:
    # deliberately changed (issue 14): reports hold diffs of root-only files, so
    # neither a permissive umask nor an existing file's wider mode opens them
    old = os.umask(0o002)
    try:
        write_text_atomic(tmp_path / "a.prom", "x 1\n")
        assert stat.S_IMODE((tmp_path / "a.prom").stat().st_mode) == 0o600
        (tmp_path / "a.prom").chmod(0o644)
        write_text_atomic(tmp_path / "a.prom", "x 2\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.prom").stat().st_mode) == 0o600
    assert (tmp_path / "a.prom").read_text() == "x 2\n"


def test_atomic_write_with_a_report_mode_for_a_monitor_group(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.prom", "x 1\n", report.parse_report_mode("0640"))
    assert stat.S_IMODE((tmp_path / "a.prom").stat().st_mode) == 0o640
    write_json_report(tmp_path / "r.json", make_run())
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["0666", "0755", "0400", "0604x", "rw"])
def test_report_mode_refuses_modes_others_could_write_or_run(text: str) -> None:
    with pytest.raises(ValueError):
        report.parse_report_mode(text)


@pytest.mark.parametrize("broken", ["json.dumps", "os.replace", "os.fsync"])
def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             broken: str) -> None:
    path = tmp_path / "report.json"
    path.write_text("old report\n")
    module, name = broken.split(".")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(getattr(report, module), name, boom)
    with pytest.raises(OSError, match="disk on fire"):
        write_json_report(path, make_run())
    monkeypatch.undo()
    assert path.read_text() == "old report\n"
    assert os.listdir(tmp_path) == ["report.json"]


# -- drift ---------------------------------------------------------------------------

def test_drift_json_structure() -> None:
    data = json.loads(drift_json(make_run("drift-check")))
    assert data["in_sync"] is False
    assert datetime.fromisoformat(data["checked_at"]).timestamp() == 1012.0  # whole seconds
    hosts = data["hosts"]
    assert list(hosts) == ["ok-1", "chg-1", "bad-1", "gone-1"]
    assert hosts["ok-1"] == {"status": "in_sync", "drift": [], "reboot_pending": False,
                             "error": None, "unreachable": None, "connections": 1,
                             "round_trips": 3, "profile": [], "not_reached": [],
                             "notes": []}
    assert (hosts["chg-1"]["connections"], hosts["chg-1"]["round_trips"]) == (1, 7)
    assert hosts["gone-1"]["status"] == "unreachable"
    assert hosts["gone-1"]["unreachable"] == UNREACHABLE_ERROR
    assert hosts["bad-1"]["status"] == "failed"
    assert "exit code: 100" in hosts["bad-1"]["error"]
    chg = hosts["chg-1"]
    assert chg["status"] == "drift" and chg["reboot_pending"] is True
    assert [d["resource"] for d in chg["drift"]] == [
        "file /etc/docker/daemon.json", "file /etc/jupyter/passwd", "package nvidia-driver-580"]
    assert chg["drift"][0]["diff"].startswith("--- /etc/docker/daemon.json")
    assert chg["drift"][2] == {"role": "jupyter", "task": "password",
                               "resource": "package nvidia-driver-580", "action": "install",
                               "summary": "install nvidia-driver-580",
                               "unknown": "depends on the NVIDIA apt repo"}
    assert SECRET not in json.dumps(data)


def test_drift_in_sync_only_when_every_host_checked_clean() -> None:
    run = RunResult("drift-check", check=True, finished=1.0)
    run.host("a").tasks = [TaskResult("base", "t", OK)]
    assert drift_data(run)["in_sync"] is True
    run.host("b").unreachable = "b: unreachable (dns): no such host"
    assert drift_data(run)["in_sync"] is False


def test_drift_table() -> None:
    console, buf = plain_console()
    drift_table(make_run("drift-check"), console)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "ok-1    in sync"
    assert lines[1] == "chg-1   DRIFT 3 resources, reboot pending"
    assert lines[2] == "          file /etc/docker/daemon.json — update daemon.json"
    assert lines[4] == ("          package nvidia-driver-580 — install nvidia-driver-580"
                        " (unknown: depends on the NVIDIA apt repo)")
    assert lines[5] == "bad-1   failed: bad-1: task 'package nvidia-driver-580' failed"
    assert "            exit code: 100" in lines
    assert "              E: [bold]no[/bold] such thing" in lines
    assert "gone-1  unreachable: gone-1: unreachable (timeout): no answer after 10s" in lines
    # every count, also the zeros, and the drifted resources (issue 17)
    assert lines[-1] == "4 hosts: 1 in sync, 1 drifted (3 resources), 1 failed, 1 unreachable"


def test_drift_table_text() -> None:
    run = make_run("drift-check")
    text = drift_table_text(run)
    assert text.splitlines()[0] == "ok-1    in sync"


SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:host|status)="((?:[^"\\\n]|\\[\\"n])*)"\})? (\S+)$')


def parse_prometheus(text: str) -> dict[str, dict[str | None, float]]:
    """A strict little parser: HELP+TYPE once, before the family's contiguous samples."""
    assert text.endswith("\n")
    families: dict[str, dict[str | None, float]] = {}
    helped: set[str] = set()
    typed: set[str] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"HELP twice for {name}"
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and name not in typed and kind == "gauge"
            typed.add(name)
            families[name] = {}
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, _, label, value = m.groups()
            assert name == current, f"{name} sample outside its family"
            if label is not None:
                label = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g[1], g[1]), label)
            assert label not in families[name]
            families[name][label] = float(value)
    return families


def test_drift_prometheus() -> None:
    fams = parse_prometheus(drift_prometheus(make_run("drift-check")))
    assert fams["gpuprov_drift_resources"] == {"ok-1": 0, "chg-1": 3, "bad-1": 0}
    assert fams["gpuprov_host_in_sync"] == {"ok-1": 1, "chg-1": 0, "bad-1": 0, "gone-1": 0}
    assert fams["gpuprov_host_unreachable"] == {"ok-1": 0, "chg-1": 0, "bad-1": 0, "gone-1": 1}
    assert fams["gpuprov_host_failed"] == {"ok-1": 0, "chg-1": 0, "bad-1": 1, "gone-1": 0}
    assert fams["gpuprov_reboot_pending"] == {"ok-1": 0, "chg-1": 1, "bad-1": 0, "gone-1": 0}
    assert fams["gpuprov_drift_check_timestamp_seconds"] == {None: 1012.5}
    assert fams["gpuprov_drift_check_duration_seconds"] == {None: 12.5}


def test_prometheus_label_escaping() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    name = 'we"ird\\host\nname'
    run = RunResult("drift-check", check=True, started=5.0, finished=6.0)
    run.host(name)
    text = drift_prometheus(run)
    assert 'gpuprov_host_in_sync{host="we\\"ird\\\\host\\nname"} 1.0\n' in text
    assert parse_prometheus(text)["gpuprov_host_in_sync"] == {name: 1}
