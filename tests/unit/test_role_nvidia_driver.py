"""Role nvidia_driver against canned facts, per distro: the exact commands of
a fresh install, a converged host, a branch upgrade, the refusals (branch
below 535, Secure Boot without an enrolled key), missing kernel headers and
a newer installed branch."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from gpuprov.facts.apt import (
    AptCacheAge,
    AptCandidates,
    AptKeyring,
    AptPreferences,
    AptSources,
    DebHeld,
    DebPackage,
    DebPackages,
    DpkgInterrupted,
)
from gpuprov.facts.dnf import (
    DnfAvailable,
    DnfModule,
    DnfModules,
    DnfRepoFiles,
    RpmPackage,
    RpmPackages,
)
from gpuprov.facts.files import FileState
from gpuprov.facts.nvidia import LoadedModule, MokEnrolled
from gpuprov.facts.system import OsInfo, PathExists, RootShellTest
from gpuprov.ops import keys
from gpuprov.ops.kernel import MissingHeaders
from tests.unit.role_facts import (
    ALL_DISTROS,
    APT,
    ARMORED_KEY,
    ARMORED_SHA256,
    DEBIAN_FAMILY,
    DNF,
    KEY_BYTES,
    KEY_SHA256,
    NET,
    REAL_FPR,
    REAL_KEY,
    apt_install,
    apt_mark,
    apt_source_update,
    apt_update,
    commands,
    deb,
    file_info,
    held,
    make_key_file,
    ops_until_failure,
    policies,
    policy,
    rpm,
    rpms,
    write_cmd,
)
from tests.unit.role_harness import KERNELS, MissingFacts, RolePlan, plan_role, system_for

T = 600   # nvidia_driver_apt_lock_timeout's default
UU = "/etc/apt/apt.conf.d/51gpuprov-nvidia-driver"
UU_TEXT = """\
// Managed by gpuprov (role nvidia_driver): local edits are overwritten.
// unattended-upgrades must not replace the NVIDIA driver under a loaded
// kernel module (nvidia-smi then fails with "version mismatch" until a
// reboot). gpuprov moves the driver (it is held/pinned).
Unattended-Upgrade::Package-Blacklist {
    "nvidia-";
    "libnvidia-";
    "cuda-drivers";
};
"""
CUDA = "https://developer.download.nvidia.com/compute/cuda/repos"
CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
DEB_LIST = "/etc/apt/sources.list.d/cuda-debian12-x86_64.list"
DEB_LIST_TEXT = ("# Managed by gpuprov: local edits are overwritten.\n"
                 f"deb [signed-by={CUDA_KEYRING}] {CUDA}/debian12/x86_64/ /\n")
PIN = "/etc/apt/preferences.d/gpuprov-nvidia-driver"
RPM_KEY = "/etc/pki/rpm-gpg/RPM-GPG-KEY-cuda-rhel9"
RHEL_REPO = "/etc/yum.repos.d/cuda-rhel9.repo"
RHEL_REPO_TEXT = ("# Managed by gpuprov: local edits are overwritten.\n[cuda-rhel9]\n"
                  f"name=NVIDIA CUDA\nbaseurl={CUDA}/rhel9/x86_64/\nenabled=1\ngpgcheck=1\n"
                  f"gpgkey=file://{RPM_KEY}\n")
CRB_TEST = RootShellTest("dnf -C repolist --enabled | grep -qiE '^(crb|codeready)'")
CRB = "subscription-manager repos --enable codeready-builder-for-rhel-9-$(uname -m)-rpms"
EPEL = f"{DNF} install -- https://dl.fedoraproject.org/pub/epel/epel-release-latest-9.noarch.rpm"
EPEL_REPO = PathExists("/etc/yum.repos.d/epel.repo")
RHEL_DEVEL = "5.14.0-427.13.1.el9_4"

DRIVER = {535: "535.274.02", 550: "550.163.01", 580: "580.95.05", 590: "590.44.01"}
HEADERS = {"ubuntu2204": "5.15.0-125.135", "ubuntu2404": "6.8.0-48.48", "debian12": "6.1.112-1"}


def pin_text(branch: int) -> str:
    return f"Package: *nvidia* cuda-drivers*\nPin: version {branch}.*\nPin-Priority: 1001\n"


def loaded(branch: int) -> str:
    """What LoadedModule reads from the kernel while that branch's module is loaded."""
    return DRIVER[branch]


def headers_install(distro: str) -> str:
    return (f"{APT} install -y -o DPkg::Lock::Timeout={T} {NET} --no-install-recommends -- "
            f"linux-headers-{KERNELS[distro]}")


@pytest.fixture
def key(tmp_path: Path):
    keys.clear_cache()
    yield make_key_file(tmp_path)
    keys.clear_cache()


def run(distro: str, facts: dict, key: str, secure_boot: str = "disabled", check: bool = False,
        **vars: object) -> RolePlan:
    return plan_role("nvidia_driver", system_for(distro, secure_boot=secure_boot), facts,
                     vars={"nvidia_driver_repo": {"url": "", "key": key}, **vars}, check=check)


# ---------------------------------------------------------------- canned hosts

