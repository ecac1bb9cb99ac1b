"""HostRun end to end on this machine: real roles, real ops, real shell.

A fake connector runs every command with `sh -c` here (sudo ignored) and
records it, so each test sees exactly which round trips a run costs and what
it wrote. Roles are written into tmp_path and manage files under tmp_path;
the handler state files (pending notifications, reboot marker) are
redirected there too, and every test checks that no command touched the
real /var/lib/gpuprov or /run/gpuprov.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import CommandResult, Connector, Session
from gpuprov.engine import handlers
from gpuprov.engine.hostrun import HostRun, RoleRun
from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED, UNREACHABLE, HostResult
from gpuprov.engine.roles import Role, load_role
from gpuprov.errors import UnreachableHost
from gpuprov.facts.system import OsRelease
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars

HOST = "node1"
FACTS = "sh -s"  # how the engine runs a facts batch
REAL_STATE_PATHS = ("/var/lib/gpuprov", "/run/gpuprov")


# ---------------------------------------------------------------- the fake connector

@dataclass
class Call:
    command: str            # the shell text, as run
    stdin: bytes
    pending: str | None     # the pending-handlers file when the command started


class ShConnector(Connector):
    """Runs each command locally with `sh -c`, ignoring sudo, and records it.

    drop_at=N makes the N-th call fail like a dropped SSH connection.
    """

    def __init__(self, drop_at: int | None = None, refuse_new: bool = False) -> None:
        super().__init__(HOST)
        self.calls: list[Call] = []
        self.drop_at = drop_at
        self.refuse_new = refuse_new
        self.new_connections = 0
        #: expect_refusal of each connect(): a refusal is retried only where expected
        self.connects: list[bool] = []

    def run_on_new_connection(self, command: Command | str, *,
                              sudo: bool = False) -> CommandResult:
        self.new_connections += 1
        if self.refuse_new:
            raise UnreachableHost(HOST, "auth", "rejected every key for user 'admin'")
        return self.run(command, sudo=sudo)

    def connect(self, *, expect_refusal: bool = False) -> None:
        self.stats.connections += 1
        self.connects.append(expect_refusal)

    def close(self) -> None:
        pass

    def session(self) -> Session:
        return Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256)

    def run(self, command: Command | str, *, sudo: bool = False,
            stdin: bytes | BinaryIO | None = None, timeout: float | None = None) -> CommandResult:
        shell = command.shell() if isinstance(command, Command) else command
        display = command.display() if isinstance(command, Command) else command
        data = stdin if isinstance(stdin, bytes) else (stdin.read() if stdin else b"")
        pending = Path(handlers.PENDING_FILE)  # read at call time, like the engine does
        self.stats.round_trips += 1
        self.calls.append(Call(shell, data, pending.read_text() if pending.exists() else None))
        if self.drop_at == len(self.calls):
            raise UnreachableHost(HOST, "closed", "connection lost")
        proc = subprocess.run(["sh", "-c", shell], input=data, capture_output=True,
                              timeout=60, check=False)
        return CommandResult(display, proc.returncode, proc.stdout.decode(errors="replace"),
                             proc.stderr.decode(errors="replace"))

    @property
    def gathers(self) -> list[Call]:
        return [c for c in self.calls if c.command == FACTS]

    @property
    def steps(self) -> list[str]:
        return [c.command for c in self.calls if c.command != FACTS]

    def index(self, *fragments: str) -> int:
        """Position of the only call whose command contains every fragment."""
        found = [i for i, c in enumerate(self.calls) if all(f in c.command for f in fragments)]
        assert len(found) == 1, (fragments, [c.command for c in self.calls])
        return found[0]


class UnreachableConnector(ShConnector):
    def connect(self, *, expect_refusal: bool = False) -> None:
        raise UnreachableHost(HOST, "refused", "connection refused by 10.0.0.7:22")


# ---------------------------------------------------------------- roles on disk

APP = '''\
"""Test role: a config directory and two files that notify one handler."""
from gpuprov.ops.command import command
from gpuprov.ops.files import directory, file


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield directory(f"{base}/conf.d", mode="0755", **own)
    yield file(f"{base}/conf.d/a.conf", "a=1\\n", notify="restart app", **own)
    yield file(f"{base}/conf.d/b.conf", "b=2\\n", mode="0600", notify="restart app", **own)
    if ctx.vars["fail"]:
        yield command("echo 'disk full' >&2; exit 3", name="break")


def restart(ctx):
    log = f"{ctx.vars['base']}/restarts.log"
    script = "exit 1" if ctx.vars["restart_fails"] else f"echo restarted >> {log}"
    return [command(script, name="restart app")]


HANDLERS = {"restart app": restart}
'''

STEPS = '''\
"""Test role: the middle task fails with a long stderr."""
from gpuprov.ops.command import command
from gpuprov.ops.files import file


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield file(f"{base}/before.txt", "1\\n", **own)
    yield command("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo stderr-line-$i >&2; done; "
                  "exit 3", name="migrate db")
    yield file(f"{base}/after.txt", "2\\n", **own)
'''

REREAD = '''\
"""Test role: later ops read a file that earlier ops change."""
from gpuprov.ops.command import command
from gpuprov.ops.files import file, line


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    path = f"{base}/settings"
    yield file(path, "x=1\\n", **own)
    yield line(path, "x=1")                 # no create=: fails if it sees the file absent
    yield command(f"echo y=2 >> {path}", name="append y")   # invalidates every fact
    yield line(path, "y=2")
'''

DISCOVER = '''\
"""Test role: asks for runtime facts with ctx.fact() / ctx.facts()."""
from gpuprov.facts.system import CommandPath, PathExists
from gpuprov.ops.files import file

PASSES = []


def tasks(ctx):
    PASSES.append(ctx.role)
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    gpu = ctx.fact(PathExists(f"{base}/gpu-present"))
    sh, missing = ctx.facts(CommandPath("sh"), CommandPath("no-such-tool-gpuprov"))
    yield file(f"{base}/gpu.conf", f"gpu={gpu}\\nsh={sh}\\nmissing={missing}\\n", **own)
'''

GREEDY = '''\
"""Test role: asks for one more fact on every pass, forever."""
from gpuprov.facts.system import PathExists

PASSES = []


def tasks(ctx):
    PASSES.append(1)
    ctx.fact(PathExists(f"/nonexistent/gpuprov-{len(PASSES)}"))
    return []
'''

BROKEN = '''\
"""Test role: tasks() has a bug half way."""
from gpuprov.ops.files import file


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield file(f"{base}/broken-first.txt", "x\\n", **own)
    gpus = {"count": 2}
    yield file(f"{base}/model.txt", gpus["model"], **own)  # BUG
'''

PROBE = '''\
"""Test role: an op whose fact output cannot be parsed."""
from dataclasses import dataclass

from gpuprov.facts.base import Fact
from gpuprov.ops.base import Op
from gpuprov.ops.files import file


@dataclass(frozen=True)
class GpuTemperature(Fact[int]):
    def command(self):
        return "echo 'n/a (no GPU)'"

    def process(self, output, exit_code):
        return int(output)


class TemperatureBelow(Op):
    def __init__(self, limit):
        self.limit = limit
        self.label = f"gpu temperature below {limit}"

    def facts(self):
        return [GpuTemperature()]

    def plan(self, facts):
        assert facts[GpuTemperature()] < self.limit
        return []


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield file(f"{base}/probe-first.txt", "x\\n", **own)
    if ctx.vars["ask_in_tasks"]:
        ctx.fact(GpuTemperature())
    yield TemperatureBelow(80)
    yield file(f"{base}/probe-after.txt", "y\\n", **own)
'''

KERNEL = '''\
"""Test role: a change that needs a reboot to take effect."""
from gpuprov.command import Command
from gpuprov.facts.system import PathExists
from gpuprov.ops.base import Change, Op, Step


class KernelParam(Op):
    label = "kernel parameter nouveau.modeset=0"

    def __init__(self, flag):
        self.flag = flag

    def facts(self):
        return [PathExists(self.flag)]

    def plan(self, facts):
        if facts[PathExists(self.flag)]:
            return []
        return [Change(f"kernel cmdline {self.flag}", "set", "add nouveau.modeset=0",
                       steps=[Step(Command("touch", self.flag))],
                       invalidates=(PathExists,), reboot_required=True)]


def tasks(ctx):
    yield KernelParam(f"{ctx.vars['base']}/cmdline-set")
'''

TRANSACTION = '''\
"""Test role: one change of three steps (the last over a NEW connection) with a rollback."""
from gpuprov.command import Command
from gpuprov.ops.base import Change, Op, Step


class Tx(Op):
    label = "transaction"

    def __init__(self, log, fail):
        self.log, self.fail = log, fail

    def facts(self):
        return []

    def plan(self, facts):
        def say(word, code=0):
            return Step(Command.script(f"echo {word} >> {self.log}; exit {code}"))
        return [Change("tx", "update", "three steps",
                       steps=[say("one"), say("two", 4 if self.fail else 0),
                              Step(Command.script(f"echo confirm >> {self.log}"),
                                   new_connection=True)],
                       rollback=[say("rollback")])]


def tasks(ctx):
    yield Tx(f"{ctx.vars['base']}.log", ctx.vars["fail"])
'''

NOOP_COMMAND = '''\
"""Test role: one unguarded command (always changed, invalidates every fact)."""
from gpuprov.ops.command import command


def tasks(ctx):
    yield command("true", name="refresh caches")
'''


BLOCKED = '''\
"""Test role: between two files, a change that cannot be done (its key is out of reach)."""
from gpuprov.command import Command
from gpuprov.ops.base import Change, Op, Step, operation
from gpuprov.ops.files import file


@operation
class Keyed(Op):
    flag: str

    def __post_init__(self):
        super().__post_init__()
        self.label = "keyed thing"

    def facts(self):
        return []

    def plan(self, facts):
        return [Change("keyed thing", "create", "write the keyed thing",
                       steps=[Step(Command("touch", self.flag))], notify=self.notify,
                       blocked="cannot fetch the key from https://keys.example/k.asc",
                       invalidates=())]


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield file(f"{base}/before.txt", "1\\n", **own)
    yield Keyed(f"{base}/keyed", notify="restart app")
    yield file(f"{base}/after.txt", "2\\n", **own)


HANDLERS = {"restart app": lambda ctx: []}
'''

@dataclass
class Env:
    root: Path      # tmp_path
    target: Path    # what the roles manage ("base")
    state: Path     # stands in for /var/lib/gpuprov and /run/gpuprov
    connectors: list[ShConnector]

    @property
    def pending(self) -> Path:
        return Path(handlers.PENDING_FILE)

    @property
    def reboot_marker(self) -> Path:
        return Path(handlers.REBOOT_REQUIRED_FILE)

    def role(self, name: str, source: str, modules: dict[str, str] | None = None) -> Role:
        """roles/<name> with `source` as tasks.py and the role's own `modules`
        (file name -> source) beside it."""
        path = self.root / "roles" / name
        path.mkdir(parents=True)
        for file_name, text in (modules or {}).items():
            (path / file_name).write_text(text)
        owner = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        (path / "defaults.yml").write_text(
            "# the directory the role manages\n"
            f"base: {json.dumps(str(self.target))}\n"
            "# owner and group of every managed file\n"
            f"owner: {json.dumps(owner)}\n"
            f"group: {json.dumps(group)}\n"
            "# add a failing last task\n"
            "fail: false\n"
            "# make the handler fail\n"
            "restart_fails: false\n"
            "# ask for the unparsable fact in tasks() itself\n"
            "ask_in_tasks: false\n")
        (path / "tasks.py").write_text(source)
        return load_role(name, path)

    def connector(self, cls: type[ShConnector] = ShConnector, **kw: int) -> ShConnector:
        conn = cls(**kw)
        self.connectors.append(conn)
        return conn

    def run(self, roles: list[Role], conn: ShConnector | None = None, *, check: bool = False,
            **role_vars: object) -> tuple[HostResult, ShConnector]:
        conn = conn if conn is not None else self.connector()
        host = Host(HOST)
        runs = [RoleRun(r, build_host_vars(host, role_defaults=r.defaults, role_vars=role_vars,
                                           role=r.name)) for r in roles]
        return HostRun(host, conn, runs, check).run(), conn


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    state = tmp_path / "state"
    monkeypatch.setattr(handlers, "STATE_DIR", str(state / "lib"))
    monkeypatch.setattr(handlers, "PENDING_FILE", str(state / "lib" / "pending-handlers"))
    monkeypatch.setattr(handlers, "REBOOT_REQUIRED_FILE", str(state / "run" / "reboot-required"))
    target = tmp_path / "target"
    target.mkdir()
    the_env = Env(tmp_path, target, state, [])
    yield the_env
    touched = [c.command for conn in the_env.connectors for c in conn.calls
               if any(p in c.command or p.encode() in c.stdin for p in REAL_STATE_PATHS)]
    assert not touched, f"commands touched the real gpuprov state: {touched}"


def listing(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root with its mode and (for files) content."""
    return {str(p.relative_to(root)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if "roles" not in p.relative_to(root).parts}


def statuses(result: HostResult) -> list[tuple[str, str]]:
    return [(t.task, t.status) for t in result.tasks]


def changes_json(result: HostResult) -> list[tuple[str, str, str, list[dict[str, object]]]]:
    return [(t.role, t.task, t.status, [c.to_json() for c in t.changes]) for t in result.tasks]


def no_reboot_required_by_the_system() -> bool:
    # RebootRequired also reads Debian's own marker of the machine running the tests
    return not Path("/var/run/reboot-required").exists()


# ---------------------------------------------------------------- apply, idempotence, round trips

def test_first_apply_converges_and_second_apply_changes_nothing(env: Env) -> None:
    app = env.role("app", APP)
    conf = env.target / "conf.d"

    first, conn = env.run([app])

    assert first.error is None and first.unreachable is None
    assert statuses(first) == [
        (f"directory {conf}", CHANGED),
        (f"file {conf}/a.conf", CHANGED),
        (f"file {conf}/b.conf", CHANGED),
        ("handler restart app: command restart app", CHANGED),
    ]
    assert first.changed == 4 and first.status == CHANGED
    assert (conf / "a.conf").read_text() == "a=1\n"
    assert (conf / "b.conf").read_text() == "b=2\n"
    assert oct((conf / "b.conf").stat().st_mode & 0o7777) == "0o600"
    assert oct(conf.stat().st_mode & 0o7777) == "0o755"
    # no temp file of the atomic write is left behind
    assert sorted(p.name for p in conf.iterdir()) == ["a.conf", "b.conf"]

    # Round trips: ONE batch for system + handler-state facts, ONE for every
    # op's facts, then only the steps (mkdir, persist, 2 writes, handler, clear).
    assert [c.command == FACTS for c in conn.calls] == [True, True] + [False] * 6
    assert first.round_trips == conn.stats.round_trips == 8
    system, ops = (c.stdin.decode() for c in conn.gathers)
    assert "os-release" in system and handlers.PENDING_FILE in system
    assert handlers.REBOOT_REQUIRED_FILE in system
    for path in (conf, conf / "a.conf", conf / "b.conf"):
        assert f"p='{path}'" in ops or f"p={path};" in ops
    assert "os-release" not in ops  # already known: not asked twice

    second, conn2 = env.run([app])

    assert second.error is None
    assert second.changed == 0 and second.status == OK
    assert [t.status for t in second.tasks] == [OK, OK, OK]  # no handler: nothing notified
    assert conn2.steps == []
    assert second.round_trips == 2 and len(conn2.gathers) == 2
    assert (env.target / "restarts.log").read_text() == "restarted\n"


def test_drift_is_repaired_and_only_the_drifted_file_changes(env: Env) -> None:
    app = env.role("app", APP)
    env.run([app])
    (env.target / "conf.d" / "a.conf").write_text("a=tampered\n")

    result, conn = env.run([app])

    assert [t.status for t in result.tasks] == [OK, CHANGED, OK, CHANGED]
    [change] = result.tasks[1].changes
    assert change.action == "update" and "-a=tampered\n+a=1\n" in change.diff.unified()
    assert (env.target / "conf.d" / "a.conf").read_text() == "a=1\n"
    assert (env.target / "restarts.log").read_text() == "restarted\nrestarted\n"
    assert len(conn.gathers) == 2


# ---------------------------------------------------------------- check mode

def _drift(target: Path) -> None:
    conf = target / "conf.d"
    conf.mkdir()
    conf.chmod(0o755)
    (conf / "a.conf").write_text("a=0\n")
    (conf / "a.conf").chmod(0o640)
    (conf / "b.conf").write_text("b=2\n")
    (conf / "b.conf").chmod(0o600)


@pytest.mark.parametrize("start", ["fresh", "drifted"])
def test_check_mode_plans_what_apply_does_and_writes_nothing(env: Env, start: str) -> None:
    app = env.role("app", APP)
    if start == "drifted":
        _drift(env.target)
    before = listing(env.root)

    checked, conn = env.run([app], check=True)

    assert checked.error is None
    assert listing(env.root) == before
    assert conn.steps == []  # only facts were read
    assert len(conn.gathers) == 2
    assert checked.changed > 0

    applied, _ = env.run([app])

    assert changes_json(checked) == changes_json(applied)
    if start == "drifted":
        assert [t.status for t in checked.tasks] == [OK, CHANGED, OK, CHANGED]
        assert checked.tasks[1].changes[0].summary == "update content; mode 0640 -> 0644"
    # and check mode on the converged host reports nothing
    after = listing(env.root)
    converged, conn = env.run([app], check=True)
    assert converged.changed == 0 and conn.steps == [] and listing(env.root) == after


def test_check_mode_keeps_pending_handlers_pending(env: Env) -> None:
    app = env.role("app", APP)
    env.run([app], fail=True)
    assert env.pending.read_text() == "app:restart app\n"

    checked, conn = env.run([app], check=True)

    assert statuses(checked)[-1] == ("handler restart app: command restart app", CHANGED)
    assert conn.steps == []
    assert env.pending.read_text() == "app:restart app\n"
    assert not (env.target / "restarts.log").exists()


@pytest.mark.xfail(strict=True, reason="check mode does not know that an earlier planned "
                   "change alters a later op's facts; it should say 'unknown, depends on ...' "
                   "instead of failing the host (design.md, Task model)")
def test_check_mode_does_not_fail_an_op_that_depends_on_an_earlier_change(env: Env) -> None:
    reread = env.role("reread", REREAD)

    checked, _ = env.run([reread], check=True)

    assert not checked.failed


# ---------------------------------------------------------------- changes that cannot be done

def test_a_blocked_change_fails_its_task_in_apply_before_any_step(env: Env) -> None:
    result, conn = env.run([env.role("blocked", BLOCKED)])

    assert statuses(result) == [(f"file {env.target}/before.txt", CHANGED),
                                ("keyed thing", FAILED)]
    error = result.tasks[1].error or ""
    assert error.startswith(f"{HOST}: task 'keyed thing' failed")
    assert "reason: cannot fetch the key from https://keys.example/k.asc" in error
    assert not [s for s in conn.steps if "keyed" in s], "no step of the blocked change ran"
    assert not env.pending.exists(), "its notification was not persisted"
    assert sorted(p.name for p in env.target.iterdir()) == ["before.txt"]


def test_a_blocked_change_is_unknown_in_check_mode(env: Env) -> None:
    result, conn = env.run([env.role("blocked", BLOCKED)], check=True)

    assert not result.failed
    assert [status for _, status in statuses(result)] == [CHANGED, CHANGED, CHANGED]
    [change] = result.tasks[1].changes
    assert change.unknown == ("cannot fetch the key from https://keys.example/k.asc; "
                              "apply would stop here")
    assert change.to_json()["unknown"] == change.unknown
    assert conn.steps == [] and list(env.target.iterdir()) == []


# ---------------------------------------------------------------- discovery: ctx.fact()

def test_ctx_fact_gathers_missing_facts_and_reruns_tasks(env: Env) -> None:
    discover = env.role("discover", DISCOVER)
    passes: list[str] = discover.tasks.__globals__["PASSES"]
    (env.target / "gpu-present").touch()

    result, conn = env.run([discover])

    assert result.error is None
    assert passes == ["discover"] * 3  # NeedFacts twice, then complete
    text = (env.target / "gpu.conf").read_text().splitlines()
    assert text[0] == "gpu=True"
    assert text[1].startswith("sh=/") and text[1].endswith("/sh")
    assert text[2] == "missing=None"
    # system batch, PathExists, BOTH CommandPaths in one batch, the op's facts
    scripts = [c.stdin.decode() for c in conn.gathers]
    assert len(scripts) == 4
    assert "gpu-present" in scripts[1] and "command -v" not in scripts[1]
    assert "command -v sh" in scripts[2] and "command -v no-such-tool-gpuprov" in scripts[2]
    assert "gpu.conf" in scripts[3]
    # nothing is asked twice
    assert sum("gpu-present" in s for s in scripts) == 1
    assert sum("command -v sh" in s for s in scripts) == 1

    passes.clear()
    (env.target / "gpu-present").unlink()
    result, _ = env.run([discover], check=True)
    assert passes == ["discover"] * 3  # discovery works the same in check mode
    [change] = result.tasks[0].changes
    assert "-gpu=True\n+gpu=False\n" in change.diff.unified()


def test_a_role_that_keeps_asking_for_facts_stops_with_an_error(env: Env) -> None:
    greedy = env.role("greedy", GREEDY)

    result, conn = env.run([greedy])

    assert result.error is not None
    assert "role greedy keeps asking for new facts" in result.error
    assert result.error.startswith(f"{HOST}: ")
    assert conn.steps == []


# ---------------------------------------------------------------- handlers

def test_handler_runs_once_at_the_end_and_its_notification_is_persisted_first(env: Env) -> None:
    app = env.role("app", APP)
    pending_line = "app:restart app\n"

    result, conn = env.run([app])

    # notified by a.conf and b.conf: persisted once, run once, after every task
    assert [t.handler for t in result.tasks] == [False, False, False, True]
    assert not result.tasks[-1].pending  # notified by this run, not left by an earlier one
    assert (env.target / "restarts.log").read_text() == "restarted\n"
    persist = conn.index("pending-handlers", "cat >>")
    write_a = conn.index("a.conf", "mktemp")
    write_b = conn.index("b.conf", "mktemp")
    handler = conn.index("restarts.log")
    clear = conn.index("grep -vxF")
    assert persist < write_a < write_b < handler < clear
    assert conn.calls[persist].stdin == pending_line.encode()
    assert conn.calls[persist].pending is None
    assert conn.calls[write_a].pending == pending_line  # on disk before the change runs
    assert conn.calls[handler].pending == pending_line
    assert not env.pending.exists()  # cleared after the handler ran

    again, conn = env.run([app])
    assert not any(t.handler for t in again.tasks)
    assert (env.target / "restarts.log").read_text() == "restarted\n"


def test_pending_handler_survives_a_failed_run_and_runs_next_time(env: Env) -> None:
    app = env.role("app", APP)

    failed, _ = env.run([app], fail=True)

    assert [t.status for t in failed.tasks] == [CHANGED, CHANGED, CHANGED, FAILED]
    assert failed.status == FAILED
    assert not any(t.handler for t in failed.tasks)
    assert not (env.target / "restarts.log").exists()
    assert env.pending.read_text() == "app:restart app\n"

    recovered, conn = env.run([app])

    assert [t.status for t in recovered.tasks if not t.handler] == [OK, OK, OK]
    assert [(t.task, t.status, t.pending) for t in recovered.tasks if t.handler] == [
        ("handler restart app: command restart app", CHANGED, True)]
    assert (env.target / "restarts.log").read_text() == "restarted\n"
    assert not env.pending.exists()
    assert len(conn.gathers) == 2 and len(conn.steps) == 2  # the handler, the clear

    converged, conn = env.run([app])
    assert converged.changed == 0 and conn.steps == []


def test_failed_handler_stays_pending(env: Env) -> None:
    app = env.role("app", APP)

    result, _ = env.run([app], restart_fails=True)

    assert result.tasks[-1].handler and result.tasks[-1].status == FAILED
    assert "handler restart app" in result.tasks[-1].task
    assert env.pending.read_text() == "app:restart app\n"

    result, _ = env.run([app])
    assert result.tasks[-1].handler and result.tasks[-1].status == CHANGED
    assert not env.pending.exists()


# ---------------------------------------------------------------- a failing step

def test_failing_step_names_host_task_command_exit_code_and_stderr_tail(env: Env) -> None:
    steps = env.role("steps", STEPS)
    app = env.role("app", APP)

    result, conn = env.run([steps, app])

    assert statuses(result) == [
        (f"file {env.target}/before.txt", CHANGED),
        ("command migrate db", FAILED),
    ]  # stops: after.txt and the whole second role are not even attempted
    assert result.status == FAILED and result.failed
    error = result.tasks[1].error
    assert error is not None
    assert error.startswith(f"{HOST}: task 'command migrate db' failed")
    assert "command: for i in 1 2 3" in error and "exit 3" in error
    assert "exit code: 3" in error
    assert "stderr-line-12" in error and "stderr-line-5" in error
    assert "stderr-line-4\n" not in error  # only the tail
    assert (env.target / "before.txt").exists()
    assert not (env.target / "after.txt").exists()
    assert not (env.target / "conf.d").exists()
    assert conn.steps[-1].startswith("for i in")


EXPLAINED = '''\
"""Test role: a step that fails, explains its failure and reads a diagnosis first."""
from dataclasses import dataclass

from gpuprov.command import Command
from gpuprov.facts.base import Fact
from gpuprov.ops.base import Change, Explained, Op, Step


@dataclass(frozen=True)
class Holder(Fact[str]):
    broken: bool = False

    def command(self):
        fail = "; exit 1" if self.broken else ""
        return Command.script("echo 'pid 42 (apt-get install foo)'" + fail)

    def process(self, output, exit_code):
        if exit_code:
            raise ValueError("unreadable")
        return output.strip()


def explain(failure):
    if "locked" not in failure.stderr:
        return None
    return Explained(f"held by {failure.diagnosis or 'someone'} (exit {failure.exit_code})",
                     "wait for it")


class Locked(Op):
    label = "locked thing"

    def __init__(self, broken, text):
        self.broken, self.text = broken, text

    def facts(self):
        return []

    def plan(self, facts):
        return [Change("locked thing", "update", "take the lock",
                       steps=[Step(Command.script(f"echo {self.text} >&2; exit 100"),
                                   explain=explain, diagnose=Holder(self.broken))])]


def tasks(ctx):
    yield Locked(ctx.vars.get("broken", False), ctx.vars.get("text", "locked"))
'''


def test_a_failing_step_is_explained_with_its_diagnosis(env: Env) -> None:
    result, conn = env.run([env.role("explained", EXPLAINED)])
    error = result.tasks[0].error
    assert error is not None
    assert "reason: held by pid 42 (apt-get install foo) (exit 100)" in error
    assert error.rstrip().endswith("hint: wait for it")
    assert "exit code: 100" in error and "locked" in error   # the raw failure is still shown
    assert conn.steps[-1] == "echo 'pid 42 (apt-get install foo)'"   # read after the failure


def test_an_unreadable_diagnosis_still_explains(env: Env) -> None:
    result, _ = env.run([env.role("explained", EXPLAINED)], broken=True)
    error = result.tasks[0].error
    assert error is not None and "reason: held by someone (exit 100)" in error


def test_a_failure_explain_does_not_know_has_no_reason(env: Env) -> None:
    result, _ = env.run([env.role("explained", EXPLAINED)], text="other")
    error = result.tasks[0].error
    assert error is not None and "reason:" not in error and "hint:" not in error
    assert "exit code: 100" in error


# ---------------------------------------------------------------- probes that run things

WORKLOAD = '''\
"""Test role: an op that reads one fact and runs a probe that starts something."""
from dataclasses import dataclass
from typing import ClassVar

from gpuprov.command import Command
from gpuprov.facts.base import Fact
from gpuprov.facts.system import PathExists
from gpuprov.ops.base import Op


@dataclass(frozen=True)
class StartsThing(Fact[str]):
    marker: str
    runs: ClassVar[str] = "starts a thing"

    def command(self):
        return Command("touch", self.marker)

    def process(self, output, exit_code):
        return "started"


class NeedsThing(Op):
    label = "thing works"

    def __init__(self, marker):
        self.marker = marker

    def facts(self):
        return [PathExists(self.marker), StartsThing(self.marker)]

    def plan(self, facts):
        assert facts[StartsThing(self.marker)] == "started"
        return []


def tasks(ctx):
    yield NeedsThing(f"{ctx.vars['base']}/started")
'''


@pytest.mark.parametrize("check", [True, False])
def test_a_probe_that_runs_something_is_never_run_in_check_mode(env: Env, check: bool) -> None:
    role = env.role("workload", WORKLOAD)

    result, conn = env.run([role], check=check)

    [task] = result.tasks
    started = env.target / "started"
    if check:
        assert task.status == SKIPPED
        assert task.task == "thing works (not run in check mode: it starts a thing)"
        assert not started.exists()
        assert all("touch" not in c.stdin.decode() for c in conn.gathers)
    else:
        assert task.status == OK and started.exists()


# ---------------------------------------------------------------- invalidation

def test_a_later_op_sees_what_an_earlier_change_wrote(env: Env) -> None:
    reread = env.role("reread", REREAD)
    settings = env.target / "settings"

    result, conn = env.run([reread])

    assert result.error is None, result.error
    assert statuses(result) == [
        (f"file {settings}", CHANGED),
        (f"line in {settings}", OK),       # re-read after the write: x=1 is there
        ("command append y", CHANGED),
        (f"line in {settings}", OK),       # re-read after the command: y=2 is there
    ]
    assert settings.read_text() == "x=1\ny=2\n"
    # exactly one re-read after each change, each right before the op needs it
    kinds = ["facts" if c.command == FACTS else c.command.split()[0] for c in conn.calls]
    # a file write starts with its directory check ({ gp_u=...), see ops/atomic.py
    assert kinds == ["facts", "facts", "{", "facts", "echo", "facts"]
    assert str(settings) in conn.gathers[2].stdin.decode()
    # the invalidate-all command also dropped the system facts; the run does
    # not need them again, so it does not re-read them
    assert "os-release" not in conn.gathers[3].stdin.decode()


# ---------------------------------------------------------------- reboot marker

def test_reboot_required_change_is_recorded_on_the_host(env: Env) -> None:
    kernel = env.role("kernel", KERNEL)

    result, _ = env.run([kernel])

    assert result.changed == 1 and result.reboot_pending
    assert env.reboot_marker.read_text() == "add nouveau.modeset=0\n"

    result, conn = env.run([kernel])  # converged, but the reboot has not happened
    assert result.changed == 0 and result.reboot_pending and conn.steps == []

    if no_reboot_required_by_the_system():
        env.reboot_marker.unlink()   # what a reboot does to /run
        result, _ = env.run([kernel])
        assert not result.reboot_pending


def test_pending_reboot_is_reported_even_after_a_command_invalidated_every_fact(
        env: Env) -> None:
    noop = env.role("noop", NOOP_COMMAND)
    env.reboot_marker.parent.mkdir(parents=True)
    env.reboot_marker.write_text("kernel 6.8 installed\n")

    result, _ = env.run([noop])

    assert result.changed == 1
    assert result.reboot_pending


# ---------------------------------------------------------------- errors never escape run()

def test_unparsable_op_fact_fails_that_task_with_a_clear_error(env: Env) -> None:
    probe = env.role("probe", PROBE)

    result, conn = env.run([probe])

    assert statuses(result) == [
        (f"file {env.target}/probe-first.txt", CHANGED),
        ("gpu temperature below 80", FAILED),
    ]
    task = result.tasks[1]
    assert task.role == "probe"
    assert task.error is not None and task.error.startswith(f"{HOST}: ")
    assert "GpuTemperature()" in task.error and "invalid literal for int()" in task.error
    assert not (env.target / "probe-after.txt").exists()
    assert result.status == FAILED


def test_unparsable_fact_asked_in_tasks_names_the_role(env: Env) -> None:
    probe = env.role("probe", PROBE)

    result, conn = env.run([probe], ask_in_tasks=True)

    assert result.tasks == []
    assert result.error is not None
    assert result.error.startswith(f"{HOST}: role probe: ")
    assert "GpuTemperature()" in result.error and "invalid literal for int()" in result.error
    assert conn.steps == []


def test_unparsable_system_fact_is_a_host_error(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    app = env.role("app", APP)
    monkeypatch.setattr(OsRelease, "command", lambda self: Command.script("true"))

    result, conn = env.run([app])

    assert result.error is not None and result.error.startswith(f"{HOST}: ")
    assert "os-release" in result.error
    assert result.tasks == [] and conn.steps == []


@pytest.mark.parametrize("check", [False, True])
def test_exception_in_tasks_is_a_host_error_naming_role_and_line(env: Env, check: bool) -> None:
    app = env.role("app", APP)
    broken = env.role("broken", BROKEN)
    line = next(i for i, text in enumerate(BROKEN.splitlines(), 1) if "# BUG" in text)
    before = listing(env.root)

    result, conn = env.run([app, broken], check=check)

    assert result.error is not None
    assert result.error.startswith(f"{HOST}: role broken: ")
    assert "KeyError: 'model'" in result.error
    assert f"tasks.py:{line}" in result.error
    assert result.status == FAILED
    # every role plans before anything changes: the host is untouched
    assert result.tasks == [] and conn.steps == []
    assert listing(env.root) == before


BROKEN_HELPER = '''\
"""Test role: the bug is in a module of the role, imported relatively."""
from .model import model_file


def tasks(ctx):
    yield model_file(ctx)
'''

MODEL = '''\
from gpuprov.ops.files import file


def model_file(ctx):
    gpus = {"count": 2}
    return file(f"{ctx.vars['base']}/model.txt", gpus["model"])  # BUG
'''


def test_exception_in_a_module_of_the_role_names_that_file_and_line(env: Env) -> None:
    broken = env.role("broken", BROKEN_HELPER, {"model.py": MODEL})
    line = next(i for i, text in enumerate(MODEL.splitlines(), 1) if "# BUG" in text)

    result, conn = env.run([broken])

    assert result.error is not None
    assert result.error.startswith(f"{HOST}: role broken: model.py:{line}: KeyError: 'model'")
    assert result.tasks == [] and conn.steps == []


# ---------------------------------------------------------------- unreachable

def test_unreachable_host(env: Env) -> None:
    app = env.role("app", APP)
    conn = env.connector(UnreachableConnector)

    result, _ = env.run([app], conn)

    assert result.unreachable is not None
    assert "unreachable (refused)" in result.unreachable and HOST in result.unreachable
    assert result.status == UNREACHABLE and result.error is None
    assert result.tasks == [] and conn.calls == []


@pytest.mark.parametrize("drop_at", range(1, 7))
def test_connection_lost_mid_run_is_unreachable_not_a_task_failure(env: Env,
                                                                   drop_at: int) -> None:
    # REREAD makes 6 calls: 2 batches, a write, a re-read, a command, a re-read
    reread = env.role("reread", REREAD)
    conn = env.connector(drop_at=drop_at)

    result, _ = env.run([reread], conn)

    assert len(conn.calls) == drop_at
    assert result.unreachable == f"{HOST}: unreachable (closed): connection lost"
    assert result.status == UNREACHABLE
    assert result.error is None
    assert not any(t.status == FAILED for t in result.tasks)


# ---------------------------------------------------------------- the fake itself

def test_fake_connector_runs_sh_and_reports_failures(env: Env) -> None:
    c = env.connector()
    res = c.run("echo out; echo err >&2; exit 4", sudo=True)
    assert (res.exit_code, res.stdout, res.stderr) == (4, "out\n", "err\n")
    assert c.run(Command("cat"), stdin=b"data").stdout == "data"
    assert c.stats.round_trips == 2


def test_notifying_a_handler_the_role_does_not_define_fails_before_persisting(env: Env) -> None:
    first_notify = 'a.conf", "a=1\\n", notify="restart app"'
    assert first_notify in APP
    typo = env.role("typo", APP.replace(first_notify, first_notify.replace("restart", "restrat")))
    result, conn = env.run([typo])
    failed = [t for t in result.tasks if t.status == FAILED]
    assert len(failed) == 1 and "'restrat app'" in (failed[0].error or "")
    assert "does not define" in (failed[0].error or "")
    assert not env.pending.exists()
    assert not (env.target / "conf.d" / "a.conf").exists()


# ---------------------------------------------------------------- transactions

def _log(env: Env) -> list[str]:
    path = Path(f"{env.target}.log")
    return path.read_text().split() if path.exists() else []


def test_a_change_runs_its_new_connection_step_on_a_new_connection(env: Env) -> None:
    result, conn = env.run([env.role("tx", TRANSACTION)])
    assert statuses(result) == [("transaction", CHANGED)]
    assert _log(env) == ["one", "two", "confirm"]
    assert conn.new_connections == 1


def test_a_failed_step_runs_the_rollback_and_says_so(env: Env) -> None:
    result, conn = env.run([env.role("tx", TRANSACTION)], fail=True)
    assert statuses(result) == [("transaction", FAILED)]
    assert _log(env) == ["one", "two", "rollback"]
    error = result.tasks[0].error or ""
    assert "exit code: 4" in error and "rolled back" in error
    assert conn.new_connections == 0


def test_a_refused_new_connection_is_a_failed_task_and_rolls_back(env: Env) -> None:
    conn = env.connector(refuse_new=True)
    result, _ = env.run([env.role("tx", TRANSACTION)], conn)
    assert result.unreachable is None, "the long-lived connection still works"
    assert statuses(result) == [("transaction", FAILED)]
    assert _log(env) == ["one", "two", "rollback"]
    error = result.tasks[0].error or ""
    assert "a new connection failed: rejected every key" in error and "rolled back" in error


def test_a_dropped_connection_still_tries_the_rollback(env: Env) -> None:
    conn = env.connector(drop_at=3)   # 1: facts, 2: "one", 3: "two" drops
    result, _ = env.run([env.role("tx", TRANSACTION)], conn)
    assert result.unreachable is not None and "rolled back" in result.unreachable
    assert _log(env) == ["one", "rollback"]
    # the first connect is not told to expect a refusal; the rollback's reconnect
    # is (the change may have restarted sshd)
    assert conn.connects[0] is False and conn.connects[-1] is True


# -------------------------------------------------------- a change that undoes what was read

LEFTOVER = '''\
"""Test role: an earlier run's leftover (a marker file) is undone alone, then planned again."""
from gpuprov.command import Command
from gpuprov.facts.files import FileState
from gpuprov.ops.base import Change, Op, Step, operation


@operation
class Tidy(Op):
    base: str

    def __post_init__(self):
        super().__post_init__()
        self.label = "tidy thing"

    def facts(self):
        return [FileState(self.base + "/leftover"), FileState(self.base + "/done")]

    def plan(self, facts):
        if facts[FileState(self.base + "/leftover")] is not None:
            return [Change("tidy thing", "restore", "undo the leftover",
                           steps=[Step(Command("rm", self.base + "/leftover"))],
                           invalidates=(FileState,), replan=True)]
        if facts[FileState(self.base + "/done")] is None:
            return [Change("tidy thing", "create", "write done",
                           steps=[Step(Command("touch", self.base + "/done"))],
                           invalidates=(FileState,))]
        return []


def tasks(ctx):
    yield Tidy(ctx.vars["base"])
'''


def test_a_change_that_undoes_what_the_plan_read_is_followed_by_a_fresh_plan(env: Env) -> None:
    (env.target / "leftover").write_text("x\n")
    tidy = env.role("tidy", LEFTOVER)
    result, conn = env.run([tidy])
    [task] = result.tasks
    assert task.status == CHANGED
    assert [c.summary for c in task.changes] == ["undo the leftover", "write done"]
    assert sorted(p.name for p in env.target.iterdir()) == ["done"]
    again, _ = env.run([tidy])
    assert statuses(again) == [("tidy thing", "ok")]
