"""Round trips of a run: every play's facts in the first batches (a later play
re-reads only what an earlier change invalidated), the verification play only
after a change (`verify: always|on-change`), and the bundled site.yml's
drift-check in a handful of round trips per host with canned facts."""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import gpuprov.engine.hostfacts as hostfacts
from gpuprov.command import Command
from gpuprov.connectors.base import Become, CommandResult, Connector, Held, Session
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.executor import Executor, RunOptions
from gpuprov.engine.results import CHANGED, SKIPPED, HostResult, RunResult
from gpuprov.errors import PlaybookError
from gpuprov.facts.base import Fact
from gpuprov.facts.system import Arch, InitSystem, KernelRelease, OsRelease, SecureBoot
from gpuprov.model.inventory import Inventory
from gpuprov.model.playbook import load_playbook, load_plays, resolve_roles
from tests.unit.role_harness import system_for

WRITER = '''
from gpuprov.ops.files import file

def tasks(ctx):
    yield file(ctx.vars["out"] + "/shared.conf", ctx.vars["text"] + "\\n",
               owner=ctx.vars["me"], group=ctx.vars["mygroup"])
'''

READER = '''
from gpuprov.ops.files import line

def tasks(ctx):
    # no create=: fails when it sees the file absent, i.e. a fact read before
    # the first play wrote it and never re-read
    yield line(ctx.vars["out"] + "/shared.conf", ctx.vars["text"])
'''

CHECKER = '''
from gpuprov.ops.command import command

def tasks(ctx):
    yield command("echo checked >> " + ctx.vars["out"] + "/verify.log", name="verify")
'''

