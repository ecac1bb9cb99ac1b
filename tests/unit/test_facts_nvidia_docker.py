"""NVIDIA and Docker facts: process() of canned outputs, the probes run by a
real /bin/sh against fake nvidia-smi / docker commands, the in-container
check script against a stub torch, and the pure helpers (gpus_arg,
parse_image_ref, installed_drivers_deb/rpm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.facts.base import FactError, gather_script, parse_batch
from gpuprov.facts.docker import (
    VERIFY_SCRIPT,
    ContainerGpu,
    ContainerGpuTest,
    DockerImage,
    DockerImageState,
    ImageInfo,
    ImageRef,
    gpus_arg,
    parse_image_ref,
)
from gpuprov.facts.nvidia import (
    Gpu,
    InstalledDriver,
    LoadedDriver,
    MokEnrolled,
    NvidiaSmi,
    driver_branch,
    installed_drivers_deb,
    installed_drivers_rpm,
)
from tests.unit.role_facts import deb, rpm, rpms

MARK = "@@gpuprov-nvidia-smi"
UUID0 = "GPU-5e1c6b0a-91a4-4b1c-9d0e-3f6c2a8b7d10"
UUID1 = "GPU-7f3d2c1b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"
MIG = "MIG-4f1c2d3e-aaaa-bbbb-cccc-0123456789ab"
QUERY = (f"0, NVIDIA A100-SXM4-80GB, 580.95.05, 81920, {UUID0}\n"
         f"1, NVIDIA A100-SXM4-80GB, 580.95.05, 81920, {UUID1}\n")
BANNER = ("Mon Nov 23 12:00:00 2026\n"
          "+-----------------------------------------------------------------------------+\n"
          "| NVIDIA-SMI 580.95.05        Driver Version: 580.95.05    CUDA Version: 13.0  |\n"
          "+-----------------------------------------------------------------------------+\n")
A100S = (Gpu(0, "NVIDIA A100-SXM4-80GB", 81920, UUID0), Gpu(1, "NVIDIA A100-SXM4-80GB", 81920,
                                                             UUID1))
MISMATCH = ("Failed to initialize NVML: Driver/library version mismatch\n"
            "NVML library version: 580.95")
NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")


# ---------------------------------------------------------------- NvidiaSmi.process

def test_nvidia_smi_ok() -> None:
    output = f"{QUERY}{MARK} 0\nCUDA Version: 13.0\n"
    assert NvidiaSmi().process(output, 0) == LoadedDriver("ok", "580.95.05", "13.0", A100S)
    assert NvidiaSmi().process(output, 0).branch == 580


def test_nvidia_smi_memory_not_available_and_no_banner() -> None:
    output = f"0, Tesla T4, 535.274.02, [N/A], {UUID0}\n{MARK} 0\n"
    assert NvidiaSmi().process(output, 0) == LoadedDriver(
        "ok", "535.274.02", None, (Gpu(0, "Tesla T4", None, UUID0),))


@pytest.mark.parametrize(("output", "expected"), [
    ("no-smi\n", LoadedDriver("no-smi", message="nvidia-smi is not installed")),
    (f"{MISMATCH}\n{MARK} 18\n",
     LoadedDriver("mismatch", message="Failed to initialize NVML: Driver/library version "
                                      "mismatch")),
    (f"{NO_DRIVER}\n\n{MARK} 9\n", LoadedDriver("no-driver", message=NO_DRIVER)),
    (f"Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error\n{MARK} 15\n",
     LoadedDriver("error", message="Unable to determine the device handle for "
                                   "GPU0000:3B:00.0: Unknown Error")),
    (f"{MARK} 255\n", LoadedDriver("error", message="exit 255")),
])
def test_nvidia_smi_failures(output: str, expected: LoadedDriver) -> None:
    got = NvidiaSmi().process(output, 0)
    assert got == expected
    assert got.branch is None


def test_nvidia_smi_ok_without_gpus() -> None:
    assert NvidiaSmi().process(f"{MARK} 0\n", 0) == LoadedDriver("ok")


@pytest.mark.parametrize(("version", "branch"), [
    ("580.95.05", 580), ("1:580.95.05-0ubuntu0.22.04.1", 580), ("3:550.163.01-1.el9", 550),
    ("535.274.02-1", 535), ("garbage", None), ("", None)])
def test_driver_branch(version: str, branch: int | None) -> None:
    assert driver_branch(version) == branch


# ---------------------------------------------------------------- NvidiaSmi, really run

FAKE_SMI = """#!/bin/sh
case "$1" in
  --query-gpu=*) printf '%s' "$QUERY_OUT"; exit "${QUERY_RC:-0}" ;;
  *) printf '%s' "$BANNER_OUT"; exit "${QUERY_RC:-0}" ;;
