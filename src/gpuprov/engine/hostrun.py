"""Converge (or check) one host: facts in one batch, plan, apply, handlers.

The same code path serves apply, --check and drift-check: planning never writes; only `apply`
runs the planned Steps. After a change, only the facts it invalidated are re-read (batched,
lazily, right before they are needed), which also proves each changed op converged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpuprov.connectors.base import Connector
from gpuprov.engine import roleops
from gpuprov.engine.context import NeedFacts, RoleFailed, RoleSkipped, TaskContext
from gpuprov.engine.handlers import (
    PendingHandlers,
    RebootRequired,
    clear_step,
    persist_step,
    reboot_required_step,
)
from gpuprov.engine.hostfacts import HostFacts, first_facts
from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED, HostResult, TaskResult, phase
from gpuprov.engine.roles import Role
from gpuprov.errors import GpuprovError, TaskFailed, UnreachableHost
from gpuprov.facts.base import Fact, FactError, FactView
from gpuprov.facts.system import SystemFacts
from gpuprov.model.inventory import Host
from gpuprov.model.vars import HostVars
from gpuprov.ops.base import Change, Op, Step

MAX_DISCOVERY_PASSES = 5


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
    #: the host's facts for the whole run (shared by its plays); a new one if None
    cache: HostFacts | None = None
    #: the roles of the plays after this one on this host: their facts are
    #: prefetched in this play's batches (never a probe that runs something)
    later: Sequence[Sequence[RoleRun]] = ()
    result: HostResult = field(init=False)
    #: seconds spent in tasks() and plan() since the last profile entry of them
    _planning: float = field(default=0.0, init=False)
    #: handler notifications found persisted on the host when the run began
    _pending_before: set[str] = field(default_factory=set, init=False)
    #: for HostResult.settle: roles left out by their own condition (role -> why,
    #: ctx.skip), the role whose tasks() failed, whether every op ran
    _skips: dict[str, str] = field(default_factory=dict, init=False)
    _failing: str | None = field(default=None, init=False)
    _finished: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.result = HostResult(self.host.name)
        if self.cache is None:
            self.cache = HostFacts(self.host.name, self.connector)
        self.cache.timed, self.cache.play = self.timed, self.play
        self.cache.profile = self.result.profile

    # -- facts ---------------------------------------------------------------
    @property
    def _cache(self) -> HostFacts:
        assert self.cache is not None   # made in __post_init__
        return self.cache

    @property
    def _facts(self) -> dict[Fact[Any], Any]:
        return self._cache.values

    def gather(self, facts: Iterable[Fact[Any]], why: str = "") -> None:
        self._cache.gather(facts, why)   # what is not known yet, in ONE round trip

    def invalidate(self, changes: Sequence[Change]) -> None:
        self._cache.invalidate(changes)

    @property
    def facts(self) -> FactView:
        return FactView(self._facts)   # every fact known for this host so far

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
            stats = self.connector.stats
            self.result.connections, self.result.round_trips = stats.connections, stats.round_trips
            self.result.seconds = time.monotonic() - start
            self.result.settle(self.play, [r.role.name for r in self.roles], self._skips,
                               self._finished, self._failing)
        return self.result

    def _run(self) -> None:
        self.gather(first_facts(), "system")
        system = SystemFacts.from_facts(self._facts)
        # read now: a change that invalidates every fact drops it from the cache
        reason = self._facts[RebootRequired()]
        plan = self._plan(system)
        notified: list[str] = list(self._facts[PendingHandlers()])
        self._pending_before = set(notified)
        for item in plan:
            task = self._do(item, notified)
            self._record(task)
            if task.status == FAILED:
                return
        self._finished = True
        self._run_handlers(system, notified)
        self.result.reboot_pending = reason is not None or self.result.reboot_pending

    def _record(self, task: TaskResult) -> None:
        self.result.tasks.append(task)
        if self.on_task is not None:
            self.on_task(task)

    def _plan(self, system: SystemFacts) -> list[PlannedOp]:
        """Every role's ops, this play's and (to prefetch their facts) the later
        plays': the roles' tasks() run in lockstep, and each round trip answers
        what any role asked for plus the facts of every op known so far."""
        jobs = [(True, r) for r in self.roles] + [(False, r) for p in self.later for r in p]
        ops: dict[int, list[Op]] = {}
        pending, prefetch = list(range(len(jobs))), True
        for _ in range(MAX_DISCOVERY_PASSES):
            need: dict[int, list[Fact[Any]]] = {}
            for j in pending:
                mine, role_run = jobs[j]
                try:
                    ops[j] = self._role_ops(role_run, system, role_run.role.tasks, passes=1)
                except NeedFacts as exc:
                    need[j] = exc.facts
                except RoleSkipped as exc:   # a later play's role says so in its own play
                    ops[j] = []
                    self._skips.update({role_run.role.name: exc.reason} if mine else {})
                except Exception:
                    if mine:
                        self._failing = role_run.role.name
                        raise
                    # a later play's role fails in its own play, not in this prefetch
            pending = list(need)
            # an op check mode skips (a probe of it runs something) reads nothing
            known = [f for j, o in ops.items() for op in o if not self._skipped(op)
                     for f in op.facts() if prefetch and (jobs[j][0] or not f.runs)]
            asked = [f for j in need for f in need[j] if jobs[j][0] or not f.runs]
            try:
                self.gather([*asked, *known], "ops" if not need else
                            ", ".join(jobs[j][1].role.name for j in need) + " asked")
            except FactError:
                # One role at a time, so the error names its role; no more prefetch:
                # each op re-gathers its own facts in _do, so an error lands on its op.
                prefetch = False
                pending = [j for j in pending if jobs[j][0]]
                for j in pending:
                    self._discover(jobs[j][1], need[j])
            if not need:
                break
        for j in pending:
            if jobs[j][0]:
                raise RoleFailed(f"{self.host.name}: role {jobs[j][1].role.name} keeps asking "
                                 f"for new facts after {MAX_DISCOVERY_PASSES} passes")
        return [PlannedOp(jobs[j][1].role.name, op)
                for j in range(len(self.roles)) for op in ops[j]]

    def _discover(self, role_run: RoleRun, facts: list[Fact[Any]]) -> None:
        try:
            self.gather(facts, f"role {role_run.role.name} asked")
        except FactError as exc:
            self._failing = self._failing or role_run.role.name
            raise RoleFailed(f"{self.host.name}: role {role_run.role.name}: "
                             f"{exc.detail}") from exc

    def _role_ops(self, role_run: RoleRun, system: SystemFacts, produce: Any,
                  passes: int = MAX_DISCOVERY_PASSES) -> list[Op]:
        """Run a role's tasks(), gathering facts it asks for, until it completes;
        with passes=1, NeedFacts goes to the caller."""
        for _ in range(passes):
            ctx = TaskContext(self.host, role_run.vars, system, FactView(self._facts),
                              role_run.role.name, role_run.role.path,
                              session=self.connector.session())
            started = time.monotonic()
            try:
                ops = list(produce(ctx))
                self._planning += time.monotonic() - started
                return roleops.secrets_marked(ops, role_run.vars.secret_values())
            except NeedFacts as need:
                self._planning += time.monotonic() - started
                if passes == 1:
                    raise
                self._discover(role_run, need.facts)
            except (GpuprovError, RoleSkipped):
                raise
            except Exception as exc:  # the role author's bug: say where, not our stack
                where = roleops.where_in_role(exc, role_run.role)
                raise RoleFailed(f"{self.host.name}: role {role_run.role.name}: "
                                 f"{where}{type(exc).__name__}: {exc}") from exc
            finally:
                self._cache.remember(ctx.read)
        raise RoleFailed(f"{self.host.name}: role {role_run.role.name} keeps asking for "
                         f"new facts after {MAX_DISCOVERY_PASSES} passes")

    def _do(self, item: PlannedOp, notified: list[str]) -> TaskResult:
        task = self._do_op(item, notified)
        if type(item.op).report is not Op.report:   # most ops report nothing: no copy of the facts
            with contextlib.suppress(KeyError, GpuprovError):
                # facts an op could not gather already failed its task
                task.data = item.op.report(FactView(self._facts))
        return task

    def _skipped(self, op: Op) -> bool:
        """Check mode only reads: an op with a probe that runs something is skipped."""
        return self.check and any(f.runs for f in op.facts())

    def _do_op(self, item: PlannedOp, notified: list[str], again: bool = True) -> TaskResult:
        op = item.op
        if self._skipped(op):
            running = [f.runs for f in op.facts() if f.runs]
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
        blocked = roleops.settle_blocked(changes, self.check)
        if blocked is not None:
            return TaskResult(item.role, op.label, FAILED, changes, handler=item.handler,
                              error=str(TaskFailed(self.host.name, op.label, "", None,
                                                   reason=blocked)))
        names = [f"{item.role}:{n}" for c in changes for n in (c.notify or op.notify)]
        unknown = roleops.unknown_handlers([r.role for r in self.roles], names)
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
                self._written(PendingHandlers)
            for change in changes:
                self._apply(op.label, change)
                if change.reboot_required:
                    self._exec("record reboot required", reboot_required_step(change.summary))
                    self._written(RebootRequired)
        except TaskFailed as exc:
            self.invalidate(changes)
            return TaskResult(item.role, op.label, FAILED, changes, error=str(exc),
                              handler=item.handler)
        self.invalidate(changes)
        if again and any(c.replan for c in changes):   # what the plan read was undone: again
            task = self._do_op(item, notified, again=False)
            task.changes[:0], task.status = changes, FAILED if task.status == FAILED else CHANGED
            return task
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

    def _written(self, kind: type[Fact[Any]]) -> None:
        """gpuprov's own state file changed: a later play reads it afresh."""
        self._cache.drop(kind)

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
            explained = roleops.explain_failure(self.connector, step, res.exit_code, res.stdout,
                                        res.stderr)
            raise TaskFailed(self.host.name, task, step.command.display(), res.exit_code,
                             res.stderr or res.stdout,
                             reason=explained.reason if explained else None,
                             hint=explained.hint if explained else None)

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
                    self._written(PendingHandlers)
                except TaskFailed as exc:
                    self.result.error = str(exc)
                    return
