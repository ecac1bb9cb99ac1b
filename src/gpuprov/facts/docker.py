"""Docker facts: a local image (never pulled to answer), a container's
state, and whether the GPU works inside an image (`gpuprov verify`).

All talk to the Docker daemon, whose socket is root's: they run with sudo.
DockerImage and ContainerState share one `docker inspect` per facts script
(DockerInspect): each docker CLI start costs a host a tenth of a second or
more, however little it is asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError, Joint
from gpuprov.facts.docker_limits import ContainerLimits

_GPU_DEVICE = re.compile(r"^(?:\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-fA-F-]+)$")


def gpus_arg(devices: str) -> str:
    """`docker run --gpus` value for "all" or "0,1" (ids or GPU UUIDs).

    Docker parses the value as a CSV record, so a device list needs the
    inner quotes: --gpus '"device=0,1"'.
    """
    devices = str(devices).strip()
    if devices == "all":
        return "all"
    ids = [d.strip() for d in devices.split(",")]
    if not ids or not all(_GPU_DEVICE.match(d) for d in ids):
        raise ValueError(f'gpu_devices must be "all" or GPU indexes/UUIDs like "0,1", '
                         f"not {devices!r}")
    return f'"device={",".join(ids)}"'


@dataclass(frozen=True)
class ImageRef:
    repo: str                 # ghcr.io/example-lab/pytorch-cuda
    tag: str | None           # 2.9.0-cuda12.8 (None when pinned by digest only)
    digest: str | None        # sha256:... given in the reference itself

    @property
    def short_repo(self) -> str:
        """How the daemon spells the repo in RepoTags/RepoDigests."""
        return self.repo.removeprefix("docker.io/").removeprefix("library/")

    def __str__(self) -> str:
        text = self.repo + (f":{self.tag}" if self.tag else "")
        return text + (f"@{self.digest}" if self.digest else "")


_REF = re.compile(r"^(?P<repo>[a-z0-9][a-z0-9._/:-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                  r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def parse_image_ref(ref: str) -> ImageRef:
    """'repo[:tag][@sha256:...]'; a bare repo means :latest, as docker does."""
    match = _REF.match(ref.strip())
    if not match or (match["repo"].count(":") and "/" not in match["repo"].split(":")[-1]):
        raise ValueError(f"not a docker image reference: {ref!r} (expected "
                         "registry/repo:tag or registry/repo@sha256:<64 hex>)")
    tag = match["tag"] or (None if match["digest"] else "latest")
    return ImageRef(match["repo"], tag, match["digest"])


@dataclass(frozen=True)
class ImageInfo:
    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    #: docker's platform arch (amd64, arm64); None where inspect did not say
    architecture: str | None = None

    def has_digest(self, ref: ImageRef, digest: str) -> bool:
        return f"{ref.short_repo}@{digest}" in {
            d.removeprefix("docker.io/").removeprefix("library/") for d in self.repo_digests}


@dataclass(frozen=True)
class DockerImageState:
    """docker: ok | absent (no docker CLI) | down (daemon not answering)."""

    docker: str
    image: ImageInfo | None = None
    message: str = ""


# ---------------------------------------------------------------- one docker inspect

_NO_DOCKER = "command -v docker >/dev/null 2>&1 || { echo no-docker; exit 0; };"

# One JSON line per object found, the same fields for an image and a
# container (null where the object has none), and never a container's
# Config.Env, where a secret passed with `-e NAME` (the Jupyter token) sits
# in clear text. Only `index` reads the object: on docker's typed inspect
# structs it fails, and docker then runs the template on the object's API
# JSON (inspect's documented raw fallback), where a key an image lacks is
# null instead of an error, so images and containers share one template.
_INSPECT_FORMAT = (
    '{"id":{{json (index $ "Id")}},"tags":{{json (index $ "RepoTags")}},'
    '"digests":{{json (index $ "RepoDigests")}},"arch":{{json (index $ "Architecture")}},'
    '"state":{{with index $ "State"}}{"status":{{json (index . "Status")}},'
    '"running":{{json (index . "Running")}}}{{else}}null{{end}},'
    '"labels":{{with index $ "Config"}}{{json (index . "Labels")}}{{else}}null{{end}},'
    '"ports":{{with index $ "HostConfig"}}{{json (index . "PortBindings")}}{{else}}null{{end}},'
    '"limits":{{with index $ "HostConfig"}}{"memory":{{json (index . "Memory")}},'
    '"nano_cpus":{{json (index . "NanoCpus")}},"shm_size":{{json (index . "ShmSize")}},'
    '"pids_limit":{{json (index . "PidsLimit")}}}{{else}}null{{end}}}')

#: docker <= 27 "Error: No such object: X", later "error: no such object: X"
_NO_SUCH = re.compile(r"no such (?:object|image|container): (?P<ref>\S+)\s*$", re.IGNORECASE)


def _inspected(fact: Fact[Any]) -> str:
    if isinstance(fact, DockerImage):
        return fact.ref
    if isinstance(fact, ContainerState):
        return fact.name
    raise TypeError(f"docker inspect cannot answer {fact.key}")


class DockerInspect(Joint):
    """`docker inspect --format ... -- A B ...`: images and containers in one
    docker start. docker goes on past an object it does not find (it says
    "no such object: X" on stderr, after every object found, and exits 1),
    so a missing container leaves the image's answer whole."""

    name: ClassVar[str] = "docker inspect"

    def command(self, members: Sequence[Fact[Any]]) -> Command:
        return Command(Raw(_NO_DOCKER), "docker", "inspect", "--format", _INSPECT_FORMAT, "--",
                       *(_inspected(m) for m in members), Raw("2>&1"))

    def split(self, members: Sequence[Fact[Any]], output: str,
              exit_code: int) -> list[tuple[str, int]]:
        if output.strip() == "no-docker":
            return [(output, 0)] * len(members)
        lines = [ln for ln in output.splitlines() if ln.strip()]
        objects = [ln for ln in lines if ln.startswith("{")]
        missing = {m["ref"]: ln for ln in lines
                   if not ln.startswith("{") and (m := _NO_SUCH.search(ln))}
        found = [m for m in members if _inspected(m) not in missing]
        if not objects and exit_code != 0 and len(missing) < len(members):
            # docker itself failed (daemon down, no permission): the members it
            # did not call missing get its words
            failure = "\n".join(ln for ln in lines if not _NO_SUCH.search(ln)) + "\n"
            return [(missing.get(_inspected(m), failure), exit_code) for m in members]
        if len(objects) != len(found):
            raise FactError(f"docker inspect printed {len(objects)} objects for "
                            f"{len(found)} found: {output.strip()[-300:]!r}")
        answers = iter(objects)
        return [(missing[_inspected(m)], exit_code or 1) if _inspected(m) in missing
                else (next(answers), 0) for m in members]


