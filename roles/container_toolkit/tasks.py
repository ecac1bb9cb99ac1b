"""container_toolkit: NVIDIA Container Toolkit + the nvidia runtime in Docker
(or containerd).

Checklist, per host:
1. Docker Engine installed when asked (Docker's signed repository), or on
   containerd nodes the distribution's containerd when containerd_package says;
2. NVIDIA's signed repository, key stored dearmored, signed-by it;
3. the four toolkit packages at exactly container_toolkit_version, held;
4. docker: `runtimes.nvidia` merged into /etc/docker/daemon.json, every other
   key kept, validated by dockerd before it replaces the file; docker
   restarted only when the file changed (also on containerd nodes when
   gpuprov installs Docker: gpu_image and verify use it).
   containerd: judged on the effective config (`containerd config dump`): the
   CRI plugin enabled, runc's SystemdCgroup on systemd hosts, CDI enabled,
   other settings of config.toml kept; the nvidia runtime registered by
   `nvidia-ctk runtime configure` (default with containerd_nvidia_default);
   containerd restarted only when it changed. The CDI spec /etc/cdi/nvidia.yaml
   generated, and again when it does not name the loaded driver's version.
5. the docker group holds exactly docker_users (its members are root-equivalent).
"""

from gpuprov.command import Command
from gpuprov.facts.docker import ContainerState
from gpuprov.facts.files import FileState
from gpuprov.ops import apt, dnf
from gpuprov.ops.command import command
from gpuprov.ops.containerd import containerd_cri
from gpuprov.ops.files import directory
from gpuprov.ops.jsonfile import json_merge
from gpuprov.ops.package_specs import PackageNameError, check_packages
from gpuprov.ops.repositories import repository_key_options, signed_repository
from gpuprov.ops.services import service
from gpuprov.ops.users import UserError, group_members

TOOLKIT = ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1")
NVIDIA = "https://nvidia.github.io/libnvidia-container"
KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
DOCKER_PACKAGES = ("docker-ce", "docker-ce-cli", "containerd.io")
DISTRO_CONTAINERD = ("containerd", "runc")
DAEMON_JSON = "/etc/docker/daemon.json"
CONTAINERD_TOML = "/etc/containerd/config.toml"
CDI_SPEC = "/etc/cdi/nvidia.yaml"
DRIVER_VERSION = ("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null"
                  " | head -n1")


def runtime(ctx):
    name = str(ctx.vars["container_runtime"])
    if name not in ("docker", "containerd"):
        raise ctx.bad_var("container_runtime", "must be docker or containerd")
    return name


def repo_source(ctx, var, default_url, default_key):
    """(url, key source, key options) of a signed repository; None when the
    variable says none (the hosts' own repositories)."""
    repo = ctx.vars[var] or {}
    if repo in ("none", "None"):
        return None
    if not isinstance(repo, dict):
        raise ctx.bad_var(var, "must be a mapping with url and key (or none)")
    url = str(repo.get("url") or "").strip() or default_url
    key = str(repo.get("key") or "").strip() or default_key
    try:
        key_opts = repository_key_options(repo)
    except ValueError as exc:
        raise ctx.bad_var(var, str(exc)) from None
    return url, key, key_opts