def ubuntu_names(branch: int) -> list[str]:
    return [f"nvidia-headless-{branch}-server", f"nvidia-utils-{branch}-server"]


def ubuntu_pkg(distro: str, name: str, branch: int, *, held_: bool = True) -> DebPackage:
    release = "22.04" if distro == "ubuntu2204" else "24.04"
    return deb(name, f"{DRIVER[branch]}-0ubuntu0.{release}.1", held=held_)


def ubuntu_driver(distro: str, branch: int) -> list[DebPackage]:
    return [ubuntu_pkg(distro, f"nvidia-headless-{branch}-server", branch),
            ubuntu_pkg(distro, f"nvidia-utils-{branch}-server", branch),
            ubuntu_pkg(distro, f"libnvidia-compute-{branch}-server", branch, held_=False)]


def ubuntu_candidates(distro: str, branch: int) -> dict:
    names = ubuntu_names(branch)
    return {AptCandidates.of(names): policies(
        *(policy(n, ubuntu_pkg(distro, n, branch).version) for n in names))}


def cuda_driver(branch: int) -> list[DebPackage]:
    version = f"{DRIVER[branch]}-1"
    return [deb("nvidia-open", version, held=True), deb("nvidia-driver", version),
            deb("nvidia-kernel-open-dkms", version)]


def headers_pkg(distro: str) -> DebPackage:
    return deb(f"linux-headers-{KERNELS[distro]}", HEADERS[distro])


def deb_facts(distro: str, packages: Iterable[DebPackage] = (), *, module: str | None = None,
              configured: bool = False, pin: int = 580, branches: Iterable[int] = (580,),
              headers: bool = True, cache_age: int | None = 3600) -> dict:
    """A Debian-family host: dpkg holds `packages`; `configured` means the
    repository, key, pin and unattended-upgrades file are already right;
    `headers`: the running kernel's headers have a candidate in the apt cache."""
    packages = [deb("bash", "5.2.21-2"), *packages]
    name = f"linux-headers-{KERNELS[distro]}"
    facts = {
        DebPackages(): {p.name: p for p in packages},
        DebHeld(): held(*packages),
        DpkgInterrupted(): False,
        LoadedModule(): module,
        AptCandidates.of([name]): policies(policy(name, HEADERS[distro])) if headers else {},
        AptCacheAge(): cache_age,
        FileState(UU): file_info(UU_TEXT) if configured else None,
    }
    for branch in branches:
        if distro == "debian12":
            facts[AptCandidates.of(["nvidia-open"])] = policies(policy(
                "nvidia-open", *(f"{DRIVER[b]}-1" for b in (590, 580, 550))))
        else:
            facts.update(ubuntu_candidates(distro, branch))
    if distro == "debian12":
        facts.update({
            AptSources(): {DEB_LIST: DEB_LIST_TEXT} if configured else {},
            AptKeyring(CUDA_KEYRING): KEY_SHA256 if configured else None,
            AptPreferences(): {PIN: pin_text(pin)} if configured else {},
        })
    return facts


def nvidia_rpms(branch: int) -> list[RpmPackage]:
    return [rpm(n, DRIVER[branch], "1.el9", epoch=3)
            for n in ("nvidia-open", "nvidia-driver", "kmod-nvidia-open-dkms")]


DEVEL = [rpm("kernel-devel", "5.14.0", "427.13.1.el9_4"),
         rpm("kernel-headers", "5.14.0", "427.13.1.el9_4")]


def rhel_facts(packages: Iterable[RpmPackage] = (), *, module: str | None = None,
               configured: bool = False, stream: str | None = None,
               available_devel: Iterable[RpmPackage] | None = DEVEL) -> dict:
    return {
        RpmPackages(): rpms(rpm("bash", "5.1.8", "9.el9"), *packages),
        LoadedModule(): module,
        CRB_TEST: configured,
        EPEL_REPO: configured,
        DnfAvailable(("kernel-devel", "kernel-headers")):
            None if available_devel is None else rpms(*available_devel),
        DnfRepoFiles(): {RHEL_REPO: RHEL_REPO_TEXT} if configured else {},
        AptKeyring(RPM_KEY): ARMORED_SHA256 if configured else None,
        DnfModules(): {} if stream is None else {
            "nvidia-driver": DnfModule("nvidia-driver", stream, "enabled", ("default",))},
        DnfAvailable(("nvidia-open",)): rpms(*(rpm("nvidia-open", DRIVER[b], "1.el9", epoch=3)
                                               for b in (550, 580, 590))),
    }


def fresh(distro: str) -> dict:
    return rhel_facts() if distro == "rhel9" else deb_facts(distro)


def converged(distro: str, branch: int = 580) -> dict:
    if distro == "rhel9":
        return rhel_facts([*DEVEL, *nvidia_rpms(branch)], module=loaded(branch), configured=True,
                          stream=f"{branch}-open")
    driver = cuda_driver(branch) if distro == "debian12" else ubuntu_driver(distro, branch)
    return deb_facts(distro, [headers_pkg(distro), *driver], module=loaded(branch),
                     configured=True, pin=branch, branches=(branch,))


