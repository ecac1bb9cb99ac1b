"""One host's known facts for a whole run: every play reads the same cache.

A fact stays known until a change invalidates it (typed selectors), so a
later play asks the host only for what an earlier play changed, and the
first play can prefetch the facts of the plays after it in its own batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuprov.connectors.base import Connector
from gpuprov.engine.handlers import PendingHandlers, RebootRequired
from gpuprov.engine.results import phase
from gpuprov.errors import TaskFailed
from gpuprov.facts.base import Fact, FactError, FactView, gather_script, parse_batch, selects
from gpuprov.facts.system import SystemFacts
from gpuprov.ops.base import Change

#: how many of a batch's slowest probes the profile names
SLOWEST = 5


def first_facts() -> list[Fact[Any]]:
    """What every run reads first on a host, before any role asks."""
    return [*SystemFacts.facts(), PendingHandlers(), RebootRequired()]


@dataclass
class HostFacts:
    host: str
    connector: Connector
    #: -v: time each probe inside the facts script, to name the slowest
    timed: bool = False
    values: dict[Fact[Any], Any] = field(default_factory=dict)
    #: where each batch's profile entry goes (the current play's HostResult.profile)
    profile: list[dict[str, Any]] = field(default_factory=list)
    play: str = ""
    #: record what is asked (not what is prefetched): the next run's first batch
    learning: bool = True
    asked: dict[Fact[Any], None] = field(default_factory=dict)
    #: -vvv: told of each script sent, and of its output where no command's
    #: trace shows it (read with the run lock); engine/trace.py
    trace: Callable[[str, str | None], None] | None = None

    def gather(self, facts: Iterable[Fact[Any]], why: str = "") -> None:
        """Answer every given fact not known yet, in ONE round trip."""
        facts = list(facts)
        if self.learning:
            self.asked.update(dict.fromkeys(facts))
        wanted = list(dict.fromkeys(f for f in facts if f not in self.values))
        if wanted:
            self._batch(wanted, why, self._run_script, strict=True)

    def remember(self, facts: Iterable[Fact[Any]]) -> None:
        """Facts read from what is known without asking: part of the next
        run's plan all the same."""
        if self.learning:
            self.asked.update(dict.fromkeys(facts))

    def gather_with(self, facts: Iterable[Fact[Any]], why: str,
                    send: Callable[[str], str | None]) -> None:
        """Answer what it can of `facts` through `send` (e.g. with the run lock):
        a probe that fails here is left unknown and asked again, strictly, by
        whoever needs it, so a guess never fails a host. `send` returns None
        when it ran nothing."""
        wanted = list(dict.fromkeys(f for f in facts if f not in self.values))
        if wanted:
            self._batch(wanted, why, lambda script, sudo, marker: send(script), strict=False)

    def _run_script(self, script: str, sudo: bool, marker: str) -> str:
        res = self.connector.run("sh -s", sudo=sudo, stdin=script.encode())
        if res.exit_code != 0 and marker not in res.stdout:
            raise TaskFailed(self.host, "gather facts", "sh -s (facts script)",
                             res.exit_code, res.stderr)
        return res.stdout

    def _batch(self, wanted: list[Fact[Any]], why: str,
               send: Callable[[str, bool, str], str | None], strict: bool) -> None:
        started = time.monotonic()
        script, marker = gather_script(wanted, timed=self.timed)
        sudo = any(getattr(f, "sudo", False) for f in wanted)
        timings: dict[Fact[Any], float] = {}
        output: str | None = None
        try:
            if self.trace is not None and strict:
                self.trace(script, None)  # its output: the connector's trace of `sh -s`
            output = send(script, sudo, marker)
            if output is None:
                return
            if self.trace is not None and not strict:
                self.trace(script, output)
            try:
                self.values.update(parse_batch(wanted, output, marker, timings,
                                               lenient=not strict))
            except FactError as exc:
                raise exc.on_host(self.host) from exc
        finally:
            if output is not None or strict:
                entry = phase("facts", started, self.play, why)
                entry["count"] = len(wanted)
                slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:SLOWEST]
                entry["slowest"] = [[f.key, round(sec, 3)] for f, sec in slowest if sec > 0]
                self.profile.append(entry)

    def invalidate(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.invalidates is None:
                self.values.clear()
                return
            for fact in list(self.values):
                if any(selects(sel, fact) for sel in change.invalidates):
                    del self.values[fact]

    def drop(self, *kinds: type[Fact[Any]]) -> None:
        """Forget every fact of these classes (state gpuprov itself just wrote)."""
        for fact in list(self.values):
            if isinstance(fact, kinds):
                del self.values[fact]

    def clear(self) -> None:
        """Forget everything: the host rebooted."""
        self.values.clear()

    @property
    def view(self) -> FactView:
        return FactView(self.values)
