"""nvidia_driver: an NVIDIA driver of branch >= 535 for the running kernel.

Checklist, per host:
1. refuse a branch below 535, an unknown source, an unsupported distro, and
   Secure Boot without a signing key, before anything is touched;
2. headers of the running kernel (DKMS builds the module against them);
3. the driver repository (CUDA repo) with its key, where the source needs it;
4. the branch pinned (apt pin + hold, or the dnf module stream) and kept
   away from unattended-upgrades;
5. the driver packages; a change of branch requests a reboot, because the
   loaded module stays the old one until then.
"""

import re

from gpuprov.facts.apt import DebPackages
from gpuprov.facts.dnf import RpmPackages
from gpuprov.facts.nvidia import (
    LoadedModule,
    MokEnrolled,
    driver_branch,
    installed_drivers_deb,
    installed_drivers_rpm,
)
from gpuprov.ops import apt, dnf
from gpuprov.ops.base import RebootAfter
from gpuprov.ops.command import command
from gpuprov.ops.files import file
from gpuprov.ops.kernel import kernel_headers
from gpuprov.ops.package_specs import PackageNameError, check_packages
from gpuprov.ops.repositories import repository_key_options, signed_repository

MIN_BRANCH = 535
NVIDIA_REPOS = "https://developer.download.nvidia.com/compute/cuda/repos"
REPO_KEY = {"debian": "3bf863cc.pub", "rhel": "D42D0685.pub"}
CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"  # where cuda-keyring puts it
UU_CONF = "/etc/apt/apt.conf.d/51gpuprov-nvidia-driver"
PIN = "gpuprov-nvidia-driver"


def wanted_branch(ctx):
    raw = ctx.vars["nvidia_driver_branch"]
    try:
        branch = int(str(raw).strip())
    except ValueError:
        raise ctx.bad_var("nvidia_driver_branch", "not a driver branch number",
                          "use e.g. 580 (the long-term branch)") from None
    if branch < MIN_BRANCH:
        raise ctx.bad_var(
            "nvidia_driver_branch",
            f"branch {branch} is below the minimum {MIN_BRANCH}: the team's image runs the "
            "CUDA 12.x runtime (PyTorch 2.9), which older drivers cannot load, and 535 is the "
            "oldest branch still accepted (end of life June 2026); nothing was changed",
            "use 580, the long-term branch (supported into 2028)")
    return branch


def driver_source(ctx):
    source = str(ctx.vars["nvidia_driver_source"])
    if source == "auto":
        return "ubuntu" if ctx.os.id == "ubuntu" else "cuda"
    if source not in ("ubuntu", "cuda"):
        raise ctx.bad_var("nvidia_driver_source", "must be auto, ubuntu or cuda")
    if source == "ubuntu" and ctx.os.id != "ubuntu":
        raise ctx.bad_var("nvidia_driver_source", f"the Ubuntu archive's driver packages do "
                          f"not exist on {ctx.os.pretty_name or ctx.os.id}", "use cuda or auto")
    return source


def cuda_repo(ctx):
    """(url, key source, key options) of the CUDA repository for this host."""
    repo = ctx.vars["nvidia_driver_repo"] or {}
    if not isinstance(repo, dict):
        raise ctx.bad_var("nvidia_driver_repo", "must be a mapping with url and key")
    url = str(repo.get("url") or "").strip()
    if not url:
        url = f"{NVIDIA_REPOS}/{ctx.os.distro}/{ctx.system.arch.cuda_repo}/"
    url = url if url.endswith("/") else url + "/"
    key = str(repo.get("key") or "").strip() or url + REPO_KEY[ctx.os.family]
    try:
        key_opts = repository_key_options(repo)
    except ValueError as exc:
        raise ctx.bad_var("nvidia_driver_repo", str(exc)) from None
    return url, key, key_opts


def branch_loaded(ctx, branch):
    """Is that branch's module the one the running kernel has loaded? Asked of the
    kernel (LoadedModule), not nvidia-smi: slow, and once an upgrade awaits a
    reboot it only says 'version mismatch', not which module is loaded."""
    loaded = ctx.fact(LoadedModule())
    return loaded is not None and driver_branch(loaded) == branch


def check_secure_boot(ctx, branch):
    """A module still to be built and loaded must be signed under Secure Boot."""
    if (branch_loaded(ctx, branch) or ctx.system.secure_boot != "enabled"
            or ctx.vars["nvidia_driver_secure_boot_signed"]):
        return
    if ctx.fact(MokEnrolled()):
        return
    raise ctx.fail(
        "Secure Boot is enabled: the DKMS-built nvidia module would be refused at boot "
        "(nvidia-smi: 'couldn't communicate with the NVIDIA driver') unless it is signed by "
        "an enrolled Machine Owner Key; nothing was changed",
        "enrol the DKMS key: `sudo apt-get install dkms` (or dnf), then `sudo mokutil --import "
        "/var/lib/dkms/mok.pub` (choose a one-time password), reboot and pick 'Enroll MOK' "
        "on the console; re-run. Or set nvidia_driver_secure_boot_signed: true when modules "
        "are signed another way, or disable Secure Boot in the firmware")


def tasks(ctx):
    ctx.require_supported_os()
    ctx.refuse_jetson()
    branch = wanted_branch(ctx)
    source = driver_source(ctx)
    if ctx.os.family == "rhel":
        yield from rhel(ctx, branch)
    else:
        yield from debian(ctx, branch, source)


