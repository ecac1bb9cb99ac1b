"""-u/--user and --private-key over real SSH (issue 17): they override the
inventory's login on every host, and a key file the inventory names that is
not there is refused before any connection, naming the host and file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    return next(h for h in fleet.hosts if h.variant == "default")


def inventory(work: Path, fleet: Fleet, host: FleetHost, **host_vars: str) -> Path:
    """The host with no login user and no key: only -u/--private-key give them."""
    path = work / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"ssh_known_hosts_file": str(fleet.known_hosts)},
        "hosts": {host.name: {"ansible_host": host.address, **host_vars}}}}))
    return path


def test_user_and_private_key_log_in_where_the_inventory_names_neither(
        fleet: Fleet, host: FleetHost, tmp_path: Path) -> None:
    inv = inventory(tmp_path, fleet, host)
    ok = gpuprov("facts", "-i", str(inv), "-u", "admin", "--private-key", str(fleet.client_key),
                 "-T", "5", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)[host.name]["os"]["id"] == "debian"
    # -u is really used: a user the host lacks is refused with the same key
    wrong_user = gpuprov("facts", str(inv), "-u", "nobody-here", "--private-key",
                         str(fleet.client_key), "-T", "5", cwd=tmp_path)
    assert wrong_user.returncode == 4, wrong_user.stdout + wrong_user.stderr
    assert "nobody-here" in wrong_user.stdout + wrong_user.stderr


def test_private_key_wins_over_the_inventorys_key(fleet: Fleet, host: FleetHost,
                                                  tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    other.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n"
                     "-----END OPENSSH PRIVATE KEY-----\n")
    other.chmod(0o600)
    inv = inventory(tmp_path, fleet, host, ansible_user="admin",
                    ansible_ssh_private_key_file=str(other))
    ok = gpuprov("drift-check", str(inv), "--private-key", str(fleet.client_key), "-t", "base",
                 "--list-hosts", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    facts = gpuprov("facts", str(inv), "--private-key", str(fleet.client_key), "-T", "5",
                    cwd=tmp_path)
    assert facts.returncode == 0, facts.stdout + facts.stderr


def test_a_missing_key_file_is_refused_before_connecting(fleet: Fleet, host: FleetHost,
                                                         tmp_path: Path) -> None:
    inv = inventory(tmp_path, fleet, host, ansible_user="admin",
                    ansible_ssh_private_key_file=str(tmp_path / "gone"))
    result = gpuprov("facts", str(inv), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {inv}:")
    assert f"{host.name}: ansible_ssh_private_key_file {tmp_path / 'gone'}: the key file " \
           "does not exist" in result.stderr
