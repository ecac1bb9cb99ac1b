"""Role verify against canned nvidia-smi / docker answers: read-only in check
mode, no change when the GPU works, VerifyFailed (or "reboot pending")
otherwise, and the --gpus value built from gpu_devices."""

from __future__ import annotations

import pytest

from gpuprov.engine.handlers import RebootRequired
from gpuprov.facts.base import FactView
from gpuprov.facts.docker import (
    ContainerGpu,
    ContainerGpuTest,
    DockerImage,
    DockerImageState,
    ImageInfo,
)
from gpuprov.facts.nvidia import Gpu, LoadedDriver, NvidiaSmi
from tests.unit.role_facts import ALL_DISTROS, ops_until_failure
from tests.unit.role_harness import RolePlan, plan_role, role_module, system_for

# the role's own module, through the loader its tasks.py is imported with
GpuVerified = role_module("verify", "gpu").GpuVerified
VerifyFailed = role_module("verify", "gpu").VerifyFailed

IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
DIGEST = "sha256:" + "d1" * 32
IMAGE_ID = "sha256:" + "5a" * 32
GPUS = (Gpu(0, "NVIDIA A100-SXM4-80GB", 81920, "GPU-5e1c6b0a-91a4-4b1c-9d0e-3f6c2a8b7d10"),
        Gpu(1, "NVIDIA A100-SXM4-80GB", 81920, "GPU-7f3d2c1b-0a9e-4d8c-b7a6-5e4f3d2c1b0a"))
SMI_OK = LoadedDriver("ok", "580.95.05", "13.0", GPUS)
SMI_MISMATCH = LoadedDriver("mismatch",
                            message="Failed to initialize NVML: Driver/library version mismatch")
IMAGE_OK = DockerImageState("ok", ImageInfo(IMAGE_ID, (IMAGE,),
                                            (f"ghcr.io/example-lab/pytorch-cuda@{DIGEST}",)))
GPU_OK = ContainerGpu(True, "2.9.0+cu128", "12.8", ("NVIDIA A100-SXM4-80GB",) * 2)
GPU_FAIL = ContainerGpu(False, "2.9.0+cu128", "12.8", (),
                        "torch.cuda.is_available() is False inside the container")
PENDING = "install nvidia-open=580.95.05-1 (reboot needed: the running kernel has driver " \
          "550.163.01 loaded, not branch 580)"


def facts(smi: LoadedDriver = SMI_OK, image: DockerImageState = IMAGE_OK,
          gpu: ContainerGpu = GPU_OK, pending: str | None = None, devices: str = "all") -> dict:
    return {NvidiaSmi(): smi, DockerImage(IMAGE): image, ContainerGpuTest(IMAGE, devices): gpu,
            RebootRequired(): pending}


def run(facts: dict, distro: str = "ubuntu2204", check: bool = False, **vars: object
        ) -> RolePlan:
    return plan_role("verify", system_for(distro), facts, vars={"gpu_image": IMAGE, **vars},
                     check=check)


def report(plan: RolePlan, facts: dict) -> dict:
    [planned] = plan.ops
    return planned.op.report(FactView(facts))


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_check_mode_starts_no_container(distro: str) -> None:
    # The role is the same in check mode; the docker run is a probe that runs a
    # workload, which the engine never gathers there (test_hostrun proves it).
    given = facts()
    [planned] = run(given, distro, check=True).ops
    running = [f for f in planned.op.facts() if f.runs]
    assert running == [ContainerGpuTest(IMAGE, "all")]
    assert running[0].runs == "starts a container"


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_pass(distro: str) -> None:
    given = facts()
    plan = run(given, distro)
    assert plan.changes == [] and plan.commands == []
    [planned] = plan.ops
    assert isinstance(planned.op, GpuVerified)
    assert planned.op.label == f"verify GPU in {IMAGE}"
    assert planned.op.facts() == [NvidiaSmi(), DockerImage(IMAGE), ContainerGpuTest(IMAGE, "all")]
    assert report(plan, given) == {
        "status": "pass",
        "gpus": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"],
        "driver_version": "580.95.05",
        "cuda_version": "13.0",
        "image": IMAGE,
        "image_digest": DIGEST,
        "image_id": IMAGE_ID,
        "gpu_devices": "all",
        "torch": "2.9.0+cu128",
        "torch_cuda": "12.8",
        "container_devices": ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB"],
        "problems": [],
        "reboot_pending": None,
    }


