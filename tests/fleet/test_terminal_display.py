"""The live display in a real terminal (issue 17): `gpuprov apply --check` on
two fleet hosts and one that cannot be reached with a long error (its host key
is unknown: the person at the terminal is asked, says no, and gets a 300-odd
character refusal), run in a pseudo-terminal of 80 and of 120 columns
(pexpect), its output rendered as the terminal shows it (pyte). The final
screen: every host name whole, no state word cut, the recap last, nothing of
the live table left anywhere. Piped, with -vv: a line per host event from the
start, the commands run over real SSH, and a plain recap not cut to 80 columns."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pyte
import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

ROLE = """
from gpuprov.ops.command import command
from gpuprov.ops.files import file

def tasks(ctx):
    yield file("/srv/terminal-display-test", "managed\\n")
    # its guard runs with the facts, in check mode too: the live table is up
    # for a few refreshes (four a second) before the recap replaces it
    yield command("true", name="wait a little", unless="sleep 2; false")
"""
#: the unreachable host: a long name, so the host column is wide at 80 columns
GONE = "gpu-node-17.rack-b.cluster-a.example.org"
ROWS = 60
QUESTION = r"continue connecting \(yes/no\)\?"


@pytest.fixture(scope="module")
def work(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:3]
    assert len(chosen) == 3
    *reached, other = chosen
    work = tmp_path_factory.mktemp("terminal")
    inventory = fleet.inventory(reached)
    # a real host under another name, with a known_hosts of its own that does
    # not know its key: unreachable (host-key-unknown) unless a person says yes
    (work / "empty_known_hosts").write_text("")
    group = next(iter(inventory["all"]["children"].values()))
    group["hosts"][GONE] = {"ansible_host": other.address,
                            "ssh_known_hosts_file": str(work / "empty_known_hosts")}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    role = work / "roles" / "display"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text("# (no variables)\n{}\n")
    (work / "one.yml").write_text("- name: one file\n  hosts: all\n  roles: [display]\n")
    return work, reached


def in_terminal(work: Path, columns: int) -> tuple[list[str], int, bytes]:
    """The screen (each line as wide as the terminal) after `gpuprov apply
    --check` in a terminal `columns` wide, and its exit code; the host key
    question answered no; and what it wrote."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "GPUPROV_LOCK_PATH", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    out = io.BytesIO()
    child = pexpect.spawn(sys.executable, ["-m", "gpuprov.cli", "apply", "inventory.yml", "-p",
                                           "one.yml", "--check"],
                          cwd=str(work), env=env, dimensions=(ROWS, columns), timeout=300)
    child.logfile_read = out
    try:
        assert child.expect([QUESTION, pexpect.EOF]) == 0, out.getvalue().decode()
        child.sendline("no")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    screen = pyte.Screen(columns, ROWS)
    pyte.ByteStream(screen).feed(out.getvalue())
    return list(screen.display), child.exitstatus, out.getvalue()


@pytest.mark.parametrize("columns", [80, 120])
def test_the_final_screen_is_the_whole_recap(work: tuple[Path, list[FleetHost]],
                                             columns: int) -> None:
    path, reached = work
    display, code, raw = in_terminal(path, columns)
    # the live table was drawn while the run went on
    assert re.search(rb"host +state +task", re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", raw))
    lines = [line.rstrip() for line in display]
    shown = "\n".join(lines)
    # as printed: a line the terminal wrapped goes on in the next screen line
    flat = "".join(display)
    assert code == 4, shown                      # a host unreachable
    titles = [i for i, ln in enumerate(lines) if ln.startswith("gpuprov ") and " recap" in ln]
    assert len(titles) == 1, shown
    recap = [ln for ln in lines[titles[0]:] if ln]
    # the question came (and went) before: the recap is the last thing shown
    asked = [i for i, ln in enumerate(lines) if "(yes/no)? no" in ln]
    assert asked and asked[-1] < titles[0], shown
    # nothing of the live table anywhere: not above the recap, not after it
    assert not any(ln.split()[:3] == ["host", "state", "task"] for ln in lines), shown
    assert not any(word in ln.split() for ln in lines for word in ("running", "waiting")), \
        shown
    # a recap line per host, its name whole at the start, every count named in full
    # (under the name where a line would not fit the terminal), no line wrapped
    for name in [*(h.name for h in reached), GONE]:
        rows = [i for i, ln in enumerate(recap) if ln.split()[:1] == [name]]
        assert len(rows) == 1, (name, shown)
        counts = " ".join(recap[rows[0]:rows[0] + 2])
        assert "unreachable=" in counts and counts.split("skipped=")[1][0].isdigit(), shown
        assert all(len(ln) < columns for ln in recap[rows[0]:rows[0] + 2]), shown
    assert "…" not in "\n".join(recap) and "unre…" not in flat
    # the refusal in full, once, under the host's name said once
    assert f"unreachable {GONE}" in recap, shown
    assert flat.count("refusing to connect") == 1, shown
    assert shown.count(f"{GONE}: unreachable") == 0, shown


def test_piped_a_line_per_host_event_then_a_plain_recap_and_vv_commands(
        work: tuple[Path, list[FleetHost]]) -> None:
    path, reached = work
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "GPUPROV_LOCK_PATH", "TERM")}
    proc = subprocess.run([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml", "-p",
                           "one.yml", "--check", "-vv"], cwd=path, env=env,
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 4, out + proc.stderr
    lines = out.splitlines()
    names = [*(h.name for h in reached), GONE]
    # life from the first line: each host's start, before anything of a task
    started = [ln.split(" | ")[0] for ln in lines if ln.endswith(" | started one file")]
    assert sorted(started) == sorted(names), out
    # -vv over real SSH: the commands run, numbered by the host's round trips
    for host in reached:
        trips = [ln for ln in lines if ln.startswith(f"{host.name} | #")]
        assert any("(held)" in ln for ln in trips), out          # the run lock
        done = next(ln for ln in lines if ln.startswith(f"{host.name} | done: "))
        assert done.endswith("s)") and "round trip" in done, out
    assert f"{GONE} | unreachable | host-key-unknown: " in out
    # the recap: plain, one line per host however long (no 80-column table)
    start = lines.index("gpuprov check recap (check mode)")
    for name in names:
        row = next(ln for ln in lines[start:] if ln.split()[:1] == [name]).split()
        assert [cell.split("=")[0] for cell in row[1:6]] == [
            "ok", "changed", "failed", "unreachable", "skipped"], out
    assert "…" not in out and "\x1b" not in out
    # the run's summary line ends it (issue 17's exit-code part: counts and the code)
    assert " 1 unreachable in " in lines[-1] and lines[-1].endswith("-> exit 4 (unreachable)")
