"""`gpuprov pull-setup` on the command line, the executor replaced (the pull
role has its own tests, test_role_pull.py): the hosts -l selects, the bundled
pull-setup.yml, the wheels handed to the role (repacked here, or
--wheelhouse DIR), the header, the recap's exit codes, refusals before any
connection."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from gpuprov.cli import pullsetup
from gpuprov.engine.results import HostResult, RunResult
from gpuprov.engine.wheelhouse import Wheelhouse
from tests.unit.cli_runner import gpuprov
from tests.unit.test_role_pull import make_wheelhouse


class FakeExecutor:
    instances: list[FakeExecutor] = []
    failing: set[str] = set()

    def __init__(self, inventory: Any, plays: Any, hosts: Any, options: Any) -> None:
        self.plays, self.hosts, self.options = plays, [h.name for h in hosts], options
        self.progress = None
        # what the role would read, while the run lasts (the repacked ones are temporary)
        self.wheels = sorted(p.name for p in Path(options.extra_vars["pull_wheelhouse"])
                             .glob("*.whl"))
        self.mode = ""
        FakeExecutor.instances.append(self)

    def run(self, mode: str) -> RunResult:
        self.mode = mode
        result = RunResult(mode, check=mode == "check", started=1.0, finished=2.0)
        for name in self.hosts:
            result.hosts[name] = HostResult(name, error="role pull: the wheels do not fit"
                                            if name in self.failing else None)
        return result


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pullsetup, "Executor", FakeExecutor)
    FakeExecutor.instances, FakeExecutor.failing = [], set()

    def repacked(dest: Path) -> Wheelhouse:
        return Wheelhouse.read(make_wheelhouse(dest))

    monkeypatch.setattr(pullsetup, "gpuprov_wheelhouse", repacked)
    (tmp_path / "inventory.yml").write_text(textwrap.dedent("""\
        all:
          vars:
            pull_repo: https://git.example.com/team/fleet.git
          hosts:
            gpu-01:
            gpu-02:
        """))
    return tmp_path


def test_runs_the_pull_role_on_the_selected_hosts_with_repacked_wheels(project: Path) -> None:
    result = gpuprov("pull-setup", "inventory.yml", "-l", "gpu-02")
    assert result.code == 0, result.both
    [run] = FakeExecutor.instances
    assert run.hosts == ["gpu-02"] and run.mode == "apply"
    [play] = run.plays
    assert [r.name for r in play.roles] == ["pull"]
    assert play.roles[0].path == Path(__file__).resolve().parents[2] / "roles" / "pull"
    assert run.options.extra_vars["pull_wheelhouse_repacked"] is True
    assert run.wheels[0].startswith("PyYAML-") and "gpuprov-0.1.0-py3-none-any.whl" in run.wheels
    # the repacked wheels live only as long as the run
    assert not Path(run.options.extra_vars["pull_wheelhouse"]).exists()
    assert result.stdout.splitlines()[0] == (
        "pull-setup pull-setup.yml: roles pull on 1 host (gpuprov 0.1.0)")


def test_an_operators_wheelhouse_and_check_mode(project: Path) -> None:
    house = make_wheelhouse(project / "for-arm", (3, 12))
    result = gpuprov("pull-setup", "-i", "inventory.yml", "--wheelhouse", str(house), "-C")
    assert result.code == 0, result.both
    [run] = FakeExecutor.instances
    assert run.mode == "check" and run.hosts == ["gpu-01", "gpu-02"]
    assert run.options.extra_vars["pull_wheelhouse"] == str(house)
    assert run.options.extra_vars["pull_wheelhouse_repacked"] is False
    assert house.is_dir()


def test_a_failed_host_exits_2(project: Path) -> None:
    FakeExecutor.failing = {"gpu-01"}
    result = gpuprov("pull-setup", "inventory.yml")
    assert result.code == 2, result.both
    assert "the wheels do not fit" in result.both


@pytest.mark.parametrize(("content", "says"), [
    ([], "must hold exactly one gpuprov version (found: none)"),
    (["gpuprov-0.1.0-py3-none-any.whl", "gpuprov-0.2.0-py3-none-any.whl"],
     "(found: 0.1.0, 0.2.0)"),
    (["not-a-wheel.whl"], "not-a-wheel.whl"),
])
def test_a_wheelhouse_that_cannot_serve_is_refused_before_any_host(
        project: Path, content: list[str], says: str) -> None:
    house = project / "house"
    house.mkdir()
    for name in content:
        (house / name).write_bytes(b"PK")
    result = gpuprov("pull-setup", "inventory.yml", "--wheelhouse", str(house))
    assert result.code == 1 and says in result.stderr, result.both
    assert FakeExecutor.instances == []


def test_listed_in_the_help() -> None:
    result = gpuprov("--help")
    assert "pull-setup" in result.stdout
    assert "Set hosts up to converge themselves from a git repository" in result.stdout
