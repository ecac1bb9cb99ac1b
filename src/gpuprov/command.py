"""Shell commands as objects: arguments quoted once, here; secrets masked.

Everything gpuprov runs on a target goes through `Command`, so quoting is
never glued by hand in ops or roles, and a secret never reaches a log,
a report or a process list of the controller.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

MASK = "********"


class Secret(str):
    """A string that must never be shown: gpuprov's one secret type.

    `!secret` values in YAML, variables whose names look secret and any text
    rendered from them are Secrets. It is a `str` so that roles validate and
    compare it like any value; what keeps it hidden is that every place that
    shows text checks for it: `Command.display()` masks it, the renderer marks
    text derived from it secret (diffs masked, no digest), and the output
    masks its value in anything printed or written. `repr()` never shows it.
    """

    __slots__ = ()

    @property
    def value(self) -> str:
        """The plain text, for the one place that must use it."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Secret({MASK})"


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """text with every occurrence of a known secret value replaced by the mask:
    the last line of defence for whatever reaches a person or a file."""
    for value in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


@dataclass(frozen=True)
class Raw:
    """A piece of shell that is inserted verbatim (operators, redirections)."""

    text: str


Arg = str | Secret | Raw | int


def _quote(arg: Arg, reveal: bool) -> str:
    if isinstance(arg, Raw):
        return arg.text
    if isinstance(arg, Secret):
        return shlex.quote(arg.value) if reveal else MASK
    return shlex.quote(str(arg))


class Command:
    """A POSIX sh command line built from parts.

    >>> Command("apt-get", "install", "-y", "nvidia-utils-580-server").shell()
    'apt-get install -y nvidia-utils-580-server'
    """

    def __init__(self, *parts: Arg) -> None:
        self.parts: tuple[Arg, ...] = parts

    @classmethod
    def script(cls, text: str) -> Command:
        """A fixed shell snippet with no interpolated values."""
        return cls(Raw(text))

    @classmethod
    def join(cls, commands: Iterable[Command], sep: str = " && ") -> Command:
        parts: list[Arg] = []
        for i, cmd in enumerate(commands):
            if i:
                parts.append(Raw(sep.strip()))
            parts.extend(cmd.parts)
        return cls(*parts)

    def then(self, other: Command) -> Command:
        return Command.join([self, other])

    def shell(self) -> str:
        """The command line to execute (secrets revealed)."""
        return self._render(reveal=True)

    def display(self) -> str:
        """The command line to show a person (secrets masked)."""
        return self._render(reveal=False)

    def _render(self, reveal: bool) -> str:
        return " ".join(_quote(part, reveal) for part in self.parts)

    def __str__(self) -> str:
        return self.display()

    def __repr__(self) -> str:
        return f"Command({self.display()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Command):
            return self.display() == other.display() and self.shell() == other.shell()
        if isinstance(other, str):
            return self.display() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.shell())
