"""`gpuprov pull` with the real Executor and local connector, as test_executor.py
runs them: the commit's role writes one file in tmp_path (become: false), the
run lock and last-apply record are in tmp (conftest.py), the fact plans too.
What only a real run shows: the host lock taken (busy when held), a check
finding the host in sync, drift after tampering."""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
from pathlib import Path

import pytest

from tests.unit.cli_runner import Outcome, gpuprov
from tests.unit.pull_helpers import Origin

ROLE = '''
from gpuprov.ops.files import file

def tasks(ctx):
    yield file(ctx.vars["out"] + "/motd", ctx.vars["motd"] + "\\n",
               owner=ctx.vars["me"], group=ctx.vars["mygroup"])
'''


class Node:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.out = tmp / "out"
        self.out.mkdir()
        self.origin = Origin(tmp / "origin")
        self.motd("hello")
        self.origin.write({"roles/demo/tasks.py": ROLE})
        self.origin.commit("writes motd")
        self.config = tmp / "pull.yml"
        self.config.write_text(f"repo: {self.origin.url}\nhost: node1\nsplay: 0\n"
                               f"state_dir: {tmp / 'state'}\n"
                               f"textfile_dir: {tmp / 'textfile'}\n")

    def motd(self, text: str) -> None:
        self.origin.write({"inventory.yml": f"""\
            all:
              vars:
                become: false
                out: {self.out}
                me: {pwd.getpwuid(os.getuid()).pw_name}
                mygroup: {grp.getgrgid(os.getgid()).gr_name}
              hosts:
                node1:
                  motd: {text}
            """})

    def pull(self) -> Outcome:
        return gpuprov("pull", "--config", str(self.config), "--no-splay")

    def result(self) -> str:
        import json
        return str(json.loads((self.tmp / "state/pull/last.json").read_text())["result"])


@pytest.fixture()
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    monkeypatch.setenv("GPUPROV_CACHE_DIR", str(tmp_path / "cache"))
    return Node(tmp_path)


def test_apply_unchanged_drift_and_a_new_commit(node: Node) -> None:
    assert node.pull().code == 0 and node.result() == "applied"
    assert (node.out / "motd").read_text() == "hello\n"
    assert node.pull().code == 0 and node.result() == "unchanged"
    (node.out / "motd").write_text("tampered\n")
    assert node.pull().code == 0 and node.result() == "applied"
    assert (node.out / "motd").read_text() == "hello\n"
    node.motd("bye")
    node.origin.commit("bye")
    assert node.pull().code == 0 and node.result() == "applied"
    assert (node.out / "motd").read_text() == "bye\n"


def test_a_held_host_lock_is_busy(node: Node) -> None:
    lock = Path(os.environ["GPUPROV_LOCK_PATH"].replace("{host}", "node1"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = node.pull()
    assert result.code == 4, result.both
    assert node.result() == "busy"
    assert not (node.out / "motd").exists()
    assert node.pull().code == 0 and node.result() == "applied"


def test_the_busy_message_names_the_lock(node: Node) -> None:
    import json

    lock = Path(os.environ["GPUPROV_LOCK_PATH"].replace("{host}", "node1"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("command=apply who=ops@laptop since=0 pid=42\n")
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = node.pull()
    last = json.loads((node.tmp / "state/pull/last.json").read_text())
    assert last["message"].startswith("busy: apply by ops@laptop since "), last
    assert "busy: apply by ops@laptop" in result.stdout
