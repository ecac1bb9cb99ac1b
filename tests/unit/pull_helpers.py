"""What the `gpuprov pull` tests share: a git repository in tmp_path served as a
file:// URL, a pull.yml pointing at it with state and textfile dirs in
tmp_path, and a fake playbook runner (nothing ever runs on this machine)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import gpuprov.cli.pull as cli_pull
from gpuprov.engine.executor import RunOptions
from gpuprov.engine.pull import PullTarget
from gpuprov.engine.results import CHANGED, FAILED, OK, HostResult, RunResult, TaskResult
from gpuprov.ops.base import Change
from tests.unit.cli_runner import Outcome, gpuprov

INVENTORY = """\
all:
  hosts:
    node1:
      motd: hello
    node2: {}
"""

PLAYBOOK = """\
- name: site
  hosts: all
  roles: [demo]
"""

TASKS = "def tasks(ctx):\n    return []\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                           "-c", "init.defaultBranch=main", *args], cwd=repo,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


class Origin:
    """The team's repository: inventory, playbook and a role, committed on main."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        git(path, "init", "-q")
        self.write({"inventory.yml": INVENTORY, "playbooks/site.yml": PLAYBOOK,
                    "roles/demo/tasks.py": TASKS, "roles/demo/defaults.yml": "{}\n"})
        self.commit("first")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))

    def commit(self, message: str, *extra: str) -> str:
        git(self.path, "add", "-A")
        git(self.path, *extra, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")


@dataclass
class FakeRunner:
    """Stands in for the Executor: what each run finds, and every call made."""

    drift: int = 0            # resources a check finds differing
    changed: int = 1          # tasks an apply changes
    fail: bool = False        # the apply's task fails
    busy: bool = False        # the host lock is held by a push run
    calls: list[tuple[str, str, Path, str]] = field(default_factory=list)

    def __call__(self, options: RunOptions) -> Any:
        self.options = options
        return self.run

    def run(self, target: PullTarget, command: str) -> RunResult:
        self.calls.append((command, target.host.name, target.checkout, target.host.connection))
        # what a run reads from the commit: the files are there while it runs
        assert (target.checkout / "inventory.yml").is_file()
        run = RunResult(command, command != "apply")
        host = run.host(target.host.name)
        if self.busy:
            host.error = "busy: apply by ops@laptop since 10:00 (pid 42)\n  hint: wait"
        elif command == "apply":
            if self.fail:
                host.tasks.append(TaskResult("demo", "install thing", FAILED,
                                             error="node1: task 'install thing' failed"))
            else:
                host.tasks += [_changed("apply") for _ in range(self.changed)]
                self.drift = 0   # applied: the host now matches
        else:
            host.tasks += [_changed("check") for _ in range(self.drift)]
            host.tasks.append(TaskResult("demo", "in sync", OK))
        return run

    @property
    def commands(self) -> list[str]:
        return [c[0] for c in self.calls]


def _changed(why: str) -> TaskResult:
    return TaskResult("demo", f"file {why}", CHANGED,
                      [Change("file /etc/motd", "update", "update /etc/motd")])


@dataclass
class Host:
    """pull.yml and the state a host keeps, all under tmp_path."""

    tmp: Path
    origin: Origin
    runner: FakeRunner

    @property
    def config(self) -> Path:
        return self.tmp / "etc" / "pull.yml"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    @property
    def textfile(self) -> Path:
        return self.tmp / "textfile" / "gpuprov_pull.prom"

    def configure(self, **settings: Any) -> None:
        values = {"repo": self.origin.url, "host": "node1", "state_dir": str(self.state),
                  "textfile_dir": str(self.tmp / "textfile"), "splay": 0, **settings}
        self.config.parent.mkdir(exist_ok=True)
        self.config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))

    def pull(self, *args: str) -> Outcome:
        return gpuprov("pull", "--config", str(self.config), "--no-splay", *args)

    def last(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "pull" / "last.json").read_text())
        return data

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(Path(self.last()["report"]).read_text())
        return data

    def checkout_head(self) -> str | None:
        try:
            return git(self.state / "pull" / "repo", "rev-parse", "HEAD")
        except subprocess.CalledProcessError:
            return None


@pytest.fixture()
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    runner = FakeRunner()
    monkeypatch.setattr(cli_pull, "make_runner", runner)
    h = Host(tmp_path, Origin(tmp_path / "origin"), runner)
    h.configure()
    return h


def results(run: RunResult) -> dict[str, HostResult]:
    return run.hosts
