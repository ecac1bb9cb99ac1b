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
from tests.unit.role_facts import DNF

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
    assert shells([c]) == [f"{DNF} install -- nvidia-open"]
    assert c.diff.before is None and c.diff.after == "nvidia-open 3:580.95.05-1.el9\n"


def test_version_change_and_latest() -> None:
    [c] = plan(dnf.packages({"nvidia-driver": "580.95.05"}))
    assert c.action == "upgrade"
    assert shells([c]) == [f"{DNF} install -- nvidia-driver-580.95.05"]
    assert c.summary == "upgrade nvidia-driver 3:580.82.07-1.el9 -> 3:580.95.05-1.el9"
    [d] = plan(dnf.packages({"nvidia-driver": "580.65.06-1.el9"}))
    assert d.action == "downgrade"
    assert shells([d]) == [f"{DNF} install -- nvidia-driver-580.65.06-1.el9"]
    [up] = plan(dnf.packages("nvidia-driver", state="latest"))
    assert shells([up]) == [f"{DNF} install -- nvidia-driver"]


def test_unknown_without_cache_or_candidate() -> None:
    [c] = plan(dnf.packages("nvidia-open"), no_cache=True)
    assert c.unknown.startswith("the dnf cache is empty: depends on")
    [n] = plan(dnf.packages("cuda-toolkit-12-8"))
    assert n.unknown.startswith("not in the enabled repositories' cache: cuda-toolkit-12-8")
    assert shells([n]) == [f"{DNF} install -- cuda-toolkit-12-8"]


def test_absent() -> None:
    [c] = plan(dnf.packages(["kmod-nvidia-open-dkms", "not-there"], state="absent"))
    assert shells([c]) == [f"{DNF} remove -- kmod-nvidia-open-dkms"]
    assert c.diff.before == "kmod-nvidia-open-dkms 3:580.82.07-1.el9\n"


def test_versionlock() -> None:
    assert plan(dnf.versionlock("nvidia-driver")) == []
    assert plan(dnf.versionlock({"nvidia-driver": "580.82.07"})) == []
    [c] = plan(dnf.versionlock({"nvidia-driver": "580.95.05"}))
    assert shells([c]) == [f"{DNF} versionlock delete -- nvidia-driver",
                           f"{DNF} versionlock add -- nvidia-driver-580.95.05"]
    [n] = plan(dnf.versionlock("nvidia-open"), extra={"versionlock": "plugin no\n"})
    assert shells([n]) == [f"{DNF} install -- python3-dnf-plugin-versionlock",
                           f"{DNF} versionlock add -- nvidia-open"]
    [r] = plan(dnf.versionlock("nvidia-driver", state="absent"))
    assert shells([r]) == [f"{DNF} versionlock delete -- nvidia-driver"]


def test_module_enable() -> None:
    [c] = plan(dnf.module_enable("nvidia-driver", "580-open"))
    assert shells([c]) == [f"{DNF} module reset nvidia-driver",
                           f"{DNF} module enable nvidia-driver:580-open"]
    assert c.diff.before == "nvidia-driver:575-open\n" and c.action == "switch"
    assert plan(dnf.module_enable("nvidia-driver", "575-open")) == []
    [f] = plan(dnf.module_enable("postgresql", "16"))   # disabled, not enabled: no reset
    assert shells([f]) == [f"{DNF} module enable postgresql:16"]


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


# ---------------------------------------------------------------- broken installs (issue 15)

def plan_broken(op):
    """The op against a RHEL 9 host whose nvidia-driver-libs and dkms were
    removed with `rpm -e --nodeps` (rpm -qa + `rpm -Va --nofiles`, as gathered)."""
    rpms = RpmPackages().process((DATA / "rpm-verify.rhel9-broken").read_text(), 0)
    values = {}
    for fact in op.facts():
        if isinstance(fact, RpmPackages):
            values[fact] = rpms
        elif isinstance(fact, DnfAvailable):
            values[fact] = fact.process((DATA / "dnf-repoquery.rhel9").read_text(), 0)
    return op.plan(FactView(values))


def test_missing_requirement_is_a_repair_naming_it_rhel9() -> None:
    [c] = plan_broken(dnf.packages(["nvidia-driver", "bash"]))
    assert (c.resource, c.action) == ("package nvidia-driver", "repair")
    assert c.summary == (
        "repair nvidia-driver: requires nvidia-driver-libs(x86-64) = 3:580.82.07-1.el9 "
        "(missing); requires libnvidia-ml.so.1()(64bit) (missing)")
    # dnf installs a provider of each requirement; nvidia-driver stays as it is
    assert shells([c]) == [
        f"{DNF} install -- 'nvidia-driver-libs(x86-64) = 3:580.82.07-1.el9' "
        "'libnvidia-ml.so.1()(64bit)'"]
    assert c.diff.before.startswith("nvidia-driver 3:580.82.07-1.el9 (requires ")
    assert c.diff.after == "nvidia-driver 3:580.82.07-1.el9\n"
    assert c.unknown is None and c.invalidates is None


def test_several_broken_packages_one_repair_rhel9() -> None:
    [c] = plan_broken(dnf.packages({"nvidia-driver": "580.82.07", "kmod-nvidia-open-dkms": None}))
    assert c.resource == "packages nvidia-driver, kmod-nvidia-open-dkms"
    assert shells([c])[0].endswith(" dkms")


def test_broken_package_that_also_moves_rhel9() -> None:
    # the version change comes first; the repair then installs what is still missing
    install, repair = plan_broken(dnf.packages({"nvidia-driver": "580.95.05"}))
    assert install.action == "upgrade" and repair.action == "repair"


def test_unmanaged_breakage_is_not_this_ops_drift_rhel9() -> None:
    assert plan_broken(dnf.packages(["bash"])) == []
    assert plan_broken(dnf.packages("nvidia-driver", state="absent"))[0].action == "remove"


def test_rpm_verify_parse_keys_by_nevra() -> None:
    from gpuprov.facts.dnf import parse_rpm_verify
    out = ["Unsatisfied dependencies for foo-1.0-1.el9.x86_64:",
           "\tlibbar.so.1()(64bit) is needed by (installed) foo-1.0-1.el9.x86_64",
           "S.5....T.  c /etc/foo.conf"]
    assert parse_rpm_verify(out) == {
        "foo-1.0-1.el9.x86_64": ("requires libbar.so.1()(64bit) (missing)",)}
    intact = RpmPackages().process((DATA / "rpm-qa.rhel9").read_text(), 0)
    assert all(p.unmet == () for rows in intact.values() for p in rows)
