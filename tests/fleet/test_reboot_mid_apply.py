"""A host rebooted mid-apply (issue 15), over real SSH, on the fleet's
sysvinit-style hosts:

- between the sshd reload and the confirmation: the armed timer dies with the
  reboot, and the boot hook installed with the save (ops/armed.py: an init.d
  script with rc links, started before sshd) restores the saved config at boot
  and removes itself;
- in the middle of the driver install, while dpkg unpacks or configures the
  DKMS package (its stand-in maintainer scripts wait when a file under
  /etc/gpuprov-test-double asks them to): the next apply finishes what dpkg
  left half-done (`dpkg --configure -a` first, ops/dpkg_repair.py).

Each ends with nothing lost (tests/fleet/faults.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

ROLLBACK = "/var/lib/gpuprov/sshd-rollback"
BOOT_HOOK = "gpuprov-sshd-revert-boot"
# Everything the sshd role may change; after the reboot all of it must be as before.
WATCHED = "/etc/ssh/sshd_config /etc/ssh/sshd_config.d /etc/ssh/moduli /etc/ssh/ssh_host_*"


@pytest.fixture
def host(fleet: Fleet) -> Iterator[FleetHost]:
    chosen = next(h for h in fleet.hosts if h.variant == "default")
    fleet.reset(chosen)
    yield chosen
    fleet.reset(chosen)   # the fleet's own host keys and a stock disk for later tests


def write_work(work: Path, fleet: Fleet, host: FleetHost, roles: list[str],
               **host_vars: object) -> None:
    inventory = fleet.inventory([host])
    url = fleet.repo_url
    inventory["all"].setdefault("vars", {}).update({
        "nvidia_driver_repo": {"url": f"{url}/cuda/", "key": f"{url}/keys/cuda.asc",
                               "insecure": True}})
    for group in inventory["all"]["children"].values():
        if host.name in group["hosts"]:
            group["hosts"][host.name] = {**(group["hosts"][host.name] or {}), **host_vars}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (work / "playbooks").mkdir(exist_ok=True)
    (work / "playbooks" / "site.yml").write_text(
        f"- name: reboot mid-apply\n  hosts: all\n  roles: [{', '.join(roles)}]\n")


def start_apply(work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml",
                             "-T", "5"], cwd=work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def reboot_when(host: FleetHost, proc: subprocess.Popen[str], ready: Callable[[], bool],
                what: str, timeout: float = 120) -> str:
    """Reboot the host the moment `ready()` holds while the run is still going;
    then let the run end and return its output."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"the run ended before {what}:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
            time.sleep(0.02)
        host.reboot(timeout=60)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return output


def listening(host: FleetHost) -> bool:
    try:
        with socket.create_connection((host.address, 22), timeout=2):
            return True
    except OSError:
        return False


def sshd_files(host: FleetHost) -> str:
    """Content and mode of every file the sshd role may change."""
    return host.exec(f"find {WATCHED} -type f -exec sha256sum {{}} + | sort; "
                     f"stat -c '%n %a %U' {WATCHED} | sort").stdout


def boot_hook_files(host: FleetHost) -> list[str]:
    return host.exec(f"ls -d /etc/init.d/{BOOT_HOOK} /etc/rc*.d/*{BOOT_HOOK} "
                     f"/etc/systemd/system/{BOOT_HOOK}.service 2>/dev/null; true").stdout.split()