FRESH = {
    "ubuntu2204": [
        headers_install("ubuntu2204"),
        write_cmd(UU),
        apt_install(*ubuntu_names(580), timeout=T),
        apt_mark("hold", *ubuntu_names(580), timeout=T),
    ],
    "ubuntu2404": [
        headers_install("ubuntu2404"),
        write_cmd(UU),
        apt_install(*ubuntu_names(580), timeout=T),
        apt_mark("hold", *ubuntu_names(580), timeout=T),
    ],
    "debian12": [
        headers_install("debian12"),
        write_cmd(CUDA_KEYRING, mkdir=True),
        write_cmd(DEB_LIST, mkdir=True),
        apt_source_update(DEB_LIST, timeout=T),
        write_cmd(PIN, mkdir=True),
        write_cmd(UU),
        apt_install("nvidia-open=580.95.05-1", timeout=T),
        apt_mark("hold", "nvidia-open", timeout=T),
    ],
    "rhel9": [
        CRB,
        EPEL,
        f"{DNF} install -- kernel-devel-{RHEL_DEVEL} kernel-headers",
        write_cmd(RPM_KEY, mkdir=True),
        write_cmd(RHEL_REPO, mkdir=True),
        "dnf -q makecache --repo cuda-rhel9",
        f"{DNF} module enable nvidia-driver:580-open",
        f"{DNF} install -- 'nvidia-open-580.*'",
    ],
}

WHY_FRESH = " (reboot needed: the running kernel has no nvidia module loaded, not branch 580)"


# ---------------------------------------------------------------- fresh install

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_fresh_install(distro: str, key: str) -> None:
    plan = run(distro, fresh(distro), key)
    assert commands(plan) == FRESH[distro]
    # only the driver package change asks for a reboot, and it is the last one
    assert [c.reboot_required for c in plan.changes] == [False] * (len(plan.changes) - 1) + [True]
    assert plan.changes[-1].summary.endswith(WHY_FRESH)
    assert all(c.unknown is None for c in plan.changes)


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404"])
def test_fresh_install_ubuntu_archive(distro: str, key: str) -> None:
    plan = run(distro, fresh(distro), key)
    assert plan.labels == [f"kernel headers linux-headers-{KERNELS[distro]}", f"file {UU}",
                           "packages nvidia-headless-580-server, nvidia-utils-580-server"]
    uu, driver = plan.changes[1:]
    assert uu.steps[0].stdin == UU_TEXT.encode()
    version = f"580.95.05-0ubuntu0.{'22.04' if distro == 'ubuntu2204' else '24.04'}.1"
    assert driver.summary == ("install nvidia-headless-580-server; install "
                              f"nvidia-utils-580-server{WHY_FRESH}")
    assert driver.diff.before is None
    assert driver.diff.after == (f"nvidia-headless-580-server {version} (held)\n"
                                 f"nvidia-utils-580-server {version} (held)\n")


def test_fresh_install_debian_cuda_repository(key: str) -> None:
    plan = run("debian12", fresh("debian12"), key)
    by_resource = {c.resource: c for c in plan.changes}
    keyring = by_resource[f"apt keyring {CUDA_KEYRING}"]
    assert keyring.steps[0].stdin == KEY_BYTES          # dearmored on the controller
    source = by_resource[f"apt source {DEB_LIST}"]
    assert (source.diff.before, source.diff.after) == (None, DEB_LIST_TEXT)
    pin = by_resource[f"apt pin {PIN}"]
    assert pin.diff.after == pin_text(580)
    driver = by_resource["package nvidia-open"]
    assert driver.summary == f"install nvidia-open=580.95.05-1{WHY_FRESH}"
    assert driver.diff.after == "nvidia-open 580.95.05-1 (held)\n"


def test_fresh_install_rhel_cuda_repository(key: str) -> None:
    plan = run("rhel9", fresh("rhel9"), key)
    by_resource = {c.resource: c for c in plan.changes}
    assert by_resource[f"rpm key {RPM_KEY}"].steps[0].stdin == ARMORED_KEY.encode()
    repo = by_resource[f"dnf repo {RHEL_REPO}"]
    assert repo.diff.after == RHEL_REPO_TEXT
    module = by_resource["dnf module nvidia-driver"]
    assert (module.action, module.summary) == ("enable",
                                               "enable module stream nvidia-driver:580-open")
    driver = by_resource["package nvidia-open"]
    assert driver.summary == f"install nvidia-open-580.*{WHY_FRESH}"
    assert driver.diff.after == "nvidia-open 3:580.95.05-1.el9\n"
    crb = by_resource["command enable CRB (DKMS dependencies)"]
    assert crb.summary == f"run {CRB} (unless-test failed)"


def test_rhel_without_epel_and_a_rebuild_uses_dnf_for_crb(key: str) -> None:
    plan = run("rhel9", fresh("rhel9"), key, nvidia_driver_rhel_epel=False)
    assert commands(plan) == FRESH["rhel9"][2:]

    rocky = OsInfo("rocky", "9.4", ("rhel", "centos", "fedora"), "", "Rocky Linux 9.4")
    system = system_for("rhel9")
    system = type(system)(rocky, system.kernel, system.arch, system.init, system.secure_boot)
    facts = fresh("rhel9")
    plan = plan_role("nvidia_driver", system, facts,
                     vars={"nvidia_driver_repo": {"url": "", "key": key}})
    assert commands(plan)[:2] == ["dnf -y config-manager --set-enabled crb", EPEL]


