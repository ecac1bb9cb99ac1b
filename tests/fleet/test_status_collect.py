"""engine/status.py over real SSH (issue 18, S1): collect_status on two fleet
hosts with the stand-in driver returns the status data shape with the
doubles' values in one round trip each, a GPU a test made hot shows its
temperature, and `gpuprov apply` leaves the last-apply record that status
then reads (drift-check leaves it as it was)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from gpuprov.engine.executor import RunOptions
from gpuprov.engine.status import collect_status
from gpuprov.model.inventory import Inventory
from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

KERNEL = os.uname().release
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0"
GPU_STATE = "/var/lib/gpuprov-test-double/gpu-state.json"
RECORD = "/var/lib/gpuprov/last-apply.json"
ROLE = '''
from gpuprov.ops.files import file

def tasks(ctx):
    yield file("/etc/gpuprov-status-test.conf", "ok\\n")
'''


@pytest.fixture(scope="module")
def gpu_hosts(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, list[FleetHost]]:
    """Two hosts with the stand-in driver (nvidia-smi double), by apt."""
    hosts = [fleet.add_host(group="lab"), fleet.add_host(group="lab")]
    for host in hosts:
        fleet.ssh(host, f"sudo {APT} update && sudo {APT} install linux-headers-{KERNEL} && "
                  f"sudo {APT} install nvidia-headless-580-server nvidia-utils-580-server")
    work = tmp_path_factory.mktemp("status")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(hosts), sort_keys=False))
    role = work / "roles" / "marker"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (work / "marker.yml").write_text("- hosts: all\n  roles: [marker]\n")
    return work, hosts


def status(work: Path) -> dict[str, dict]:
    inventory = Inventory.load(work / "inventory.yml")
    return collect_status(list(inventory.hosts.values()), RunOptions())


def test_two_hosts_in_one_round_trip_each_with_the_doubles_values(
        gpu_hosts: tuple[Path, list[FleetHost]]) -> None:
    work, (hot, cool) = gpu_hosts
    hot.write_file(GPU_STATE, json.dumps({
        "0": {"temperature.gpu": 91, "clocks_event_reasons.active": "0x0000000000000040"},
        "compute_apps": [{"pid": 1, "gpu": 0, "used_memory": 2048}]}))
    data = status(work)
    assert set(data) == {hot.name, cool.name}
    for host in (hot, cool):
        one = data[host.name]
        assert (one["reachable"], one["error"], one["round_trips"]) == (True, None, 1), one
        assert (one["driver_version"], one["cuda_version"], one["gpu_reason"]) == \
            ("580.95.05", "13.0", None)
        assert [(g["index"], g["name"]) for g in one["gpus"]] == \
            [(0, "NVIDIA A100-SXM4-80GB"), (1, "NVIDIA A100-SXM4-80GB")]
        gpu = one["gpus"][1]
        assert (gpu["temperature_c"], gpu["power_draw_w"], gpu["power_limit_w"],
                gpu["memory_total_mib"], gpu["ecc_volatile_uncorrected"],
                gpu["retired_pages_pending"], gpu["remapped_rows_pending"],
                gpu["throttle_reasons"], gpu["processes"]) == \
            (32.0, 60.12, 400.0, 81920.0, 0, False, False, [], [])
        health = one["host_health"]
        assert health["uptime_s"] > 0 and len(health["load"]) == 3
        assert 0 < health["memory_available_mib"] <= health["memory_total_mib"]
        assert health["reboot_pending"] is False
        # data_dir: the jupyter role's default, not made on these hosts
        assert (health["data_dir"], health["data_dir_free_mib"]) == ("/srv/gpuprov/data", None)
        services = one["services"]
        assert (services["sshd"], services["docker"], services["containerd"]) == \
            ("running", "absent", "absent")
        jupyter = services["jupyter"]
        assert (jupyter["container"], jupyter["spec_matches"], jupyter["port"],
                jupyter["http_status"]) == ("absent", None, 8888, None), jupyter
        # minbase has no curl and the doubles' python3 is off PATH: bash asked
        assert jupyter["detail"] == \
            "docker is not installed; port 8888: no HTTP answer (bash /dev/tcp)"
        assert one["last_apply"] is None
    gpu0 = data[hot.name]["gpus"][0]
    assert (gpu0["temperature_c"], gpu0["throttle_reasons"]) == (91.0, ["hw_thermal_slowdown"])
    assert gpu0["processes"] == [{"pid": 1, "user": "root", "container": None,
                                  "used_memory_mib": 2048.0}]
    assert data[cool.name]["gpus"][0]["temperature_c"] == 32.0


def test_apply_records_itself_and_status_reads_it(
        gpu_hosts: tuple[Path, list[FleetHost]]) -> None:
    work, (hot, cool) = gpu_hosts
    proc = gpuprov("apply", "inventory.yml", "-p", "marker.yml", "-l", cool.name, cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # written by the lock's holder as the run lets it go: nothing waits for it
    deadline = time.monotonic() + 10
    while cool.exec(f"test -s {RECORD}", check=False).returncode != 0:
        assert time.monotonic() < deadline, "no last-apply record"
        time.sleep(0.2)
    assert cool.exec(f"stat -c '%U:%G %a' {RECORD}").stdout.strip() == "root:root 644"
    record = json.loads(cool.read_file(RECORD))
    assert record["gpu_count"] == 2 and record["playbook"].endswith("marker.yml")
    assert hot.exec(f"test -e {RECORD}", check=False).returncode != 0
    drift = gpuprov("drift-check", "inventory.yml", "-p", "marker.yml", "-l", cool.name,
                    cwd=work)
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert json.loads(cool.read_file(RECORD)) == record
    data = status(work)
    assert data[cool.name]["last_apply"] == {"time": record["time"],
                                             "version": record["version"], "gpu_count": 2}
    assert data[hot.name]["last_apply"] is None


def test_a_systemd_host_without_a_gpu(fleet: Fleet,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    # Debian 12 under systemd: sshd is ssh.service (sshd.service its alias), the
    # services are asked of systemctl, and no nvidia-smi says why there is no GPU
    host = fleet.add_host(variant="systemd", group="lab")
    work = tmp_path_factory.mktemp("status-systemd")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]),
                                                       sort_keys=False))
    one = status(work)[host.name]
    assert (one["reachable"], one["error"], one["round_trips"]) == (True, None, 1), one
    assert (one["gpus"], one["gpu_reason"], one["driver_version"]) == \
        ([], "nvidia-smi is not installed", None)
    assert (one["services"]["sshd"], one["services"]["docker"]) == ("running", "absent")
    assert one["host_health"]["uptime_s"] > 0 and one["last_apply"] is None
