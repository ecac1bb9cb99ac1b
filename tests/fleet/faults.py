"""Injected faults (issue 15): the one "nothing lost" check every fault test
ends with, and the tally behind the reliability summary that the test run
prints (tried / survived / lost).

A fault test wraps the fault and its checks in `injected("name")`:

    with injected("network cut mid-apply"):
        ... cut the link, let the run end, restore the link ...
        assert_nothing_lost(fleet, [victim], work)

A failure of assert_nothing_lost counts as data lost; any other failure
inside the block as a fault not survived; a clean exit as survived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

#: where gpuprov writes on the fleet's hosts (managed files, its own state)
MANAGED_DIRS = ("/etc", "/srv", "/opt", "/usr/local", "/var/lib/gpuprov", "/home", "/root")
#: names of gpuprov's temp files: atomic writes (ops/atomic.py) and restores (ops/armed.py)
TEMP_PATTERNS = (".gpuprov-*", "*.gpuprov-restore")


class Lost(AssertionError):
    """Something an operator relies on did not survive the fault."""


@dataclass
class FaultRecord:
    fault: str
    survived: bool
    lost: str = ""      # what was lost ("" when nothing was)
    detail: str = ""    # why the fault was not survived (seed, first line of the error)


RECORDS: list[FaultRecord] = []


@contextmanager
def injected(fault: str, detail: str = "") -> Iterator[None]:
    """Count one injected fault in the reliability summary."""
    try:
        yield
    except Lost as exc:
        RECORDS.append(FaultRecord(fault, False, str(exc).splitlines()[0], detail))
        raise
    except BaseException as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        RECORDS.append(FaultRecord(fault, False, "", f"{detail} {first}".strip()))
        raise
    RECORDS.append(FaultRecord(fault, True, "", detail))


def summary_lines() -> list[str]:
    """The reliability summary: one line of totals, then one line per fault kind."""
    if not RECORDS:
        return []
    lost = [r for r in RECORDS if r.lost]
    survived = sum(r.survived for r in RECORDS)
    plural = "" if len(RECORDS) == 1 else "s"
    lines = [f"reliability: {len(RECORDS)} fault{plural} injected, {survived} survived, "
             f"{len(lost)} lost something"]
    kinds: dict[str, list[FaultRecord]] = {}
    for record in RECORDS:
        kinds.setdefault(record.fault, []).append(record)
    for kind, records in kinds.items():
        ok = sum(r.survived for r in records)
        lost_here = sum(bool(r.lost) for r in records)
        lines.append(f"  {kind}: {len(records)} tried, {ok} survived, {lost_here} lost")
        lines += [f"    FAILED {r.detail}: {r.lost}".rstrip(": ") for r in records
                  if not r.survived]
    return lines


def write_summary(path: str) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in RECORDS], indent=2) + "\n")


def gpuprov(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it (no terminal, the real host lock)."""
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("TERM", None)
    env.pop("GPUPROV_LOCK_PATH", None)
    return subprocess.run([sys.executable, "-m", "gpuprov.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def temp_leftovers(host: FleetHost) -> list[str]:
    """gpuprov temp files anywhere it writes on the host."""
    names = " -o ".join(f"-name '{p}'" for p in TEMP_PATTERNS)
    found = host.exec(f"find {' '.join(MANAGED_DIRS)} -xdev \\( {names} \\) -print 2>/dev/null",
                      check=False)
    return found.stdout.split()


def wait_for_login(fleet: Fleet, host: FleetHost, timeout: float = 120) -> None:
    """The operator's key logs in and sudo works (the host may be rebooting)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = fleet.ssh(host, "sudo -n true", check=False)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise Lost(f"{host.name}: the operator's key + sudo no longer work: "
                       f"{probe.stderr.strip()[-300:]}")
        time.sleep(1)


def assert_nothing_lost(fleet: Fleet, hosts: Sequence[FleetHost], work: Path,
                        *apply_args: str, inventory: str = "inventory.yml",
                        settle: float = 90) -> None:
    """After a fault: every host answers the operator's key (+ sudo), its sshd
    config is valid, no gpuprov temp file and no half-installed package is
    left, and a plain apply converges with drift-check 0 right after.

    `settle`: seconds to wait for the hosts' own cleanup (a dead connection's
    EXIT traps, an armed revert) before temp files count as lost."""
    for host in hosts:
        wait_for_login(fleet, host)
        sshd = host.exec("/usr/sbin/sshd -t", check=False)
        if sshd.returncode != 0:
            raise Lost(f"{host.name}: sshd -t fails: {sshd.stderr.strip()}")
        deadline = time.monotonic() + settle
        while (left := temp_leftovers(host)) and time.monotonic() < deadline:
            time.sleep(1)
        if left:
            # who still has them open: a session the host never saw end?
            seen = host.exec("ss -tnpo state all; ps -eo pid,ppid,stat,etime,args",
                             check=False).stdout
            raise Lost(f"{host.name}: temp files left: {left}\n{seen}")
    again = gpuprov("apply", inventory, *apply_args, cwd=work)
    if again.returncode != 0:
        raise Lost(f"the next apply did not converge (exit {again.returncode}):\n"
                   f"{again.stdout[-3000:]}{again.stderr[-2000:]}")
    for host in hosts:
        audit = host.exec("dpkg --audit", check=False).stdout.strip()
        if audit:
            raise Lost(f"{host.name}: dpkg --audit after the apply: {audit}")
    drift = gpuprov("drift-check", inventory, *apply_args, cwd=work)
    if drift.returncode != 0:
        raise Lost(f"drift-check after the apply: exit {drift.returncode}:\n"
                   f"{drift.stdout[-3000:]}{drift.stderr[-2000:]}")
