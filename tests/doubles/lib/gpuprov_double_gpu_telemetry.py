# TEST DOUBLE for gpuprov's test fleet: nvidia-smi's telemetry. Never install on real hosts.
"""What the nvidia-smi double reports about GPUs at work, scriptable by tests.

Each GPU starts idle and healthy (32 C, 60 W of its power cap, no ECC error,
no page or row pending, only the idle clock reason). A test changes any of
that through a state file on the host, keyed by GPU index with nvidia-smi's
own --query-gpu field names, plus the compute processes:

    /var/lib/gpuprov-test-double/gpu-state.json
    {"0": {"temperature.gpu": 91, "ecc.errors.uncorrected.volatile.total": 2,
           "clocks_event_reasons.active": "0x0000000000000040"},
     "compute_apps": [{"pid": 4242, "gpu": 0, "used_memory": 2048,
                       "process_name": "python3"}]}

A value may be "[N/A]" or "[Not Supported]", which nvidia-smi prints as such
(also with nounits). A GPU in gpus.json with "ecc": false (a GeForce board)
reports its ECC and retired-page fields as "[N/A]", and a GPU older than
Ampere (compute capability < 8.0) its remapped rows, as the real tool does.
"""

from __future__ import annotations

from typing import Any

from gpuprov_double import STATE_DIR, Gpu, read_json

GPU_STATE = f"{STATE_DIR}/gpu-state.json"

NA = "[N/A]"

#: NVML's clocks event reason bits, by the names nvidia-smi gives each one's field
REASON_BITS = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4,
    "hw_slowdown": 0x8, "sync_boost": 0x10, "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40, "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}


def state() -> dict[str, Any]:
    data = read_json(GPU_STATE, {})
    return data if isinstance(data, dict) else {}


def _ecc(gpu: Gpu, value: str) -> str:
    return value if gpu.ecc else NA


def base_values(gpu: Gpu) -> dict[str, str]:
    """The telemetry fields of an idle, healthy GPU (before the state file)."""
    idle = gpu.utilization == 0
    return {
        "power.draw": "60.12",
        "power.limit": f"{gpu.power_cap_w:.2f}",
        "power.max_limit": f"{gpu.power_cap_w:.2f}",
        "ecc.errors.uncorrected.volatile.total": _ecc(gpu, "0"),
        "ecc.errors.corrected.volatile.total": _ecc(gpu, "0"),
        "ecc.errors.uncorrected.aggregate.total": _ecc(gpu, "0"),
        "retired_pages.pending": _ecc(gpu, "No"),
        "clocks_event_reasons.active": "0x0000000000000001" if idle else "0x0000000000000000",
        "pstate": "P0",
        "fan.speed": NA,
    }


def overlay(gpu: Gpu) -> dict[str, str]:
    """The state file's values for this GPU, as text."""
    entry = state().get(str(gpu.index)) or {}
    return {str(k): str(v) for k, v in entry.items()} if isinstance(entry, dict) else {}


def value(gpu: Gpu, name: str, fallback: str | None) -> str | None:
    """A field's text, the state file first; `fallback` is the double's own
    value of the fields it always had (temperature, memory, utilisation)."""
    scripted = overlay(gpu)
    if name == "clocks_throttle_reasons.active":   # the pre-R535 name, still answered
        name = "clocks_event_reasons.active"
    if name in scripted:
        return scripted[name]
    if name.startswith(("clocks_event_reasons.", "clocks_throttle_reasons.")):
        reason = name.split(".", 1)[1]
        if reason in REASON_BITS:
            mask = int(value(gpu, "clocks_event_reasons.active", None) or "0", 16)
            return "Active" if mask & REASON_BITS[reason] else "Not Active"
    base = base_values(gpu)
    return base.get(name, fallback)


#: the telemetry fields with their units (csv header suffix, value suffix)
UNITS = {"power.draw": " [W]", "power.limit": " [W]", "power.max_limit": " [W]",
         "fan.speed": " [%]"}


def is_field(name: str) -> bool:
    if name in ("clocks_throttle_reasons.active", *base_values(Gpu(0, "", 0, "", ""))):
        return True
    prefix, _, reason = name.partition(".")
    return prefix in ("clocks_event_reasons", "clocks_throttle_reasons") and \
        reason in REASON_BITS


def remapped_rows(gpus: list[Gpu], fields: list[str], units: bool) -> tuple[str, int]:
    """--query-remapped-rows: one row per GPU."""
    out = []
    for gpu in gpus:
        ampere = float(gpu.compute_cap) >= 8.0
        values = {"gpu_uuid": gpu.uuid, "gpu_bus_id": gpu.pci_bus_id,
                  "remapped_rows.correctable": "0" if ampere else NA,
                  "remapped_rows.uncorrectable": "0" if ampere else NA,
                  "remapped_rows.pending": "0" if ampere else NA,
                  "remapped_rows.failure": "0" if ampere else NA}
        values.update({k: v for k, v in overlay(gpu).items() if k.startswith("remapped_rows.")})
        for name in fields:
            if name not in values:
                return f'Field "{name}" is not a valid field to query.\n\n', 2
        out.append(", ".join(values[f] for f in fields))
    return "".join(line + "\n" for line in out), 0


APP_FIELDS = {"pid": ("pid", ""), "process_name": ("process_name", ""),
              "gpu_uuid": ("gpu_uuid", ""), "gpu_bus_id": ("gpu_bus_id", ""),
              "gpu_name": ("gpu_name", ""),
              "used_memory": ("used_gpu_memory [MiB]", " MiB"),
              "used_gpu_memory": ("used_gpu_memory [MiB]", " MiB")}


def compute_apps(gpus: list[Gpu], fields: list[str], units: bool,
                 header: bool) -> tuple[str, int]:
    """--query-compute-apps: the state file's processes on the GPUs shown."""
    for name in fields:
        if name not in APP_FIELDS:
            return f'Field "{name}" is not a valid field to query.\n\n', 2
    out = []
    if header:
        out.append(", ".join(APP_FIELDS[f][0] if units else APP_FIELDS[f][0].split(" [")[0]
                             for f in fields))
    by_index = {g.index: g for g in gpus}
    for app in state().get("compute_apps") or []:
        gpu = by_index.get(int(app.get("gpu", 0)))
        if gpu is None:
            continue
        memory = str(app.get("used_memory", 0))
        values = {"pid": str(app["pid"]), "process_name": str(app.get("process_name", "python3")),
                  "gpu_uuid": gpu.uuid, "gpu_bus_id": gpu.pci_bus_id, "gpu_name": gpu.name,
                  "used_memory": memory, "used_gpu_memory": memory}
        out.append(", ".join(values[f] + (APP_FIELDS[f][1] if units and values[f] != NA
                                          else "") for f in fields))
    return "".join(line + "\n" for line in out), 0