esac
"""


def gather(fact, path: str, **env: str):
    script, marker = gather_script([fact])
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": path, **env})
    return parse_batch([fact], out.stdout, marker)[fact]


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    return bin_dir


def test_nvidia_smi_probe_ok(fake_bin: Path) -> None:
    got = gather(NvidiaSmi(), f"{fake_bin}:/usr/bin:/bin", QUERY_OUT=QUERY, BANNER_OUT=BANNER)
    assert got == LoadedDriver("ok", "580.95.05", "13.0", A100S)


def test_nvidia_smi_probe_mismatch(fake_bin: Path) -> None:
    got = gather(NvidiaSmi(), f"{fake_bin}:/usr/bin:/bin", QUERY_OUT=MISMATCH + "\n",
                 BANNER_OUT=MISMATCH + "\n", QUERY_RC="18")
    assert got == LoadedDriver("mismatch", message="Failed to initialize NVML: "
                                                   "Driver/library version mismatch")


def test_nvidia_smi_probe_not_installed(tmp_path: Path) -> None:
    assert gather(NvidiaSmi(), str(tmp_path)).state == "no-smi"


# ---------------------------------------------------------------- installed drivers

def test_installed_drivers_deb() -> None:
    dpkg = {p.name: p for p in [
        # Ubuntu archive: the branch is in the name
        deb("nvidia-headless-no-dkms-580-server", "580.82.07-0ubuntu0.22.04.1", held=True),
        deb("nvidia-utils-580-server", "580.95.05-0ubuntu0.22.04.2", held=True),
        deb("libnvidia-compute-580-server", "580.95.05-0ubuntu0.22.04.2"),   # not a driver pkg
        deb("nvidia-driver-550-open", "550.163.01-0ubuntu0.22.04.1"),
        deb("nvidia-utils-535-server", "535.247.01-0ubuntu0.22.04.1", status="config-files"),
        # CUDA repository / Debian: the branch comes from the version
        deb("nvidia-open", "590.44.01-1"),
        deb("nvidia-kernel-open-dkms", "590.48.01-1", status="half-configured"),   # broken
        deb("cuda-drivers", "590.44.01-1", status="unpacked"),
        deb("nvidia-container-toolkit", "1.18.0-1"),
        deb("bash", "5.2.21-2"),
    ]}
    assert installed_drivers_deb(dpkg) == {
        580: InstalledDriver(580, "580.95.05-0ubuntu0.22.04.2",
                             ("nvidia-headless-no-dkms-580-server", "nvidia-utils-580-server")),
        550: InstalledDriver(550, "550.163.01-0ubuntu0.22.04.1", ("nvidia-driver-550-open",)),
        590: InstalledDriver(590, "590.48.01-1",
                             ("cuda-drivers", "nvidia-kernel-open-dkms", "nvidia-open")),
    }
    assert installed_drivers_deb({}) == {}


def test_installed_drivers_deb_newest_version_wins() -> None:
    # the version is the newest by dpkg's order, not the longest string
    dpkg = {p.name: p for p in [deb("nvidia-open", "580.95.05-1"),
                                deb("nvidia-driver", "580.82.07-1+deb12u1"),
                                deb("cuda-drivers", "580.95.05~rc1-1")]}
    assert installed_drivers_deb(dpkg)[580].version == "580.95.05-1"


def test_installed_drivers_rpm() -> None:
    rows = rpms(rpm("nvidia-open", "580.95.05", "1.el9", epoch=3),
                rpm("nvidia-driver", "580.105.08", "1.el9", epoch=3),
                rpm("kmod-nvidia-open-dkms", "580.95.05", "1.el9", epoch=3),
                rpm("nvidia-kmod-common", "550.163.01", "1.el9", epoch=3),
                rpm("nvidia-container-toolkit", "1.18.0", "1"),
                rpm("kernel-devel", "5.14.0", "427.13.1.el9_4"))
    assert installed_drivers_rpm(rows) == {
        580: InstalledDriver(580, "580.105.08",
                             ("kmod-nvidia-open-dkms", "nvidia-driver", "nvidia-open")),
        550: InstalledDriver(550, "550.163.01", ("nvidia-kmod-common",)),
    }
    assert installed_drivers_rpm({}) == {}


# ---------------------------------------------------------------- MokEnrolled

@pytest.mark.parametrize(("output", "enrolled"), [
    ("/var/lib/dkms/mok.pub is already enrolled\n", True),
    ("/var/lib/dkms/mok.pub is not enrolled\n", False),
    ("", None),                                     # no key yet (test -r failed)
    ("EFI variables are not supported on this system\n", None),
])
def test_mok_enrolled(output: str, enrolled: bool | None) -> None:
    assert MokEnrolled().process(output, 0 if enrolled else 1) is enrolled


def test_mok_enrolled_probe_without_key(tmp_path: Path) -> None:
    fact = MokEnrolled(str(tmp_path / "mok.pub"))
    assert fact.command().shell() == f"test -r {tmp_path}/mok.pub && mokutil --test-key " \
                                     f"{tmp_path}/mok.pub"
    assert gather(fact, "/usr/bin:/bin") is None


# ---------------------------------------------------------------- DockerImage

# what DockerInspect's template prints for an image (one line per object)
INSPECT = {"id": "sha256:" + "5a" * 32, "tags": ["pytorch/pytorch:2.9.0-cuda12.8"],
           "digests": ["pytorch/pytorch@sha256:" + "d1" * 32], "state": None,
           "labels": {"org.opencontainers.image.title": "x"}, "ports": None}
INSPECT_LINE = json.dumps(INSPECT, separators=(",", ":")) + "\n"


@pytest.mark.parametrize(("output", "code", "expected"), [
    ("no-docker\n", 0, DockerImageState("absent", message="docker is not installed")),
    ("\nError: No such object: pytorch/pytorch:2.9.0-cuda12.8\n", 1, DockerImageState("ok")),
    ("\nerror: no such object: pytorch/pytorch:2.9.0-cuda12.8\n", 1, DockerImageState("ok")),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
     "daemon running?\n", 1,
     DockerImageState("down", message="Cannot connect to the Docker daemon at "
                                      "unix:///var/run/docker.sock. Is the docker daemon "
                                      "running?")),
    ("", 125, DockerImageState("down", message="docker exited 125")),
    (INSPECT_LINE, 0,
     DockerImageState("ok", ImageInfo("sha256:" + "5a" * 32, ("pytorch/pytorch:2.9.0-cuda12.8",),
                                      ("pytorch/pytorch@sha256:" + "d1" * 32,)))),
    # a container (or a network: no sha256 id) by that name is not the image
    ('{"id":"' + "ab" * 32 + '","tags":null,"digests":null,"state":{"status":"running",'
     '"running":true},"labels":{},"ports":{}}\n', 0, DockerImageState("ok")),
    ('{"id":"' + "ab" * 32 + '","tags":null,"digests":null,"state":null,"labels":null,'
     '"ports":null}\n', 0, DockerImageState("ok")),
])
def test_docker_image(output: str, code: int, expected: DockerImageState) -> None:
    assert DockerImage("pytorch/pytorch:2.9.0-cuda12.8").process(output, code) == expected


def test_docker_image_garbage_is_a_fact_error() -> None:
    with pytest.raises(FactError, match="printed no JSON"):
        DockerImage("x:1").process("[]junk\n", 0)


def test_docker_image_command_is_one_inspect_of_it() -> None:
    shell = DockerImage("present:1").command().shell()
    assert shell.startswith("command -v docker >/dev/null 2>&1 || { echo no-docker; exit 0; }; "
                            "docker inspect --format ")
    assert shell.endswith(" -- present:1 2>&1")


def test_docker_image_probe(tmp_path: Path) -> None:
    # the last argument is the name, as `docker inspect --format F -- NAME` has it
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\n"
                    "for a; do ref=$a; done\n"
                    f"if [ \"$ref\" = present:1 ]; then printf '%s' '{INSPECT_LINE}'\n"
                    "exit 0; fi\n"
                    "echo; echo \"Error: No such object: $ref\" >&2; exit 1\n")
    fake.chmod(0o755)
    path = f"{tmp_path}:/usr/bin:/bin"
    assert gather(DockerImage("present:1"), path).image.id == "sha256:" + "5a" * 32
    assert gather(DockerImage("missing:1"), path) == DockerImageState("ok")
    assert gather(DockerImage("missing:1"), str(tmp_path / "empty")).docker == "absent"
    assert DockerImage("x").sudo is True


def test_image_info_has_digest() -> None:
    info = ImageInfo("sha256:1", (), ("docker.io/library/ubuntu@sha256:" + "a" * 64,))
    assert info.has_digest(parse_image_ref("ubuntu:24.04"), "sha256:" + "a" * 64)
    assert not info.has_digest(parse_image_ref("ubuntu:24.04"), "sha256:" + "b" * 64)
    assert not info.has_digest(parse_image_ref("lab/ubuntu:24.04"), "sha256:" + "a" * 64)


# ---------------------------------------------------------------- ContainerGpuTest

def verify_line(**data: object) -> str:
    return "@@gpuprov-verify " + json.dumps(data)


@pytest.mark.parametrize(("output", "expected"), [
    ("Unable to find image locally\n" + verify_line(
        torch="2.9.0+cu128", cuda="12.8", available=True,
        devices=["NVIDIA A100-SXM4-80GB"], matmul=True) + "\n",
     ContainerGpu(True, "2.9.0+cu128", "12.8", ("NVIDIA A100-SXM4-80GB",))),
    (verify_line(torch="2.9.0+cu128", cuda="12.8", available=False) + "\n",
     ContainerGpu(False, "2.9.0+cu128", "12.8", (),
                  "torch.cuda.is_available() is False inside the container")),
    (verify_line(torch="2.9.0+cu128", cuda="12.8", available=True, devices=["T4"],
                 matmul=False) + "\n",
     ContainerGpu(False, "2.9.0+cu128", "12.8", ("T4",),
                  "the matmul on the GPU gave a wrong result")),
    (verify_line(error="ModuleNotFoundError: No module named 'torch'") + "\n",
     ContainerGpu(False, error="ModuleNotFoundError: No module named 'torch'")),
    ("docker: Error response from daemon: could not select device driver \"\" with "
     "capabilities: [[gpu]].\n\nRun 'docker run --help' for more information\n",
     ContainerGpu(False, error="docker: Error response from daemon: could not select device "
                               "driver \"\" with capabilities: [[gpu]]. | Run 'docker run "
                               "--help' for more information")),
    ("", ContainerGpu(False, error="docker run exited 125")),
])
def test_container_gpu(output: str, expected: ContainerGpu) -> None:
    assert ContainerGpuTest("img:1").process(output, 0 if expected.ok else 125) == expected


STUB_TORCH = """
__version__ = "2.9.0+cu128"
class version:
    cuda = "12.8"
