"""The apt repository failing (issue 15): the fleet's repo server answering
500, hanging, or serving a truncated Packages index (a mirror mid-sync), and
500 on the package downloads themselves. Each time the task fails with the
repository's URL, what went wrong and what to do, within the network timeout
(no minutes-long hang), with nothing installed or half-installed; once the
repository is healthy again nothing is lost and the next apply converges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fleet.faults import assert_nothing_lost, gpuprov, injected
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

PACKAGE = "mokutil"   # a small stand-in package (tests/standin_repo/packages.py)
NET_TIMEOUT = 2       # apt's per-try network timeout in this test (-e apt_net_timeout)

ROLE = """
from gpuprov.ops import apt


def tasks(ctx):
    yield apt.packages("mokutil", net_timeout=int(ctx.vars["apt_net_timeout"]))
"""

#: mode -> (fault served, whether the lists are fresh first, what the error says)
CASES = {
    "500 on the index": ("500", False, "answered 500 Internal Server Error: {repo}/./InRelease"),
    "500 on the packages": ("500", True, "answered 500 Internal Server Error: {repo}/./"),
    "timing out": ("hang", False, "could not be reached: "),
    "truncated Packages": ("truncated", False,
                           "serves files that do not match its Release file (a mirror "
                           "mid-sync?): {repo}/./Packages"),
}


@pytest.fixture(scope="module")
def host(fleet: Fleet) -> Iterator[FleetHost]:
    chosen = next(h for h in fleet.hosts if h.variant == "default")
    # the host is shared with other fleet tests: what this file installs goes again
    had = chosen.exec("dpkg-query -W -f='${Package} ${Status}\\n' 2>/dev/null | "
                      "awk '$NF == \"installed\" {print $1}'").stdout.split()
    yield chosen
    extra = [p for p in (PACKAGE, "gpuprov-test-doubles") if p not in had]
    chosen.exec(f"apt-get purge -y -qq {' '.join(extra)} >/dev/null; apt-get update -qq",
                check=False)


@pytest.fixture(scope="module")
def work(fleet: Fleet, host: FleetHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("aptrepo")
    (tmp / "inventory.yml").write_text(yaml.safe_dump(fleet.inventory([host]), sort_keys=False))
    (tmp / "playbooks").mkdir()
    (tmp / "playbooks" / "site.yml").write_text(
        "- name: apt repository faults\n  hosts: all\n  roles: [aptrepo]\n")
    role = tmp / "roles" / "aptrepo"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(
        "# seconds apt waits on a silent repository\napt_net_timeout: 15\n")
    return tmp


def installed(host: FleetHost) -> bool:
    status = host.exec(f"dpkg-query -W -f='${{Status}}' {PACKAGE}", check=False).stdout
    return status == "install ok installed"


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_repository_is_named_and_nothing_is_half_installed(
        fleet: Fleet, host: FleetHost, work: Path, case: str) -> None:
    mode, fresh_lists, says = CASES[case]
    assert fleet.repo_server is not None
    repo = f"{fleet.repo_url}/archive"
    host.exec(f"dpkg --purge {PACKAGE} >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*")
    if fresh_lists:   # the candidate is known: only the download can fail
        host.exec("apt-get update -qq")
    with injected(f"apt repository: {case}"):
        with fleet.repo_server.faulty(mode):
            start = time.monotonic()
            run = gpuprov("apply", "inventory.yml", "-e", f"apt_net_timeout={NET_TIMEOUT}",
                          cwd=work, timeout=300)
            took = time.monotonic() - start
            audit = host.exec("dpkg --audit").stdout.strip()
        out = run.stdout + run.stderr
        flat = " ".join(out.split())
        assert run.returncode == 2, out
        assert f"apt repository {repo} " + says.format(repo=repo) in flat, out
        assert "nothing was installed" in flat, out
        assert took < 60, f"the failing apply took {took:.0f}s"
        assert not installed(host)
        assert audit == "", audit
        # healthy again: the next apply installs, drift-check is clean
        assert_nothing_lost(fleet, [host], work)
        assert installed(host)
