#!/usr/bin/env python3
"""gpuprov against pyinfra and ansible-core on the project's SSH test fleet.

    sudo .venv/bin/python benchmarks/run.py --hosts 16
    sudo .venv/bin/python benchmarks/run.py --quick --tools gpuprov,pyinfra
    sudo .venv/bin/python benchmarks/run.py --hosts 16 --tools gpuprov --unreachable 2

Brings up the fleet (tests/fleet), then per tool: every host reset to a fresh
disk, a converge, two runs that must change nothing (gpuprov: a status and two
drift-checks too), each measured. Prints one table and writes it as JSON, with a profile,
to benchmarks/results/. See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("gpuprov", "pyinfra", "ansible")


def _reexec_in_project_venv() -> None:
    """The fleet code and gpuprov live in the project's venv (scripts/test
    makes it): use it when started with another Python."""
    try:
        import yaml  # noqa: F401

        import gpuprov  # noqa: F401
    except ImportError:
        venv = REPO / os.environ.get("GPUPROV_VENV", ".venv")
        python = venv / "bin" / "python"
        # a venv's python is a symlink to the base one: compare the prefix
        if python.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(python), [str(python), *sys.argv])
        sys.exit("benchmarks/run.py: gpuprov is not importable; create the project venv "
                 "first (./scripts/test tests/unit -q) or run with its python")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=16, help="fleet size (default 16)")
    p.add_argument("--quick", action="store_true", help="8 hosts")
    p.add_argument("--tools", default=",".join(TOOLS),
                   help=f"comma-separated, in order (default {','.join(TOOLS)})")
    p.add_argument("--forks", type=int, default=None,
                   help="gpuprov --forks (default: gpuprov's own default); "
                        "pyinfra --parallel and ansible --forks are always the host count")
    p.add_argument("--unreachable", type=int, default=0, metavar="N",
                   help="gpuprov also runs a no-change apply and a drift-check with N more "
                        "hosts that do not answer, and reports what they add")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.hosts = 8
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown or not args.tools:
        p.error(f"--tools: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(TOOLS)}")
    if args.hosts < 1:
        p.error("--hosts must be at least 1")
    if args.unreachable < 0:
        p.error("--unreachable must be 0 or more")
    return args


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    # finally-blocks run on KeyboardInterrupt, not on SIGTERM: the fleet
    # must come down when the run is killed (timeout, CI) too.
    raise KeyboardInterrupt(f"signal {signum}")


def bench_tool(tool: Any, fleet: Any, hosts: list[Any]) -> list[Any]:
    t0 = time.monotonic()
    for host in hosts:
        fleet.reset(host)
    log(f"{tool.name}: {len(hosts)} hosts reset in {time.monotonic() - t0:.1f} s")
    tool.prepare()
    try:
        return _timed_runs(tool, hosts)
    finally:
        tool.finish()


def _timed_runs(tool: Any, hosts: list[Any]) -> list[Any]:
    from benchmarks.measure import measure
    from benchmarks.tools import converged_problems

    runs = []
    for label, argv in tool.runs():
        pids = {h.name: h.init_pid for h in hosts}
        sample = measure(argv, tool.work, tool.env(), pids)
        run = tool.judge(label, sample)
        runs.append(run)
        log(f"{tool.name} {label}: {sample.wall:.2f} s wall, exit {sample.returncode}, "
            f"changed {run.changed}{'' if run.ok else '  FAILED'}")
        if run.ok and label == "converge":
            problems = [p for h in hosts for p in converged_problems(h)]
            if problems:
                run.ok, run.note = False, "; ".join(problems)
                log(f"{tool.name}: converged hosts lack: {run.note}")
                break
        if not run.ok and label == "converge":
            tail = (sample.stdout + sample.stderr)[-3000:]
            log(f"{tool.name}: the converge failed; its last output:\n{tail}")
            break   # no-change runs after a failed converge measure nothing
    return runs


def gpuprov_default(option: str) -> Any:
    """What `gpuprov apply` uses without that option (read from its CLI, so a
    new default shows here without an edit)."""
    from gpuprov.cli.run import apply

    return next((p.default for p in apply.params if p.name == option), "?")


def forks_line(forks: int | None, hosts: int) -> str:
    """The forks gpuprov runs with, as its -v says it: `auto (16)` or `10`.
    gpuprov inherits this process's limits, so it resolves auto the same way."""
    from gpuprov.engine.forks import resolve_forks

    value = forks or gpuprov_default("forks")
    chosen = str(resolve_forks(value, hosts))
    return chosen if forks else f"{chosen} (default)"


