"""`gpuprov pull`, one run: fetch the repo, verify, load this host's part of it,
check or apply it through the local connector, and say what came of it.

The decisions, in order:
- another pull running (pull/.lock) -> busy; fetch fails -> fetch-failed;
  verify: signed and the commit is not signed by an allowed key -> unsigned;
  the commit's inventory or playbook does not load, or this host is not in it
  (or in none of its plays) -> bad-commit. None of these runs anything.
- the commit is the last good one (the checkout) -> a check first (shared
  lock): in sync -> unchanged, nothing applied; drift -> apply (mode apply).
- a new commit -> apply (mode apply) or a check (mode check: drift or in sync).
- the host lock held by a push run -> busy (HostBusy, --lock-timeout), retried
  at the next interval; a failed task or an unreachable local host -> failed.
Only a commit that ran well (applied, or found in sync) becomes the checkout
and the last good commit; anything else leaves both as they were, so the next
run retries it.

The runs themselves go through `Runner` (the Executor in production, a fake
in unit tests); how much drift a check found is the output layer's to count
(`Drifted`), so that pull and drift-check can never disagree about it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from gpuprov.engine.connect import connector_for
from gpuprov.engine.executor import ConnectorFactory, Executor, RunOptions
from gpuprov.engine.pullgit import GitError, PullGit
from gpuprov.engine.pullstate import (
    APPLIED,
    BAD_COMMIT,
    BUSY,
    DRIFT,
    FAILED,
    FETCH_FAILED,
    UNCHANGED,
    UNSIGNED,
    pull_dir,
)
from gpuprov.engine.results import FAILED as TASK_FAILED
from gpuprov.engine.results import RunResult
from gpuprov.errors import GpuprovError, InventoryError
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import Play, load_plays
from gpuprov.model.pullconfig import CHECK, VERIFY_SIGNED, PullConfig

#: the commands a pull runs: a check (read-only, shared lock) and apply
CHECK_COMMAND, APPLY_COMMAND = "drift-check", "apply"


@dataclass
class PullTarget:
    """A commit's inventory and plays with this host forced to the local connector."""

    checkout: Path
    inventory: Inventory
    host: Host
    plays: list[Play]


Runner = Callable[[PullTarget, str], RunResult]
Drifted = Callable[[RunResult], int]


@dataclass
class PullOutcome:
    """What one pull came to; `run` is the last playbook run (None: none ran)."""

    result: str
    commit: str | None
    message: str = ""
    run: RunResult | None = None
    #: the commit was the last good one (a check ran first)
    same_commit: bool = False
    #: resources the check found differing (0: no check ran, or in sync)
    drifted: int = 0


@contextlib.contextmanager
def inside(checkout: Path) -> Iterator[None]:
    """The working directory in the checkout while its plays load and run:
    ./roles is the repo's roles/, and paths in errors read as the repo's own
    (inventory.yml:12). Process-wide, which is fine: a pull is one run."""
    before = os.getcwd()
    os.chdir(checkout)
    try:
        yield
    finally:
        os.chdir(before)


def load_target(checkout: Path, config: PullConfig) -> PullTarget:
    """This host's part of a commit: GpuprovError (a bad commit) when the inventory
    or playbook does not load, or the host is in neither the inventory nor a play."""
    with inside(checkout):
        inventory = Inventory.load(config.inventory)
        if config.host not in inventory.hosts:
            raise GpuprovError(f"host {config.host} not in inventory {config.inventory}",
                               hint="add it to the inventory, or fix host: in pull.yml")
        plays = load_plays(config.playbook)
    host = inventory.hosts[config.host].with_extra_vars({"connection": "local"})
    inventory.hosts[host.name] = host
    if not any(p for p in plays if host.name in
               {h.name for h in inventory.select(p.hosts, allow_empty=True)}):
        raise GpuprovError(f"host {config.host} is in no play of {config.playbook}",
                           hint="check the plays' hosts: patterns")
    return PullTarget(checkout, inventory, host, plays)


def executor_runner(options: RunOptions,
                    factory: ConnectorFactory = connector_for) -> Runner:
    """The production Runner: apply's and drift-check's own Executor and options."""
    def run(target: PullTarget, command: str) -> RunResult:
        opts = replace(options, check=command != APPLY_COMMAND, lock_via="pull")
        with inside(target.checkout):
            executor = Executor(target.inventory, target.plays, [target.host], opts,
                                connector_factory=factory)
            return executor.run(command)
    return run


