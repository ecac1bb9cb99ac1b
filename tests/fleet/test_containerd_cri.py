"""A Kubernetes cluster node's containerd over real SSH (issue 20): the bundled
site.yml with container_runtime containerd and containerd_nvidia_default on a
cluster host: the CRI plugin enabled, the nvidia runtime the default one, CDI
enabled and its spec generated, read back from `containerd config dump`;
second apply 0 changed; config.toml tampered (CRI disabled again) is drift
(exit 3) and the next apply fixes it.

The fleet's containerd is the containerd.io stand-in, whose `config dump`
prints config.toml as it is (no built-in defaults merged): Debian's real
containerd is not in the stand-in archive yet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import site_vars
from tests.fleet.test_engine import gpuprov, report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CRI = "io.containerd.grpc.v1.cri"


@pytest.fixture(scope="module")
def node(fleet: Fleet) -> FleetHost:
    chosen = [h for h in fleet.hosts if h.variant == "default" and "cluster" in h.groups][0]
    fleet.reset(chosen)
    return chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, node: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("containerd-cri")
    inventory = fleet.inventory([node])
    inventory["all"]["vars"].update(site_vars(fleet.repo_url))
    inventory["all"]["children"]["cluster"]["vars"] = {
        "container_runtime": "containerd", "containerd_nvidia_default": True}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return work


def effective(node: FleetHost) -> dict:
    return tomllib.loads(node.exec("sudo containerd config dump").stdout)


@pytest.fixture(scope="module")
def converged(workdir: Path, node: FleetHost) -> dict:
    first = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    return report(workdir / "first.json")


def test_cluster_node_gets_cri_the_nvidia_runtime_and_cdi(converged: dict,
                                                         node: FleetHost) -> None:
    dump = effective(node)
    assert not {"cri", CRI} & set(dump.get("disabled_plugins", [])), dump
    section = dump["plugins"][CRI]
    assert section["enable_cdi"] is True
    runtimes = section["containerd"]["runtimes"]
    assert runtimes["nvidia"]["options"]["BinaryName"].endswith("/nvidia-container-runtime")
    assert section["containerd"]["default_runtime_name"] == "nvidia"
    assert "libcuda.so.580.95.05" in (node.read_file("/etc/cdi/nvidia.yaml") or "")


def test_second_apply_changes_nothing(workdir: Path, converged: dict, node: FleetHost) -> None:
    second = gpuprov("apply", "inventory.yml", "--report", "second.json", cwd=workdir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert report(workdir / "second.json")[node.name]["changed"] == 0
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_cri_disabled_again_is_drift_and_apply_fixes_it(workdir: Path, converged: dict,
                                                        node: FleetHost) -> None:
    text = node.read_file("/etc/containerd/config.toml") or ""
    assert "disabled_plugins = []" in text, text
    node.write_file("/etc/containerd/config.toml",
                    text.replace("disabled_plugins = []", 'disabled_plugins = ["cri"]'))
    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert "CRI plugin is disabled" in drift.stdout + drift.stderr
    fix = gpuprov("apply", "inventory.yml", cwd=workdir)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert "cri" not in effective(node).get("disabled_plugins", [])
    # the nvidia runtime written by nvidia-ctk is still there: only CRI was touched
    assert effective(node)["plugins"][CRI]["containerd"]["default_runtime_name"] == "nvidia"
    clean = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert clean.returncode == 0, clean.stdout + clean.stderr
