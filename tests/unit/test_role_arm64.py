"""Every bundled role planned on arm64 (Grace/sbsa servers) with canned facts:
Ubuntu 24.04 and RHEL 9 on aarch64. The roles that fetch per-architecture
things (the CUDA repository, Docker's apt repository, the image's platform)
are asserted line by line; the others must plan exactly what they plan on
x86_64. A Jetson (L4T) is refused before any change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuprov.facts.apt import AptCandidates, AptKeyring, AptPreferences, AptSources
from gpuprov.facts.docker import DockerImage, DockerImageState, ImageInfo
from gpuprov.facts.files import FileState
from gpuprov.facts.services import ServiceState
from gpuprov.facts.system import Arch, SystemFacts
from gpuprov.ops import keys
from gpuprov.ops.docker import ImageError
from tests.doubles.make_image_archive import make_image_archive
from tests.unit import test_role_container_toolkit as toolkit
from tests.unit import test_role_gpu_exporter as exporter
from tests.unit import test_role_jupyter as jupyter
from tests.unit import test_role_nouveau as nouveau
from tests.unit import test_role_nvidia_driver as driver
from tests.unit import test_role_sshd_hardening as sshd
from tests.unit import test_role_verify as verify
from tests.unit.role_facts import (
    commands,
    file_info,
    make_key_file,
    ops_until_failure,
    policies,
    policy,
    rpm,
    rpms,
    service_info,
)
from tests.unit.role_harness import RolePlan, plan_role, system_for

#: the arm64 hosts gpuprov supports: NVIDIA publishes sbsa repositories for both
ARM_DISTROS = ("ubuntu2404", "rhel9")
CUDA = "https://developer.download.nvidia.com/compute/cuda/repos"
HEAD = "# Managed by gpuprov: local edits are overwritten.\n"
DATA = Path(__file__).parent / "data" / "facts"


def arm(distro: str, **kw: Any) -> SystemFacts:
    return system_for(distro, arch="aarch64", **kw)


@pytest.fixture
def key(tmp_path: Path):  # type: ignore[no-untyped-def]
    keys.clear_cache()
    yield make_key_file(tmp_path)
    keys.clear_cache()


def same_as_x86(role: str, distro: str, facts: dict, **kw: Any) -> RolePlan:
    """The role's plan on arm64, checked to be the x86_64 plan, command for command."""
    on_arm = plan_role(role, arm(distro), facts, **kw)
    on_x86 = plan_role(role, system_for(distro), facts, **kw)
    assert on_arm.skipped is None and on_arm.ops, f"{role} planned nothing on arm64"
    assert commands(on_arm) == commands(on_x86)
    assert on_arm.changed() == on_x86.changed()
    assert not [c for c in commands(on_arm) if "x86_64" in c or "amd64" in c]
    return on_arm


def by_resource(plan: RolePlan) -> dict[str, Any]:
    return {c.resource: c for c in plan.changes}


# ---------------------------------------------------------------- the Arch fact

def arch(name: str) -> str:
    """A host's Arch probe output (`uname -m`, dpkg's arch, Jetson signs)."""
    return (DATA / f"arch.{name}").read_text()


@pytest.mark.parametrize(("name", "machine", "deb", "cuda", "docker"), [
    ("ubuntu2404-arm64", "aarch64", "arm64", "sbsa", "arm64"),
    ("rhel9-arm64", "aarch64", None, "sbsa", "arm64"),       # no dpkg on RHEL
    ("ubuntu2404", "x86_64", "amd64", "x86_64", "amd64"),
    ("rhel9", "x86_64", None, "x86_64", "amd64"),
])
def test_arch_fact_names_the_cuda_repo_and_docker_platform(
        name: str, machine: str, deb: str | None, cuda: str, docker: str) -> None:
    info = Arch().process(arch(name), 0)
    assert (info.machine, info.deb, info.cuda_repo, info.docker, info.tegra) == (
        machine, deb, cuda, docker, None)


def test_the_arm64_fixtures_are_what_the_arch_fact_reads() -> None:
    assert arm("ubuntu2404").arch == Arch().process(arch("ubuntu2404-arm64"), 0)
    assert arm("rhel9").arch == Arch().process(arch("rhel9-arm64"), 0)
    assert arm("rhel9").kernel.endswith(".aarch64")


@pytest.mark.parametrize(("output", "evidence"), [
    (arch("ubuntu2204-jetson"), "/etc/nv_tegra_release"),
    ("aarch64\narm64\ntegra: device-tree model NVIDIA Jetson\n",
     "device-tree model NVIDIA Jetson"),
    ("aarch64\ntegra: kernel 5.15.136-tegra\n", "kernel 5.15.136-tegra"),
])
def test_arch_fact_recognises_a_jetson(output: str, evidence: str) -> None:
    info = Arch().process(output, 0)
    assert (info.machine, info.tegra) == ("aarch64", evidence)


