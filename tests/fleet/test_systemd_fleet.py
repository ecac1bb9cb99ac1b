"""Acceptance of the fleet's systemd variant itself (tests/fleet/README.md):
systemd is PID 1 and reaches multi-user.target with sshd, the host is on the
fleet's bridge like any host, stop/start keep its disk, a reboot (from the
harness or `systemctl reboot` inside) gives a fresh /run, and neither a
torn-down fleet nor a SIGKILLed test run leaves a process, mount or cgroup."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet import network
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.fleet


def test_systemd_is_pid_1_and_boots_to_multi_user_with_sshd(
        fleet: Fleet, systemd_hosts: list[FleetHost]) -> None:
    for host in systemd_hosts:
        assert host.init == "systemd"
        assert host.exec("cat /proc/1/comm").stdout.strip() == "systemd"
        assert host.exec("systemctl --version").stdout.startswith("systemd 252 ")
        assert host.exec("systemctl is-active multi-user.target ssh.service").stdout.split() \
            == ["active", "active"]
        assert host.exec("systemctl is-system-running").stdout.strip() == "running"
        # over real SSH with the fleet's key and host keys, sudo included
        assert fleet.ssh(host, "sudo -n systemd-detect-virt").stdout.strip() == "systemd-nspawn"
        assert fleet.ssh(host, "hostname").stdout.strip() == host.name
        assert ipaddress.ip_address(host.address) in network.SUBNET
    # fleet.inventory() stays the default hosts' (tests that use it are unchanged)
    for group in fleet.inventory()["all"]["children"].values():
        assert not set(group["hosts"]) & {h.name for h in systemd_hosts}


def test_stop_start_and_reboots_keep_the_disk_and_renew_run(
        fleet: Fleet, systemd_hosts: list[FleetHost]) -> None:
    host = systemd_hosts[-1]
    fleet.ssh(host, "echo persisted | sudo tee /var/lib/fleet-disk >/dev/null; "
              "sudo touch /run/reboot-marker")
    host.stop()
    assert not host.running
    host.start()
    assert fleet.ssh(host, "cat /var/lib/fleet-disk").stdout == "persisted\n"
    assert host.read_file("/run/reboot-marker") is None
    host.write_file("/run/reboot-marker", "")
    before = host.boot_id()
    fleet.ssh(host, "sudo systemctl reboot", check=False)
    deadline = time.monotonic() + 20
    while host.boot_id() in (before, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    host.wait_ready()
    assert host.boot_id() not in (before, None)
    assert host.read_file("/run/reboot-marker") is None
    assert host.read_file("/var/lib/fleet-disk") == "persisted\n"
    # the harness reboots it too
    before = host.boot_id()
    host.reboot()
    assert host.boot_id() != before
    assert host.exec("systemctl is-active ssh").stdout.strip() == "active"
    host.exec("rm -f /var/lib/fleet-disk")


def _leftovers(fleet_id: int) -> list[str]:
    """Anything of fleet `fleet_id`'s systemd hosts: processes in its cgroups,
    the cgroups themselves, mounts below its run dir."""
    found = []
    for hierarchy in ("systemd", "unified"):
        top = Path("/sys/fs/cgroup") / hierarchy / f"gpuprov-fleet-{fleet_id}"
        if top.exists():
            found.append(str(top))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"/gpuprov-fleet-{fleet_id}/" in (proc / "cgroup").read_text():
                    found.append(f"pid {proc.name}")
            except OSError:
                continue
    if f"gpuprov-test-fleet-{fleet_id}" in Path("/proc/self/mountinfo").read_text():
        found.append("mounts")
    return found


def test_a_killed_run_leaves_no_systemd_host_behind(fleet: Fleet) -> None:
    # A second fleet (id 2) with one systemd host, in a child process that is
    # SIGKILLed: none of its teardown code runs.
    env = {**os.environ, "GPUPROV_FLEET_ID": "2"}
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from tests.fleet.fleet import Fleet\n"
         "f = Fleet(size=0, with_repo=False).up(); f.add_hosts(1, variant='systemd')\n"
         "print('UP', flush=True); time.sleep(600)"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "UP"
        assert any(p.startswith("pid ") for p in _leftovers(2))
    finally:
        child.kill()
        child.wait()
    # systemd, nspawn and every process of the host die with the test process...
    deadline = time.monotonic() + 10
    while [p for p in _leftovers(2) if p.startswith("pid ")] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in _leftovers(2) if p.startswith("pid ")]
    # ...and the next run removes the rest (cgroups, bridge, run dir), works,
    # and its own down() leaves nothing.
    rerun = subprocess.run(
        [sys.executable, "-c",
         "from tests.fleet.fleet import Fleet\n"
         "f = Fleet(size=0, with_repo=False).up()\n"
         "try:\n    [h] = f.add_hosts(1, variant='systemd')\n"
         "    assert f.ssh(h, 'systemctl is-active ssh').stdout.strip() == 'active'\n"
         "finally:\n    f.down()\n"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert _leftovers(2) == []
    assert "gpfbr2" not in network.ip("-o", "link").stdout
    assert not Path("/var/tmp/gpuprov-test-fleet-2").exists()
