"""Facts: small read-only probes, gathered in ONE shell script per host.

A fact is one question with a POSIX sh `command()` and a `process()` that
parses its output on the controller (no Python on targets). `gather_script`
joins many facts into one script with per-fact markers, `parse_batch`
splits the output back, so one round trip answers everything a play needs.
"""

from __future__ import annotations

import contextlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, TypeVar

from gpuprov.command import Command
from gpuprov.errors import GpuprovError

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """Base class. Subclasses are frozen dataclasses whose fields are the
    fact's arguments, so two requests for the same question are equal and
    are gathered once."""

    #: the fact needs root to read (e.g. /etc/shadow, `sshd -T`)
    sudo: ClassVar[bool] = False
    #: what the probe runs besides reading (e.g. "starts a container"): check
    #: mode and drift-check never run it, and skip the op that needs it
    runs: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[f"{cls.__module__}:{cls.__qualname__}"] = cls

    def command(self) -> Command | str:
        raise NotImplementedError

    def process(self, output: str, exit_code: int) -> T:
        raise NotImplementedError

    @property
    def key(self) -> str:
        """How the fact is named to people (errors, -v); never matched on."""
        args = [repr(getattr(self, f.name)) for f in fields(self) if not f.kw_only]
        args += [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.kw_only]
        return f"{type(self).__name__}({', '.join(args)})"


#: every Fact class defined so far, by "module:qualname" (see fact_class)
_CLASSES: dict[str, type[Fact[Any]]] = {}


def fact_class(name: str) -> type[Fact[Any]] | None:
    """The Fact class named "module:qualname" (engine/prefetch.py stores facts
    by that name); None when no loaded module defines it."""
    return _CLASSES.get(name)


class FactSelector(ABC):
    """Which known facts a change makes stale, beyond a whole Fact class
    (e.g. FileState.at(path): the state of one path). Selectors hold classes
    and values, never class names, so a rename breaks an import, not
    invalidation."""

    @abstractmethod
    def matches(self, fact: Fact[Any]) -> bool:
        """Whether `fact` may have changed."""


#: What Change.invalidates holds: Fact classes (every fact of that class) and
#: selectors (some facts of a class).
Selector = type[Fact[Any]] | FactSelector


def check_selectors(selectors: Iterable[object]) -> tuple[Selector, ...]:
    """The selectors as a tuple; anything else (a class name as a string, a
    Fact instance) is a TypeError at plan time instead of a silently stale fact."""
    out = tuple(selectors)
    for sel in out:
        if not (isinstance(sel, FactSelector)
                or (isinstance(sel, type) and issubclass(sel, Fact))):
            raise TypeError(f"invalidates takes Fact classes or FactSelectors, got {sel!r}")
    return out  # type: ignore[return-value]


def selects(selector: Selector, fact: Fact[Any]) -> bool:
    """Whether `selector` names `fact` (a class: by isinstance)."""
    if isinstance(selector, FactSelector):
        return selector.matches(fact)
    return isinstance(fact, selector)


class FactError(GpuprovError):
    """A fact's output could not be parsed (a bug or an unexpected target).
    `detail` is the message without the host the engine puts in front."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.detail = message

    def on_host(self, host: str) -> FactError:
        """The same error, naming the host it came from."""
        err = FactError(f"{host}: {self.detail}", self.hint)
        err.detail = self.detail
        return err


def _shell(cmd: Command | str) -> str:
    return cmd.shell() if isinstance(cmd, Command) else cmd


def gather_script(facts: Iterable[Fact[Any]], marker: str | None = None,
                  timed: bool = False) -> tuple[str, str]:
    """One POSIX sh script answering every fact; returns (script, marker).

    Each fact runs in a subshell with stdin from /dev/null and stderr
    discarded, so one failing probe never breaks the others. `timed` (-v):
    each end line also carries /proc/uptime before and after the probe; `read`
    is a shell builtin, so timing costs no process (10 ms resolution, enough
    to name a slow probe).
    """
    marker = marker or "@@gpuprov-" + secrets.token_hex(8)
    lines = ["#!/bin/sh", "LC_ALL=C; export LC_ALL"]
    for i, fact in enumerate(facts):
        lines.append(f"printf '%s\\n' '{marker} begin {i}'")
        if timed:
            lines.append(_UPTIME.format(var="_gp_t0"))
        lines.append(f"( {_shell(fact.command())}\n) </dev/null 2>/dev/null")
        if timed:
            lines.append("_gp_rc=$?; " + _UPTIME.format(var="_gp_t1"))
            lines.append(f"printf '\\n{marker} end {i} %s %s %s\\n' \"$_gp_rc\" "
                         "\"$_gp_t0\" \"$_gp_t1\"")
        else:
            lines.append(f"printf '\\n{marker} end {i} %s\\n' \"$?\"")
    return "\n".join(lines) + "\n", marker


#: seconds since boot into a variable, without a fork; "-" where unreadable
_UPTIME = "{var}=-; read {var} _gp_x </proc/uptime 2>/dev/null || {var}=-"


def parse_batch(facts: list[Fact[Any]], output: str, marker: str,
                timings: dict[Fact[Any], float] | None = None,
                lenient: bool = False) -> dict[Fact[Any], Any]:
    """Split a gather_script's output and process each fact's part; with
    `timings`, the seconds each probe took (a timed script) are put there.
    `lenient`: a fact whose part is missing or cannot be parsed is left out
    of the answer instead of raising (a guessed fact, asked again if needed)."""
    results: dict[Fact[Any], Any] = {}
    pos = 0
    for i, fact in enumerate(facts):
        begin = f"{marker} begin {i}\n"
        start = output.find(begin, pos)
        if start < 0:
            if lenient:
                break
            raise FactError(f"fact {fact.key}: no output (script cut short?)")
        start += len(begin)
        end_tag = f"\n{marker} end {i} "
        end = output.find(end_tag, start)
        if end < 0:
            if lenient:
                break
            raise FactError(f"fact {fact.key}: output not terminated")
        pos = end + len(end_tag)
        try:
            results[fact] = _process(fact, output, start, end, end_tag, timings)
        except FactError:
            if not lenient:
                raise
    return results


def _process(fact: Fact[Any], output: str, start: int, end: int, end_tag: str,
             timings: dict[Fact[Any], float] | None) -> Any:
    eol = output.find("\n", end + len(end_tag))
    words = output[end + len(end_tag): eol if eol >= 0 else None].split()
    code_text = words[0] if words else ""
    try:
        exit_code = int(code_text)
    except ValueError as exc:
        raise FactError(f"fact {fact.key}: bad exit status {code_text!r}") from exc
    if timings is not None and len(words) == 3:
        with contextlib.suppress(ValueError):
            timings[fact] = max(0.0, float(words[2]) - float(words[1]))
    try:
        return fact.process(output[start:end], exit_code)
    except FactError:
        raise
    except Exception as exc:  # a parser bug must name the fact it came from
        raise FactError(f"fact {fact.key}: cannot parse output: {exc}") from exc


class FactView(Mapping[Fact[Any], Any]):
    """Read-only answers of one host's facts, as given to ops."""

    def __init__(self, values: Mapping[Fact[Any], Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, fact: Fact[Any]) -> Any:
        try:
            return self._values[fact]
        except KeyError:
            raise KeyError(f"fact {fact.key} was not gathered") from None

    def __iter__(self) -> Iterator[Fact[Any]]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