def test_reboot_between_the_sshd_reload_and_the_confirmation_restores_at_boot(
        fleet: Fleet, host: FleetHost, tmp_path: Path) -> None:
    """The new config makes sshd listen on 127.0.0.1 only (preflight off): the
    confirmation can never come, and the revert timer is far away (600 s). The
    host reboots right after the reload; only the boot hook can bring the old
    config back, before sshd starts."""
    before = sshd_files(host)
    write_work(tmp_path, fleet, host, ["sshd_hardening"], sshd_preflight=False,
               sshd_revert_after=600, sshd_extra_settings={"ListenAddress": "127.0.0.1"})
    with injected("host rebooted mid-apply (sshd change)"):
        proc = start_apply(tmp_path)
        output = reboot_when(
            host, proc, lambda: host.exec(f"test -d {ROLLBACK}", check=False).returncode == 0
            and not listening(host), "the sshd reload with its save pending")
        assert proc.returncode != 0, output
        # the saved config was put back at boot: sshd came up with it, on every address
        assert listening(host), "sshd is not reachable after the reboot"
        assert sshd_files(host) == before
        assert host.exec(f"ls -d {ROLLBACK}* 2>/dev/null; true").stdout.strip() == ""
        assert boot_hook_files(host) == [], "the boot hook must remove itself"
        assert host.exec("ps -eo args | grep '[r]estore --from-timer'; true").stdout == ""

        write_work(tmp_path, fleet, host, ["sshd_hardening"])   # the settings as meant
        assert_nothing_lost(fleet, [host], tmp_path)
        assert boot_hook_files(host) == [] and host.exec(f"test -d {ROLLBACK}",
                                                         check=False).returncode == 1


# how the script shows in ps: a new package's preinst runs from dpkg's control dir
# ([x]: the pattern must not match the shell that runs pgrep)
@pytest.mark.parametrize(("phase", "script", "running"), [
    ("unpack", "preinst", "/var/lib/dpkg/[t]mp.ci/preinst install"),
    ("configure", "postinst", "[n]vidia-kernel-open-dkms.postinst configure"),
])
def test_reboot_mid_driver_install_is_repaired_by_the_next_apply(
        fleet: Fleet, host: FleetHost, tmp_path: Path, phase: str, script: str,
        running: str) -> None:
    """The host reboots while dpkg runs the DKMS package's preinst (unpacking:
    dpkg's journal is left pending, and apt-get refuses everything until
    `dpkg --configure -a`) or its postinst (configuring: packages left
    half-configured / unpacked), each made slow on purpose. The next plain
    apply must finish the job."""
    delay = f"/etc/gpuprov-test-double/nvidia-{script}-delay"
    write_work(tmp_path, fleet, host, ["nvidia_driver"])
    # the package lists the base role would have fetched (a fresh disk has none)
    host.exec("apt-get update -qq")
    host.exec(f"mkdir -p /etc/gpuprov-test-double && echo 30 > {delay}")
    with injected(f"host rebooted mid-apply (driver install, dpkg {phase})"):
        proc = start_apply(tmp_path)
        output = reboot_when(
            host, proc, lambda: host.exec(f"pgrep -f '{running}'", check=False).returncode == 0,
            f"dpkg running the driver's {script}")
        assert proc.returncode != 0, output
        host.exec(f"rm -f {delay}")
        # the fault did hit mid-install: dpkg has something to finish
        left = host.exec("dpkg --audit; ls /var/lib/dpkg/updates | grep -x '[0-9]*'",
                         check=False).stdout
        assert left.strip(), "dpkg was left with nothing to finish"

        assert_nothing_lost(fleet, [host], tmp_path)
        status = host.exec("dpkg-query -W -f='${Package} ${Status}\\n' nvidia-open "
                           "nvidia-kernel-open-dkms nvidia-smi").stdout.splitlines()
        assert all(line.endswith(" ok installed") for line in status), status
        assert "nvidia-open" in host.exec("apt-mark showhold").stdout.split()
        # no module survived the reboot; the finished postinst "loaded" the installed one
        # where a kernel shows it (what the nvidia_driver role reads), as nvidia-smi says
        loaded = host.read_file("/sys/module/nvidia/version")
        assert loaded and loaded == host.read_file(
            "/var/lib/gpuprov-test-double/nvidia/installed-version"), loaded
        assert host.exec("nvidia-smi", check=False).returncode == 0
