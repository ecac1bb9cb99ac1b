"""GPU verification as an op that never changes anything: it passes (no
Changes) or fails the task with what is wrong, and reports what it found
(GPU names, driver and CUDA versions, image digest) for `gpuprov verify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.docker import ContainerGpu, ContainerGpuTest, DockerImage, DockerImageState
from gpuprov.facts.nvidia import LoadedDriver, NvidiaSmi
from gpuprov.ops.base import Change, Op, operation

_SMI_PROBLEM = {
    "no-smi": "nvidia-smi is not installed (nvidia_driver role)",
    "no-driver": "the nvidia kernel module is not loaded",
    "mismatch": "the loaded nvidia module is older than the installed driver",
}


class VerifyFailed(GpuprovError):
    """The GPU is not usable in the image on this host."""


@operation
class GpuVerified(Op):
    """nvidia-smi works with branch >= min_branch, and `docker run --gpus`
    of `image` sees CUDA in torch and computes a matmul on the GPU.

    reboot_pending: why a reboot is pending (None: none is); then a failed
    check fails only when fail_if_reboot_pending, else it reports
    "reboot pending"."""

    host: str
    image: str
    gpus: str = "all"
    min_branch: int = 535
    _: KW_ONLY
    reboot_pending: str | None = None
    fail_if_reboot_pending: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label = f"verify GPU in {self.image}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [NvidiaSmi(), DockerImage(self.image), ContainerGpuTest(self.image, self.gpus)]

    def problems(self, facts: FactView) -> list[str]:
        smi: LoadedDriver = facts[NvidiaSmi()]
        found: list[str] = []
        if smi.state != "ok":
            detail = f" ({smi.message})" if smi.message and smi.state != "no-smi" else ""
            found.append(f"nvidia-smi: {_SMI_PROBLEM.get(smi.state, smi.state)}{detail}")
        elif smi.branch is None or smi.branch < self.min_branch:
            found.append(f"driver {smi.version} is below branch {self.min_branch}")
        elif not smi.gpus:
            found.append("nvidia-smi sees no GPU")
        image: DockerImageState = facts[DockerImage(self.image)]
        if image.docker != "ok":
            found.append(f"docker: {image.message}")
        elif image.image is None:
            found.append(f"image {self.image} is not present (gpu_image role)")
        else:
            gpu: ContainerGpu = facts[ContainerGpuTest(self.image, self.gpus)]
            if not gpu.ok:
                found.append(f"in the container: {gpu.error}")
        return found

    def plan(self, facts: FactView) -> list[Change]:
        found = self.problems(facts)
        if not found:
            return []
        if self.reboot_pending and not self.fail_if_reboot_pending:
            return []   # the recap says "reboot pending"; checking now proves nothing
        why = "; ".join(found)
        hint = ("reboot the host (gpuprov apply --reboot) and verify again"
                if self.reboot_pending else "run gpuprov apply, then verify again")
        if self.reboot_pending:
            why += f" (a reboot is pending: {self.reboot_pending})"
        raise VerifyFailed(f"{self.host}: GPU verification failed: {why}", hint)

    def report(self, facts: FactView) -> dict[str, Any]:
        smi: LoadedDriver = facts[NvidiaSmi()]
        image: DockerImageState = facts[DockerImage(self.image)]
        gpu: ContainerGpu = facts[ContainerGpuTest(self.image, self.gpus)]
        found = self.problems(facts)
        info = image.image
        digest = next((d.split("@", 1)[1] for d in info.repo_digests), None) if info else None
        return {
            "status": "pass" if not found else ("reboot pending" if self.reboot_pending
                                                and not self.fail_if_reboot_pending else "fail"),
            "gpus": [g.name for g in smi.gpus],
            "driver_version": smi.version,
            "cuda_version": smi.cuda_version,
            "image": self.image,
            "image_digest": digest,
            "image_id": info.id if info else None,
            "gpu_devices": self.gpus,
            "torch": gpu.torch,
            "torch_cuda": gpu.cuda,
            "container_devices": list(gpu.devices),
            "problems": found,
            "reboot_pending": self.reboot_pending,
        }
