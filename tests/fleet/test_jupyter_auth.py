"""Jupyter's authentication as gpuprov configures it (access-hardening spec:
the API answers 403 without credentials and 200 with them; only a loopback
Host header is served), proven against a real jupyter_server >= 2.21.

The server runs with EXACTLY the JSON the jupyter role's server_config_json()
(roles/jupyter/launch.py) renders, in a fleet host's network namespace, and
is reached over the fleet's bridge from the test process, like `ssh -L`
delivers requests to the container: from another address, with
`Host: localhost:8888`. The only
command-line override is root_dir (the config names the container's
/workspace). The token reaches the server as the start script hands it
over: JUPYTER_TOKEN in its environment.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
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

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
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
        env["JUPYTER_TOKEN"] = token
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