PLAYBOOK = """\
- name: write
  hosts: all
  roles: [writer]
- name: read
  hosts: all
  roles: [reader]
- name: check
  hosts: all
  verify: on-change
  roles:
    - role: checker
      tags: [verify]
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    import grp
    import os
    import pwd

    (tmp_path / "out").mkdir()
    for name, source in (("writer", WRITER), ("reader", READER), ("checker", CHECKER)):
        role = tmp_path / "roles" / name
        role.mkdir(parents=True)
        (role / "tasks.py").write_text(source)
        (role / "defaults.yml").write_text(textwrap.dedent(f"""\
            # where files go
            out: {tmp_path / 'out'}
            # the shared file's line
            text: a=1
            # owner of the files
            me: {pwd.getpwuid(os.getuid()).pw_name}
            # group of the files
            mygroup: {grp.getgrgid(os.getgid()).gr_name}
            """))
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    (tmp_path / "inventory.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
        "  hosts:\n    h1:\n")
    return tmp_path


def apply(project: Path, host_vars: str = "", **options: Any) -> RunResult:
    if host_vars:
        (project / "inventory.yml").write_text(
            "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
            f"  hosts:\n    h1:\n      {host_vars}\n")
    inventory = Inventory.load(project / "inventory.yml")
    plays = load_playbook(project / "site.yml")
    resolve_roles(plays, [project / "roles"])
    return Executor(inventory, plays, list(inventory.hosts.values()), RunOptions(**options),
                    connector_factory=lambda h, o: LocalConnector(h.name, Become(enabled=False))
                    ).run("apply")


def batches(result: HostResult) -> list[tuple[str, str]]:
    return [(p["play"], p["why"]) for p in result.profile if p["phase"] == "facts"]


def verify_log(project: Path) -> list[str]:
    log = project / "out" / "verify.log"
    return log.read_text().splitlines() if log.exists() else []


def test_later_plays_are_prefetched_and_reread_only_what_a_change_invalidated(
        project: Path) -> None:
    first = apply(project).hosts["h1"]
    # write and verify changed; the read play found its line (it read the file afresh)
    assert first.error is None and first.changed == 2
    # the system facts come with the run lock, once for the whole run; the read
    # play's facts came with the write play's; the write play changed the file,
    # so the read play reads it again
    assert batches(first)[:2] == [("write", "with the run lock"), ("write", "ops")]
    assert [b for b in batches(first) if b[0] == "read"] == [("read", "ops")]
    assert verify_log(project) == ["checked"]

    second = apply(project).hosts["h1"]
    assert second.error is None and second.changed == 0
    assert batches(second) == [("write", "with the run lock"), ("write", "ops")]
    # the host's run lock with the system facts, then the ops' batch: nothing for
    # the read play (no fact plans here: see the next test)
    assert second.round_trips == 2
    # the lock's round trip is its facts' entry
    assert [p["phase"] for p in second.profile if p["phase"] != "plan"] == [
        "connect", "facts", "facts"]
    assert verify_log(project) == ["checked"]  # nothing changed: not verified again
    [skipped] = [t for t in second.tasks if t.status == SKIPPED]
    assert skipped.task == "play skipped: nothing changed on this host (verify: on-change)"


def test_a_host_asks_its_last_runs_facts_with_the_lock_one_round_trip(
        project: Path, tmp_path: Path) -> None:
    plans = tmp_path / "cache"
    first = apply(project, fact_plans=plans).hosts["h1"]
    assert first.error is None and first.changed == 2
    [saved] = (plans / "prefetch").glob("*.json")
    assert saved.stat().st_mode & 0o777 == 0o600
    assert (plans / "prefetch").stat().st_mode & 0o777 == 0o700

    second = apply(project, fact_plans=plans).hosts["h1"]
    assert second.error is None and second.changed == 0
    # every fact of both plays came with the lock: one round trip for the host
    assert batches(second) == [("write", "with the run lock")]
    assert second.round_trips == 1
    # a change is still seen: the guess is only a guess
    (project / "out" / "shared.conf").write_text("a=2\n")
    third = apply(project, fact_plans=plans).hosts["h1"]
    assert third.error is None and third.changed >= 1
    assert (project / "out" / "shared.conf").read_text() == "a=1\n"


@pytest.mark.parametrize("how", ["extra", "host", "tag"])
def test_verify_always_or_asked_by_tag_runs_the_verification_play(project: Path,
                                                                   how: str) -> None:
    apply(project)
    if how == "extra":
        run = apply(project, extra_vars={"verify": "always"})
    elif how == "host":
        run = apply(project, host_vars="verify: always")
    else:
        run = apply(project, tags=frozenset({"verify"}))
    assert run.hosts["h1"].changed == 1  # only the verification command
    assert verify_log(project) == ["checked", "checked"]


def test_a_bad_verify_value_fails_the_host_and_the_playbook_key_is_checked(
        project: Path) -> None:
    apply(project)
    run = apply(project, extra_vars={"verify": "sometimes"})
    assert "-e verify is 'sometimes'; expected always or on-change" in (
        run.hosts["h1"].error or "")
    (project / "site.yml").write_text(PLAYBOOK.replace("on-change", "sometimes"))
    with pytest.raises(PlaybookError, match="verify must be one of always, on-change"):
        load_playbook(project / "site.yml")


# ------------------------------------------------- the bundled site.yml, canned facts

class Canned(Connector):
    """Answers every facts script with empty output (each probe "failed"),
    counting connections and round trips; runs nothing."""

    def __init__(self, name: str) -> None:
        super().__init__(name)

    def connect(self, *, expect_refusal: bool = False) -> None:
        self.stats.connections = 1

    def close(self) -> None:
        pass

    def session(self) -> Session:
        return Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256)

    def run(self, command: Command | str, *, sudo: bool = False,
            stdin: bytes | BinaryIO | None = None, timeout: float | None = None) -> CommandResult:
        self.stats.round_trips += 1
        text = stdin.decode() if isinstance(stdin, bytes) else ""
        return CommandResult(str(command), 0, every_probe_failed(text), "")


def every_probe_failed(script: str) -> str:
    return "".join(f"{m[1]} begin {m[2]}\n\n{m[1]} end {m[2]} 1\n"
                   for m in re.finditer(r"'(@@gpuprov-\w+) begin (\d+)'", script))


class CannedLock(Canned):
    """Canned, and takes the run lock: the lock script's answer, then what the
    facts script fed to it prints, then the end line the lock command names."""

    def hold(self, command: Command, *, sudo: bool = False, stdin: bytes = b"") -> Held:
        end = shlex.split(command.shell())[-1]
        self.stats.round_trips += 1
        return Answer(f"locked\n{every_probe_failed(stdin.decode())}{end} 0\n".encode())


class Answer(Held):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def _receive(self, timeout: float) -> bytes:
        data, self.data = self.data, b""
        return data

    def release(self) -> None:
        pass


def _absent(fact: Fact[Any]) -> Any:
    """What a probe says when it found nothing (a fresh host)."""
    for code in (1, 0):
        try:
            return fact.process("", code)
        except Exception:  # noqa: S112  (a probe that cannot say "nothing": try the next)
            continue
    return None


def canned_debian12(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every facts batch answers as a fresh Debian 12 host would."""
    system = system_for("debian12")
    canned: dict[Fact[Any], Any] = {
        OsRelease(): system.os, KernelRelease(): system.kernel, Arch(): system.arch,
        InitSystem(): system.init, SecureBoot(): system.secure_boot}

    def parse(facts: list[Fact[Any]], out: str, marker: str, timings: Any = None,
              lenient: bool = False) -> dict[Fact[Any], Any]:
        return {f: canned[f] if f in canned else _absent(f) for f in facts}

    monkeypatch.setattr(hostfacts, "parse_batch", parse)


