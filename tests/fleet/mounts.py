"""Find and undo mounts left under a directory by a killed run."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_below(directory: Path) -> list[str]:
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].encode().decode("unicode_escape")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
    return found


def unmount_below(directory: Path) -> None:
    # Deepest first, lazily: a busy mount of a dead run must not block cleanup.
    for mount_point in sorted(mounts_below(directory), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
