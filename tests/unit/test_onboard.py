"""Onboarding pieces without a host: the inventory edit (comments kept,
idempotent, a host in another group refused), the onboard_access role's
plan, and `gpuprov onboard --dry-run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpuprov.errors import InventoryError
from gpuprov.facts.files import FileState
from gpuprov.facts.system import ShellTest
from gpuprov.facts.users import UserAccount, UserHome
from gpuprov.model.inventory_edit import replace_with_backup, with_host
from tests.unit.role_harness import plan_role, system_for

INVENTORY = """\
# Our lab fleet
all:
  vars:
    ansible_user: admin   # the admin user
  children:
    lab:
      vars:
        gpu_devices: "0"
      hosts:
        ws-01:
          ansible_host: 10.0.0.1   # first box

    # cloud VMs
    cloud:
      hosts:
        vm-a:
"""


def test_a_host_goes_after_the_groups_last_host_and_every_line_stays() -> None:
    after = with_host(INVENTORY, "inv.yml", "lab", "ws-02", {"ansible_host": "10.0.0.2"})
    assert after == INVENTORY.replace(
        "# first box\n", "# first box\n        ws-02:\n          ansible_host: 10.0.0.2\n")
    data = yaml.safe_load(after)
    assert data["all"]["children"]["lab"]["hosts"]["ws-02"] == {"ansible_host": "10.0.0.2"}
    assert with_host(after, "inv.yml", "lab", "ws-02", {}) == after   # idempotent


def test_a_new_group_is_created_and_a_bare_host_has_no_vars() -> None:
    after = with_host(INVENTORY, "inv.yml", "cluster", "node-1", {})
    assert yaml.safe_load(after)["all"]["children"]["cluster"] == {"hosts": {"node-1": None}}
    assert after.startswith(INVENTORY.rstrip("\n").rsplit("\n", 1)[0])   # comments kept
    last = with_host(INVENTORY, "inv.yml", "cloud", "vm-b", {})
    assert last == INVENTORY + "        vm-b:\n"


def test_a_host_already_in_another_group_is_refused() -> None:
    with pytest.raises(InventoryError, match="ws-01 is already in group lab"):
        with_host(INVENTORY, "inv.yml", "cloud", "ws-01", {})


def test_not_an_inventory_is_an_error_naming_the_file() -> None:
    with pytest.raises(InventoryError, match="bad.yml: expected a mapping"):
        with_host("- a\n- b\n", "bad.yml", "lab", "x", {})
    with pytest.raises(InventoryError, match="bad.yml: not valid YAML"):
        with_host("all: [\n", "bad.yml", "lab", "x", {})


def test_replace_keeps_a_backup_and_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text("old\n")
    path.chmod(0o600)
    backup = replace_with_backup(path, "new\n")
    assert path.read_text() == "new\n" and backup.read_text() == "old\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*tmp"))


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpuprovtestkeyXXXXXXXXXXXXXXXXXXXXXXXXXXX"


def plan_access(account: UserAccount | None, **vars: object):
    """A fresh host: no user (unless `account`), no .ssh, no sudoers file."""
    home = account.home if account else "/home/admin"
    facts: dict = {UserHome("admin"): account, ShellTest("id admin"): account is not None}
    for path in (f"{home}/.ssh", f"{home}/.ssh/authorized_keys",
                 "/etc/sudoers.d/90-gpuprov-admin"):
        for content in (True, False):
            for sudo in (True, False):
                facts[FileState(path, content=content, sudo=sudo)] = None
    return plan_role("onboard_access", system_for("debian12"), facts,
                     vars={"onboard_user": "admin", "onboard_authorized_keys": [KEY], **vars})


def test_onboard_access_creates_user_key_and_sudoers() -> None:
    plan = plan_access(None)
    assert [p.op.label for p in plan.ops] == [
        "command user admin", "directory /home/admin/.ssh",
        "line in /home/admin/.ssh/authorized_keys", "file /etc/sudoers.d/90-gpuprov-admin"]
    commands = "\n".join(plan.commands)
    assert "useradd --create-home --shell /bin/bash admin" in commands
    assert "visudo -cf" in commands
    sudoers = [s.stdin for c in plan.changes for s in c.steps
               if c.resource == "file /etc/sudoers.d/90-gpuprov-admin" and s.stdin]
    assert sudoers == [b"# Managed by gpuprov onboard\nadmin ALL=(ALL) NOPASSWD: ALL\n"]


def test_onboard_access_uses_the_existing_home_and_password_sudo() -> None:
    plan = plan_access(UserAccount("/srv/home/admin", "staff"), onboard_sudo="password")
    assert "directory /srv/home/admin/.ssh" in [p.op.label for p in plan.ops]
    assert any(s.stdin and s.stdin.endswith(b"admin ALL=(ALL) ALL\n")
               for c in plan.changes for s in c.steps)


@pytest.mark.parametrize(("vars", "message"), [
    ({"onboard_user": "root"}, "onboard_user"),
    ({"onboard_authorized_keys": ["not a key"]}, "onboard_authorized_keys"),
    ({"onboard_sudo": "maybe"}, "onboard_sudo"),
])
def test_onboard_access_refuses_bad_variables(vars: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        plan_access(None, **vars)


def test_dry_run_shows_the_inventory_diff_and_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    res = subprocess.run([sys.executable, "-m", "gpuprov.cli", "onboard", "ws-02", str(path),
                          "--group", "lab", "--address", "10.0.0.2", "--dry-run"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "+        ws-02:\n+          ansible_host: 10.0.0.2\n" in res.stdout
    assert path.read_text() == INVENTORY and list(tmp_path.iterdir()) == [path]


def test_unknown_inventory_is_one_clear_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "gpuprov.cli", "onboard", "ws-02",
                          str(tmp_path / "missing.yml"), "--group", "lab", "--dry-run"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert res.returncode == 1
    assert "cannot read the inventory" in res.stderr and "missing.yml" in res.stderr