def test_proprietary_modules_and_desktop_driver(key: str) -> None:
    facts = fresh("debian12")
    facts[AptCandidates.of(["cuda-drivers"])] = policies(policy("cuda-drivers", "580.95.05-1"))
    plan = run("debian12", facts, key, nvidia_driver_open=False)
    assert commands(plan)[-2:] == [apt_install("cuda-drivers=580.95.05-1", timeout=T),
                                   apt_mark("hold", "cuda-drivers", timeout=T)]

    facts = fresh("rhel9")
    facts[DnfAvailable(("cuda-drivers",))] = rpms(rpm("cuda-drivers", "580.95.05", "1"))
    plan = run("rhel9", facts, key, nvidia_driver_open=False)
    assert commands(plan)[-2:] == [f"{DNF} module enable nvidia-driver:580-dkms",
                                   f"{DNF} install -- 'cuda-drivers-580.*'"]

    facts = fresh("ubuntu2404")
    facts[AptCandidates.of(["nvidia-driver-580"])] = policies(
        policy("nvidia-driver-580", "580.95.05-0ubuntu0.24.04.1"))
    plan = run("ubuntu2404", facts, key, nvidia_driver_desktop=True)
    assert commands(plan)[-2:] == [apt_install("nvidia-driver-580", timeout=T),
                                   apt_mark("hold", "nvidia-driver-580", timeout=T)]


def test_cuda_source_on_ubuntu(key: str) -> None:
    facts = fresh("ubuntu2204")
    facts.update({AptSources(): {}, AptKeyring(CUDA_KEYRING): None, AptPreferences(): {},
                  AptCandidates.of(["nvidia-open"]): policies(policy("nvidia-open",
                                                                     "580.95.05-1"))})
    plan = run("ubuntu2204", facts, key, nvidia_driver_source="cuda")
    source = next(c for c in plan.changes if c.resource.startswith("apt source"))
    assert source.resource == "apt source /etc/apt/sources.list.d/cuda-ubuntu2204-x86_64.list"
    assert source.diff.after.endswith(
        f"deb [signed-by={CUDA_KEYRING}] {CUDA}/ubuntu2204/x86_64/ /\n")
    assert commands(plan)[-2:] == [apt_install("nvidia-open=580.95.05-1", timeout=T),
                                   apt_mark("hold", "nvidia-open", timeout=T)]


def test_apt_lock_timeout_is_used_by_every_apt_call(key: str) -> None:
    plan = run("ubuntu2204", fresh("ubuntu2204"), key, nvidia_driver_apt_lock_timeout=42)
    apt_calls = [c for c in commands(plan) if "apt-" in c]
    assert len(apt_calls) == 3
    assert all("DPkg::Lock::Timeout=42 " in c for c in apt_calls)


# ---------------------------------------------------------------- converged host

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_converged_host_has_no_change(distro: str, key: str) -> None:
    plan = run(distro, converged(distro), key)
    assert plan.changes == []
    expected = {
        "ubuntu2204": [f"kernel headers linux-headers-{KERNELS['ubuntu2204']}", f"file {UU}",
                       "packages nvidia-headless-580-server, nvidia-utils-580-server"],
        "ubuntu2404": [f"kernel headers linux-headers-{KERNELS['ubuntu2404']}", f"file {UU}",
                       "packages nvidia-headless-580-server, nvidia-utils-580-server"],
        "debian12": [f"kernel headers linux-headers-{KERNELS['debian12']}",
                     "apt repository cuda-debian12-x86_64", f"apt pin {PIN}", f"file {UU}",
                     "package nvidia-open"],
        "rhel9": ["command enable CRB (DKMS dependencies)", "command install EPEL",
                  f"kernel headers kernel-devel-{KERNELS['rhel9']}",
                  "dnf repository cuda-rhel9", "dnf module nvidia-driver",
                  "package nvidia-open"],
    }[distro]
    assert plan.labels == expected


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_converged_but_not_held_only_holds(distro: str, key: str) -> None:
    facts = converged(distro)
    facts[DebHeld()] = frozenset()
    plan = run(distro, facts, key)
    names = ["nvidia-open"] if distro == "debian12" else ubuntu_names(580)
    assert commands(plan) == [apt_mark("hold", *names, timeout=T)]
    # holding changes no module: no reboot
    assert [c.reboot_required for c in plan.changes] == [False]


# ---------------------------------------------------------------- upgrade 550 -> 580

