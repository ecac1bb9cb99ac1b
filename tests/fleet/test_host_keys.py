"""Host keys over real SSH (issue 14): a fleet host whose key is not in
known_hosts is refused before anything reaches it, and accepted with
--accept-new-host-keys, which prints the key it records; a host presenting a
certificate signed by a CA of known_hosts connects and nothing is recorded.

The host is the `sudo-password` variant and the runs pass -K with the
password on stdin: sudo there logs every use to a file, so an empty log after
the refused run proves the sudo password never went to the unverified host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

SUDO_LOG = "/var/log/gpuprov-test-sudo.log"


@pytest.fixture(scope="module")
def host(fleet: Fleet):
    found = [h for h in fleet.hosts if h.variant == "sudo-password"]
    host = found[0] if found else fleet.add_host(variant="sudo-password", group="cloud")
    fleet.reset(host)
    host.exec(f"printf 'Defaults logfile={SUDO_LOG}\\n' > /etc/sudoers.d/zz-gpuprov-test-log "
              "&& chmod 0440 /etc/sudoers.d/zz-gpuprov-test-log && visudo -c >/dev/null")
    yield host
    fleet.reset(host)   # for later tests: no sudo log rule, no base role


@pytest.fixture(scope="module")
def work(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hostkeys")
    inventory = fleet.inventory([host])
    # a known_hosts of its own, which does not know the host yet
    inventory["all"]["vars"]["ssh_known_hosts_file"] = str(work / "known_hosts")
    inventory["all"]["vars"]["base_ntp_servers"] = [fleet.repo_url.split("//")[1].split(":")[0]]
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "site.yml").write_text(
        "- name: base system\n  hosts: all\n  roles: [base]\n")
    return work


def gpuprov(work: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, with stdin (the -K password) and no controlling terminal,
    as in CI: getpass reads the pipe and nobody can be asked about a key."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TERM", None)
    return subprocess.run([sys.executable, "-m", "gpuprov.cli", *args], cwd=work, env=env,
                          input=stdin, capture_output=True, text=True, timeout=600,
                          start_new_session=True)


def ed25519_fingerprint(host: FleetHost) -> str:
    return host.exec("ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


def sudo_log(host: FleetHost) -> str:
    return host.exec(f"cat {SUDO_LOG} 2>/dev/null || true").stdout


def test_an_unknown_host_key_is_refused_and_nothing_reaches_the_host(host, work) -> None:
    fp = ed25519_fingerprint(host)
    res = gpuprov(work, "apply", "inventory.yml", "-K", stdin=host.password + "\n")
    out = res.stdout + res.stderr
    assert res.returncode == 4, out
    assert "host-key-unknown" in out and f"ssh-ed25519 {fp}" in out, out
    assert "gpuprov onboard" in out and "--accept-new-host-keys" in out, out
    assert not (work / "known_hosts").exists()
    assert sudo_log(host) == "", "sudo ran on a host whose key was never verified"


def test_accept_new_host_keys_records_prints_and_proceeds(host, work) -> None:
    fp = ed25519_fingerprint(host)
    res = gpuprov(work, "apply", "inventory.yml", "-K", "--accept-new-host-keys",
                  stdin=host.password + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    recorded = (f"{host.name}: recorded host key {host.address} ssh-ed25519 {fp} "
                f"in {work / 'known_hosts'}")
    assert recorded in res.stderr, res.stderr
    assert (work / "known_hosts").read_text().startswith(f"{host.address} ssh-ed25519 ")
    assert "COMMAND=" in sudo_log(host), "the sudo password works once the key is verified"
    # known now: the strict default lets the next run in, and nothing more is recorded
    again = gpuprov(work, "apply", "inventory.yml", "-K", "--check", stdin=host.password + "\n")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recorded host key" not in again.stderr


def test_a_host_certificate_signed_by_a_trusted_ca_connects_without_recording(
        host, work, tmp_path) -> None:
    ca = tmp_path / "host_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    pub = tmp_path / "ssh_host_ed25519_key.pub"
    pub.write_text(host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout)
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", host.name, "-n",
                    host.address, str(pub)], check=True)
    cert = (tmp_path / "ssh_host_ed25519_key-cert.pub").read_text()
    host.write_file("/etc/ssh/ssh_host_ed25519_key-cert.pub", cert)
    host.exec("printf 'HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\\n' "
              "> /etc/ssh/sshd_config.d/01-test-hostcert.conf && service ssh reload >/dev/null")
    only_ca = work / "known_hosts.ca"
    inventory = yaml.safe_load((work / "inventory.yml").read_text())
    inventory["all"]["vars"]["ssh_known_hosts_file"] = str(only_ca)
    (work / "inventory-ca.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    text = f"@cert-authority {host.address} {ca.with_suffix('.pub').read_text().strip()}\n"
    only_ca.write_text(text)
    res = gpuprov(work, "facts", "inventory-ca.yml", "-K", stdin=host.password + "\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "recorded host key" not in res.stderr
    assert only_ca.read_text() == text   # no plain key recorded beside the CA
    # another CA: refused, even with --accept-new-host-keys
    other = tmp_path / "other_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    text = f"@cert-authority {host.address} {other.with_suffix('.pub').read_text().strip()}\n"
    only_ca.write_text(text)
    res = gpuprov(work, "facts", "inventory-ca.yml", "-K", "--accept-new-host-keys",
                  stdin=host.password + "\n")
    assert res.returncode == 4 and "host-key-cert" in res.stdout + res.stderr
    assert only_ca.read_text() == text
