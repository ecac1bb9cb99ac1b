"""The run locks of a whole run (engine/runlocks.py), with local connectors:
a host's lock goes after its last play, several plays with --lock-timeout
take every lock up front in name order, and two operators waiting for each
other over the same hosts both finish instead of deadlocking until the timeout."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from gpuprov.connectors.base import Become
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.hostlock import HostBusy, HostLock, default_lock_path
from gpuprov.engine.results import HostResult, TaskResult
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import load_playbook, resolve_roles
from tests.unit.test_executor import CountingFactory

ROLE = """
import time

from gpuprov.ops.files import file

def tasks(ctx):
    time.sleep(float(ctx.vars["pause"]))
    yield file(ctx.vars["out_dir"] + "/" + ctx.host.name + "-" + ctx.vars["run_id"], "x\\n")
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    role = tmp_path / "roles" / "touch"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(
        f"# Seconds before the write.\npause: 0\n# Where files go.\nout_dir: {tmp_path / 'out'}\n"
        "# Names this run's files.\nrun_id: a\n")
    (tmp_path / "inventory.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
        "  hosts:\n    h1:\n    h2:\n    h3:\n")
    return tmp_path


def playbook(project: Path, *plays: str) -> Path:
    path = project / f"site-{len(plays)}.yml"
    path.write_text("".join(textwrap.dedent(f"""\
        - name: play {i}
          hosts: {hosts}
          roles: [touch]
        """) for i, hosts in enumerate(plays)))
    return path


class Probe:
    """A progress sink that, when each play starts, notes which hosts another run finds busy."""

    def __init__(self) -> None:
        self.busy: dict[str, set[str]] = {}

    def play_started(self, name: str, hosts: list[str]) -> None:
        self.busy[name] = {h for h in ("h1", "h2", "h3") if busy(h)}

    def host_started(self, host: str) -> None: ...
    def task_finished(self, host: str, task: TaskResult) -> None: ...
    def host_finished(self, result: HostResult) -> None: ...
    def message(self, host: str, text: str) -> None: ...


def busy(host: str) -> bool:
    lock = HostLock(LocalConnector(host, Become(enabled=False)), "drift-check", 0,
                    default_lock_path())
    try:
        lock.acquire()
    except HostBusy:
        return True
    lock.release()
    return False


def executor(project: Path, site: Path, progress: Probe | None = None,
             **options: object) -> Executor:
    inventory = Inventory.load(project / "inventory.yml")
    plays = load_playbook(site)
    resolve_roles(plays, [project / "roles"])
    return Executor(inventory, plays, list(inventory.hosts.values()), RunOptions(**options),
                    progress=progress, connector_factory=CountingFactory())


def test_a_hosts_lock_goes_after_its_last_play(project: Path) -> None:
    probe = Probe()
    run = executor(project, playbook(project, "all", "h2", "h3"), probe).run("apply")
    assert not run.any_failed
    # h1 has no play after the first: free while the run goes on; h2 until its play ends
    assert probe.busy == {"play 0": set(), "play 1": {"h2", "h3"}, "play 2": {"h3"}}
    assert not any(busy(h) for h in ("h1", "h2", "h3"))


def test_with_a_lock_timeout_and_several_plays_every_lock_is_taken_up_front(
        project: Path) -> None:
    probe = Probe()
    run = executor(project, playbook(project, "h1", "h2:h3"), probe,
                   lock_timeout=5).run("apply")
    assert not run.any_failed
    assert probe.busy == {"play 0": {"h1", "h2", "h3"}, "play 1": {"h2", "h3"}}


def test_a_host_busy_up_front_fails_alone_and_the_others_run(project: Path) -> None:
    other = HostLock(LocalConnector("h2", Become(enabled=False)), "apply", 0,
                     default_lock_path())
    assert other.acquire()
    try:
        run = executor(project, playbook(project, "all", "all"), lock_timeout=0.5).run("apply")
    finally:
        other.release()
    assert (run.hosts["h2"].error or "").startswith("busy: apply by ")
    assert not run.hosts["h1"].failed and not run.hosts["h3"].failed


@pytest.mark.parametrize("plays", [("all",), ("all", "all")], ids=["one play", "two plays"])
def test_two_operators_waiting_for_each_other_both_finish(project: Path,
                                                          plays: tuple[str, ...]) -> None:
    site = playbook(project, *plays)
    runs: dict[str, object] = {}

    def operator(run_id: str) -> None:
        ex = executor(project, site, lock_timeout=60, forks=3,
                      extra_vars={"run_id": run_id, "pause": "0.3"})
        runs[run_id] = ex.run("apply")

    started = time.monotonic()
    threads = [threading.Thread(target=operator, args=(r,)) for r in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert time.monotonic() - started < 30, "the two runs waited for each other"
    for run in runs.values():
        assert not run.any_failed, run  # type: ignore[attr-defined]
    assert len(list((project / "out").iterdir())) == 6
