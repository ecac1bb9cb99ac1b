"""dnf ops on RHEL 9: canned rpm/dnf facts -> exact commands."""

from __future__ import annotations

from pathlib import Path

from gpuprov.facts.apt import AptKeyring
from gpuprov.facts.base import FactView
from gpuprov.facts.dnf import (
    DnfAvailable,
    DnfModules,
    DnfRepoFiles,
    DnfVersionlock,
    RpmPackages,
)
from gpuprov.ops import dnf

DATA = Path(__file__).parent / "data" / "facts"


def plan(op, no_cache: bool = False, extra=None):
    values = {}
    for fact in op.facts():
        if isinstance(fact, RpmPackages):
            values[fact] = fact.process((DATA / "rpm-qa.rhel9").read_text(), 0)
        elif isinstance(fact, DnfAvailable):
            values[fact] = fact.process("" if no_cache else
                                        (DATA / "dnf-repoquery.rhel9").read_text(),
                                        1 if no_cache else 0)
        elif isinstance(fact, DnfVersionlock):
            values[fact] = fact.process((extra or {}).get(
                "versionlock", (DATA / "versionlock.rhel9").read_text()), 0)
        elif isinstance(fact, DnfModules):
            values[fact] = fact.process((DATA / "modules.rhel9").read_text(), 0)
        else:
            values[fact] = (extra or {})[type(fact).__name__]
    return op.plan(FactView(values))


def shells(changes) -> list[str]:
    return [s.command.shell() for c in changes for s in c.steps]


def test_installed_is_no_change() -> None:
    assert plan(dnf.packages(["nvidia-driver", "dkms"])) == []
    assert plan(dnf.packages({"nvidia-driver": "580.82.07"})) == []
    assert plan(dnf.packages({"nvidia-driver": "3:580.82.07-1.el9"})) == []


def test_fresh_install() -> None:
    [c] = plan(dnf.packages("nvidia-open"))
    assert (c.resource, c.action, c.unknown) == ("package nvidia-open", "install", None)
    assert shells([c]) == ["dnf -y install -- nvidia-open"]
    assert c.diff.before is None and c.diff.after == "nvidia-open 3:580.95.05-1.el9\n"


def test_version_change_and_latest() -> None:
    [c] = plan(dnf.packages({"nvidia-driver": "580.95.05"}))
    assert c.action == "upgrade"
    assert shells([c]) == ["dnf -y install -- nvidia-driver-580.95.05"]
    assert c.summary == "upgrade nvidia-driver 3:580.82.07-1.el9 -> 3:580.95.05-1.el9"
    [d] = plan(dnf.packages({"nvidia-driver": "580.65.06-1.el9"}))
    assert d.action == "downgrade"
    assert shells([d]) == ["dnf -y install -- nvidia-driver-580.65.06-1.el9"]
    [up] = plan(dnf.packages("nvidia-driver", state="latest"))
    assert shells([up]) == ["dnf -y install -- nvidia-driver"]


def test_unknown_without_cache_or_candidate() -> None:
    [c] = plan(dnf.packages("nvidia-open"), no_cache=True)
    assert c.unknown.startswith("the dnf cache is empty: depends on")
    [n] = plan(dnf.packages("cuda-toolkit-12-8"))
    assert n.unknown.startswith("not in the enabled repositories' cache: cuda-toolkit-12-8")
    assert shells([n]) == ["dnf -y install -- cuda-toolkit-12-8"]


def test_absent() -> None:
    [c] = plan(dnf.packages(["kmod-nvidia-open-dkms", "not-there"], state="absent"))
    assert shells([c]) == ["dnf -y remove -- kmod-nvidia-open-dkms"]
    assert c.diff.before == "kmod-nvidia-open-dkms 3:580.82.07-1.el9\n"


def test_versionlock() -> None:
    assert plan(dnf.versionlock("nvidia-driver")) == []
    assert plan(dnf.versionlock({"nvidia-driver": "580.82.07"})) == []
    [c] = plan(dnf.versionlock({"nvidia-driver": "580.95.05"}))
    assert shells([c]) == ["dnf -y versionlock delete -- nvidia-driver",
                           "dnf -y versionlock add -- nvidia-driver-580.95.05"]
    [n] = plan(dnf.versionlock("nvidia-open"), extra={"versionlock": "plugin no\n"})
    assert shells([n]) == ["dnf -y install -- python3-dnf-plugin-versionlock",
                           "dnf -y versionlock add -- nvidia-open"]
    [r] = plan(dnf.versionlock("nvidia-driver", state="absent"))
    assert shells([r]) == ["dnf -y versionlock delete -- nvidia-driver"]


def test_module_enable() -> None:
    [c] = plan(dnf.module_enable("nvidia-driver", "580-open"))
    assert shells([c]) == ["dnf -y module reset nvidia-driver",
                           "dnf -y module enable nvidia-driver:580-open"]
    assert c.diff.before == "nvidia-driver:575-open\n" and c.action == "switch"
    assert plan(dnf.module_enable("nvidia-driver", "575-open")) == []
    [f] = plan(dnf.module_enable("postgresql", "16"))   # disabled, not enabled: no reset
    assert shells([f]) == ["dnf -y module enable postgresql:16"]


def test_repository() -> None:
    op = dnf.repository("cuda-rhel9-x86_64",
                        "https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64",
                        description="cuda-rhel9-x86_64",
                        gpgkey="https://developer.download.nvidia.com/compute/cuda/repos/rhel9/"
                               "x86_64/D42D0685.pub")
    assert op.facts() == [DnfRepoFiles()]
    [c] = plan(op, extra={"DnfRepoFiles": {}})
    assert c.diff.after == (
        "# Managed by gpuprov: local edits are overwritten.\n[cuda-rhel9-x86_64]\n"
        "name=cuda-rhel9-x86_64\n"
        "baseurl=https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64\n"
        "enabled=1\ngpgcheck=1\n"
        "gpgkey=https://developer.download.nvidia.com/compute/cuda/repos/rhel9/x86_64/"
        "D42D0685.pub\n")
    assert shells([c])[-1] == "dnf -q makecache --repo cuda-rhel9-x86_64"
    assert plan(op, extra={"DnfRepoFiles": {op.path: op.text}}) == []


def test_repository_with_key_text() -> None:
    op = dnf.repository("nvidia-container-toolkit",
                        "https://nvidia.github.io/libnvidia-container/stable/rpm/$basearch",
                        key="-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n")
    assert op.facts() == [DnfRepoFiles(),
                          AptKeyring("/etc/pki/rpm-gpg/RPM-GPG-KEY-nvidia-container-toolkit")]
    key, repo = plan(op, extra={"DnfRepoFiles": {}, "AptKeyring": None})
    assert key.resource == "rpm key /etc/pki/rpm-gpg/RPM-GPG-KEY-nvidia-container-toolkit"
    assert ("gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-nvidia-container-toolkit\n"
            in repo.diff.after)
