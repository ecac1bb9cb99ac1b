"""Acceptance of the test fleet itself: real SSH, host keys, sudo, isolation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from tests.fleet import network
from tests.fleet.fleet import Fleet, fleet_processes

REPO = Path(__file__).resolve().parents[2]


def test_every_host_answers_ssh_with_host_key_checking(fleet: Fleet) -> None:
    assert len([h for h in fleet.hosts if h.variant == "default"]) >= 8 or \
        len(fleet.hosts) == fleet.size
    for host in fleet.hosts[: fleet.size]:
        res = fleet.ssh(host, "hostname")
        assert res.stdout.strip() == host.name


def test_a_wrong_host_key_is_refused(fleet: Fleet, tmp_path) -> None:
    host_a, host_b = fleet.hosts[0], fleet.hosts[1]
    # known_hosts that claims host A has host B's keys: OpenSSH must refuse.
    lines = [ln.replace(host_b.address, host_a.address, 1)
             for ln in fleet.known_hosts.read_text().splitlines()
             if ln.startswith(host_b.address + " ")]
    wrong = tmp_path / "known_hosts"
    wrong.write_text("\n".join(lines) + "\n")
    res = fleet.ssh(host_a, "true", check=False,
                    extra=["-o", f"UserKnownHostsFile={wrong}"])
    assert res.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in res.stderr


def test_admin_has_passwordless_sudo_and_root_has_a_key(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    assert fleet.ssh(host, "sudo -n id -u").stdout.strip() == "0"
    assert fleet.ssh(host, "id -un", user="root").stdout.strip() == "root"


def test_hosts_are_isolated(fleet: Fleet) -> None:
    a, b = fleet.hosts[0], fleet.hosts[1]
    fleet.ssh(a, "echo only-on-a | sudo tee /etc/fleet-isolation >/dev/null")
    assert a.read_file("/etc/fleet-isolation") == "only-on-a\n"
    assert b.read_file("/etc/fleet-isolation") is None
    # Separate process trees and hostnames.
    assert a.exec("hostname").stdout.strip() == a.name
    pids_a = a.exec("ps -eo comm=").stdout.split()
    assert "init" in pids_a and len(pids_a) < 20, pids_a
    # Separate network stacks: each host has only its own address.
    assert a.address in a.exec("ip -4 -o addr").stdout
    assert b.address not in a.exec("ip -4 -o addr").stdout
    a.exec("rm -f /etc/fleet-isolation")


def test_no_route_leaves_the_fleet(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    routes = host.exec("ip -4 route").stdout
    assert "default" not in routes
    # The kernel refuses at once: nothing is ever sent.
    res = host.exec("ip route get 192.0.2.1", check=False)
    assert res.returncode != 0 and "unreachable" in res.stderr.lower()
    # ...but hosts do reach each other over the fleet network.
    other = fleet.hosts[1]
    res = host.exec(f"bash -c 'exec 3<>/dev/tcp/{other.address}/22; head -c 4 <&3'")
    assert res.stdout == "SSH-"


def test_python_is_not_on_the_hosts_path(fleet: Fleet) -> None:
    # gpuprov promises to need no Python on targets; the fleet keeps it honest.
    res = fleet.ssh(fleet.hosts[0], "command -v python3 || command -v python || echo none")
    assert res.stdout.strip() == "none"


def test_stop_and_start_keep_the_disk(fleet: Fleet) -> None:
    host = fleet.hosts[-1]
    fleet.ssh(host, "echo persisted | sudo tee /var/lib/fleet-disk >/dev/null")
    host.stop()
    with pytest.raises(OSError):
        socket.create_connection((host.address, 22), timeout=1).close()
    host.start()
    assert fleet.ssh(host, "cat /var/lib/fleet-disk").stdout == "persisted\n"
    host.exec("rm -f /var/lib/fleet-disk")


def test_reboot_gives_a_fresh_run_and_restarts_sshd(fleet: Fleet) -> None:
    host = fleet.hosts[-2]
    fleet.ssh(host, "sudo touch /run/reboot-marker")
    before = host.boot_id()
    fleet.ssh(host, "sudo reboot", check=False)
    deadline = time.monotonic() + 20
    while host.boot_id() in (before, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    host.wait_ready()
    assert host.boot_id() not in (before, None)
    assert fleet.ssh(host, "test -e /run/reboot-marker || echo gone").stdout.strip() == "gone"
    # The harness can also reboot a host from outside.
    before = host.boot_id()
    host.reboot()
    assert host.boot_id() != before


def test_password_login_variant(fleet: Fleet) -> None:
    host = fleet.add_host(variant="password-login", group="lab")
    # No key for this host: key login is refused by the real sshd...
    res = fleet.ssh(host, "true", check=False)
    assert res.returncode == 255 and "Permission denied" in res.stderr
    # ...password login works, and sudo asks for the password.
    client = paramiko.SSHClient()
    client.load_host_keys(str(fleet.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(host.address, username="admin", password=host.password,
                   look_for_keys=False, allow_agent=False, timeout=10)
    try:
        _, out, _ = client.exec_command("sudo -n true 2>&1; echo rc=$?")
        assert "rc=1" in out.read().decode()
        stdin, out, _ = client.exec_command("sudo -S -p '' id -u")
        stdin.write(host.password + "\n")
        stdin.flush()
        assert out.read().decode().strip() == "0"
    finally:
        client.close()


def test_sudo_password_variant(fleet: Fleet) -> None:
    host = fleet.add_host(variant="sudo-password", group="cloud")
    assert fleet.ssh(host, "sudo -n true", check=False).returncode == 1
    res = subprocess.run(
        ["ssh", "-F", str(fleet.ssh_config), host.name, "sudo -S -p '' id -u"],
        input=host.password + "\n", capture_output=True, text=True, timeout=30)
    assert res.stdout.strip() == "0"


def test_inventory_lists_the_hosts_in_groups(fleet: Fleet) -> None:
    import yaml

    inventory = yaml.safe_load(fleet.inventory_path.read_text())
    children = inventory["all"]["children"]
    assert set(children) == {"lab", "cloud", "cluster"}
    names = {n for g in children.values() for n in g["hosts"]}
    assert {h.name for h in fleet.hosts[: fleet.size]} <= names
    assert inventory["all"]["vars"]["ssh_known_hosts_file"] == str(fleet.known_hosts)


def test_bridge_and_subnet_are_the_fleets_own(fleet: Fleet) -> None:
    out = network.ip("-4", "-o", "addr", "show", "dev", network.BRIDGE).stdout
    assert f"{network.GATEWAY}/{network.SUBNET.prefixlen}" in out


def _fleet_processes(fleet_id: int) -> list[int]:
    return fleet_processes(f"gpuprov-fleet-start-{fleet_id}")


def test_a_killed_run_leaves_nothing_the_next_run_cannot_clean(fleet: Fleet) -> None:
    # A second fleet (id 1, its own bridge/subnet/run dir) in a child process
    # that is SIGKILLed: no teardown code of its own runs at all.
    env = {**os.environ, "GPUPROV_FLEET_ID": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from tests.fleet.fleet import Fleet\n"
         "Fleet(size=2, with_repo=False).up(); print('UP', flush=True); time.sleep(600)"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "UP"
        assert _fleet_processes(1)
    finally:
        child.kill()
        child.wait()
    # The hosts die with the killed process (parent-death signal)...
    deadline = time.monotonic() + 10
    while _fleet_processes(1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _fleet_processes(1)
    # ...and the next run removes the rest (bridge, run dir) and works.
    rerun = subprocess.run(
        [sys.executable, "-c",
         "from tests.fleet.fleet import Fleet\n"
         "f = Fleet(size=1, with_repo=False).up()\n"
         "try:\n    assert f.ssh(f.hosts[0], 'hostname').stdout.strip() == 'lab-01'\n"
         "finally:\n    f.down()\n"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "gpfbr1" not in network.ip("-o", "link").stdout
    assert not Path("/var/tmp/gpuprov-test-fleet-1").exists()
    assert "gpuprov-test-fleet-1" not in Path("/proc/self/mountinfo").read_text()
