"""Python on the host, for what runs there (pull mode's venv): which
interpreter version a name gives, and which version of a project a venv holds.

Asked without root; both answer "absent" (None) instead of failing where
there is no interpreter or no venv yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PythonVersion(Fact["tuple[int, int] | None"]):
    """(major, minor) of `interpreter` on the PATH (python3, python3.11); None
    when there is none."""

    interpreter: str = "python3"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.interpreter):
            raise ValueError(f"not an interpreter name: {self.interpreter!r}")

    def command(self) -> Command:
        return Command(Raw("if command -v"), self.interpreter, Raw(">/dev/null 2>&1; then"),
                       self.interpreter, "-c", "import sys; print(*sys.version_info[:2])",
                       Raw("; else echo absent; fi"))

    def process(self, output: str, exit_code: int) -> tuple[int, int] | None:
        text = output.strip()
        if text == "absent":
            return None
        match = re.fullmatch(r"(\d+) (\d+)", text)
        if exit_code != 0 or match is None:
            raise FactError(f"{self.interpreter} did not say its version: {text[:200]!r}")
        return int(match[1]), int(match[2])


@dataclass(frozen=True)
class VenvProjectVersion(Fact["str | None"]):
    """The version of `project` installed in the venv at `venv` (its
    .dist-info directory's name); None when the venv or the project is not there."""

    venv: str
    project: str

    def __post_init__(self) -> None:
        if not self.venv.startswith("/") or not _NAME.fullmatch(self.project):
            raise ValueError(f"VenvProjectVersion({self.venv!r}, {self.project!r})")

    def command(self) -> Command:
        # installed wheels name their .dist-info <project>-<version>.dist-info
        pattern = (Command(self.venv).shell() + "/lib/python3*/site-packages/"
                   + self.project.replace("-", "_") + "-*.dist-info")
        return Command(Raw(f'for d in {pattern}; do [ -d "$d" ] && echo "${{d##*/}}";'
                           " done; true"))

    def process(self, output: str, exit_code: int) -> str | None:
        prefix = self.project.replace("-", "_") + "-"
        versions = [line[len(prefix):-len(".dist-info")] for line in output.split()
                    if line.startswith(prefix) and line.endswith(".dist-info")]
        return versions[-1] if versions else None
