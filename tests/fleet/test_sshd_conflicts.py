"""sshd hardening checked by effect, over real SSH (issue 14): a foreign
drop-in that sorts before gpuprov's (`00-aaa.conf`, PasswordAuthentication
yes) makes the host accept passwords although gpuprov's own drop-in is
untouched. drift-check must say so naming that file and line; apply (default
sshd_conflicts: fail) must fail naming it and change nothing; apply with
`-e sshd_conflicts=comment` comments the line out (backup beside it) inside
the armed change, after which the real OpenSSH client's password login is
refused; a second apply changes nothing and drift-check is in sync."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import changed_resources, gpuprov, report
from tests.fleet.test_sshd_hardening import effective, password_offered, revert_processes

FOREIGN = "/etc/ssh/sshd_config.d/00-aaa.conf"
# Both lines are needed for sshd to offer passwords: gpuprov's AuthenticationMethods
# publickey alone would still refuse them.
FOREIGN_TEXT = ("# left by an old image\nPasswordAuthentication yes\nAuthenticationMethods any\n"
                "X11Forwarding no\n")

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def host(fleet: Fleet):
    chosen = [h for h in fleet.hosts if h.variant == "default"][0]
    fleet.reset(chosen)
    yield chosen
    fleet.reset(chosen)   # host keys regenerated, a foreign file: give later tests a stock one


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, fleet: Fleet, host: FleetHost) -> Path:
    work = tmp_path_factory.mktemp("sshd-conflicts")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]), sort_keys=False))
    (work / "playbooks").mkdir()
    (work / "playbooks" / "sshd.yml").write_text(
        "- name: hardened access\n  hosts: all\n  roles: [sshd_hardening]\n")
    return work


def apply(work: Path, *args: str, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    res = gpuprov("apply", "inventory.yml", "-p", "playbooks/sshd.yml", "--report", name,
                  *args, cwd=work)
    return res, report(work / name)


def drift_check(work: Path) -> subprocess.CompletedProcess:
    return gpuprov("drift-check", "inventory.yml", "-p", "playbooks/sshd.yml", cwd=work)


def reload_sshd(fleet: Fleet, host: FleetHost) -> None:
    """Reload, then wait out the moment sshd refuses connections (tests/fleet/README.md)."""
    host.exec("service ssh reload")
    deadline = time.monotonic() + 20
    while "Connection refused" in fleet.ssh(host, "true", check=False).stderr:
        assert time.monotonic() < deadline, "sshd did not come back after the reload"
        time.sleep(0.2)


def password_login_refused(fleet: Fleet, host: FleetHost) -> bool:
    """The real OpenSSH client asking for a password login only."""
    res = fleet.ssh(host, "true", check=False, extra=(
        "-o", "PubkeyAuthentication=no", "-o", "BatchMode=yes",
        "-o", "PreferredAuthentications=password"))
    return res.returncode == 255 and "Permission denied (publickey)" in res.stderr


def test_a_foreign_dropin_read_first_is_drift_refused_then_commented_out(fleet, host, workdir):
    res, _ = apply(workdir, name="harden.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert drift_check(workdir).returncode == 0
    assert password_login_refused(fleet, host)

    # gpuprov's drop-in stays as it wrote it; the foreign one sorts first and wins
    host.write_file(FOREIGN, FOREIGN_TEXT)
    reload_sshd(fleet, host)
    assert password_offered(fleet, host), "the foreign drop-in really turns passwords on"
    assert effective(host, "passwordauthentication") == "yes"

    drift = drift_check(workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert f"file {FOREIGN}" in drift.stdout, drift.stdout
    assert "line 2: `PasswordAuthentication yes` overrides `PasswordAuthentication no`" \
        in drift.stdout, drift.stdout
    assert "line 3: `AuthenticationMethods any`" in drift.stdout, drift.stdout

    # default sshd_conflicts: fail, naming file:line, nothing changed
    before = host.exec("sha256sum /etc/ssh/sshd_config.d/* /etc/ssh/sshd_config").stdout
    res, rep = apply(workdir, name="fail.json")
    assert res.returncode == 2, res.stdout + res.stderr
    error = rep[host.name]["tasks"][-1]["error"]
    assert f"{FOREIGN}:2: `PasswordAuthentication yes`" in error, error
    assert f"{FOREIGN}:3: `AuthenticationMethods any`" in error, error
    assert "sshd_conflicts: comment" in error, error
    assert host.exec("sha256sum /etc/ssh/sshd_config.d/* /etc/ssh/sshd_config").stdout == before
    assert password_offered(fleet, host)

    # comment: the line goes, inside the armed change; passwords are refused afterwards
    res, rep = apply(workdir, "-e", "sshd_conflicts=comment", name="comment.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert changed_resources(rep[host.name]) >= {f"file {FOREIGN}", "service sshd"}
    lines = host.read_file(FOREIGN).splitlines()
    assert lines[1].startswith("#PasswordAuthentication yes  # gpuprov"), lines
    assert lines[2].startswith("#AuthenticationMethods any  # gpuprov"), lines
    assert lines[0] == "# left by an old image" and lines[3] == "X11Forwarding no", lines
    backups = host.exec(f"ls {FOREIGN}.*~").stdout.split()
    assert len(backups) == 1 and host.read_file(backups[0]) == FOREIGN_TEXT
    assert effective(host, "passwordauthentication") == "no"
    assert not password_offered(fleet, host)
    assert password_login_refused(fleet, host)
    assert fleet.ssh(host, "sudo -n true && echo ok").stdout.strip() == "ok"
    assert revert_processes(host) == "", "the armed revert was cancelled once confirmed"

    res, rep = apply(workdir, "-e", "sshd_conflicts=comment", name="again.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert rep[host.name]["changed"] == 0, res.stdout
    drift = drift_check(workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr
