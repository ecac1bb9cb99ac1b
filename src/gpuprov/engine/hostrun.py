"""Converge (or check) one host: facts in one batch, plan, apply, handlers.

The same code path serves apply, --check and drift-check: planning never
writes; only `apply` runs the planned Steps. After a change, only the facts
it invalidated are re-read (batched, lazily, right before they are needed),
which also proves each changed op converged.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuprov import templating
from gpuprov.connectors.base import Connector
from gpuprov.engine.context import NeedFacts, RoleFailed, TaskContext
from gpuprov.engine.handlers import (
    PendingHandlers,
    RebootRequired,
    clear_step,
    persist_step,
    reboot_required_step,
)
from gpuprov.engine.results import (
    CHANGED,
    FAILED,
    OK,
    SKIPPED,
    HostResult,
    TaskResult,
    phase,
)
from gpuprov.engine.roles import Role
from gpuprov.errors import GpuprovError, TaskFailed, UnreachableHost
from gpuprov.facts.base import Fact, FactError, FactView, gather_script, parse_batch, selects
from gpuprov.facts.system import SystemFacts
from gpuprov.model.inventory import Host
from gpuprov.model.vars import HostVars
from gpuprov.ops.base import Change, Op, Step

MAX_DISCOVERY_PASSES = 5
#: how many of a batch's slowest probes the profile names
SLOWEST = 5


@dataclass
class RoleRun:
    """One role of one play, with the vars it sees on this host."""

    role: Role
    vars: HostVars


@dataclass
class PlannedOp:
    role: str
    op: Op
    handler: bool = False


@dataclass
class HostRun:
    host: Host
    connector: Connector
    roles: Sequence[RoleRun]
    check: bool
    #: called with each TaskResult as it completes (live progress)
    on_task: Callable[[TaskResult], None] | None = None
    #: the play's name, for the profile
    play: str = ""
    #: -v: time each probe inside the facts script, to name the slowest
    timed: bool = False
    result: HostResult = field(init=False)
    #: seconds spent in tasks() and plan() since the last profile entry of them
    _planning: float = field(default=0.0, init=False)
    _facts: dict[Fact[Any], Any] = field(default_factory=dict, init=False)
    #: handler notifications found persisted on the host when the run began
    _pending_before: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.result = HostResult(self.host.name)

    # -- facts ---------------------------------------------------------------
    def gather(self, facts: Iterable[Fact[Any]], why: str = "") -> None:
        """Answer every given fact not known yet, in ONE round trip."""
        wanted = list(dict.fromkeys(f for f in facts if f not in self._facts))
        if not wanted:
            return
        started = time.monotonic()
        script, marker = gather_script(wanted, timed=self.timed)
        sudo = any(getattr(f, "sudo", False) for f in wanted)
        res = self.connector.run("sh -s", sudo=sudo, stdin=script.encode())
        if res.exit_code != 0 and marker not in res.stdout:
            raise TaskFailed(self.host.name, "gather facts", "sh -s (facts script)",
                             res.exit_code, res.stderr)
        timings: dict[Fact[Any], float] = {}
        try:
            self._facts.update(parse_batch(wanted, res.stdout, marker, timings))
        except FactError as exc:
            raise exc.on_host(self.host.name) from exc
        finally:
            entry = phase("facts", started, self.play, why)
            entry["count"] = len(wanted)
            slowest = sorted(timings.items(), key=lambda kv: -kv[1])[:SLOWEST]
            entry["slowest"] = [[f.key, round(sec, 3)] for f, sec in slowest if sec > 0]
            self.result.profile.append(entry)

    def invalidate(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.invalidates is None:
                self._facts.clear()
                return
            for fact in list(self._facts):
                if any(selects(sel, fact) for sel in change.invalidates):
                    del self._facts[fact]

    @property
    def facts(self) -> FactView:
        """Every fact known for this host so far."""
        return FactView(self._facts)

    # -- the run ---------------------------------------------------------------
    def run(self) -> HostResult:
        start = time.monotonic()
        try:
            before, started = self.connector.stats.connections, time.monotonic()
            self.connector.connect()
            if self.connector.stats.connections > before:
                self.result.profile.append(phase("connect", started, self.play))
            self._run()
        except UnreachableHost as exc:
            self.result.unreachable = str(exc)
        except GpuprovError as exc:  # a FactError too: e.g. a system fact of an odd target
            self.result.error = str(exc)
        finally:
            # tasks() and plan() of every op, in one entry: no single one is worth a line
            self.result.profile.append({"phase": "plan", "play": self.play,
                                        "seconds": round(self._planning, 4), "why": ""})
            self.result.connections = self.connector.stats.connections
            self.result.round_trips = self.connector.stats.round_trips
            self.result.seconds = time.monotonic() - start
        return self.result

    def _run(self) -> None:
        self.gather([*SystemFacts.facts(), PendingHandlers(), RebootRequired()], "system")
        system = SystemFacts.from_facts(self._facts)
        # read now: a change that invalidates every fact drops it from the cache
        reason = self._facts[RebootRequired()]
        plan = self._build_ops(system)
        # On a parse error each op re-gathers its own facts in _do: the error lands on its op.
        with contextlib.suppress(FactError):
            self.gather((f for p in plan for f in p.op.facts() if self._may_gather(f)), "ops")
        notified: list[str] = list(self._facts[PendingHandlers()])
        self._pending_before = set(notified)
        for item in plan:
            task = self._do(item, notified)
            self._record(task)
            if task.status == FAILED:
                return
        self._run_handlers(system, notified)
        self.result.reboot_pending = reason is not None or self.result.reboot_pending

    def _record(self, task: TaskResult) -> None:
        self.result.tasks.append(task)
        if self.on_task is not None:
            self.on_task(task)

    def _build_ops(self, system: SystemFacts) -> list[PlannedOp]:
        ops: list[PlannedOp] = []
        for role_run in self.roles:
            ops.extend(PlannedOp(role_run.role.name, op)
                       for op in self._role_ops(role_run, system,
                                                lambda ctx, r=role_run: r.role.tasks(ctx)))
        return ops

    def _role_ops(self, role_run: RoleRun, system: SystemFacts, produce: Any) -> list[Op]:
        """Run a role's tasks(), gathering facts it asks for, until it completes."""
        for _ in range(MAX_DISCOVERY_PASSES):
            ctx = TaskContext(self.host, role_run.vars, system, FactView(self._facts),
                              role_run.role.name, role_run.role.path,
                              session=self.connector.session())
            started = time.monotonic()
            try:
                ops = list(produce(ctx))
                self._planning += time.monotonic() - started
                return _secrets_marked(ops, role_run.vars.secret_values())
            except NeedFacts as need:
                self._planning += time.monotonic() - started
                try:
                    self.gather(need.facts, f"role {role_run.role.name} asked")
                except FactError as exc:
                    raise RoleFailed(f"{self.host.name}: role {role_run.role.name}: "
                                     f"{exc.detail}") from exc
            except GpuprovError:
                raise
            except Exception as exc:  # the role author's bug: say where, not our stack
                raise RoleFailed(f"{self.host.name}: role {role_run.role.name}: "
                                 f"{_where(exc, role_run.role)}{type(exc).__name__}: {exc}"
                                 ) from exc
        raise RoleFailed(f"{self.host.name}: role {role_run.role.name} keeps asking for "
                         f"new facts after {MAX_DISCOVERY_PASSES} passes")

    def _do(self, item: PlannedOp, notified: list[str]) -> TaskResult:
        task = self._do_op(item, notified)
        if type(item.op).report is not Op.report:   # most ops report nothing: no copy of the facts
            with contextlib.suppress(KeyError, GpuprovError):
                # facts an op could not gather already failed its task
                task.data = item.op.report(FactView(self._facts))
        return task

    def _may_gather(self, fact: Fact[Any]) -> bool:
        """Check mode only reads: a probe that runs something is left out."""
        return not (self.check and fact.runs)

    def _do_op(self, item: PlannedOp, notified: list[str]) -> TaskResult:
        op = item.op
        running = [f.runs for f in op.facts() if f.runs and not self._may_gather(f)]
        if running:
            return TaskResult(item.role, f"{op.label} (not run in check mode: it "
                              f"{', '.join(dict.fromkeys(running))})", SKIPPED,
                              handler=item.handler)
        try:
            # re-reads only what earlier changes invalidated
            self.gather(op.facts(), f"re-read for {op.label}")
            started = time.monotonic()
            changes = op.plan(FactView(self._facts))
            self._planning += time.monotonic() - started
        except UnreachableHost:
            raise
        except GpuprovError as exc:
            return TaskResult(item.role, op.label, FAILED, error=str(exc), handler=item.handler)
        if not changes:
            return TaskResult(item.role, op.label, OK, handler=item.handler)
        blocked = settle_blocked(changes, self.check)
        if blocked is not None:
            return TaskResult(item.role, op.label, FAILED, changes, handler=item.handler,
                              error=str(TaskFailed(self.host.name, op.label, "", None,
                                                   reason=blocked)))
        names = [f"{item.role}:{n}" for c in changes for n in (c.notify or op.notify)]
        unknown = self._unknown_handlers(names)
        if unknown:
            # Persisting a name no handler answers would leave it pending forever.
            return TaskResult(item.role, op.label, FAILED, changes, handler=item.handler,
                              error=f"{self.host.name}: task '{op.label}' notifies "
                                    f"{', '.join(unknown)}, which role {item.role} does not "
                                    "define in HANDLERS")
        new_names = [n for n in dict.fromkeys(names) if n not in notified]
        notified.extend(new_names)
        if any(c.reboot_required for c in changes):
            self.result.reboot_pending = True
        if self.check:
            return TaskResult(item.role, op.label, CHANGED, changes, handler=item.handler)
        try:
            if new_names:
                self._exec("persist handler notification", persist_step(new_names))
            for change in changes:
                self._apply(op.label, change)
                if change.reboot_required:
                    self._exec("record reboot required", reboot_required_step(change.summary))
        except TaskFailed as exc:
            self.invalidate(changes)
            return TaskResult(item.role, op.label, FAILED, changes, error=str(exc),
                              handler=item.handler)
        self.invalidate(changes)
        return TaskResult(item.role, op.label, CHANGED, changes, handler=item.handler)

    def _apply(self, task: str, change: Change) -> None:
        """Run a change's steps; when one fails, its rollback steps (if any) first."""
        try:
            for step in change.steps:
                self._exec(task, step)
        except (TaskFailed, UnreachableHost) as exc:
            if not change.rollback:
                raise
            note = self._roll_back(task, change)
            if isinstance(exc, UnreachableHost):
                raise UnreachableHost(exc.host, exc.kind, f"{exc.detail}; {note}",
                                      exc.hint) from exc
            raise TaskFailed(self.host.name, task, exc.command, exc.exit_code, exc.stderr_tail,
                             reason=f"{exc.reason + '; ' if exc.reason else ''}{note}",
                             hint=exc.hint) from exc

    def _roll_back(self, task: str, change: Change) -> str:
        try:
            # reopens a connection that dropped: the change may have restarted sshd
            self.connector.connect(expect_refusal=True)
            for step in change.rollback:
                self._exec(f"{task} (rollback)", step)
        except (TaskFailed, UnreachableHost) as exc:
            return f"ROLLBACK FAILED: {exc}"
        return "rolled back: the host is as before this change"

    def _exec(self, task: str, step: Step) -> None:
        started = time.monotonic()
        try:
            self._exec_step(task, step)
        finally:
            self.result.profile.append(phase("step", started, self.play, task))

    def _exec_step(self, task: str, step: Step) -> None:
        if step.new_connection:
            try:
                res = self.connector.run_on_new_connection(step.command, sudo=step.sudo)
            except UnreachableHost as exc:
                # The long-lived connection may still work: a failed task, not an
                # unreachable host, so the change's rollback can run over it.
                raise TaskFailed(self.host.name, task, step.command.display(), None,
                                 reason=f"a new connection failed: {exc.detail}",
                                 hint=exc.hint) from exc
        elif step.stdin_file is not None:
            try:
                with open(step.stdin_file, "rb") as stream:
                    res = self.connector.run(step.command, sudo=step.sudo, stdin=stream)
            except OSError as exc:
                raise TaskFailed(self.host.name, task, step.command.display(), -1,
                                 f"cannot read {step.stdin_file} on the controller: {exc}"
                                 ) from exc
        else:
            res = self.connector.run(step.command, sudo=step.sudo, stdin=step.stdin)
        if res.exit_code != 0 and res.exit_code not in step.ok_codes:
            raise TaskFailed(self.host.name, task, step.command.display(), res.exit_code,
                             res.stderr or res.stdout)

    def _unknown_handlers(self, names: list[str]) -> list[str]:
        handlers = {f"{r.role.name}:{h}" for r in self.roles for h in r.role.handlers}
        return [repr(n.partition(":")[2]) for n in dict.fromkeys(names) if n not in handlers]

    def _run_handlers(self, system: SystemFacts, notified: list[str]) -> None:
        by_role = {r.role.name: r for r in self.roles}
        for name in notified:
            role_name, _, handler = name.partition(":")
            role_run = by_role.get(role_name)
            if role_run is None or handler not in role_run.role.handlers:
                # Pending from a role that is not in this play: leave it for its play.
                continue
            fn = role_run.role.handlers[handler]
            for op in self._role_ops(role_run, system, lambda ctx, f=fn: f(ctx)):
                task = self._do(PlannedOp(role_name, op, handler=True), [])
                # A notification left by an earlier run is drift of its own (a
                # service still runs an old config); one from this run is a
                # consequence of changes already reported.
                task.pending = name in self._pending_before
                task.task = f"handler {handler}: {task.task}"
                self._record(task)
                if task.status == FAILED:
                    return
            if not self.check:
                try:
                    self._exec("clear handler notification", clear_step(name))
                except TaskFailed as exc:
                    self.result.error = str(exc)
                    return


