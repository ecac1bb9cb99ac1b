"""The stand-in packages install with apt from the fleet's repo and behave
like the real ones where gpuprov's roles depend on it."""

from __future__ import annotations

import json
import os

import pytest

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

KERNEL = os.uname().release
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0"


@pytest.fixture(scope="module")
def gpu_host(fleet: Fleet) -> FleetHost:
    return fleet.add_host(group="lab")


def test_packages_install_per_host_from_the_local_repo(fleet: Fleet) -> None:
    a, b = fleet.add_host(group="cloud"), fleet.add_host(group="cloud")
    fleet.ssh(a, f"sudo {APT} update && sudo {APT} install mokutil")
    assert fleet.ssh(a, "mokutil --sb-state").stdout.strip() == "SecureBoot disabled"
    assert fleet.ssh(b, "dpkg-query -W mokutil", check=False).returncode != 0
    a.write_file("/etc/gpuprov-test-double/secure-boot", "enabled\n")
    assert fleet.ssh(a, "mokutil --sb-state").stdout.strip() == "SecureBoot enabled"


def test_driver_needs_headers_like_dkms(fleet: Fleet, gpu_host: FleetHost) -> None:
    fleet.ssh(gpu_host, f"sudo {APT} update")
    res = fleet.ssh(gpu_host, f"sudo {APT} install nvidia-headless-580-server "
                    "nvidia-utils-580-server", check=False)
    assert res.returncode != 0
    assert f"Your kernel headers for kernel {KERNEL} cannot be found" in res.stdout + res.stderr
    fleet.ssh(gpu_host, f"sudo {APT} install linux-headers-{KERNEL} && sudo dpkg --configure -a")
    status = fleet.ssh(gpu_host, "dpkg-query -W -f '${Status} ${Version}' "
                       "nvidia-headless-580-server").stdout
    assert status == "install ok installed 580.95.05-0ubuntu1"
    smi = fleet.ssh(gpu_host, "nvidia-smi").stdout
    assert "Driver Version: 580.95.05" in smi and "CUDA Version: 13.0" in smi
    csv = fleet.ssh(gpu_host, "nvidia-smi --query-gpu=index,name,driver_version "
                    "--format=csv,noheader").stdout.splitlines()
    assert csv == ["0, NVIDIA A100-SXM4-80GB, 580.95.05", "1, NVIDIA A100-SXM4-80GB, 580.95.05"]


def test_branch_upgrade_needs_a_reboot(fleet: Fleet) -> None:
    host = fleet.add_host(group="cluster")
    fleet.ssh(host, f"sudo {APT} update && sudo {APT} install linux-headers-{KERNEL} "
              "nvidia-headless-550-server nvidia-utils-550-server")
    assert "550.163.01" in fleet.ssh(host, "nvidia-smi").stdout
    fleet.ssh(host, f"sudo {APT} install nvidia-headless-580-server nvidia-utils-580-server")
    old = fleet.ssh(host, "dpkg-query -W -f '${Status}' nvidia-headless-550-server",
                    check=False).stdout
    assert "installed" not in old.replace("config-files", "")  # removed (conffiles may stay)
    res = fleet.ssh(host, "nvidia-smi", check=False)
    assert res.returncode == 18 and "Driver/library version mismatch" in res.stdout + res.stderr
    host.reboot()
    assert "580.95.05" in fleet.ssh(host, "nvidia-smi").stdout


def test_toolkit_from_signed_repo_wires_docker_gpus(fleet: Fleet, gpu_host: FleetHost) -> None:
    repos = fleet.repos
    key = repos.binary_keys["libnvidia-container"].read_bytes()
    gpu_host.exec("cat > /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg", input=key)
    gpu_host.write_file(
        "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
        "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
        f"{fleet.repo_url}/libnvidia-container/stable/deb/$(ARCH) /\n")
    update = fleet.ssh(gpu_host, f"sudo {APT} update")
    assert "NO_PUBKEY" not in update.stdout + update.stderr
    fleet.ssh(gpu_host, f"sudo {APT} install docker-ce nvidia-container-toolkit=1.17.8-1 "
              "nvidia-container-toolkit-base=1.17.8-1 libnvidia-container-tools=1.17.8-1 "
              "libnvidia-container1=1.17.8-1")
    assert "1.17.8" in fleet.ssh(gpu_host, "nvidia-ctk --version").stdout
    image = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
    fleet.ssh(gpu_host, f"sudo docker pull {image}")
    # Without the runtime wired into the daemon, --gpus fails like the real one.
    res = fleet.ssh(gpu_host, f"sudo docker run --rm --gpus all {image} nvidia-smi", check=False)
    assert res.returncode == 125 and "could not select device driver" in res.stderr
    gpu_host.write_file("/etc/docker/daemon.json", '{"log-driver": "journald"}\n')
    fleet.ssh(gpu_host, "sudo nvidia-ctk runtime configure --runtime=docker")
    daemon = json.loads(gpu_host.read_file("/etc/docker/daemon.json") or "{}")
    assert daemon["log-driver"] == "journald"
    assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    fleet.ssh(gpu_host, "sudo service docker restart")
    out = fleet.ssh(gpu_host, f"sudo docker run --rm --gpus '\"device=1\"' {image} "
                    "nvidia-smi -L").stdout
    assert out.count("GPU ") == 1
    torch = fleet.ssh(gpu_host, f"sudo docker run --rm --gpus all {image} python -c "
                      "'import torch; x = torch.ones(4, 4, device=\"cuda\"); "
                      "print(torch.cuda.is_available(), (x @ x).sum().item())'").stdout
    assert torch.split() == ["True", "64.0"]
    calls = gpu_host.read_file("/var/lib/gpuprov-test-double/docker/calls.log") or ""
    assert any('"--gpus"' in line for line in calls.splitlines())


def test_chrony_service_reads_drop_ins_and_stops_on_remove(fleet: Fleet) -> None:
    host = fleet.add_host(group="lab")
    fleet.ssh(host, f"sudo {APT} update && sudo {APT} install chrony")
    status = fleet.ssh(host, "dpkg-query -W -f '${Status} ${Version}' chrony").stdout
    assert status == "install ok installed 4.3-2+deb12u1"
    assert fleet.ssh(host, "sudo service chrony status", check=False).returncode == 0
    assert fleet.ssh(host, "pgrep -x chronyd", check=False).returncode == 0
    assert "10.0.0.1" not in fleet.ssh(host, "chronyc sources").stdout
    restarts_log = "/var/lib/gpuprov-test-double/chrony/restarts.log"
    before = len((host.read_file(restarts_log) or "").splitlines())
    assert before >= 1  # the postinst started it
    host.write_file("/etc/chrony/conf.d/gpuprov.conf", "server 10.0.0.1 iburst\n")
    fleet.ssh(host, "sudo service chrony restart")
    assert "10.0.0.1" in fleet.ssh(host, "chronyc sources").stdout
    assert "(10.0.0.1)" in fleet.ssh(host, "chronyc tracking").stdout
    assert len((host.read_file(restarts_log) or "").splitlines()) == before + 1
    fleet.ssh(host, f"sudo {APT} remove chrony")
    # The stopped chronyd may linger as a zombie until PID 1 reaps it (about a second).
    gone = fleet.ssh(host, "for i in $(seq 50); do pgrep -x chronyd >/dev/null || exit 0; "
                     "sleep 0.1; done; exit 1", check=False)
    assert gone.returncode == 0
    assert fleet.ssh(host, "sudo service chrony status", check=False).returncode == 3
    assert host.read_file("/etc/chrony/chrony.conf") is not None  # a conffile stays
