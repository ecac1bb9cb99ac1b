"""Package facts: canned dpkg/apt/rpm/dnf outputs per distro, and the real
commands run on this Debian 12 machine through the gather script."""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from gpuprov.facts.apt import (
    APT_LISTS,
    APT_UPDATE_STAMP,
    AptCacheAge,
    AptCandidates,
    AptKeyring,
    AptPreferences,
    AptSources,
    DebHeld,
    DebPackages,
    DpkgLocked,
)
from gpuprov.facts.base import gather_script, parse_batch
from gpuprov.facts.dnf import (
    DnfAvailable,
    DnfModules,
    DnfRepoFiles,
    DnfVersionlock,
    RpmPackages,
)
from gpuprov.facts.dumps import parse_dumped_files
from gpuprov.facts.versions import deb_version_compare, rpm_version_compare

DATA = Path(__file__).parent / "data" / "facts"


def canned(name: str) -> str:
    return (DATA / name).read_text()


def test_deb_packages_states_and_multiarch() -> None:
    pkgs = DebPackages().process(canned("dpkg-query.ubuntu2204"), 0)
    utils = pkgs["nvidia-utils-580-server"]
    assert (utils.version, utils.want, utils.status, utils.installed) == (
        "580.82.07-0ubuntu0.22.04.1", "hold", "installed", True)
    old = pkgs["nvidia-utils-535-server"]
    assert (old.status, old.installed, old.broken) == ("config-files", False, False)
    half = pkgs["nvidia-container-toolkit"]
    assert (half.status, half.installed, half.broken) == ("half-configured", False, True)
    assert pkgs["libc6"].arch == "amd64" and pkgs["libc6:i386"].arch == "i386"
    assert pkgs["adduser"].arch == "all"
    assert pkgs["docker-ce"].version == "5:28.1.1-1~ubuntu.22.04~jammy"


def test_deb_packages_debian12_and_rhel() -> None:
    pkgs = DebPackages().process(canned("dpkg-query.debian12"), 0)
    assert pkgs["nvidia-driver"].version == "535.247.01-1~deb12u1"
    assert DebPackages().process("", 0) == {}   # no dpkg (RHEL): empty, not an error


def test_deb_held() -> None:
    held = DebHeld().process("nvidia-utils-580-server\nlibnvidia-compute-580-server\n"
                             "libc6:i386\n", 0)
    assert held == {"nvidia-utils-580-server", "libnvidia-compute-580-server", "libc6"}


def test_apt_policy_ubuntu2204() -> None:
    pol = AptCandidates(("x",)).process(canned("apt-cache-policy.ubuntu2204"), 0)
    utils = pol["nvidia-utils-580-server"]
    assert utils.installed == "580.82.07-0ubuntu0.22.04.1"
    assert utils.candidate == "580.95.05-0ubuntu0.22.04.2"
    assert [(v.version, v.priority, v.installed) for v in utils.versions] == [
        ("580.95.05-0ubuntu0.22.04.2", 500, False), ("580.82.07-0ubuntu0.22.04.1", 100, True)]
    assert utils.versions[0].sources == (
        "http://archive.ubuntu.com/ubuntu jammy-updates/restricted amd64 Packages",
        "http://security.ubuntu.com/ubuntu jammy-security/restricted amd64 Packages")
    tk = pol["nvidia-container-toolkit"]
    assert tk.find("1.17.0-1") == "1.17.0-1" and tk.find("1.17.*") == "1.17.8-1"
    assert tk.find("1.16.2-1") is None
    assert tk.versions[1].sources[-1] == "/var/lib/dpkg/status"
    virtual = pol["nvidia-driver"]
    assert (virtual.installed, virtual.candidate, virtual.versions) == (None, None, ())
    assert pol["openssh-server"].candidate == "1:8.9p1-3ubuntu0.13"


def test_apt_policy_ubuntu2404_and_debian12() -> None:
    pol = AptCandidates(("x",)).process(canned("apt-cache-policy.ubuntu2404"), 0)
    assert pol["nvidia-driver-580-server"].installed is None
    assert pol["docker.io"].candidate == "27.5.1-0ubuntu3~24.04.2"
    deb = AptCandidates(("x",)).process(canned("apt-cache-policy.debian12"), 0)
    assert deb["nvidia-open"].versions[0].priority == 600
    assert deb["nvidia-driver"].installed == deb["nvidia-driver"].candidate


def test_apt_candidates_command_and_key() -> None:
    assert AptCandidates.of(["b", "a", "b"]) == AptCandidates(("a", "b"))
    assert AptCandidates(("nvidia-utils-580-server", "libc6:i386")).command().shell() == (
        "command -v apt-cache >/dev/null 2>&1 || exit 0; "
        "apt-cache policy -- nvidia-utils-580-server libc6:i386 ;")
    assert AptCandidates(()).command().shell().endswith("exit 0; true;")  # asks nothing