def settle_blocked(changes: Sequence[Change], check: bool) -> str | None:
    """What becomes of changes that cannot be done (Change.blocked): check mode
    reports each as unknown, saying apply stops there; apply gets the reasons,
    to fail the task before it runs any step (or persists a notification)."""
    reasons = [c.blocked for c in changes if c.blocked]
    if not reasons:
        return None
    if check:
        for change in changes:
            if change.blocked and not change.unknown:
                change.unknown = f"{change.blocked}; apply would stop here"
        return None
    return "; ".join(reasons)


def _where(exc: BaseException, role: Role) -> str:
    """"tasks.py:12: " for the innermost frame of the role's own code, or ""."""
    role_dir = str(role.path) + "/"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith(role_dir)]
    if not frames:
        return ""
    return f"{frames[-1].filename[len(role_dir):]}:{frames[-1].lineno}: "


def _secrets_marked(ops: list[Op], secrets: list[str]) -> list[Op]:
    """An op that writes a known secret value of the host is made secret (diff
    masked, no digest in the report), however the role built the content
    ("token=" + value is a plain str): the renderer's marking, once more."""
    values = [v.encode() for v in secrets if v]
    for op in ops:
        if getattr(op, "secret", None) is not False:
            continue
        content = getattr(op, "content", None)
        if content is None and getattr(op, "patch", None) is not None:
            content = json.dumps(op.patch, ensure_ascii=False, default=str).encode()  # type: ignore[attr-defined]
        if (isinstance(content, bytes) and any(v in content for v in values)) or \
                templating.contains_secret(getattr(op, "patch", None)):
            op.secret = True  # type: ignore[attr-defined]
    return ops
