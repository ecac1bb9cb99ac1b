"""Live per-host progress while a run goes on.

Called from the executor's worker threads. On a terminal: a rich Live table,
one row per host, and the events a person must not miss (failures,
unreachable hosts) printed above it. Elsewhere (CI logs, cron, pipes): one
plain line per event that matters, each starting with `HOST |`, so a log of
a 100-host run stays greppable; nothing else is printed.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult, TaskResult
from gpuprov.output.report import failed_count, indent, task_label

WAITING, RUNNING, DONE = "waiting", "running", "done"
_STATE_ORDER = (RUNNING, WAITING, DONE, FAILED, UNREACHABLE)
_STATE_STYLE = {WAITING: "dim", RUNNING: "cyan", DONE: "green", FAILED: "bold red",
                UNREACHABLE: "bold red"}
_STATUS_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "bold red", SKIPPED: "cyan",
                 UNREACHABLE: "bold red"}


@dataclass(frozen=True)
class _Row:
    """One host's line in the live table; immutable so the refresh thread can read it unlocked."""

    host: str
    state: str = WAITING
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    started: float | None = None   # time.monotonic() at host_started
    seconds: float | None = None   # final elapsed, once the host finished


class Progress:
    """Per-host progress of a run; every method is safe to call from any thread."""

    def __init__(self, console: Console, verbose: int = 0, diff: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.diff = diff
        #: True when a Live table is used: diffs are then NOT printed inline
        #: (they would scroll the table away); the CLI prints render_diffs() at the end.
        self.live = console.is_terminal
        self._lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._snapshot: tuple[_Row, ...] = ()
        self._play = ""
        self._live_display: Live | None = None
        self._closed = False

    # -- context manager ------------------------------------------------------
    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- events ---------------------------------------------------------------
    def play_started(self, name: str, hosts: list[str]) -> None:
        with self._lock:
            self._play = name
            for host in hosts:
                # Counts add up over plays, like the HostResult they mirror.
                old = self._rows.get(host, _Row(host))
                self._rows[host] = replace(old, state=WAITING, task="", started=None,
                                           seconds=None)
            self._publish()
        if self.live:
            self._start_live()
        elif self.verbose >= 1:
            self._emit(Text(f"PLAY | {name} ({len(hosts)} hosts)", style="bold"))

    def host_started(self, host: str) -> None:
        self._update(host, state=RUNNING, task="", started=time.monotonic(), seconds=None)
        if self.live:
            self._start_live()

    def task_finished(self, host: str, task: TaskResult) -> None:
        with self._lock:
            row = self._rows.get(host) or _Row(host, state=RUNNING)
            self._rows[host] = replace(
                row,
                task=task_label(task),
                ok=row.ok + (task.status == OK),
                changed=row.changed + (task.status == CHANGED),
                failed=row.failed + (task.status == FAILED),
                state=FAILED if task.status == FAILED else row.state,
            )
            self._publish()
        text = self._task_text(host, task)
        if text is not None:
            self._emit(text)

    def host_finished(self, result: HostResult) -> None:
        host = result.host
        if result.unreachable:
            state = UNREACHABLE
        elif result.failed:
            state = FAILED
        else:
            state = DONE
        with self._lock:
            row = self._rows.get(host) or _Row(host)
            elapsed = result.seconds
            if not elapsed and row.started is not None:
                elapsed = time.monotonic() - row.started
            # Task counts came with task_finished (and add up over plays, while
            # `result` may cover one play); only a failure outside any task is new.
            self._rows[host] = replace(
                row, state=state, seconds=elapsed,
                failed=row.failed + (1 if result.error and not result.unreachable else 0),
                task=(result.unreachable or "").split("\n", 1)[0] or row.task)
            self._publish()
        lines: list[Text] = []
        if result.unreachable:
            lines.append(_event(host, UNREACHABLE, result.unreachable))
        else:
            if result.error:
                lines.append(_event(host, FAILED, result.error))
            if not self.live:
                lines.append(_done_line(result, elapsed))
        for line in lines:
            self._emit(line)

    def message(self, host: str, text: str) -> None:
        """Something a person waits for, e.g. 'rebooting, waiting for it to come back'."""
        self._update(host, task=text)
        if not self.live:
            self._emit(_event(host, None, text))

    def close(self) -> None:
        with self._live_lock:
            self._closed = True
            live, self._live_display = self._live_display, None
        if live is not None:
            live.stop()

    # -- the live table ---------------------------------------------------------
    def table(self) -> Table:
        """The live table as it is now (called by Live's refresh thread)."""
        # No lock here: the refresh thread holds Live's lock, and a worker that
        # holds ours may be waiting for Live's to print; the snapshot is immutable.
        rows = self._snapshot
        now = time.monotonic()
        counts = Counter(r.state for r in rows)
        limit = max(self.console.size.height - 6, 3)
        shown = rows
        if len(rows) > limit:
            # More hosts than lines: show the ones moving or in trouble.
            shown = tuple(r for r in rows if r.state in (RUNNING, FAILED, UNREACHABLE))[:limit]
        caption = ", ".join(f"{counts[s]} {s}" for s in _STATE_ORDER if counts[s])
        if len(shown) < len(rows):
            caption += f" ({len(rows) - len(shown)} not shown)"
        table = Table(box=box.SIMPLE_HEAD, title=self._play or None, title_justify="left",
                      caption=caption, caption_justify="left")
        table.add_column("host", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("task", ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column("ok", justify="right")
        table.add_column("changed", justify="right")
        table.add_column("failed", justify="right")
        table.add_column("elapsed", justify="right")
        for r in shown:
            if r.seconds is not None:
                elapsed = f"{r.seconds:.1f}s"
            elif r.started is not None:
                elapsed = f"{now - r.started:.1f}s"
            else:
                elapsed = ""
            table.add_row(
                Text(r.host, style="bold"), Text(r.state, style=_STATE_STYLE.get(r.state, "")),
                Text(r.task), str(r.ok), Text(str(r.changed), style="yellow" if r.changed else ""),
                Text(str(r.failed), style="bold red" if r.failed else ""), elapsed)
        return table

    # -- internals ---------------------------------------------------------------
    def _update(self, host: str, **fields: Any) -> None:
        with self._lock:
            self._rows[host] = replace(self._rows.get(host) or _Row(host), **fields)
            self._publish()

    def _publish(self) -> None:
        # Caller holds self._lock.
        self._snapshot = tuple(self._rows.values())

    def _start_live(self) -> None:
        with self._live_lock:
            if self._live_display is not None or self._closed:
                return
            # transient: the recap printed after close() says it all, durably.
            self._live_display = Live(console=self.console, get_renderable=self.table,
                                      refresh_per_second=4, transient=True)
            self._live_display.start()

    def _task_text(self, host: str, task: TaskResult) -> Text | None:
        label = task_label(task)
        if task.status == FAILED:
            text = _event(host, FAILED, label)
            if task.error:
                text.append("\n" + indent(task.error))
            return text
        # Live mode keeps the screen for the table: changed tasks only with -v.
        shown_from = {CHANGED: 1 if self.live else 0, OK: 2 if self.live else 1,
                      SKIPPED: 2 if self.live else 1}
        if self.verbose < shown_from.get(task.status, 99):
            return None
        if task.status != CHANGED or not task.changes:
            return _event(host, task.status, label)
        text = Text()
        for i, change in enumerate(task.changes):
            if i:
                text.append("\n")
            summary = f"{label} — {change.summary}"
            if change.unknown:
                summary += f" (unknown: {change.unknown})"
            text.append_text(_event(host, CHANGED, summary))
            if self.diff and not self.live and change.diff is not None:
                # Diff.unified() masks secret content; Step stdin is never shown.
                text.append("\n" + indent(change.diff.unified()))
        return text

    def _emit(self, text: Text) -> None:
        # Never called with self._lock held (see table()); one print per event
        # keeps an event's lines together when threads print at once.
        self.console.print(text, soft_wrap=True, highlight=False)


def _event(host: str, status: str | None, detail: str) -> Text:
    """`HOST | status | detail`, a multi-line detail indented under its first line."""
    first, _, rest = detail.rstrip("\n").partition("\n")
    text = Text.assemble((host, "bold"), " | ")
    if status is not None:
        text.append(status, style=_STATUS_STYLE.get(status, ""))
        text.append(" | ")
    text.append(first)
    if rest:
        text.append("\n" + indent(rest))
    return text


def _done_line(result: HostResult, seconds: float) -> Text:
    parts = [f"{result.count(OK)} ok", f"{result.changed} changed"]
    if failed_count(result):
        parts.append(f"{failed_count(result)} failed")
    if result.count(SKIPPED):
        parts.append(f"{result.count(SKIPPED)} skipped")
    if result.reboot_pending:
        parts.append("reboot pending")
    return Text.assemble((result.host, "bold"), " | ",
                         ("done", "bold red" if failed_count(result) else "green"),
                         f": {', '.join(parts)} ({seconds:.1f}s)")