def test_arch_probe_looks_for_every_jetson_sign() -> None:
    probe = Arch().command().display()
    for sign in ("/etc/nv_tegra_release", "/proc/device-tree/model", "NVIDIA Jetson", "*tegra*"):
        assert sign in probe


# ---------------------------------------------------------------- arch-neutral roles

def base_facts(distro: str) -> dict:
    if distro == "rhel9":
        return {FileState("/etc/motd"): None, FileState("/etc/chrony.conf"):
                file_info("pool 2.rhel.pool.ntp.org iburst\n"),
                FileState("/etc/chrony.d", content=False): None,
                FileState("/etc/chrony.d/gpuprov.conf"): None,
                driver.RpmPackages(): rpms(rpm("bash", "5.1.8", "9.el9", arch="aarch64")),
                driver.DnfAvailable(("chrony",)): rpms(rpm("chrony", "4.5", "1.el9",
                                                           arch="aarch64")),
                ServiceState("chrony" + "d"): service_info("chronyd", exists=False)}
    return {FileState("/etc/motd"): None, FileState("/etc/chrony/conf.d", content=False): None,
            FileState("/etc/chrony/conf.d/gpuprov.conf"): None,
            driver.DebPackages(): {}, driver.DebHeld(): frozenset(),
            driver.DpkgInterrupted(): False,
            AptCandidates.of(["chrony"]): policies(policy("chrony", "4.5-1ubuntu4")),
            ServiceState("chrony"): service_info("chrony", exists=False)}


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_base(distro: str) -> None:
    plan = same_as_x86("base", distro, base_facts(distro))
    assert plan.labels[0] == "file /etc/motd"
    assert any("chrony" in c for c in commands(plan))


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_sshd_hardening(distro: str) -> None:
    plan = same_as_x86("sshd_hardening", distro, sshd.facts(distro, user=sshd.ADMIN.user),
                       session=sshd.ADMIN)
    assert f"file {sshd.DROPIN}" in by_resource(plan)


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_nouveau(distro: str) -> None:
    plan = same_as_x86("nouveau", distro, nouveau.facts(loaded=False))
    assert plan.labels == [f"file {nouveau.BLACKLIST}"]


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_jupyter(distro: str) -> None:
    plan = same_as_x86("jupyter", distro, jupyter.fresh(), vars={"gpu_image": jupyter.IMAGE},
                       play_roles=("sshd_hardening",))
    assert f"container {jupyter.NAME}" in plan.labels


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_verify(distro: str) -> None:
    plan = same_as_x86("verify", distro, verify.facts(), vars={"gpu_image": verify.IMAGE})
    assert plan.labels == [f"verify GPU in {verify.IMAGE}"] and plan.changes == []


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_gpu_exporter(distro: str) -> None:
    plan = same_as_x86("gpu_exporter", distro, exporter.fresh(), vars=exporter.ON)
    assert f"file {exporter.PROGRAM}" in plan.labels


# ---------------------------------------------------------------- nvidia_driver

def test_nvidia_driver_ubuntu_cuda_repository_is_sbsa(key: str) -> None:
    facts = driver.deb_facts("ubuntu2404")
    facts.update({AptSources(): {}, AptKeyring(driver.CUDA_KEYRING): None,
                  AptPreferences(): {},
                  AptCandidates.of(["nvidia-open"]): policies(policy("nvidia-open",
                                                                     "580.95.05-1"))})
    plan = plan_role("nvidia_driver", arm("ubuntu2404"), facts,
                     vars={"nvidia_driver_repo": {"url": "", "key": key},
                           "nvidia_driver_source": "cuda"})
    source = by_resource(plan)["apt source /etc/apt/sources.list.d/cuda-ubuntu2404-sbsa.list"]
    assert source.diff.after == (f"{HEAD}deb [signed-by={driver.CUDA_KEYRING}] "
                                 f"{CUDA}/ubuntu2404/sbsa/ /\n")
    assert by_resource(plan)["package nvidia-open"].diff.after == "nvidia-open 580.95.05-1 (held)\n"
    assert not [c for c in commands(plan) if "x86_64" in c or "amd64" in c]


def test_nvidia_driver_ubuntu_archive_is_the_same_on_arm64(key: str) -> None:
    # auto on Ubuntu: the archive's -server packages, published for arm64 too
    plan = same_as_x86("nvidia_driver", "ubuntu2404", driver.deb_facts("ubuntu2404"),
                       vars={"nvidia_driver_repo": {"url": "", "key": key}})
    assert driver.apt_install(*driver.ubuntu_names(580), timeout=driver.T) in commands(plan)


