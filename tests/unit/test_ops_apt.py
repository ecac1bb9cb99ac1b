"""apt ops: canned facts per distro -> the exact shell of every step."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from gpuprov.facts.apt import (
    AptCacheAge,
    AptCandidates,
    AptKeyring,
    AptPreferences,
    AptSources,
    DebHeld,
    DebPackages,
    DpkgInterrupted,
)
from gpuprov.facts.base import FactView
from gpuprov.ops import apt
from gpuprov.ops.openpgp import _crc24
from tests.unit.role_harness import candidates_answer
from tests.unit.shell_helpers import without_upload_check

DATA = Path(__file__).parent / "data" / "facts"
APT = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l apt-get"
NET = "-o Acquire::http::Timeout=15 -o Acquire::https::Timeout=15 -o Acquire::Retries=1"
FIX = (f"{APT} install -y -o DPkg::Lock::Timeout=120 {NET} --fix-broken --no-remove "
       "--no-install-recommends -o Dpkg::Options::=--force-confdef "
       "-o Dpkg::Options::=--force-confold")
INSTALL = (f"{APT} install -y -o DPkg::Lock::Timeout=120 {NET} --no-install-recommends "
           "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --")
MARK = "apt-mark -o DPkg::Lock::Timeout=120"
UPDATE = f"{APT} update -y -o DPkg::Lock::Timeout=120 {NET} -o APT::Update::Error-Mode=any"


def plan(op, distro: str = "ubuntu2204", held: set[str] | None = None, extra=None):
    """Feed the op its facts from the canned outputs of one distro."""
    values = {}
    for fact in op.facts():
        if isinstance(fact, DebPackages):
            path = DATA / f"dpkg-query.{distro}"
            values[fact] = fact.process(path.read_text() if path.exists() else "", 0)
        elif isinstance(fact, DebHeld):
            dpkg = DebPackages().process((DATA / f"dpkg-query.{distro}").read_text()
                                        if (DATA / f"dpkg-query.{distro}").exists() else "", 0)
            values[fact] = frozenset(held if held is not None else
                                     {n for n, p in dpkg.items() if p.want == "hold"})
        elif isinstance(fact, AptCandidates):
            full = fact.process((DATA / f"apt-cache-policy.{distro}").read_text(), 0)
            path = DATA / f"dpkg-query.{distro}"
            dpkg = DebPackages().process(path.read_text() if path.exists() else "", 0)
            values[fact] = candidates_answer(fact, dpkg, full)
        elif isinstance(fact, DpkgInterrupted):
            values[fact] = (extra or {}).get("DpkgInterrupted", False)
        else:
            values[fact] = (extra or {})[type(fact).__name__]
    return op.plan(FactView(values))


def shells(change) -> list[str]:
    return [s.command.shell() for s in change.steps]


# ---------------------------------------------------------------- packages

def test_fresh_install_ubuntu2404() -> None:
    [c] = plan(apt.packages("nvidia-driver-580-server"), "ubuntu2404")
    assert (c.resource, c.action) == ("package nvidia-driver-580-server", "install")
    assert c.summary == "install nvidia-driver-580-server"
    assert shells(c) == [f"{INSTALL} nvidia-driver-580-server"]
    assert c.diff.before is None
    assert c.diff.after == "nvidia-driver-580-server 580.95.05-0ubuntu0.24.04.2\n"
    assert c.unknown is None and c.invalidates is None


def test_already_installed_is_no_change() -> None:
    assert plan(apt.packages(["openssh-server", "bash"])) == []
    assert plan(apt.packages("openssh-server", state="latest")) == []
    assert plan(apt.packages({"nvidia-utils-580-server": "580.82.07-0ubuntu0.22.04.1"})) == []
    assert plan(apt.packages({"nvidia-utils-580-server": "580.82.*"})) == []
    assert plan(apt.packages("docker.io"), "debian12") == []


def test_exact_version_of_held_package_unholds_and_reholds() -> None:
    [c] = plan(apt.packages({"nvidia-utils-580-server": "580.95.05-0ubuntu0.22.04.2"}))
    assert (c.resource, c.action) == ("package nvidia-utils-580-server", "upgrade")
    assert shells(c) == [
        f"{MARK} unhold -- nvidia-utils-580-server",
        f"{INSTALL} nvidia-utils-580-server=580.95.05-0ubuntu0.22.04.2",
        f"{MARK} hold -- nvidia-utils-580-server",
    ]
    assert c.diff.unified() == (
        "--- dpkg\n+++ dpkg\n@@ -1 +1 @@\n"
        "-nvidia-utils-580-server 580.82.07-0ubuntu0.22.04.1 (held)\n"
        "+nvidia-utils-580-server 580.95.05-0ubuntu0.22.04.2 (held)\n")


def test_version_glob_resolves_to_exact_pin() -> None:
    [c] = plan(apt.packages({"nvidia-headless-580-server": "580.82*"}))
    assert shells(c) == [f"{INSTALL} nvidia-headless-580-server=580.82.07-0ubuntu0.22.04.1"]


def test_toolkit_pinned_together_in_one_transaction() -> None:
    want = dict.fromkeys(["nvidia-container-toolkit", "nvidia-container-toolkit-base",
                          "libnvidia-container-tools", "libnvidia-container1"], "1.17.8-1")
    [c] = plan(apt.packages(want))
    # toolkit is half-configured (an interrupted run): dpkg is repaired first.
    assert shells(c) == [
        "env DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold",
        f"{INSTALL} nvidia-container-toolkit=1.17.8-1 libnvidia-container-tools=1.17.8-1 "
        "libnvidia-container1=1.17.8-1",
    ]
    assert c.resource == ("packages nvidia-container-toolkit, libnvidia-container-tools, "
                          "libnvidia-container1")
    assert c.summary.startswith("repair nvidia-container-toolkit (half-configured) -> 1.17.8-1; ")


def test_downgrade_allows_downgrades() -> None:
    [c] = plan(apt.packages({"nvidia-container-toolkit-base": "1.17.0-1"}))
    assert c.action == "downgrade"
    assert shells(c) == [
        f"{APT} install -y -o DPkg::Lock::Timeout=120 {NET} --no-install-recommends "
        "--allow-downgrades "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -- "
        "nvidia-container-toolkit-base=1.17.0-1"]


def test_fresh_install_then_hold() -> None:
    [c] = plan(apt.packages("nvidia-headless-580-server", held=True))
    assert shells(c) == [f"{INSTALL} nvidia-headless-580-server",
                         f"{MARK} hold -- nvidia-headless-580-server"]


def test_latest_upgrades_held_package() -> None:
    [c] = plan(apt.packages("nvidia-utils-580-server", state="latest"))
    assert shells(c) == [f"{MARK} unhold -- nvidia-utils-580-server",
                         f"{INSTALL} nvidia-utils-580-server",
                         f"{MARK} hold -- nvidia-utils-580-server"]


def test_hold_and_unhold_only() -> None:
    [c] = plan(apt.packages("openssh-server", held=True))
    assert (c.resource, c.action) == ("package openssh-server", "hold")
    assert shells(c) == [f"{MARK} hold -- openssh-server"]
    assert c.invalidates == (DebHeld, DebPackages)
    [u] = plan(apt.packages(["nvidia-utils-580-server", "libnvidia-compute-580-server"],
                            held=False))
    assert shells(u) == [f"{MARK} unhold -- nvidia-utils-580-server libnvidia-compute-580-server"]
    assert plan(apt.packages("nvidia-utils-580-server", held=True)) == []


def test_absent() -> None:
    [c] = plan(apt.packages(["nvidia-utils-580-server", "nvidia-utils-535-server", "nope"],
                            state="absent"))
    assert (c.resource, c.action) == ("package nvidia-utils-580-server", "remove")
    assert shells(c) == [f"{MARK} unhold -- nvidia-utils-580-server",
                         f"{APT} remove -y -o DPkg::Lock::Timeout=120 -- nvidia-utils-580-server"]
    [p] = plan(apt.packages("nvidia-utils-535-server", state="absent", purge=True))
    assert shells(p) == [f"{APT} purge -y -o DPkg::Lock::Timeout=120 -- nvidia-utils-535-server"]
    assert p.diff.before == "nvidia-utils-535-server 535.247.01-0ubuntu0.22.04.1 (config-files)\n"
    assert plan(apt.packages("nvidia-utils-535-server", state="absent")) == []


def test_unknown_candidate_says_what_it_depends_on() -> None:
    [c] = plan(apt.packages(["nvidia-open", "openssh-server"],
                            depends_on="apt repository cuda"))
    assert c.unknown == ("a candidate for nvidia-open not in the apt cache: "
                         "depends on apt repository cuda")
    # apply: facts were re-gathered and still nothing -> refresh, then install.
    assert shells(c) == [UPDATE, f"{INSTALL} nvidia-open"]
    assert c.diff.after == "nvidia-open (candidate unknown)\n"
    [v] = plan(apt.packages({"nvidia-utils-580-server": "590.1-1"}))
    assert v.unknown.startswith("version 590.1-1 of nvidia-utils-580-server not in the apt cache")
    assert f"{INSTALL} nvidia-utils-580-server=590.1-1" in shells(v)
    # a virtual package: apt knows the name, but nothing provides a candidate
    [n] = plan(apt.packages("nvidia-driver"))
    assert n.unknown is not None


def test_quoting_of_odd_versions() -> None:
    [c] = plan(apt.packages({"docker.io": "27.5.1-0ubuntu3~24.04.2"}), "ubuntu2404")
    assert shells(c) == [f"{INSTALL} 'docker.io=27.5.1-0ubuntu3~24.04.2'"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        apt.packages("x", state="installed")
    with pytest.raises(ValueError):
        apt.packages({"x": "1"}, state="latest")


# ---------------------------------------------------------------- apt update

def test_apt_update_by_age() -> None:
    op = apt.apt_update(cache_valid_time=3600)
    assert plan(op, extra={"AptCacheAge": 120}) == []
    [c] = plan(op, extra={"AptCacheAge": 7200})
    assert shells(c) == [UPDATE] and c.summary == "apt-get update (7200s old > 3600s)"
    [n] = plan(op, extra={"AptCacheAge": None})
    assert n.summary == "apt-get update (never updated)"
    assert op.facts() == [AptCacheAge()]


# ---------------------------------------------------------------- repositories

KEY = bytes(range(256)) * 3


def armored(data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    body = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode()
    return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test key\n\n"
            f"{body}\n={crc}\n-----END PGP PUBLIC KEY BLOCK-----\n")


def test_dearmor() -> None:
    assert apt.dearmor(armored(KEY)) == KEY
    assert apt.dearmor(KEY) == KEY
    broken = armored(KEY).replace("AAEC", "AAED", 1)
    with pytest.raises(ValueError, match="checksum"):
        apt.dearmor(broken)
    with pytest.raises(ValueError, match="END"):
        apt.dearmor(armored(KEY).split("-----END")[0])


TK_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
TK_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
TK_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"


def toolkit_repo(**kw):
    return apt.apt_repository("nvidia-container-toolkit", TK_URL, "/", key=armored(KEY),
                              keyring=TK_KEYRING, **kw)


def test_repository_fresh() -> None:
    op = toolkit_repo()
    assert op.facts() == [AptSources(), AptKeyring(TK_KEYRING)]
    key_change, list_change = plan(op, extra={"AptSources": {}, "AptKeyring": None})
    assert (key_change.resource, key_change.action) == (f"apt keyring {TK_KEYRING}", "create")
    [write_key] = key_change.steps
    assert without_upload_check(write_key.command.shell()) == (
        "mkdir -p /usr/share/keyrings && t= && trap 'rm -f \"$t\"' EXIT && "
        "trap 'exit 143' HUP INT TERM PIPE && t=$(mktemp -u /usr/share/keyrings/.gpuprov-XXXXXX) "
        "&& (umask 077 && set -C && : >\"$t\") && "
        "cat >\"$t\" && "
        f"chown -h root:root \"$t\" && chmod 0644 \"$t\" && mv -fT \"$t\" {TK_KEYRING} && "
        "trap - EXIT")
    assert write_key.stdin == KEY          # dearmored on the controller
    text = ("# Managed by gpuprov: local edits are overwritten.\n"
            f"deb [signed-by={TK_KEYRING}] {TK_URL} /\n")
    assert list_change.diff.before is None and list_change.diff.after == text
    assert list_change.steps[0].stdin == text.encode()
    assert shells(list_change)[1] == (
        f"{UPDATE} -o Dir::Etc::sourcelist={TK_LIST} -o Dir::Etc::sourceparts=- "
        "-o APT::Get::List-Cleanup=0")
    assert AptCandidates in list_change.invalidates


def test_repository_converged_and_key_only_change() -> None:
    op = toolkit_repo()
    sources = {TK_LIST: op.content()}
    good = hashlib.sha256(KEY).hexdigest()
    assert plan(op, extra={"AptSources": sources, "AptKeyring": good}) == []
    [c] = plan(op, extra={"AptSources": sources, "AptKeyring": "0" * 64})
    assert c.action == "update" and shells(c)[-1].startswith(f"{UPDATE} -o Dir::Etc::sourcelist=")


def test_repository_deb822_replaces_one_line_file() -> None:
    op = apt.apt_repository("cuda", "https://developer.download.nvidia.com/compute/cuda/repos/"
                            "ubuntu2404/x86_64/", "/", format="deb822",
                            keyring="/usr/share/keyrings/cuda-archive-keyring.gpg")
    assert op.facts() == [AptSources()]
    [c] = plan(op, extra={"AptSources": {"/etc/apt/sources.list.d/cuda.list": "deb x /\n"}})
    assert c.diff.after == (
        "# Managed by gpuprov: local edits are overwritten.\nTypes: deb\n"
        "URIs: https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/\n"
        "Suites: /\nSigned-By: /usr/share/keyrings/cuda-archive-keyring.gpg\n")
    assert shells(c)[1] == "rm -f /etc/apt/sources.list.d/cuda.list"
    assert "Dir::Etc::sourcelist=/etc/apt/sources.list.d/cuda.sources" in shells(c)[2]


def test_repository_components_and_absent() -> None:
    op = apt.apt_repository("debian-nonfree", "http://deb.debian.org/debian", "bookworm",
                            ["contrib", "non-free", "non-free-firmware"], arch="amd64")
    assert op.content().splitlines()[1] == (
        "deb [arch=amd64] http://deb.debian.org/debian bookworm contrib non-free "
        "non-free-firmware")
    with pytest.raises(ValueError):
        apt.apt_repository("x", "http://x", "bookworm")
    gone = apt.apt_repository("x", "http://x", "/", state="absent")
    [c] = plan(gone, extra={"AptSources": {"/etc/apt/sources.list.d/x.list": "deb http://x /\n"}})
    assert shells(c) == ["rm -f /etc/apt/sources.list.d/x.list"] and c.action == "delete"


# ---------------------------------------------------------------- pins

def test_apt_pin() -> None:
    op = apt.apt_pin("nvidia-580", "nvidia-* libnvidia-*", "version 580.*", 1001)
    assert op.facts() == [AptPreferences()]
    [c] = plan(op, extra={"AptPreferences": {}})
    assert c.diff.after == "Package: nvidia-* libnvidia-*\nPin: version 580.*\nPin-Priority: 1001\n"
    assert c.steps[0].command.shell().endswith(
        "mv -fT \"$t\" /etc/apt/preferences.d/nvidia-580 && trap - EXIT")
    assert plan(op, extra={"AptPreferences": {"/etc/apt/preferences.d/nvidia-580":
                                              c.diff.after}}) == []


# ---------------------------------------------------------------- broken installs (issue 15)

def plan_broken(op, distro: str):
    """The op against a host whose dpkg-query output is dpkg-check.<distro>-broken
    (a dependency force-removed after a fault)."""
    dpkg = DebPackages().process((DATA / f"dpkg-check.{distro}-broken").read_text(), 0)
    values = {}
    for fact in op.facts():
        if isinstance(fact, DebPackages):
            values[fact] = dpkg
        elif isinstance(fact, DebHeld):
            values[fact] = frozenset(n for n, p in dpkg.items() if p.want == "hold")
        elif isinstance(fact, AptCandidates):
            full = fact.process((DATA / f"apt-cache-policy.{distro}").read_text(), 0)
            values[fact] = candidates_answer(fact, dpkg, full)
        elif isinstance(fact, DpkgInterrupted):
            values[fact] = False
    return op.plan(FactView(values))


def test_force_removed_dependency_is_repaired_at_the_installed_version_ubuntu2204() -> None:
    [c] = plan_broken(apt.packages("nvidia-headless-no-dkms-580-server"), "ubuntu2204")
    assert (c.resource, c.action) == ("package nvidia-headless-no-dkms-580-server", "repair")
    # check mode names what is broken, as a person acts on it
    assert c.summary == ("repair nvidia-headless-no-dkms-580-server: depends on "
                         "libnvidia-compute-580-server (= 580.82.07-0ubuntu0.22.04.1) "
                         "(not installed)")
    # state=present: the installed version stays (a newer candidate is in the
    # cache), so does its hold: apt installs only the missing dependency
    assert shells(c) == [
        "env DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold",
        FIX,
    ]
    assert c.diff.unified() == (
        "--- dpkg\n+++ dpkg\n@@ -1 +1 @@\n"
        "-nvidia-headless-no-dkms-580-server 580.82.07-0ubuntu0.22.04.1 (depends on "
        "libnvidia-compute-580-server (= 580.82.07-0ubuntu0.22.04.1) (not installed)) (held)\n"
        "+nvidia-headless-no-dkms-580-server 580.82.07-0ubuntu0.22.04.1 (held)\n")
    assert c.unknown is None and c.invalidates is None


def test_broken_and_intact_packages_in_one_op_ubuntu2204() -> None:
    # bash is fine; only the broken one is in the transaction
    [c] = plan_broken(apt.packages(["bash", "nvidia-utils-580-server"]), "ubuntu2204")
    assert c.resource == "package nvidia-utils-580-server"
    assert c.summary.startswith("repair nvidia-utils-580-server: depends on "
                                "libnvidia-compute-580-server (not installed)")
    # an unmanaged package's breakage is not this op's drift
    assert plan_broken(apt.packages(["bash", "openssh-server"]), "ubuntu2204") == []


def test_unmet_dependency_with_alternatives_ubuntu2404() -> None:
    [c] = plan_broken(apt.packages("nvidia-driver-580-server"), "ubuntu2404")
    assert c.action == "repair"
    assert c.summary == (
        "repair nvidia-driver-580-server: depends on libnvidia-compute-580-server "
        "(= 580.95.05-0ubuntu0.24.04.2) (not installed); depends on "
        "libnvidia-decode-580-server (= 580.95.05-0ubuntu0.24.04.2) (not installed) or "
        "libnvidia-decode-580 (not installed)")
    assert shells(c)[-1] == FIX


def test_half_configured_dependency_is_a_repair_of_itself_ubuntu2404() -> None:
    [c] = plan_broken(apt.packages("libnvidia-gl-580-server"), "ubuntu2404")
    assert c.summary.startswith("repair libnvidia-gl-580-server (half-configured) -> ")
    assert ("env DEBIAN_FRONTEND=noninteractive dpkg --configure -a "
            "--force-confdef --force-confold") in shells(c)


def test_broken_dependencies_debian12() -> None:
    [c] = plan_broken(apt.packages(["chrony", "nvidia-driver"]), "debian12")
    assert c.action == "repair"
    assert c.summary == (
        "repair chrony: depends on libnettle8 (not installed); depends on libseccomp2 "
        "(>= 2.5.0) (2.4.4-1 is installed); repair nvidia-driver: depends on "
        "nvidia-kernel-dkms (= 535.247.01-1~deb12u1) (not installed) or nvidia-kernel-535.247.01 "
        "(not installed)")
    assert shells(c)[-1] == FIX


def test_broken_package_under_state_latest_moves_to_the_candidate_ubuntu2204() -> None:
    # latest wants the candidate anyway: the upgrade installs its dependencies too
    [c] = plan_broken(apt.packages("nvidia-utils-580-server", state="latest"), "ubuntu2204")
    assert c.action == "upgrade"
    assert c.summary.startswith("upgrade nvidia-utils-580-server 580.82.07-0ubuntu0.22.04.1 -> "
                                "580.95.05-0ubuntu0.22.04.2")
    assert shells(c)[-2] == f"{INSTALL} nvidia-utils-580-server"


def test_intact_host_has_no_unmet_dependencies() -> None:
    dpkg = DebPackages().process((DATA / "dpkg-query.debian12").read_text(), 0)
    assert all(p.unmet == () for p in dpkg.values())


def test_repair_and_fresh_install_in_one_transaction_ubuntu2204() -> None:
    [c] = plan_broken(apt.packages(["nvidia-utils-580-server", "nvidia-headless-580-server"]),
                      "ubuntu2204")
    assert c.action == "install"
    assert shells(c) == [
        "env DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold",
        FIX,
        f"{INSTALL} nvidia-headless-580-server",
    ]


def test_half_configured_dependency_of_a_managed_package_debian12() -> None:
    # every dependency is on the host (half-configured counts, as for apt-get
    # check); the dependency walk over dpkg's Depends finds it
    dpkg = DebPackages().process((DATA / "dpkg-check.debian12-halfconfigured").read_text(), 0)
    assert dpkg["docker-ce"].depends == ("gpuprov-test-doubles", "containerd.io", "docker-ce-cli")
    assert dpkg["gpuprov-test-doubles"].depends == ("libc6", "musl")
    op = apt.packages(["docker-ce", "bash"])
    values = {DebPackages(): dpkg, DebHeld(): frozenset(), DpkgInterrupted(): False,
              AptCandidates.unless(op.packages): {}}
    [c] = op.plan(FactView(values))
    assert c.resource == "package docker-ce"
    assert c.summary == "repair docker-ce: depends on gpuprov-test-doubles (half-configured)"
    assert shells(c) == [
        "env DEBIAN_FRONTEND=noninteractive dpkg --configure -a --force-confdef --force-confold",
        FIX,
    ]
    assert c.unknown is None
    # a package below it (libc6) that is intact changes nothing for bash
    assert op.plan(FactView({**values, DebPackages(): {
        **dpkg, "gpuprov-test-doubles": dpkg["docker-ce-cli"]}})) == []