DOCKER_INSPECT = DockerInspect()


def _inspect_object(fact: Fact[Any], output: str) -> dict[str, Any]:
    try:
        data = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise FactError(f"{fact.key}: docker inspect printed no JSON: {output[:200]!r}") from exc
    if not isinstance(data, dict):
        raise FactError(f"{fact.key}: docker inspect printed {output[:200]!r}")
    return data


def _docker_failure(output: str, exit_code: int) -> tuple[bool, str]:
    """(no such object, the message) of a failed docker inspect."""
    text = output.strip()
    if "no such" in text.lower():
        return True, ""
    return False, text.splitlines()[-1] if text else f"docker exited {exit_code}"


@dataclass(frozen=True)
class DockerImage(Fact[DockerImageState]):
    """The local image `ref` (`docker inspect`), without pulling."""

    ref: str
    sudo: ClassVar[bool] = True
    joint: ClassVar[Joint | None] = DOCKER_INSPECT

    def process(self, output: str, exit_code: int) -> DockerImageState:
        if output.strip() == "no-docker":
            return DockerImageState("absent", message="docker is not installed")
        if exit_code != 0:
            missing, message = _docker_failure(output, exit_code)
            return DockerImageState("ok") if missing else DockerImageState("down",
                                                                           message=message)
        data = _inspect_object(self, output)
        # a container, network or volume by that name is no image (image ids are digests)
        if data.get("state") is not None or not str(data.get("id") or "").startswith("sha256:"):
            return DockerImageState("ok")
        return DockerImageState("ok", ImageInfo(data["id"], tuple(data.get("tags") or ()),
                                                tuple(data.get("digests") or ()),
                                                data.get("arch") or None))


# ---------------------------------------------------------------- GPU in a container

_VERIFY_MARK = "@@gpuprov-verify "
# Runs inside the image: torch sees CUDA, names the devices, and a small
# matmul on the GPU gives the exact answer (32x32 ones @ ones sums to 32**3).
VERIFY_SCRIPT = f"""\
import json
r = {{}}
try:
    import torch
    r["torch"] = torch.__version__
    r["cuda"] = torch.version.cuda
    r["available"] = bool(torch.cuda.is_available())
    if r["available"]:
        r["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        a = torch.ones(32, 32, device="cuda")
        r["matmul"] = (a @ a).sum().item() == 32 ** 3
except Exception as exc:
    r["error"] = type(exc).__name__ + ": " + str(exc)
print({_VERIFY_MARK!r} + json.dumps(r))
"""


