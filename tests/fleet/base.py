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
# What a minimal Debian server needs for the roles to act on, git (pull mode
# fetches with it), and python3 for the test doubles only: POST_INSTALL keeps a
# copy of its interpreter off PATH and purges the python3 packages, so gpuprov
# cannot silently rely on Python on a target, and `apt-get install python3
# python3-venv` installs Debian's real ones from the stand-in archive
# (tests/fleet/realdebs.py). The doubles' interpreter reads its stdlib from
# libpython3.11-minimal/-stdlib, which stay installed.
PACKAGES = (
    "openssh-server", "sudo", "kmod", "initramfs-tools", "procps", "iproute2",
    "ca-certificates", "python3", "git",
)
# What POST_INSTALL purges: nothing else in the base depends on them.
PURGED = ("python3", "python3-minimal", "python3.11", "python3.11-minimal")
HOSTROOT = Path(__file__).parent / "hostroot"
# The systemd variant: the same root plus systemd as PID 1 (Debian 12's 252),
# and hostroot-systemd/ instead of hostroot/ (no sysvinit stand-in: systemd-sysv
# owns /sbin/init, reboot, shutdown and runlevel there).
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
SYSTEMD_HOSTROOT = Path(__file__).parent / "hostroot-systemd"
VARIANTS = ("default", "systemd")

# Runs inside the new root with chroot. Keep it idempotent and boring.
POST_INSTALL = r"""
set -eu
# The doubles' interpreter, off PATH (see PACKAGES).
mkdir -p /usr/libexec/gpuprov-test-doubles
cp /usr/bin/python3.11 /usr/libexec/gpuprov-test-doubles/python3
dpkg --purge """ + " ".join(PURGED) + r"""
# Its stdlib: never autoremoved by an apt run on a host.
apt-mark manual libpython3.11-minimal libpython3.11-stdlib >/dev/null
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

# Runs after POST_INSTALL in the systemd variant's root.
SYSTEMD_POST_INSTALL = r"""
set -eu
# Nothing in a fleet host has a terminal to log in on, and nothing may change
# the real machine's clock or kernel settings.
systemctl mask getty@.service console-getty.service systemd-sysctl.service \
    systemd-modules-load.service systemd-timesyncd.service 2>/dev/null || true
systemctl enable gpuprov-fleet-boot.service
echo > /etc/machine-id
"""


def cache_root() -> Path:
    return Path(os.environ.get("GPUPROV_FLEET_CACHE", "/var/cache/gpuprov-test-fleet"))


def _packages(variant: str) -> tuple[str, ...]:
    return PACKAGES + (SYSTEMD_PACKAGES if variant == "systemd" else ())


def _hostroot(variant: str) -> Path:
    return SYSTEMD_HOSTROOT if variant == "systemd" else HOSTROOT


def _post_install(variant: str) -> str:
    return POST_INSTALL + (SYSTEMD_POST_INSTALL if variant == "systemd" else "")


def base_key(variant: str = "default") -> str:
    """The default variant's key is what it was before variants existed, so
    adding the systemd variant did not rebuild anybody's default base."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown base variant {variant!r}")
    h = hashlib.sha256()
    h.update(f"{SUITE}\n{MIRROR}\n{' '.join(_packages(variant))}\n"
             f"{_post_install(variant)}".encode())
    hostroot = _hostroot(variant)
    for path in sorted(hostroot.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(hostroot)).encode())
            h.update(path.read_bytes())
    digest = h.hexdigest()[:16]
    return digest if variant == "default" else f"{variant}-{digest}"


def ensure_base(log: Path | None = None, variant: str = "default") -> Path:
    """The cached base root, built first if missing. Needs root and debootstrap."""
    root = cache_root()
    key = base_key(variant)
    target = root / f"base-{key}"
    if (target / ".complete").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise FleetUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    root.mkdir(parents=True, exist_ok=True)
    building = root / f"building-{key}-{os.getpid()}"
    _remove_stale_builds(root)
    suffix = "" if variant == "default" else f"-{variant}"
    out = open(log or root / f"base-build{suffix}.log", "w")  # noqa: SIM115 - closed below
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(_packages(variant))}",
             SUITE, str(building), MIRROR],
            check=True, stdout=out, stderr=subprocess.STDOUT,
        )
        _install_hostroot(building, _hostroot(variant))
        subprocess.run(["chroot", str(building), "/bin/sh", "-c", _post_install(variant)],
                       check=True, stdout=out, stderr=subprocess.STDOUT,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        (building / ".complete").write_text(key + "\n")
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


def _install_hostroot(root: Path, hostroot: Path) -> None:
    """Copy the fleet's own files (PID 1, runlevel, reboot; or systemd units) into the root."""
    for src in hostroot.rglob("*"):
        if src.is_file():
            dst = root / src.relative_to(hostroot)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            # hostroot/ is all programs; elsewhere the file's own x bit says.
            executable = hostroot == HOSTROOT or src.stat().st_mode & 0o111
            dst.chmod(0o755 if executable else 0o644)


def _remove_stale_builds(root: Path) -> None:
    """Half builds of killed runs, and bases of older keys (they cost ~400 MB);
    every variant's current base is kept."""
    keep = {f"base-{base_key(variant)}" for variant in VARIANTS}
    for entry in root.iterdir():
        if entry.name.startswith("building-") or (
                entry.name.startswith("base-") and entry.name not in keep):
            unmount_below(entry)
            shutil.rmtree(entry, ignore_errors=True)
