"""Run `gpuprov` in-process through its real entry point, main(), for the
CLI tests: exit code, stdout and stderr, and never a traceback."""

from __future__ import annotations

import sys
from typing import NamedTuple
from unittest import mock

from click.testing import CliRunner

from gpuprov.cli import main


class Outcome(NamedTuple):
    code: int | None
    stdout: str
    stderr: str

    @property
    def both(self) -> str:
        return self.stdout + self.stderr


def gpuprov(*args: str, stdin: str | None = None) -> Outcome:
    """Run the command in-process through main(), in the current directory."""
    code: int | None = None
    with CliRunner().isolation(input=stdin) as (out, err, _), \
            mock.patch.object(sys, "argv", ["gpuprov", *args]):
        try:
            main()
        except SystemExit as exc:
            code = exc.code  # type: ignore[assignment]
    result = Outcome(code, out.getvalue().decode(), err.getvalue().decode())
    assert "Traceback" not in result.both, result.both
    return result
