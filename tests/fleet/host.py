"""One fleet host: its own root (overlay), pid/mount/uts/net namespaces, sshd.

A host's disk is its overlay upper dir: it survives stop()/start() and
reboot() like a real machine's disk; /run is a fresh tmpfs at every boot.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fleet import cgroups, network
from tests.fleet.errors import FleetError
from tests.fleet.mounts import unmount_below

START_SCRIPT = Path(__file__).parent / "start-host.sh"
SYSTEMD_START_SCRIPT = Path(__file__).parent / "start-systemd-host.sh"
# Every process of the fleet carries this in its command line, so a later
# run can find and kill what a killed run left behind.
MARKER = f"gpuprov-fleet-start-{network.FLEET_ID}"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # If the test process dies (even by SIGKILL), the kernel kills unshare,
    # and unshare --kill-child takes the host's whole pid namespace with it.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class FleetHost:
    name: str
    index: int
    base: Path
    state_dir: Path
    groups: tuple[str, ...] = ()
    variant: str = "default"        # default | password-login | sudo-password | systemd
    password: str | None = None
    port: int = 22
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return network.host_address(self.index)

    @property
    def upper(self) -> Path:
        return self.state_dir / "upper"

    @property
    def init(self) -> str:
        """The host's PID 1: systemd (systemd-nspawn, see cgroups.py) or the
        fleet's sysvinit stand-in (hostroot/sbin/init)."""
        return "systemd" if self.variant == "systemd" else "sysvinit"

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        """Boot the host and return once its sshd accepts connections."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start booting without waiting (the fleet boots many at once)."""
        if self.running:
            return
        for sub in ("upper", "work", "merged"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "console.log", "ab")  # noqa: SIM115 - owned by Popen
        script = SYSTEMD_START_SCRIPT if self.init == "systemd" else START_SCRIPT
        cgroups.remove(self.cgroup)  # what a killed earlier boot of this host left
        self._proc = subprocess.Popen(
            ["unshare", "--pid", "--mount", "--uts", "--net", "--ipc", "--fork",
             "--kill-child", "--", "/bin/sh", str(script), str(self.base),
             str(self.upper), str(self.state_dir / "work"), str(self.state_dir / "merged"),
             self.name, f"{self.address}/{network.SUBNET.prefixlen}", MARKER, self.cgroup],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads start hosts
        )
        log.close()
        self._wait_for_own_netns()
        network.attach_host(self.index, self._proc.pid)

    def _wait_for_own_netns(self) -> None:
        # Popen returns before unshare(2) ran: moving the veth end "into" the
        # pid's netns too early would put it into this machine's netns.
        assert self._proc is not None
        mine = os.readlink("/proc/self/ns/net")
        for _ in range(400):
            try:
                if os.readlink(f"/proc/{self._proc.pid}/ns/net") != mine:
                    return
            except OSError:
                pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.005)
        raise FleetError(f"{self.name}: the host's network namespace did not appear")

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise FleetError(f"{self.name}: host exited during boot; see "
                                 f"{self.state_dir / 'console.log'}")
            if self._ssh_banner():
                if self.init == "systemd":
                    self._wait_boot_finished(deadline)
                return
            time.sleep(0.05)
        raise FleetError(f"{self.name}: sshd not ready after {timeout:.0f}s\n"
                         + self.diagnostics())

    def _wait_boot_finished(self, deadline: float) -> None:
        # sshd answers before multi-user.target is reached: tests start from
        # a finished boot (running, or degraded: the test says what failed).
        left = max(1.0, deadline - time.monotonic())
        res = self.exec("systemctl is-system-running --wait", check=False, timeout=left)
        if res.stdout.strip() not in ("running", "degraded"):
            raise FleetError(f"{self.name}: systemd boot did not finish "
                             f"({res.stdout.strip()})\n" + self.diagnostics())

    def diagnostics(self) -> str:
        """What to look at when a host misbehaves: console and init log tails."""
        console = self.state_dir / "console.log"
        text = console.read_text(errors="replace")[-1500:] if console.exists() else ""
        parts = [f"console.log: {text.strip() or '(empty)'}"]
        if self.running:
            logs = ("systemctl --failed --no-pager; journalctl -b -n 30 --no-pager"
                    if self.init == "systemd" else "tail -n 20 /var/log/fleet-init.log")
            res = self.exec(f"{logs}; ps -ef; ip -br addr", check=False)
            parts.append(f"inside: {res.stdout.strip()} {res.stderr.strip()}")
        return "\n".join(parts)

    def _ssh_banner(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=0.5) as sock:
                return sock.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def cgroup(self) -> str:
        """The host's cgroup (relative to each hierarchy's root)."""
        return f"{cgroups.FLEET_CGROUP}/{self.name}"

    @property
    def init_pid(self) -> int:
        """The real pid of the host's PID 1: the child of unshare, or under
        systemd the container's systemd (unshare -> sh -> systemd-nspawn -> systemd)."""
        if not self.running:
            raise FleetError(f"{self.name} is not running")
        assert self._proc is not None
        depth = 3 if self.init == "systemd" else 1
        for _ in range(250):
            pid: int | None = self._proc.pid
            for _level in range(depth):
                pid = _first_child(pid) if pid is not None else None
            if pid is not None and (depth == 1 or _comm(pid) == "systemd"):
                return pid
            time.sleep(0.02)
        raise FleetError(f"{self.name}: no init process")

    @property
    def nspawn_pid(self) -> int:
        assert self._proc is not None and self.init == "systemd"
        pid = _first_child(_first_child(self._proc.pid) or 0)
        if pid is None:
            raise FleetError(f"{self.name}: no systemd-nspawn process")
        return pid

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down like `shutdown -h now`: services stopped, then gone."""
        if not self.running:
            self._proc = None
            return
        assert self._proc is not None
        try:
            if self.init == "systemd":
                # nspawn turns SIGTERM into a clean poweroff of the container.
                os.kill(self.nspawn_pid, signal.SIGTERM)
                self._proc.wait(max(timeout, 15.0))
            else:
                os.kill(self.init_pid, signal.SIGTERM)
                self._proc.wait(timeout)
        except (FleetError, ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()
        self._proc = None
        cgroups.remove(self.cgroup)
        network.ip("link", "del", network.veth_name(self.index), check=False)

    def pull_plug(self) -> None:
        """SIGKILL without waiting: the fleet's teardown kills every host first,
        then waits (a systemd host's processes take ~2 s to be gone)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def kill(self) -> None:
        """Pull the plug: the whole pid namespace dies at once."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None
        unmount_below(self.state_dir)
        cgroups.remove(self.cgroup)

    def reboot(self, timeout: float = 20.0) -> None:
        """A simulated reboot: services restarted with a fresh /run."""
        before = self.boot_id()
        if self.init == "systemd":
            # systemd's own reboot (a signal from outside its pid namespace is
            # not acted on); nspawn then exits 133 and start-systemd-host.sh
            # boots the same disk again.
            self.exec("systemctl reboot --no-block")
        else:
            os.kill(self.init_pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self.boot_id() in (before, None):
            if time.monotonic() > deadline:
                raise FleetError(f"{self.name}: no reboot after {timeout:.0f}s")
            time.sleep(0.05)
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def boot_id(self) -> str | None:
        """Changes at every (simulated) boot; None while booting."""
        try:
            res = self.exec("cat /run/gpuprov-fleet/booted 2>/dev/null", check=False)
        except FleetError:  # between two boots of a systemd host: no PID 1 yet
            return None
        return res.stdout.strip() or None

    def rss_kib(self) -> int:
        """Resident memory of every process of this host (its pid namespace)."""
        ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.readlink(proc / "ns/pid") != ns:
                    continue
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    # -- inside the host, without SSH --------------------------------------
    def exec(self, command: str, check: bool = True, input: str | bytes | None = None,
             user: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a shell command inside the host (for tampering and inspection)."""
        argv = ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--net",
                "--pid", "--ipc", "--root", "--wd", "--",
                "setpriv", "--bounding-set", "-sys_module,-sys_time"]
        if user:
            argv += ["su", "-s", "/bin/sh", "-c", command, user]
        else:
            argv += ["/bin/sh", "-c", command]
        data = input.encode() if isinstance(input, str) else input
        res = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
        out = subprocess.CompletedProcess(
            res.args, res.returncode, res.stdout.decode(errors="replace"),
            res.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise FleetError(f"{self.name}: `{command}` exited {out.returncode}: "
                             f"{out.stderr.strip()[-2000:]}")
        return out

    def read_file(self, path: str) -> str | None:
        res = self.exec(f"cat -- '{path}'", check=False)
        return res.stdout if res.returncode == 0 else None

    def write_file(self, path: str, content: str, mode: str = "0644") -> None:
        self.exec(f"mkdir -p \"$(dirname -- '{path}')\" && cat > '{path}' && chmod {mode} '{path}'",
                  input=content)


def _first_child(pid: int) -> int | None:
    try:
        pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(pids[0]) if pids else None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