@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404"])
def test_upgrade_ubuntu_removes_the_old_branch_first(distro: str, key: str) -> None:
    old = ubuntu_driver(distro, 550)
    facts = deb_facts(distro, [headers_pkg(distro), *old], module=loaded(550), configured=True)
    plan = run(distro, facts, key)
    old_names = ubuntu_names(550)
    assert commands(plan) == [
        apt_mark("unhold", *old_names, timeout=T),
        f"{APT} remove -y -o DPkg::Lock::Timeout={T} -- {' '.join(old_names)}",
        apt_install(*ubuntu_names(580), timeout=T),
        apt_mark("hold", *ubuntu_names(580), timeout=T),
    ]
    remove, install = plan.changes
    assert (remove.action, remove.reboot_required) == ("remove", False)
    assert remove.summary == ("remove " + ", ".join(f"{p.name} {p.version}" for p in old[:2]))
    assert (install.action, install.reboot_required) == ("install", True)
    assert install.summary.endswith(
        " (reboot needed: the running kernel has driver 550.163.01 loaded, not branch 580)")


def test_upgrade_debian_moves_pin_and_package(key: str) -> None:
    facts = deb_facts("debian12", [headers_pkg("debian12"), *cuda_driver(550)],
                      module=loaded(550), configured=True, pin=550)
    plan = run("debian12", facts, key)
    assert commands(plan) == [
        write_cmd(PIN, mkdir=True),
        apt_mark("unhold", "nvidia-open", timeout=T),
        apt_install("nvidia-open=580.95.05-1", timeout=T),
        apt_mark("hold", "nvidia-open", timeout=T),
    ]
    pin, install = plan.changes
    assert (pin.diff.before, pin.diff.after) == (pin_text(550), pin_text(580))
    assert (install.action, install.reboot_required) == ("upgrade", True)
    assert install.summary == (
        "upgrade nvidia-open 550.163.01-1 -> 580.95.05-1 (unhold, then hold again) "
        "(reboot needed: the running kernel has driver 550.163.01 loaded, not branch 580)")


def test_upgrade_rhel_switches_the_module_stream(key: str) -> None:
    facts = rhel_facts([*DEVEL, *nvidia_rpms(550)], module=loaded(550), configured=True,
                       stream="550-open")
    plan = run("rhel9", facts, key)
    assert commands(plan) == [f"{DNF} module reset nvidia-driver",
                              f"{DNF} module enable nvidia-driver:580-open",
                              f"{DNF} install -- 'nvidia-open-580.*'"]
    module, install = plan.changes
    assert (module.action, module.reboot_required) == ("switch", False)
    assert (install.action, install.reboot_required) == ("upgrade", True)
    assert install.summary == (
        "upgrade nvidia-open 3:550.163.01-1.el9 -> 3:580.95.05-1.el9 "
        "(reboot needed: the running kernel has driver 550.163.01 loaded, not branch 580)")


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_installed_branch_awaiting_reboot_has_no_change(distro: str, key: str) -> None:
    # 580 installed, 550 still loaded (reboot pending): nothing to do now
    facts = converged(distro)
    facts[LoadedModule()] = loaded(550)
    assert run(distro, facts, key).changes == []


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_loaded_module_is_asked_of_the_kernel_not_nvidia_smi(distro: str, key: str) -> None:
    # the role's facts carry no NvidiaSmi (asking for it would raise MissingFacts)
    facts = fresh(distro)
    del facts[LoadedModule()]
    with pytest.raises(MissingFacts, match=r"LoadedModule\(\)") as exc:
        run(distro, facts, key)
    assert "NvidiaSmi" not in str(exc.value)


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_another_build_of_the_branch_loaded_is_the_branch(distro: str, key: str) -> None:
    # 580.95.05 installed, 580.82.07 still loaded (nvidia-smi: version mismatch): the
    # branch is loaded, so Secure Boot needs no key check (no MokEnrolled in the facts)
    facts = converged(distro)
    facts[LoadedModule()] = "580.82.07"
    assert run(distro, facts, key, secure_boot="enabled").changes == []


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_branch_below_535_is_refused_before_any_op(distro: str) -> None:
    ops, exc = ops_until_failure("nvidia_driver", system_for(distro), {},
                                 vars={"nvidia_driver_branch": 470})
    assert ops == []
    assert exc.message.startswith("gpu-01: role nvidia_driver: nvidia_driver_branch=470: "
                                  "branch 470 is below the minimum 535: ")
    assert "CUDA 12.x runtime" in exc.message and "nothing was changed" in exc.message
    assert exc.hint == "use 580, the long-term branch (supported into 2028)"


@pytest.mark.parametrize("value", ["latest", "5xx", ""])
def test_branch_must_be_a_number(value: str) -> None:
    ops, exc = ops_until_failure("nvidia_driver", system_for("debian12"), {},
                                 vars={"nvidia_driver_branch": value})
    assert ops == []
    assert exc.message == (f"gpu-01: role nvidia_driver: nvidia_driver_branch={value!r}: "
                           "not a driver branch number")


def test_535_is_accepted(key: str) -> None:
    facts = deb_facts("ubuntu2204", branches=(535,))
    names = ubuntu_names(535)
    plan = run("ubuntu2204", facts, key, nvidia_driver_branch="535")
    assert commands(plan)[-2:] == [apt_install(*names, timeout=T),
                                   apt_mark("hold", *names, timeout=T)]


