"""The sudo password marker over real SSH (issue 14): on a host whose sudo
asks a password, a NOPASSWD rule added between two commands makes sudo stop
asking mid-run. The password (here a command, `touch /tmp/pwned`) is then
the first line on stdin; the marker guard reads it, refuses, and gpuprov
reruns the command without a password: the password never runs as root and
commands keep working."""

from __future__ import annotations

import io
import os

import pytest

from gpuprov.connectors.base import Become
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.errors import UnreachableHost
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

pytestmark = pytest.mark.fleet

HOSTILE_PASSWORD = "touch /tmp/pwned"
DROP_IN = "/etc/sudoers.d/95-test-nopasswd"


@pytest.fixture
def host(fleet: Fleet):
    found = [h for h in fleet.hosts if h.variant == "sudo-password"]
    host = found[0] if found else fleet.add_host(variant="sudo-password", group="cloud")
    host.exec("chpasswd", input=f"admin:{HOSTILE_PASSWORD}\n")
    host.exec(f"rm -f /tmp/pwned {DROP_IN}")
    yield host
    host.exec(f"rm -f /tmp/pwned {DROP_IN}")
    host.exec("chpasswd", input=f"admin:{host.password}\n")


def connector(fleet: Fleet, host: FleetHost) -> SshConnector:
    return SshConnector(SshSettings(
        host.name, address=host.address, port=host.port, user="admin",
        key_file=fleet.client_key, known_hosts=fleet.known_hosts, host_key_checking="strict",
        become=Become(password=HOSTILE_PASSWORD), use_agent=False))


def pwned(host: FleetHost) -> bool:
    return host.exec("test -e /tmp/pwned", check=False).returncode == 0


def test_password_never_runs_when_sudo_stops_asking_mid_run(fleet: Fleet, host: FleetHost) -> None:
    assert fleet.ssh(host, "sudo -n true", check=False).returncode == 1  # sudo asks
    with connector(fleet, host) as conn:
        first = conn.run("sh -s", sudo=True, stdin=b"id -u; cat\n")
        assert (first.exit_code, first.stdout) == (0, "0\n")  # nothing left on stdin
        host.write_file(DROP_IN, "admin ALL=(ALL) NOPASSWD: ALL\n", mode="0440")
        assert fleet.ssh(host, "sudo -n true", check=False).returncode == 0  # sudo stopped
        # The facts batch is fed on stdin to `sh -s`, exactly like this.
        second = conn.run("sh -s", sudo=True, stdin=b"id -u\necho still running\n")
        assert (second.exit_code, second.stdout) == (0, "0\nstill running\n")
        assert not pwned(host)
        assert conn.run("cat", sudo=True, stdin=io.BytesIO(b"a\nb\n")).stdout == "a\nb\n"
        assert conn.run("id -u", sudo=True).stdout == "0\n"
    assert not pwned(host)


def test_stream_read_once_is_refused_not_run(fleet: Fleet, host: FleetHost) -> None:
    with connector(fleet, host) as conn:
        assert conn.run("id -u", sudo=True).stdout == "0\n"  # password mode found
        host.write_file(DROP_IN, "admin ALL=(ALL) NOPASSWD: ALL\n", mode="0440")
        read_fd, write_fd = os.pipe()
        os.write(write_fd, b"touch /tmp/pwned-by-stdin\n")
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe, \
                pytest.raises(UnreachableHost, match="stopped asking for the password"):
            conn.run("sh -s", sudo=True, stdin=pipe)
        assert host.exec("test -e /tmp/pwned-by-stdin", check=False).returncode != 0
        assert conn.run("id -u", sudo=True).stdout == "0\n"  # the next command: no password
    assert not pwned(host)
