"""Hardened sshd over real SSH (issue 6): ssh-audit's built-in "Hardened
Debian 12" policy fails before and passes after on every host, password and
root logins are refused by the real sshd, the operator's next connection
works, a second apply changes nothing, drift is found and fixed; and the
lockout scenarios each end with the host reachable and its old config back:
a setting that fails `sshd -t`, AllowUsers without the operator (refused by
preflight; with preflight off, caught by the confirm login and rolled back),
and the controller gone right after the reload (the host's revert timer)."""

from __future__ import annotations

import shutil
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
from tests.fleet.test_engine import changed_resources, gpuprov, report

POLICY = "Hardened Debian 12 (version 3)"
DROPIN = "/etc/ssh/sshd_config.d/00-gpuprov.conf"
# Everything the role may change; a failed change must leave all of it as it was.
WATCHED = "/etc/ssh/sshd_config /etc/ssh/sshd_config.d /etc/ssh/moduli /etc/ssh/ssh_host_*"

pytestmark = pytest.mark.fleet


def ssh_audit(host: FleetHost) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("ssh-audit", path=str(Path(sys.executable).parent))
    assert tool, "ssh-audit is a test dependency (pip install -e '.[test]')"
    return subprocess.run([tool, "-P", POLICY, host.address], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def state(host: FleetHost) -> str:
    """Checksums of every file the role may change, and whether a save is left."""
    return host.exec(f"sha256sum $(find {WATCHED} -type f | sort); "
                     "ls -d /var/lib/gpuprov/sshd-rollback* 2>/dev/null; true").stdout


def effective(host: FleetHost, keyword: str) -> str:
    out = host.exec(f"sshd -T | grep -i '^{keyword} '").stdout
    return out.split(None, 1)[1].strip()


def password_offered(fleet: Fleet, host: FleetHost) -> bool:
    """Ask the real sshd which methods it offers, with no key at all."""
    res = fleet.ssh(host, "true", check=False, extra=(
        "-o", "PubkeyAuthentication=no", "-o", "BatchMode=yes",
        "-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert res.returncode == 255 and "Permission denied" in res.stderr, res.stderr
    return "password" in res.stderr


def revert_processes(host: FleetHost) -> str:
    return host.exec("ps -eo args | grep '[r]estore --from-timer'; true").stdout


@pytest.fixture(scope="module")
def hosts(fleet: Fleet):
    chosen = [h for h in fleet.hosts if h.variant == "default"][:3]
    for host in chosen:
        fleet.reset(host)
    yield chosen
    for host in chosen:   # host keys were regenerated: give later tests the fleet's own
        fleet.reset(host)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, fleet: Fleet, hosts) -> Path:
    work = tmp_path_factory.mktemp("sshd")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(hosts), sort_keys=False))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "sshd.yml").write_text(
        "- name: hardened access\n  hosts: all\n  roles: [sshd_hardening]\n")
    return work


def apply(work: Path, *args: str, name: str = "r.json") -> tuple[subprocess.CompletedProcess, dict]:
    res = gpuprov("apply", "inventory.yml", "-p", "playbooks/sshd.yml", "--report", name,
                  *args, cwd=work)
    return res, report(work / name)


