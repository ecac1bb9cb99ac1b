"""`gpuprov onboard` over real SSH (issue 7): a fleet host with a password
login only (no key anywhere, sudo asks the password) taken to a verified GPU
host in the inventory. The failures first, each stopping with a clear
message and nothing further changed: a wrong password, a host key that
changed between attempts, an unreachable host. Then an onboard that fails
after the access step and a re-run that completes it; the inventory keeps
its comments, key login works, password login is refused, a second apply
changes nothing and drift-check is clean."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fleet.fleet import DEFAULT_PASSWORD, Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov, report
from tests.fleet.test_gpu_stack import DIGEST, IMAGE
from tests.fleet.test_sshd_hardening import password_offered

pytestmark = pytest.mark.fleet

SUDOERS = "/etc/sudoers.d/90-gpuprov-admin"
AUTHORIZED = "/home/admin/.ssh/authorized_keys"


@pytest.fixture(scope="module")
def new_host(fleet: Fleet):
    found = [h for h in fleet.hosts if h.variant == "password-login"]
    host = found[0] if found else fleet.add_host(variant="password-login", group="lab")
    fleet.reset(host)    # as delivered: password login only
    yield host
    fleet.reset(host)    # for later tests: its sshd is hardened and its keys regenerated


@pytest.fixture(scope="module")
def work(fleet: Fleet, new_host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("onboard")
    lab = next(h for h in fleet.hosts if h.variant == "default" and "lab" in h.groups)
    url = fleet.repo_url
    (work / "password").write_text(DEFAULT_PASSWORD + "\n")
    (work / "wrong-password").write_text("not-the-password\n")
    (work / "inventory.yml").write_text(f"""\
