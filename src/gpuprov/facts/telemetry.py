"""GPU telemetry for `gpuprov status`: what each GPU is doing now, and which
processes use it.

One `nvidia-smi --query-gpu` answers every per-GPU number (the same fields
dcgm-exporter reads through NVML); row remapping has its own query
(`--query-remapped-rows`), the CUDA version only the banner. A field a GPU
cannot answer comes back as "[N/A]" or "[Not Supported]" (ECC on a GeForce,
power on some boards) and reads as None, never as 0. NVIDIA renamed
`clocks_throttle_reasons.*` to `clocks_event_reasons.*` (R535); the probe asks
the new name and falls back to the old one on a driver that does not know it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuprov.command import Command
from gpuprov.facts.base import Fact

#: the --query-gpu fields, in the order GpuSample reads them (the throttle
#: bitmask is appended under whichever name the driver knows)
QUERY_FIELDS = (
    "index", "name", "uuid", "pci.bus_id", "driver_version", "utilization.gpu",
    "memory.used", "memory.total", "temperature.gpu", "power.draw", "power.limit",
    "ecc.errors.uncorrected.volatile.total", "retired_pages.pending",
)
THROTTLE_FIELDS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")
REMAPPED_QUERY = "--query-remapped-rows=gpu_uuid,remapped_rows.pending"
COMPUTE_APPS_QUERY = "--query-compute-apps=pid,used_memory,gpu_uuid"
CSV = "--format=csv,noheader,nounits"

#: NVML's clocks event (throttle) reason bits -> the names nvidia-smi's
#: `clocks_event_reasons.<name>` fields use
THROTTLE_BITS = (
    (0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"), (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"), (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

_END = "@@gpuprov-smi-end"
_ROWS = "@@gpuprov-smi-rows"
_BANNER = "@@gpuprov-smi-banner"


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    uuid: str
    pci_bus_id: str
    utilization_gpu_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    temperature_c: float | None
    power_draw_w: float | None
    power_limit_w: float | None
    ecc_volatile_uncorrected: int | None
    retired_pages_pending: bool | None
    remapped_rows_pending: bool | None
    throttle_reasons: tuple[str, ...]


@dataclass(frozen=True)
class GpuTelemetryReport:
    """gpus empty: `reason` says why (no nvidia-smi, no driver loaded...)."""

    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: tuple[GpuSample, ...] = ()
    reason: str | None = None


def number(cell: str) -> float | None:
    """A nounits cell: None for "[N/A]", "[Not Supported]", "N/A" and the like."""
    try:
        return float(cell.strip())
    except ValueError:
        return None


def integer(cell: str) -> int | None:
    value = number(cell)
    return int(value) if value is not None else None


def flag(cell: str) -> bool | None:
    """retired_pages.pending says Yes/No, remapped_rows.pending 0/1 on some
    drivers and Yes/No on others; anything else is unknown."""
    text = cell.strip().lower()
    if text in ("yes", "1", "true", "active"):
        return True
    if text in ("no", "0", "false", "not active"):
        return False
    return None


def throttle_reasons(cell: str) -> tuple[str, ...]:
    """The active reasons of a clocks_event_reasons.active bitmask ("0x...44").
    gpu_idle is left out: an idle GPU runs slow clocks by design, no alarm."""
    try:
        mask = int(cell.strip(), 16)
    except ValueError:
        return ()
    return tuple(name for bit, name in THROTTLE_BITS if mask & bit and name != "gpu_idle")


@dataclass(frozen=True)
class GpuTelemetry(Fact[GpuTelemetryReport]):
    """Every GPU's numbers now, the driver and the CUDA version it supports."""

    def command(self) -> Command:
        fields = ",".join(QUERY_FIELDS)
        return Command.script(
            "command -v nvidia-smi >/dev/null 2>&1 || { echo no-smi; exit 0; }\n"
            f"for f in {' '.join(THROTTLE_FIELDS)}; do\n"
            f"  o=$(nvidia-smi --query-gpu={fields},$f {CSV} 2>&1); c=$?\n"
            "  case $o in *'is not a valid field'*) continue ;; esac\n"
            "  break\n"
            "done\n"
            f"printf '%s\\n{_END} %s\\n' \"$o\" \"$c\"\n"
            "[ \"$c\" -eq 0 ] || exit 0\n"
            f"echo {_ROWS}; nvidia-smi {REMAPPED_QUERY} {CSV} 2>/dev/null\n"
            f"echo {_BANNER}; nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*'\n"
            "true")

    def process(self, output: str, exit_code: int) -> GpuTelemetryReport:
        if output.strip() == "no-smi":
            return GpuTelemetryReport(reason="nvidia-smi is not installed")
        body, _, tail = output.partition(_END)
        code_text, _, rest = tail.strip().partition("\n")
        text = body.strip()
        if code_text.strip() != "0":
            first = text.splitlines()[0] if text else f"nvidia-smi exited {code_text.strip()}"
            if "couldn't communicate with the nvidia driver" in text.lower():
                first = "the NVIDIA driver is not loaded (nvidia-smi cannot talk to it)"
            return GpuTelemetryReport(reason=first)
        rows_text, _, banner = rest.partition(_BANNER)
        remapped = _remapped(rows_text.replace(_ROWS, ""))
        gpus, version = [], None
        for line in text.splitlines():
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != len(QUERY_FIELDS) + 1 or not cells[0].isdigit():
                continue
            version = cells[4] or version
            gpus.append(GpuSample(
                int(cells[0]), cells[1], cells[2], cells[3], number(cells[5]),
                number(cells[6]), number(cells[7]), number(cells[8]), number(cells[9]),
                number(cells[10]), integer(cells[11]), flag(cells[12]),
                remapped.get(cells[2]), throttle_reasons(cells[13])))
        cuda = re.search(r"CUDA Version: *([0-9.]+)", banner)
        return GpuTelemetryReport(version, cuda.group(1) if cuda else None, tuple(gpus),
                                  None if gpus else "nvidia-smi lists no GPU")


