"""gpuprov.fabric over real SSH (issue 17): a Fabric ThreadingGroup built
from the fleet's inventory runs `hostname` on two hosts and sudo on one,
with gpuprov's known_hosts; with a known_hosts that does not know the
hosts, every connection is refused before any login and nothing is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fabric.exceptions import GroupException

from gpuprov.fabric import HostKeyRefused, group
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> list[FleetHost]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:2]
    assert len(chosen) == 2
    return chosen


def inventory(fleet: Fleet, hosts: list[FleetHost], path: Path,
              known_hosts: Path | None = None) -> Path:
    data = fleet.inventory(hosts)
    if known_hosts is not None:
        data["all"]["vars"]["ssh_known_hosts_file"] = str(known_hosts)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_hostname_on_two_hosts_and_sudo(fleet: Fleet, hosts: list[FleetHost],
                                        tmp_path: Path) -> None:
    path = inventory(fleet, hosts, tmp_path / "inventory.yml")
    known_before = fleet.known_hosts.read_text()
    lab = group(path, ",".join(h.name for h in hosts), ssh_config=tmp_path / "no-config")
    try:
        results = lab.run("hostname", hide=True, in_stream=False)
        got = {conn.inventory_name: result.stdout.strip() for conn, result in results.items()}
        assert got == {h.name: h.exec("hostname").stdout.strip() for h in hosts}
        assert lab[0].sudo("id -un", hide=True, in_stream=False).stdout == "root\n"
    finally:
        lab.close()
    assert fleet.known_hosts.read_text() == known_before


def test_an_unknown_host_key_is_refused(fleet: Fleet, hosts: list[FleetHost],
                                        tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    path = inventory(fleet, hosts, tmp_path / "inventory.yml", known_hosts=empty)
    marker = "/tmp/gpuprov-fabric-must-not-run"
    with pytest.raises(GroupException) as caught:
        group(path, ssh_config=tmp_path / "no-config").run(f"touch {marker}", hide=True,
                                                           in_stream=False)
    failures = caught.value.result
    assert len(failures) == 2
    for failure in failures.values():
        assert isinstance(failure, HostKeyRefused), failure
        assert "strict host key checking" in str(failure)
    assert empty.read_text() == ""
    for host in hosts:
        assert host.exec(f"test -e {marker}", check=False).returncode != 0
