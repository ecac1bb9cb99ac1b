"""apt commands as gpuprov runs them (ops/apt_commands.py): the lock wait and
the network timeouts per verb, and failures read into reasons a person acts
on, from apt's real output (captured on Debian 12's apt 2.6 against the
fleet's repo server in each fault mode: tests/unit/data/apt-failures/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.facts.apt import (
    AptCacheAge,
    AptCandidates,
    DebHeld,
    DebPackages,
    DpkgInterrupted,
    DpkgLock,
    DpkgLocked,
)
from gpuprov.facts.base import FactView
from gpuprov.ops import apt
from gpuprov.ops.apt_commands import NET_RETRIES, NET_TIMEOUT, apt_failure, apt_get, apt_step
from gpuprov.ops.base import Explained, Failure
from tests.unit.role_facts import DEBIAN_FAMILY, apt_install, apt_update

DATA = Path(__file__).parent / "data" / "apt-failures"
FACTS = Path(__file__).parent / "data" / "facts"
NET = (f"-o Acquire::http::Timeout={NET_TIMEOUT} -o Acquire::https::Timeout={NET_TIMEOUT} "
       f"-o Acquire::Retries={NET_RETRIES}")
APT = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l apt-get"


def captured(name: str, diagnosis: object = None, code: int = 100) -> Failure:
    out, err = DATA / f"{name}.stdout", DATA / f"{name}.stderr"
    return Failure(code, out.read_text() if out.exists() else "",
                   err.read_text() if err.exists() else "", diagnosis)


def explained(failure: Failure, lock_timeout: int = 60) -> Explained:
    got = apt_failure(lock_timeout)(failure)
    assert got is not None
    return got


# ---------------------------------------------------------------- command lines

def test_fetching_verbs_carry_the_network_timeouts_and_update_fails_on_any_index() -> None:
    assert apt_get("update").shell() == (
        f"{APT} update -y -o DPkg::Lock::Timeout=120 {NET} -o APT::Update::Error-Mode=any")
    assert apt_get("install", packages=["a"], lock_timeout=30, net_timeout=5).shell() == (
        f"{APT} install -y -o DPkg::Lock::Timeout=30 -o Acquire::http::Timeout=5 "
        "-o Acquire::https::Timeout=5 -o Acquire::Retries=1 -- a")
    assert "Error-Mode" not in apt_get("install", packages=["a"]).shell()


@pytest.mark.parametrize("verb", ["remove", "purge", "autoremove"])
def test_verbs_that_never_download_have_no_network_options(verb: str) -> None:
    assert apt_get(verb, packages=["a"]).shell() == (
        f"{APT} {verb} -y -o DPkg::Lock::Timeout=120 -- a")


def test_apt_steps_are_explained_and_diagnosed_by_the_lock_probe() -> None:
    for step in (apt_step("update"), apt.apt_mark("hold", ["a"])):
        assert step.explain is not None and step.diagnose == DpkgLocked()
    # explain and diagnose are no part of what a step does: plans compare as before
    assert apt_step("update") == apt_step("update", lock_timeout=120)


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_packages_op_commands_per_distro(distro: str) -> None:
    """A fresh install from an empty cache, the same on Ubuntu 22.04/24.04 and Debian 12."""
    canned = FACTS / f"dpkg-query.{distro}"
    dpkg = DebPackages().process(canned.read_text() if canned.exists() else "", 0)
    facts = FactView({DebPackages(): dpkg, DebHeld(): frozenset(), DpkgInterrupted(): False,
                      AptCandidates.unless({"mokutil": None}): {}})
    changes = apt.packages("mokutil", lock_timeout=7, net_timeout=3).plan(facts)
    shells = [s.command.shell() for s in changes[0].steps]
    assert shells == [apt_update(7).replace("Timeout=15", "Timeout=3"),
                      apt_install("mokutil", timeout=7).replace("Timeout=15", "Timeout=3")]
    assert all(s.explain is not None for s in changes[0].steps)


def test_update_op_and_repository_refresh_take_the_net_timeout() -> None:
    update = apt.apt_update(cache_valid_time=0, net_timeout=4)
    step = update.plan(FactView({AptCacheAge(): 10}))[0].steps[0]
    assert "Acquire::http::Timeout=4" in step.command.shell() and step.explain is not None
    repo = apt.apt_repository("r", "https://repo.example/deb", "stable/", net_timeout=6)
    assert "Acquire::https::Timeout=6" in repo.update_step().command.shell()


# ---------------------------------------------------------------- the dpkg lock

def test_lock_timeout_names_the_holder_with_its_command_line() -> None:
    holder = DpkgLock((("/var/lib/dpkg/lock-frontend", 5,
                        "/usr/bin/python3 /usr/bin/unattended-upgrade --download-only"),))
    got = explained(captured("lock-frontend.debian12", holder))
    assert got.reason == ("dpkg lock /var/lib/dpkg/lock-frontend held by pid 5 (/usr/bin/python3 "
                          "/usr/bin/unattended-upgrade --download-only) for longer than 60s")
    assert got.hint is not None and "nvidia_driver_apt_lock_timeout" in got.hint


def test_lock_timeout_without_a_diagnosis_names_apts_holder() -> None:
    """The holder may be gone by the time the probe runs: apt's own words stay."""
    got = explained(captured("lock-frontend.debian12", DpkgLock()), lock_timeout=5)
    assert got.reason == ("dpkg lock /var/lib/dpkg/lock-frontend held by pid 5 (python3) "
                          "for longer than 5s")
    other = DpkgLock((("/var/lib/dpkg/lock-frontend", 77, "apt-get install x"),))
    # a new holder since apt gave up: the one holding it now is named
    assert "pid 77 (apt-get install x)" in explained(captured("lock-frontend.debian12",
                                                              other)).reason


