"""Build (once) and cache the Debian 12 root that every fleet host overlays.

The cache key is a hash of everything that goes into the root: the package
list, the suite, the post-install script and the files under hostroot/.
A build goes to a temp dir and is renamed into place only when complete,
so a killed build never leaves a half root that later runs would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.fleet.errors import FleetUnavailable
from tests.fleet.mounts import unmount_below

SUITE = "bookworm"
MIRROR = os.environ.get("GPUPROV_FLEET_MIRROR", "http://deb.debian.org/debian")
# What a minimal Debian server needs for the roles to act on, and python3 for
# the test doubles only (it is moved off PATH below: gpuprov itself must
# never rely on Python on a target).
PACKAGES = (
    "openssh-server", "sudo", "kmod", "initramfs-tools", "procps", "iproute2",
    "ca-certificates", "python3",
)
HOSTROOT = Path(__file__).parent / "hostroot"

# Runs inside the new root with chroot. Keep it idempotent and boring.
POST_INSTALL = r"""
set -eu
# The doubles' interpreter, off PATH (see PACKAGES).
mkdir -p /usr/libexec/gpuprov-test-doubles
cp /usr/bin/python3.11 /usr/libexec/gpuprov-test-doubles/python3
rm -f /usr/bin/python3 /usr/bin/python3.11 /usr/bin/pydoc3* /usr/bin/pygettext3*
# No network on the hosts: sources come from the fleet's local repo only.
: > /etc/apt/sources.list
rm -f /etc/apt/sources.list.d/*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# Host keys are per host (made by the fleet), never shared through the base.
rm -f /etc/ssh/ssh_host_*
# The operator used by the tests.
useradd --create-home --shell /bin/bash --uid 1000 admin
printf 'admin ALL=(ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/90-fleet-admin
chmod 0440 /etc/sudoers.d/90-fleet-admin
# Faster logins on a network without DNS.
printf 'UseDNS no\n' > /etc/ssh/sshd_config.d/50-fleet.conf
"""


def cache_root() -> Path:
    return Path(os.environ.get("GPUPROV_FLEET_CACHE", "/var/cache/gpuprov-test-fleet"))


def base_key() -> str:
    h = hashlib.sha256()
    h.update(f"{SUITE}\n{MIRROR}\n{' '.join(PACKAGES)}\n{POST_INSTALL}".encode())
    for path in sorted(HOSTROOT.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(HOSTROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ensure_base(log: Path | None = None) -> Path:
    """The cached base root, built first if missing. Needs root and debootstrap."""
    root = cache_root()
    target = root / f"base-{base_key()}"
    if (target / ".complete").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise FleetUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    root.mkdir(parents=True, exist_ok=True)
    building = root / f"building-{base_key()}-{os.getpid()}"
    _remove_stale_builds(root)
    out = open(log or root / "base-build.log", "w")  # noqa: SIM115 - closed below
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
             SUITE, str(building), MIRROR],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )
        _install_hostroot(building)
        subprocess.run(["chroot", str(building), "/bin/sh", "-c", POST_INSTALL],
                       check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        (building / ".complete").write_text(base_key() + "\n")
    except subprocess.CalledProcessError as exc:
        unmount_below(building)
        raise FleetUnavailable(
            f"building the fleet base root failed ({exc.cmd[0]} exit {exc.returncode}); "
            f"see {out.name}") from exc
    finally:
        out.close()
    unmount_below(building)
    building.rename(target)
    return target


def _install_hostroot(root: Path) -> None:
    """Copy the fleet's own files (PID 1, runlevel, reboot) into the root."""
    for src in HOSTROOT.rglob("*"):
        if src.is_file():
            dst = root / src.relative_to(HOSTROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            dst.chmod(0o755)


def _remove_stale_builds(root: Path) -> None:
    """Half builds of killed runs, and bases of older keys (they cost ~400 MB)."""
    keep = f"base-{base_key()}"
    for entry in root.iterdir():
        if entry.name.startswith("building-") or (
                entry.name.startswith("base-") and entry.name != keep):
            unmount_below(entry)
            shutil.rmtree(entry, ignore_errors=True)
