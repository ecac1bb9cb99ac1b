"""PythonVersion and VenvProjectVersion: their probes run by /bin/sh here
(read-only), and captured outputs parsed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.base import FactError
from gpuprov.facts.python import PythonVersion, VenvProjectVersion


def sh(command: str) -> tuple[str, int]:
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          timeout=30)
    return proc.stdout, proc.returncode


def test_python_version_of_an_interpreter_here() -> None:
    fact = PythonVersion("python3")
    major, minor = fact.process(*sh(fact.command().shell())) or (0, 0)
    assert major == 3 and minor >= 8
    assert fact.process("3 11\n", 0) == (3, 11)


def test_no_interpreter_is_none_and_odd_output_an_error() -> None:
    fact = PythonVersion("python3.99")
    assert fact.process(*sh(fact.command().shell())) is None
    with pytest.raises(FactError, match="did not say its version"):
        fact.process("Segmentation fault\n", 139)
    with pytest.raises(ValueError):
        PythonVersion("python3; rm -rf /")


def test_the_version_a_venv_holds(tmp_path: Path) -> None:
    venv = tmp_path / "opt gpuprov"
    fact = VenvProjectVersion(str(venv), "gpuprov")
    assert fact.process(*sh(fact.command().shell())) is None
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "gpuprov-0.2.1.dist-info").mkdir(parents=True)
    (site / "gpuprov_extras-1.0.dist-info").mkdir()
    (site / "click-8.1.7.dist-info").mkdir()
    assert fact.process(*sh(fact.command().shell())) == "0.2.1"
