# TEST DOUBLE support library for gpuprov's test fleet. Never install on real hosts.
"""Shared helpers for the gpuprov test doubles.

Every absolute host path a double touches goes through host_path(), which
prefixes GPUPROV_TEST_DOUBLE_ROOT (default: the real root).  Unit tests set it
to a temp dir so the doubles never touch the machine that runs the tests.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ETC_DIR = "/etc/gpuprov-test-double"
STATE_DIR = "/var/lib/gpuprov-test-double"
RUN_DIR = "/run/gpuprov-test-double"
# Where the packages install the doubles; this file lives in <home>/lib.
INSTALLED_HOME = "/usr/libexec/gpuprov-test-doubles"


def root() -> str:
    return os.environ.get("GPUPROV_TEST_DOUBLE_ROOT", "").rstrip("/")


def host_path(path: str) -> Path:
    """Map an absolute path on the (simulated) host to the real file system."""
    if not path.startswith("/"):
        raise ValueError(f"host_path needs an absolute path, got {path!r}")
    return Path(root() + path)


def doubles_home() -> Path:
    """Directory holding bin/, lib/, image/ ... of the doubles (not root-prefixed:
    it is where the code itself is, in the source tree or on the host)."""
    return Path(__file__).resolve().parent.parent


def read_text(path: str, default: str | None = None) -> str | None:
    try:
        return host_path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return default


def read_json(path: str, default: Any = None) -> Any:
    text = read_text(path)
    if text is None:
        return default
    return json.loads(text)


def write_text(path: str, text: str) -> None:
    """Atomic write (temp file + rename) so a crashed double never leaves half a file."""
    target = host_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def write_json(path: str, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_line(path: str, line: str) -> None:
    target = host_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as handle:
        handle.write(line.rstrip("\n") + "\n")


def dpkg_status() -> dict[str, str]:
    """Installed packages -> version, read from dpkg's status file like dpkg-query does."""
    text = read_text("/var/lib/dpkg/status", "") or ""
    result: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        # Half-configured packages count as installed: their files are there.
        status = fields.get("Status", "")
        if "Package" in fields and status.split()[-1:] in (
            ["installed"], ["half-configured"], ["triggers-pending"], ["triggers-awaited"]
        ):
            result[fields["Package"]] = fields.get("Version", "")
    return result


def upstream_version(debian_version: str) -> str:
    """'5:28.2.2-1~debian.12~bookworm' -> '28.2.2'."""
    version = debian_version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


# ---------------------------------------------------------------- NVIDIA state
NVIDIA_INSTALLED = f"{STATE_DIR}/nvidia/installed-version"
# The loaded module's version where a real kernel shows it (MODULE_VERSION); the fleet
# gives each host a writable /sys/module, the boot hook and the postinst write it.
NVIDIA_LOADED = "/sys/module/nvidia/version"
GPUS_FILE = f"{ETC_DIR}/gpus.json"

# CUDA version each driver branch reports (nvidia-smi header).
CUDA_BY_BRANCH = {470: "11.4", 535: "12.2", 550: "12.4", 570: "12.8", 580: "13.0", 590: "13.1"}


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    uuid: str
    pci_bus_id: str
    memory_used_mib: int = 1
    utilization: int = 0
    temperature: int = 32
    compute_cap: str = "8.0"
    power_cap_w: int = 400
    ecc: bool = True            # False: a board without ECC (GeForce): its fields are [N/A]


DEFAULT_GPUS = [
    {
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total_mib": 81920,
        "uuid": "GPU-5d3f8a1e-0c6b-4a47-9a7e-6b1f6f6e0a01",
        "pci_bus_id": "00000000:07:00.0",
    },
    {
        "name": "NVIDIA A100-SXM4-80GB",
        "memory_total_mib": 81920,
        "uuid": "GPU-9b2c7d40-3e15-4f0a-8d7c-1a2b3c4d5e02",
        "pci_bus_id": "00000000:0B:00.0",
    },
]


def _compute_cap(name: str) -> str:
    for marker, cap in (("H100", "9.0"), ("H200", "9.0"), ("A100", "8.0"), ("A30", "8.0"),
                        ("L40", "8.9"), ("L4", "8.9"), ("V100", "7.0"), ("T4", "7.5")):
        if marker in name:
            return cap
    return "8.6"


def all_gpus() -> list[Gpu]:
    entries = read_json(GPUS_FILE, DEFAULT_GPUS)
    gpus = []
    for index, entry in enumerate(entries):
        gpus.append(Gpu(
            index=index,
            name=entry["name"],
            memory_total_mib=int(entry["memory_total_mib"]),
            uuid=entry["uuid"],
            pci_bus_id=entry["pci_bus_id"],
            memory_used_mib=int(entry.get("memory_used_mib", 1)),
            utilization=int(entry.get("utilization_gpu", 0)),
            temperature=int(entry.get("temperature_gpu", 32)),
            compute_cap=str(entry.get("compute_cap", _compute_cap(entry["name"]))),
            power_cap_w=int(entry.get("power_cap_w", 400)),
            ecc=bool(entry.get("ecc", True)),
        ))
    return gpus


def select_gpus(gpus: list[Gpu], spec: str) -> list[Gpu] | None:
    """Pick GPUs by comma list of indexes/UUIDs/bus ids; None when one is unknown."""
    chosen: list[Gpu] = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        match = [g for g in gpus if token in (str(g.index), g.uuid, g.pci_bus_id)]
        if not match:
            return None
        chosen.extend(g for g in match if g not in chosen)
    return chosen


def visible_gpus() -> list[Gpu]:
    """GPUs this process may see: NVIDIA_VISIBLE_DEVICES mimics the container runtime."""
    gpus = all_gpus()
    spec = os.environ.get("NVIDIA_VISIBLE_DEVICES")
    if spec is None or spec.strip() == "all":
        return gpus
    if spec.strip() in ("", "none", "void"):
        return []
    return select_gpus(gpus, spec) or []


def nvidia_installed_version() -> str | None:
    value = read_text(NVIDIA_INSTALLED)
    return value.strip() or None if value else None


def nvidia_loaded_version() -> str | None:
    value = read_text(NVIDIA_LOADED)
    return value.strip() or None if value else None


def driver_branch(version: str) -> int:
    return int(version.split(".")[0])


def cuda_version(driver_version: str) -> str:
    branch = driver_branch(driver_version)
    known = [b for b in sorted(CUDA_BY_BRANCH) if b <= branch]
    return CUDA_BY_BRANCH[known[-1]] if known else "11.0"


def nvml_state() -> tuple[str, str | None]:
    """('ok', version) | ('no-driver', None) | ('mismatch', library version).

    The library (libnvidia-ml) is what the installed driver package ships; the
    kernel module is what was loaded at boot or at first install, and it stays
    loaded across package upgrades until a reboot, as on real hosts.
    """
    library = nvidia_installed_version()
    loaded = nvidia_loaded_version()
    if loaded is None:
        return "no-driver", None
    if loaded != library:
        return "mismatch", library
    return "ok", library
