"""What the machine has: CPU, memory, disk space (`gpuprov facts`).

Read from the kernel's own files (/proc/cpuinfo, /proc/meminfo) and POSIX
`df -P`, which every distro has in the same format; lscpu's output moves
between util-linux releases, /proc/cpuinfo's does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError

# ---------------------------------------------------------------- cpu

#: the /proc/cpuinfo keys CpuFacts reads; the rest (flags, bugs: most of the
#: text on a many-core host) never leaves the host
_CPU_KEYS = ("processor", "model name", "physical id", "core id", "Hardware", "Model")


@dataclass(frozen=True)
class CpuInfo:
    model: str | None   # "AMD EPYC 7763 64-Core Processor"; None where the kernel names none
    sockets: int
    cores: int          # physical cores, all sockets
    threads: int        # logical CPUs (what nproc counts without affinity limits)


@dataclass(frozen=True)
class Cpu(Fact[CpuInfo]):
    def command(self) -> Command:
        pattern = "^(" + "|".join(_CPU_KEYS) + ")[[:space:]]*:"
        return Command("grep", "-E", pattern, "/proc/cpuinfo")

    def process(self, output: str, exit_code: int) -> CpuInfo:
        return parse_cpuinfo(output)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Threads are `processor` entries; a core is a (physical id, core id)
    pair (an SMT sibling repeats its core's pair); kernels that print no
    topology (some arm64, VMs) count each thread as a core of one socket."""
    threads, model, fallback_model = 0, None, None
    package = None
    cores: set[tuple[str | None, str]] = set()
    packages: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            threads += 1
            package = None
        elif key == "model name" and model is None:
            model = value
        elif key in ("Hardware", "Model") and fallback_model is None:
            fallback_model = value
        elif key == "physical id":
            package = value
            packages.add(value)
        elif key == "core id":
            cores.add((package, value))
    if threads == 0:
        raise FactError("/proc/cpuinfo lists no processor")
    return CpuInfo(model or fallback_model, sockets=len(packages) or 1,
                   cores=len(cores) or threads, threads=threads)


# ---------------------------------------------------------------- memory

@dataclass(frozen=True)
class MemoryInfo:
    total_mib: int
    available_mib: int | None   # MemAvailable: what can be used without swapping
    swap_total_mib: int | None


@dataclass(frozen=True)
class Memory(Fact[MemoryInfo]):
    def command(self) -> Command:
        return Command("grep", "-E", "^(MemTotal|MemAvailable|SwapTotal):", "/proc/meminfo")

    def process(self, output: str, exit_code: int) -> MemoryInfo:
        kib: dict[str, int] = {}
        for line in output.splitlines():
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                kib[key.strip()] = int(words[0])
        if "MemTotal" not in kib:
            raise FactError("/proc/meminfo has no MemTotal")

        def mib(key: str) -> int | None:
            return kib[key] // 1024 if key in kib else None
        return MemoryInfo(kib["MemTotal"] // 1024, mib("MemAvailable"), mib("SwapTotal"))


# ---------------------------------------------------------------- disk

_PATH_MARK = "@@gpuprov-df "


@dataclass(frozen=True)
class DiskSpace:
    path: str                  # the path asked about
    filesystem: str | None = None
    mount: str | None = None   # where its filesystem is mounted
    size_mib: int | None = None
    used_mib: int | None = None
    available_mib: int | None = None
    used_percent: int | None = None
    error: str | None = None   # df's reason when there is no answer (a missing path)


@dataclass(frozen=True)
class DiskUsage(Fact[tuple[DiskSpace, ...]]):
    """`df -Pk` of each path (POSIX format: one line per filesystem, never
    wrapped), one df per path so a missing one cannot shift the others."""

    paths: tuple[str, ...] = ("/",)

    def command(self) -> Command:
        parts: list[Command] = []
        for path in self.paths:
            parts.append(Command("printf", "%s\\n", _PATH_MARK + path))
            parts.append(Command("df", "-Pk", "--", path, Raw("2>&1")))
        return Command.join(parts, sep="; ")

    def process(self, output: str, exit_code: int) -> tuple[DiskSpace, ...]:
        blocks: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in output.splitlines():
            if line.startswith(_PATH_MARK):
                current = blocks.setdefault(line[len(_PATH_MARK):], [])
            elif current is not None and line.strip():
                current.append(line)
        return tuple(_disk_space(path, blocks.get(path, [])) for path in self.paths)


def _disk_space(path: str, lines: list[str]) -> DiskSpace:
    rows = [ln for ln in lines if not ln.startswith("Filesystem ") and not ln.startswith("df:")]
    for row in rows:
        words = row.split()
        # The mount point is the rest of the line: it may hold spaces.
        if len(words) >= 6 and all(w.isdigit() for w in words[1:4]):
            size, used, avail = (int(w) // 1024 for w in words[1:4])
            percent = words[4].rstrip("%")
            return DiskSpace(path, words[0], " ".join(words[5:]), size, used, avail,
                             int(percent) if percent.isdigit() else None)
    errors = [ln for ln in lines if ln.startswith("df:")]
    return DiskSpace(path, error=(errors[0].removeprefix("df: ") if errors else "no answer"))
