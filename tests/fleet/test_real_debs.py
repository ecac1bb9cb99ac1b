"""Debian's real packages in the stand-in archive (tests/fleet/realdebs.py):
what pull mode installs on a host (python3, python3-venv, git, cron) installs
with apt from the fleet's archive on both init systems and works: a venv is
made, cron runs as a service. The base root has python3 only as the doubles'
copied interpreter, so dpkg does not list it and apt installs the real one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fleet import base
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0"
DOUBLES_PYTHON = "/usr/libexec/gpuprov-test-doubles/python3"


@pytest.fixture(scope="module")
def sysv_host(fleet: Fleet) -> FleetHost:
    return fleet.add_host(group="lab")


@pytest.fixture(scope="module")
def manifest(fleet: Fleet) -> dict:
    archive = Path(fleet.repos.archive_dir)  # type: ignore[union-attr]
    real = {p.name for p in archive.glob("*.deb")}
    found = sorted((fleet.cache / "realdebs").glob("*/manifest.json"))
    assert found, "no real .debs fetched"
    data = json.loads(found[-1].read_text())
    assert {e["file"] for e in data["packages"].values()} <= real
    return data


def test_base_has_python_only_for_the_doubles(fleet: Fleet, sysv_host: FleetHost) -> None:
    for name in base.PURGED:
        res = fleet.ssh(sysv_host, f"dpkg-query -W -f '${{Status}}' {name}", check=False)
        assert "ok installed" not in res.stdout, name
    doubles = fleet.ssh(sysv_host, f"{DOUBLES_PYTHON} -c 'import json, sqlite3; print(1)'")
    assert doubles.stdout.strip() == "1"
    assert fleet.ssh(sysv_host, "git --version").stdout.startswith("git version 2.39")


@pytest.mark.parametrize("init", ["sysvinit", "systemd"])
def test_pull_mode_packages_install_and_work(fleet: Fleet, sysv_host: FleetHost,
                                             systemd_hosts: list[FleetHost], manifest: dict,
                                             init: str) -> None:
    host = sysv_host if init == "sysvinit" else systemd_hosts[0]
    fleet.ssh(host, f"sudo {APT} update && sudo {APT} install python3 python3-venv git cron")
    version = fleet.ssh(host, "dpkg-query -W -f '${Version}' python3.11").stdout
    assert version == manifest["packages"]["python3.11"]["version"]
    fleet.ssh(host, "rm -rf /tmp/v && python3 -m venv /tmp/v && /tmp/v/bin/pip --version")
    assert fleet.ssh(host, "/tmp/v/bin/python -c 'import sys; print(sys.prefix)'"
                     ).stdout.strip() == "/tmp/v"
    if init == "systemd":
        assert fleet.ssh(host, "systemctl is-active cron").stdout.strip() == "active"
    else:
        # the postinst's invoke-rc.d started it through the fleet's runlevel 2
        assert fleet.ssh(host, "pidof cron", check=False).stdout.strip()
    # the doubles still have their own interpreter and stdlib
    assert fleet.ssh(host, f"{DOUBLES_PYTHON} -c 'import ssl; print(2)'").stdout.strip() == "2"