MISMATCH_PROBLEMS = [
    "nvidia-smi: the loaded nvidia module is older than the installed driver (Failed to "
    "initialize NVML: Driver/library version mismatch)",
    "in the container: torch.cuda.is_available() is False inside the container",
]


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_mismatch_without_reboot_pending_fails(distro: str) -> None:
    with pytest.raises(VerifyFailed) as exc:
        run(facts(SMI_MISMATCH, gpu=GPU_FAIL), distro)
    assert exc.value.message == ("gpu-01: GPU verification failed: "
                                 + "; ".join(MISMATCH_PROBLEMS))
    assert exc.value.hint == "run gpuprov apply, then verify again"


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_mismatch_with_reboot_pending_is_reported_not_failed(distro: str) -> None:
    given = facts(SMI_MISMATCH, gpu=GPU_FAIL, pending=PENDING)
    plan = run(given, distro)
    assert plan.changes == []
    data = report(plan, given)
    assert (data["status"], data["problems"], data["reboot_pending"]) == (
        "reboot pending", MISMATCH_PROBLEMS, PENDING)
    assert (data["driver_version"], data["gpus"]) == (None, [])


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_mismatch_with_reboot_pending_fails_when_asked_to(distro: str) -> None:
    given = facts(SMI_MISMATCH, gpu=GPU_FAIL, pending=PENDING)
    with pytest.raises(VerifyFailed) as exc:
        run(given, distro, verify_fail_if_reboot_pending=True)
    assert exc.value.message == ("gpu-01: GPU verification failed: "
                                 + "; ".join(MISMATCH_PROBLEMS)
                                 + f" (a reboot is pending: {PENDING})")
    assert exc.value.hint == "reboot the host (gpuprov apply --reboot) and verify again"


@pytest.mark.parametrize(("given", "problem"), [
    (facts(smi=LoadedDriver("no-smi", message="nvidia-smi is not installed")),
     "nvidia-smi: nvidia-smi is not installed (nvidia_driver role)"),
    (facts(smi=LoadedDriver("no-driver", message="NVIDIA-SMI has failed because it couldn't "
                                                 "communicate with the NVIDIA driver.")),
     "nvidia-smi: the nvidia kernel module is not loaded (NVIDIA-SMI has failed because it "
     "couldn't communicate with the NVIDIA driver.)"),
    (facts(smi=LoadedDriver("ok", "580.95.05", "13.0", ())), "nvidia-smi sees no GPU"),
    (facts(image=DockerImageState("ok")), f"image {IMAGE} is not present (gpu_image role)"),
    (facts(image=DockerImageState("down", message="Cannot connect to the Docker daemon")),
     "docker: Cannot connect to the Docker daemon"),
    (facts(gpu=ContainerGpu(False, error="docker: Error response from daemon: could not "
                                         "select device driver \"\" with capabilities: "
                                         "[[gpu]].")),
     "in the container: docker: Error response from daemon: could not select device driver "
     "\"\" with capabilities: [[gpu]]."),
])
def test_each_problem_is_named(given: dict, problem: str) -> None:
    with pytest.raises(VerifyFailed) as exc:
        run(given)
    assert exc.value.message == f"gpu-01: GPU verification failed: {problem}"


def test_minimum_branch() -> None:
    old = LoadedDriver("ok", "550.163.01", "12.4", GPUS)
    assert run(facts(smi=old)).changes == []           # default minimum 535
    with pytest.raises(VerifyFailed) as exc:
        run(facts(smi=old), verify_min_branch=580)
    assert exc.value.message == ("gpu-01: GPU verification failed: driver 550.163.01 is below "
                                 "branch 580")


def test_device_list_is_passed_to_docker_run_quoted() -> None:
    given = facts(devices="0,1")
    plan = run(given, gpu_devices="0,1")
    assert plan.changes == []
    [planned] = plan.ops
    [_, _, gpu_test] = planned.op.facts()
    assert gpu_test == ContainerGpuTest(IMAGE, "0,1")
    parts = gpu_test.command().parts
    assert parts[:7] == ("docker", "run", "--rm", "--pull", "never", "--gpus", '"device=0,1"')
    assert "--gpus '\"device=0,1\"' --entrypoint python3 " in gpu_test.command().shell()
    assert report(plan, given)["gpu_devices"] == "0,1"


def test_all_gpus_by_default() -> None:
    parts = ContainerGpuTest(IMAGE).command().parts
    assert parts[5:7] == ("--gpus", "all")


@pytest.mark.parametrize("devices", ["gpu0", "0;1", "all,0", "", "0,,1", "[0, 1]"])
def test_bad_gpu_devices_is_refused_before_any_op(devices: str) -> None:
    ops, exc = ops_until_failure("verify", system_for("debian12"), facts(),
                                 vars={"gpu_image": IMAGE, "gpu_devices": devices})
    assert ops == []
    assert exc.message == (f"gpu-01: role verify: gpu_devices={devices!r}: gpu_devices must "
                           f'be "all" or GPU indexes/UUIDs like "0,1", not {devices.strip()!r}')