def test_hardening_passes_ssh_audit_and_refuses_password_and_root(fleet, hosts, workdir):
    for host in hosts:
        assert ssh_audit(host).returncode == 3, f"{host.name}: stock sshd should fail {POLICY}"
        assert password_offered(fleet, host), "the stock config offers password logins"

    res, rep = apply(workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    for host in hosts:
        assert f"file {DROPIN}" in changed_resources(rep[host.name])
        audit = ssh_audit(host)
        assert audit.returncode == 0, f"{host.name}:\n{audit.stdout}"
        assert not password_offered(fleet, host)
        root = fleet.ssh(host, "true", user="root", check=False)
        assert root.returncode == 255 and "Permission denied" in root.stderr
        assert fleet.ssh(host, "sudo -n true && echo ok").stdout.strip() == "ok"
        assert effective(host, "permitrootlogin") == "no"
        assert effective(host, "loglevel") == "VERBOSE"
        assert int(host.exec("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key").stdout.split()[0]) \
            == 4096
        assert "/var/lib/gpuprov/sshd-rollback" not in state(host)
        assert revert_processes(host) == "", "the revert must be cancelled once confirmed"

    res, rep = apply(workdir, name="again.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(h["changed"] == 0 for h in rep.values()), res.stdout
    drift = gpuprov("drift-check", "inventory.yml", "-p", "playbooks/sshd.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_drift_in_the_dropin_is_found_and_fixed(fleet, hosts, workdir):
    host = hosts[1]
    text = host.read_file(DROPIN)
    host.write_file(DROPIN, text.replace("PasswordAuthentication no",
                                         "PasswordAuthentication yes"))
    host.exec("service ssh reload")
    drift = gpuprov("drift-check", "inventory.yml", "-p", "playbooks/sshd.yml", cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert host.name in drift.stdout and DROPIN in drift.stdout
    res, rep = apply(workdir, name="fix.json")
    assert res.returncode == 0, res.stdout
    assert changed_resources(rep[host.name]) >= {f"file {DROPIN}", "service sshd"}
    assert all(rep[h.name]["changed"] == 0 for h in hosts if h is not host)
    assert not password_offered(fleet, host)


@pytest.fixture
def fresh(fleet, hosts, workdir):
    """The first host back to its stock sshd (a fresh disk), and a per-test inventory writer."""
    host = hosts[0]
    fleet.reset(host)

    def write_inventory(**host_vars) -> None:
        inv = fleet.inventory([host])
        for group in inv["all"]["children"].values():
            if host.name in group["hosts"]:
                group["hosts"][host.name].update(host_vars)
        (workdir / "one.yml").write_text(yaml.safe_dump(inv, sort_keys=False))

    return host, write_inventory


def apply_one(workdir: Path, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    res = gpuprov("apply", "one.yml", "-p", "playbooks/sshd.yml", "--report", name, cwd=workdir)
    return res, report(workdir / name)


def assert_untouched(fleet, host, before: str) -> None:
    assert state(host) == before
    assert fleet.ssh(host, "sudo -n true && echo ok").stdout.strip() == "ok"
    assert password_offered(fleet, host), "the stock config is live again"
    assert revert_processes(host) == ""


def test_a_setting_that_fails_sshd_t_is_rolled_back(fleet, fresh, workdir):
    host, write_inventory = fresh
    before = state(host)
    write_inventory(sshd_extra_settings={"MaxStartups": "not-a-number"})
    res, rep = apply_one(workdir, "bad.json")
    assert res.returncode == 2, res.stdout
    error = rep[host.name]["tasks"][-1]["error"]
    assert "sshd" in error and "MaxStartups" in error and "rolled back" in error, error
    assert_untouched(fleet, host, before)


def test_allowusers_without_the_operator_is_refused_by_preflight(fleet, fresh, workdir):
    host, write_inventory = fresh
    before = state(host)
    write_inventory(ssh_allow_users=["alice"])
    res, rep = apply_one(workdir, "preflight.json")
    assert res.returncode == 2, res.stdout
    error = rep[host.name]["tasks"][-1]["error"]
    assert "AllowUsers alice" in error and "admin" in error and "nothing was changed" in error
    assert_untouched(fleet, host, before)


def test_without_preflight_the_confirm_login_catches_it_and_rolls_back(fleet, fresh, workdir):
    host, write_inventory = fresh
    before = state(host)
    write_inventory(ssh_allow_users=["alice"], sshd_preflight=False)
    res, rep = apply_one(workdir, "confirm.json")
    assert res.returncode == 2, res.stdout
    error = rep[host.name]["tasks"][-1]["error"]
    assert "a new connection failed" in error and "rolled back" in error, error
    assert_untouched(fleet, host, before)


def test_controller_gone_after_reload_the_revert_timer_restores(fleet, fresh, workdir):
    """sshd stops listening on the host's address after the reload (preflight
    off), and the controller dies while it retries: nobody is left to roll
    back, so the timer armed on the host must."""
    host, write_inventory = fresh
    before = state(host)
    write_inventory(sshd_extra_settings={"ListenAddress": "127.0.0.1"}, sshd_preflight=False,
                    sshd_revert_after=15)
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "one.yml", "-p",
                             "playbooks/sshd.yml"], cwd=workdir, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _listening(host) and time.monotonic() < deadline:
            assert proc.poll() is None, "gpuprov ended before the reload"
            time.sleep(0.05)
        assert not _listening(host), "the new config never went live"
        proc.send_signal(signal.SIGKILL)   # the controller is gone: no rollback from it
    finally:
        proc.kill()
        proc.wait()
    assert "/var/lib/gpuprov/sshd-rollback" in state(host), "the revert is pending"
    deadline = time.monotonic() + 40
    while not _listening(host) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _listening(host), "the revert timer did not restore sshd"
    time.sleep(1)   # the restore script removes its save right after the reload
    assert_untouched(fleet, host, before)


def _listening(host: FleetHost) -> bool:
    try:
        with socket.create_connection((host.address, 22), timeout=2):
            return True
    except OSError:
        return False
