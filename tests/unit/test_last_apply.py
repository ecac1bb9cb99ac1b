"""The last-apply record (engine/lastapply.py): written when an apply leaves a
host without failures, by the run lock as it is let go (no round trip of its
own), atomically, 0644; never by apply --check, drift-check or a failed apply;
a last script cut short never runs. The hosts are this machine through the
local connector, the record in a temp dir (tests/unit/conftest.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from gpuprov.connectors.base import Become
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.hostlock import HostLock, LockInfo, lock_command
from gpuprov.engine.lastapply import RECORD_PATH_ENV, gpu_count, record_path, record_script
from gpuprov.engine.results import RunResult
from gpuprov.facts.health import LastApply
from gpuprov.facts.nvidia import Gpu, LoadedDriver, NvidiaSmi
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import load_playbook, resolve_roles

ROLE = '''
from gpuprov.ops.command import command

def tasks(ctx):
    yield command("exit " + str(ctx.vars["rc"]), name="the task")
'''


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    role = tmp_path / "roles" / "one"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text("# the task's exit status\nrc: 0\n")
    (tmp_path / "site.yml").write_text("- name: p\n  hosts: all\n  roles: [one]\n")
    return tmp_path


def run(project: Path, command: str = "apply", rc: int = 0, **options: object) -> RunResult:
    (project / "inventory.yml").write_text(textwrap.dedent(f"""\
        all:
          vars: {{ansible_connection: local, become: false, rc: {rc}}}
          hosts: {{h1: }}
        """))
    inventory = Inventory.load(project / "inventory.yml")
    plays = load_playbook(project / "site.yml")
    resolve_roles(plays, [project / "roles"])
    return Executor(inventory, plays, list(inventory.hosts.values()),
                    RunOptions(**options),  # type: ignore[arg-type]
                    connector_factory=lambda h, o: LocalConnector(h.name, Become(enabled=False))
                    ).run(command)


def test_an_apply_without_failures_records_itself_in_no_extra_round_trip(
        project: Path) -> None:
    path = Path(record_path("h1"))
    assert not path.exists()
    result = run(project).hosts["h1"]
    assert result.error is None and not result.failed
    data = json.loads(path.read_text())
    assert set(data) == {"time", "version", "playbook", "gpu_count"}
    assert data["time"].endswith("Z") and data["playbook"].endswith("site.yml")
    # this machine's GPUs, counted as the record is written (none: null)
    assert data["gpu_count"] is None or isinstance(data["gpu_count"], int)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # the lock (with every fact), the op's command: no third trip for the record
    assert result.round_trips == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".gpuprov-")]
    # the status fact reads it back
    assert LastApply(str(path)).process(path.read_text(), 0) == data


@pytest.mark.parametrize(("command", "options"), [("apply", {"check": True}),
                                                  ("drift-check", {"check": True})])
def test_check_and_drift_check_write_no_record(project: Path, command: str,
                                               options: dict[str, object]) -> None:
    run(project, command, **options)
    assert not Path(record_path("h1")).exists()


def test_a_failed_apply_writes_no_record_and_keeps_the_last(project: Path) -> None:
    run(project)
    before = Path(record_path("h1")).read_text()
    assert run(project, rc=3).hosts["h1"].failed
    assert Path(record_path("h1")).read_text() == before


def test_the_count_from_the_runs_own_facts() -> None:
    smi = LoadedDriver("ok", "580.95.05", "13.0", (Gpu(0, "A100", 81920, "GPU-a"),
                                                   Gpu(1, "A100", 81920, "GPU-b")))
    assert gpu_count({NvidiaSmi(): smi}) == 2
    assert gpu_count({NvidiaSmi(): LoadedDriver("no-driver")}) is None
    assert gpu_count({}) is None
    script = record_script("h1", "playbooks/site.yml", {NvidiaSmi(): smi}, now=0)
    assert '"gpu_count": 2' in script and "nvidia-smi" not in script
    assert '"time": "1970-01-01T00:00:00Z"' in script


def test_the_host_counts_its_gpus_when_the_run_did_not_ask(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 8\necho 8\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv(RECORD_PATH_ENV, str(tmp_path / "rec" / "{host}.json"))
    script = record_script("gpu-7", None, {}, now=0)
    subprocess.run(["sh", "-c", script], check=True,
                   env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert json.loads((tmp_path / "rec" / "gpu-7.json").read_text()) == {
        "time": "1970-01-01T00:00:00Z", "version": json.loads(
            (tmp_path / "rec" / "gpu-7.json").read_text())["version"],
        "playbook": None, "gpu_count": 8}


def _held_lock(tmp_path: Path) -> tuple[HostLock, Path]:
    lock = HostLock(LocalConnector("h", Become(enabled=False)), "apply",
                    path=str(tmp_path / "run.lock"))
    assert lock.acquire()
    return lock, tmp_path / "ran"


def test_the_last_script_runs_as_the_lock_is_let_go(tmp_path: Path) -> None:
    lock, ran = _held_lock(tmp_path)
    lock.release(f"echo done > {ran}\n")
    assert ran.read_text() == "done\n"


def test_a_last_script_cut_short_never_runs(tmp_path: Path) -> None:
    # what a connection lost mid-way delivers: fewer bytes than announced
    info = LockInfo("apply", "a@b", 0, 1)
    ran = tmp_path / "ran"
    command = lock_command(info, 0, str(tmp_path / "run.lock")).shell()
    script = f"echo done > {ran}\n".encode()
    proc = subprocess.run(["sh", "-c", command], input=b"%d\n" % (len(script) + 10) + script,
                          capture_output=True, timeout=30, check=False)
    assert proc.stdout == b"locked\n" and not ran.exists()
