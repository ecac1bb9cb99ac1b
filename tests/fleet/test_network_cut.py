"""A host whose network is cut mid-apply (issue 15): with -T 5 the run ends
within a bounded time, that host is unreachable (exit 4) and the other one
converges; once the link is back nothing is lost (key login, sshd -t, no
temp file left, the next apply converges, drift-check is clean)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

BIG_ROLE = """
from gpuprov.ops.files import file

def tasks(ctx):
    for i in range(ctx.vars["count"]):
        yield file(f"/srv/cuttest/f{i}", ctx.vars["payload"] * ctx.vars["repeat"])
"""


@pytest.fixture
def workdir(fleet: Fleet, tmp_path: Path) -> tuple[Path, list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:2]
    assert len(chosen) == 2
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(chosen),
                                                           sort_keys=False))
    role = tmp_path / "roles" / "bigfiles"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(BIG_ROLE)
    (role / "defaults.yml").write_text(textwrap.dedent("""\
        # How many files, and what they hold.
        count: 6
        # One line of a file.
        payload: "content of a big managed file\\n"
        # Lines per file.
        repeat: 300000
        """))
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "site.yml").write_text(
        "- name: big files\n  hosts: all\n  roles: [bigfiles]\n")
    for host in chosen:
        host.exec("rm -rf /srv/cuttest && mkdir -p /srv/cuttest")
    return tmp_path, chosen


def test_a_host_cut_off_mid_apply_is_unreachable_fast_and_nothing_is_lost(
        fleet: Fleet, workdir: tuple[Path, list[FleetHost]]) -> None:
    work, (victim, other) = workdir
    with injected("network cut to one host mid-apply"):
        proc = subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml",
                                 "-T", "5", "--report", "cut.json"], cwd=work,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        cut = False
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                # a temp file beside a target: the victim is mid-write
                if victim.exec("ls -A /srv/cuttest | grep -q '^.gpuprov-'",
                               check=False).returncode == 0:
                    victim.exec("ip link set eth0 down")
                    cut = True
                    # Back before the controller's closed socket gives up
                    # retransmitting (its FIN is how the host learns the
                    # session is dead; the run itself may go on for a while
                    # with the other host): restored once -T 5 has declared
                    # the host unreachable.
                    restore = threading.Timer(10, victim.exec, ("ip link set eth0 up",),
                                              {"check": False})
                    restore.start()
                    break
                time.sleep(0.02)
            assert cut, "the run finished before the network could be cut"
            cut_at = time.monotonic()
            output, _ = proc.communicate(timeout=120)
            took = time.monotonic() - cut_at
        finally:
            if proc.poll() is None:
                proc.kill()
            if cut:
                restore.join()
            victim.exec("ip link set eth0 up", check=False)
        assert took < 60, f"the run took {took:.0f}s after the cut"
        assert proc.returncode == 4, output
        hosts = {h["host"]: h for h in json.loads((work / "cut.json").read_text())["hosts"]}
        assert hosts[victim.name]["status"] == "unreachable", hosts[victim.name]
        assert "(timeout)" in hosts[victim.name]["unreachable"], hosts[victim.name]
        assert hosts[other.name]["status"] in ("ok", "changed"), hosts[other.name]
        assert other.exec("ls /srv/cuttest").stdout.split() == [f"f{i}" for i in range(6)]

        # Nothing lost: once the link is back the host answers, its sshd config
        # is valid, the interrupted write left no temp file (the host's shell
        # notices the dead connection and its EXIT trap removes it), and a
        # plain run finishes.
        assert_nothing_lost(fleet, [victim, other], work)
    for host in (victim, other):
        host.exec("rm -rf /srv/cuttest")
