"""Run plays across hosts: thread pool, serial batches, max-fail, tags, reboots.

One connection per host for the whole run (opened on first use, shared by
every play); each host's play runs in a worker thread (HostRun), so a slow
or unreachable host never holds the others up. Hosts that failed or were
unreachable in one play are left out of the later plays, as in Ansible.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpuprov.connectors.base import Connector
from gpuprov.engine import selection
from gpuprov.engine.connect import ConnectOptions, connector_for
from gpuprov.engine.forks import batches
from gpuprov.engine.hostfacts import HostFacts, first_facts
from gpuprov.engine.hostlock import default_lock_path
from gpuprov.engine.hostrun import HostRun, RoleRun
from gpuprov.engine.lastapply import record_script
from gpuprov.engine.prefetch import FactPlans
from gpuprov.engine.reboot import DEFAULT_TIMEOUT, reboot_and_wait
from gpuprov.engine.results import CONDITION, SKIPPED, HostResult, RunResult, TaskResult, phase
from gpuprov.engine.roles import Role, load_role
from gpuprov.engine.runlocks import RunLocks
from gpuprov.engine.selection import check_tags, reboot_policy, role_selected, verify_skipped
from gpuprov.engine.trace import CommandSink, HostTrace, trace_host
from gpuprov.errors import GpuprovError, UnreachableHost
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import REBOOT_IF_NEEDED, Play
from gpuprov.model.vars import build_host_vars


class ProgressSink(Protocol):
    """What the executor tells the report layer while it runs."""

    def play_started(self, name: str, hosts: list[str]) -> None: ...
    def host_started(self, host: str) -> None: ...
    def task_finished(self, host: str, task: TaskResult) -> None: ...
    def host_finished(self, result: HostResult) -> None: ...
    def message(self, host: str, text: str) -> None: ...


@dataclass
class RunOptions:
    check: bool = False
    forks: int = 10
    serial: int | str | None = None           # overrides the plays' serial
    max_fail_percentage: float | None = None  # overrides the plays' value
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    reboot: bool = False                      # --reboot: reboot where needed, always
    reboot_timeout: float = DEFAULT_TIMEOUT
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    lock_timeout: float = 0.0                 # --lock-timeout: wait for another run's lock
    lock_path: str = field(default_factory=default_lock_path)  # the host's run lock
    profile: bool = False                     # -v: time each probe inside the facts script
    #: where each host's last asked facts are kept (engine/prefetch.py); None: nowhere
    fact_plans: Path | None = None
    #: -vv: told of every command run and facts script sent (engine/trace.py)
    trace: CommandSink | None = None
    lock_via: str = ""   # what started it, in the lock's holder line: "pull" -> pull:apply


ConnectorFactory = Callable[[Host, ConnectOptions], Connector]


class Executor:
    def __init__(self, inventory: Inventory, plays: Sequence[Play], hosts: Sequence[Host],
                 options: RunOptions, progress: ProgressSink | None = None,
                 connector_factory: ConnectorFactory = connector_for) -> None:
        """`hosts`: the hosts the run may touch (the --limit selection)."""
        self.inventory = inventory
        self.plays = list(plays)
        self.allowed = {h.name for h in hosts}
        self.options = options
        self.progress = progress
        self._factory = connector_factory
        self._connectors: dict[str, Connector] = {}
        self._traces: dict[str, HostTrace] = {}
        #: each host's facts, shared by its plays (a change invalidates what it alters)
        self._host_facts: dict[str, HostFacts] = {}
        self._changed: set[str] = set()  # hosts where a play changed something
        self._members: dict[int, set[str]] = {}  # play index -> its hosts' names
        self._command = "apply"
        self._locks = RunLocks(self._command, options.lock_timeout, options.lock_path)
        self._last_play: dict[str, Play] = {}   # a host's lock is let go after it
        self._lock = threading.Lock()
        # Load every role up front: a broken tasks.py fails the run before any host is touched.
        self._roles: dict[Path, Role] = {}
        for play in self.plays:
            for ref in play.roles:
                assert ref.path is not None, "resolve_roles() first"
                self._roles.setdefault(ref.path, load_role(ref.name, ref.path))
        check_tags(self.plays, options.tags | options.skip_tags)
        selection.check_selected(self.plays, options.tags, options.skip_tags)
        self._plans = FactPlans(options.fact_plans, [*self._roles, *sorted(options.tags),
                                                     *(f"-{t}" for t in sorted(options.skip_tags))])

    # -- the run ----------------------------------------------------------------
    def run(self, command: str) -> RunResult:
        run = RunResult(command, self.options.check, started=time.time())
        self._command = command
        via = f"{self.options.lock_via}:" if self.options.lock_via else ""
        self._locks = RunLocks(via + command, self.options.lock_timeout, self.options.lock_path)
        dead: set[str] = set()
        aborted = False
        try:
            self._plan_locks()
            for play in self.plays:
                # a host that stopped, or every host once the run is aborted: say
                # which of its roles it never got to, and why
                for h in (h for h in self._play_hosts(play) if h.name in run.hosts):
                    if h.name in dead or aborted:
                        stopped = run.hosts[h.name].stopped if h.name in dead else None
                        selection.left_out(run.hosts[h.name], play, self.options,
                                           stopped or "the run was aborted")
                hosts = [h for h in self._play_hosts(play) if h.name not in dead]
                if not hosts or aborted:
                    continue
                if self.progress:
                    self.progress.play_started(play.name, [h.name for h in hosts])
                aborted = not self._run_play(play, hosts, run, dead)
        finally:
            self.close()
            run.finished = time.time()
        return run

    def _play_hosts(self, play: Play) -> list[Host]:
        return [h for h in self.inventory.select(play.hosts, allow_empty=True)
                if h.name in self.allowed]

    def _plan_locks(self) -> None:
        """Which play is each host's last (its lock goes after it) and, when this
        run may wait for others over several plays, every lock up front (runlocks.py)."""
        hosts: dict[str, Host] = {}
        for play in self.plays:
            for host in self._play_hosts(play):
                self._last_play[host.name] = play
                hosts.setdefault(host.name, host)
        if self.options.lock_timeout > 0 and len(self.plays) > 1 and len(hosts) > 1:
            self._locks.take_in_order([(name, self._connector(h)) for name, h in hosts.items()],
                                      self.options.forks)

    def _run_play(self, play: Play, hosts: list[Host], run: RunResult, dead: set[str]) -> bool:
        """Run one play in batches; False when max-fail aborted the run."""
        serial = self.options.serial if self.options.serial is not None else play.serial
        max_fail = (self.options.max_fail_percentage
                    if self.options.max_fail_percentage is not None
                    else play.max_fail_percentage)
        for batch in batches(hosts, serial):
            workers = max(1, min(self.options.forks, len(batch)))
            with ThreadPoolExecutor(workers, thread_name_prefix="gpuprov-host") as pool:
                results = list(pool.map(lambda h: self._run_host(play, h), batch))
            failed = 0
            for result in results:
                run.host(result.host).add(result)
                if result.changed:
                    self._changed.add(result.host)
                if result.failed or result.unreachable:
                    dead.add(result.host)
                    failed += 1
            pct = 100.0 * failed / len(batch)
            if max_fail is not None and pct > max_fail:
                run.aborted = (f"play {play.name!r}: {failed} of {len(batch)} hosts of a batch "
                               f"failed ({pct:.0f}% > max_fail_percentage {max_fail:g}%); "
                               "the remaining hosts and plays were not run")
                return False
            if failed == len(batch) and len(batch) > 1 and serial is not None:
                run.aborted = f"play {play.name!r}: every host of a batch failed; stopping"
                return False
        return True

    def _run_host(self, play: Play, host: Host) -> HostResult:
        host = host.with_extra_vars(self.options.extra_vars) if self.options.extra_vars else host
        if self.progress:
            self.progress.host_started(host.name)
        roles: list[RoleRun] = []
        pre: list[dict[str, Any]] = []  # the profile's phases before HostRun
        try:
            if play.verify is not None and verify_skipped(
                    play, host, self.options.extra_vars, host.name in self._changed,
                    self.options.tags):
                result = HostResult(host.name, tasks=[TaskResult(
                    play.name, "play skipped: nothing changed on this host (verify: on-change)",
                    SKIPPED)])
                selection.left_out(result, play, self.options,
                                   "nothing changed on this host, verify: on-change", CONDITION)
                if self._last_play.get(host.name) is play:
                    self._locks.release(host.name, self._record(host, result))
                self._finished(result)
                return result
            roles, skipped = self._role_runs(play, host)
            secrets = self._secrets(host, roles)
            connector = self._connector(host)
            if host.name in self._traces:
                self._traces[host.name].secrets |= secrets
            before = connector.stats.connections
            started = time.monotonic()
            connector.connect()
            if connector.stats.connections > before:
                pre.append(phase("connect", started, play.name))
            started, trips = time.monotonic(), connector.stats.round_trips
            cache = self._facts_of(host, connector)
            cache.learning = play.verify is None  # verification facts are not worth a guess
            cache.profile, cache.play, cache.timed = pre, play.name, self.options.profile
            entries = len(pre)
            self._lock_host(host, connector, cache)
            # taken now (not by an earlier play), and not in the facts' entry already
            if connector.stats.round_trips > trips and len(pre) == entries:
                pre.append(phase("lock", started, play.name))
        except (UnreachableHost, GpuprovError) as exc:
            result = HostResult(host.name, secrets=self._secrets(host, roles))
            if isinstance(exc, UnreachableHost):
                result.unreachable, result.stopped = str(exc), "the host is unreachable"
            else:
                result.error, result.stopped = str(exc), "the host failed before its roles ran"
            selection.left_out(result, play, self.options, result.stopped)
            self._locks.release(host.name)   # one taken up front (runlocks.py)
            result.mask()
            self._finished(result)
            return result
        progress = self.progress

        def on_task(task: TaskResult) -> None:
            task.mask(secrets)  # before anything shows it
            if progress:
                progress.task_finished(host.name, task)

        try:
            result = HostRun(host, connector, roles, self.options.check, on_task=on_task,
                             play=play.name, timed=self.options.profile,
                             cache=self._facts_of(host, connector),
                             later=self._later(play, host)).run()
        except Exception as exc:  # a bug must cost one host, not the whole fleet's run
            result = HostResult(host.name, error=internal_error(exc))
        result.profile[:0] = pre
        result.tasks[:0] = skipped
        selection.left_out(result, play, self.options)   # the roles the tags left out, and why
        result.secrets |= secrets
        if result.reboot_pending and not self.options.check and not result.failed:
            self._maybe_reboot(play, host, connector, result)
        if result.failed or result.unreachable or self._last_play.get(host.name) is play:
            self._locks.release(host.name, self._record(host, result))
        if self._last_play.get(host.name) is play and not (result.failed or result.unreachable):
            self._plans.save(host.name, self._facts_of(host, connector).asked)
        result.mask()
        self._finished(result)
        return result

    def _role_runs(self, play: Play, host: Host) -> tuple[list[RoleRun], list[TaskResult]]:
        """The play's roles that run on the host (tags), each with its vars;
        and a skipped result for each role left out."""
        skipped: list[TaskResult] = []
        roles: list[RoleRun] = []
        # every role's defaults, also of roles skipped by tags (Ansible's behaviour)
        play_defaults = [self._roles[r.path].defaults for r in play.roles]  # type: ignore[index]
        for ref in play.roles:
            role = self._roles[ref.path]  # type: ignore[index]
            if not role_selected(play, ref, self.options.tags, self.options.skip_tags):
                skipped.append(TaskResult(role.name, "role skipped by tags", SKIPPED))
                continue
            roles.append(RoleRun(role, build_host_vars(
                host, role_defaults=role.defaults, play_vars=play.vars, role_vars=ref.vars,
                extra_vars=self.options.extra_vars, role=role.name,
                play_defaults=play_defaults)))
        return roles, skipped

    def _later(self, play: Play, host: Host) -> list[list[RoleRun]]:
        """The roles of the plays after `play` on this host, for HostRun to
        prefetch their facts; verification plays run only after a change, so
        their facts are not worth a guess."""
        later: list[list[RoleRun]] = []
        start = next(i for i, p in enumerate(self.plays) if p is play) + 1
        for i, other in enumerate(self.plays[start:], start):
            if other.verify is not None:
                continue
            if i not in self._members:
                self._members[i] = {h.name for h in self._play_hosts(other)}
            if host.name in self._members[i]:
                # an error here is the later play's own, on its turn
                with contextlib.suppress(GpuprovError):
                    later.append(self._role_runs(other, host)[0])
        return later

    def _facts_of(self, host: Host, connector: Connector) -> HostFacts:
        with self._lock:
            if host.name not in self._host_facts:
                trace = self._traces.get(host.name)
                self._host_facts[host.name] = HostFacts(
                    host.name, connector, trace=trace.facts if trace else None)
            return self._host_facts[host.name]

    def _secrets(self, host: Host, roles: list[RoleRun]) -> set[str]:
        """The host's known secret values, which no output may show: its secret
        variables as each role sees them, and the passwords given to gpuprov."""
        found = {self.options.connect.become_password, self.options.connect.ssh_password}
        # an error here is the host's result already; what cannot be rendered cannot leak
        with contextlib.suppress(GpuprovError):
            found.update(build_host_vars(host).secret_values())
        for run in roles:
            found.update(run.vars.secret_values())
        return {v for v in found if v}

    def _maybe_reboot(self, play: Play, host: Host, connector: Connector,
                      result: HostResult) -> None:
        try:
            policy = reboot_policy(play, host, self.options)
        except GpuprovError as exc:
            result.error = str(exc)
            return
        if policy != REBOOT_IF_NEEDED:
            return
        if self.progress:
            self.progress.message(host.name, "rebooting; waiting for it to come back")
        try:
            seconds = reboot_and_wait(connector, self.options.reboot_timeout)
        except UnreachableHost as exc:
            result.unreachable = str(exc)
            return
        except GpuprovError as exc:
            result.error = str(exc)
            return
        result.rebooted, result.reboot_pending = True, False
        with self._lock:  # nothing read before the reboot holds
            self._host_facts.pop(host.name, None)
        # The reboot ended the lock's holder: take it again for the plays that follow.
        self._locks.forget(host.name)
        try:
            self._lock_host(host, connector)
        except UnreachableHost as exc:
            result.unreachable = str(exc)
        except GpuprovError as exc:
            result.error = str(exc)
        result.seconds += seconds
        result.connections = connector.stats.connections
        result.round_trips = connector.stats.round_trips

    def _record(self, host: Host, result: HostResult) -> str:
        """The last-apply record's script for a host whose apply ends well."""
        if self._command != "apply" or self.options.check or result.failed \
                or result.unreachable:
            return ""
        facts = self._host_facts.get(host.name)
        return record_script(host.name, self.plays[0].file if self.plays else None,
                             facts.values if facts else {})

    def _finished(self, result: HostResult) -> None:
        if self.progress:
            self.progress.host_finished(result)

    def _lock_host(self, host: Host, connector: Connector, cache: HostFacts | None = None
                   ) -> None:
        """Take the host's run lock on its first play; it is held until its last
        play ends, so later plays and a reboot stay inside the same run. With
        `cache`, the first facts and what the host's last run asked (prefetch.py)
        are read in the lock's own round trip; never a probe that runs something."""
        if cache is not None and not self._locks.holds(host.name):  # a later play: no read
            guess = [f for f in (*first_facts(), *self._plans.load(host.name)) if not f.runs]
            cache.gather_with(guess, "with the run lock",
                              lambda script: self._locks.take(host.name, connector, script))
        self._locks.take(host.name, connector)  # held already, unless nothing was to read

    def _connector(self, host: Host) -> Connector:
        with self._lock:
            if host.name not in self._connectors:
                connector = self._connectors[host.name] = self._factory(host,
                                                                        self.options.connect)
                if self.options.trace is not None:
                    self._traces[host.name] = trace_host(self.options.trace, host.name,
                                                         connector)
            return self._connectors[host.name]

    def close(self) -> None:
        self._locks.release_all()
        with self._lock:
            for connector in self._connectors.values():
                # Closing must not hide the run's own outcome.
                with contextlib.suppress(Exception):
                    connector.close()
            self._connectors.clear()


def internal_error(exc: BaseException) -> str:
    """An unexpected exception, located, for the report (no traceback wall)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return (f"internal error{where}: {type(exc).__name__}: {exc} "
            "(a bug in gpuprov or in a role; please report it)")

