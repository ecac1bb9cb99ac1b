"""The fleet: N hosts, their network, keys, repo, known_hosts and inventory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import yaml

from tests.fleet import base, cgroups, keys, network, realdebs
from tests.fleet.errors import FleetError, FleetUnavailable
from tests.fleet.host import MARKER, FleetHost
from tests.fleet.mounts import unmount_below
from tests.fleet.repo_server import RepoServer

GROUPS = ("lab", "cloud", "cluster")
NAME_PREFIX = {"lab": "lab", "cloud": "cloud", "cluster": "node"}
ADMIN_UID = 1000
REPO_PORT = 8213
DEFAULT_PASSWORD = "fleet-Onboard-2026"  # test-only password of the password variants
PASSWORD_VARIANTS = ("password-login", "sudo-password")


def run_dir() -> Path:
    return Path(os.environ.get("GPUPROV_FLEET_RUN_DIR",
                               f"/var/tmp/gpuprov-test-fleet-{network.FLEET_ID}"))


def check_prerequisites() -> None:
    """Raise FleetUnavailable with the reason when this machine cannot host a fleet."""
    if os.geteuid() != 0:
        raise FleetUnavailable("the test fleet needs root (namespaces, overlay mounts)")
    for tool in ("unshare", "nsenter", "ip", "ssh-keygen", "setpriv", "mknod"):
        if shutil.which(tool) is None:
            raise FleetUnavailable(f"{tool} is not installed")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise FleetUnavailable("the kernel has no overlayfs")
    probe = subprocess.run(["unshare", "--pid", "--mount", "--net", "--uts", "--fork", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise FleetUnavailable(f"cannot create namespaces: {probe.stderr.strip()}")


def fleet_processes(marker: str = MARKER) -> list[int]:
    """Pids of this fleet's host launchers (their command line carries the marker)."""
    needle = marker.encode() + b"\0"
    me, pids = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def cleanup_stale() -> None:
    """Undo what a killed earlier run left: processes, bridge, mounts, dirs."""
    for pid in fleet_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    network.delete_bridge()
    cgroups.remove(cgroups.FLEET_CGROUP)
    directory = run_dir()
    if directory.exists():
        unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)


