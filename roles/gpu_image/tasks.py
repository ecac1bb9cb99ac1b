"""gpu_image: the team's image present on the host, pinned by tag and digest,
or loaded from a tarball on air-gapped sites.

`docker image inspect` decides, so an image that is already right is never
pulled again, and drift-check sees a missing or wrong one without pulling.
"""

from gpuprov.ops.docker import image


def tasks(ctx):
    ref = str(ctx.vars["gpu_image"] or "").strip()
    if not ref:
        raise ctx.bad_var("gpu_image", "no image given",
                          "set gpu_image to the team's registry/repo:tag")
    archive = str(ctx.vars["gpu_image_archive"] or "").strip() or None
    digest = str(ctx.vars["gpu_image_digest"] or "").strip() or None
    # The host's platform, not docker's default: a wrong-arch image fails here,
    # by name, rather than as "exec format error" in verify.
    yield image(ref, digest=digest, archive=archive, arch=ctx.system.arch.docker)
