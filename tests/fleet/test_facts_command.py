"""`gpuprov facts` over real SSH (issue 17): every fact of two fleet hosts
in one connection and one round trip each, a stopped host exits 4, and
--fact picks (a data_dir on the host: its disk too)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet


@pytest.fixture(scope="module")
def work(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:3]
    work = tmp_path_factory.mktemp("facts")
    inventory = fleet.inventory(chosen)
    inventory["all"]["vars"]["data_dir"] = "/srv/{{ inventory_hostname }}"
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    for host in chosen:
        host.exec(f"mkdir -p /srv/{host.name}")
    return work, chosen


def test_every_fact_in_one_round_trip_and_a_stopped_host(
        work: tuple[Path, list[FleetHost]]) -> None:
    path, (first, second, gone) = work
    gone.stop()
    try:
        proc = gpuprov("facts", "inventory.yml", "-T", "3", cwd=path, timeout=120)
    finally:
        gone.start()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert "timeout" in data[gone.name]["unreachable"]
    for host in (first, second):
        facts = data[host.name]
        assert (facts["connections"], facts["round_trips"]) == (1, 1), facts
        assert facts["os"]["id"] == "debian" and facts["init"] == "sysvinit"
        assert facts["cpu"]["threads"] == os.cpu_count()   # the fleet shares this kernel
        assert facts["memory"]["total_mib"] > 0
        assert [d["path"] for d in facts["disk"]] == ["/", f"/srv/{host.name}"]
        assert all(d["size_mib"] for d in facts["disk"]), facts["disk"]
        if host.exec("command -v nvidia-smi", check=False).returncode != 0:
            assert facts["gpus"] == [] and facts["nvidia"]["reason"] == \
                "nvidia-smi is not installed"


def test_fact_picks(work: tuple[Path, list[FleetHost]]) -> None:
    path, (first, _, _) = work
    proc = gpuprov("facts", "inventory.yml", "-l", first.name, "--fact", "kernel,docker",
                   cwd=path, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads(proc.stdout)[first.name]
    assert set(facts) == {"kernel", "docker", "connections", "round_trips"}
    assert facts["kernel"] == os.uname().release
