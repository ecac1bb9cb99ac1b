"""Live per-host progress while a run goes on.

Called from the executor's worker threads. On a terminal: a rich Live table,
one row per host, in fixed columns (host and state whole, the task column
cut to one line), left with nothing above it but what -v asks for: an error
is one line in its row, and in full, once, in the recap that replaces the
table (transient). Elsewhere (CI logs, cron, pipes): one plain line per host
event from the first second (started, each failure, unreachable, done with
its counts), each starting with `HOST |`, so a log of a 100-host run stays
greppable. -vv adds each command run (as displayed: secrets masked) with the
host's round trip count, -vvv the facts script sent and what came back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult, TaskResult
from gpuprov.output.report import failed_count, indent, own_message, plural, task_label

WAITING, RUNNING, DONE = "waiting", "running", "done"
_STATE_ORDER = (RUNNING, WAITING, DONE, FAILED, UNREACHABLE)
_STATE_STYLE = {WAITING: "dim", RUNNING: "cyan", DONE: "green", FAILED: "bold red",
                UNREACHABLE: "bold red"}
_STATUS_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "bold red", SKIPPED: "cyan",
                 UNREACHABLE: "bold red"}
#: the counting columns, each as wide as its header (or its widest value);
#: dropped from the right when a narrow terminal leaves the task column no room
_NUMBERS = ("ok", "changed", "failed", "elapsed")
#: the task column's least width before a counting column goes
_TASK_MIN = 16
#: the space rich puts between two columns (padding 1 on each side)
_GAP = 2


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
            self._emit(Text(f"PLAY | {name} ({plural(len(hosts), 'host')})", style="bold"))

    def host_started(self, host: str) -> None:
        self._update(host, state=RUNNING, task="", started=time.monotonic(), seconds=None)
        if self.live:
            self._start_live()
        else:
            # A log shows life at once: a host that hangs connecting is seen to.
            self._emit(_event(host, None, f"started {self._play}".rstrip()))

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
            error = result.unreachable or result.error or ""
            self._rows[host] = replace(
                row, state=state, seconds=elapsed,
                failed=row.failed + (1 if result.error and not result.unreachable else 0),
                task=own_message(host, error).split("\n", 1)[0] or row.task)
            self._publish()
        lines: list[Text] = []
        if not self.live:
            # On a terminal the row shows the error's first line, the recap all of it.
            if result.unreachable:
                lines.append(_event(host, UNREACHABLE, own_message(host, result.unreachable)))
            elif result.error:
                lines.append(_event(host, FAILED, own_message(host, result.error)))
        if not result.unreachable and (not self.live or self.verbose >= 2):
            lines.append(_done_line(result, elapsed, trips=self.verbose >= 2))
        for line in lines:
            self._emit(line)

    def command_ran(self, host: str, command: str, exit_code: int | None, stdout: str,
                    stderr: str, round_trip: int) -> None:
        """-vv: a command a host ran (as displayed: secrets masked), with the
        host's round trips so far; -vvv: what it printed too. `exit_code` None:
        a command held open (the run lock), still running."""
        if self.verbose < 2:
            return
        end = "held" if exit_code is None else f"exit {exit_code}"
        text = _event(host, f"#{round_trip}", f"{command} ({end})")
        if self.verbose >= 3:
            for name, out in (("stdout", stdout), ("stderr", stderr)):
                if out.strip():
                    text.append(f"\n    {name}:\n" + indent(out, "      "))
        self._emit(text)

    def facts_sent(self, host: str, script: str, output: str | None) -> None:
        """-vvv: the facts script a host was sent, and its raw output where no
        command_ran showed it (read with the run lock)."""
        if self.verbose < 3:
            return
        text = _event(host, "facts", "script sent:")
        text.append("\n" + indent(script, "      "))
        if output is not None:
            text.append("\n    output received:\n" + indent(output, "      "))
        self._emit(text)

    def message(self, host: str, text: str) -> None:
        """Something a person waits for, e.g. 'rebooting, waiting for it to come back'."""
        self._update(host, task=text)
        if not self.live:
            self._emit(_event(host, None, text))

    def asking(self, ask: Callable[[str], bool] | None) -> Callable[[str], bool] | None:
        """`ask` (a question to a person, e.g. about an unknown host key) with
        the live table out of its way: a prompt inside a frame that redraws
        itself four times a second is overwritten, and the frame broken."""
        if ask is None or not self.live:
            return ask

        def asked(question: str) -> bool:
            # The live lock: no worker starts the table again meanwhile.
            with self._live_lock:
                live, self._live_display = self._live_display, None
                if live is not None:
                    live.stop()
                try:
                    return ask(question)
                finally:
                    # A new Live: the old one would move up over its last frame's
                    # height first, over the question and its answer.
                    if live is not None and not self._closed:
                        self._live_display = self._new_live()
        return asked

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
        cells = [_cells(r, now) for r in shown]
        widths = column_widths(self.console.size.width, [r.host for r in rows], cells)
        # Every width is fixed and they add up to the terminal's: a line that
        # wrapped would leave part of an old frame on the screen.
        table = Table(box=None, pad_edge=False, padding=(0, 1), expand="task" in widths,
                      title=_cut(self._play, self.console.size.width) or None,
                      title_justify="left", title_style="bold",
                      caption=_cut(caption, self.console.size.width),
                      caption_justify="left")
        for name, width in widths.items():
            if name == "task":
                table.add_column(name, ratio=1, no_wrap=True, overflow="ellipsis")
            else:
                table.add_column(name, width=width, no_wrap=True, overflow="ellipsis",
                                 justify="left" if name in ("host", "state") else "right")
        for row, values in zip(shown, cells, strict=True):
            styled = {
                "host": Text(row.host, style="bold"),
                "state": Text(row.state, style=_STATE_STYLE.get(row.state, "")),
                "changed": Text(values["changed"], style="yellow" if row.changed else ""),
                "failed": Text(values["failed"], style="bold red" if row.failed else ""),
            }
            table.add_row(*(styled[name] if name in styled else Text(values[name])
                            for name in widths))
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
            self._live_display = self._new_live()

    def _new_live(self) -> Live:
        # transient: the recap printed after close() says it all, durably.
        live = Live(console=self.console, get_renderable=self.table, refresh_per_second=4,
                    transient=True)
        live.start()
        return live

    def _task_text(self, host: str, task: TaskResult) -> Text | None:
        label = task_label(task)
        if task.status == FAILED:
            if self.live:
                return None  # its row says it; the recap gives the error in full, once
            text = _event(host, FAILED, label)
            if task.error:
                text.append("\n" + indent(own_message(host, task.error)))
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


def column_widths(width: int, hosts: list[str], cells: list[dict[str, str]]) -> dict[str, int]:
    """The live table's columns and their widths for a terminal `width` wide:
    host as wide as the longest name of the run (so rows do not shift as hosts
    start), state as wide as "unreachable", each count as its header; the task
    column ("task": 0, it takes the rest) is the one cut. A narrow terminal
    loses counting columns (right first), then the task column; never host or
    state."""
    fixed = {"host": max([len("host"), *map(len, hosts)]),
             "state": max(len(s) for s in (*_STATE_ORDER, "state"))}
    numbers = {name: max([len(name), *(len(c[name]) for c in cells)]) for name in _NUMBERS}
    while True:
        used = sum(fixed.values()) + sum(numbers.values()) + _GAP * (len(fixed) + len(numbers))
        if width - used >= _TASK_MIN or not numbers:
            break
        numbers.popitem()
    task = {"task": 0} if width - used >= _TASK_MIN else {}
    return {**fixed, **task, **numbers}


def _cells(row: _Row, now: float) -> dict[str, str]:
    if row.seconds is not None:
        elapsed = f"{row.seconds:.1f}s"
    elif row.started is not None:
        elapsed = f"{now - row.started:.1f}s"
    else:
        elapsed = ""
    return {"task": row.task.split("\n", 1)[0], "ok": str(row.ok), "changed": str(row.changed),
            "failed": str(row.failed), "elapsed": elapsed}


def _cut(text: str, width: int) -> str:
    """One line at most `width` wide: a title or caption that wrapped would
    make the frame taller than rich thinks."""
    text = text.split("\n", 1)[0]
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


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


def _done_line(result: HostResult, seconds: float, trips: bool = False) -> Text:
    parts = [f"{result.count(OK)} ok", f"{result.changed} changed"]
    if failed_count(result):
        parts.append(f"{failed_count(result)} failed")
    if result.count(SKIPPED):
        parts.append(f"{result.count(SKIPPED)} skipped")
    if result.reboot_pending:
        parts.append("reboot pending")
    if trips:
        parts.append(plural(result.round_trips, "round trip"))
    return Text.assemble((result.host, "bold"), " | ",
                         ("done", "bold red" if failed_count(result) else "green"),
                         f": {', '.join(parts)} ({seconds:.1f}s)")
