"""What a run did, for people and for machines: recap table, diffs, JSON report.

The report layer only formats: it reads RunResult / HostResult / TaskResult
and never runs anything. Live progress is in `progress.py`, the drift-check
formats in `drift.py`. Secrets stay masked because everything here goes
through `Command.display()` / `Diff.unified()`, a Step's stdin (where
passwords travel) is never read, and every host's known secret values are
masked once more in what is printed or written (RunResult.secret_values()).
Files are written 0600 unless asked (`--report-mode`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

import gpuprov
from gpuprov.command import mask_text
from gpuprov.engine.results import (
    CHANGED,
    FAILED,
    OK,
    SKIPPED,
    HostResult,
    RunResult,
    TaskResult,
    mask_json,
)
from gpuprov.output.summary import Outcome, plural, render_summary


def task_label(task: TaskResult) -> str:
    """'role: task', the name a task has in every output."""
    return f"{task.role}: {task.task}" if task.role else task.task


def indent(text: str, prefix: str = "    ") -> str:
    """Indent every line, so a multi-line error stays under the line it belongs to."""
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def failed_count(host: HostResult) -> int:
    # Same rule as HostResult.to_json: an error that stopped the host outside
    # a task (facts script, handler bookkeeping) counts as one failure.
    return host.count(FAILED) + (1 if host.error and not host.unreachable else 0)


def host_errors(host: HostResult) -> list[str]:
    """Every error text of a host: failed tasks first, then the host-level error."""
    errors = [t.error or f"task '{task_label(t)}' failed" for t in host.tasks
              if t.status == FAILED]
    if host.error and not host.unreachable:
        errors.append(host.error)
    return errors


# -- recap ----------------------------------------------------------------------

def own_message(host: str, text: str) -> str:
    """An error as said under its host's name: without the host's name in
    front (errors carry it for logs), and "unreachable (refused): ..." as
    "refused: ..." (the line it goes under says unreachable already)."""
    text = text.removeprefix(f"{host}: ")
    return _UNREACHABLE.sub(r"\1: ", text, count=1)


_UNREACHABLE = re.compile(r"^unreachable \(([^)]*)\): ")


def render_recap(run: RunResult, console: Console, verbose: int = 0,
                 outcome: Outcome | None = None) -> None:
    """The recap at the end of every run, then what a person must act on.

    One plain line per host, as Ansible's PLAY RECAP: a host name is never cut
    or wrapped and a count never loses its name, whatever the terminal's width
    or a pipe's; only the colours differ on a terminal."""
    hosts = list(run.hosts.values())
    console.print(Text(f"gpuprov {run.command} recap" + (
        " (check mode)" if run.check and run.command != "drift-check" else ""),
        style="bold"), soft_wrap=True)
    name_width = max((len(h.host) for h in hosts), default=0)
    rows = [_recap_counts(h) for h in hosts]
    widths = {key: max(len(str(row[key][0])) for row in rows) for key in rows[0]} if rows else {}
    counts = [_counts_text(h, row, widths, verbose) for h, row in zip(hosts, rows, strict=True)]
    # A terminal would wrap a line too long at any character: then each host's
    # counts go under its name instead (a pipe has no width: one line each).
    apart = console.is_terminal and any(name_width + 2 + len(c) > console.width
                                        for c in counts)
    for h, text in zip(hosts, counts, strict=True):
        name = Text(h.host if apart else h.host.ljust(name_width), style=_host_style(h))
        line = Text.assemble(name, "\n    " if apart else "  ", text)
        console.print(line, soft_wrap=True, highlight=False)
    if verbose >= 1:
        for h in hosts:
            console.print(Text(profile_text(h)), soft_wrap=True, highlight=False, markup=False)

    # Each error in full, once, under its host's name (said once too).
    for h in hosts:
        if h.unreachable:
            console.print(Text.assemble(("unreachable ", "bold red"), (h.host, "bold")))
            console.print(Text(indent(own_message(h.host, h.unreachable))), soft_wrap=True,
                          highlight=False)
    for h in hosts:
        if h.unreachable:
            continue
        for err in host_errors(h):
            console.print(Text.assemble(("failed ", "bold red"), (h.host, "bold")))
            console.print(Text(indent(own_message(h.host, err))), soft_wrap=True,
                          highlight=False)
    pending = [h.host for h in hosts if h.reboot_pending]
    if pending:
        # Design: a reboot that is needed but not allowed must be said per host.
        console.print(Text.assemble(
            ("reboot needed, not done: ", "bold magenta"), ", ".join(pending),
            " (run again with --reboot, or reboot them yourself)"), soft_wrap=True)
    for h in hosts:
        for warning in h.warnings:
            console.print(Text.assemble(("warning ", "yellow"), (h.host, "bold"), f": {warning}"),
                          soft_wrap=True)
        for note in h.task_notes():
            console.print(Text.assemble(("note ", "cyan"), (h.host, "bold"), f": {note}"),
                          soft_wrap=True)
    if run.aborted:
        console.print(Text.assemble(("run aborted: ", "bold red"), run.aborted), soft_wrap=True)
    render_summary(run, console, outcome)   # roles not reached, the summary line, exit code


