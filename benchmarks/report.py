"""The benchmark's table, ratios, JSON and gpuprov profile, from one run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.tools import Run

COLUMNS = ("tool", "run", "wall s", "ctl CPU s", "machine CPU s", "CPU/host s", "conn/host",
           "trips/host", "peak RSS MiB", "result")


def spread(values: list[int]) -> str:
    """A per-host count: one number when every host agrees, else min-max."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def result_word(run: Run) -> str:
    if not run.ok:
        if run.sample.returncode == 0:
            return "NOT CONVERGED (see notes)"
        return f"FAILED (exit {run.sample.returncode})"
    if run.label == "converge":
        return "ok" if run.changed is None else f"ok, {run.changed} changed"
    if run.changed is None:
        return "ok, change unknown"
    return "no change" if run.changed == 0 else f"CHANGED {run.changed}"


def rows(results: dict[str, list[Run]]) -> list[list[str]]:
    out = []
    for tool, runs in results.items():
        for run in runs:
            s = run.sample
            hosts = max(len(s.connections), 1)
            out.append([tool, run.label, f"{s.wall:.2f}", f"{s.controller_cpu:.2f}",
                        f"{s.machine_cpu:.2f}", f"{s.machine_cpu / hosts:.3f}",
                        spread(list(s.connections.values())),
                        spread(list(run.round_trips.values())), f"{s.peak_rss_mib:.0f}",
                        result_word(run)])
    return out


def render_table(table: list[list[str]]) -> str:
    widths = [max(len(COLUMNS[i]), *(len(r[i]) for r in table)) for i in range(len(COLUMNS))]
    left = {0, 1, len(COLUMNS) - 1}

    def line(cells: list[str] | tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    text = [line(COLUMNS), line(["-" * w for w in widths])]
    text += [line(r) for r in table]
    return "\n".join(text)


def mean_wall(runs: list[Run], prefix: str) -> float | None:
    walls = [r.sample.wall for r in runs if r.label.startswith(prefix)]
    return statistics.mean(walls) if walls else None


def ratios(results: dict[str, list[Run]]) -> dict[str, float]:
    """Peer wall / gpuprov wall, for the converge and the no-change runs (the
    mean of the two), and a peer's no-change run against gpuprov's drift-check."""
    out: dict[str, float] = {}
    base = results.get("gpuprov")
    if not base:
        return out
    for peer in ("pyinfra", "ansible"):
        runs = results.get(peer)
        if not runs:
            continue
        for what, mine, theirs in (("converge", "converge", "converge"),
                                   ("no-change", "no-change", "no-change"),
                                   ("no-change vs drift-check", "drift-check", "no-change")):
            ours, other = mean_wall(base, mine), mean_wall(runs, theirs)
            if ours and other:
                out[f"{peer}/gpuprov wall, {what}"] = round(other / ours, 2)
    return out


def unreachable_effect(runs: list[Run], timeout: float) -> list[str]:
    """What the dead hosts of `--unreachable` added to gpuprov's no-change
    apply and drift-check: the run with them against the mean of the two
    without, next to the connect timeout they are each allowed."""
    out = []
    for what in ("no-change", "drift-check"):
        base = [r.sample.wall for r in runs if r.label.startswith(what) and r.ok]
        dead = [r for r in runs if r.label.startswith("+") and r.label.endswith(what)]
        if not base or not dead:
            continue
        without, run = statistics.mean(base), dead[0]
        added = run.sample.wall - without
        verdict = "less than" if added < timeout else "NOT less than"
        out.append(f"gpuprov {what}: {without:.2f} s without, {run.sample.wall:.2f} s with "
                   f"{run.label.split(':')[0].lstrip('+')} hosts: +{added:.2f} s, {verdict} "
                   f"the connect timeout ({timeout:g} s)"
                   + ("" if run.ok else f"; FAILED: {run.note}"))
    return out


def summary(meta: dict[str, Any], results: dict[str, list[Run]]) -> str:
    head = [f"gpuprov benchmark  {meta['date']}  {meta['hosts']} hosts  "
            f"machine: {meta['machine']}  forks: {meta['forks']}",
            "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    body = render_table(rows(results))
    tail = ["", "ratios (wall, this run):"]
    tail += [f"  {name}: {value:.2f}x" for name, value in ratios(results).items()] or ["  -"]
    notes = meta.get("notes") or []
    if notes:
        tail += ["", "notes:"] + [f"  {n}" for n in notes]
    return "\n".join(head) + body + "\n" + "\n".join(tail) + "\n"


def write_json(path: Path, meta: dict[str, Any], results: dict[str, list[Run]]) -> None:
    data = {**meta, "ratios": ratios(results),
            "tools": {tool: [r.to_json() for r in runs] for tool, runs in results.items()}}
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_profile(path: Path, results: dict[str, list[Run]]) -> None:
    """gpuprov's own account of each run (-v: per host time, connections,
    round trips) and, for every tool, connections per host and where a
    run failed: the first place to look when a figure is off."""
    parts = []
    for tool, runs in results.items():
        for run in runs:
            s = run.sample
            parts.append(f"===== {tool} {run.label}: wall {s.wall:.2f} s, exit {s.returncode}, "
                         f"peak RSS {s.peak_rss_mib:.0f} MiB, peak open fds {s.peak_fds}")
            parts.append("connections per host: " + json.dumps(s.connections, sort_keys=True))
            if run.round_trips:
                parts.append("round trips per host: " + json.dumps(run.round_trips,
                                                                   sort_keys=True))
            if run.note:
                parts.append(f"note: {run.note}")
            if run.profile:
                parts.append(run.profile)
            if tool == "gpuprov" or not run.ok:
                parts += ["--- stdout", s.stdout.rstrip(), "--- stderr", s.stderr.rstrip()]
            parts.append("")
    path.write_text("\n".join(parts) + "\n")
