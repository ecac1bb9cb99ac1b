"""The controller SIGKILLed at 20 random points of a converge (issue 15).

The bundled site.yml (base, sshd_hardening, the GPU stack, Jupyter, verify)
converges fresh fleet hosts with the stand-in repositories. Each host is a
lane with its own gpuprov process (`--limit HOST`), all lanes at once; a
lane's apply is SIGKILLed (its whole process group) at a moment drawn from
[0, T], T being the measured time of a clean converge, and the next apply
goes on from wherever the killed one left the host. After every kill: the
operator's key and sudo work, `sshd -t` passes, no gpuprov temp file is left,
nothing is half-installed (dpkg --audit, once the host's own apt/dpkg have
ended: they are not the controller's children and may outlive it). Every
third kill of a lane, and after its last one, the full nothing-lost check:
the next plain apply converges and drift-check is 0; a converged host gets a
fresh disk before its next kill, so kills keep landing mid-converge.

Reproducible: the kill moments are fractions of T drawn from one seed,
GPUPROV_FAULT_SEED (default below), shown in the test id and in every failure.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fleet.faults import (
    Lost,
    assert_nothing_lost,
    injected,
    temp_leftovers,
    wait_for_login,
)
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import write_site_inventory

SEED = int(os.environ.get("GPUPROV_FAULT_SEED", "15015"))
POINTS = 20
#: tries per kill point before the test gives up on reaching it
MAX_MISSES = 10
LANES = 3
#: the full nothing-lost check (apply + drift-check) after every FULL_EVERY-th kill of a lane
FULL_EVERY = 3
FAULT = "controller SIGKILLed mid-converge"
SSHD_ROLLBACK = "/var/lib/gpuprov/sshd-rollback"


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> Iterator[list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:LANES]
    assert len(chosen) == LANES
    for host in chosen:
        fleet.reset(host)
    yield chosen
    for host in chosen:   # the next test file finds them as freshly installed
        fleet.reset(host)


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    work = tmp_path_factory.mktemp("sigkill")
    write_site_inventory(fleet, hosts, work)
    return work


def start_apply(work: Path, host: FleetHost, name: str) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("TERM", None)
    env.pop("GPUPROV_LOCK_PATH", None)
    with open(work / f"{name}.log", "w") as log:
        # its own process group: the kill takes gpuprov and anything it started
        return subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml",
                                 "--limit", host.name], cwd=work, env=env, stdout=log,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def quiet(host: FleetHost, timeout: float = 120) -> None:
    """Wait for the host's own apt/dpkg (left running by the killed controller) to end."""
    deadline = time.monotonic() + timeout
    while host.exec("pgrep -x 'apt-get|dpkg|apt-key|gpg' >/dev/null", check=False
                    ).returncode == 0:
        if time.monotonic() > deadline:
            ps = host.exec("ps -eo pid,etimes,args", check=False).stdout
            raise Lost(f"{host.name}: apt/dpkg still running {timeout:g}s after the kill:\n{ps}")
        time.sleep(0.5)


