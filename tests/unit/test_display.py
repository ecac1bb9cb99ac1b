"""The live display and the piped output (issue 17): fixed columns that never
break at any width, the final frame is the recap, a plain line per host event
from the start, a plain recap, and -vv / -vvv (commands, facts scripts, raw
output) with secrets masked."""

from __future__ import annotations

import grp
import io
import os
import pwd
import textwrap
from pathlib import Path

import pyte
import pytest
from rich.console import Console

from gpuprov.command import MASK, Command, Secret
from gpuprov.connectors.base import Become, Connector
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.results import FAILED, OK, HostResult, RunResult, TaskResult
from gpuprov.errors import UnreachableHost
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import load_playbook, resolve_roles
from gpuprov.output.progress import Progress, column_widths
from gpuprov.output.report import render_recap

LONG_HOST = "gpu-node-17.rack-b.cluster-a.example.org"
#: an unknown host key says a lot: the fingerprint, the file, the hint (~300 chars)
LONG_ERROR = str(UnreachableHost(
    "gone-1", "host-key-unknown",
    "admin@10.213.7.99:22 offered an ssh-ed25519 key SHA256:" + "x" * 43 + " that is not in "
    "/home/operator/.config/gpuprov/known_hosts (nor in ~/.ssh/known_hosts); refusing to "
    "connect to a host whose key nobody has confirmed",
    hint="check the fingerprint out of band, then run gpuprov onboard or pass "
         "--accept-new-host-keys"))
HOSTS = ["gpu-01", LONG_HOST, "gone-1"]


def make_run() -> RunResult:
    run = RunResult("apply", check=False, started=1000.0, finished=1004.0)
    ok = run.host("gpu-01")
    ok.tasks = [TaskResult("base", "sysctl", OK)] * 12
    ok.seconds = 3.1
    bad = run.host(LONG_HOST)
    bad.tasks = [TaskResult("base", "sysctl", OK),
                 TaskResult("nvidia_driver", "package nvidia-driver-580", FAILED,
                            error=f"{LONG_HOST}: task 'package nvidia-driver-580' failed\n"
                                  "  exit code: 100")]
    bad.seconds = 2.0
    gone = run.host("gone-1")
    gone.unreachable, gone.seconds = LONG_ERROR, 0.4
    return run


def drive(progress: Progress, run: RunResult) -> None:
    progress.play_started("site: every GPU host of the lab and the cluster", list(run.hosts))
    for h in run.hosts.values():
        progress.host_started(h.host)
        for task in h.tasks:
            progress.task_finished(h.host, task)
        progress.host_finished(h)