def test_lists_lock_is_not_waited_for_and_says_so() -> None:
    got = explained(captured("lists-lock.debian12"))
    assert got.reason == ("apt lists lock /var/lib/apt/lists/lock held by pid 5 (python3): "
                          "another apt-get update is running")


def test_dpkg_own_lock_message() -> None:
    failure = Failure(2, "", "dpkg: error: dpkg frontend lock was locked by another process "
                             "with pid 1234\nNote: removing the lock file is always wrong\n")
    holder = DpkgLock((("/var/lib/dpkg/lock-frontend", 1234, "dpkg -i x.deb"),))
    got = explained(Failure(2, failure.stdout, failure.stderr, holder))
    assert got.reason == ("dpkg lock /var/lib/dpkg/lock-frontend held by pid 1234 "
                          "(dpkg -i x.deb) for longer than 60s")


# ---------------------------------------------------------------- the repository

def test_repository_answering_500_is_named() -> None:
    got = explained(captured("update-500.debian12"))
    assert got.reason == ("apt repository http://127.0.0.1:8111/archive answered 500 Internal "
                          "Server Error: http://127.0.0.1:8111/archive/./InRelease")
    assert got.hint is not None and "nothing was installed" in got.hint


def test_repository_timing_out_is_named() -> None:
    got = explained(captured("update-hang.debian12"))
    assert got.reason == ("apt repository http://127.0.0.1:8111/archive could not be reached: "
                          "Connection failed: http://127.0.0.1:8111/archive/./InRelease")


def test_truncated_index_is_named_as_a_mirror_out_of_step() -> None:
    got = explained(captured("update-truncated.debian12"))
    assert got.reason.startswith("apt repository http://127.0.0.1:8111/archive serves files "
                                 "that do not match its Release file")
    assert got.reason.endswith("http://127.0.0.1:8111/archive/./Packages.gz")


def test_package_downloads_failing_name_the_repository_and_count_the_rest() -> None:
    got = explained(captured("install-500.debian12"))
    assert got.reason == (
        "apt repository http://127.0.0.1:8111/archive answered 500 Internal Server Error: "
        "http://127.0.0.1:8111/archive/./gpuprov-test-doubles_1.0-1_all.deb (and 1 more download)")


def test_a_standard_repository_is_named_by_its_base_url() -> None:
    """Ubuntu's layout (dists/, pool/), in apt 2.4's words (22.04)."""
    update = Failure(100, "Err:1 http://archive.ubuntu.com/ubuntu jammy InRelease\n"
                          "  503  Service Unavailable [IP: 185.125.190.36 80]\n",
                     "E: Failed to fetch http://archive.ubuntu.com/ubuntu/dists/jammy/InRelease"
                     "  503  Service Unavailable [IP: 185.125.190.36 80]\n")
    assert explained(update).reason.startswith(
        "apt repository http://archive.ubuntu.com/ubuntu answered 503 Service Unavailable")
    # no Err: line (stderr only): the URL up to its pool/
    install = Failure(100, "", "E: Failed to fetch https://nvidia.github.io/libnvidia-container"
                               "/stable/deb/amd64/pool/n/x.deb  Hash Sum mismatch\n")
    got = explained(install)
    assert got.reason.startswith("apt repository https://nvidia.github.io/libnvidia-container"
                                 "/stable/deb/amd64 serves files that do not match")


def test_other_failures_are_left_as_they_are() -> None:
    assert apt_failure(60)(Failure(100, "", "E: Unable to locate package nosuch\n")) is None
