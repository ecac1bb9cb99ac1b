"""site.yml's variables for the fleet: the stand-in repositories (plain http
on the fleet's bridge, so keys need `insecure: true`) and the image the docker
double knows. Used by the fleet tests that run the bundled site.yml and by
benchmarks/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"
DIGEST = "sha256:efe8a913f49d151f4b3da994537ba0842230fe70321e685acf0f7876e9f5d6b0"


def site_vars(repo_url: str) -> dict[str, Any]:
    return {
        "base_ntp_servers": [repo_url.split("//")[1].split(":")[0]],
        "nvidia_driver_repo": {"url": f"{repo_url}/cuda/", "key": f"{repo_url}/keys/cuda.asc",
                               "insecure": True},
        "container_toolkit_repo": {"url": f"{repo_url}/libnvidia-container/stable/deb/$(ARCH)",
                                   "key": f"{repo_url}/libnvidia-container/gpgkey",
                                   "insecure": True},
        "docker_repo": "none",   # docker-ce is in the stand-in archive
        "gpu_image": IMAGE,
        "gpu_image_digest": DIGEST,
    }


def write_site_inventory(fleet: Fleet, hosts: Sequence[FleetHost], work: Path) -> Path:
    """`work`/inventory.yml: `hosts` with site_vars()."""
    inventory = fleet.inventory(hosts)
    inventory["all"]["vars"].update(site_vars(fleet.repo_url))
    path = work / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path