def keep_branch(ctx, installed, branch):
    """The branch to pin: a newer installed one stays unless downgrades are allowed."""
    newest = max(installed, default=None)
    if newest is not None and newest > branch and not ctx.vars["nvidia_driver_allow_downgrade"]:
        return newest
    return branch


def with_reboot(ctx, op, branch):
    """A driver change takes effect at the next boot, unless that branch is loaded already."""
    if branch_loaded(ctx, branch):
        return op
    loaded = ctx.fact(LoadedModule())
    return RebootAfter(op, f"the running kernel has "
                           f"{'driver ' + loaded if loaded else 'no nvidia module'}"
                           f" loaded, not branch {branch}")


def debian(ctx, wanted, source):
    timeout = int(ctx.vars["nvidia_driver_apt_lock_timeout"])
    # LoadedModule asked with the packages: every path reads it (branch_loaded), one batch
    packages, _ = ctx.facts(DebPackages(), LoadedModule())
    installed = installed_drivers_deb(packages)
    branch = keep_branch(ctx, installed, wanted)
    check_secure_boot(ctx, branch)
    yield kernel_headers(ctx.os, ctx.system.kernel, timeout)
    if source == "cuda":
        url, key, key_opts = cuda_repo(ctx)
        yield signed_repository(ctx.os, f"cuda-{ctx.os.distro}-{ctx.system.arch.cuda_repo}", url,
                                key=key, variable="nvidia_driver_repo.key", **key_opts,
                                what="the CUDA repository", keyring=CUDA_KEYRING,
                                lock_timeout=timeout)
        # NVIDIA's pinning packages do this from 590 on; one file works for every branch.
        yield apt.apt_pin(PIN, "*nvidia* cuda-drivers*", f"version {branch}.*", 1001)
        name = "nvidia-open" if ctx.vars["nvidia_driver_open"] else "cuda-drivers"
        driver = {name: f"{branch}.*"}
    elif ctx.vars["nvidia_driver_desktop"]:
        driver = {f"nvidia-driver-{branch}": None}
    else:
        driver = {f"nvidia-headless-{branch}-server": None, f"nvidia-utils-{branch}-server": None}
    # Packages named after another branch (Ubuntu archive) go first: they
    # conflict with the new ones, and apt refuses to remove held packages itself.
    old = sorted(n for b, d in installed.items() if b != branch for n in d.packages
                 if re.search(rf"-{b}(-|$)", n))
    if old:
        yield apt.packages(old, state="absent", lock_timeout=timeout)
    yield file(UU_CONF, ctx.render("unattended-upgrades.conf.j2"))
    yield with_reboot(ctx, apt.packages(
        driver, held=True, lock_timeout=timeout,
        depends_on="the driver repository (apt-get update runs first)"), branch)


# An https URL of an .rpm: no spaces, quotes or shell characters (it is quoted
# anyway; this makes a typo or an injection a readable error before any step).
_EPEL_URL = re.compile(r"https://[A-Za-z0-9._~/%+:@-]+\.rpm")


def epel_release(ctx):
    """nvidia_driver_epel_release, checked: a package name or an https URL of an .rpm."""
    value = str(ctx.vars["nvidia_driver_epel_release"] or "").strip()
    if _EPEL_URL.fullmatch(value):
        return value
    try:
        check_packages({value: None}, "rpm", "nvidia_driver_epel_release")
    except PackageNameError:
        raise ctx.bad_var("nvidia_driver_epel_release",
                          "must be a package name (epel-release) or an https:// URL of an .rpm"
                          ) from None
    return value


def rhel(ctx, wanted):
    packages, _ = ctx.facts(RpmPackages(), LoadedModule())  # one batch, as on Debian
    installed = installed_drivers_rpm(packages)
    branch = keep_branch(ctx, installed, wanted)
    check_secure_boot(ctx, branch)
    if ctx.vars["nvidia_driver_rhel_epel"]:
        if ctx.os.id == "rhel":
            crb = ("subscription-manager repos --enable "
                   "codeready-builder-for-rhel-9-$(uname -m)-rpms")
        else:
            crb = "dnf -y config-manager --set-enabled crb"
        yield command(crb, unless="dnf -C repolist --enabled | grep -qiE '^(crb|codeready)'",
                      guard_sudo=True, name="enable CRB (DKMS dependencies)")
        yield command(dnf.dnf("install", packages=[epel_release(ctx)]),
                      creates="/etc/yum.repos.d/epel.repo", name="install EPEL")
    yield kernel_headers(ctx.os, ctx.system.kernel)
    url, key, key_opts = cuda_repo(ctx)
    yield signed_repository(ctx.os, f"cuda-{ctx.os.distro}", url, key=key, **key_opts,
                            variable="nvidia_driver_repo.key", what="the CUDA repository",
                            description="NVIDIA CUDA")
    # On EL9 the module stream is the branch pin: dnf never leaves it.
    flavour = "open" if ctx.vars["nvidia_driver_open"] else "dkms"
    yield dnf.module_enable("nvidia-driver", f"{branch}-{flavour}")
    name = "nvidia-open" if flavour == "open" else "cuda-drivers"
    yield with_reboot(ctx, dnf.packages({name: f"{branch}.*"},
                                        depends_on="the CUDA repository"), branch)
