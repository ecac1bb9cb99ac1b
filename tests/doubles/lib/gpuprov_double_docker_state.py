# TEST DOUBLE for gpuprov's test fleet: docker double state. Never install on real hosts.
"""State shared by the docker, dockerd and containerd doubles: where things live,
whether the "daemon" runs, what config it loaded, the image store and the registry."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from typing import Any

from gpuprov_double import (
    ETC_DIR,
    RUN_DIR,
    STATE_DIR,
    doubles_home,
    read_json,
    read_text,
    write_json,
)

DOCKER_STATE = f"{STATE_DIR}/docker"
DOCKER_RUN = f"{RUN_DIR}/docker"
CALLS_LOG = f"{DOCKER_STATE}/calls.log"
IMAGES = f"{DOCKER_STATE}/images.json"
CONTAINERS = f"{DOCKER_STATE}/containers.json"
RESTARTS_LOG = f"{DOCKER_STATE}/restarts.log"
EFFECTIVE_CONFIG = f"{DOCKER_RUN}/effective-daemon.json"
START_ID = f"{DOCKER_RUN}/start-id"
PIDFILE = "/run/docker.pid"
REGISTRY_OVERRIDE = f"{ETC_DIR}/registry.json"

DOCKER_VERSION = "28.2.2"
DOCKER_COMMIT = "e6534b4"
API_VERSION = "1.50"
NO_DAEMON = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
             "Is the docker daemon running?")


def pid_alive(pidfile: str) -> bool:
    text = read_text(pidfile)
    if not text or not text.strip().isdigit():
        return False
    try:
        os.kill(int(text.strip()), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def daemon_running() -> bool:
    return pid_alive(PIDFILE) and read_text(EFFECTIVE_CONFIG) is not None


def effective_config() -> dict[str, Any]:
    """daemon.json as the daemon loaded it at its last start/reload (not the file now)."""
    return read_json(EFFECTIVE_CONFIG, {}) or {}


def start_id() -> str:
    return (read_text(START_ID, "") or "").strip()


def runtimes() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {
        "io.containerd.runc.v2": {"path": "runc", "status": {}},
        "runc": {"path": "runc", "status": {}},
    }
    for name, spec in (effective_config().get("runtimes") or {}).items():
        found[name] = dict(spec)
    return dict(sorted(found.items()))


def default_runtime() -> str:
    return effective_config().get("default-runtime", "runc")


# ------------------------------------------------------------------ images
# Config blobs of the images the fake registry serves.  An image's Id is the
# sha256 of its config blob, as in real Docker, so a tarball made with
# make_image_archive() loads with the same Id the registry reports.
VARIANTS: dict[str, dict[str, Any]] = {
    "pytorch-cuda-2.9.0": {
        "Env": ["PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
                "PYTORCH_VERSION=2.9.0", "CUDA_VERSION=12.8.1"],
        "Cmd": ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser"],
        "ExposedPorts": {"22/tcp": {}, "8888/tcp": {}},
        "WorkingDir": "/workspace",
    },
    "pytorch-cuda-2.8.0": {
        "Env": ["PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "NVIDIA_VISIBLE_DEVICES=all", "PYTORCH_VERSION=2.8.0", "CUDA_VERSION=12.8.1"],
        "Cmd": ["jupyter", "lab", "--ip=0.0.0.0", "--no-browser"],
        "ExposedPorts": {"22/tcp": {}, "8888/tcp": {}},
        "WorkingDir": "/workspace",
    },
    "cuda-base-12.8.1": {
        "Env": ["PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:"
                "/usr/sbin:/usr/bin:/sbin:/bin", "NVIDIA_VISIBLE_DEVICES=all",
                "CUDA_VERSION=12.8.1"],
        "Cmd": ["/bin/bash"],
    },
    "hello-world": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": ["/hello"]},
}


def layer_tar(variant: str) -> bytes:
    """A tiny deterministic layer: one marker file naming the variant."""
    data = f"gpuprov test double image layer: {variant}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("gpuprov-test-double-image")
        info.size, info.mtime, info.mode = len(data), 1735689600, 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_blob(variant: str) -> bytes:
    config = dict(VARIANTS.get(variant, {"Env": [], "Cmd": ["/bin/sh"]}))
    config.setdefault("Labels", {})
    config["Labels"] = {"org.opencontainers.image.description": f"gpuprov test double {variant}"}
    blob = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2025-10-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_tar(variant)).hexdigest()]},
    }
    return json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()


def image_id(variant: str) -> str:
    return "sha256:" + hashlib.sha256(config_blob(variant)).hexdigest()


def image_record(config: bytes, size: int) -> dict[str, Any]:
    parsed = json.loads(config)
    return {
        "Id": "sha256:" + hashlib.sha256(config).hexdigest(),
        "RepoTags": [],
        "RepoDigests": [],
        "Created": parsed.get("created", "2025-10-01T00:00:00Z"),
        "Size": size,
        "Os": parsed.get("os", "linux"),
        "Architecture": parsed.get("architecture", "amd64"),
        "Config": parsed.get("config", {}),
    }


def registry() -> dict[str, dict[str, Any]]:
    """Reference -> {digest, id, size, variant}: the host's override, else the
    default shipped with the doubles (data/registry.json)."""
    data = read_json(REGISTRY_OVERRIDE, None)
    if data is None:
        data = json.loads((doubles_home() / "data" / "registry.json").read_text())
    return {ref: entry for ref, entry in data.items() if not ref.startswith("_")}


def load_images() -> dict[str, dict[str, Any]]:
    return read_json(IMAGES, {}) or {}


def save_images(images: dict[str, dict[str, Any]]) -> None:
    write_json(IMAGES, images)


def load_containers() -> dict[str, dict[str, Any]]:
    return read_json(CONTAINERS, {}) or {}


def save_containers(containers: dict[str, dict[str, Any]]) -> None:
    write_json(CONTAINERS, containers)


REF_RE = re.compile(r"^(?P<repo>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def parse_ref(ref: str) -> tuple[str, str | None, str | None] | None:
    """'repo[:tag][@digest]' -> (repo, tag, digest); tag defaults to latest without digest."""
    match = REF_RE.match(ref)
    if not match or ref.startswith("sha256:"):
        return None
    repo, tag, digest = match["repo"], match["tag"], match["digest"]
    if repo.startswith("docker.io/library/"):
        repo = repo[len("docker.io/library/"):]
    if tag is None and digest is None:
        tag = "latest"
    return repo, tag, digest


def find_image(images: dict[str, dict[str, Any]], ref: str) -> dict[str, Any] | None:
    """Resolve an id, short id, repo:tag or repo@digest like the daemon does."""
    bare = ref.removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{12,64}", bare):
        for image_id_, record in images.items():
            if image_id_.removeprefix("sha256:").startswith(bare):
                return record
    parsed = parse_ref(ref)
    if parsed is None:
        return None
    repo, tag, digest = parsed
    for record in images.values():
        if digest and f"{repo}@{digest}" in record["RepoDigests"]:
            return record
        if not digest and f"{repo}:{tag}" in record["RepoTags"]:
            return record
    return None
