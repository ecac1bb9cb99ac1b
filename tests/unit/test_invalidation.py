"""Fact invalidation is typed: a change names Fact classes or selectors, never
class names in strings, so renaming a Fact class breaks an import or this
test, never the re-read that proves a change converged."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import CommandResult, Connector, Session
from gpuprov.engine.hostrun import HostRun
from gpuprov.facts.base import Fact, selects
from gpuprov.facts.files import FileState
from gpuprov.facts.services import ServiceState
from gpuprov.facts.system import PathExists
from gpuprov.model.inventory import Host
from gpuprov.ops.base import Change

REPO = Path(__file__).resolve().parents[2]


class NoConnector(Connector):
    def connect(self, *, expect_refusal: bool = False) -> None:
        pass

    def close(self) -> None:
        pass

    def session(self) -> Session:
        return Session("root")

    def run(self, command: Command | str, *, sudo: bool = False, stdin: object = None,
            timeout: float | None = None) -> CommandResult:  # pragma: no cover
        raise AssertionError("invalidation runs no command")


def host_run_with(*facts: Fact[object]) -> HostRun:
    run = HostRun(Host("h1"), NoConnector("h1"), [], check=False)
    for fact in facts:
        run._facts[fact] = "cached"
    return run


@pytest.mark.parametrize("selector", ["FileState", "FileState('/etc/hosts',", FileState("/x")])
def test_a_class_name_or_a_fact_is_refused_as_a_selector(selector: object) -> None:
    with pytest.raises(TypeError, match="Fact classes or FactSelectors"):
        Change("file /x", "update", "x", invalidates=(selector,))  # type: ignore[arg-type]


def test_a_renamed_fact_class_is_still_invalidated_and_its_old_name_selects_nothing() -> None:
    @dataclass(frozen=True)
    class Probe(Fact[str]):
        name: str

    @dataclass(frozen=True)
    class Other(Fact[str]):
        name: str

    kept, dropped = Other("a"), Probe("a")
    run = host_run_with(kept, dropped, PathExists("/x"))
    # what a rename does to every name-based lookup
    Probe.__name__ = Probe.__qualname__ = "RenamedProbe"
    Other.__name__ = Other.__qualname__ = "Probe"

    run.invalidate([Change("probe", "update", "x", invalidates=(Probe,))])

    assert dropped not in run._facts
    assert kept in run._facts and PathExists("/x") in run._facts


def test_file_selectors_drop_exactly_the_paths_they_name() -> None:
    target, sibling = FileState("/etc/docker/daemon.json", sudo=True), FileState("/etc/hosts")
    below, service = FileState("/srv/data/x"), ServiceState("docker")
    run = host_run_with(target, sibling, below, service)

    run.invalidate([Change("file", "update", "x",
                           invalidates=(FileState.at(target.path), FileState.under("/srv/data")))])

    assert set(run._facts) == {sibling, service}


def test_none_drops_every_fact() -> None:
    run = host_run_with(FileState("/a"), ServiceState("docker"))
    run.invalidate([Change("command x", "run", "x", invalidates=None)])
    assert run._facts == {}


def test_selects_matches_subclasses_by_type() -> None:
    assert selects(Fact, PathExists("/x"))
    assert not selects(FileState, PathExists("/x"))


def _string_selectors(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.keyword) or node.arg not in ("invalidates",
                                                                  "also_invalidates"):
            continue
        for sub in ast.walk(node.value):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                found.append(f"{path.relative_to(REPO)}:{sub.lineno}: {sub.value!r}")
    return found


def test_no_op_or_role_names_a_fact_class_in_a_string() -> None:
    sources = [*(REPO / "src" / "gpuprov").rglob("*.py"), *(REPO / "roles").rglob("*.py")]
    assert len(sources) > 40
    offenders = [hit for path in sources for hit in _string_selectors(path)]
    assert offenders == []


def test_the_type_checker_refuses_a_class_name_as_a_selector(tmp_path: Path) -> None:
    mypy_api = pytest.importorskip("mypy.api", reason="mypy comes with the test extras")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "from gpuprov.facts.files import FileState\n"
        "from gpuprov.ops.base import Change\n"
        "Change('f', 'update', 'x', invalidates=(FileState, FileState.at('/x')))\n"
        "Change('f', 'update', 'x', invalidates=('FileState',))\n")
    out, _, code = mypy_api.run([str(snippet), "--cache-dir", str(tmp_path / "cache"),
                                 "--no-error-summary", "--follow-imports", "silent"])
    assert code == 1, out
    assert [line.split(":")[1] for line in out.splitlines() if ": error:" in line] == ["4"], out
