"""The dpkg lock held by another process on the host (issue 15), as
unattended-upgrades holds it on a fresh VM: held for 30 s, gpuprov's apt-get
waits (DPkg::Lock::Timeout) and then installs; held for longer than the lock
timeout, the task fails naming the lock, the holder's pid and command line and
what to do. Nothing is lost either way (key login, sshd -t, no temp file, dpkg
--audit clean, the next apply converges, drift-check 0)."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, gpuprov, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

PYTHON = "/usr/libexec/gpuprov-test-doubles/python3"
#: a stand-in for unattended-upgrade: takes the locks an apt frontend takes
#: (fcntl, as apt and dpkg do), says so, and holds them for argv[1] seconds
HOLDER = textwrap.dedent("""\
    import fcntl, os, sys, time
    locks = [open(p, "w") for p in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")]
    for f in locks:
        fcntl.lockf(f, fcntl.LOCK_EX)
    with open("/run/lock-holder.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(sys.argv[1]))
    """)
HOLDER_PATH = "/root/fake-unattended-upgrade"
PACKAGE = "mokutil"   # a small stand-in package (tests/standin_repo/packages.py)

ROLE = """
from gpuprov.ops import apt


def tasks(ctx):
    yield apt.packages("mokutil", lock_timeout=int(ctx.vars["apt_lock_timeout"]))
"""


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> Iterator[FleetHost]:
    chosen = next(h for h in fleet.hosts if h.variant == "default")
    chosen.write_file(HOLDER_PATH, HOLDER)
    # the host is shared with other fleet tests: what this file installs goes again
    had = chosen.exec("dpkg-query -W -f='${Package} ${Status}\\n' 2>/dev/null | "
                      "awk '$NF == \"installed\" {print $1}'").stdout.split()
    yield chosen
    extra = [p for p in (PACKAGE, "gpuprov-test-doubles") if p not in had]
    chosen.exec(f"rm -f {HOLDER_PATH}; apt-get purge -y -qq {' '.join(extra)} >/dev/null; "
                "apt-get update -qq", check=False)


@pytest.fixture(scope="module")
def work(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dpkglock")
    (tmp / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]), sort_keys=False))
    (tmp / "playbooks").mkdir()
    (tmp / "playbooks" / "site.yml").write_text(
        "- name: dpkg lock\n  hosts: all\n  roles: [aptlock]\n")
    role = tmp / "roles" / "aptlock"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(
        "# seconds apt-get waits for the dpkg lock\napt_lock_timeout: 120\n")
    return tmp


def hold_lock(host: FleetHost, seconds: int) -> int:
    """Start the holder in the host (detached), wait until it holds the locks; its pid."""
    host.exec("rm -f /run/lock-holder.pid")
    host.exec(f"cd / && setsid {PYTHON} {HOLDER_PATH} {seconds} </dev/null >/dev/null 2>&1 &")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = (host.read_file("/run/lock-holder.pid") or "").strip()
        if pid:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the lock holder did not start")


def release(host: FleetHost, pid: int) -> None:
    host.exec(f"kill {pid} 2>/dev/null; true")


def not_installed(host: FleetHost) -> None:
    host.exec(f"dpkg --purge {PACKAGE} >/dev/null")


def installed(host: FleetHost) -> bool:
    status = host.exec(f"dpkg-query -W -f='${{Status}}' {PACKAGE}", check=False).stdout
    return status == "install ok installed"


def test_lock_held_for_30s_gpuprov_waits_then_installs(
        fleet: Fleet, host: FleetHost, work: Path) -> None:
    not_installed(host)
    with injected("dpkg lock held for 30 s"):
        pid = hold_lock(host, 30)
        try:
            start = time.monotonic()
            run = gpuprov("apply", "inventory.yml", cwd=work, timeout=300)
            took = time.monotonic() - start
        finally:
            release(host, pid)
        assert run.returncode == 0, run.stdout + run.stderr
        assert took > 20, f"the apply took {took:.0f}s: it cannot have waited for the lock"
        assert installed(host)
        assert_nothing_lost(fleet, [host], work)


def test_lock_held_longer_than_the_timeout_names_the_holder(
        fleet: Fleet, host: FleetHost, work: Path) -> None:
    not_installed(host)
    with injected("dpkg lock held longer than the timeout"):
        pid = hold_lock(host, 300)
        try:
            start = time.monotonic()
            run = gpuprov("apply", "inventory.yml", "-e", "apt_lock_timeout=5", cwd=work,
                          timeout=300)
            took = time.monotonic() - start
            still = host.exec(f"kill -0 {pid}", check=False).returncode == 0
        finally:
            release(host, pid)
        out = run.stdout + run.stderr
        assert run.returncode == 2, out
        assert took < 90, f"the apply took {took:.0f}s with a 5s lock timeout"
        assert still, "the holder had let go: the error is not about a held lock"
        assert (f"dpkg lock /var/lib/dpkg/lock-frontend held by pid {pid} ({PYTHON} "
                f"{HOLDER_PATH} 300) for longer than 5s") in " ".join(out.split()), out
        assert "nvidia_driver_apt_lock_timeout" in out, out
        assert not installed(host)
        assert host.exec("dpkg --audit").stdout.strip() == ""
        assert_nothing_lost(fleet, [host], work)

