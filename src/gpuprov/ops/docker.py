"""Docker operations: an image pulled from a registry (pinned by tag and
digest) or loaded from a tarball copied from the controller (air-gapped
sites); a long-running container kept running as specified, or gone.

The image ops read the local image with DockerImage (`docker image inspect`),
so a converged host never pulls, and drift-check sees a missing or wrong
image without touching the registry. The container ops read ContainerState:
running or not, its `gpuprov.spec` label, its published ports and its
resource limits.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from gpuprov.command import Arg, Command, Raw
from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.docker import (
    ContainerGpuTest,
    ContainerInfo,
    ContainerState,
    ContainerStatus,
    DockerImage,
    DockerImageState,
    ImageRef,
    parse_image_ref,
    parse_publish,
)
from gpuprov.facts.docker_limits import ContainerLimits
from gpuprov.ops.base import Change, Diff, Op, Step, operation

_INVALIDATES = (DockerImage, ContainerGpuTest)


class ImageError(GpuprovError):
    """A wrong image reference or archive, found on the controller."""


def _docker_unknown(state: DockerImageState | ContainerStatus) -> str | None:
    if state.docker == "absent":
        return "docker is not installed yet: depends on the container_toolkit role"
    if state.docker == "down":
        return f"the docker daemon does not answer ({state.message}): depends on docker running"
    return None


def _inspect_has(ref: str, text: str, problem: str, untag: bool = False) -> Command:
    """A step that fails with `problem` unless `docker image inspect ref` shows
    `text`; with untag, the wrong image also loses the tag `ref`, so nothing
    started by that name (verify, services) runs it."""
    drop: list[Arg] = [Raw("docker rmi"), ref, Raw(">/dev/null 2>&1;")] if untag else []
    return Command("docker", "image", "inspect", ref, Raw("|"), "grep", "-qF", text,
                   Raw("||"), Raw("{"), *drop, "echo", f"gpuprov: {problem}", Raw(">&2;"),
                   "exit", "1", Raw(";"), Raw("}"))


def _ref(ref: str) -> ImageRef:
    try:
        return parse_image_ref(ref)
    except ValueError as exc:
        raise ImageError(str(exc), "set gpu_image to e.g. ghcr.io/lab/pytorch-cuda:2.9.0") from exc


@operation
class ImagePulled(Op):
    """The image `ref` pulled, and checked against `digest` (or the digest
    `ref` names) when one is given; with `arch` (docker's name, arm64), pulled
    for linux/`arch` and checked to be built for it."""

    ref: str
    digest: str | None = None
    arch: str | None = None
    image_ref: ImageRef = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        ref, digest = self.ref, self.digest
        self.image_ref = _ref(ref)
        self.digest = digest or self.image_ref.digest
        if self.digest and not (self.digest.startswith("sha256:") and len(self.digest) == 71):
            raise ImageError(f"image digest {self.digest!r} is not sha256:<64 hex digits>")
        if self.image_ref.digest and digest and self.image_ref.digest != digest:
            raise ImageError(f"image {ref} names digest {self.image_ref.digest}, but the digest "
                             f"variable says {digest}")
        self.label = f"docker image {self.image_ref}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [DockerImage(str(self.image_ref))]

    def plan(self, facts: FactView) -> list[Change]:
        state: DockerImageState = facts[DockerImage(str(self.image_ref))]
        image = state.image
        other_arch = (image is not None and self.arch is not None
                      and image.architecture not in (None, self.arch))
        if image is not None and not other_arch and (
                self.digest is None or image.has_digest(self.image_ref, self.digest)):
            return []
        platform = [f"--platform=linux/{self.arch}"] if self.arch else []
        steps = [Step(Command("docker", "pull", "--quiet", *platform, str(self.image_ref)))]
        if self.digest:
            # The registry may serve another image for the tag than the one
            # pinned: fail loudly rather than run an unreviewed image.
            steps.append(Step(_inspect_has(
                str(self.image_ref), f'"{self.image_ref.short_repo}@{self.digest}"',
                f"the registry served {self.image_ref} with a digest other than {self.digest}; "
                "the tag was moved: review the new image and update gpu_image_digest "
                "(the unreviewed image was untagged)", untag=True)))
        if self.arch:
            # A digest pinned to one platform's manifest pulls that platform
            # whatever --platform says: an amd64 image on an arm64 host would
            # only fail later, as "exec format error" inside verify.
            steps.append(Step(_inspect_has(
                str(self.image_ref), f'"Architecture": "{self.arch}"',
                f"{self.image_ref} is not built for linux/{self.arch}, this host's platform: "
                "pin a multi-platform image or the digest of its linux/"
                f"{self.arch} manifest (the wrong image was untagged)", untag=True)))
        if image is None:
            action, why = "pull", "not present"
        elif other_arch:
            action, why = "repull", f"present for linux/{image.architecture}, host is {self.arch}"
        else:
            action, why = "repull", f"present as {image.id[:19]} without digest {self.digest}"
        return [Change(self.label, action, f"docker pull {self.image_ref} ({why})", steps,
                       unknown=_docker_unknown(state), invalidates=_INVALIDATES)]


# ---------------------------------------------------------------- docker load


@dataclass(frozen=True)
class Archive:
    path: Path
    image_id: str
    tags: tuple[str, ...]
    size: int
    architecture: str | None = None


_archives: dict[tuple[str, int, int], Archive] = {}
_archives_lock = threading.Lock()


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Image id and tags of a `docker save` tarball, read on the controller
    once per run: the id is the sha256 of the image's config blob."""
    path = Path(path).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageError(f"image archive {path}: {exc.strerror or exc}",
                         "gpu_image_archive is a `docker save` tarball on the controller") from exc
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _archives_lock:
        if key not in _archives:
            _archives[key] = _parse_archive(path, st.st_size)
        return _archives[key]


def _parse_archive(path: Path, size: int) -> Archive:
    try:
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            item = manifest[0]
            config = tar.extractfile(item["Config"]).read()  # type: ignore[union-attr]
    except (tarfile.TarError, KeyError, IndexError, TypeError, ValueError, AttributeError,
            OSError) as exc:
        raise ImageError(f"image archive {path} is not a `docker save` tarball ({exc})",
                         "create it with: docker save IMAGE:TAG -o FILE.tar") from exc
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    try:
        arch = json.loads(config).get("architecture")
    except (ValueError, AttributeError):
        arch = None
    return Archive(path, image_id, tuple(item.get("RepoTags") or ()), size,
                   arch if isinstance(arch, str) else None)


@operation
class ImageLoaded(Op):
    """The image `ref` loaded from `archive`, a `docker save` tarball on the
    controller, and checked against the image id inside it."""

    ref: str
    archive: str | os.PathLike[str]
    arch: str | None = None
    image_ref: ImageRef = field(init=False)
    #: what the archive holds, read on the controller
    tarball: Archive = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_ref = _ref(self.ref)
        self.tarball = read_archive(self.archive)
        wanted = {str(self.image_ref), f"{self.image_ref.short_repo}:{self.image_ref.tag}"}
        if self.image_ref.digest or not wanted & set(self.tarball.tags):
            raise ImageError(
                f"image archive {self.tarball.path} holds "
                f"{', '.join(self.tarball.tags) or 'no tagged image'}, not {self.image_ref}",
                "set gpu_image to the repo:tag saved in the archive "
                "(docker save keeps tags, not registry digests)")
        if self.arch and self.tarball.architecture not in (None, self.arch):
            raise ImageError(
                f"image archive {self.tarball.path} holds a linux/{self.tarball.architecture} "
                f"image; this host is linux/{self.arch}",
                f"save the image's linux/{self.arch} variant: docker pull --platform "
                f"linux/{self.arch} IMAGE, then docker save")
        self.label = f"docker image {self.image_ref} (from {self.tarball.path.name})"

    def facts(self) -> Sequence[Fact[Any]]:
        return [DockerImage(str(self.image_ref))]

    def plan(self, facts: FactView) -> list[Change]:
        state: DockerImageState = facts[DockerImage(str(self.image_ref))]
        image = state.image
        if image is not None and image.id == self.tarball.image_id:
            return []
        mib = self.tarball.size / 2**20
        why = "not present" if image is None else f"present as {image.id[:19]}, archive has " \
            f"{self.tarball.image_id[:19]}"
        steps = [
            # Streamed from the controller into `docker load`: no copy on the
            # host's disk, and a cut stream fails the load instead of importing half.
            Step(Command("docker", "load", "--quiet"), stdin_file=str(self.tarball.path)),
            Step(_inspect_has(str(self.image_ref), f'"Id": "{self.tarball.image_id}"',
                              f"{self.image_ref} is not image {self.tarball.image_id} after docker "
                              f"load of {self.tarball.path.name}")),
        ]
        return [Change(self.label, "load",
                       f"docker load {self.tarball.path.name} ({mib:.0f} MiB, {why})", steps,
                       unknown=_docker_unknown(state), invalidates=_INVALIDATES)]


def image(ref: str, *, digest: str | None = None, archive: str | os.PathLike[str] | None = None,
          arch: str | None = None) -> Op:
    """The image `ref` is present locally: pulled (and checked against
    `digest`), or, with `archive`, loaded from that controller tarball and
    checked against the image id inside it. Never pulls when it is right.
    `arch` (docker's name: amd64, arm64): the host's platform, the image's too."""
    if archive:
        if digest:
            raise ImageError("gpu_image_digest cannot be checked for an image loaded from "
                             "gpu_image_archive (docker save keeps no registry digest); the "
                             "archive's image id is checked instead: unset one of them")
        return ImageLoaded(ref, archive, arch)
    return ImagePulled(ref, digest, arch)


# ---------------------------------------------------------------- containers

SPEC_LABEL = "gpuprov.spec"
_CONTAINER_INVALIDATES = (ContainerState,)


def _describe(info: ContainerInfo | None, limits: ContainerLimits | None = None) -> str:
    """The container for a diff; with `limits`, the running ones of those declared."""
    if info is None:
        return "absent\n"
    spec = info.label(SPEC_LABEL)
    shown = (info.limits.only(limits).shown()
             if limits is not None and info.limits is not None else {})
    return (f"state: {info.status or ('running' if info.running else 'stopped')}\n"
            f"spec: {spec[:12] if spec else '(none)'}\n"
            f"publishes: {', '.join(sorted(info.ports)) or '(nothing)'}\n"
            + "".join(f"{name}: {value}\n" for name, value in shown.items()))


@operation
class ContainerRunning(Op):
    """Container `name` runs, carries the label gpuprov.spec=`spec` (a digest
    of how it is meant to be started) and publishes exactly `publish` (docker
    `-p` values) and, with `limits`, runs with those resource limits (docker
    update can change them under a running container, its label unchanged);
    otherwise `fix` (re)creates it, e.g. a service's start script."""

    name: str
    _: KW_ONLY
    spec: str
    publish: Sequence[str]
    fix: Command
    limits: ContainerLimits | None = None
    #: `publish` as ContainerInfo reports published ports
    ports: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.publish = tuple(self.publish)
        self.ports = frozenset(parse_publish(p) for p in self.publish)
        self.label = f"container {self.name}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [ContainerState(self.name)]

    def problems(self, info: ContainerInfo | None) -> list[str]:
        if info is None:
            return [f"{self.name} does not exist"]
        found = []
        if not info.running:
            found.append(f"{self.name} is {info.status or 'not running'}")
        label = info.label(SPEC_LABEL)
        if label != self.spec:
            found.append(f"{self.name} was started from spec {label[:12]}, wanted "
                         f"{self.spec[:12]}" if label else
                         f"{self.name} has no {SPEC_LABEL} label (not started by gpuprov)")
        if info.ports != self.ports:
            found.append(f"{self.name} publishes {_addresses(info.ports)}, wanted "
                         f"{_addresses(self.ports)}")
        if self.limits is not None:
            found += [f"{self.name} runs with {d}" for d in self.limits.drift(info.limits)]
        return found

    def plan(self, facts: FactView) -> list[Change]:
        state: ContainerStatus = facts[ContainerState(self.name)]
        info = state.container
        # docker absent or down: the change says so in `unknown`
        found = self.problems(info) if state.docker == "ok" else [f"start {self.name}"]
        if not found:
            return []
        wanted = ContainerInfo(True, "running", ((SPEC_LABEL, self.spec),), self.ports,
                               self.limits)
        # the limits on both sides, or on neither where the running ones are not known
        shown = self.limits if info is None or info.limits is not None else None
        before, after = _describe(info, shown), _describe(wanted, shown)
        return [Change(self.label, "start" if info is None else "recreate", "; ".join(found),
                       [Step(self.fix)], Diff(self.label, before, after),
                       unknown=_docker_unknown(state), invalidates=_CONTAINER_INVALIDATES)]


def _addresses(ports: frozenset[str]) -> str:
    """"127.0.0.1:8888" for the person reading (the container port is ours)."""
    return ", ".join(sorted(p.split("->")[0] for p in ports)) or "nothing"


@operation
class ContainerAbsent(Op):
    """No container `name` (stopped and removed)."""

    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        self.label = f"container {self.name}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [ContainerState(self.name)]

    def plan(self, facts: FactView) -> list[Change]:
        state: ContainerStatus = facts[ContainerState(self.name)]
        if state.docker == "absent" or state.docker == "ok" and state.container is None:
            return []   # no docker, no container
        return [Change(self.label, "delete", f"docker rm -f {self.name}",
                       [Step(Command("docker", "rm", "-f", self.name))],
                       Diff(self.label, _describe(state.container), None),
                       unknown=_docker_unknown(state), invalidates=_CONTAINER_INVALIDATES)]


#: container(name, spec=, publish=, fix=): see ContainerRunning
container = ContainerRunning
#: container_absent(name): see ContainerAbsent
container_absent = ContainerAbsent


__all__ = ["Archive", "ContainerAbsent", "ContainerRunning", "ImageLoaded", "ImagePulled",
           "ImageRef", "container", "container_absent", "image", "read_archive"]
