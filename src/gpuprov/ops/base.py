"""Operations and the Changes they plan.

An operation reads facts and returns the Changes needed to reach the
desired state. Check mode stops at the Changes; apply runs their Steps with
the connector. The same code computes both, so check mode cannot lie.
"""

from __future__ import annotations

import difflib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # 3.10: the marker only tells type checkers that @operation makes a dataclass
    def dataclass_transform(**_: Any) -> Any:
        return lambda decorator: decorator

from gpuprov.command import MASK, Command
from gpuprov.facts.base import Fact, FactView, Selector, check_selectors


@dataclass(frozen=True)
class Failure:
    """A step that failed, as its explain() sees it."""

    exit_code: int
    stdout: str
    stderr: str
    #: the value of the step's `diagnose` fact, read right after the failure
    #: (None without one, or when it could not be read)
    diagnosis: Any = None


@dataclass(frozen=True)
class Explained:
    """What a failure means for a person: why, and what to do."""

    reason: str
    hint: str | None = None


#: reads a failed step's output (apt's "Could not get lock", cat's "No space
#: left on device") into words a person acts on; None when it does not know it
Explain = Callable[[Failure], "Explained | None"]


@dataclass(frozen=True)
class Step:
    """One command of a change, run as root unless sudo=False."""

    command: Command
    stdin: bytes | None = field(default=None, repr=False)
    sudo: bool = True
    #: a controller file streamed as stdin instead (image tarballs: too big for memory)
    stdin_file: str | None = None
    #: exit codes that count as success besides 0
    ok_codes: tuple[int, ...] = ()
    #: run over a brand-new connection instead of the long-lived one: proves a
    #: fresh login (+ sudo) still works after sshd changed
    new_connection: bool = False
    #: turns a failure of this step into a reason and a hint (not part of what
    #: the step does: two steps running the same command are equal)
    explain: Explain | None = field(default=None, compare=False, repr=False)
    #: a read-only probe run after a failure, its value handed to explain
    #: (who holds the dpkg lock now)
    diagnose: Fact[Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Diff:
    """Before/after text of a resource; None means 'absent'."""

    label: str
    before: str | None
    after: str | None
    secret: bool = False

    def unified(self) -> str:
        if self.secret:
            return f"--- {self.label}\n+++ {self.label}\n{MASK} (secret content changed)\n"
        before = [] if self.before is None else self.before.splitlines(keepends=True)
        after = [] if self.after is None else self.after.splitlines(keepends=True)
        lines = difflib.unified_diff(
            before, after,
            fromfile=self.label if self.before is not None else "/dev/null",
            tofile=self.label if self.after is not None else "/dev/null",
        )
        return "".join(ln if ln.endswith("\n") else ln + "\n\\ No newline at end of file\n"
                       for ln in lines)


@dataclass
class Change:
    """One difference between a host and its desired state, and its fix."""

    resource: str                 # e.g. "file /etc/docker/daemon.json"
    action: str                   # create | update | delete | install | remove | start | ...
    summary: str                  # one line for people: "install nvidia-utils-580-server"
    steps: list[Step] = field(default_factory=list)
    diff: Diff | None = None
    notify: tuple[str, ...] = ()
    #: set in check mode when the change cannot be known exactly yet
    unknown: str | None = None
    #: why this change cannot be done at all (e.g. its signing key cannot be
    #: read): the op does not know the mode, the engine does: check mode
    #: reports the change as unknown, apply fails the task before any step
    blocked: str | None = None
    #: the facts this change can alter (Fact classes, FactSelectors such as
    #: FileState.at(path)); None = every fact of the host
    invalidates: tuple[Selector, ...] | None = None
    #: reboot needed after this change is applied
    reboot_required: bool = False
    #: run (best effort) when one of `steps` fails, to put the host back as it was
    rollback: list[Step] = field(default_factory=list)
    #: applying it undoes what the op's plan read (an earlier run's leftovers): the
    #: engine re-reads the op's facts and plans it once more, in the same run
    replan: bool = False

    def __post_init__(self) -> None:
        if self.invalidates is not None:
            self.invalidates = check_selectors(self.invalidates)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "resource": self.resource,
            "action": self.action,
            "summary": self.summary,
            "commands": [s.command.display() for s in self.steps],
        }
        if self.diff is not None:
            data["diff"] = self.diff.unified()
        if self.notify:
            data["notify"] = list(self.notify)
        if self.unknown:
            data["unknown"] = self.unknown
        if self.reboot_required:
            data["reboot_required"] = True
        return data


def notify_names(notify: str | Iterable[str]) -> tuple[str, ...]:
    """The one place `notify` is normalised: a handler name, or several."""
    names = (notify,) if isinstance(notify, str) else tuple(notify)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"notify takes handler names, got {name!r}")
    return names


@dataclass(eq=False, repr=False)
class Op(ABC):
    """A desired-state declaration: facts in, Changes out.

    Declare an op once, with @operation: its dataclass fields are its
    parameters (typed, with defaults, keyword-only after a `KW_ONLY` marker),
    `__post_init__` validates and derives (call super().__post_init__()), and
    roles call the class, or a factory only where one adds behaviour (file()
    turns text into bytes). Every op takes `notify` (a handler name or several).
    """

    notify: tuple[str, ...] = field(default=(), kw_only=True)

    #: shown in progress and reports: "file /etc/modprobe.d/blacklist-nouveau.conf"
    #: (set in __post_init__; a plain attribute, not a parameter)
    label = ""

    def __post_init__(self) -> None:
        self.notify = notify_names(self.notify)

    @abstractmethod
    def facts(self) -> Sequence[Fact[Any]]:
        """Every fact plan() will read (gathered in the host's one batch)."""

    @abstractmethod
    def plan(self, facts: FactView) -> list[Change]:
        """The Changes needed; [] when the host is already right."""

    def report(self, facts: FactView) -> dict[str, Any] | None:
        """What the op found, for reports (e.g. verify's GPU table); None: nothing."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


OpT = TypeVar("OpT", bound=Op)


@dataclass_transform(field_specifiers=(field,))
def operation(cls: type[OpT]) -> type[OpT]:
    """Declare an op's parameters once, as typed dataclass fields (pyinfra's
    @operation, Ansible's argument_spec): no factory restating them."""
    return dataclass(eq=False, repr=False)(cls)


@operation
class RebootAfter(Op):
    """Another op whose changes need a reboot to take effect (a new kernel
    module, a rebuilt initramfs): the engine records it and the reboot policy
    decides."""

    op: Op
    why: str

    def __post_init__(self) -> None:
        self.label = self.op.label
        self.notify = self.op.notify

    def facts(self) -> Sequence[Fact[Any]]:
        return self.op.facts()

    def plan(self, facts: FactView) -> list[Change]:
        changes = self.op.plan(facts)
        for change in changes:
            change.reboot_required = True
            change.summary += f" (reboot needed: {self.why})"
        return changes