# The lab's fleet (test copy). Comments and order must survive onboarding.
all:
  vars:
    ansible_user: admin          # the admin user on every host
    ansible_ssh_private_key_file: {fleet.client_key}
    ssh_known_hosts_file: {work / "known_hosts"}
    # the hosts reach only the fleet's stand-in repositories
    base_ntp_servers: ["{url.split("//")[1].split(":")[0]}"]
    # the stand-in repositories are plain http: their keys need insecure: true
    nvidia_driver_repo: {{url: "{url}/cuda/", key: "{url}/keys/cuda.asc", insecure: true}}
    container_toolkit_repo:
      url: "{url}/libnvidia-container/stable/deb/$(ARCH)"
      key: "{url}/libnvidia-container/gpgkey"
      insecure: true
    docker_repo: none
    gpu_image: {IMAGE}
    gpu_image_digest: "{DIGEST}"
  children:
    # workstations
    lab:
      vars:
        gpu_devices: "0"
      hosts:
        {lab.name}:
          ansible_host: {lab.address}   # the first workstation
    # cloud VMs come later
    cloud:
      hosts:
""")
    return work


def onboard(work: Path, host: FleetHost, *args: str, password: str = "password",
            fingerprint: str | None = None) -> subprocess.CompletedProcess[str]:
    fp = fingerprint or ed25519_fingerprint(host)
    return gpuprov("onboard", host.name, "inventory.yml", "--group", "lab", "--address",
                   host.address, "--password-file", password, "--host-key-fingerprint", fp,
                   *args, cwd=work, timeout=900)


def ed25519_fingerprint(host: FleetHost) -> str:
    return host.exec("ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


def untouched(host: FleetHost, work: Path, inventory: str) -> None:
    assert (work / "inventory.yml").read_text() == inventory
    assert not list(work.glob("inventory.yml.*.bak"))
    assert host.exec(f"test -e {SUDOERS} || test -e {AUTHORIZED}", check=False).returncode != 0


def test_a_wrong_password_stops_before_any_change(new_host, work) -> None:
    inventory = (work / "inventory.yml").read_text()
    res = onboard(work, new_host, password="wrong-password")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "rejected the password for user 'admin'" in res.stderr, res.stderr
    assert "nothing else was changed" in res.stderr
    untouched(new_host, work, inventory)


def test_a_host_key_that_changed_between_attempts_is_refused(new_host, work) -> None:
    inventory = (work / "inventory.yml").read_text()
    known = (work / "known_hosts").read_text()
    assert new_host.address in known, "the first attempt recorded the host key"
    old = ed25519_fingerprint(new_host)
    new_host.exec("mkdir -p /root/keys.orig && cp -p /etc/ssh/ssh_host_* /root/keys.orig/ && "
                  "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && service ssh reload "
                  ">/dev/null")
    try:
        res = onboard(work, new_host)   # the NEW fingerprint given: known_hosts still wins
        assert res.returncode == 1, res.stdout + res.stderr
        assert "has CHANGED" in res.stderr and old.removeprefix("SHA256:") in res.stderr
        assert (work / "known_hosts").read_text() == known
        untouched(new_host, work, inventory)
    finally:
        new_host.exec("rm /etc/ssh/ssh_host_* && cp -p /root/keys.orig/* /etc/ssh/ && "
                      "rm -r /root/keys.orig && service ssh reload >/dev/null")


def test_an_unreachable_host_stops_with_the_reason(fleet, new_host, work) -> None:
    inventory = (work / "inventory.yml").read_text()
    ghost = new_host.address.rsplit(".", 1)[0] + ".250"   # on the fleet's bridge, nobody there
    res = gpuprov("onboard", "ghost-01", "inventory.yml", "--group", "lab", "--address", ghost,
                  "--password-file", "password", "--host-key-fingerprint", "SHA256:x",
                  cwd=work, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "ghost-01: unreachable" in res.stderr, res.stderr
    assert (work / "inventory.yml").read_text() == inventory


def test_onboard_interrupted_after_access_then_rerun_completes(fleet, new_host, work) -> None:
    original = (work / "inventory.yml").read_text()
    # the site playbook fails after access + inventory (a branch below 535 is refused)
    first = onboard(work, new_host, "-e", "nvidia_driver_branch=470")
    assert first.returncode == 2, first.stdout + first.stderr
    assert "2/5 access: admin logs in with the key and has sudo" in first.stdout
    assert "rerun gpuprov onboard" in first.stderr
    assert new_host.exec(f"cat {SUDOERS}").stdout.endswith("admin ALL=(ALL) NOPASSWD: ALL\n")

    again = onboard(work, new_host)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "host key ssh-ed25519" in again.stdout and "already known" in again.stdout
    assert "2/5 access: key login and sudo already work" in again.stdout
    assert f"3/5 inventory: {new_host.name} already in group lab" in again.stdout
    assert "5/5 verify" in again.stdout and "pass" in again.stdout
    assert f"ssh -L 8888:localhost:8888 admin@{new_host.address}" in again.stdout

    # the inventory: the host under lab, every original line kept, a backup of the original
    text = (work / "inventory.yml").read_text()
    assert f"        {new_host.name}:\n          ansible_host: {new_host.address}\n" in text
    assert [ln for ln in text.splitlines() if not ln.startswith(f"        {new_host.name}")
            and new_host.address not in ln] == original.splitlines()
    backups = list(work.glob("inventory.yml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == original

    # key login works, password login is refused by the hardened sshd
    assert fleet.ssh(new_host, "sudo -n true && echo ok").stdout.strip() == "ok"
    assert not password_offered(fleet, new_host)

    second = gpuprov("apply", "inventory.yml", "-l", new_host.name, "--report", "second.json",
                     cwd=work)
    assert second.returncode == 0, second.stdout + second.stderr
    assert report(work / "second.json")[new_host.name]["changed"] == 0, second.stdout
    drift = gpuprov("drift-check", "inventory.yml", "-l", new_host.name, cwd=work)
    assert drift.returncode == 0, drift.stdout + drift.stderr