def tasks(ctx):
    ctx.require_supported_os()
    ctx.refuse_jetson()
    rt = runtime(ctx)
    version = str(ctx.vars["container_toolkit_version"]).strip()
    # checked before any change: a wrong list must not leave half a host behind
    group = docker_group(ctx, rt == "docker" or ctx.vars["docker_install"])
    distro_containerd = rt == "containerd" and containerd_package(ctx) == "containerd"
    if ctx.vars["docker_install"]:
        yield from docker_engine(ctx)
    if distro_containerd:
        yield apt.packages(DISTRO_CONTAINERD, depends_on="the distribution's repositories")
    rhel = ctx.os.family == "rhel"
    repo = repo_source(ctx, "container_toolkit_repo",
                       f"{NVIDIA}/stable/{'rpm/$basearch' if rhel else 'deb/$(ARCH)'}",
                       f"{NVIDIA}/gpgkey")
    pinned = {name: version for name in TOOLKIT}
    try:  # the version lands on apt-get/dnf's command line
        check_packages(pinned, "rpm" if rhel else "deb", "container_toolkit_version")
    except PackageNameError as exc:
        raise ctx.bad_var("container_toolkit_version", exc.message.partition(": ")[2],
                          exc.hint) from None
    if repo is not None:
        url, key, key_opts = repo
        yield signed_repository(ctx.os, "nvidia-container-toolkit", url, key=key, **key_opts,
                                variable="container_toolkit_repo.key", keyring=KEYRING,
                                description="NVIDIA Container Toolkit",
                                options={"repo_gpgcheck": "1"})
    if rhel:
        yield dnf.packages(pinned, depends_on="the nvidia-container-toolkit repository")
        yield dnf.versionlock(pinned)
    else:
        # Exact versions, together: the toolkit's packages depend on each other's
        # exact version, and a hold keeps `apt upgrade` from splitting them.
        yield apt.packages(pinned, held=True,
                           depends_on="the nvidia-container-toolkit repository")
    # Docker gets the runtime whenever gpuprov installs it: gpu_image and
    # verify run the image with docker, on containerd cluster nodes too.
    if rt == "docker" or ctx.vars["docker_install"]:
        runtimes = {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
        patch = {"runtimes": runtimes}
        if ctx.vars["container_toolkit_default_runtime"]:
            patch["default-runtime"] = "nvidia"
        yield directory("/etc/docker")   # docker-ce creates it only when the daemon needs it
        yield json_merge(DAEMON_JSON, patch, validate="dockerd --validate --config-file {}",
                         notify="restart docker")
        yield service("docker", state="started", enabled=True)
        yield group
    if rt == "containerd":
        # Judged on `containerd config dump` (the effective config), not the file's text.
        yield containerd_cri(CONTAINERD_TOML, notify="restart containerd", nvidia_default=bool(
            ctx.vars["containerd_nvidia_default"] or ctx.vars["container_toolkit_default_runtime"]))
        yield directory("/etc/cdi")
        # The spec names the driver's files by version (libcuda.so.580.95.05): a spec
        # without the loaded driver's version is stale after a driver change.
        driver = f"$({DRIVER_VERSION})"
        yield command(Command("nvidia-ctk", "cdi", "generate", f"--output={CDI_SPEC}"),
                      name=f"nvidia-ctk cdi generate --output={CDI_SPEC}",
                      only_if=f'[ -n "{driver}" ]',
                      unless=f'v="{driver}" && grep -qF ".so.$v" {CDI_SPEC}',
                      guard_sudo=True, invalidates=(FileState.at(CDI_SPEC),))
        yield service("containerd", state="started", enabled=True)


def containerd_package(ctx):
    """containerd.io (Docker's) or containerd (the distribution's), checked
    against what the host and the other variables allow."""
    name = str(ctx.vars["containerd_package"] or "").strip()
    if name not in ("containerd.io", "containerd"):
        raise ctx.bad_var("containerd_package", "must be containerd.io (Docker's repository) "
                          "or containerd (the distribution's package)")
    if name == "containerd.io":
        return name
    if ctx.os.family == "rhel":
        raise ctx.bad_var("containerd_package", f"{ctx.os.pretty_name or 'RHEL'} has no "
                          "containerd package in its own repositories",
                          "use containerd_package: containerd.io (Docker's repository)")
    if ctx.vars["docker_install"]:
        raise ctx.bad_var("containerd_package", "Docker CE needs Docker's containerd.io, "
                          "which conflicts with the distribution's containerd",
                          "set docker_install: false on these nodes (and skip the gpu_image "
                          "and verify roles: --skip-tags image,verify), or use "
                          "containerd_package: containerd.io")
    if ctx.system.init != "systemd":
        # Nothing would start the daemon at boot or on a config change.
        raise ctx.bad_var("containerd_package", "the distribution's containerd ships only a "
                          f"systemd unit, and this host runs {ctx.system.init}",
                          "use containerd_package: containerd.io, or run these nodes "
                          "with systemd")
    return name


def docker_group(ctx, docker: bool):
    """Members of docker can mount / into a container: exactly the users named."""
    users = ctx.vars["docker_users"] or []
    if not docker:
        if users:
            raise ctx.bad_var("docker_users", "Docker is not installed on this host "
                              "(container_runtime containerd, docker_install false)")
        return None
    if isinstance(users, str) or not isinstance(users, list):
        raise ctx.bad_var("docker_users", "must be a list of user names, e.g. [alice, bob]")
    try:
        return group_members("docker", users, exclusive=True, source="docker_users")
    except UserError as exc:
        raise ctx.bad_var("docker_users", exc.message.partition(": ")[2], exc.hint) from None


def docker_engine(ctx):
    rhel = ctx.os.family == "rhel"
    url = f"https://download.docker.com/linux/{'rhel' if rhel else ctx.os.id}"
    repo = repo_source(ctx, "docker_repo", url, f"{url}/gpg")
    if repo is not None:
        url, key, key_opts = repo
        # Docker names its dnf repo and lays out its tree its own way per family.
        yield signed_repository(
            ctx.os, "docker-ce-stable" if rhel else "docker",
            f"{url}/$releasever/$basearch/stable" if rhel else url, key=key,
            variable="docker_repo.key", what=f"the repository {url}", **key_opts,
            suite=ctx.os.codename, components=["stable"], keyring="/etc/apt/keyrings/docker.gpg",
            # Docker's own instructions pin the host's arch: its pool has several
            arch=None if rhel else ctx.system.arch.docker,
            description="Docker CE Stable")
    if rhel:
        yield dnf.packages(DOCKER_PACKAGES, depends_on="the docker-ce repository")
    else:
        yield apt.packages(DOCKER_PACKAGES, depends_on="the docker repository")


# A daemon restart stops the containers: a later play (Jupyter) must read their
# state afresh, not the one cached from the first batch of the run.
HANDLERS = {
    "restart docker": lambda ctx: [service("docker", state="restarted",
                                           also_invalidates=(ContainerState,))],
    "restart containerd": lambda ctx: [service("containerd", state="restarted",
                                               also_invalidates=(ContainerState,))],
}