def dead_addresses(fleet: Any, count: int) -> list[str]:
    """Addresses on the fleet's bridge subnet past its last host: nothing
    answers there (ARP gets no reply), so a connect waits, never is refused."""
    from tests.fleet.network import host_address

    first = max((h.index for h in fleet.hosts), default=-1) + 1
    return [host_address(first + i) for i in range(count)]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("benchmarks/run.py: the fleet needs root (namespaces, overlay mounts)")
    sys.path.insert(0, str(REPO))
    from benchmarks import peers, report
    from benchmarks.tools import Gpuprov
    from tests.fleet.fleet import Fleet

    classes = {"gpuprov": Gpuprov, "pyinfra": peers.Pyinfra, "ansible": peers.Ansible}
    notes: list[str] = []
    if {"pyinfra", "ansible"} & set(args.tools):
        peers.ensure_venv(log)
    if "ansible" in args.tools:
        peers.ensure_python_apt(log)

    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    fleet = Fleet(size=args.hosts)
    results: dict[str, list[Any]] = {}
    versions: dict[str, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="gpuprov-bench-"))
    try:
        t0 = time.monotonic()
        fleet.up()
        log(f"fleet of {args.hosts} hosts up in {time.monotonic() - t0:.1f} s")
        hosts = [h for h in fleet.hosts if h.variant == "default"]
        for name in args.tools:
            work = scratch / name
            work.mkdir()
            if name == "gpuprov":
                tool = Gpuprov(fleet, hosts, work, args.forks,
                               dead_addresses(fleet, args.unreachable))
            else:
                tool = classes[name](fleet, hosts, work, args.forks)
            versions[name] = tool.version()
            try:
                results[name] = bench_tool(tool, fleet, hosts)
            except Exception as exc:  # one tool that cannot run must not hide the others
                log(f"{name}: could not be benchmarked: {exc!r}")
                notes.append(f"{name}: not measured: {exc}")
                results[name] = []
                continue
            notes += getattr(tool, "notes", [])
            notes += [f"{name} {r.label}: {r.note}" for r in results[name] if r.note]
            if name == "gpuprov" and args.unreachable:
                notes += report.unreachable_effect(results[name], gpuprov_default("timeout"))
    finally:
        fleet.down()
        log("fleet down")
    date = time.strftime("%Y-%m-%d")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "hosts": args.hosts,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "cores": os.cpu_count(), "forks": forks_line(args.forks, args.hosts),
        "unreachable": args.unreachable,
        "connect_timeout_s": gpuprov_default("timeout"),
        "command": "benchmarks/run.py " + " ".join(argv), "versions": versions, "notes": notes,
    }
    text = report.summary(meta, results)
    print(text, end="")
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"{date}-{args.hosts}"
    report.write_json(stem.with_suffix(".json"), meta, results)
    report.write_profile(stem.with_suffix(".profile.txt"), results)
    log(f"written {stem}.json and {stem}.profile.txt")
    every = [r for runs in results.values() for r in runs]
    clean = all(r.no_change for r in every if r.label != "converge")
    measured = all(results.get(name) for name in args.tools)
    return 0 if measured and clean and all(r.ok for r in every) else 1


if __name__ == "__main__":
    _reexec_in_project_venv()
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as exc:   # the fleet is down already (finally in main)
        log(f"interrupted ({exc or 'Ctrl-C'}): no results written")
        sys.exit(130)