@dataclass(frozen=True)
class ContainerGpu:
    ok: bool
    torch: str | None = None
    cuda: str | None = None
    devices: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class ContainerGpuTest(Fact[ContainerGpu]):
    """`docker run --rm --gpus G IMAGE python3 -c <torch check + matmul>`."""

    image: str
    gpus: str = "all"
    sudo: ClassVar[bool] = True
    runs: ClassVar[str | None] = "starts a container"

    def command(self) -> Command:
        # --pull never: verifying must not fetch an image apply did not put there.
        return Command("docker", "run", "--rm", "--pull", "never", "--gpus", gpus_arg(self.gpus),
                       "--entrypoint",
                       "python3", self.image, "-c", VERIFY_SCRIPT, Raw("2>&1"))

    def process(self, output: str, exit_code: int) -> ContainerGpu:
        line = next((ln for ln in output.splitlines() if ln.startswith(_VERIFY_MARK)), None)
        if line is None:
            last = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
            return ContainerGpu(False, error=" | ".join(last) or f"docker run exited {exit_code}")
        data = json.loads(line[len(_VERIFY_MARK):])
        error = data.get("error", "")
        if not error and not data.get("available"):
            error = "torch.cuda.is_available() is False inside the container"
        elif not error and not data.get("matmul"):
            error = "the matmul on the GPU gave a wrong result"
        return ContainerGpu(not error, data.get("torch"), data.get("cuda"),
                            tuple(data.get("devices") or ()), error)


# ---------------------------------------------------------------- a running container

def parse_publish(spec: str) -> str:
    """A `docker run -p` value ("127.0.0.1:8888:8888", "[::1]:8888:8888/tcp")
    in the normalized form ContainerInfo.ports uses: "127.0.0.1:8888->8888/tcp".
    Only the explicit ip:hostport:port form: gpuprov never publishes on every
    address by leaving the ip out."""
    body, _, proto = spec.partition("/")
    host, sep, port = body.rpartition(":")
    ip, sep2, host_port = host.rpartition(":")
    if not (sep and sep2 and ip and host_port.isdigit() and port.isdigit()):
        raise ValueError(f"not a docker publish spec ip:hostport:port: {spec!r}")
    return _binding(ip.strip("[]"), host_port, f"{port}/{proto or 'tcp'}")


def _binding(ip: str, host_port: str, port: str) -> str:
    # docker shows "" for "every address"; say so in the words a person reads
    ip = ip or "0.0.0.0"
    return f"{f'[{ip}]' if ':' in ip else ip}:{host_port}->{port}"


@dataclass(frozen=True)
class ContainerInfo:
    running: bool                        # up and serving: status "running"
    status: str                          # running | exited | restarting | paused | ...
    labels: tuple[tuple[str, str], ...]  # sorted (key, value) pairs
    ports: frozenset[str]                # "127.0.0.1:8888->8888/tcp"
    #: HostConfig's memory, CPU, /dev/shm and pids limits (None: not reported)
    limits: ContainerLimits | None = None

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


@dataclass(frozen=True)
class ContainerStatus:
    """docker: ok | absent (no docker CLI) | down; container None = no such container."""

    docker: str
    container: ContainerInfo | None = None
    message: str = ""


@dataclass(frozen=True)
class ContainerState(Fact[ContainerStatus]):
    """`docker inspect` of one container: running or not, its labels, the
    host addresses it publishes and its resource limits (never its environment)."""

    name: str
    sudo: ClassVar[bool] = True
    joint: ClassVar[Joint | None] = DOCKER_INSPECT

    def process(self, output: str, exit_code: int) -> ContainerStatus:
        if output.strip() == "no-docker":
            return ContainerStatus("absent", message="docker is not installed")
        if exit_code != 0:
            missing, message = _docker_failure(output, exit_code)
            return ContainerStatus("ok") if missing else ContainerStatus("down", message=message)
        data = _inspect_object(self, output)
        state = data.get("state")
        if not isinstance(state, dict):
            return ContainerStatus("ok")   # an image, network or volume by that name
        ports = frozenset(_binding(b.get("HostIp", ""), b.get("HostPort", ""), port)
                          for port, binds in (data.get("ports") or {}).items()
                          for b in binds or ())
        labels = tuple(sorted((data.get("labels") or {}).items()))
        status = str(state.get("status") or "")
        # State.Running stays true while a crashing container is "restarting"
        # (or "paused"): only "running" serves anything
        running = bool(state.get("running")) and status in ("running", "")
        return ContainerStatus("ok", ContainerInfo(running, status, labels, ports,
                                                   ContainerLimits.from_inspect(data.get("limits"))))
