"""How many hosts a run works on at once: `--forks N`, or `auto` (the default).

`auto` runs every host at once, as pyinfra does: a host mostly waits on its
network and its own CPU, so a fixed 10 left 16- and 64-host runs partly
serial for nothing. The bound is what the controller can hold open at once:

- file descriptors: a host's run keeps its SSH socket open for the whole run
  (channels are multiplexed inside it); an agent socket, a ProxyJump hop or a
  ProxyCommand's pipes add a few more. FDS_PER_HOST covers those, measured on
  the fleet with benchmarks/run.py (peak fds of the tool's tree);
- memory: each host's transport, threads and facts (RSS_MIB_PER_HOST, the
  benchmark's peak RSS at 8 and 16 hosts), within half of MemAvailable.

A run's soft RLIMIT_NOFILE is raised towards its hard limit when the hosts
need it (any process may do that), so a 1024 soft limit does not cap a
200-host run.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

AUTO = "auto"
#: the explicit -f N ceiling, and auto's too: beyond it threads cost more than they gain
MAX_FORKS = 500
#: a host's share of open files: its SSH socket, plus an agent socket, a jump
#: hop's socket or a ProxyCommand's pipes. Measured on the fleet: 1 per host
#: (peak 19 open fds for 16 hosts, 21 with 2 more connecting, in apply and drift-check)
FDS_PER_HOST = 4
#: stdio, the inventory and role files, known_hosts, the report, imports
FDS_RESERVED = 64
#: a host's share of the controller's RSS. Measured: the run's peak RSS is 61 MiB at 8
#: hosts and 67 MiB at 16 (site.yml, no change), under 1 MiB per host; 4 leaves room for
#: hosts whose facts are larger (long package lists, big managed files)
RSS_MIB_PER_HOST = 4.0
#: the part of MemAvailable a run may take for its hosts
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Forks:
    """The workers a run uses, and whether `auto` chose them (for -v and --help)."""

    workers: int
    auto: bool = False

    def __str__(self) -> str:
        return f"{AUTO} ({self.workers})" if self.auto else str(self.workers)


def auto_bound(nofile: int, mem_available_mib: float | None) -> int:
    """The most hosts at once that `nofile` open files and that memory allow."""
    bound = min(MAX_FORKS, (nofile - FDS_RESERVED) // FDS_PER_HOST)
    if mem_available_mib is not None:
        bound = min(bound, int(mem_available_mib * MEMORY_SHARE / RSS_MIB_PER_HOST))
    return max(1, bound)


def resolve_forks(value: int | str, hosts: int,
                  nofile: Callable[[int], int] | None = None,
                  mem_available_mib: Callable[[], float | None] | None = None) -> Forks:
    """`-f` as given (a number, or "auto") -> the workers for `hosts` hosts."""
    if value != AUTO:
        return Forks(int(value))
    wanted = max(1, min(hosts, MAX_FORKS))
    limit = (nofile or raise_nofile)(FDS_RESERVED + wanted * FDS_PER_HOST)
    memory = (mem_available_mib or read_mem_available_mib)()
    return Forks(max(1, min(wanted, auto_bound(limit, memory))), auto=True)


def raise_nofile(needed: int) -> int:
    """The soft open-files limit, raised towards `needed` (never above the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def read_mem_available_mib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable in MiB; None where the kernel does not say (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def batches(hosts: Sequence[T], serial: int | str | None) -> list[list[T]]:
    """Split a play's hosts into --serial batches: a count, or "30%" of them
    (moved here from executor.py, which re-exports it, for its 400 lines)."""
    if not serial:
        return [list(hosts)] if hosts else []
    if isinstance(serial, str):
        size = max(1, math.floor(len(hosts) * float(serial.rstrip("%")) / 100))
    else:
        size = max(1, int(serial))
    return [list(hosts[i:i + size]) for i in range(0, len(hosts), size)]
