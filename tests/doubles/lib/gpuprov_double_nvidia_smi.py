# TEST DOUBLE for gpuprov's test fleet: the nvidia-smi logic. Never install on real hosts.
"""nvidia-smi double: answers from /etc/gpuprov-test-double/gpus.json and the
driver records the nvidia-headless stand-in package writes; the telemetry
(temperature, power, ECC, clock reasons, compute processes) a test scripts in
/var/lib/gpuprov-test-double/gpu-state.json (gpuprov_double_gpu_telemetry.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import gpuprov_double_gpu_telemetry as telemetry
from gpuprov_double import Gpu, cuda_version, nvml_state, select_gpus, visible_gpus

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n"
)

# field -> (csv header, unit suffix or "", value getter)
FIELDS = {
    "index": ("index", "", lambda g, v: str(g.index)),
    "name": ("name", "", lambda g, v: g.name),
    "driver_version": ("driver_version", "", lambda g, v: v),
    "memory.used": ("memory.used [MiB]", " MiB", lambda g, v: str(g.memory_used_mib)),
    "memory.total": ("memory.total [MiB]", " MiB", lambda g, v: str(g.memory_total_mib)),
    "memory.free": ("memory.free [MiB]", " MiB",
                    lambda g, v: str(g.memory_total_mib - g.memory_used_mib)),
    "utilization.gpu": ("utilization.gpu [%]", " %", lambda g, v: str(g.utilization)),
    "temperature.gpu": ("temperature.gpu", "", lambda g, v: str(g.temperature)),
    "uuid": ("uuid", "", lambda g, v: g.uuid),
    "pci.bus_id": ("pci.bus_id", "", lambda g, v: g.pci_bus_id),
    "compute_cap": ("compute_cap", "", lambda g, v: g.compute_cap),
    "count": ("count", "", lambda g, v: ""),  # filled in by query()
}
ALIASES = {"gpu_name": "name", "gpu_uuid": "uuid", "gpu_bus_id": "pci.bus_id"}

# Fields the gpu_exporter role's program asks (roles/gpu_exporter) that no GPU
# scripts: fixed, plausible idle values (an A100's clocks; the table's 60 W).
# setdefault: a field defined above, scripted per GPU, wins.
IDLE_FIELDS = {
    "utilization.memory": ("utilization.memory [%]", " %", "0"),
    "power.draw": ("power.draw [W]", " W", "60.00"),
    "clocks.sm": ("clocks.current.sm [MHz]", " MHz", "1410"),
    "clocks.mem": ("clocks.current.memory [MHz]", " MHz", "1593"),
    "ecc.errors.corrected.volatile.total": ("ecc.errors.corrected.volatile.total", "", "0"),
    "ecc.errors.uncorrected.volatile.total": ("ecc.errors.uncorrected.volatile.total", "", "0"),
}
for _name, (_header, _unit, _value) in IDLE_FIELDS.items():
    FIELDS.setdefault(_name, (_header, _unit, lambda g, v, value=_value: value))


def short_version(version: str) -> str:
    """NVML reports major.minor ('580.95.05' -> '580.95')."""
    return ".".join(version.split(".")[:2])


def table(gpus: list[Gpu], version: str) -> str:
    width = 89
    rule = "+" + "-" * 41 + "+" + "-" * 24 + "+" + "-" * 22 + "+"
    cuda = cuda_version(version)
    head = f" NVIDIA-SMI {version:<23}Driver Version: {version:<15}CUDA Version: {cuda:<8}"
    lines = [
        time.strftime("%a %b %d %H:%M:%S %Y") + "       ",
        "+" + "-" * width + "+",
        "|" + head.ljust(width) + "|",
        rule,
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",  # noqa: E501 - verbatim table row
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",  # noqa: E501 - verbatim table row
        "|                                         |                        |               MIG M. |",  # noqa: E501 - verbatim table row
        "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|",
    ]
    for gpu in gpus:
        name = gpu.name[:24]
        lines += [
            f"| {gpu.index:>3}  {name:<24}{'On':>9}  |   {gpu.pci_bus_id} Off |"
            f"{'0':>21} |",
            f"| N/A   {gpu.temperature:>2}C    P0{f'60W / {gpu.power_cap_w:>4}W':>24} |"
            f" {f'{gpu.memory_used_mib}MiB /  {gpu.memory_total_mib}MiB':>22} |"
            f" {f'{gpu.utilization}%':>7}      Default |",
            "|                                         |                        |             Disabled |",  # noqa: E501 - verbatim table row
            rule,
        ]
    lines += [
        "",
        "+" + "-" * width + "+",
        "| Processes:".ljust(width + 1) + "|",
        "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",  # noqa: E501 - verbatim table row
        "|        ID   ID                                                               Usage      |",  # noqa: E501 - verbatim table row
        "|" + "=" * width + "|",
        "|  No running processes found".ljust(width + 1) + "|",
        "+" + "-" * width + "+",
    ]
    return "\n".join(lines) + "\n"


def query(gpus: list[Gpu], version: str, fields: list[str], fmt: str) -> tuple[str, int]:
    options = [o.strip() for o in fmt.split(",")]
    if options[0] != "csv":
        return f'"{fmt}" is not a valid format.\n', 2
    names = [ALIASES.get(f.strip(), f.strip()) for f in fields if f.strip()]
    for name in names:
        if name not in FIELDS and not telemetry.is_field(name):
            return f'Field "{name}" is not a valid field to query.\n\n', 2
    units = "nounits" not in options
    out = []
    if "noheader" not in options:
        out.append(", ".join(_header(n) if units else _header(n).split(" [")[0]
                             for n in names))
    for gpu in gpus:
        row = []
        for name in names:
            header, unit, getter = FIELDS.get(name, (name, "", lambda g, v: ""))
            unit = telemetry.UNITS.get(name, "").replace(" [", " ").rstrip("]") or unit
            own = str(len(gpus)) if name == "count" else getter(gpu, version)
            value = telemetry.value(gpu, name, own) or ""
            # "[N/A]" carries no unit, with or without nounits
            row.append(value + (unit if units and not value.startswith("[") else ""))
        out.append(", ".join(row))
    return "\n".join(out) + "\n", 0


def _header(name: str) -> str:
    return FIELDS[name][0] if name in FIELDS else name + telemetry.UNITS.get(name, "")


def other_query(kind: str) -> Callable[[list[Gpu], str, list[str], str], tuple[str, int]]:
    """The answer to --query-compute-apps or --query-remapped-rows."""

    def answer(gpus: list[Gpu], version: str, fields: list[str], fmt: str) -> tuple[str, int]:
        options = [o.strip() for o in fmt.split(",")]
        if options[0] != "csv":
            return f'"{fmt}" is not a valid format.\n', 2
        names = [f.strip() for f in fields if f.strip()]
        units = "nounits" not in options
        if kind == "query-compute-apps":
            return telemetry.compute_apps(gpus, names, units, "noheader" not in options)
        text, code = telemetry.remapped_rows(gpus, names, units)
        if code == 0 and "noheader" not in options:
            text = ", ".join(names) + "\n" + text
        return text, code
    return answer


QUERIES = {"query-gpu": query, "query-compute-apps": other_query("query-compute-apps"),
           "query-remapped-rows": other_query("query-remapped-rows")}


def parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        key, eq, value = arg.partition("=")
        if key in ("-i", "--id", "--query-gpu", "--format", "--query-compute-apps",
                   "--query-remapped-rows"):
            if not eq:
                value = args.pop(0) if args else ""
            opts["id" if key == "-i" else key.lstrip("-")] = value
        elif arg in ("-L", "--list-gpus"):
            opts["list"] = "1"
        elif arg in ("--version", "-h", "--help"):
            opts[arg.lstrip("-")] = "1"
        else:
            opts["invalid"] = arg
    return opts


def main(argv: list[str]) -> int:
    opts = parse(argv)
    if "invalid" in opts:
        sys.stdout.write("\nInvalid combination of input arguments. Please run 'nvidia-smi -h' "
                         "for help.\n\n")
        return 2
    state, version = nvml_state()
    if state == "no-driver":
        sys.stdout.write(NO_DRIVER)
        return 9
    if state == "mismatch":
        lib = short_version(version) if version else "N/A"
        sys.stdout.write(f"Failed to initialize NVML: Driver/library version mismatch\n"
                         f"NVML library version: {lib}\n")
        return 18
    assert version is not None
    if "version" in opts:
        sys.stdout.write(f"NVIDIA-SMI version  : {version}\nNVML version        : "
                         f"{short_version(version)}\nDRIVER version      : {version}\n"
                         f"CUDA Version        : {cuda_version(version)}\n")
        return 0
    gpus = visible_gpus()
    if "id" in opts:
        picked = select_gpus(gpus, opts["id"])
        if picked is None:
            sys.stdout.write("No devices were found\n")
            return 6
        gpus = picked
    if not gpus:
        sys.stdout.write("No devices were found\n")
        return 6
    if "list" in opts:
        for gpu in gpus:
            sys.stdout.write(f"GPU {gpu.index}: {gpu.name} (UUID: {gpu.uuid})\n")
        return 0
    for kind in ("query-gpu", "query-compute-apps", "query-remapped-rows"):
        if kind in opts:
            if "format" not in opts:
                sys.stdout.write(f"--format=csv must be specified with --{kind}.\n")
                return 2
            text, code = QUERIES[kind](gpus, version, opts[kind].split(","), opts["format"])
            sys.stdout.write(text)
            return code
    sys.stdout.write(table(gpus, version))
    return 0


if __name__ == "__main__":  # pragma: no cover - run through bin/nvidia-smi
    sys.exit(main(sys.argv[1:]))