def _remapped(text: str) -> dict[str, bool | None]:
    """uuid -> remapped_rows.pending; a GPU without row remapping (before
    Ampere) is missing or "[N/A]": None."""
    out: dict[str, bool | None] = {}
    for line in text.splitlines():
        uuid, sep, pending = line.partition(",")
        if sep and uuid.strip().startswith("GPU-"):
            out[uuid.strip()] = flag(pending.split(",")[0])
    return out


# ---------------------------------------------------------------- processes

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    gpu_uuid: str
    used_memory_mib: float | None
    user: str | None
    #: the container's name where docker names it, else its short id; None: on the host
    container: str | None


@dataclass(frozen=True)
class GpuProcesses(Fact[tuple[GpuProcess, ...]]):
    """`nvidia-smi --query-compute-apps`, each pid's user (ps) and the
    container its cgroup names (a 64-hex id, docker's and containerd's),
    named by `docker ps` only when some process runs in one (docker answers
    only root: without sudo the short id stays)."""

    def command(self) -> Command:
        return Command.script(
            "command -v nvidia-smi >/dev/null 2>&1 || exit 0\n"
            f"a=$(nvidia-smi {COMPUTE_APPS_QUERY} {CSV} 2>/dev/null) || exit 0\n"
            "printf '%s\\n' \"$a\" | sed -n 's/^[[:space:]]*[0-9]/app &/p'\n"
            "ids=\n"
            "for p in $(printf '%s\\n' \"$a\" | cut -d, -f1 | tr -cd '0-9\\n'); do\n"
            "  printf 'user %s %s\\n' \"$p\" \"$(ps -o user:32= -p \"$p\" 2>/dev/null"
            " || stat -c %U \"/proc/$p\" 2>/dev/null)\"\n"
            "  i=$(grep -o -E '[0-9a-f]{64}' \"/proc/$p/cgroup\" 2>/dev/null | head -n 1)\n"
            "  [ -n \"$i\" ] && { printf 'cgroup %s %s\\n' \"$p\" \"$i\"; ids=1; }\n"
            "done\n"
            "[ -n \"$ids\" ] && command -v docker >/dev/null 2>&1 && "
            "docker ps --no-trunc --format 'name {{.ID}} {{.Names}}' 2>/dev/null\n"
            "true")

    def process(self, output: str, exit_code: int) -> tuple[GpuProcess, ...]:
        apps: list[tuple[int, float | None, str]] = []
        users: dict[int, str] = {}
        cgroups: dict[int, str] = {}
        names: dict[str, str] = {}
        for line in output.splitlines():
            kind, _, rest = line.strip().partition(" ")
            if kind == "app":
                cells = [c.strip() for c in rest.split(",")]
                if len(cells) == 3 and cells[0].isdigit():
                    apps.append((int(cells[0]), number(cells[1]), cells[2]))
            elif kind in ("user", "cgroup", "name"):
                key, _, value = rest.partition(" ")
                if kind == "name":
                    names[key] = value.strip()
                elif key.isdigit() and value.strip():
                    (users if kind == "user" else cgroups)[int(key)] = value.strip()
        out = []
        for pid, memory, uuid in apps:
            cid = cgroups.get(pid)
            container = None
            if cid and _CONTAINER_ID.fullmatch(cid):
                container = names.get(cid, cid[:12])
            out.append(GpuProcess(pid, uuid, memory, users.get(pid), container))
        return tuple(out)
