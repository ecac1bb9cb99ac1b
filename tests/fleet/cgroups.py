"""The fleet's cgroups: systemd hosts run in their own cgroup of each hierarchy.

This machine's PID 1 is not systemd and its cgroups are a v1/v2 hybrid
(v1 controllers, the v1 `name=systemd` hierarchy and a controller-less v2 at
/sys/fs/cgroup/unified). start-systemd-host.sh puts each systemd host into
`gpuprov-fleet-<ID>/<host>` of the name=systemd and the v2 hierarchy (or of
/sys/fs/cgroup alone on a pure v2 machine) before systemd-nspawn runs, so the
host's systemd builds its tree (init.scope, system.slice...) there and never
in a cgroup shared with this machine or another host. Nothing else creates
cgroups: these trees are removed when their host is gone, and a killed run's
are removed by the next run (cleanup_stale).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from tests.fleet import network

FLEET_CGROUP = f"gpuprov-fleet-{network.FLEET_ID}"
ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """The writable hierarchies a systemd host is put into (see start-systemd-host.sh)."""
    found = [ROOT / name for name in ("systemd", "unified")
             if (ROOT / name / "cgroup.procs").exists()]
    if not found and (ROOT / "cgroup.procs").exists():
        found.append(ROOT)  # a pure cgroup v2 machine
    return found


def remove(relative: str, timeout: float = 5.0) -> None:
    """Remove a cgroup tree, deepest first, once its processes are gone: a
    killed host's processes die asynchronously (unshare --kill-child) and a
    cgroup stays busy until they are reaped, so wait for them a while."""
    deadline = time.monotonic() + timeout
    while members(relative) and time.monotonic() < deadline:
        time.sleep(0.02)
    for hierarchy in hierarchies():
        top = hierarchy / relative
        while top.is_dir():
            for directory in sorted(_dirs(top), key=lambda d: len(d.parts), reverse=True):
                with contextlib.suppress(OSError):   # busy until its processes are reaped
                    directory.rmdir()
            if not top.is_dir() or time.monotonic() > deadline:
                break
            time.sleep(0.05)


def members(relative: str) -> list[int]:
    """Pids of the processes (dying ones included) in the tree `relative`."""
    top = f"/{relative}"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            paths = [line.split(":", 2)[2] for line in (proc / "cgroup").read_text().splitlines()]
        except (OSError, IndexError):
            continue
        if any(path == top or path.startswith(top + "/") for path in paths):
            found.append(int(proc.name))
    return found


def leftovers() -> list[str]:
    """This fleet's cgroups that still exist (tests assert none after down())."""
    return [str(hierarchy / FLEET_CGROUP) for hierarchy in hierarchies()
            if (hierarchy / FLEET_CGROUP).exists()]


def _dirs(top: Path) -> list[Path]:
    found = []
    for dirpath, _dirnames, _files in os.walk(top):
        found.append(Path(dirpath))
    return found