def cheap_checks(fleet: Fleet, host: FleetHost, settle: float = 60) -> None:
    """What an operator relies on right after a kill: login + sudo, sshd -t,
    no temp file, nothing half-installed."""
    wait_for_login(fleet, host)
    sshd = host.exec("/usr/sbin/sshd -t", check=False)
    if sshd.returncode != 0:
        raise Lost(f"{host.name}: sshd -t fails: {sshd.stderr.strip()}")
    quiet(host)
    deadline = time.monotonic() + settle
    while (left := temp_leftovers(host)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        raise Lost(f"{host.name}: temp files left: {left}")
    audit = host.exec("dpkg --audit", check=False).stdout.strip()
    if audit:
        raise Lost(f"{host.name}: dpkg --audit after the kill: {audit}")


@dataclass
class Lane:
    host: FleetHost
    points: list[tuple[int, float]]            # (point index, fraction of T)
    kills: int = 0
    needs_reset: bool = False
    proc: subprocess.Popen[str] | None = None
    started: float = 0.0
    kill_at: float = 0.0
    point: tuple[int, float] = (0, 0.0)
    misses: int = 0
    #: the apply started on a fresh disk (the first, or right after a reset)
    fresh: bool = True
    #: what the kill moments are fractions of: T, or this host's own fresh converge
    span: float = 0.0
    check: Future[None] | None = None
    done: bool = False
    log: list[str] = field(default_factory=list)


def measure_converge(work: Path, hosts: list[FleetHost]) -> float:
    """T: a clean converge of the fresh hosts, all lanes at once (as the kills run)."""
    started = time.monotonic()
    procs = [start_apply(work, h, f"clean-{h.name}") for h in hosts]
    took = []
    for host, proc in zip(hosts, procs, strict=True):
        code = proc.wait(timeout=600)
        took.append(time.monotonic() - started)
        assert code == 0, (work / f"clean-{host.name}.log").read_text()[-3000:]
    return max(took)


@pytest.mark.parametrize("seed", [SEED], ids=[f"seed={SEED}"])
def test_controller_sigkilled_at_random_points_of_a_converge_loses_nothing(
        fleet: Fleet, hosts: list[FleetHost], workdir: Path, seed: int) -> None:
    rng = random.Random(seed)
    fractions = [rng.random() for _ in range(POINTS)]
    converge = measure_converge(workdir, hosts)
    print(f"\nseed={seed}: a clean converge of {LANES} hosts at once takes {converge:.1f}s",
          file=sys.stderr)
    for host in hosts:
        fleet.reset(host)
    lanes = [Lane(host, [(i, f) for i, f in enumerate(fractions) if i % LANES == n])
             for n, host in enumerate(hosts)]
    pool = ThreadPoolExecutor(max_workers=LANES)
    started = time.monotonic()
    try:
        while not all(lane.done for lane in lanes):
            for lane in lanes:
                step(lane, fleet, workdir, pool, converge, seed)
            time.sleep(0.02)
    finally:
        for lane in lanes:
            if lane.proc is not None and lane.proc.poll() is None:
                os.killpg(lane.proc.pid, signal.SIGKILL)
                lane.proc.wait()
        pool.shutdown(wait=True)
    print(f"seed={seed}: {POINTS} kills in {time.monotonic() - started:.0f}s\n"
          + "\n".join(line for lane in lanes for line in lane.log), file=sys.stderr)


def step(lane: Lane, fleet: Fleet, work: Path, pool: ThreadPoolExecutor, converge: float,
         seed: int) -> None:
    """Move one lane on: reset, start an apply, kill it, check, full check. The
    main thread only starts processes and resets hosts (a host dies with the
    thread that launched it); the checks run in the pool."""
    if lane.done:
        return
    if lane.check is not None:
        if not lane.check.done():
            return
        future, lane.check = lane.check, None
        future.result()   # a failure: the seed and point are in its message
        if not lane.points:
            lane.done = True
            return
    if lane.proc is None:
        if lane.needs_reset:
            fleet.reset(lane.host)
            lane.needs_reset = False
            lane.fresh = True
        index, fraction = lane.point = lane.points[0]
        lane.kill_at = fraction * (lane.span or converge)
        lane.started = time.monotonic()
        lane.proc = start_apply(work, lane.host, f"point-{index}-try-{lane.misses}")
        return
    ran = time.monotonic() - lane.started
    code = lane.proc.poll()
    index, _ = lane.point
    detail = f"seed={seed} point={index} t={lane.kill_at:.2f}s"
    if code is not None:
        # the apply ended before its kill moment: it converged (fresh disk, try
        # again a little earlier) or failed, a run that cannot converge after a kill
        lane.proc = None
        log = (work / f"point-{index}-try-{lane.misses}.log").read_text()
        if code != 0:
            with injected(FAULT, detail=detail):
                raise AssertionError(f"{detail}: {lane.host.name}: the apply after the "
                                     f"previous kill exited {code}:\n{log[-4000:]}")
        lane.misses += 1
        # A bound, not a tolerance of loss: the main thread may be busy resetting
        # another lane's host past this lane's kill moment (seen on a loaded
        # 2-core machine: 5 misses at t=14.3 s of a 15 s converge); each miss
        # retries on a fresh disk, a lost file still fails the check after a kill.
        assert lane.misses < MAX_MISSES, \
            f"{detail}: {lane.host.name} converged before the kill {MAX_MISSES} times"
        if lane.fresh:
            # alone it converges faster than T (measured with all lanes at once):
            # this lane's kill moments are fractions of its own converge from now on
            lane.span = ran
        lane.needs_reset = True
        lane.log.append(f"  {detail}: converged in {ran:.1f}s before the kill; fresh disk")
        return
    if ran < lane.kill_at:
        return
    os.killpg(lane.proc.pid, signal.SIGKILL)
    lane.proc.wait()
    lane.proc = None
    lane.fresh = False
    # what the controller's death leaves running on the host (not its children)
    remote = lane.host.exec("pgrep -lx 'apt-get|dpkg|docker|sleep|cat' | sort -k2 -u",
                            check=False).stdout.split("\n")
    lane.points.pop(0)
    lane.misses = 0
    lane.kills += 1
    full = lane.kills % FULL_EVERY == 0 or not lane.points
    left = ",".join(sorted({line.split()[1] for line in remote if line.strip()}))
    lane.log.append(f"  {detail}: {lane.host.name} killed; running on it: {left or '-'}"
                    + (" (full nothing-lost check)" if full else ""))
    lane.needs_reset = full
    lane.check = pool.submit(after_kill, fleet, lane.host, work, detail, full)


def after_kill(fleet: Fleet, host: FleetHost, work: Path, detail: str, full: bool) -> None:
    with injected(FAULT, detail=detail):
        try:
            cheap_checks(fleet, host)
            if full:
                assert_nothing_lost(fleet, [host], work, "--limit", host.name)
                # converged means no sshd revert still due (it would undo the change later)
                pending = host.exec(f"ls -d {SSHD_ROLLBACK} 2>/dev/null", check=False).stdout
                if pending.strip():
                    raise Lost(f"{host.name}: converged with an sshd revert pending: {pending}")
        except AssertionError as exc:
            raise type(exc)(f"{detail}: {exc}") from exc


#: on the host: the sshd change is armed and its last file (the moduli) written,
#: so what is left is sshd -t, the reload and the confirmation over a new login
ALL_WRITTEN_NOT_CONFIRMED = (
    f"[ -d {SSHD_ROLLBACK} ] && [ -f {SSHD_ROLLBACK}/restore ] && "
    "[ \"$(awk '$1 !~ /^#/ && NF >= 7 && $5 < 3071' /etc/ssh/moduli | wc -l)\" = 0 ]")
ARMED = f"[ -f {SSHD_ROLLBACK}/restore ]"


@pytest.mark.parametrize("moment", ["armed", "written, not confirmed"])
def test_a_kill_before_the_sshd_confirmation_does_not_hold_up_the_next_apply(
        fleet: Fleet, hosts: list[FleetHost], workdir: Path, moment: str) -> None:
    """The window the random points hit only now and then (found at seed 15015
    point 13): the next apply used to fail 'still waiting for its automatic
    revert' for up to sshd_revert_after, or report the host in sync with the
    revert still due. Now it undoes or confirms the earlier change at once."""
    host = hosts[0]
    probe = ARMED if moment == "armed" else ALL_WRITTEN_NOT_CONFIRMED
    with injected("controller SIGKILLed before the sshd confirmation", detail=moment):
        for _ in range(5):
            fleet.reset(host)
            proc = start_apply(workdir, host, "sshd-window")
            while proc.poll() is None and host.exec(probe, check=False).returncode != 0:
                time.sleep(0.005)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        else:
            pytest.fail(f"the apply confirmed the sshd change before the kill 5 times ({moment})")
        assert host.exec(f"[ -d {SSHD_ROLLBACK} ]", check=False).returncode == 0, \
            "killed after the confirmation"
        started = time.monotonic()
        again = subprocess.run([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml",
                                "--limit", host.name, "--tags", "sshd"], cwd=workdir,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=300)
        took = time.monotonic() - started
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
        assert took < 60, f"the next apply took {took:.0f}s"
        pending = host.exec(f"ls -d {SSHD_ROLLBACK} 2>/dev/null", check=False).stdout
        assert not pending.strip(), f"converged with an sshd revert still due: {pending}"
        assert_nothing_lost(fleet, [host], workdir, "--limit", host.name)
