"""Jupyter's authentication as gpuprov configures it (access-hardening spec:
the API answers 403 without credentials and 200 with them; only a loopback
Host header is served), proven against a real jupyter_server >= 2.21.

The server runs with EXACTLY the JSON the jupyter role's server_config_json()
(roles/jupyter/launch.py) renders, in a fleet host's network namespace, and
is reached over the fleet's bridge from the test process, like `ssh -L`
delivers requests to the container: from another address, with
`Host: localhost:8888`. The only
command-line override is root_dir (the config names the container's
/workspace). The token reaches the server as the role's `docker run` hands
it over: a file in the role's format (64 hex digits, no newline) named by
JUPYTER_TOKEN_FILE, with JUPYTER_TOKEN set empty; never its value in the
environment.

Then the role itself, applied with gpuprov over SSH to a host with the
stand-in docker and GPU stack: the token is absent from `docker inspect` of
the container double and from its environment, the container drops every
capability and joins the gpuprov-jupyter group, and a member of that group
reads the token with `cat`.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov
from tests.unit.role_harness import role_module

# the role's own module, through the loader its tasks.py is imported with
launch = role_module("jupyter", "launch")
PORT, server_config_json = launch.PORT, launch.server_config_json

PASSWORD = "correct horse battery staple"
LOCAL = {"Host": f"localhost:{PORT}"}     # what the browser sends through the tunnel


@dataclass
class Server:
    host: FleetHost
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://{self.host.address}:{PORT}"

    def status(self, path: str, headers: dict[str, str],
               opener: urllib.request.OpenerDirector | None = None,
               data: bytes | None = None) -> int:
        req = urllib.request.Request(self.base + path, headers=headers, data=data)
        try:
            with (opener or urllib.request.build_opener(_NoRedirect)).open(req, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None   # a 302 is an answer here, not something to follow


def jupyter_server_version() -> tuple[int, ...]:
    import jupyter_server

    return tuple(int(p) for p in jupyter_server.__version__.split(".")[:2])


def fleet_host(fleet: Fleet, index: int) -> FleetHost:
    assert jupyter_server_version() >= (2, 21), "the spec asks for jupyter_server >= 2.21"
    host = fleet.hosts[index]
    if not host.running:
        host.start()
    return host


# Two hosts: both servers listen on the rendered port 8888 at the same time
# (module-scoped fixtures), each in its own network namespace.
@pytest.fixture(scope="module")
def host(fleet: Fleet) -> FleetHost:
    return fleet_host(fleet, 0)


@pytest.fixture(scope="module")
def other_host(fleet: Fleet) -> FleetHost:
    return fleet_host(fleet, 1)


def start_server(host: FleetHost, vars: dict, work: Path, token: str | None) -> Server:
    """jupyter_server in the host's network namespace, on port 8888 of its address."""
    config = work / "jupyter_server_config.json"
    config.write_text(server_config_json(vars))          # exactly what the role writes
    root = work / "root"
    root.mkdir()
    (root / "hello.txt").write_text("hello\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_DATA_DIR": str(work / "data"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
    if token is not None:
        # as the role's docker run: the file (mounted read-only there), its path
        # in JUPYTER_TOKEN_FILE, JUPYTER_TOKEN empty; the value in no environment
        token_file = work / "token"
        token_file.write_text(token)            # the role's format: no newline
        token_file.chmod(0o640)
        env.update(JUPYTER_TOKEN="", JUPYTER_TOKEN_FILE=str(token_file))
    log = work / "server.log"
    with contextlib.suppress(OSError), socket.create_connection((host.address, PORT), timeout=2):
        pytest.fail(f"something already listens on {host.address}:{PORT}: the answers "
                    "would not be this server's")
    argv = [
        "nsenter", f"--target={host.init_pid}", "--net", "--",
        # allow_root is false, so the server needs a uid other than 0; a user
        # namespace gives it uid 1000 while files are still opened as this
        # test's user (the venv may live where another uid cannot read).
        "unshare", "--map-user=1000", "--map-group=100", "--",
        sys.executable, "-m", "jupyter_server", f"--config={config}",
        f"--ServerApp.root_dir={root}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(host, proc, log)
    try:
        wait_until_serving(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def wait_until_serving(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"jupyter_server exited {server.proc.returncode}:\n{server.output()}")
        try:
            urllib.request.urlopen(urllib.request.Request(server.base + "/api", headers=LOCAL),
                                   timeout=2)
            return
        except urllib.error.HTTPError:
            return   # an HTTP answer of any kind: it is serving
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"jupyter_server not serving after {timeout:.0f}s:\n{server.output()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_hex(32)       # as the role makes it: 32 random bytes, 64 hex chars


@pytest.fixture(scope="module")
def token_server(host: FleetHost, token: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(host, {}, tmp_path_factory.mktemp("jupyter-token"), token)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def password_server(other_host: FleetHost, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Server]:
    from jupyter_server.auth import passwd

    vars = {"jupyter_password_hash": passwd(PASSWORD)}
    server = start_server(other_host, vars, tmp_path_factory.mktemp("jupyter-password"), None)
    try:
        yield server
    finally:
        stop_server(server)


# ---------------------------------------------------------------- token

def test_token_mode_refuses_requests_without_the_token(token_server: Server) -> None:
    assert token_server.status("/api/status", LOCAL) == 403
    assert token_server.status("/api/contents", LOCAL) == 403
    assert token_server.status("/api/status", {**LOCAL, "Authorization": "token nope"}) == 403
    assert token_server.status("/api/status", {**LOCAL, "Authorization": "token "}) == 403


def test_token_mode_serves_the_right_token(token_server: Server, token: str) -> None:
    auth = {**LOCAL, "Authorization": f"token {token}"}
    assert token_server.status("/api/status", auth) == 200
    assert token_server.status("/api/contents", auth) == 200


def test_a_non_local_host_header_is_refused_even_with_the_token(token_server: Server,
                                                                token: str) -> None:
    # allow_remote_access false: DNS rebinding, or the port reached around the tunnel
    headers = {"Host": f"{token_server.host.address}:{PORT}", "Authorization": f"token {token}"}
    assert token_server.status("/api/status", headers) == 403
    assert "Blocking request with non-local 'Host'" in token_server.output()


def test_the_token_is_not_in_the_servers_log(token_server: Server, token: str) -> None:
    # jupyter_server shows a token it was given as "..."; a generated one would be printed
    assert token not in token_server.output()


def test_the_token_is_not_in_the_servers_environment(token_server: Server, token: str) -> None:
    environ = Path(f"/proc/{token_server.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"JUPYTER_TOKEN=" in environ and token.encode() not in b"".join(environ)


# ---------------------------------------------------------------- password

def login(server: Server, password: str) -> tuple[int, urllib.request.OpenerDirector]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    assert server.status("/login", LOCAL, opener) == 200
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    body = urllib.parse.urlencode({"password": password, "_xsrf": xsrf}).encode()
    return server.status("/login", LOCAL, opener, data=body), opener


def test_password_mode_refuses_requests_without_logging_in(password_server: Server) -> None:
    assert password_server.status("/api/status", LOCAL) == 403
    assert password_server.status("/api/contents", LOCAL) == 403


def test_password_mode_has_no_token_at_all(password_server: Server) -> None:
    for value in ("token ", "token nope"):
        assert password_server.status("/api/status", {**LOCAL, "Authorization": value}) == 403


def test_password_mode_wrong_password_gets_nothing(password_server: Server) -> None:
    code, opener = login(password_server, "not the password")
    assert code == 401
    assert password_server.status("/api/status", LOCAL, opener) == 403


def test_password_mode_serves_after_logging_in(password_server: Server) -> None:
    code, opener = login(password_server, PASSWORD)
    assert code == 302, ("not redirected to the app after logging in:\n"
                         + password_server.output()[-3000:])
    assert password_server.status("/api/status", LOCAL, opener) == 200
    assert password_server.status("/api/contents", LOCAL, opener) == 200
    # the session cookie does not make another Host acceptable
    other = {"Host": f"{password_server.host.address}:{PORT}"}
    assert password_server.status("/api/status", other, opener) == 403


# ---------------------------------------------------------------- the role, applied

IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"      # in the doubles' registry
KERNEL = os.uname().release
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0"
TOKEN_FILE = "/etc/gpuprov/jupyter/token"
CONFIG = "/etc/gpuprov/jupyter/jupyter_server_config.json"
PLAYBOOK = """\
- hosts: all
  roles:
    - role: sshd_hardening
      tags: [never]
    - jupyter
"""


def stand_in_gpu_host(fleet: Fleet) -> FleetHost:
    """A new host with the stand-in driver, toolkit and docker (by apt, as in
    test_standin_packages), the docker runtime configured and IMAGE pulled."""
    host = fleet.add_host(group="lab")
    key = fleet.repos.binary_keys["libnvidia-container"].read_bytes()
    host.exec("cat > /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg", input=key)
    host.write_file("/etc/apt/sources.list.d/nvidia-container-toolkit.list",
                    "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
                    f"{fleet.repo_url}/libnvidia-container/stable/deb/$(ARCH) /\n")
    # the headers first: the driver's postinst builds against them, like dkms
    fleet.ssh(host, f"sudo {APT} update && sudo {APT} install linux-headers-{KERNEL}")
    fleet.ssh(host, f"sudo {APT} install nvidia-headless-580-server nvidia-utils-580-server "
              "docker-ce nvidia-container-toolkit && sudo nvidia-ctk runtime configure "
              f"--runtime=docker && sudo service docker restart && sudo docker pull -q {IMAGE}")
    return host


@pytest.fixture(scope="module")
def applied(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetHost, Path]:
    """A stand-in GPU host, then `gpuprov apply` of the jupyter role alone."""
    host = stand_in_gpu_host(fleet)
    work = tmp_path_factory.mktemp("jupyter-role")
    inventory = fleet.inventory([host])
    inventory["all"]["vars"].update({"gpu_image": IMAGE, "jupyter_token_readers": ["admin"]})
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (work / "jupyter.yml").write_text(PLAYBOOK)
    result = gpuprov("apply", "inventory.yml", "-p", "jupyter.yml", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return host, work


def test_the_token_is_in_no_docker_inspect_and_no_container_environment(
        fleet: Fleet, applied: tuple[FleetHost, Path]) -> None:
    host, _ = applied
    token = host.exec(f"cat {TOKEN_FILE}").stdout
    assert len(token) == 64 and int(token, 16) >= 0, "64 hex digits, no newline"
    inspect = fleet.ssh(host, "sudo docker inspect gpuprov-jupyter").stdout
    assert token not in inspect
    [info] = json.loads(inspect)
    env = info["Config"]["Env"]
    assert not [e for e in env if token in e]
    assert [e for e in env if e.startswith("JUPYTER_TOKEN")] == [
        "JUPYTER_TOKEN=", "JUPYTER_TOKEN_FILE=/etc/gpuprov/jupyter_token"]
    assert f"{TOKEN_FILE}:/etc/gpuprov/jupyter_token:ro" in info["HostConfig"]["Binds"]
    assert (info["HostConfig"]["CapDrop"], info["HostConfig"]["CapAdd"]) == (["ALL"], None)
    gid = host.exec("getent group gpuprov-jupyter | cut -d: -f3").stdout.strip()
    assert info["HostConfig"]["GroupAdd"] == [gid]
    calls = host.read_file("/var/lib/gpuprov-test-double/docker/calls.log") or ""
    assert token not in calls and token not in host.exec("ps -eo args").stdout


def test_token_and_config_belong_to_the_group_whose_members_read_them(
        fleet: Fleet, applied: tuple[FleetHost, Path]) -> None:
    host, work = applied
    for path in (TOKEN_FILE, CONFIG):
        assert host.exec(f"stat -c '%a %U %G' {path}").stdout.split() == \
            ["640", "root", "gpuprov-jupyter"], path
    assert host.exec("getent group gpuprov-jupyter").stdout.strip().endswith(":admin")
    # admin is in jupyter_token_readers: cat, no sudo; jupyter-url says so
    token = fleet.ssh(host, f"cat {TOKEN_FILE}").stdout
    assert token == host.exec(f"cat {TOKEN_FILE}").stdout
    url = gpuprov("jupyter-url", host.name, "inventory.yml", cwd=work)
    assert url.returncode == 0, url.stderr
    assert f"   cat {TOKEN_FILE}\n" in url.stdout and token not in url.stdout
    # `users` (the container user's gid 100) is not enough any more
    denied = host.exec(f"setpriv --reuid=1000 --regid=100 --clear-groups cat {TOKEN_FILE}",
                       check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
