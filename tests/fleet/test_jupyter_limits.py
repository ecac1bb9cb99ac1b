"""The Jupyter container's resource limits on a fleet host with the stand-in
GPU stack and docker (the docker double keeps them in HostConfig as docker
does): apply runs the container with jupyter_memory, jupyter_cpus,
jupyter_shm_size and jupyter_pids_limit; a `docker update` behind gpuprov's
back, and a limit changed in the inventory, are drift (exit 3) naming the
limit and both values; apply recreates the container, and the next apply
changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import changed_resources, gpuprov, report
from tests.fleet.test_jupyter_auth import IMAGE, PLAYBOOK, stand_in_gpu_host

NAME = "gpuprov-jupyter"
GIB = 1 << 30
LIMITS = {"jupyter_memory": "16g", "jupyter_cpus": 1.5, "jupyter_shm_size": "1g",
          "jupyter_pids_limit": 4096}


def write_inventory(fleet: Fleet, host: FleetHost, work: Path, **limits: object) -> None:
    inventory = fleet.inventory([host])
    inventory["all"]["vars"].update({"gpu_image": IMAGE, **LIMITS, **limits})
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))


def host_config(fleet: Fleet, host: FleetHost) -> tuple:
    [info] = json.loads(fleet.ssh(host, f"sudo docker inspect {NAME}").stdout)
    config = info["HostConfig"]
    return tuple(config[k] for k in ("Memory", "NanoCpus", "ShmSize", "PidsLimit"))


def apply(work: Path, name: str) -> dict:
    """`gpuprov apply`, which must succeed; its report of the host."""
    result = gpuprov("apply", "inventory.yml", "-p", "jupyter.yml", "--report", name, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    [host] = report(work / name).values()
    return host


def drift(work: Path) -> tuple[int, str, list[dict]]:
    """drift-check's exit status, its text, and its JSON drift of the one host."""
    text = gpuprov("drift-check", "inventory.yml", "-p", "jupyter.yml", cwd=work)
    data = gpuprov("drift-check", "inventory.yml", "-p", "jupyter.yml", "--format", "json",
                   cwd=work)
    assert text.returncode == data.returncode, text.stdout + data.stdout
    [host] = json.loads(data.stdout)["hosts"].values()
    return text.returncode, text.stdout + text.stderr, host["drift"]


@pytest.fixture(scope="module")
def limited(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetHost, Path]:
    host = stand_in_gpu_host(fleet)
    work = tmp_path_factory.mktemp("jupyter-limits")
    write_inventory(fleet, host, work)
    (work / "jupyter.yml").write_text(PLAYBOOK)
    apply(work, "first.json")
    return host, work


def test_apply_runs_the_container_with_the_declared_limits(
        fleet: Fleet, limited: tuple[FleetHost, Path]) -> None:
    host, work = limited
    assert host_config(fleet, host) == (16 * GIB, 1_500_000_000, GIB, 4096)
    assert drift(work)[0] == 0
    assert changed_resources(apply(work, "again.json")) == set()


def test_a_docker_update_is_drift_that_apply_undoes(
        fleet: Fleet, limited: tuple[FleetHost, Path]) -> None:
    host, work = limited
    fleet.ssh(host, f"sudo docker update --memory 8g --pids-limit 100 {NAME}")
    code, text, found = drift(work)
    assert code == 3, text
    summary = (f"{NAME} runs with memory 8g, declared 16g; "
               f"{NAME} runs with pids-limit 100, declared 4096")
    assert [(d["resource"], d.get("summary")) for d in found] == [
        (f"container {NAME}", summary)], found
    assert f"{NAME} runs with memory 8g, declared 16g" in text
    fixed = apply(work, "fix.json")
    assert changed_resources(fixed) == {f"container {NAME}"}
    assert host_config(fleet, host) == (16 * GIB, 1_500_000_000, GIB, 4096)
    assert drift(work)[0] == 0
    assert changed_resources(apply(work, "after-fix.json")) == set()


def test_a_limit_changed_in_the_inventory_is_drift_until_applied(
        fleet: Fleet, limited: tuple[FleetHost, Path]) -> None:
    host, work = limited
    write_inventory(fleet, host, work, jupyter_memory="12g", jupyter_shm_size="2g")
    code, text, found = drift(work)
    assert code == 3, text
    [container] = [d for d in found if d["resource"] == f"container {NAME}"]
    assert container["summary"].endswith(f"{NAME} runs with memory 16g, declared 12g; "
                                         f"{NAME} runs with shm-size 1g, declared 2g")
    apply(work, "changed.json")
    assert host_config(fleet, host) == (12 * GIB, 1_500_000_000, 2 * GIB, 4096)
    assert drift(work)[0] == 0
    assert changed_resources(apply(work, "changed-again.json")) == set()
