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
from collections.abc import Iterator
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


#: How the host itself finds out that its controller is gone when the link comes
#: back but the controller's FIN never arrives (its kernel drops an orphaned
#: socket early once ARP for the host fails): sshd's ClientAlive, which ends
#: the session, so the shells' traps remove their temp files and the run lock
#: goes. sshd_hardening sets it (300 s x 3, access-hardening.md); seconds here.
CLIENT_ALIVE = "/etc/ssh/sshd_config.d/00-test-clientalive.conf"


@pytest.fixture
def workdir(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[Path, list[FleetHost]]]:
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
        host.write_file(CLIENT_ALIVE, "ClientAliveInterval 2\nClientAliveCountMax 3\n")
        host.exec("service ssh reload >/dev/null")
    yield tmp_path, chosen
    for host in chosen:
        host.exec(f"rm -f {CLIENT_ALIVE} && service ssh reload >/dev/null", check=False)


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
                    # Back once -T 5 has declared the host unreachable (the
                    # run itself may go on for a while with the other host).
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
        # is valid, the interrupted write left no temp file (the dead session
        # ends, by the controller's FIN or by ClientAlive, and the shell's
        # EXIT trap removes it), and a plain run finishes.
        assert_nothing_lost(fleet, [victim, other], work)
    for host in (victim, other):
        host.exec("rm -rf /srv/cuttest")