class Fleet:
    """Bring up with up(), always tear down with down() (also on failure)."""

    def __init__(self, size: int = 8, with_repo: bool = True) -> None:
        self.size = size
        self.with_repo = with_repo
        self.cache = base.cache_root()
        self.dir = run_dir()
        self.hosts: list[FleetHost] = []
        self.base: Path | None = None
        self._systemd_base: Path | None = None
        self.repo_server: RepoServer | None = None
        self.repos = None  # what tests.standin_repo built (see its README)
        self.timings: dict[str, float] = {}

    # -- paths the tests and gpuprov use ------------------------------------
    @property
    def client_key(self) -> Path:
        return self.cache / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def repo_url(self) -> str:
        if self.repo_server is None:
            raise FleetError("this fleet was built without the stand-in repo")
        return self.repo_server.url

    def host(self, name: str) -> FleetHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    # -- lifecycle -----------------------------------------------------------
    def up(self) -> Fleet:
        check_prerequisites()
        cleanup_stale()
        t0 = time.monotonic()
        self.base = base.ensure_base()
        self.timings["base"] = time.monotonic() - t0
        self.dir.mkdir(parents=True)
        keys.ensure_key(self.client_key, comment="gpuprov-test-suite")
        network.create_bridge()
        if self.with_repo:
            t1 = time.monotonic()
            self._serve_repo()
            self.timings["repo"] = time.monotonic() - t1
        t2 = time.monotonic()
        self.add_hosts(self.size)
        self.timings["hosts"] = time.monotonic() - t2
        return self

    def down(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):  # teardown must reach every host
                host.pull_plug()
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.kill()
        if self.repo_server is not None:
            self.repo_server.stop()
            self.repo_server = None
        cleanup_stale()

    def add_hosts(self, count: int, variant: str = "default",
                  groups: Iterable[str] | None = None) -> list[FleetHost]:
        """Create and boot `count` more hosts in parallel; round-robin groups."""
        new = []
        group_cycle = list(groups or GROUPS)
        for i in range(count):
            host = self._new_host(group_cycle[i % len(group_cycle)], variant)
            self.hosts.append(host)
            new.append(host)
        # Launch from this thread only: the hosts die with the thread that
        # started them (PR_SET_PDEATHSIG), which must be the test process.
        for host in new:
            self._prepare(host)
            host.launch()
        for host in new:
            host.wait_ready()
            self._first_boot(host)
        self._write_client_files()
        return new

    def add_host(self, variant: str = "default", group: str = "lab") -> FleetHost:
        return self.add_hosts(1, variant, [group])[0]

    def reset(self, host: FleetHost) -> None:
        """Give the host a brand-new disk (as freshly installed) and boot it."""
        host.stop()
        unmount_below(host.state_dir)
        for sub in ("upper", "work"):
            shutil.rmtree(host.state_dir / sub, ignore_errors=True)
        self._prepare(host)
        host.start()
        self._first_boot(host)

    @contextlib.contextmanager
    def fresh(self, hosts: Sequence[FleetHost]) -> Iterator[list[FleetHost]]:
        """`hosts` with brand-new disks for a test module, and again after it:
        later tests never inherit its packages, services, timers or keys."""
        for host in hosts:
            self.reset(host)
        try:
            yield list(hosts)
        finally:
            for host in hosts:
                self.reset(host)

    # -- internals -------------------------------------------------------------
    def _new_host(self, group: str, variant: str) -> FleetHost:
        if variant not in ("default", "password-login", "sudo-password", "systemd"):
            raise FleetError(f"unknown host variant {variant!r}")
        index = self._next_index()
        number = sum(1 for h in self.hosts if group in h.groups) + 1
        name = f"{NAME_PREFIX[group]}-{number:02d}"
        if variant != "default":
            name = f"{name}-{variant.split('-')[0]}"
        root = self.systemd_base() if variant == "systemd" else self.base
        assert root is not None
        return FleetHost(name=name, index=index, base=root,
                         state_dir=self.dir / "hosts" / name, groups=(group,), variant=variant,
                         password=DEFAULT_PASSWORD if variant in PASSWORD_VARIANTS else None)

    def systemd_base(self) -> Path:
        """The systemd variant's base root, built (once, cached) on first use."""
        if self._systemd_base is None:
            t0 = time.monotonic()
            self._systemd_base = base.ensure_base(variant="systemd")
            self.timings["systemd base"] = time.monotonic() - t0
        return self._systemd_base

    def _next_index(self) -> int:
        return max((h.index for h in self.hosts), default=-1) + 1

    def _prepare(self, host: FleetHost) -> None:
        """Per-host files, written into the upper dir before the first boot."""
        assert self.base is not None
        upper = host.state_dir / "upper"
        upper.mkdir(parents=True, exist_ok=True)
        etc = upper / "etc"
        for directory in ("etc/ssh", "etc/sudoers.d", "etc/apt/sources.list.d", "root",
                          "home/admin"):
            _mkdirs_like(self.base, upper, directory)
        (etc / "hostname").write_text(host.name + "\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{host.address}\t{host.name}\n")
        for key in keys.host_keys(self.cache, host.name).values():
            for src in (key, key.with_name(key.name + ".pub")):
                dst = etc / "ssh" / src.name
                shutil.copyfile(src, dst)
                dst.chmod(0o600 if src == key else 0o644)
        client_pub = keys.public_key(self.client_key) + "\n"
        if host.variant != "password-login":
            _write(upper / "root/.ssh/authorized_keys", client_pub, 0o600, 0, 0o700)
            _write(upper / "home/admin/.ssh/authorized_keys", client_pub, 0o600, ADMIN_UID, 0o700)
        if host.variant in PASSWORD_VARIANTS:
            _write(etc / "sudoers.d/90-fleet-admin", "admin ALL=(ALL) ALL\n", 0o440, 0)
        if host.init == "systemd" and not (etc / "machine-id").exists():
            # Its own identity, kept on its disk (journald, D-Bus read it).
            _write(etc / "machine-id", uuid.uuid4().hex + "\n", 0o444, 0)
        if self.repo_server is not None:
            _write(etc / "apt/sources.list.d/gpuprov-test-archive.list",
                   f"# TEST FLEET: the stand-in distro archive\n"
                   f"deb [trusted=yes] {self.repo_url}/archive ./\n", 0o644, 0)

    def _first_boot(self, host: FleetHost) -> None:
        if host.password:
            host.exec("chpasswd", input=f"admin:{host.password}\n")

    def _serve_repo(self) -> None:
        from tests.standin_repo.build import ensure_repos  # the repo is test-only code

        assert self.base is not None
        # Debian's own python3, cron, containerd, ... beside the stand-ins.
        real_debs = realdebs.ensure_real_debs(self.cache, self.base)
        # A fixed port keeps the URL (baked into cuda-keyring) and so the
        # cached build stable across runs.
        url = f"http://{network.GATEWAY}:{REPO_PORT}"
        cache = self.cache / "repos"
        self.repos = ensure_repos(cache, os.uname().release, cuda_repo_url=f"{url}/cuda",
                                  real_debs=real_debs)
        for old in cache.iterdir():
            if old.is_dir() and old.resolve() != Path(self.repos.out_dir).resolve():
                shutil.rmtree(old, ignore_errors=True)
        self.repo_server = RepoServer(Path(self.repos.out_dir), str(network.GATEWAY), REPO_PORT)
        self.repo_server.start()

    def _write_client_files(self) -> None:
        lines = []
        for host in self.hosts:
            for key in keys.host_keys(self.cache, host.name).values():
                lines.append(f"{host.address} {keys.public_key(key).rsplit(' ', 1)[0]}")
        _atomic_write(self.known_hosts, "\n".join(lines) + "\n")
        config = [f"# TEST FLEET ssh config: ssh -F {self.ssh_config} <host>\n"]
        for host in self.hosts:
            config.append(
                f"Host {host.name}\n  HostName {host.address}\n  User admin\n"
                f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
                "  BatchMode yes\n  ConnectTimeout 5\n")
        _atomic_write(self.ssh_config, "\n".join(config))
        _atomic_write(self.inventory_path, yaml.safe_dump(self.inventory(), sort_keys=False))

    def inventory(self, hosts: Iterable[FleetHost] | None = None) -> dict:
        """gpuprov's (Ansible-compatible) inventory for these hosts."""
        chosen = list(hosts or [h for h in self.hosts if h.variant == "default"])
        children = {}
        for group in GROUPS:
            members = {h.name: {"ansible_host": h.address} for h in chosen if group in h.groups}
            if members:
                children[group] = {"hosts": members}
        return {"all": {
            "vars": {
                "ansible_user": "admin",
                "ansible_ssh_private_key_file": str(self.client_key),
                "ssh_known_hosts_file": str(self.known_hosts),
            },
            "children": children,
        }}

    def ssh(self, host: FleetHost, command: str, user: str = "admin",
            check: bool = True, extra: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run a command over real SSH with OpenSSH's client (host keys checked)."""
        argv = ["ssh", "-F", str(self.ssh_config), "-l", user, *extra, host.name, command]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise FleetError(f"ssh {user}@{host.name} `{command}` exited {res.returncode}: "
                             f"{res.stderr.strip()}")
        return res


def _mkdirs_like(base_root: Path, upper: Path, relative: str) -> None:
    """Create upper-dir directories with the base's owner and mode: overlayfs
    shows the upper dir's attributes, so a root-owned /home/admin made here
    would break the admin user's home."""
    path = Path()
    for part in Path(relative).parts:
        path /= part
        dst, src = upper / path, base_root / path
        if dst.exists():
            continue
        dst.mkdir()
        if src.is_dir():
            st = src.stat()
            os.chown(dst, st.st_uid, st.st_gid)
            dst.chmod(st.st_mode & 0o7777)


def _write(path: Path, content: str, mode: int, uid: int, dir_mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if dir_mode is not None:
        path.parent.chmod(dir_mode)
        os.chown(path.parent, uid, uid)
    path.write_text(content)
    path.chmod(mode)
    os.chown(path, uid, uid)


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    tmp.replace(path)
