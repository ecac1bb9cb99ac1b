# TEST DOUBLE helper for gpuprov's test fleet: writes `docker save`-style tarballs that the
# docker double loads. Never use the result on real hosts.
"""make_image_archive(path, repo_tags) -> image id, for air-gapped (docker load) tests.

The config blob comes from the same code as the fake registry's images, so an archive
of variant "pytorch-cuda-2.9.0" loads with the Id the registry reports for
ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8, as a saved copy of a pulled image would.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from gpuprov_double_docker_state import config_blob, layer_tar  # noqa: E402


def make_image_archive(path: Path | str, repo_tags: list[str],
                       variant: str = "pytorch-cuda-2.9.0") -> str:
    """Write a docker-save tarball (manifest.json + config + one layer); return its Id."""
    config = config_blob(variant)
    layer = layer_tar(variant)
    config_hex = hashlib.sha256(config).hexdigest()
    layer_hex = hashlib.sha256(layer).hexdigest()
    manifest = [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": list(repo_tags),
                 "Layers": [f"blobs/sha256/{layer_hex}"]}]
    members = {
        f"blobs/sha256/{config_hex}": config,
        f"blobs/sha256/{layer_hex}": layer,
        "manifest.json": json.dumps(manifest).encode(),
        "repositories": json.dumps({t.rpartition(":")[0]: {t.rpartition(":")[2]: config_hex}
                                    for t in repo_tags}).encode(),
    }
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1735689600, 0o644
            tar.addfile(info, io.BytesIO(data))
    return f"sha256:{config_hex}"
