"""The systemd paths over real SSH (issue 15): the bundled site.yml (base,
sshd_hardening, nouveau, nvidia_driver, container_toolkit, gpu_image,
jupyter, verify) on two fleet hosts whose PID 1 is Debian 12's systemd 252
(the "systemd" variant, tests/fleet/README.md). What only systemd shows:
units installed, enabled and running (`systemctl`), Jupyter's own unit,
sshd reloaded by `systemctl reload-or-restart`, the sshd change's revert
timer (`systemd-run`) armed during the change and gone once confirmed, the
timer restoring the old config when the controller is gone (and gpuprov's
line in the journal), the boot unit restoring it when the host reboots before
the confirmation, idempotence, drift-check 0, and drift-check 0 again
after `systemctl reboot` inside the hosts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import write_site_inventory
from tests.fleet.test_engine import gpuprov, report

REVERT = "gpuprov-sshd-revert"
JUPYTER = "gpuprov-jupyter"

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def hosts(fleet: Fleet, systemd_hosts: list[FleetHost]):
    for host in systemd_hosts:
        fleet.reset(host)
        assert host.exec("cat /proc/1/comm").stdout.strip() == "systemd"
    yield systemd_hosts
    for host in systemd_hosts:   # host keys were regenerated: give later tests the fleet's own
        fleet.reset(host)


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    work = tmp_path_factory.mktemp("systemd")
    write_site_inventory(fleet, hosts, work)
    return work


def journal(host: FleetHost, *units: str) -> list[str]:
    args = " ".join(f"-u {u}" for u in units)
    return host.exec(f"journalctl -b --no-pager -o cat {args}").stdout.splitlines()


def assert_module_loaded(host: FleetHost, version: str) -> None:
    """The nvidia module "loaded" where a kernel shows it (what the nvidia_driver role
    reads): nspawn's --tmpfs gives the host a writable /sys/module of its own."""
    mount = host.exec("findmnt -no FSTYPE,OPTIONS /sys/module").stdout.split()
    assert mount[0] == "tmpfs" and "rw" in mount[1].split(","), mount
    assert host.read_file("/sys/module/nvidia/version") == version + "\n"
    assert version in host.exec("nvidia-smi --query-gpu=driver_version --format=csv,noheader"
                                ).stdout


def first(lines: list[str], *words: str) -> int:
    for i, line in enumerate(lines):
        if all(w in line for w in words):
            return i
    raise AssertionError(f"no line with {words} in:\n" + "\n".join(lines[-40:]))


@pytest.fixture(scope="module")
def converged(workdir: Path, hosts: list[FleetHost]) -> dict[str, dict]:
    res = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    return report(workdir / "first.json")