def render(progress: Progress, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(progress.table())
    return console.export_text().splitlines()


# -- the live table -----------------------------------------------------------------

@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_live_table_keeps_host_and_state_whole_and_cuts_the_task(width: int) -> None:
    progress = Progress(Console(file=io.StringIO(), force_terminal=True, width=width,
                                height=30))
    drive(progress, make_run())
    progress.close()
    lines = render(progress, width)
    # one line per row, none wider than the terminal: a wrapped line breaks the frame
    assert len(lines) == 1 + 1 + 3 + 1, lines    # title, header, rows, caption
    assert all(len(line) <= width for line in lines), lines
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert set(rows) == set(HOSTS)
    assert rows["gone-1"].split()[1] == "unreachable"
    assert rows[LONG_HOST].split()[1] == "failed"
    assert rows["gpu-01"].split()[1] == "done"
    assert "gone-1: " not in rows["gone-1"] and "hint" not in "\n".join(lines)
    if width < 80:
        # no room for a task column: host and state stay whole all the same
        assert lines[1].split() == ["host", "state"]
        return
    # the error's first line, cut with an ellipsis; its host's name not repeated
    assert "unreachable  host-key-" in rows["gone-1"] and "…" in rows["gone-1"]
    if width >= 120:
        assert lines[1].split() == ["host", "state", "task", "ok", "changed", "failed",
                                    "elapsed"]
        assert rows["gone-1"].endswith("0.4s")


def test_column_widths_drop_counting_columns_from_the_right_never_host_or_state() -> None:
    cells = [{"ok": "12", "changed": "0", "failed": "0", "elapsed": "3.1s"}]
    assert list(column_widths(120, ["gpu-01"], cells)) == [
        "host", "state", "task", "ok", "changed", "failed", "elapsed"]
    assert column_widths(120, ["gpu-01"], cells)["state"] == len("unreachable")
    narrow = column_widths(80, [LONG_HOST], cells)
    assert list(narrow) == ["host", "state", "task", "ok"]
    assert narrow["host"] == len(LONG_HOST)
    assert list(column_widths(60, [LONG_HOST], cells)) == ["host", "state"]


def screen_after(output: str, width: int, height: int = 24) -> list[str]:
    """What a terminal shows after `output` (rich writes \\n; a tty adds the \\r)."""
    screen = pyte.Screen(width, height)
    screen.set_mode(pyte.modes.LNM)
    pyte.Stream(screen).feed(output)
    return [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("width", [80, 120])
def test_the_final_frame_is_the_recap(width: int) -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=width, height=24)
    run = make_run()
    with Progress(console) as progress:
        drive(progress, run)
        progress._live_display.refresh()  # type: ignore[union-attr]  # a frame drawn
    render_recap(run, console)
    shown = [line for line in screen_after(buf.getvalue(), width) if line]
    assert shown[0] == "gpuprov apply recap"       # nothing of the live table above it
    assert not any("state" in line or "running" in line for line in shown), shown
    for host in HOSTS:
        # at 80 columns a line would not fit: each host's counts under its name
        at = shown.index(host) if width == 80 else next(
            i for i, line in enumerate(shown) if line.startswith(host + " "))
        counts = shown[at + 1] if width == 80 else shown[at]
        assert counts.split()[-6:-1] == [f"{k}={n}" for k, n in zip(
            ("ok", "changed", "failed", "unreachable", "skipped"),
            {"gpu-01": (12, 0, 0, 0, 0), LONG_HOST: (1, 0, 1, 0, 0),
             "gone-1": (0, 0, 0, 1, 0)}[host], strict=True)], shown
        assert all(len(line) < width for line in shown[at:at + 2])
    # the error in full, once, under its host's name said once
    text = "\n".join(shown)
    assert text.count("refusing to") == 1 and text.count("gone-1") == 2
    assert "…" not in text


def test_a_question_is_asked_with_the_live_table_out_of_the_way() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=80, height=24)
    progress = Progress(console)
    progress.play_started("site", HOSTS)
    progress.host_started("gpu-01")
    live = progress._live_display
    assert live is not None and live.is_started
    seen: list[bool] = []

    def ask(question: str) -> bool:
        seen.append(live.is_started)
        return False

    asked = progress.asking(ask)
    assert asked is not None and asked("unknown host key: continue?") is False
    assert seen == [False]          # stopped (and cleared: transient) while asking
    # and back afterwards, a new one: the old one would first go up over its
    # last frame's height, over the question
    again = progress._live_display
    assert again is not None and again is not live and again.is_started
    progress.close()
    assert not again.is_started
    # nothing to get out of the way when piped, nothing to wrap when nobody can be asked
    assert Progress(plain()[0]).asking(ask) is ask and progress.asking(None) is None


# -- piped ----------------------------------------------------------------------------

def plain() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=80), buf


def test_piped_a_line_per_host_event_from_the_start() -> None:
    console, buf = plain()
    progress = Progress(console)
    progress.play_started("site", HOSTS)
    progress.host_started("gpu-01")
    # life in the log before any task ended
    assert buf.getvalue() == "gpu-01 | started site\n"
    run = make_run()
    for h in run.hosts.values():
        if h.host != "gpu-01":
            progress.host_started(h.host)
        for task in h.tasks:
            progress.task_finished(h.host, task)
        progress.host_finished(h)
    progress.close()
    lines = buf.getvalue().splitlines()
    assert all(line.split(" | ")[0] in HOSTS for line in lines if not line.startswith(" "))
    assert "gpu-01 | done: 12 ok, 0 changed (3.1s)" in lines
    assert f"{LONG_HOST} | failed | nvidia_driver: package nvidia-driver-580" in lines
    assert f"{LONG_HOST} | done: 1 ok, 0 changed, 1 failed (2.0s)" in lines
    unreachable = [ln for ln in lines if ln.startswith("gone-1 | unreachable | ")]
    assert unreachable == ["gone-1 | unreachable | host-key-unknown: " + LONG_ERROR.split(
        "(host-key-unknown): ", 1)[1].split("\n")[0]]     # one line, never wrapped at 80


def test_piped_recap_is_plain_and_never_cuts_a_host_or_a_state() -> None:
    console, buf = plain()
    run = make_run()
    render_recap(run, console)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "gpuprov apply recap"
    width = len(LONG_HOST)
    assert lines[1] == ("gpu-01".ljust(width) + "  ok=12 changed=0 failed=0 unreachable=0 "
                        "skipped=0  3.1s")
    assert lines[2] == (LONG_HOST + "  ok=1  changed=0 failed=1 unreachable=0 skipped=0  2.0s")
    assert lines[3].startswith("gone-1".ljust(width) + "  ok=0  changed=0 failed=0 "
                               "unreachable=1 skipped=0")
    # the run's summary line (output/summary.py) ends the recap
    assert lines[-1] == "3 hosts: 1 ok, 0 changed, 1 failed, 1 unreachable in 4.0s"
    assert "…" not in buf.getvalue() and "\x1b" not in buf.getvalue()


def test_recap_says_one_host() -> None:
    console, buf = plain()
    run = RunResult("apply", check=False, started=1.0, finished=2.0)
    run.hosts["h"] = HostResult("h", seconds=1.0)
    render_recap(run, console)
    assert "1 host: 1 ok, 0 changed, 0 failed, 0 unreachable in 1.0s" in buf.getvalue()


# -- -vv and -vvv ---------------------------------------------------------------------

SECRET = "s3cr3t-Value-17"
ROLE = """
from gpuprov.command import Command
from gpuprov.ops.command import command
from gpuprov.ops.files import file

def tasks(ctx):
    yield file(ctx.vars["out_dir"] + "/" + ctx.host.name + ".txt", "hello\\n",
               owner=ctx.vars["me"], group=ctx.vars["mygroup"])
    # the secret on the command line (masked by Command) and in its output
    yield command(Command("echo", "token", ctx.vars["db_password"]), sudo=False,
                  name="say the token")
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    role = tmp_path / "roles" / "traced"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(textwrap.dedent(f"""\
        # Where files go.
        out_dir: {tmp_path / 'out'}
        # Owner of the files.
        me: {pwd.getpwuid(os.getuid()).pw_name}
        # Group of the files.
        mygroup: {grp.getgrgid(os.getgid()).gr_name}
        # A secret: never shown.
        db_password: {SECRET}
        """))
    (tmp_path / "site.yml").write_text("- name: traced\n  hosts: all\n  roles: [traced]\n")
    (tmp_path / "inventory.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
        "  hosts:\n    h1:\n")
    return tmp_path


def local(host: Host, options: ConnectOptions) -> Connector:
    return LocalConnector(host.name, Become(enabled=False))


def traced_run(project: Path, verbose: int) -> list[str]:
    console, buf = plain()
    inventory = Inventory.load(project / "inventory.yml")
    plays = load_playbook(project / "site.yml")
    resolve_roles(plays, [project / "roles"])
    with Progress(console, verbose=verbose) as progress:
        options = RunOptions(trace=progress if verbose >= 2 else None)
        run = Executor(inventory, plays, list(inventory.hosts.values()), options, progress,
                       connector_factory=local).run("apply")
    assert not run.any_failed, buf.getvalue()
    out = buf.getvalue()
    assert SECRET not in out
    return out.splitlines()


def test_vv_shows_each_command_with_its_round_trip_and_the_count(project: Path) -> None:
    lines = traced_run(project, 2)
    commands = [ln for ln in lines if ln.startswith("h1 | #")]
    # numbered by the host's round trips, in order
    numbers = [int(ln.split(" | ")[1][1:]) for ln in commands]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers) >= 3
    assert any(ln.endswith(f"echo token {MASK} (exit 0)") for ln in commands), commands
    assert any("sh -s (exit 0)" in ln for ln in commands)    # the facts script's trip
    done = [ln for ln in lines if ln.startswith("h1 | done: ")]
    assert len(done) == 1 and f", {numbers[-1]} round trips (" in done[0], (done, numbers)
    # -vv shows no output and no script
    assert not any("stdout:" in ln or "script sent" in ln for ln in lines)


def test_vvv_adds_facts_script_and_raw_output_masked(project: Path) -> None:
    lines = traced_run(project, 3)
    text = "\n".join(lines)
    assert "h1 | facts | script sent:" in text
    # the echo's raw output, with the secret value masked
    i = next(i for i, ln in enumerate(lines) if ln.endswith(f"echo token {MASK} (exit 0)"))
    assert lines[i + 1:i + 3] == ["    stdout:", f"      token {MASK}"]


def test_local_connector_tells_its_trace_of_run_and_held_commands(tmp_path: Path) -> None:
    told: list[tuple[str, int | None, str, str]] = []
    conn = LocalConnector("h1", Become(enabled=False))
    conn.trace = lambda *event: told.append(event)
    conn.run(Command("echo", Secret(SECRET)))
    held = conn.hold(Command("cat"), stdin=b"x\n")
    assert held.next_line(5) == "x"
    held.release()
    # the command as displayed (Command masks its own secrets); the output as it
    # came (the engine's HostTrace masks the host's secret values in it)
    assert told == [(f"echo {MASK}", 0, f"{SECRET}\n", ""), ("cat", None, "", "")]


def test_no_trace_below_vv(project: Path) -> None:
    lines = traced_run(project, 1)
    assert lines[0] == "PLAY | traced (1 host)"
    assert not any(ln.startswith("h1 | #") for ln in lines)
