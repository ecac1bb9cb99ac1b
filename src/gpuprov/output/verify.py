"""`gpuprov verify` output: one row per host (GPUs, driver, CUDA, image,
pass/fail) as a table for people or JSON for scripts."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from gpuprov.engine.results import HostResult, RunResult
from gpuprov.output.report import host_errors

PASS, FAIL, UNREACHABLE = "pass", "fail", "unreachable"


def host_row(host: HostResult) -> dict[str, Any]:
    """What verify found on one host; hosts it could not check are 'fail'
    or 'unreachable' with the reason."""
    # what the verify playbook's op reported (Op.report): the output knows no role
    data = next((t.data for t in host.tasks if t.data), None)
    row: dict[str, Any] = {"host": host.host, **(data or {})}
    if host.unreachable:
        row.update(status=UNREACHABLE, problems=[host.unreachable])
    elif data is None or host.failed and data.get("status") == PASS:
        row.update(status=FAIL, problems=host_errors(host) or ["verify did not run"])
    elif data.get("status") != PASS:
        row["status"] = FAIL
    return row


def verify_rows(run: RunResult) -> list[dict[str, Any]]:
    return [host_row(h) for h in run.hosts.values()]


def verify_json(rows: list[dict[str, Any]]) -> str:
    summary = {s: sum(1 for r in rows if r["status"] == s) for s in (PASS, FAIL, UNREACHABLE)}
    return json.dumps({"hosts": rows, "summary": summary}, indent=2) + "\n"


def verify_table(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("host", "result", "GPUs", "driver", "CUDA", "torch", "image digest"):
        table.add_column(column, overflow="fold")
    for row in rows:
        gpus = row.get("gpus") or []
        names = sorted(set(gpus))
        shown = ", ".join(f"{gpus.count(n)}x {n}" for n in names) or "-"
        digest = row.get("image_digest") or row.get("image_id") or "-"
        style = "green" if row["status"] == PASS else "red"
        table.add_row(row["host"], f"[{style}]{row['status']}[/]", shown,
                      row.get("driver_version") or "-", row.get("cuda_version") or "-",
                      (f"{row['torch']} (CUDA {row.get('torch_cuda')})" if row.get("torch")
                       else "-"),
                      digest[:19] + ("…" if len(digest) > 19 else ""))
    console.print(table)
    for row in rows:
        for problem in row.get("problems") or []:
            console.print(f"{row['host']}: {problem}", markup=False, highlight=False)
    passed = sum(1 for r in rows if r["status"] == PASS)
    console.print(f"{len(rows)} host{'s' if len(rows) != 1 else ''}: {passed} passed, "
                  f"{len(rows) - passed} not", markup=False, highlight=False)