def test_site_yml_drift_check_reads_every_play_in_three_batches(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    canned_debian12(monkeypatch)
    (tmp_path / "inventory.yml").write_text("all:\n  hosts:\n    gpu-01:\n    gpu-02:\n")
    inventory = Inventory.load(tmp_path / "inventory.yml")
    run = Executor(inventory, load_plays(None), list(inventory.hosts.values()),
                   RunOptions(check=True),
                   connector_factory=lambda h, o: Canned(h.name)).run("drift-check")
    for result in run.hosts.values():
        assert result.error is None and result.status == CHANGED  # a fresh host drifts
        # system; every role's first questions (both plays) with the ops' facts known
        # so far; the remaining ops' facts (a real connector adds the run lock's one).
        # Was 12 before: three plays, each with its own batches. The verify play
        # (on-change: this fresh host drifts) reads nothing: check mode skips its op.
        assert (result.connections, result.round_trips) == (1, 3)
        assert batches(result) == [
            ("GPU host", "system"),
            ("GPU host", "sshd_hardening, nouveau, nvidia_driver asked"),
            ("GPU host", "ops")]


def test_site_yml_drift_check_again_is_one_round_trip_with_the_lock(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    canned_debian12(monkeypatch)
    (tmp_path / "inventory.yml").write_text("all:\n  hosts:\n    gpu-01:\n    gpu-02:\n")
    inventory = Inventory.load(tmp_path / "inventory.yml")

    def drift_check() -> RunResult:
        return Executor(inventory, load_plays(None), list(inventory.hosts.values()),
                        RunOptions(check=True, fact_plans=tmp_path / "cache"),
                        connector_factory=lambda h, o: CannedLock(h.name)).run("drift-check")

    for result in drift_check().hosts.values():
        # the lock with the system facts, then the roles' questions, then the ops'; the
        # verify play (on-change: a fresh host drifts) reads nothing: check mode skips
        # its op (a probe of it runs a container), so its other facts are not asked
        assert result.error is None and result.round_trips == 3
    for again in range(2):
        for result in drift_check().hosts.values():
            # the same drift, from one round trip: the last run's facts came with the
            # lock; and again on the run after (a fact a role read from the prefetch,
            # without asking, is still part of the plan it saves: it was dropped, so
            # every other run took two round trips)
            assert result.error is None and result.status == CHANGED
            assert (result.connections, result.round_trips) == (1, 1), again
            assert [why for _, why in batches(result)] == ["with the run lock"]


@pytest.mark.parametrize("handler", ["restart docker", "restart containerd"])
def test_a_daemon_restart_makes_later_plays_read_container_state_afresh(handler: str) -> None:
    from gpuprov.engine.roles import load_role
    from gpuprov.facts.docker import ContainerState
    from tests.unit.role_harness import ROLES

    role = load_role("container_toolkit", ROLES / "container_toolkit")
    [op] = role.handlers[handler](None)  # these handlers read nothing of the context
    assert ContainerState in op.invalidates