@contextlib.contextmanager
def pull_lock(state_dir: str) -> Iterator[bool]:
    """One pull at a time on a host (the timer and a person's run): True when held."""
    directory = pull_dir(state_dir)
    # 0755: last.json in it is for anyone (gpuprov status without root); repo/ is 0700
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class Pull:
    """One `gpuprov pull` run against a pull.yml."""

    def __init__(self, config: PullConfig, runner: Runner, drifted: Drifted,
                 last_good: str | None, check: bool = False) -> None:
        self.config = config
        self.runner = runner
        self.drifted = drifted
        self.last_good = last_good
        self.check = check or config.mode == CHECK
        self.git = PullGit(config)
        self.sha: str | None = None

    def run(self) -> PullOutcome:
        with pull_lock(self.config.state_dir) as held:
            if not held:
                return PullOutcome(BUSY, None, "another gpuprov pull is running on this host")
            try:
                return self._run()
            except Exception as exc:   # noqa: BLE001
                # a timer's run must leave its record whatever happened: say it, exit 2
                return PullOutcome(FAILED, self.sha, f"internal error: {type(exc).__name__}: "
                                   f"{exc}")
            finally:
                self.git.discard()

    def _run(self) -> PullOutcome:
        try:
            sha = self.sha = self.git.fetch()
        except GitError as exc:
            url = _url(self.config.repo)
            return PullOutcome(FETCH_FAILED, None, f"fetch {url} {self.config.ref}: "
                               + exc.message.replace(self.config.repo, url))
        if self.config.verify == VERIFY_SIGNED:
            try:
                self.git.verify(sha)
            except GitError as exc:
                return PullOutcome(UNSIGNED, sha, f"commit {sha[:12]} is not signed by a key in "
                                   f"{self.config.allowed_signers}: {exc.message}")
        same = sha == self.last_good and self.git.head() == sha
        try:
            tree = self.git.repo if same else self.git.stage(sha)
            target = load_target(tree, self.config)
        except GpuprovError as exc:
            return PullOutcome(BAD_COMMIT, sha, f"commit {sha[:12]}: {exc}")
        try:
            outcome = self._converge(target, sha, same)
        except InventoryError as exc:
            # what loads only with the run: a role's tasks.py, a tag no role has
            return PullOutcome(BAD_COMMIT, sha, f"commit {sha[:12]}: {exc}")
        except GpuprovError as exc:
            return PullOutcome(FAILED, sha, _first(str(exc)))
        if outcome.result in (APPLIED, UNCHANGED) and not same:
            try:
                self.git.keep(sha)
            except GitError as exc:
                # the host is converged; only the checkout lags: the next run redoes it
                outcome.message = f"ran, but could not check out {sha[:12]}: {exc.message}"
        return outcome

    def _converge(self, target: PullTarget, sha: str, same: bool) -> PullOutcome:
        if same or self.check:
            run = self.runner(target, CHECK_COMMAND)
            stopped = _stopped(run, sha, same)
            if stopped is not None:
                return stopped
            drifted = self.drifted(run)
            if not drifted:
                return PullOutcome(UNCHANGED, sha, "", run, same)
            if self.check:
                return PullOutcome(DRIFT, sha, f"{drifted} resource(s) differ from commit "
                                   f"{sha[:12]}", run, same, drifted)
        else:
            drifted = 0
        run = self.runner(target, APPLY_COMMAND)
        outcome = _stopped(run, sha, same) or PullOutcome(APPLIED, sha, "", run, same)
        outcome.drifted = drifted
        return outcome


def _stopped(run: RunResult, sha: str, same: bool) -> PullOutcome | None:
    """busy or failed when the run did not go through on the host, else None."""
    for host in run.hosts.values():
        if host.error and host.error.startswith("busy"):
            return PullOutcome(BUSY, sha, host.error.splitlines()[0], run, same)
    reasons = [h.unreachable for h in run.hosts.values() if h.unreachable]
    reasons += [h.error for h in run.hosts.values() if h.error]
    reasons += [t.error or f"task '{t.task}' failed" for h in run.hosts.values()
                for t in h.tasks if t.status == TASK_FAILED]
    if run.aborted:
        reasons.append(run.aborted)
    if reasons:
        return PullOutcome(FAILED, sha, _first(reasons[0]), run, same)
    return None


def _first(error: str) -> str:
    """An error's first lines as one (a task's name, reason and command), for last.json."""
    return "; ".join(line.strip() for line in error.splitlines()[:3] if line.strip())


def _url(url: str) -> str:
    """A repo URL as said in a message: without a password (https://user:pw@...)."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return scheme + sep + rest
