"""AptCandidates asked only when a plan reads a candidate (issue 16): the
packages op's probe skips `apt-cache policy` (a load of apt's whole package
cache) when dpkg has every package installed as wanted, deciding on the host
in the same round trip. The shell's decision is checked against dpkg-query and
apt-cache stand-ins, and against the Python model of it the role tests use."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.apt import AptCandidates, DebHeld, DebPackage, DebPackages, DpkgInterrupted
from gpuprov.facts.base import FactView
from gpuprov.ops import apt
from tests.unit.role_harness import candidates_answer

DATA = Path(__file__).parent / "data" / "facts"
DEBIAN_FAMILY = ("ubuntu2204", "ubuntu2404", "debian12")


def test_the_op_asks_conditionally_only_where_the_plan_may_not_read_the_candidate() -> None:
    present = apt.packages({"bash": None, "nvidia-utils-580-server": "580.95*"})
    assert present.facts()[-1] == AptCandidates(
        ("bash", "nvidia-utils-580-server"),
        (("bash", "*"), ("nvidia-utils-580-server", "580.95*")))
    # latest always compares with the candidate; absent never reads one
    assert apt.packages("bash", state="latest").facts()[-1] == AptCandidates(("bash",))
    assert not any(isinstance(f, AptCandidates)
                   for f in apt.packages("bash", state="absent").facts())


def test_a_name_with_arch_asks_apt_unconditionally() -> None:
    assert AptCandidates.unless({"libc6:i386": None, "bash": None}) == AptCandidates(
        ("bash", "libc6:i386"))
    assert AptCandidates.unless({}) == AptCandidates(())
    assert AptCandidates(()).command().shell().endswith("exit 0; true;")  # asks nothing


def test_the_unconditional_probe_asks_apt_cache_alone() -> None:
    assert AptCandidates(("nvidia-utils-580-server",)).command().shell() == (
        "command -v apt-cache >/dev/null 2>&1 || exit 0; "
        "apt-cache policy -- nvidia-utils-580-server ;")


# ---------------------------------------------------------------- the shell, with stand-ins

#: name arch want flag state version, as the stand-in dpkg-query knows them
HOST = """\
bash amd64 install ok installed 5.2.15-2+b8
tzdata all install ok installed 2024a-0+deb12u1
nvidia-utils-580-server amd64 hold ok installed 580.95.05-0ubuntu0.24.04.2
half amd64 install ok half-configured 1.0
gone amd64 deinstall ok config-files 1.0
pending amd64 install ok triggers-pending 2.0
libfoo i386 install ok installed 1.0
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    (tmp_path / "host").write_text(HOST)
    scripts = {
        "dpkg": "#!/bin/sh\necho amd64\n",
        # prints the -f fields the probe asks for (name, arch, status, version) of
        # every name after --, and counts its calls
        "dpkg-query": f'#!/bin/sh\necho x >> {tmp_path}/queried\n'
                      'while [ "$1" != -- ]; do shift; done; shift\n'
                      f'for n; do awk -v n="$n" \'$1 == n\' {tmp_path}/host; done\n',
        "apt-cache": f'#!/bin/sh\necho "$@" >> {tmp_path}/asked\n'
                     'shift 2; for n; do printf \'%s:\\n  Installed: (none)\\n'
                     '  Candidate: 9.9\\n  Version table:\\n     9.9 500\\n\' "$n"; done\n',
    }
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    return tmp_path


def probe(fact: AptCandidates, bin_dir: Path) -> tuple[dict, list[str]]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LC_ALL": "C"}
    out = subprocess.run(["/bin/sh", "-c", fact.command().shell()], capture_output=True,
                         text=True, env=env, timeout=30, check=True).stdout
    asked = bin_dir / "asked"
    calls = asked.read_text().splitlines() if asked.exists() else []
    asked.unlink(missing_ok=True)
    return fact.process(out, 0), calls


def host_dpkg() -> dict[str, DebPackage]:
    rows = [line.split() for line in HOST.splitlines()]
    return {(n if a in ("amd64", "all") else f"{n}:{a}"): DebPackage(n, v, a, w, s)
            for n, a, w, _f, s, v in rows}


