"""The layers of design.md hold, and the tool that enforces them has teeth.

scripts/test runs `lint-imports` on the tree; here a copy of the package
with one deliberate upward import must break the layer contract, so a
contract that silently stopped matching anything cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "gpuprov"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400


def lint_copy(tmp_path: Path, inject: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """lint-imports on a copy of src/ and roles/ with `inject` appended to files."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "gpuprov",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "roles", tmp_path / "roles",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, line in (inject or {}).items():
        with open(tmp_path / rel, "a") as f:
            f.write(f"\n{line}\n")
    # the copy ahead of the editable checkout; the copy's roles/ from the cwd
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def lint_available() -> None:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: install the test extras (pip install -e '.[test]')")


def test_the_tree_keeps_every_contract(lint_available: None, tmp_path: Path) -> None:
    proc = lint_copy(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("file", "line", "contract", "expected"), [
    ("src/gpuprov/facts/base.py", "import gpuprov.cli  # noqa", "layers",
     "gpuprov.facts.base -> gpuprov.cli"),
    ("src/gpuprov/connectors/local.py", "import gpuprov.engine.executor  # noqa",
     "facts and connectors never import", "gpuprov.connectors.local -> gpuprov.engine.executor"),
    ("src/gpuprov/engine/hostrun.py", "import roles.base.tasks  # noqa", "the core never imports",
     "gpuprov.engine.hostrun -> roles.base.tasks"),
])
def test_a_deliberate_forbidden_import_breaks_the_build(
        lint_available: None, tmp_path: Path, file: str, line: str, contract: str,
        expected: str) -> None:
    proc = lint_copy(tmp_path, {file: line})
    assert proc.returncode != 0, proc.stdout
    broken = proc.stdout[proc.stdout.index("Broken contracts"):]
    assert contract in broken and expected in broken, broken


def test_no_module_of_the_package_or_a_role_is_over_400_lines() -> None:
    sources = [*PACKAGE.rglob("*.py"), *(REPO / "roles").rglob("*.py")]
    too_long = {str(p.relative_to(REPO)): n for p in sources
                if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}
