"""Issue 15, broken installs are drift: a managed package whose dependency was
force-removed on the host (as after a fault, or an operator's `dpkg
--force-depends`) or left half-configured is reported by drift-check naming
that package, and the next apply repairs it, leaving dpkg and apt consistent."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov

# The stand-in docker-ce depends on docker-ce-cli (tests/standin_repo/packages.py).
TASKS = '''\
from gpuprov.ops import apt


def tasks(ctx):
    yield apt.packages("docker-ce")
'''


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    chosen = next(h for h in fleet.hosts if h.variant == "default")
    fleet.reset(chosen)
    return chosen


@pytest.fixture(scope="module")
def work(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("broken")
    (tmp / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]), sort_keys=False))
    (tmp / "playbooks").mkdir()
    (tmp / "playbooks" / "site.yml").write_text(
        "- name: broken install\n  hosts: all\n  roles: [docker_pkg]\n")
    role = tmp / "roles" / "docker_pkg"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(TASKS)
    (role / "defaults.yml").write_text("{}\n")
    return tmp


def test_force_removed_dependency_is_drift_and_apply_repairs_it(
        host: FleetHost, work: Path) -> None:
    first = gpuprov("apply", "inventory.yml", cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    clean = gpuprov("drift-check", "inventory.yml", cwd=work)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    host.exec("dpkg --force-depends -r docker-ce-cli")
    assert host.exec("apt-get check", check=False).returncode != 0

    drift = gpuprov("drift-check", "inventory.yml", cwd=work)
    out = drift.stdout + drift.stderr
    assert drift.returncode == 3, out
    assert "docker-ce: depends on docker-ce-cli (not installed)" in out

    fix = gpuprov("apply", "inventory.yml", cwd=work)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    after = gpuprov("drift-check", "inventory.yml", cwd=work)
    assert after.returncode == 0, after.stdout + after.stderr
    assert host.exec("dpkg --audit").stdout.strip() == ""
    assert host.exec("apt-get check", check=False).returncode == 0
    status = host.exec("dpkg-query -W -f='${Status}' docker-ce-cli docker-ce").stdout
    assert status == "install ok installedinstall ok installed"


def test_half_configured_dependency_is_drift_and_apply_repairs_it(
        host: FleetHost, work: Path) -> None:
    first = gpuprov("apply", "inventory.yml", cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    # What a fault in the middle of dpkg's configure step leaves behind.
    host.exec("sed -i '/^Package: docker-ce-cli$/,/^$/s/^Status: install ok installed$/"
              "Status: install ok half-configured/' /var/lib/dpkg/status")
    assert "docker-ce-cli" in host.exec("dpkg --audit").stdout

    drift = gpuprov("drift-check", "inventory.yml", cwd=work)
    out = drift.stdout + drift.stderr
    assert drift.returncode == 3, out
    assert "docker-ce: depends on docker-ce-cli (half-configured)" in out

    fix = gpuprov("apply", "inventory.yml", cwd=work)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    after = gpuprov("drift-check", "inventory.yml", cwd=work)
    assert after.returncode == 0, after.stdout + after.stderr
    assert host.exec("dpkg --audit").stdout.strip() == ""
    assert host.exec("apt-get check", check=False).returncode == 0