@pytest.mark.parametrize(("packages", "skipped"), [
    ({"bash": None}, True),
    ({"bash": None, "tzdata": None}, True),                     # arch all
    ({"bash": "5.2.15-2+b8"}, True),                            # exact
    ({"nvidia-utils-580-server": "580.95*"}, True),             # glob, held
    ({"pending": None}, True),                                  # triggers-pending is installed
    ({"bash": "5.2.15-2+b9"}, False),                           # another version
    ({"nvidia-utils-580-server": "580.82*"}, False),
    ({"bash": None, "missing": None}, False),                   # one not installed
    ({"half": None}, False),                                    # half-configured
    ({"gone": None}, False),                                    # config-files only
    ({"libfoo": None}, False),                                  # a foreign arch only
    ({"libfoo:i386": None}, False),                             # :arch: always asked
])
def test_the_shell_skips_apt_cache_exactly_when_dpkg_settles_every_package(
        stand_ins: Path, packages: dict, skipped: bool) -> None:
    fact = AptCandidates.unless(packages)
    answer, calls = probe(fact, stand_ins)
    assert (calls == []) == skipped
    if skipped:
        assert answer == {}
    else:
        assert calls == [f"policy -- {' '.join(fact.names)}"]
        assert set(answer) == set(fact.names)
    # the role tests' model of the probe decides the same
    assert (candidates_answer(fact, host_dpkg(), answer) == {}) == skipped


def test_ops_of_a_play_share_one_dpkg_query_and_ask_apt_cache_where_needed(
        stand_ins: Path) -> None:
    from gpuprov.facts.base import gather_script, parse_batch

    settled = AptCandidates.unless({"bash": None, "tzdata": None})
    unsettled = AptCandidates.unless({"bash": "5.2.15-2+b9"})
    always = AptCandidates.of(["half"])
    empty = AptCandidates(())
    facts = [settled, unsettled, always, empty]
    script, marker = gather_script(facts)
    env = {**os.environ, "PATH": f"{stand_ins}:{os.environ['PATH']}", "LC_ALL": "C"}
    out = subprocess.run(["/bin/sh", "-s"], input=script, capture_output=True, text=True,
                         env=env, timeout=30, check=True).stdout
    got = parse_batch(facts, out, marker)
    assert got[settled] == {} and got[empty] == {}
    assert set(got[unsettled]) == {"bash"} and set(got[always]) == {"half"}
    assert (stand_ins / "queried").read_text() == "x\n"          # one dpkg-query
    assert (stand_ins / "asked").read_text().splitlines() == [   # apt-cache where needed
        "policy -- bash", "policy -- half"]


def test_the_unconditional_probe_always_asks(stand_ins: Path) -> None:
    _, calls = probe(AptCandidates.of(["bash"]), stand_ins)
    assert calls == ["policy -- bash"]


# ---------------------------------------------------------------- the plans, per distro

def facts_for(op: apt.AptPackages, distro: str, answer: dict | None = None) -> FactView:
    path = DATA / f"dpkg-query.{distro}"
    dpkg = DebPackages().process(path.read_text() if path.exists() else
                                 (DATA / f"dpkg-check.{distro}-broken").read_text(), 0)
    cand = next(f for f in op.facts() if isinstance(f, AptCandidates))
    full = cand.process((DATA / f"apt-cache-policy.{distro}").read_text(), 0)
    return FactView({DebPackages(): dpkg, DpkgInterrupted(): False,
                     DebHeld(): frozenset(n for n, p in dpkg.items() if p.want == "hold"),
                     cand: candidates_answer(cand, dpkg, full) if answer is None else answer})


INSTALLED = {"ubuntu2204": {"openssh-server": "1:8.9p1-3ubuntu0.13", "bash": "5.1*"},
             "ubuntu2404": {"bash": "5.2.21-2ubuntu4", "apt": None},
             "debian12": {"openssh-server": "1:9.2p1*", "bash": None}}


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_a_converged_host_plans_nothing_without_apt_cache(distro: str) -> None:
    op = apt.packages(INSTALLED[distro])
    view = facts_for(op, distro)
    assert view[op.facts()[-1]] == {}          # the probe skipped apt-cache
    assert op.plan(view) == []


#: a package each canned host lacks and its canned apt-cache policy knows
TO_INSTALL = {"ubuntu2204": "nvidia-headless-580-server", "ubuntu2404": "cuda-keyring",
              "debian12": "nvidia-open"}


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_a_package_to_install_still_reads_its_candidate(distro: str) -> None:
    op = apt.packages({**INSTALLED[distro], TO_INSTALL[distro]: None})
    view = facts_for(op, distro)
    assert TO_INSTALL[distro] in view[op.facts()[-1]]    # apt-cache asked
    [change] = op.plan(view)
    assert (change.action, change.unknown) == ("install", None)
    assert change.summary == f"install {TO_INSTALL[distro]}"



def test_the_conditional_probe_survives_the_fact_plan() -> None:
    """engine/prefetch.py keeps a host's facts as JSON for its next run."""
    from gpuprov.engine.prefetch import decode, encode

    fact = AptCandidates.unless({"bash": None, "nvidia-utils-580-server": "580.95*"})
    entry = encode(fact)
    assert entry is not None and decode(entry) == fact
