"""Unmet dependencies computed on the controller from dpkg-query's fields
(DebPackages, facts/debdeps.py): what `apt-get check` said, without loading
apt's package cache on the host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.facts.apt import DebPackages
from gpuprov.facts.base import gather_script, parse_batch
from gpuprov.facts.debdeps import Relation, parse_relations

DATA = Path(__file__).parent / "data" / "facts"
OK = "install ok installed"


def dpkg(*rows: tuple[str, ...], native: str = "amd64") -> str:
    """dpkg-query output as DebPackages prints it: Package, Architecture,
    Version, Status, Multi-Arch, Pre-Depends, Depends, Provides, Breaks, Conflicts."""
    lines = [f"native\t{native}"]
    lines += ["\t".join([*row, *[""] * (10 - len(row))]) for row in rows]
    return "\n".join(lines) + "\n"


def unmet(output: str) -> dict[str, tuple[str, ...]]:
    return {k: p.unmet for k, p in DebPackages().process(output, 0).items() if p.unmet}


def test_the_probe_is_one_dpkg_query_and_no_apt() -> None:
    shell = DebPackages().command().shell()
    assert "dpkg-query -W" in shell and "apt-get" not in shell and "apt-cache" not in shell
    for field in ("Multi-Arch", "Pre-Depends", "Depends", "Provides", "Breaks", "Conflicts"):
        assert "${" + field + "}" in shell


def test_parse_relations() -> None:
    assert parse_relations("libc6 (>= 2.34), a | b:any (<< 2~), c:native") == [
        (Relation("libc6", None, ">=", "2.34"),),
        (Relation("a"), Relation("b", "any", "<<", "2~")),
        (Relation("c", "native"),)]
    assert parse_relations("") == [] and parse_relations(", x") == [(Relation("x"),)]
    assert str(Relation("b", "any", "<<", "2~")) == "b:any (< 2~)"   # apt-get check's spelling


def test_satisfied_missing_and_wrong_version() -> None:
    out = dpkg(("app", "amd64", "1.0", OK, "", "", "liba (>= 1.2), libb, libc (= 3-1)"),
               ("liba", "amd64", "1.2-1", OK, "same"),
               ("libc", "amd64", "3-2", OK, "same"))
    assert unmet(out) == {"app": ("depends on libb (not installed)",
                                  "depends on libc (= 3-1) (3-2 is installed)")}


@pytest.mark.parametrize(("op", "installed", "met"), [
    ("<<", "1.9", True), ("<<", "2.0", False), ("<=", "2.0", True), ("<=", "2.0.1", False),
    ("=", "2.0", True), ("=", "1:2.0", False), (">=", "2.0", True), (">=", "2.0~rc1", False),
    (">>", "2.0+b1", True), (">>", "2.0", False),
    ("<", "2.0", True), (">", "2.0", True),     # the obsolete spellings of <= and >=
])
def test_version_relations(op: str, installed: str, met: bool) -> None:
    out = dpkg(("app", "amd64", "1", OK, "", f"lib ({op} 2.0)"),
               ("lib", "amd64", installed, OK))
    shown = {"<<": "<", ">>": ">"}.get(op, op)
    assert unmet(out) == ({} if met else {
        "app": (f"pre-depends on lib ({shown} 2.0) ({installed} is installed)",)})


def test_alternatives() -> None:
    rows = [("app", "amd64", "1", OK, "", "", "mawk | gawk (>= 5), tzdata")]
    tzdata = ("tzdata", "all", "2024a", OK)
    assert unmet(dpkg(*rows, ("gawk", "amd64", "5.2.1-2", OK), tzdata)) == {}
    assert unmet(dpkg(*rows, ("gawk", "amd64", "4.2", OK), tzdata)) == {
        "app": ("depends on mawk (not installed) or gawk (>= 5) (4.2 is installed)",)}


def test_virtual_packages_through_provides() -> None:
    rows = [("app", "amd64", "1", OK, "", "", "mail-transport-agent")]
    assert unmet(dpkg(*rows)) == {"app": ("depends on mail-transport-agent (not installed)",)}
    assert unmet(dpkg(*rows, ("postfix", "amd64", "3.7", OK, "", "", "",
                              "mail-transport-agent", "", "mail-transport-agent"))) == {}


def test_versioned_provides() -> None:
    """Policy 7.5: only a versioned Provides meets a versioned dependency, by its version."""
    app = ("app", "amd64", "1", OK, "", "", "libperl-api (>= 5.36)")
    assert unmet(dpkg(app, ("perl", "amd64", "5.36.0-7", OK, "", "", "", "libperl-api"))) == {
        "app": ("depends on libperl-api (>= 5.36) (not installed)",)}
    assert unmet(dpkg(app, ("perl", "amd64", "5.36.0-7", OK, "", "", "",
                            "libperl-api (= 5.36.0), perl-base"))) == {}
    assert unmet(dpkg(app, ("perl", "amd64", "5.34.0-3", OK, "", "", "",
                            "libperl-api (= 5.34.0)"))) == {
        "app": ("depends on libperl-api (>= 5.36) (not installed)",)}
    # a versioned provide meets an unversioned dependency too
    perl = ("perl", "amd64", "5.36.0-7", OK, "", "", "", "libperl-api (= 5.36.0)")
    assert unmet(dpkg(("app", "amd64", "1", OK, "", "", "libperl-api"), perl)) == {}


def test_half_installed_and_config_files() -> None:
    """Like apt-get check, a dependency in any state but config-files or
    not-installed is on the host (the op reports a half-configured one itself);
    a package that is not on the host has no unmet dependencies."""
    out = dpkg(("app", "amd64", "1", OK, "", "", "liba, libb, libc"),
               ("liba", "amd64", "1", "install ok half-configured"),
               ("libb", "amd64", "1", "install reinstreq half-installed"),
               ("libc", "amd64", "1", "deinstall ok config-files"),
               ("gone", "amd64", "1", "deinstall ok config-files", "", "", "nothing-here"),
               ("new", "amd64", "1", "install ok not-installed", "", "", "nothing-here"))
    assert unmet(out) == {"app": ("depends on libc (not installed)",)}
    pkgs = DebPackages().process(out, 0)
    assert pkgs["liba"].broken and pkgs["libb"].broken and not pkgs["libc"].installed


def test_multi_arch() -> None:
    """An unqualified dependency takes the dependant's own architecture, `all`,
    or a Multi-Arch: foreign package; :any any architecture; :native the host's."""
    tools = ("tools", "amd64", "1", OK, "foreign")
    out = dpkg(("app", "i386", "1", OK, "same", "", "libc6, tools, perl:any, gcc:native"),
               ("libc6", "amd64", "2.36", OK, "same"),
               ("libc6", "i386", "2.36", OK, "same"),
               tools,
               ("perl", "amd64", "5.36", OK, "allowed"),
               ("gcc", "amd64", "12", OK))
    assert unmet(out) == {}
    pkgs = DebPackages().process(out, 0)
    assert set(pkgs) >= {"app:i386", "libc6", "libc6:i386"}
    # the i386 package's libc6 is amd64 only: unmet, keyed by name:arch
    out = dpkg(("app", "i386", "1", OK, "same", "", "libc6 (>= 2.34)"),
               ("libc6", "amd64", "2.36", OK, "same"),
               ("arch-all", "all", "1", OK, "", "", "libc6"))   # all: the host's own arch
    assert unmet(out) == {"app:i386": ("depends on libc6 (>= 2.34) (2.36 is installed)",)}
    # a provider's architecture counts like a real package's
    out = dpkg(("app", "i386", "1", OK, "", "", "libgl1"),
               ("mesa", "amd64", "23", OK, "same", "", "", "libgl1"))
    assert unmet(out) == {"app:i386": ("depends on libgl1 (not installed)",)}


