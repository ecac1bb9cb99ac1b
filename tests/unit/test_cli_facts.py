"""`gpuprov facts`: every fact by default in one round trip, --fact picks,
an unknown name is a usage error naming the valid ones, data_dir's disk,
no GPU reads as `gpus: []` and why, an unreachable host exits 4.

The hosts are `ansible_connection: local` (this machine, read-only) and an
SSH host on a closed loopback port."""

from __future__ import annotations

import json
import platform
import shutil
import socket
import textwrap
from pathlib import Path

import pytest

from gpuprov.engine.collect import CATALOGUE, _gpu, disk_paths
from gpuprov.facts.nvidia import Gpu, LoadedDriver
from gpuprov.model.hosts import Host
from tests.unit.cli_runner import gpuprov

ALL_KEYS = {"os", "os_family", "supported", "kernel", "arch", "init", "secure_boot",
            "reboot_pending", "gpus", "nvidia", "cpu", "memory", "disk", "docker",
            "containerd", "connections", "round_trips"}


@pytest.fixture()
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(f"""\
        all:
          vars:
            ansible_connection: local
            become: false
          hosts:
            h1:
            h2:
              lab_name: vision
              data_dir: "{tmp_path}/{{{{ 'da' }}}}ta"
        """))
    return path


def test_every_fact_by_default_in_one_round_trip(inventory: Path) -> None:
    result = gpuprov("facts", str(inventory), "-l", "h1")
    assert result.code == 0, result.both
    data = json.loads(result.stdout)["h1"]
    assert set(data) == ALL_KEYS
    assert (data["connections"], data["round_trips"]) == (1, 1)
    assert data["kernel"] == platform.release()
    assert data["cpu"]["threads"] >= 1 and data["memory"]["total_mib"] > 0
    assert [d["path"] for d in data["disk"]] == ["/"]
    assert data["secure_boot"] in ("enabled", "disabled", "unknown")
    if shutil.which("nvidia-smi") is None:
        assert data["gpus"] == [] and data["nvidia"]["reason"] == "nvidia-smi is not installed"
    docker = shutil.which("docker")
    assert (data["docker"] is None) == (docker is None)


def test_fact_picks_names_repeated_or_comma_separated(inventory: Path) -> None:
    result = gpuprov("facts", str(inventory), "--fact", "cpu,memory", "--fact", "kernel",
                     "--fact", "cpu")
    assert result.code == 0, result.both
    data = json.loads(result.stdout)
    assert list(data) == ["h1", "h2"]
    for host in data.values():
        assert set(host) == {"cpu", "memory", "kernel", "connections", "round_trips"}
        assert host["round_trips"] == 1


def test_disk_covers_the_hosts_data_dir(inventory: Path, tmp_path: Path) -> None:
    result = gpuprov("facts", str(inventory), "--fact", "disk")
    assert result.code == 0, result.both
    data = json.loads(result.stdout)
    assert [d["path"] for d in data["h1"]["disk"]] == ["/"]
    root, data_dir = data["h2"]["disk"]
    assert data_dir["path"] == f"{tmp_path}/data" and data_dir["size_mib"] > 0
    assert data_dir["error"] is None


def test_an_unknown_fact_is_a_usage_error_naming_the_valid_ones(inventory: Path) -> None:
    result = gpuprov("facts", str(inventory), "--fact", "cpu,gpuz")
    assert result.code == 1
    assert "unknown fact 'gpuz'" in result.stderr
    assert "valid names: " + ", ".join(CATALOGUE) in result.stderr
    assert result.stdout == ""


def test_help_lists_every_fact_name(inventory: Path) -> None:
    result = gpuprov("facts", "--help")
    assert result.code == 0
    listed = [line.split()[0] for line in result.stdout.splitlines()
              if line.startswith("    ") and line.split()[0] in CATALOGUE]
    assert listed == list(CATALOGUE)


def test_an_unreachable_host_exits_4(inventory: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "dead.yml"
    path.write_text(textwrap.dedent(f"""\
        all:
          hosts:
            h1: {{ansible_connection: local, become: false}}
            dead:
              ansible_host: 127.0.0.1
              ansible_port: {port}
              ssh_known_hosts_file: {tmp_path / 'known_hosts'}
        """))
    result = gpuprov("facts", str(path), "--fact", "kernel", "-T", "2")
    assert result.code == 4, result.both
    data = json.loads(result.stdout)
    assert data["h1"]["kernel"] == platform.release()
    assert "refused" in data["dead"]["unreachable"] and data["dead"]["error"] is None


def test_gpu_render_ok_and_without_nvidia_smi() -> None:
    ok = LoadedDriver("ok", "580.95.05", "13.0", (Gpu(0, "NVIDIA A100-SXM4-80GB", 81920,
                                                      "GPU-5d1b"),))
    assert _gpu([ok]) == {
        "gpus": [{"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_total_mib": 81920,
                  "uuid": "GPU-5d1b"}],
        "nvidia": {"state": "ok", "driver_version": "580.95.05", "cuda_version": "13.0",
                   "reason": None}}
    none = _gpu([LoadedDriver("no-smi", message="nvidia-smi is not installed")])
    assert none["gpus"] == [] and none["nvidia"]["reason"] == "nvidia-smi is not installed"
    empty = _gpu([LoadedDriver("ok", "580.95.05", "13.0", ())])
    assert empty["nvidia"]["reason"] == "nvidia-smi lists no GPU"


def test_disk_paths_render_data_dir_only_when_the_inventory_sets_it() -> None:
    assert disk_paths(Host("a")) == ("/",)
    assert disk_paths(Host("b", vars={"lab": "x", "data_dir": "/srv/{{ lab }}"})) == (
        "/", "/srv/x")
    assert disk_paths(Host("c", vars={"data_dir": "/"})) == ("/",)


def test_inventory_by_option(inventory: Path) -> None:
    result = gpuprov("facts", "-i", str(inventory), "-l", "h2", "--fact", "kernel")
    assert result.code == 0, result.both
    assert list(json.loads(result.stdout)) == ["h2"]
