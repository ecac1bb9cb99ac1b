"""SSH keys of the fleet: the suite's client key and stable per-host host keys.

Both live in the cache, so a host keeps its host key across runs (known_hosts
entries stay valid while debugging) and `ssh -i` works between runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def ensure_key(path: Path, key_type: str = "ed25519", comment: str = "gpuprov-fleet") -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        for leftover in (tmp, tmp.with_name(tmp.name + ".pub")):
            leftover.unlink(missing_ok=True)
        bits = ["-b", "3072"] if key_type == "rsa" else []
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, *bits, "-N", "", "-C", comment,
                        "-f", str(tmp)], check=True)
        tmp.with_name(tmp.name + ".pub").rename(path.with_name(path.name + ".pub"))
        tmp.rename(path)
    return path


def public_key(path: Path) -> str:
    return path.with_name(path.name + ".pub").read_text().strip()


def host_keys(cache: Path, host: str) -> dict[str, Path]:
    """Private key paths by type, as sshd names them (ssh_host_<type>_key)."""
    directory = cache / "hostkeys" / host
    return {t: ensure_key(directory / f"ssh_host_{t}_key", t, f"root@{host}")
            for t in ("ed25519", "rsa")}