@pytest.mark.parametrize(("distro", "source", "message"), [
    ("debian12", "ubuntu", "the Ubuntu archive's driver packages do not exist on "
                           "Debian GNU/Linux 12 (bookworm)"),
    ("rhel9", "ubuntu", "the Ubuntu archive's driver packages do not exist on "
                        "Red Hat Enterprise Linux 9.4 (Plow)"),
    ("ubuntu2404", "runfile", "must be auto, ubuntu or cuda"),
])
def test_bad_source_is_refused(distro: str, source: str, message: str) -> None:
    ops, exc = ops_until_failure("nvidia_driver", system_for(distro), {},
                                 vars={"nvidia_driver_source": source})
    assert ops == []
    assert exc.message == f"gpu-01: role nvidia_driver: nvidia_driver_source={source!r}: {message}"


def test_unsupported_os_is_refused() -> None:
    system = system_for("debian12")
    bullseye = OsInfo("debian", "11", (), "bullseye", "Debian GNU/Linux 11 (bullseye)")
    ops, exc = ops_until_failure("nvidia_driver", type(system)(
        bullseye, system.kernel, system.arch, system.init, system.secure_boot), {})
    assert ops == []
    assert exc.message == ("gpu-01: role nvidia_driver: Debian GNU/Linux 11 (bullseye) "
                           "is not supported")


# ---------------------------------------------------------------- Secure Boot

@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("enrolled", [False, None])
def test_secure_boot_without_enrolled_key_is_refused_before_any_op(
        distro: str, enrolled: bool | None) -> None:
    facts = {**fresh(distro), MokEnrolled(): enrolled}
    ops, exc = ops_until_failure("nvidia_driver", system_for(distro, secure_boot="enabled"),
                                 facts)
    assert ops == []
    assert exc.message.startswith("gpu-01: role nvidia_driver: Secure Boot is enabled: ")
    assert "signed by an enrolled Machine Owner Key; nothing was changed" in exc.message
    assert "`sudo mokutil --import /var/lib/dkms/mok.pub`" in exc.hint
    assert "nvidia_driver_secure_boot_signed: true" in exc.hint


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_secure_boot_with_enrolled_key_installs(distro: str, key: str) -> None:
    facts = {**fresh(distro), MokEnrolled(): True}
    plan = run(distro, facts, key, secure_boot="enabled")
    assert commands(plan) == FRESH[distro]


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_secure_boot_signed_another_way_does_not_ask_mokutil(distro: str, key: str) -> None:
    # no MokEnrolled in the facts: asking for it would raise MissingFacts
    plan = run(distro, fresh(distro), key, secure_boot="enabled",
               nvidia_driver_secure_boot_signed=True)
    assert commands(plan) == FRESH[distro]


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_secure_boot_with_the_branch_already_loaded_is_fine(distro: str, key: str) -> None:
    assert run(distro, converged(distro), key, secure_boot="enabled").changes == []


def test_secure_boot_asks_for_the_mok_fact() -> None:
    with pytest.raises(MissingFacts, match=r"MokEnrolled\('/var/lib/dkms/mok.pub'\)"):
        plan_role("nvidia_driver", system_for("ubuntu2204", secure_boot="enabled"),
                  fresh("ubuntu2204"))


# ---------------------------------------------------------------- kernel headers

def guard(kernel: str) -> str:
    message = (f"gpuprov: no package linux-headers-{kernel} for the running kernel {kernel} "
               "in the configured repositories: DKMS cannot build the NVIDIA module without "
               "it. boot a kernel whose headers your repositories carry (e.g. the "
               "distribution's current one: install it, reboot, re-run), or add the "
               "repository that has them")
    return (f"apt-cache show linux-headers-{kernel} >/dev/null 2>&1 || "
            f"{{ echo {shlex.quote(message)} >&2; exit 1 ; }}")


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_headers_missing_from_a_fresh_cache_is_an_error(distro: str, key: str) -> None:
    kernel = KERNELS[distro]
    with pytest.raises(MissingHeaders) as exc:
        run(distro, deb_facts(distro, headers=False, cache_age=23 * 3600), key)
    assert exc.value.message == (
        f"no package linux-headers-{kernel} for the running kernel {kernel} in the "
        "configured repositories: DKMS cannot build the NVIDIA module without it")
    assert exc.value.hint.startswith("boot a kernel whose headers your repositories carry")


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
@pytest.mark.parametrize(("age", "why"), [(25 * 3600, "older than a day"),
                                          (None, "never updated")])
def test_headers_missing_from_a_stale_cache_is_unknown(distro: str, age: int | None, why: str,
                                                       key: str) -> None:
    kernel = KERNELS[distro]
    plan = run(distro, deb_facts(distro, headers=False, cache_age=age), key, check=True)
    first = plan.changes[0]
    assert first.resource == f"kernel headers linux-headers-{kernel}"
    assert first.unknown == (f"linux-headers-{kernel} is not in the apt cache ({why}): apply "
                             "updates it first and stops if the package does not exist")
    assert commands(plan)[:3] == [apt_update(T), guard(kernel), headers_install(distro)]