def _counts_text(h: HostResult, row: dict[str, tuple[int, str]], widths: dict[str, int],
                 verbose: int) -> Text:
    """`ok=12 changed=0 ...  3.1s` of a recap line, each count padded to its column."""
    text = Text()
    for i, (key, (n, style)) in enumerate(row.items()):
        text.append(" " if i else "")
        text.append(f"{key}=")
        # zero stays unstyled, so the eye goes to the counts that matter
        text.append(str(n), style=style if n else "")
        text.append(" " * (widths[key] - len(str(n))))
    text.append(f"  {h.seconds:.1f}s")
    if verbose >= 1:
        text.append(f"  {plural(h.connections, 'connection')}, "
                    f"{plural(h.round_trips, 'round trip')}")
    if h.reboot_pending:
        text.append("  reboot pending", style="bold magenta")
    return text


def _recap_counts(h: HostResult) -> dict[str, tuple[int, str]]:
    return {"ok": (h.count(OK), "green"), "changed": (h.changed, "yellow"),
            "failed": (failed_count(h), "bold red"),
            "unreachable": (1 if h.unreachable else 0, "bold red"),
            "skipped": (h.count(SKIPPED), "cyan")}


def profile_text(h: HostResult) -> str:
    """-v: where a host's time went, one line per phase; every facts, lock and
    step line is one round trip, said with what caused it."""
    lines = [f"profile {h.host}: {h.connections} connection(s), {h.round_trips} round trip(s)"]
    for p in h.profile:
        line = f"  {p.get('play', '')[:20]:<20} {p['phase']:<7} {p['seconds']:8.3f}s"
        what = p.get("why", "")
        if p["phase"] == "facts":
            what = f"{what}: {p.get('count', 0)} facts"
            if p.get("slowest"):
                what += "; slowest: " + ", ".join(f"{k} {s:.2f}s" for k, s in p["slowest"])
        lines.append(f"{line}  {what}".rstrip())
    return "\n".join(lines)


def _host_style(h: HostResult) -> str:
    if h.unreachable or h.failed:
        return "bold red"
    return "yellow" if h.changed else "green"


# -- diffs ----------------------------------------------------------------------

def render_diffs(run: RunResult, console: Console | None = None) -> str:
    """Every diff of every changed task, per host, as plain text.

    For `--diff` when the live display could not show them inline. Printed on
    `console` too when one is given (without markup: diffs contain brackets).
    """
    out: list[str] = []
    for h in run.hosts.values():
        for task in h.tasks:
            if task.status != CHANGED:
                continue
            diffs = [c.diff.unified() for c in task.changes if c.diff is not None]
            if not diffs:
                continue
            out.append(f"=== {h.host}: {task_label(task)}\n")
            out.extend(d if d.endswith("\n") else d + "\n" for d in diffs)
    text = mask_text("".join(out), run.secret_values())
    if console is not None and text:
        console.print(Text(text.rstrip("\n")), soft_wrap=True)
    return text


# -- files ----------------------------------------------------------------------

#: reports and drift files hold diffs of root-only files: the owner alone reads
#: them unless asked (--report-mode 0640 for a node_exporter group)
REPORT_MODE = 0o600


def parse_report_mode(text: str) -> int:
    """An octal mode for a report file: at most 0644 (never writable or
    executable by others: monitors read it, nobody else writes it)."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal file mode (e.g. 0600, 0640)") from None
    if mode & ~0o644 or (mode & 0o600) != 0o600:
        raise ValueError(f"{text} would let others write or run the report, or its owner "
                         "not read and replace it; use 0600, 0640 or 0644")
    return mode


def write_text_atomic(path: str | Path, text: str, mode: int = REPORT_MODE) -> None:
    """Replace `path` with `text` so that a reader never sees a half-written file.

    Temp file in the same directory (os.replace is atomic only within one
    file system), made 0600 by mkstemp and given `mode` before it holds a
    byte, fsync before the rename, temp file removed on any error, so the
    previous file stays as it was. An existing file's wider mode is not kept:
    the report's content decides who may read it.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        # BaseException too: Ctrl-C in the middle must not leave a temp file.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable across a crash; not possible everywhere.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def report_data(run: RunResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report as a dict: run.to_json(), the gpuprov version, extra keys."""
    data = run.to_json()
    data["gpuprov"] = gpuprov.__version__
    if extra:
        data.update(extra)
    return mask_json(data, run.secret_values())


def write_json_report(path: str | Path, run: RunResult,
                      extra: dict[str, Any] | None = None, mode: int = REPORT_MODE) -> None:
    """`--report FILE.json`: the whole run, written atomically (0600 unless asked)."""
    # Serialize before touching the file system: a value json cannot encode
    # must fail without leaving anything behind.
    text = json.dumps(report_data(run, extra), indent=2) + "\n"
    write_text_atomic(path, text, mode)

