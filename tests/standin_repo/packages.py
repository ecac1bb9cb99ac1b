# TEST DOUBLE packages for gpuprov's test fleet: the data describing every stand-in .deb.
# Never publish these packages or install them on real hosts.
"""What each stand-in package contains.  Adding a package is a few lines here: a
Package with its files (taken from tests/doubles, literal text, symlinks, or a value
the build generates such as the CUDA keyring) and maintainer script templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
HOME = "/usr/libexec/gpuprov-test-doubles"  # where doubles/ is installed on hosts
COMMON = "gpuprov-test-doubles"  # shared lib/ + boot runner; every double depends on it
COMMON_VERSION = "1.0-1"
MAINTAINER = "gpuprov test fleet <gpuprov-test-doubles@invalid>"

ARCHIVE, TOOLKIT, CUDA = "archive", "libnvidia-container", "cuda"


@dataclass(frozen=True)
class File:
    path: str                     # absolute path on the host
    source: str | None = None     # file under tests/doubles
    text: str | None = None       # literal content
    link: str | None = None       # symlink target
    generated: str | None = None  # a value the build provides, e.g. "cuda-keyring"
    mode: int = 0o644


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    repo: str
    description: str
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    files: tuple[File, ...] = ()
    # maintainer script name -> template under doubles/maint; @KEY@ is replaced from subst
    scripts: tuple[tuple[str, str], ...] = ()
    subst: tuple[tuple[str, str], ...] = ()
    architecture: str = "amd64"
    extra_fields: tuple[tuple[str, str], ...] = ()


def double(rel: str) -> File:
    """A file of tests/doubles installed at the same relative path under HOME."""
    src = DOUBLES / rel
    mode = 0o755 if src.stat().st_mode & 0o111 else 0o644
    return File(path=f"{HOME}/{rel}", source=rel, mode=mode)


def tree(rel: str) -> tuple[File, ...]:
    """Every file and symlink under tests/doubles/rel (symlinks kept as symlinks)."""
    out = []
    for src in sorted((DOUBLES / rel).rglob("*")):
        sub = src.relative_to(DOUBLES).as_posix()
        if "__pycache__" in sub:
            continue
        if src.is_symlink():
            out.append(File(path=f"{HOME}/{sub}", link=str(src.readlink())))
        elif src.is_file():
            out.append(double(sub))
    return tuple(out)


def tool(name: str, dest: str = "/usr/bin") -> tuple[File, ...]:
    """A double in HOME/bin plus the symlink where the real tool lives."""
    return double(f"bin/{name}"), File(path=f"{dest}/{name}", link=f"{HOME}/bin/{name}")


def service(name: str, package: str, extra: str = ":") -> dict:
    return {
        "scripts": (("postinst", "service.postinst"), ("prerm", "service.prerm"),
                    ("postrm", "service.postrm")),
        "subst": (("SERVICE", name), ("PACKAGE", package), ("EXTRA", extra)),
    }


def deb_version_of_kernel(kernel_release: str) -> str:
    match = re.match(r"\d+(?:\.\d+)*", kernel_release)
    if not match:
        raise ValueError(f"cannot derive a package version from kernel {kernel_release!r}")
    return f"{match.group(0)}-1"


DRIVER_BRANCHES = {470: "470.256.02", 535: "535.274.02", 550: "550.163.01", 580: "580.95.05"}
TOOLKIT_VERSIONS = ("1.17.8-1", "1.18.0-1")
CUDA_DRIVERS = {580: "580.95.05", 590: "590.44.01"}
DOCKER_VERSION = "5:28.2.2-1~debian.12~bookworm"
CONTAINERD_VERSION = "1.7.27-1"
CHRONY_VERSION = "4.3-2+deb12u1"
TD = "TEST DOUBLE for gpuprov's test fleet; never install on real hosts."


def _headless_files() -> tuple[File, ...]:
    return (File(path="/etc/gpuprov-test-double/boot.d/nvidia", source="boot.d/nvidia",
                 mode=0o755),)


def _chrony_files() -> tuple[File, ...]:
    # The builder has no empty-directory entries, so conf.d/ and sources.d/ each ship a
    # README placeholder; chronyd only reads *.conf and *.sources there.
    placeholder = (f"# {TD}\n# Placeholder so the stand-in package ships this directory "
                   "(empty in Debian's chrony).\n")
    return tool("chronyc") + (
        File(path="/etc/chrony/chrony.conf", source="data/chrony.conf"),
        File(path="/etc/chrony/conf.d/README", text=placeholder),
        File(path="/etc/chrony/sources.d/README", text=placeholder),
        File(path="/etc/init.d/chrony", source="init.d/chrony", mode=0o755),
        File(path=f"{HOME}/daemon/chronyd", link="/bin/sleep"),
        File(path="/usr/sbin/chronyd", link=f"{HOME}/daemon/chronyd"),
    )


def common(repo: str) -> Package:
    """Shared lib/ and the boot runner; in every repo so each one installs on its own."""
    return Package(COMMON, COMMON_VERSION, repo, f"shared library of the gpuprov test "
                   f"doubles. {TD}", architecture="all", files=tree("lib") + (double("boot"),))


def archive_packages(kernel_release: str, cuda_repo_url: str) -> list[Package]:
    kver = kernel_release
    src = f"/usr/src/linux-headers-{kver}"
    pkgs = [
        common(ARCHIVE),
        Package(f"linux-headers-{kver}", deb_version_of_kernel(kver), ARCHIVE,
                f"Header files for Linux {kver} (stand-in). {TD}", files=(
                    File(path=f"{src}/Makefile", text=f"# {TD}\nKERNELRELEASE = {kver}\n"),
                    File(path=f"{src}/.config", text=f"# {TD}\nCONFIG_MODULES=y\n"),
                    File(path=f"/lib/modules/{kver}/build", link=src),
                )),
        Package("mokutil", "0.6.0-2", ARCHIVE, f"tools for manipulating machine owner keys. {TD}",
                depends=(COMMON,), files=tool("mokutil")),
        Package("cuda-keyring", "1.1-1", ARCHIVE, f"GPG keyring for the CUDA repository. {TD}",
                architecture="all", files=(
                    File(path="/usr/share/keyrings/cuda-archive-keyring.gpg",
                         generated="cuda-keyring"),
                    File(path="/etc/apt/sources.list.d/cuda-debian12-x86_64.list",
                         text="deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
                              f"{cuda_repo_url.rstrip('/')}/ /\n"),
                )),
        Package("containerd.io", CONTAINERD_VERSION, ARCHIVE,
                f"An open and reliable container runtime. {TD}", depends=(COMMON,),
                provides=("containerd", "runc"), conflicts=("containerd", "runc"),
                replaces=("containerd", "runc"),
                files=tool("containerd") + (
                    File(path="/etc/init.d/containerd", source="init.d/containerd", mode=0o755),
                    File(path="/etc/containerd/config.toml", source="data/containerd-config.toml"),
                    File(path=f"{HOME}/daemon/containerd", link="/bin/sleep"),
                ), **service("containerd", "containerd.io")),
        Package("docker-ce-cli", DOCKER_VERSION, ARCHIVE, f"Docker CLI. {TD}",
                depends=(COMMON,), files=tool("docker")),
        Package("docker-ce", DOCKER_VERSION, ARCHIVE, f"Docker: the open-source application "
                f"container engine. {TD}",
                depends=(COMMON, "containerd.io (>= 1.7.27)", "docker-ce-cli"),
                conflicts=("docker.io", "docker-engine"),
                files=tool("dockerd") + tree("image") + tree("image-gpu") + (
                    double("data/registry.json"),
                    File(path="/etc/init.d/docker", source="init.d/docker", mode=0o755),
                    File(path=f"{HOME}/daemon/dockerd", link="/bin/sleep"),
                ), **service("docker", "docker-ce",
                             "getent group docker >/dev/null || groupadd --system docker")),
        Package("chrony", CHRONY_VERSION, ARCHIVE, f"Versatile implementation of the Network "
                f"Time Protocol. {TD}", depends=(COMMON,), provides=("time-daemon",),
                conflicts=("time-daemon",), replaces=("time-daemon",), files=_chrony_files(),
                **service("chrony", "chrony")),
    ]
    for branch, upstream in DRIVER_BRANCHES.items():
        version = f"{upstream}-0ubuntu1"
        headless, utils = f"nvidia-headless-{branch}-server", f"nvidia-utils-{branch}-server"
        pkgs += [
            Package(headless, version, ARCHIVE, f"NVIDIA headless metapackage, DKMS-built "
                    f"module (stand-in). {TD}", depends=(COMMON,),
                    provides=("nvidia-kernel-module",), conflicts=("nvidia-kernel-module",),
                    replaces=("nvidia-kernel-module",), files=_headless_files(),
                    scripts=(("preinst", "nvidia-headless.preinst"),
                             ("postinst", "nvidia-headless.postinst"),
                             ("postrm", "nvidia-headless.postrm")),
                    subst=(("VERSION", upstream), ("BRANCH", str(branch)))),
            Package(utils, version, ARCHIVE, f"NVIDIA driver support binaries (stand-in). {TD}",
                    depends=(COMMON,), provides=("nvidia-utils",), conflicts=("nvidia-utils",),
                    replaces=("nvidia-utils",), files=tool("nvidia-smi")),
            Package(f"nvidia-driver-{branch}", version, ARCHIVE, f"NVIDIA driver metapackage "
                    f"(stand-in). {TD}", depends=(f"{headless} (= {version})",
                                                 f"{utils} (= {version})"),
                    provides=("nvidia-driver-binary",), conflicts=("nvidia-driver-binary",),
                    replaces=("nvidia-driver-binary",)),
        ]
    return pkgs


def toolkit_packages() -> list[Package]:
    pkgs = [common(TOOLKIT)]
    for version in TOOLKIT_VERSIONS:
        pkgs += [
            Package("libnvidia-container1", version, TOOLKIT,
                    f"NVIDIA container runtime library (stand-in). {TD}", depends=(COMMON,),
                    files=(File(path="/usr/lib/x86_64-linux-gnu/libnvidia-container.so.1",
                                text=f"{TD}\n"),)),
            Package("libnvidia-container-tools", version, TOOLKIT,
                    f"NVIDIA container runtime library (command-line tools). {TD}",
                    depends=(COMMON, f"libnvidia-container1 (>= {version})"),
                    files=tool("nvidia-container-cli")),
            Package("nvidia-container-toolkit-base", version, TOOLKIT,
                    f"NVIDIA Container Toolkit Base. {TD}", depends=(COMMON,),
                    files=tool("nvidia-ctk") + tool("nvidia-container-runtime") + (
                        File(path="/etc/nvidia-container-runtime/config.toml",
                             text=f"# {TD}\n[nvidia-container-runtime]\nmode = \"auto\"\n"),)),
            Package("nvidia-container-toolkit", version, TOOLKIT,
                    f"NVIDIA Container toolkit. {TD}",
                    depends=(COMMON, f"nvidia-container-toolkit-base (= {version})",
                             f"libnvidia-container-tools (>= {version})",
                             "libnvidia-container-tools (<< 2.0.0)"),
                    files=tool("nvidia-container-runtime-hook")),
        ]
    return pkgs


def cuda_packages() -> list[Package]:
    pkgs = [common(CUDA)]
    for branch, upstream in CUDA_DRIVERS.items():
        version = f"{upstream}-1"
        pkgs += [
            Package("nvidia-kernel-open-dkms", version, CUDA, f"NVIDIA open kernel module "
                    f"DKMS source (stand-in). {TD}", depends=(COMMON,),
                    provides=("nvidia-kernel-module",), conflicts=("nvidia-kernel-module",),
                    replaces=("nvidia-kernel-module",), files=_headless_files(),
                    scripts=(("preinst", "nvidia-headless.preinst"),
                             ("postinst", "nvidia-headless.postinst"),
                             ("postrm", "nvidia-headless.postrm")),
                    subst=(("VERSION", upstream), ("BRANCH", str(branch)))),
            Package("nvidia-smi", version, CUDA, f"NVIDIA System Management Interface "
                    f"(stand-in). {TD}", depends=(COMMON,), provides=("nvidia-utils",),
                    conflicts=("nvidia-utils",), replaces=("nvidia-utils",),
                    files=tool("nvidia-smi")),
            Package("nvidia-open", version, CUDA, f"NVIDIA open driver metapackage. {TD}",
                    depends=(f"nvidia-kernel-open-dkms (= {version})",
                             f"nvidia-smi (= {version})")),
            Package("cuda-drivers", version, CUDA, f"CUDA driver metapackage. {TD}",
                    depends=(f"nvidia-open (= {version})",)),
            Package(f"nvidia-driver-pinning-{branch}", version, CUDA, f"Pins the NVIDIA "
                    f"driver to branch {branch}. {TD}", architecture="all", files=(
                        File(path=f"/etc/apt/preferences.d/nvidia-driver-pinning-{branch}",
                             text=f"# {TD}\nPackage: nvidia-open nvidia-kernel-open-dkms "
                                  f"nvidia-smi cuda-drivers\nPin: version {branch}.*\n"
                                  "Pin-Priority: 1000\n"),)),
        ]
    return pkgs


def all_packages(kernel_release: str, cuda_repo_url: str) -> list[Package]:
    return archive_packages(kernel_release, cuda_repo_url) + toolkit_packages() + cuda_packages()