def test_headers_guard_stops_when_apt_has_no_such_package(tmp_path: Path) -> None:
    # the guard step as a real shell runs it, with an apt-cache that knows nothing
    fake = tmp_path / "apt-cache"
    fake.write_text("#!/bin/sh\necho 'E: No packages found' >&2\nexit 100\n")
    fake.chmod(0o755)
    kernel = KERNELS["ubuntu2204"]
    result = subprocess.run(["/bin/sh", "-c", guard(kernel)], capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"gpuprov: no package linux-headers-{kernel} for the "
                                    f"running kernel {kernel}")
    assert "distribution's current one" in result.stderr


@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_headers_already_installed_need_no_cache(distro: str, key: str) -> None:
    facts = converged(distro)
    facts[AptCandidates.of([f"linux-headers-{KERNELS[distro]}"])] = {}
    facts[AptCacheAge()] = None
    assert run(distro, facts, key).changes == []


def test_rhel_kernel_devel_of_another_version_only_is_an_error(key: str) -> None:
    newer = [rpm("kernel-devel", "5.14.0", "503.11.1.el9_5"),
             rpm("kernel-headers", "5.14.0", "503.11.1.el9_5")]
    kernel = KERNELS["rhel9"]
    with pytest.raises(MissingHeaders) as exc:
        run("rhel9", rhel_facts(available_devel=newer), key)
    assert exc.value.message == (
        f"no package kernel-devel-{kernel} for the running kernel {kernel} in the configured "
        "repositories: DKMS cannot build the NVIDIA module without it")


def test_rhel_installed_kernel_devel_needs_no_repository(key: str) -> None:
    # kernel-devel of the running kernel is installed, kernel-headers is not, and
    # the repositories moved on to a newer kernel: install kernel-headers only
    newer = [rpm("kernel-devel", "5.14.0", "503.11.1.el9_5"),
             rpm("kernel-headers", "5.14.0", "503.11.1.el9_5")]
    facts = converged("rhel9")
    facts[RpmPackages()] = rpms(DEVEL[0], *nvidia_rpms(580))
    facts[DnfAvailable(("kernel-devel", "kernel-headers"))] = rpms(*newer)
    plan = run("rhel9", facts, key)
    assert commands(plan) == [f"{DNF} install -- kernel-headers"]


def test_rhel_without_dnf_cache_is_unknown(key: str) -> None:
    plan = run("rhel9", rhel_facts(available_devel=None), key, check=True)
    headers = plan.changes[2]
    assert headers.resource == "packages kernel-devel, kernel-headers"
    assert headers.unknown == ("the dnf cache is empty: depends on a dnf repository op earlier "
                               "in the play or dnf makecache")
    assert commands(plan)[2] == f"{DNF} install -- kernel-devel-{RHEL_DEVEL} kernel-headers"


# ---------------------------------------------------------------- newer branch installed

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_newer_installed_branch_is_kept(distro: str, key: str) -> None:
    plan = run(distro, converged(distro, branch=590), key)
    assert plan.changes == []
    driver_op = plan.ops[-1].op
    if distro == "rhel9":
        assert plan.ops[-2].op.stream == "590-open"
        assert driver_op.packages == {"nvidia-open": "590.*"}
    elif distro == "debian12":
        assert plan.ops[2].op.text == pin_text(590)
        assert driver_op.packages == {"nvidia-open": "590.*"}
    else:
        assert list(driver_op.packages) == ubuntu_names(590)


@pytest.mark.parametrize("distro", ["ubuntu2204", "ubuntu2404"])
def test_downgrade_when_allowed_ubuntu(distro: str, key: str) -> None:
    facts = {**converged(distro, branch=590), **ubuntu_candidates(distro, 580)}
    plan = run(distro, facts, key, nvidia_driver_allow_downgrade=True)
    assert commands(plan) == [
        apt_mark("unhold", *ubuntu_names(590), timeout=T),
        f"{APT} remove -y -o DPkg::Lock::Timeout={T} -- {' '.join(ubuntu_names(590))}",
        apt_install(*ubuntu_names(580), timeout=T),
        apt_mark("hold", *ubuntu_names(580), timeout=T),
    ]
    assert [c.reboot_required for c in plan.changes] == [False, True]


def test_downgrade_when_allowed_debian(key: str) -> None:
    plan = run("debian12", converged("debian12", branch=590), key,
               nvidia_driver_allow_downgrade=True)
    assert commands(plan) == [
        write_cmd(PIN, mkdir=True),
        apt_mark("unhold", "nvidia-open", timeout=T),
        apt_install("nvidia-open=580.95.05-1", timeout=T, downgrade=True),
        apt_mark("hold", "nvidia-open", timeout=T),
    ]
    assert plan.changes[-1].action == "downgrade"
    assert plan.changes[-1].reboot_required is True


def test_downgrade_when_allowed_rhel(key: str) -> None:
    plan = run("rhel9", converged("rhel9", branch=590), key, nvidia_driver_allow_downgrade=True)
    assert commands(plan) == [f"{DNF} module reset nvidia-driver",
                              f"{DNF} module enable nvidia-driver:580-open",
                              f"{DNF} install -- 'nvidia-open-580.*'"]
    assert (plan.changes[-1].action, plan.changes[-1].reboot_required) == ("downgrade", True)


# ---------------------------------------------------------------- signing key