def test_nvidia_driver_rhel_cuda_repository_is_sbsa(key: str) -> None:
    plan = plan_role("nvidia_driver", arm("rhel9"), driver.rhel_facts(),
                     vars={"nvidia_driver_repo": {"url": "", "key": key}})
    repo = by_resource(plan)[f"dnf repo {driver.RHEL_REPO}"]
    assert repo.diff.after == (f"{HEAD}[cuda-rhel9]\nname=NVIDIA CUDA\n"
                               f"baseurl={CUDA}/rhel9/sbsa/\nenabled=1\ngpgcheck=1\n"
                               f"gpgkey=file://{driver.RPM_KEY}\n")
    # CRB's repo id carries the arch: $(uname -m) on the host says aarch64
    assert driver.CRB in commands(plan)
    assert not [c for c in commands(plan) if "x86_64" in c or "amd64" in c]


# ---------------------------------------------------------------- container_toolkit

def test_container_toolkit_ubuntu_repositories_are_arm64(key: str) -> None:
    plan = plan_role("container_toolkit", arm("ubuntu2404"), toolkit.fresh("ubuntu2404"),
                     vars={"container_toolkit_repo": {"url": "", "key": key},
                           "docker_repo": {"url": "", "key": key}})
    changes = by_resource(plan)
    assert changes[f"apt source {toolkit.DOCKER_LIST}"].diff.after == (
        f"{HEAD}deb [arch=arm64 signed-by={toolkit.DOCKER_KEYRING}] "
        "https://download.docker.com/linux/ubuntu noble stable\n")
    # apt puts the host's own arch (arm64) in $(ARCH): NVIDIA's list file as published
    assert changes[f"apt source {toolkit.TK_LIST}"].diff.after == toolkit.TK_LIST_TEXT
    assert "deb/$(ARCH) /" in toolkit.TK_LIST_TEXT
    assert not [c for c in commands(plan) if "amd64" in c or "x86_64" in c]


def test_container_toolkit_rhel_repositories_take_basearch(key: str) -> None:
    # dnf fills $basearch (aarch64) itself: the repo files are those of x86_64
    plan = same_as_x86("container_toolkit", "rhel9", toolkit.fresh("rhel9"),
                       vars={"container_toolkit_repo": {"url": "", "key": key},
                             "docker_repo": {"url": "", "key": key}})
    changes = by_resource(plan)
    assert changes[f"dnf repo {toolkit.DOCKER_REPO}"].diff.after == toolkit.DOCKER_REPO_TEXT
    assert changes[f"dnf repo {toolkit.TK_REPO}"].diff.after == toolkit.TK_REPO_TEXT
    assert "$basearch" in toolkit.DOCKER_REPO_TEXT and "$basearch" in toolkit.TK_REPO_TEXT


# ---------------------------------------------------------------- gpu_image

REF = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"
IMAGE_ID = "sha256:" + "5a" * 32


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_gpu_image_is_pulled_for_linux_arm64_and_checked(distro: str) -> None:
    plan = plan_role("gpu_image", arm(distro), {DockerImage(REF): DockerImageState("ok")})
    pull, check = commands(plan)
    assert pull == f"docker pull --quiet --platform=linux/arm64 {REF}"
    assert check.startswith(f"docker image inspect {REF} | grep -qF '\"Architecture\": \"arm64\"'")
    assert "is not built for linux/arm64" in check and "exit 1" in check


@pytest.mark.parametrize("distro", ARM_DISTROS)
def test_gpu_image_present_for_amd64_on_an_arm64_host_is_repulled(distro: str) -> None:
    amd64 = DockerImageState("ok", ImageInfo(IMAGE_ID, (REF,), (), "amd64"))
    plan = plan_role("gpu_image", arm(distro), {DockerImage(REF): amd64})
    [change] = plan.changes
    assert (change.action, change.summary) == (
        "repull", f"docker pull {REF} (present for linux/amd64, host is arm64)")
    arm64 = DockerImageState("ok", ImageInfo(IMAGE_ID, (REF,), (), "arm64"))
    assert plan_role("gpu_image", arm(distro), {DockerImage(REF): arm64}).changes == []


def test_gpu_image_archive_of_another_platform_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    make_image_archive(path, [REF])           # the doubles' archive: linux/amd64
    with pytest.raises(ImageError, match=r"holds a linux/amd64 image; this host is linux/arm64"):
        plan_role("gpu_image", arm("ubuntu2404"), {}, vars={"gpu_image": REF,
                                                           "gpu_image_archive": str(path)})


# ---------------------------------------------------------------- Jetson

JETSON = "/etc/nv_tegra_release"


@pytest.mark.parametrize("role", ["nvidia_driver", "container_toolkit"])
def test_a_jetson_is_refused_before_any_change(role: str) -> None:
    ops, failed = ops_until_failure(role, arm("ubuntu2404", tegra=JETSON), {})
    assert ops == []
    assert "NVIDIA Jetson (L4T: /etc/nv_tegra_release)" in failed.message
    assert "L4T/JetPack board support package, a different driver model" in failed.message
    assert "that gpuprov does not manage yet" in failed.message
    assert failed.hint is not None and "JetPack" in failed.hint
