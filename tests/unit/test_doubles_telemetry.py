"""The nvidia-smi double's telemetry (tests/doubles/lib/gpuprov_double_gpu_telemetry.py):
the query fields `gpuprov status` asks, scriptable per GPU through the state
file, [N/A] where a real board has no answer, and the exact probes of
facts/telemetry.py run against it (this machine's python3, a temp dir as the host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.facts.telemetry import GpuProcesses, GpuTelemetry
from tests.unit.test_doubles import DOUBLES, Host

STATE = "/var/lib/gpuprov-test-double/gpu-state.json"
FIELDS = ("index,temperature.gpu,power.draw,power.limit,ecc.errors.uncorrected.volatile.total,"
          "retired_pages.pending,clocks_event_reasons.active")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    host = Host(tmp_path / "root")
    host.driver("580.95.05", "580.95.05")
    return host


def csv(host: Host, *args: str) -> list[str]:
    result = host.run("nvidia-smi", *args)
    assert result.returncode == 0, result.stdout
    return result.stdout.splitlines()


def test_idle_healthy_gpus_by_default(host: Host) -> None:
    assert csv(host, f"--query-gpu={FIELDS}", "--format=csv") == [
        "index, temperature.gpu, power.draw [W], power.limit [W], "
        "ecc.errors.uncorrected.volatile.total, retired_pages.pending, "
        "clocks_event_reasons.active",
        "0, 32, 60.12 W, 400.00 W, 0, No, 0x0000000000000001",
        "1, 32, 60.12 W, 400.00 W, 0, No, 0x0000000000000001"]


def test_a_test_scripts_a_hot_gpu_with_ecc_errors(host: Host) -> None:
    host.write(STATE, json.dumps({"1": {"temperature.gpu": 91,
                                        "ecc.errors.uncorrected.volatile.total": 2,
                                        "clocks_event_reasons.active": "0x0000000000000040",
                                        "power.draw": "[N/A]"}}))
    assert csv(host, f"--query-gpu={FIELDS}", "--format=csv,noheader")[1] == \
        "1, 91, [N/A], 400.00 W, 2, No, 0x0000000000000040"
    # the single reasons and the pre-R535 name read the same bitmask
    assert csv(host, "--query-gpu=clocks_throttle_reasons.active,"
               "clocks_event_reasons.hw_thermal_slowdown,clocks_throttle_reasons.sw_power_cap",
               "--format=csv,noheader", "-i", "1") == \
        ["0x0000000000000040, Active, Not Active"]


def test_a_board_without_ecc_and_an_older_gpu_say_na(host: Host) -> None:
    host.write("/etc/gpuprov-test-double/gpus.json", json.dumps([
        {"name": "NVIDIA GeForce RTX 4090", "memory_total_mib": 24564, "uuid": "GPU-rtx",
         "pci_bus_id": "00000000:01:00.0", "ecc": False, "power_cap_w": 450},
        {"name": "Tesla T4", "memory_total_mib": 15360, "uuid": "GPU-t4",
         "pci_bus_id": "00000000:00:1E.0"}]))
    assert csv(host, f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits")[0] == \
        "0, 32, 60.12, 450.00, [N/A], [N/A], 0x0000000000000001"
    assert csv(host, "--query-remapped-rows=gpu_uuid,remapped_rows.pending",
               "--format=csv,noheader,nounits") == ["GPU-rtx, 0", "GPU-t4, [N/A]"]


def test_compute_apps(host: Host) -> None:
    assert csv(host, "--query-compute-apps=pid,used_memory,gpu_uuid",
               "--format=csv,noheader,nounits") == []
    host.write(STATE, json.dumps({"compute_apps": [
        {"pid": 4242, "gpu": 1, "used_memory": 2048, "process_name": "python3"}]}))
    assert csv(host, "--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
               "--format=csv") == [
        "pid, process_name, used_gpu_memory [MiB], gpu_uuid",
        "4242, python3, 2048 MiB, GPU-9b2c7d40-3e15-4f0a-8d7c-1a2b3c4d5e02"]
    bad = host.run("nvidia-smi", "--query-compute-apps=bogus", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus"' in bad.stdout


def _probe(host: Host, tmp_path: Path, fact: GpuTelemetry | GpuProcesses) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "nvidia-smi"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {DOUBLES}/bin/nvidia-smi "$@"\n')
    shim.chmod(0o755)
    env = {**host.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", fact.command().shell()], env=env, capture_output=True,
                          text=True, timeout=60, check=False).stdout


def test_the_status_probes_read_the_double(host: Host, tmp_path: Path) -> None:
    host.write(STATE, json.dumps({
        "0": {"temperature.gpu": 91, "retired_pages.pending": "Yes",
              "remapped_rows.pending": "1"},
        "compute_apps": [{"pid": os.getpid(), "gpu": 0, "used_memory": 300}]}))
    report = GpuTelemetry().process(_probe(host, tmp_path, GpuTelemetry()), 0)
    assert (report.driver_version, report.cuda_version) == ("580.95.05", "13.0")
    hot, cool = report.gpus
    assert (hot.temperature_c, hot.retired_pages_pending, hot.remapped_rows_pending,
            hot.power_limit_w, hot.ecc_volatile_uncorrected) == (91.0, True, True, 400.0, 0)
    assert (cool.temperature_c, cool.remapped_rows_pending) == (32.0, False)
    (proc,) = GpuProcesses().process(_probe(host, tmp_path, GpuProcesses()), 0)
    assert (proc.pid, proc.gpu_uuid, proc.used_memory_mib) == (os.getpid(), hot.uuid, 300.0)
    assert proc.user


# ---------------------------------------------------------------- docker stats

def test_docker_stats_of_running_containers_scriptable(tmp_path: Path) -> None:
    from tests.unit.test_doubles import IMAGE
    host = Host(tmp_path / "root")
    host.driver("580.95.05", "580.95.05")
    host.dpkg(nvidia_container_toolkit="1.17.8-1", nvidia_container_toolkit_base="1.17.8-1")
    host.daemon({"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}})
    host.write("/proc/meminfo", "MemTotal:       65536000 kB\n")
    assert host.run("docker", "run", "-d", "--name", "lab", IMAGE).returncode == 0
    assert host.run("docker", "run", "-d", "--name", "old", IMAGE).returncode == 0
    assert host.run("docker", "stop", "old").returncode == 0
    fmt = "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}"
    stats = host.run("docker", "stats", "--no-stream", "--format", fmt)
    assert stats.stdout == "lab 0.15% 48MiB / 62.5GiB 12\n"
    assert sorted(host.run("docker", "stats", "--no-stream", "-a", "--format",
                           "{{.Name}} {{.PIDs}}").stdout.splitlines()) == ["lab 12", "old 0"]
    host.write("/var/lib/gpuprov-test-double/docker/stats.json",
               json.dumps({"lab": {"CPUPerc": "250.00%", "PIDs": "412"}}))
    rows = [json.loads(line) for line in host.run(
        "docker", "container", "stats", "--no-stream", "--format", "{{json .}}",
        "lab").stdout.splitlines()]
    assert [(r["Container"], r["Name"], r["CPUPerc"], r["PIDs"]) for r in rows] == \
        [("lab", "lab", "250.00%", "412")]
    table = host.run("docker", "stats", "--no-stream").stdout.splitlines()
    assert table[0].startswith("CONTAINER ID   NAME") and "250.00%" in table[1]
    missing = host.run("docker", "stats", "--no-stream", "nope")
    assert missing.returncode == 1 and "No such container: nope" in missing.stderr