def test_unreadable_key_in_check_mode_is_unknown(tmp_path: Path) -> None:
    keys.clear_cache()
    missing = str(tmp_path / "no-such-key.asc")
    plan = run("debian12", fresh("debian12"), missing, check=True)
    assert plan.failed == []
    assert plan.ops[1].op.label == "apt repository cuda-debian12-x86_64"
    unknown = plan.changes[1]
    assert (unknown.resource, unknown.action) == ("signing key of the CUDA repository", "check")
    assert unknown.unknown.startswith(
        f"cannot read the signing key of the CUDA repository from {missing}: ")
    assert unknown.unknown.endswith("; apply would stop here")
    # the source line is still checked, signed by the keyring path
    source = plan.changes[2]
    assert source.diff.after == DEB_LIST_TEXT

    plan = run("rhel9", fresh("rhel9"), missing, check=True)
    assert plan.failed == []
    [repo] = [p for p in plan.ops if p.op.label == "dnf repository cuda-rhel9"]
    # nothing of the dnf repository is checked without its key: the key is unknown
    assert [(c.resource, c.steps) for c in repo.changes] == [
        ("signing key of the CUDA repository", [])]
    assert repo.changes[0].unknown.endswith("; apply would stop here")


@pytest.mark.parametrize("distro", ["debian12", "rhel9"])
def test_unreadable_key_in_apply_fails_the_task(distro: str, tmp_path: Path) -> None:
    keys.clear_cache()
    missing = str(tmp_path / "no-such-key.asc")
    plan = run(distro, fresh(distro), missing)
    [(label, error)] = plan.failed
    assert label == ("dnf repository cuda-rhel9" if distro == "rhel9"
                     else "apt repository cuda-debian12-x86_64")
    assert error.startswith(f"cannot read the signing key of the CUDA repository from {missing}")
    assert "nvidia_driver_repo.key" in error
    assert plan.labels[-1] == label, "the engine stops the host at the failed task"


def test_mirror_url_and_inline_key(tmp_path: Path) -> None:
    keys.clear_cache()
    facts = fresh("debian12")
    plan = plan_role("nvidia_driver", system_for("debian12"), facts, vars={
        "nvidia_driver_repo": {"url": "https://mirror.lab.example/cuda/debian12",
                               "key": ARMORED_KEY}})
    source = next(c for c in plan.changes if c.resource == f"apt source {DEB_LIST}")
    assert source.diff.after.endswith(
        f"deb [signed-by={CUDA_KEYRING}] https://mirror.lab.example/cuda/debian12/ /\n")


@pytest.mark.parametrize("distro", ["debian12", "rhel9"])
def test_key_fingerprint_mismatch_is_unknown_in_check_and_fails_apply(
        distro: str, tmp_path: Path) -> None:
    keys.clear_cache()
    (tmp_path / "cuda.asc").write_text(REAL_KEY)
    wrong = "EB69 3B30 35CD 5710 E231  E123 A4B4 6996 3BF8 63CC"
    repo = {"url": "", "key": str(tmp_path / "cuda.asc"), "key_fingerprint": wrong}
    plan = plan_role("nvidia_driver", system_for(distro), fresh(distro),
                     vars={"nvidia_driver_repo": repo}, check=True)
    [unknown] = [c for c in plan.changes if c.resource == "signing key of the CUDA repository"]
    assert f"has fingerprint {REAL_FPR}, not the expected {wrong.replace(' ', '')}" \
        in unknown.unknown
    plan = plan_role("nvidia_driver", system_for(distro), fresh(distro),
                     vars={"nvidia_driver_repo": repo})
    [(_, error)] = plan.failed
    assert REAL_FPR in error and "(nvidia_driver_repo.key_fingerprint)" in error
    repo["key_fingerprint"] = REAL_FPR.lower()
    plan = plan_role("nvidia_driver", system_for(distro), fresh(distro),
                     vars={"nvidia_driver_repo": repo})
    assert plan.failed == []


def test_key_over_plain_http_needs_insecure() -> None:
    keys.clear_cache()
    # refused before any connection: nothing listens on this URL
    repo = {"url": "", "key": "http://127.0.0.1:9/cuda.asc"}
    plan = plan_role("nvidia_driver", system_for("debian12"), fresh("debian12"),
                     vars={"nvidia_driver_repo": repo})
    [(_, error)] = plan.failed
    assert "over plain http" in error
    assert "`insecure: true` in the nvidia_driver_repo mapping" in error


@pytest.mark.parametrize(("repo", "message"), [
    ({"key_fingerprint": "3bf863cc"}, "is not an OpenPGP v4 fingerprint"),
    ({"insecure": "yes"}, "insecure must be true or false, not 'yes'"),
])
def test_bad_key_options_are_refused_before_any_op(repo: dict, message: str) -> None:
    ops, exc = ops_until_failure("nvidia_driver", system_for("debian12"), fresh("debian12"),
                                 vars={"nvidia_driver_repo": {"url": "", "key": "", **repo}})
    assert "nvidia_driver_repo=" in exc.message and message in exc.message
    assert not any(p.label.startswith("apt repository") for p in ops)