class _T:
    def __init__(self, v): self.v = v
    def __matmul__(self, other): return _T([[32.0] * 32] * 32)
    def sum(self): return _T(sum(map(sum, self.v)))
    def item(self): return self.v
class cuda:
    @staticmethod
    def is_available(): return AVAILABLE
    @staticmethod
    def device_count(): return 2
    @staticmethod
    def get_device_name(i): return f"NVIDIA A100-SXM4-80GB #{i}"
def ones(*shape, device=None):
    assert device == "cuda"
    return _T([[1.0] * shape[1]] * shape[0])
"""


@pytest.mark.parametrize("available", [True, False])
def test_verify_script_against_stub_torch(tmp_path: Path, available: bool) -> None:
    (tmp_path / "torch.py").write_text(f"AVAILABLE = {available}\n{STUB_TORCH}")
    out = subprocess.run([sys.executable, "-c", VERIFY_SCRIPT], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path)}, check=True)
    got = ContainerGpuTest("img:1").process(out.stdout, 0)
    if available:
        assert got == ContainerGpu(True, "2.9.0+cu128", "12.8",
                                   ("NVIDIA A100-SXM4-80GB #0", "NVIDIA A100-SXM4-80GB #1"))
    else:
        assert got == ContainerGpu(False, "2.9.0+cu128", "12.8", (),
                                   "torch.cuda.is_available() is False inside the container")


def test_verify_script_without_torch(tmp_path: Path) -> None:
    # an image without torch (a stub that fails to import, whatever the host has)
    (tmp_path / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\")\n")
    out = subprocess.run([sys.executable, "-c", VERIFY_SCRIPT], capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path)}, check=True)
    got = ContainerGpuTest("img:1").process(out.stdout, 0)
    assert got == ContainerGpu(False, error="ModuleNotFoundError: No module named 'torch'")


def test_container_gpu_test_command() -> None:
    cmd = ContainerGpuTest("ghcr.io/lab/img:1", "0,1").command()
    assert cmd.parts[:10] == ("docker", "run", "--rm", "--pull", "never", "--gpus",
                              '"device=0,1"', "--entrypoint", "python3", "ghcr.io/lab/img:1")
    assert cmd.parts[10:12] == ("-c", VERIFY_SCRIPT)
    assert ContainerGpuTest("x").sudo is True


# ---------------------------------------------------------------- gpus_arg

@pytest.mark.parametrize(("devices", "arg"), [
    ("all", "all"),
    (" all ", "all"),
    ("0", '"device=0"'),
    ("0,1", '"device=0,1"'),
    (" 0 , 1 ", '"device=0,1"'),
    (UUID0, f'"device={UUID0}"'),
    (f"{UUID0},{UUID1}", f'"device={UUID0},{UUID1}"'),
    (MIG, f'"device={MIG}"'),
])
def test_gpus_arg(devices: str, arg: str) -> None:
    assert gpus_arg(devices) == arg


@pytest.mark.parametrize("devices", ["", "none", "gpu0", "0,", "0;1", "all,0", "-1", "0 1",
                                     "device=0", '"0"'])
def test_gpus_arg_refuses(devices: str) -> None:
    with pytest.raises(ValueError) as exc:
        gpus_arg(devices)
    assert str(exc.value) == ('gpu_devices must be "all" or GPU indexes/UUIDs like "0,1", '
                              f"not {devices.strip()!r}")


# ---------------------------------------------------------------- parse_image_ref

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("ref", "expected", "short"), [
    ("pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime",
     ImageRef("pytorch/pytorch", "2.9.0-cuda12.8-cudnn9-runtime", None), "pytorch/pytorch"),
    ("ubuntu", ImageRef("ubuntu", "latest", None), "ubuntu"),
    ("docker.io/library/ubuntu:24.04", ImageRef("docker.io/library/ubuntu", "24.04", None),
     "ubuntu"),
    ("ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8",
     ImageRef("ghcr.io/example-lab/pytorch-cuda", "2.9.0-cuda12.8", None),
     "ghcr.io/example-lab/pytorch-cuda"),
    ("registry.lab:5000/team/img", ImageRef("registry.lab:5000/team/img", "latest", None),
     "registry.lab:5000/team/img"),
    ("registry.lab:5000/team/img:v1.2", ImageRef("registry.lab:5000/team/img", "v1.2", None),
     "registry.lab:5000/team/img"),
    (f"ghcr.io/lab/img@{D}", ImageRef("ghcr.io/lab/img", None, D), "ghcr.io/lab/img"),
    (f"ghcr.io/lab/img:1.0@{D}", ImageRef("ghcr.io/lab/img", "1.0", D), "ghcr.io/lab/img"),
    ("  ghcr.io/lab/img:1.0 \n", ImageRef("ghcr.io/lab/img", "1.0", None), "ghcr.io/lab/img"),
])
def test_parse_image_ref(ref: str, expected: ImageRef, short: str) -> None:
    got = parse_image_ref(ref)
    assert got == expected
    assert got.short_repo == short


@pytest.mark.parametrize(("ref", "text"), [
    ("ubuntu", "ubuntu:latest"),
    ("registry.lab:5000/team/img", "registry.lab:5000/team/img:latest"),
    (f"ghcr.io/lab/img@{D}", f"ghcr.io/lab/img@{D}"),
    (f"ghcr.io/lab/img:1.0@{D}", f"ghcr.io/lab/img:1.0@{D}"),
])
def test_image_ref_str(ref: str, text: str) -> None:
    assert str(parse_image_ref(ref)) == text


@pytest.mark.parametrize("ref", ["", "Lab/Img:1", "img:tag:extra", "img@sha256:1234",
                                 "img:", ":tag", "img tag", "ghcr.io/lab/img:-bad",
                                 "img@md5:" + "a" * 32])
def test_parse_image_ref_refuses(ref: str) -> None:
    with pytest.raises(ValueError, match="not a docker image reference"):
        parse_image_ref(ref)
