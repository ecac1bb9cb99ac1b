"""Run a command only when its guards say so.

The guards (creates / removes / unless / only_if) are facts gathered in the
host's one batch, so check mode knows exactly whether the command would run
instead of guessing; without any guard the command always runs and always
counts as a change, like Ansible's `command` without `creates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, field
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactView, Selector
from gpuprov.facts.system import PathExists, RootShellTest, ShellTest
from gpuprov.ops.base import Change, Op, Step, operation


def _as_command(cmd: str | Command) -> Command:
    # A string is shell text as the user wrote it (pipes, redirections), like
    # Ansible's `shell`; a Command is quoted part by part.
    return cmd if isinstance(cmd, Command) else Command.script(cmd)


@operation
class RunCommand(Op):
    """Run `cmd` (as root unless sudo=False) only when the guards allow it.

    creates: skip when this path exists.    removes: skip when it does not.
    unless: skip when this read-only shell test exits 0.
    only_if: run only when this read-only shell test exits 0.
    guard_sudo: run the unless/only_if tests as root (they read root-only files).
    The tests run during fact gathering, in check mode too: keep them read-only.
    name: the task's name instead of the command line. ok_codes: exit codes
    that count as success besides 0. invalidates: the facts the command can
    alter (Fact classes or selectors); None: every fact of the host.
    """

    cmd: str | Command
    _: KW_ONLY
    creates: str | None = None
    removes: str | None = None
    unless: str | None = None
    only_if: str | None = None
    sudo: bool = True
    guard_sudo: bool = False
    name: str | None = None
    ok_codes: tuple[int, ...] = ()
    invalidates: tuple[Selector, ...] | None = None
    #: `cmd` as a Command (a str is shell text as written)
    command: Command = field(init=False)
    #: the unless / only_if tests as the facts gathered for them
    unless_test: ShellTest | None = field(init=False)
    only_if_test: ShellTest | None = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.command = _as_command(self.cmd)
        test = RootShellTest if self.guard_sudo else ShellTest
        self.unless_test = test(self.unless) if self.unless is not None else None
        self.only_if_test = test(self.only_if) if self.only_if is not None else None
        self.label = f"command {self.name or self.command.display()}"

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = []
        if self.creates:
            wanted.append(PathExists(self.creates))
        if self.removes:
            wanted.append(PathExists(self.removes))
        wanted += [t for t in (self.unless_test, self.only_if_test) if t is not None]
        return wanted

    def skip_reason(self, facts: FactView) -> str | None:
        """Why the command would not run now, or None when it would."""
        if self.creates and facts[PathExists(self.creates)]:
            return f"{self.creates} exists"
        if self.removes and not facts[PathExists(self.removes)]:
            return f"{self.removes} does not exist"
        if self.unless_test is not None and facts[self.unless_test]:
            return f"unless-test succeeded: {self.unless_test.script}"
        if self.only_if_test is not None and not facts[self.only_if_test]:
            return f"only_if-test failed: {self.only_if_test.script}"
        return None

    def plan(self, facts: FactView) -> list[Change]:
        if self.skip_reason(facts) is not None:
            return []
        guards = [g for g in (
            f"{self.creates} is absent" if self.creates else "",
            f"{self.removes} exists" if self.removes else "",
            "unless-test failed" if self.unless_test is not None else "",
            "only_if-test succeeded" if self.only_if_test is not None else "",
        ) if g]
        why = f" ({', '.join(guards)})" if guards else ""
        return [Change(
            resource=self.label,
            action="run",
            summary=f"run {self.command.display()}{why}",
            steps=[Step(self.command, sudo=self.sudo, ok_codes=self.ok_codes)],
            notify=self.notify,
            # Arbitrary shell can alter anything unless the caller says otherwise.
            invalidates=self.invalidates,
        )]


#: command(cmd, creates=, unless=, ...): see RunCommand
command = RunCommand
