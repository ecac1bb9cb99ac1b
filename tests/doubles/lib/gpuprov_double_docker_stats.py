# TEST DOUBLE for gpuprov's test fleet: `docker stats`. Never install on real hosts.
"""`docker stats [--no-stream] [-a] [--no-trunc] [--format F] [CONTAINER...]`.

One sample of each running container (every one with -a, a stopped one all
zeros as docker shows it), printed once: the double never streams, so a
call without --no-stream answers like one with it. The numbers are a quiet
container's unless a test scripts them, per container name, in

    /var/lib/gpuprov-test-double/docker/stats.json
    {"gpuprov-jupyter": {"CPUPerc": "250.00%", "MemUsage": "30GiB / 64GiB",
                         "MemPerc": "46.88%", "PIDs": "412"}}

MemUsage's limit is the container's --memory when it has one (HostConfig.Memory),
else the host's memory, as docker reports it.
"""

from __future__ import annotations

import sys
from typing import Any

from gpuprov_double import STATE_DIR, read_json, read_text
from gpuprov_double_docker_images import format_option, print_objects
from gpuprov_double_docker_run import find_container, load_containers, view

STATS_FILE = f"{STATE_DIR}/docker/stats.json"
TABLE = ("CONTAINER ID   NAME              CPU %     MEM USAGE / LIMIT     MEM %     "
         "NET I/O       BLOCK I/O     PIDS")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def _host_memory() -> int:
    for line in (read_text("/proc/meminfo", "") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 64 * 1024 ** 3


def row(container: dict[str, Any], no_trunc: bool) -> dict[str, str]:
    shown = view(container)
    name = shown["Name"].lstrip("/")
    running = shown["State"]["Running"]
    limit = int((shown.get("HostConfig") or {}).get("Memory") or 0) or _host_memory()
    used = 48 * 1024 ** 2 if running else 0
    out = {"ID": shown["Id"] if no_trunc else shown["Id"][:12], "Container": "",
           "Name": name, "CPUPerc": "0.15%" if running else "0.00%",
           "MemUsage": f"{_size(used)} / {_size(limit if running else 0)}",
           "MemPerc": f"{100 * used / limit:.2f}%" if running else "0.00%",
           "NetIO": "1.2kB / 0B" if running else "0B / 0B", "BlockIO": "0B / 0B",
           "PIDs": "12" if running else "0"}
    scripted = (read_json(STATS_FILE, {}) or {}).get(name) or {}
    out.update({str(k): str(v) for k, v in scripted.items()})
    return out


def cmd_stats(args: list[str]) -> int:
    fmt, rest = format_option(args)
    show_all = "-a" in rest or "--all" in rest
    no_trunc = "--no-trunc" in rest
    names = [a for a in rest if not a.startswith("-")]
    containers = load_containers()
    rows = []
    if names:
        for ref in names:
            found = find_container(containers, ref)
            if found is None:
                sys.stderr.write(f"Error response from daemon: No such container: {ref}\n")
                return 1
            rows.append(dict(row(found, no_trunc), Container=ref))
    else:
        for container in containers.values():
            if show_all or view(container)["State"]["Running"]:
                r = row(container, no_trunc)
                rows.append(dict(r, Container=r["ID"]))
    if fmt and fmt.startswith("table"):
        fmt = fmt[len("table"):].strip() or None
        sys.stdout.write(TABLE + "\n")
        if fmt is None:
            fmt = "{{.ID}}   {{.Name}}   {{.CPUPerc}}   {{.MemUsage}}   {{.MemPerc}}   " \
                  "{{.NetIO}}   {{.BlockIO}}   {{.PIDs}}"
    elif fmt is None:
        sys.stdout.write(TABLE + "\n")
        fmt = "{{.ID}}   {{.Name}}   {{.CPUPerc}}   {{.MemUsage}}   {{.MemPerc}}   " \
              "{{.NetIO}}   {{.BlockIO}}   {{.PIDs}}"
    return print_objects(rows, fmt)