def test_breaks_and_conflicts_count_real_packages_of_other_names() -> None:
    out = dpkg(("new", "amd64", "2", OK, "", "", "", "", "old (<< 2)", "rival"),
               ("old", "amd64", "1.5", OK),
               ("rival", "i386", "3", OK))
    assert unmet(out) == {"new": ("breaks old (< 2) (1.5 is installed)",
                                  "conflicts with rival (3 is installed)")}
    # Provides + Conflicts of one virtual name: one of these at a time, no breakage
    assert unmet(dpkg(("containerd.io", "amd64", "1.7", OK, "", "", "", "containerd, runc",
                       "", "containerd, runc"))) == {}
    assert unmet(dpkg(("new", "amd64", "2", OK, "", "", "", "", "old (<< 2)"),
                      ("old", "amd64", "2.1", OK))) == {}


@pytest.mark.parametrize(("distro", "expected"), [
    ("ubuntu2204-broken", {
        "nvidia-headless-no-dkms-580-server": (
            "depends on libnvidia-compute-580-server (= 580.82.07-0ubuntu0.22.04.1) "
            "(not installed)",),
        "nvidia-utils-580-server": ("depends on libnvidia-compute-580-server (not installed)",)}),
    ("ubuntu2404-broken", {
        "nvidia-driver-580-server": (
            "depends on libnvidia-compute-580-server (= 580.95.05-0ubuntu0.24.04.2) "
            "(not installed)",
            "depends on libnvidia-decode-580-server (= 580.95.05-0ubuntu0.24.04.2) "
            "(not installed) or libnvidia-decode-580 (not installed)")}),
    ("debian12-broken", {
        "chrony": ("depends on libnettle8 (not installed)",
                   "depends on libseccomp2 (>= 2.5.0) (2.4.4-1 is installed)"),
        "nvidia-driver": ("depends on nvidia-kernel-dkms (= 535.247.01-1~deb12u1) "
                          "(not installed) or nvidia-kernel-535.247.01 (not installed)",)}),
    ("debian12-halfconfigured", {}),
])
def test_what_apt_get_check_said_per_distro(distro: str, expected: dict) -> None:
    """The canned hosts' `apt-get check` reports, now from dpkg's fields alone."""
    assert unmet((DATA / f"dpkg-check.{distro}").read_text()) == expected


def test_this_machine_has_no_unmet_dependencies() -> None:
    """On this Debian 12 build machine, apt-get check is clean; so is the
    computation over every package it has (Provides, Multi-Arch and all)."""
    fact = DebPackages()
    script, marker = gather_script([fact])
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    pkgs = parse_batch([fact], out, marker)[fact]
    assert pkgs["dpkg"].installed
    assert {k: p.unmet for k, p in pkgs.items() if p.unmet} == {}
