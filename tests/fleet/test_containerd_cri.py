"""A Kubernetes cluster node's containerd over real SSH (issue 20): the bundled
site.yml with container_runtime containerd, containerd_package containerd (Debian
12's own containerd and runc, real packages from the stand-in archive: see
tests/fleet/realdebs.py) and containerd_nvidia_default on a systemd cluster host
without Docker: the CRI plugin enabled, runc's SystemdCgroup, the nvidia runtime
the default one, CDI enabled and its spec generated, read back from the real
`containerd config dump` (config.toml merged over containerd's built-in
defaults); second apply 0 changed; config.toml tampered (CRI disabled again) is
drift (exit 3) and the next apply fixes it. A Kubernetes node needs no Docker:
the image and verify roles (they run the image with docker) are skipped."""

from __future__ import annotations

import json
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
SKIP = ("--skip-tags", "image,verify,jupyter")


@pytest.fixture(scope="module")
def node(fleet: Fleet, systemd_hosts: list[FleetHost]) -> FleetHost:
    chosen = [h for h in systemd_hosts if "cluster" in h.groups][0]
    fleet.reset(chosen)
    return chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, node: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("containerd-cri")
    inventory = fleet.inventory([node])
    inventory["all"]["vars"].update(site_vars(fleet.repo_url))
    inventory["all"]["children"]["cluster"]["vars"] = {
        "container_runtime": "containerd", "containerd_nvidia_default": True,
        "containerd_package": "containerd", "docker_install": False}
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    return work


def effective(node: FleetHost) -> dict:
    return tomllib.loads(node.exec("sudo containerd config dump").stdout)


@pytest.fixture(scope="module")
def converged(workdir: Path, node: FleetHost) -> dict:
    first = gpuprov("apply", "inventory.yml", *SKIP, "--report", "first.json", cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    return report(workdir / "first.json")


def test_debians_containerd_is_installed(fleet: Fleet, converged: dict,
                                        node: FleetHost) -> None:
    manifest = json.loads(next((fleet.cache / "realdebs").glob("*/manifest.json")).read_text())
    for name in ("containerd", "runc"):
        assert node.exec(f"dpkg-query -W -f '${{Version}}' {name}").stdout == \
            manifest["packages"][name]["version"]
    assert node.exec("dpkg-query -W containerd.io docker-ce", check=False).returncode != 0


def test_cluster_node_gets_cri_the_nvidia_runtime_and_cdi(converged: dict,
                                                         node: FleetHost) -> None:
    dump = effective(node)
    assert not {"cri", CRI} & set(dump.get("disabled_plugins", [])), dump
    section = dump["plugins"][CRI]
    # containerd's built-in defaults are in the dump: the real containerd merged them
    assert section["sandbox_image"].startswith("registry.k8s.io/pause:")
    # Debian 12's containerd is 1.6, which has no CDI (enable_cdi came with 1.7):
    # the key is not even in its dump; the role says so in a note (below) and
    # still generates the spec, which nvidia-container-runtime's cdi mode reads
    assert "enable_cdi" not in section
    runtimes = section["containerd"]["runtimes"]
    assert runtimes["nvidia"]["options"]["BinaryName"].endswith("/nvidia-container-runtime")
    assert section["containerd"]["default_runtime_name"] == "nvidia"
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True  # a systemd host
    assert "libcuda.so.580.95.05" in (node.read_file("/etc/cdi/nvidia.yaml") or "")


def test_second_apply_changes_nothing(workdir: Path, converged: dict, node: FleetHost) -> None:
    second = gpuprov("apply", "inventory.yml", *SKIP, "--report", "second.json", cwd=workdir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert report(workdir / "second.json")[node.name]["changed"] == 0
    drift = gpuprov("drift-check", "inventory.yml", *SKIP, cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert "this containerd has no CDI support" in " ".join(drift.stdout.split())


def test_the_real_daemon_runs_with_the_cri_plugin(converged: dict, node: FleetHost) -> None:
    assert node.exec("systemctl is-active containerd").stdout.strip() == "active"
    plugins = node.exec("ctr plugins ls").stdout
    # the real daemon under the host's systemd: the CRI plugin loaded, not skipped
    cri = [row for row in map(str.split, plugins.splitlines())
           if row[:2] == ["io.containerd.grpc.v1", "cri"]]
    assert cri and cri[0][-1] == "ok", plugins


def test_cri_disabled_again_is_drift_and_apply_fixes_it(workdir: Path, converged: dict,
                                                        node: FleetHost) -> None:
    text = node.read_file("/etc/containerd/config.toml") or ""
    # Debian's config.toml never disabled CRI: the tamper adds the line (top-level
    # keys come before the first table), with the plugin's full id: a version 2
    # config refuses containerd.io's short "cri" ("invalid disabled plugin URI")
    node.write_file("/etc/containerd/config.toml", f'disabled_plugins = ["{CRI}"]\n' + text)
    assert CRI in effective(node)["disabled_plugins"]
    drift = gpuprov("drift-check", "inventory.yml", *SKIP, cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    # rich wraps the long line at the terminal width: compare words
    words = " ".join((drift.stdout + drift.stderr).split())
    assert f"the CRI plugin is disabled (disabled_plugins: {CRI})" in words, words
    fix = gpuprov("apply", "inventory.yml", *SKIP, cwd=workdir)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert effective(node).get("disabled_plugins", []) == []
    # restarted by the handler with the fixed config, and up
    assert node.exec("systemctl is-active containerd").stdout.strip() == "active"
    # the nvidia runtime written by nvidia-ctk is still there: only CRI was touched
    assert effective(node)["plugins"][CRI]["containerd"]["default_runtime_name"] == "nvidia"
    clean = gpuprov("drift-check", "inventory.yml", *SKIP, cwd=workdir)
    assert clean.returncode == 0, clean.stdout + clean.stderr
