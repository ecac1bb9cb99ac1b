"""A dpkg run killed mid-way (issue 15: the host rebooted during the driver
install) leaves dpkg's journal pending, and every apt-get install or remove
refuses until `dpkg --configure -a` has run. The ops that install or remove
Debian packages (ops/apt_packages.py, ops/kernel.py) read DpkgInterrupted and
plan that repair first (ops/dpkg_repair.py); check mode reports it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpuprov.facts.apt import (
    DPKG_UPDATES,
    AptCacheAge,
    AptCandidates,
    AptPolicy,
    DebHeld,
    DebPackage,
    DebPackages,
    DpkgInterrupted,
)
from gpuprov.facts.base import FactView
from gpuprov.ops import apt
from gpuprov.ops.dpkg_repair import CONFIGURE_PENDING
from gpuprov.ops.kernel import DebKernelHeaders
from tests.unit.test_ops_apt import DATA, INSTALL, plan, plan_broken, shells

CONFIGURE = ("env DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef "
             "--force-confold")
INTERRUPTED = {"DpkgInterrupted": True}


def test_the_fact_sees_journal_entries_not_dpkgs_temp_file() -> None:
    fact = DpkgInterrupted()
    assert fact.process("0000\ntmp.i\n", 0) is True
    assert fact.process("tmp.i\n", 0) is False
    assert fact.process("", 0) is False      # empty, or no dpkg at all (RHEL)


def test_the_fact_probe_on_a_journal(tmp_path: Path) -> None:
    updates = tmp_path / "updates"
    script = DpkgInterrupted().command().shell().replace(DPKG_UPDATES, str(updates))

    def probe() -> bool:
        res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                             timeout=30)
        return DpkgInterrupted().process(res.stdout, res.returncode)
    assert probe() is False                  # no such directory
    updates.mkdir()
    (updates / "tmp.i").write_text("")
    assert probe() is False
    (updates / "0003").write_text("Package: x\nStatus: install ok unpacked\n")
    assert probe() is True


def test_an_install_after_an_interrupted_run_finishes_it_first() -> None:
    assert CONFIGURE_PENDING.shell() == CONFIGURE
    repair, install = plan(apt.packages("nvidia-driver-580-server"), "ubuntu2404",
                           extra=INTERRUPTED)
    assert (repair.resource, repair.action) == ("dpkg", "repair")
    assert repair.summary.startswith("finish the interrupted dpkg run (dpkg --configure -a)")
    assert shells(repair) == [CONFIGURE] and repair.invalidates is None
    assert shells(install) == [f"{INSTALL} nvidia-driver-580-server"]


def test_packages_as_wanted_still_report_the_interrupted_run() -> None:
    # drift: apt refuses every later install or remove on this host
    [repair] = plan(apt.packages(["openssh-server", "bash"]), extra=INTERRUPTED)
    assert shells(repair) == [CONFIGURE]
    assert plan(apt.packages(["openssh-server", "bash"])) == []


def test_a_repair_of_a_half_configured_package_configures_once() -> None:
    op = apt.packages("libnvidia-gl-580-server")
    [broken] = plan_broken(op, "ubuntu2404")
    assert CONFIGURE in shells(broken)
    dpkg = DebPackages().process((DATA / "dpkg-check.ubuntu2404-broken").read_text(), 0)
    candidates = AptCandidates.unless(op.packages)
    values = {DebPackages(): dpkg, DebHeld(): frozenset(), DpkgInterrupted(): True,
              candidates: candidates.process((DATA / "apt-cache-policy.ubuntu2404").read_text(),
                                             0)}
    repair, fix = op.plan(FactView(values))
    assert shells(repair) == [CONFIGURE]
    assert CONFIGURE not in shells(fix)
    assert fix.summary == broken.summary


def test_a_removal_after_an_interrupted_run_finishes_it_first() -> None:
    op = apt.packages("openssh-server", state="absent")
    repair, remove = plan(op, extra=INTERRUPTED)
    assert shells(repair) == [CONFIGURE]
    assert remove.action == "remove"


def kernel_facts(installed: bool, interrupted: bool) -> FactView:
    name = "linux-headers-6.8.0-45-generic"
    packages = {name: DebPackage(name, "6.8.0-45.45", "amd64")} if installed else {}
    return FactView({
        DebPackages(): packages,
        AptCandidates.of([name]): {name: AptPolicy(name, None, "6.8.0-45.45")},
        AptCacheAge(): 60,
        DpkgInterrupted(): interrupted,
    })


def test_kernel_headers_finish_an_interrupted_run_first() -> None:
    op = DebKernelHeaders("6.8.0-45-generic")
    assert DpkgInterrupted() in op.facts()
    repair, install = op.plan(kernel_facts(installed=False, interrupted=True))
    assert shells(repair) == [CONFIGURE] and install.action == "install"
    [repair] = op.plan(kernel_facts(installed=True, interrupted=True))
    assert shells(repair) == [CONFIGURE]
    assert op.plan(kernel_facts(installed=True, interrupted=False)) == []
    [install] = op.plan(kernel_facts(installed=False, interrupted=False))
    assert install.action == "install"
