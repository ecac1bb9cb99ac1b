"""Unreachable hosts fail fast (issue 15): a drift-check on 4 hosts, one of
them stopped (its network namespace is gone: no ARP reply, EHOSTUNREACH),
costs at most the connect timeout (-T) more than the same drift-check on the
3 others; one whose sshd is down (refused) costs no retries at all."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import gpuprov
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

ROLE = """
from gpuprov.ops.files import file

def tasks(ctx):
    yield file("/srv/unreachable-test", "managed\\n")
"""
TIMEOUT = 3
#: process start, imports and the report: the same in both runs, this is jitter
SLACK = 2.0


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, list[FleetHost]]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:4]
    assert len(chosen) == 4
    work = tmp_path_factory.mktemp("unreachable")
    (work / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory(chosen), sort_keys=False))
    role = work / "roles" / "unreach"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text("# (no variables)\n{}\n")
    (work / "one.yml").write_text("- name: one file\n  hosts: all\n  roles: [unreach]\n")
    done = gpuprov("apply", "inventory.yml", "-p", "one.yml", cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    yield work, chosen
    for host in chosen:
        host.exec("rm -f /srv/unreachable-test", check=False)


def drift_check(work: Path, *extra: str) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = gpuprov("drift-check", "inventory.yml", "-p", "one.yml", "-T", str(TIMEOUT),
                   *extra, cwd=work)
    return time.monotonic() - started, proc.returncode, proc.stdout + proc.stderr


def baseline(work: Path, others: list[FleetHost]) -> float:
    took, code, out = drift_check(work, "--limit", ",".join(h.name for h in others))
    assert code == 0, out
    return took


def test_a_stopped_host_costs_at_most_the_connect_timeout(
        workdir: tuple[Path, list[FleetHost]]) -> None:
    work, (*others, gone) = workdir
    base = baseline(work, others)
    gone.stop()
    try:
        took, code, out = drift_check(work)
    finally:
        gone.start()
    print(f"\ndrift-check -T {TIMEOUT}: 3 hosts {base:.1f}s, 3 + 1 stopped {took:.1f}s",
          file=sys.stderr)
    assert code == 4, out
    assert f"{gone.name}" in out and "timeout" in out, out
    assert took <= base + TIMEOUT + SLACK, f"{took:.1f}s with the stopped host, {base:.1f}s " \
        f"without: more than the {TIMEOUT}s connect timeout\n{out}"


def test_a_refused_connection_is_not_retried(workdir: tuple[Path, list[FleetHost]]) -> None:
    work, (*others, down) = workdir
    base = baseline(work, others)
    down.exec("service ssh stop")
    try:
        took, code, out = drift_check(work)
    finally:
        down.exec("service ssh start")
    print(f"\ndrift-check: 3 hosts {base:.1f}s, 3 + 1 refusing {took:.1f}s", file=sys.stderr)
    assert code == 4, out
    assert "refused" in out and "attempts" not in out, out
    assert took <= base + SLACK, f"{took:.1f}s with the refusing host, {base:.1f}s without\n{out}"
