"""verify: nvidia-smi works with a driver branch >= the minimum, and
`docker run --rm --gpus <gpu_devices> <gpu_image>` sees CUDA in torch and
computes a small matmul on the GPU. Never changes anything.
"""

from gpuprov.engine.handlers import RebootRequired
from gpuprov.facts.docker import gpus_arg

from .gpu import GpuVerified


def tasks(ctx):
    # drift-check and --check start no container: the engine skips this op there
    devices = str(ctx.vars["gpu_devices"]).strip()
    try:
        gpus_arg(devices)
    except ValueError as exc:
        raise ctx.bad_var("gpu_devices", str(exc)) from None
    yield GpuVerified(ctx.host.name, str(ctx.vars["gpu_image"]), devices,
                      int(ctx.vars["verify_min_branch"]),
                      reboot_pending=ctx.fact(RebootRequired()),
                      fail_if_reboot_pending=bool(ctx.vars["verify_fail_if_reboot_pending"]))