def test_dumped_files_exact_contents() -> None:
    files = AptSources().process(canned("apt-sources.ubuntu2404"), 0)
    assert sorted(files) == ["/etc/apt/sources.list",
                             "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
                             "/etc/apt/sources.list.d/ubuntu.sources"]
    assert files["/etc/apt/sources.list.d/nvidia-container-toolkit.list"].endswith("deb/$(ARCH) /")
    assert files["/etc/apt/sources.list.d/ubuntu.sources"].startswith("Types: deb\nURIs: ")
    assert files["/etc/apt/sources.list.d/ubuntu.sources"].endswith("archive-keyring.gpg\n")
    assert parse_dumped_files("") == {}


def test_keyring_and_cache_age() -> None:
    assert AptKeyring("/k.gpg").process("ab12  /k.gpg\n", 0) == "ab12"
    assert AptKeyring("/k.gpg").process("", 1) is None
    assert AptCacheAge().process(
        "1760430000 1760426400 /var/lib/apt/periodic/update-success-stamp\n", 0) == 3600
    assert AptCacheAge().process("", 0) is None


def _cache_age_in(root: Path) -> int | None:
    """AptCacheAge's own script, run against a lists dir and stamp under `root`."""
    script = AptCacheAge().command().shell()
    script = script.replace(APT_LISTS, str(root / "lists"))
    script = script.replace(APT_UPDATE_STAMP, str(root / "update-success-stamp"))
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True)
    return AptCacheAge().process(out.stdout, 0)


