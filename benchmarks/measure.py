"""One timed run of a tool: wall, the tool's own CPU, the whole machine's CPU,
its peak memory and open files, and the SSH connections each fleet host accepted."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Sample:
    """What one run of a tool cost."""

    wall: float
    controller_cpu: float          # user + system seconds of the tool's process tree
    machine_cpu: float             # busy seconds of every core: controller + every host
    peak_rss_mib: float            # largest sum of RSS of the tool's process tree seen
    returncode: int
    stdout: str
    stderr: str
    connections: dict[str, int] = field(default_factory=dict)   # host -> accepted TCP
    peak_fds: int = 0              # largest sum of open fds of the tool's process tree seen


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the machine since boot (/proc/stat, all cores).

    The fleet's hosts are namespaces on this kernel, so their sshd, sudo and
    commands are in here too: the honest cost of a run on a shared box."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def passive_opens(init_pid: int) -> int:
    """TCP connections accepted so far in the network namespace of that pid.

    Each fleet host has its own namespace, so this counts the SSH connections
    made to that host (nothing else listens there during a run)."""
    lines = Path(f"/proc/{init_pid}/net/snmp").read_text().splitlines()
    tcp = [line.split() for line in lines if line.startswith("Tcp:")]
    header, values = tcp[0], tcp[1]
    return int(values[header.index("PassiveOpens")])


def _children(pid: int) -> list[int]:
    """Direct children, from the kernel's per-thread lists: reading only the
    tree keeps the poll cheap on a machine with hundreds of fleet processes."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree_usage(root: int) -> tuple[int, int]:
    """Resident memory (KiB) and open file descriptors of a process and all its
    descendants: what gpuprov's auto forks bounds per host (engine/forks.py)."""
    rss, fds, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(_children(pid))
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, IndexError, ValueError):
            continue
    return rss, fds


class _RssPoller(threading.Thread):
    """Polls the tree's RSS: ru_maxrss only gives the largest single child
    over the whole benchmark, not the peak of one run's tree."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.peak_fds = pid, interval, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss, fds = tree_usage(self.pid)
            self.peak, self.peak_fds = max(self.peak, rss), max(self.peak_fds, fds)
            self.done.wait(self.interval)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: list[str], cwd: Path, env: dict[str, str], hosts: dict[str, int],
            timeout: float = 1800, poll: float = 0.2) -> Sample:
    """Run argv once; hosts maps host name -> the pid whose netns to count in.

    Controller CPU is the RUSAGE_CHILDREN delta: the tool and every process it
    waited for (ssh clients, ansible's forks). A daemonised process that
    outlives the run (an ssh ControlPersist master) is not in it; its work
    shows in machine CPU."""
    before_conn = {name: passive_opens(pid) for name, pid in hosts.items()}
    cpu0, busy0, t0 = children_cpu(), machine_busy_seconds(), time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller = _RssPoller(proc.pid, poll)
    poller.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    finally:
        poller.done.set()
        poller.join()
    wall = time.monotonic() - t0
    busy, cpu = machine_busy_seconds() - busy0, children_cpu() - cpu0
    conns = {name: passive_opens(pid) - before_conn[name] for name, pid in hosts.items()}
    return Sample(wall=wall, controller_cpu=cpu, machine_cpu=busy,
                  peak_rss_mib=poller.peak / 1024, returncode=proc.returncode,
                  stdout=out, stderr=err, connections=conns, peak_fds=poller.peak_fds)