def test_site_yml_converges_and_its_units_are_enabled_and_running(
        converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    for host in hosts:
        assert not converged[host.name]["failed"]
        for unit in ("ssh", "chrony", "docker", JUPYTER):
            state = host.exec(f"systemctl is-enabled {unit}; systemctl is-active {unit}",
                              check=False).stdout.split()
            assert state == ["enabled", "active"], (host.name, unit, state)
        unit_file = host.exec(f"systemctl show -P FragmentPath {JUPYTER}").stdout.strip()
        assert unit_file == f"/etc/systemd/system/{JUPYTER}.service"
        assert host.read_file(f"/etc/init.d/{JUPYTER}") is None, "no SysV script under systemd"
        # the unit's container runs on the docker double
        assert JUPYTER in host.exec("docker ps --format '{{.Names}}'").stdout
        assert host.exec("systemctl is-system-running", check=False).stdout.strip() == "running"
        assert_module_loaded(host, "580.95.05")


def test_sshd_was_reloaded_by_systemd_under_an_armed_revert_timer(
        converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    for host in hosts:
        lines = journal(host, "ssh.service", f"{REVERT}.timer", f"{REVERT}.service")
        armed = first(lines, f"Started {REVERT}.timer")
        reloaded = first(lines, "Reloaded ssh.service")
        cancelled = first(lines, f"Stopped {REVERT}.timer")
        assert armed < reloaded < cancelled, "\n".join(lines)
        assert not [line for line in lines if f"Started {REVERT}.service" in line], \
            "the revert never ran: the change was confirmed"
        gone = host.exec(f"systemctl list-timers --all --no-legend {REVERT}.timer; "
                         f"systemctl is-active {REVERT}.timer", check=False).stdout.split()
        assert gone == ["inactive"], gone
        assert host.read_file("/etc/ssh/sshd_config.d/00-gpuprov.conf")


def test_second_apply_changes_nothing_and_drift_check_is_clean(
        workdir: Path, converged: dict[str, dict]) -> None:
    again = gpuprov("apply", "inventory.yml", "--report", "second.json", cwd=workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {n: h["changed"] for n, h in report(workdir / "second.json").items()} == \
        dict.fromkeys(converged, 0)
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_systemctl_reboot_and_everything_is_back_in_sync(
        fleet: Fleet, workdir: Path, converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    before = {h.name: h.boot_id() for h in hosts}
    for host in hosts:
        fleet.ssh(host, "sudo systemctl reboot", check=False)
    for host in hosts:
        deadline = time.monotonic() + 30
        while host.boot_id() in (before[host.name], None):
            assert time.monotonic() < deadline, f"{host.name} did not reboot"
            time.sleep(0.1)
        host.wait_ready()
        assert host.exec(f"systemctl is-active docker {JUPYTER}").stdout.split() == \
            ["active", "active"]
        assert_module_loaded(host, "580.95.05")   # by the boot unit, into a fresh /sys/module
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def _cut_off_after_reload(fleet: Fleet, workdir: Path, host: FleetHost, revert_after: int
                          ) -> None:
    """An sshd change that stops sshd listening on the host's address (preflight
    off), and the controller SIGKILLed once it went live: nobody is left to
    roll back but the host itself (as in test_sshd_hardening)."""
    inv = fleet.inventory([host])
    for group in inv["all"]["children"].values():
        if host.name in group["hosts"]:
            group["hosts"][host.name].update(
                sshd_extra_settings={"ListenAddress": "127.0.0.1"}, sshd_preflight=False,
                sshd_revert_after=revert_after)
    (workdir / "one.yml").write_text(yaml.safe_dump(inv, sort_keys=False))
    (workdir / "sshd.yml").write_text("- hosts: all\n  roles: [sshd_hardening]\n")
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "one.yml", "-p",
                             "sshd.yml"], cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _listening(host) and time.monotonic() < deadline:
            assert proc.poll() is None, "gpuprov ended before the reload"
            time.sleep(0.05)
        assert not _listening(host), "the new config never went live"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert host.exec(f"systemctl is-active {REVERT}.timer", check=False).stdout.strip() == \
        "active"


def _gpuprov_journal(host: FleetHost) -> list[str]:
    lines: list[str] = []
    for _ in range(20):   # the restore logs right after the reload
        lines = host.exec("journalctl -b --no-pager -o cat -t gpuprov").stdout.splitlines()
        if lines:
            break
        time.sleep(0.25)
    return lines


def test_controller_gone_the_systemd_timer_restores_and_says_so_in_the_journal(
        fleet: Fleet, workdir: Path, converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    """The revert is the transient systemd-run timer; the restore logs to journald."""
    host = hosts[0]
    _cut_off_after_reload(fleet, workdir, host, revert_after=15)
    # on time: 15 s after arming, not up to a minute later (systemd's default
    # timer accuracy, which the product sets to 1 s)
    deadline = time.monotonic() + 20
    while not _listening(host) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _listening(host), "the revert timer did not restore sshd in time:\n" + "\n".join(
        journal(host, f"{REVERT}.timer", f"{REVERT}.service")[-30:]) + host.exec(
        f"systemctl status --no-pager {REVERT}.timer {REVERT}.service; systemctl list-timers "
        "--all --no-pager; ls -la /var/lib/gpuprov/; date", check=False).stdout
    assert _gpuprov_journal(host) == ["sshd: previous config restored"]
    assert fleet.ssh(host, "sudo -n true && echo ok").stdout.strip() == "ok"
    first(journal(host, f"{REVERT}.service"), f"{REVERT}.service", "Deactivated successfully")
    assert host.read_file(f"/etc/systemd/system/{REVERT}-boot.service") is None


def test_rebooted_before_the_confirmation_the_boot_unit_restores(
        fleet: Fleet, workdir: Path, converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    """The timer dies with the reboot: the boot unit installed with the save
    restores the old config before ssh.service starts, then removes itself."""
    host = hosts[1]
    _cut_off_after_reload(fleet, workdir, host, revert_after=600)
    boot_unit = f"{REVERT}-boot.service"
    assert host.exec(f"systemctl is-enabled {boot_unit}").stdout.strip() == "enabled"
    host.reboot()   # systemctl reboot; returns once sshd answers on the host's address
    assert _gpuprov_journal(host) == ["sshd: previous config restored"]
    lines = host.exec("journalctl -b --no-pager -o cat").stdout.splitlines()
    assert first(lines, "Finished", boot_unit) < first(lines, "Started ssh.service"), \
        "\n".join(lines)
    assert host.read_file(f"/etc/systemd/system/{boot_unit}") is None
    assert host.exec("ls /var/lib/gpuprov").stdout.split().count("sshd-rollback") == 0
    assert fleet.ssh(host, "sudo -n true && echo ok").stdout.strip() == "ok"


def _listening(host: FleetHost) -> bool:
    try:
        with socket.create_connection((host.address, 22), timeout=2):
            return True
    except OSError:
        return False


def test_jupyter_disabled_its_unit_is_stopped_disabled_and_gone(
        workdir: Path, converged: dict[str, dict], hosts: list[FleetHost]) -> None:
    host = hosts[0]
    off = ("--limit", host.name, "--tags", "jupyter", "-e", "jupyter_enabled=false")
    res = gpuprov("apply", "inventory.yml", *off, "--report", "off.json", cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert report(workdir / "off.json")[host.name]["changed"] > 0
    assert host.read_file(f"/etc/systemd/system/{JUPYTER}.service") is None
    state = host.exec(f"systemctl is-active {JUPYTER}; systemctl show -P LoadState {JUPYTER}; "
                      f"ls /etc/systemd/system/*.wants/ | grep -c {JUPYTER}",
                      check=False).stdout.split()
    assert state == ["inactive", "not-found", "0"], state
    assert JUPYTER not in host.exec("docker ps -a --format '{{.Names}}'").stdout
    drift = gpuprov("drift-check", "inventory.yml", *off, cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr
