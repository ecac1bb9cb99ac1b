"""Issue 14, command and file hygiene over real SSH: a symlink a user plants
where gpuprov writes never makes gpuprov change a file outside that
directory; hostile package names and user names from the inventory are
refused before anything reaches the host, which stays as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fleet import keys
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov

# Everything gpuprov could have touched, by name, mode, owner and content.
SNAPSHOT = ("cd / && find etc srv home var/lib/gpuprov var/lib/dpkg tmp -xdev "
            "\\( -type f -o -type l -o -type d \\) 2>/dev/null | sort > /run/.snap-list; "
            "xargs -r stat -c '%n %a %U %G %s' < /run/.snap-list; "
            "xargs -r sha256sum < /run/.snap-list 2>/dev/null; rm -f /run/.snap-list")
VICTIMS = "stat -c '%n %a %U %G %s' /etc/hygiene-victim /etc/hygiene-victim.d; " \
          "sha256sum /etc/hygiene-victim; ls -a /etc/hygiene-victim.d"

PROBE_TASKS = '''\
from gpuprov.ops.files import directory, file


def tasks(ctx):
    what = ctx.vars["probe"]
    if what == "file":
        yield file("/srv/shared/app.conf", "managed by gpuprov\\n", mode="0644")
    elif what == "directory":
        yield directory("/srv/shared/data", mode="0777")
'''


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    chosen = next(h for h in fleet.hosts if h.variant == "default")
    fleet.reset(chosen)
    # A root-only file and directory outside the place gpuprov manages...
    chosen.exec("printf 'root only\\n' >/etc/hygiene-victim && chmod 0600 /etc/hygiene-victim"
                " && mkdir -m 0700 /etc/hygiene-victim.d"
                # ...and a directory gpuprov writes to that a user (admin) owns
                " && mkdir -p /srv/shared && chown admin:admin /srv/shared")
    return chosen


def workdir(fleet: Fleet, host: FleetHost, tmp: Path, roles: list[str],
            **variables: object) -> Path:
    inventory = fleet.inventory([host])
    inventory["all"].setdefault("vars", {}).update(variables)
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (tmp / "playbooks").mkdir(exist_ok=True)
    (tmp / "playbooks" / "site.yml").write_text(
        f"- name: hygiene\n  hosts: all\n  roles: [{', '.join(roles)}]\n")
    probe = tmp / "roles" / "hygiene_probe"
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "tasks.py").write_text(PROBE_TASKS)
    (probe / "defaults.yml").write_text("# which probe runs: file or directory\nprobe: file\n")
    return tmp


def test_a_symlink_planted_by_a_user_does_not_redirect_a_root_write(
        fleet: Fleet, host: FleetHost, tmp_path: Path) -> None:
    host.exec("ln -sfn /etc/hygiene-victim /srv/shared/app.conf", user="admin")
    before = host.exec(VICTIMS).stdout
    work = workdir(fleet, host, tmp_path, ["hygiene_probe"], probe="file")
    res = gpuprov("apply", "inventory.yml", cwd=work)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "refusing to write /srv/shared/app.conf: /srv/shared is owned by uid 1000" in out
    assert host.exec(VICTIMS).stdout == before
    assert host.exec("readlink /srv/shared/app.conf").stdout.strip() == "/etc/hygiene-victim"
    assert host.exec("ls -A /srv/shared").stdout.split() == ["app.conf"]   # no temp left


def test_a_symlink_planted_for_a_directory_is_refused(fleet: Fleet, host: FleetHost,
                                                      tmp_path: Path) -> None:
    host.exec("ln -sfn /etc/hygiene-victim.d /srv/shared/data", user="admin")
    before = host.exec(VICTIMS).stdout
    work = workdir(fleet, host, tmp_path, ["hygiene_probe"], probe="directory")
    res = gpuprov("apply", "inventory.yml", cwd=work)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "/srv/shared/data exists and is a symlink" in out
    assert host.exec(VICTIMS).stdout == before


def test_onboard_writes_a_users_keys_as_that_user(fleet: Fleet, host: FleetHost,
                                                  tmp_path: Path) -> None:
    """bob plants ~/.ssh/authorized_keys -> a root file: gpuprov refuses it and
    the root file is untouched; carol, with a plain home, is onboarded (as
    herself: runuser) and can log in with the key."""
    pub = keys.public_key(fleet.client_key)
    host.exec("useradd --create-home --shell /bin/bash bob && "
              "useradd --create-home --shell /bin/bash carol")
    host.exec("mkdir -m 0700 ~/.ssh && ln -s /etc/hygiene-victim ~/.ssh/authorized_keys",
              user="bob")
    before = host.exec(VICTIMS).stdout
    work = workdir(fleet, host, tmp_path, ["onboard_access"], onboard_user="bob",
                   onboard_authorized_keys=[pub])
    res = gpuprov("apply", "inventory.yml", cwd=work)
    assert res.returncode != 0, res.stdout + res.stderr
    assert host.exec(VICTIMS).stdout == before
    assert host.exec("test -e /etc/sudoers.d/90-gpuprov-bob", check=False).returncode != 0

    work = workdir(fleet, host, tmp_path, ["onboard_access"], onboard_user="carol",
                   onboard_authorized_keys=[pub])
    res = gpuprov("apply", "inventory.yml", cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    assert host.exec("stat -c '%U %a' /home/carol/.ssh /home/carol/.ssh/authorized_keys"
                     ).stdout.split() == ["carol", "700", "carol", "600"]
    assert host.exec("cat /home/carol/.ssh/authorized_keys").stdout == pub + "\n"
    assert host.exec(VICTIMS).stdout == before


@pytest.mark.parametrize(("roles", "variables", "message"), [
    (["base"], {"base_packages": ["-oDPkg::Pre-Invoke::=touch /tmp/pwned"]},
     "base_packages"),
    (["onboard_access"], {"onboard_user": "x/../../etc/cron.d/evil"}, "onboard_user"),
    (["onboard_access"], {"onboard_user": "-r"}, "onboard_user"),
])
def test_a_hostile_value_is_refused_and_the_host_is_unchanged(
        fleet: Fleet, host: FleetHost, tmp_path: Path, roles: list[str],
        variables: dict, message: str) -> None:
    before = host.exec(SNAPSHOT).stdout
    work = workdir(fleet, host, tmp_path, roles, **variables)
    res = gpuprov("apply", "inventory.yml", cwd=work)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert message in out and ("not a valid package name" in out or "not a user name" in out)
    assert host.exec("ls /tmp/pwned /etc/cron.d/evil 2>&1", check=False).returncode != 0
    assert host.exec(SNAPSHOT).stdout == before