def test_cache_age_counts_only_lists_that_hold_an_update(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    (lists / "partial").mkdir(parents=True)
    stamp = tmp_path / "update-success-stamp"
    stamp.touch()
    # a fresh stamp and directory, but the lists were cleared (as images do): never updated
    assert _cache_age_in(tmp_path) is None
    (lists / "10.0.0.1:8080_archive_._Packages").touch()
    old = time.time() - 7200
    os.utime(stamp, (old, old))
    assert 7190 <= (_cache_age_in(tmp_path) or 0) <= 7300   # the stamp, not the lists' time
    stamp.unlink()
    assert (_cache_age_in(tmp_path) or 0) < 60               # no stamp: the lists directory
    (lists / "10.0.0.1:8080_archive_._Packages").unlink()
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").touch()
    assert _cache_age_in(tmp_path) is not None


def test_rpm_packages_rhel9() -> None:
    rpms = RpmPackages().process(canned("rpm-qa.rhel9"), 0)
    drv = rpms["nvidia-driver"][0]
    assert (drv.epoch, drv.version, drv.release, drv.evr) == (
        3, "580.82.07", "1.el9", "3:580.82.07-1.el9")
    assert drv.matches("580.82.07") and drv.matches("580.82.07-1.el9")
    assert drv.matches("3:580.82.07-1.el9") and drv.matches("580.*")
    assert not drv.matches("580.95.05")
    assert len(rpms["kernel"]) == 2 and len(rpms["glibc"]) == 2
    assert rpms["bash"][0].evr == "5.1.8-9.el9"
    assert rpms["gpg-pubkey"][0].arch == "(none)"


def test_dnf_available() -> None:
    fact = DnfAvailable(("nvidia-driver", "nvidia-open"))
    avail = fact.process(canned("dnf-repoquery.rhel9"), 0)
    assert [p.version for p in avail["nvidia-driver"]] == ["580.65.06", "580.82.07", "580.95.05"]
    assert fact.process("", 1) is None   # no cache: unknown, not "nothing available"
    assert fact.sudo is True
    assert fact.command().shell() == (
        "command -v dnf >/dev/null 2>&1 || exit 1; dnf -q -C repoquery --qf "
        "'%{name} %{epoch} %{version} %{release} %{arch}' -- nvidia-driver nvidia-open")


def test_dnf_versionlock_and_modules() -> None:
    lock = DnfVersionlock().process(canned("versionlock.rhel9"), 0)
    assert lock.plugin is True
    assert lock.entries == {"nvidia-driver": "nvidia-driver-3:580.82.07-1.el9.*",
                            "nvidia-driver-libs": "nvidia-driver-libs-3:580.82.07-1.el9.*"}
    assert DnfVersionlock().process("plugin no\n", 0).plugin is False
    mods = DnfModules().process(canned("modules.rhel9"), 0)
    assert mods["nvidia-driver"].stream == "575-open" and mods["nvidia-driver"].state == "enabled"
    assert mods["postgresql"].profiles == ("server",)
    assert DnfModules.enabled(mods) == {"nvidia-driver": "575-open"}


def test_dpkg_locked_parse() -> None:
    lock = DpkgLocked().process("held /var/lib/dpkg/lock-frontend 812 unattended-upgr\n", 0)
    assert lock.held and lock.holders == (("/var/lib/dpkg/lock-frontend", 812, "unattended-upgr"),)
    assert "unattended-upgr (pid 812)" in lock.describe()
    assert not DpkgLocked().process("", 0).held


@pytest.mark.parametrize(("a", "b", "sign"), [
    ("580.95.05-0ubuntu0.22.04.2", "580.82.07-0ubuntu0.22.04.1", 1),
    ("1.0~rc1-1", "1.0-1", -1),
    ("1:1.0-1", "2.0-1", 1),
    ("5.2.15-2+b13", "5.2.15-2+b8", 1),
    ("1.0", "1.0-0", 0),
    ("1.0a", "1.0", 1),
    ("1.0-1ubuntu1", "1.0-1", 1),
    ("27.5.1-0ubuntu3~24.04.2", "27.5.1-0ubuntu3", -1),
])
def test_deb_version_compare(a: str, b: str, sign: int) -> None:
    assert (deb_version_compare(a, b) > 0) - (deb_version_compare(a, b) < 0) == sign
    assert (deb_version_compare(b, a) > 0) - (deb_version_compare(b, a) < 0) == -sign


@pytest.mark.parametrize(("a", "b", "sign"), [
    ("3:580.95.05-1.el9", "3:580.82.07-1.el9", 1),
    ("1.0~rc1-1", "1.0-1", -1),
    ("1.0^post1-1", "1.0-1", 1),
    ("1.0^post1-1", "1.0.1-1", -1),
    ("2:1.0-1", "1:9.0-1", 1),
    ("1.0a-1", "1.0-1", 1),
    ("1.10-1", "1.9-1", 1),
    ("1.0-1.el9", "1.0-1.el9", 0),
])
def test_rpm_version_compare(a: str, b: str, sign: int) -> None:
    assert (rpm_version_compare(a, b) > 0) - (rpm_version_compare(a, b) < 0) == sign
    assert (rpm_version_compare(b, a) > 0) - (rpm_version_compare(b, a) < 0) == -sign


# ---------------------------------------------------------------- on this machine

def run_here(facts: list) -> dict:
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return parse_batch(facts, out, marker)


def test_every_fact_runs_here() -> None:
    """Read-only probes on this Debian 12 build machine: the shell parses and
    the parsers accept real output. RHEL facts must come back empty here."""
    facts = [DebPackages(), DebHeld(), AptCandidates(("bash", "no-such-package-xyz")),
             AptSources(), AptPreferences(), AptKeyring("/no/such/keyring.gpg"), AptCacheAge(),
             RpmPackages(), DnfVersionlock(), DnfModules(), DnfRepoFiles(), DpkgLocked()]
    got = run_here(facts)
    dpkg = got[DebPackages()]
    assert dpkg["bash"].installed and dpkg["dpkg"].version
    assert isinstance(got[DebHeld()], frozenset)
    policy = got[AptCandidates(("bash", "no-such-package-xyz"))]
    assert policy["bash"].installed == dpkg["bash"].version
    assert "no-such-package-xyz" not in policy
    assert all(p.startswith("/etc/apt/") for p in got[AptSources()])
    assert got[AptKeyring("/no/such/keyring.gpg")] is None
    age = got[AptCacheAge()]
    assert age is None or age >= 0
    assert got[RpmPackages()] == {} and got[DnfModules()] == {} and got[DnfRepoFiles()] == {}
    assert got[DnfVersionlock()].entries == {}
    assert isinstance(got[DpkgLocked()].held, bool)


def test_dpkg_locked_sees_an_fcntl_lock_here() -> None:
    """apt's lock kind (fcntl), taken on a temp file, found via /proc/locks."""
    with tempfile.NamedTemporaryFile() as tmp:
        fact = DpkgLocked((tmp.name, "/no/such/lock"))
        assert not run_here([fact])[fact].held
        fcntl.lockf(tmp.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock = run_here([fact])[fact]
        assert lock.held and lock.holders[0][0] == tmp.name
        assert lock.holders[0][1] == os.getpid()
        # the holder's command line (this pytest run), not just its 15-character name
        # (argv joined by spaces; a short one, e.g. CI's, ends where the fact's does)
        mine = Path("/proc/self/cmdline").read_text().replace("\0", " ").strip()
        assert lock.holders[0][2].startswith(mine[:60])


def test_keyring_checksum_here() -> None:
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(b"key")
        tmp.flush()
        got = run_here([AptKeyring(tmp.name)])[AptKeyring(tmp.name)]
    assert got == "2c70e12b7a0646f92279f427c7b38e7334d8e5389cff167a1dc30e73f826b683"


def test_unmet_dependencies_attach_to_their_package() -> None:
    # dpkg-query says "installed"; dpkg's own Depends fields show what is gone
    pkgs = DebPackages().process(canned("dpkg-check.ubuntu2204-broken"), 0)
    assert pkgs["nvidia-headless-no-dkms-580-server"].installed
    assert pkgs["nvidia-headless-no-dkms-580-server"].unmet == (
        "depends on libnvidia-compute-580-server (= 580.82.07-0ubuntu0.22.04.1) (not installed)",)
    assert pkgs["bash"].unmet == ()
    assert "libnvidia-compute-580-server" not in pkgs
