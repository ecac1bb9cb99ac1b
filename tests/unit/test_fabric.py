"""gpuprov.fabric: the Connections built from the inventory (host, port,
user, key file, ProxyJump gateways from ssh_config, the become password,
gpuprov's strict host key policy on every hop), and a real Fabric run over
the in-process sshd: a known key connects, an unknown or changed one is
refused before any login and nothing is recorded."""

from __future__ import annotations

import textwrap
from pathlib import Path

import fabric
import paramiko
import pytest
from fabric.exceptions import GroupException

from gpuprov.errors import GpuprovError
from gpuprov.fabric import (
    HostKeyRefused,
    InventoryConnection,
    StrictKnownHosts,
    connection,
    disabled_host_key_types,
    group,
)
from gpuprov.model.hosts import Host
from tests.unit.fake_sshd import FakeSshd

pytestmark = pytest.mark.usefixtures("isolated_home")


def write_inventory(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(textwrap.dedent(body))
    return path


def known_line(port: int, key: paramiko.PKey) -> str:
    return f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n"


def test_connection_params_from_the_inventory(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, f"""\
        all:
          vars:
            ansible_user: admin
            ansible_ssh_private_key_file: {tmp_path}/id_lab
            ssh_known_hosts_file: {tmp_path}/known_hosts
          children:
            lab:
              hosts:
                lab-01: {{ansible_host: 10.0.0.11, ansible_port: 2222}}
                lab-02: {{ansible_host: 10.0.0.12}}
            cloud:
              hosts:
                gpu-9: {{ansible_host: 10.9.0.9}}
        """)
    hosts = group(inv, "lab", become_password="s3cret", ssh_config=tmp_path / "none")
    assert isinstance(hosts, fabric.ThreadingGroup)
    assert [(c.inventory_name, c.host, c.port, c.user) for c in hosts] == [
        ("lab-01", "10.0.0.11", 2222, "admin"), ("lab-02", "10.0.0.12", 22, "admin")]
    first = hosts[0]
    assert isinstance(first, InventoryConnection)
    assert first.connect_kwargs["key_filename"] == [f"{tmp_path}/id_lab"]
    assert first.gateway is False
    assert first.config.sudo.password == "s3cret"
    policy = first.client._policy
    assert isinstance(policy, StrictKnownHosts)
    assert (policy.host, policy.name) == ("lab-01", "[10.0.0.11]:2222")
    assert policy.known_hosts.user_file == tmp_path / "known_hosts"
    assert [c.inventory_name for c in group(inv, ssh_config=tmp_path / "none")] == [
        "lab-01", "lab-02", "gpu-9"]


def test_proxyjump_becomes_a_gateway_connection_with_the_same_policy(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host lab-*\n  ProxyJump ops@bastion.example:2200\n")
    host = Host("lab-01", ssh_user="admin", ssh_port=22)
    conn = connection(host, ssh_config=config)
    assert (conn.host, conn.user) == ("lab-01", "admin")
    jump = conn.gateway
    assert isinstance(jump, InventoryConnection)
    assert (jump.host, jump.port, jump.user, jump.gateway) == ("bastion.example", 2200, "ops",
                                                               False)
    assert jump.client._policy.name == "[bastion.example]:2200"
    assert jump.client._policy.host == conn.client._policy.host == "lab-01"
    assert conn.config.sudo.password is None


def test_a_local_host_is_refused() -> None:
    with pytest.raises(GpuprovError, match="Fabric connects over SSH only"):
        connection(Host("here", connection="local"))


def test_host_key_types_asked_are_the_known_ones() -> None:
    assert disabled_host_key_types([]) == []
    left_out = disabled_host_key_types(["ssh-rsa"])
    assert "ssh-ed25519" in left_out and "rsa-sha2-512" not in left_out
    assert "ssh-ed25519" not in disabled_host_key_types(["ssh-ed25519"])


# ---------------------------------------------------------------- over SSH

@pytest.fixture
def inventory(tmp_path: Path, sshd: FakeSshd, key_file: Path, known_hosts: Path) -> Path:
    return write_inventory(tmp_path, f"""\
        all:
          hosts:
            web1:
              ansible_host: 127.0.0.1
              ansible_port: {sshd.port}
              ansible_user: tester
              ansible_ssh_private_key_file: {key_file}
              ssh_known_hosts_file: {known_hosts}
        """)


def test_a_known_host_key_runs_the_command(inventory: Path, sshd: FakeSshd,
                                           host_key: paramiko.PKey, known_hosts: Path) -> None:
    known_hosts.write_text(known_line(sshd.port, host_key))
    # in_stream=False: Fabric would read this process's stdin (pytest's) otherwise
    results = group(inventory).run("echo hello-$((1 + 1))", hide=True, in_stream=False)
    [(conn, result)] = results.items()
    assert conn.inventory_name == "web1" and result.stdout == "hello-2\n"
    assert known_hosts.read_text() == known_line(sshd.port, host_key)


def test_an_unknown_host_key_is_refused_and_not_recorded(inventory: Path, sshd: FakeSshd,
                                                         known_hosts: Path) -> None:
    with pytest.raises(GroupException) as caught:
        group(inventory).run("touch ran", hide=True, in_stream=False)
    [failure] = caught.value.result.values()
    assert isinstance(failure, HostKeyRefused)
    assert "not in" in str(failure) and "strict host key checking" in str(failure)
    assert not known_hosts.exists()
    assert sshd.commands == [] and not (sshd.workdir / "ran").exists()


def test_a_changed_host_key_is_refused(inventory: Path, sshd: FakeSshd,
                                       known_hosts: Path) -> None:
    other = paramiko.ECDSAKey.generate()
    known_hosts.write_text(known_line(sshd.port, other))
    with pytest.raises(Exception) as caught:
        group(inventory)[0].run("true", hide=True, in_stream=False)
    assert isinstance(caught.value, HostKeyRefused)
    assert "CHANGED" in str(caught.value).upper() and sshd.commands == []


def test_through_a_proxyjump_every_hop_is_checked(tmp_path: Path, sshd: FakeSshd,
                                                  host_key: paramiko.PKey, key_file: Path,
                                                  known_hosts: Path) -> None:
    # The jump host is the same fake server under a HostKeyAlias of its own.
    config = tmp_path / "ssh_config"
    config.write_text(textwrap.dedent(f"""\
        Host target
            HostName 127.0.0.1
            Port {sshd.port}
            User tester
            ProxyJump bastion
        Host bastion
            HostName 127.0.0.1
            Port {sshd.port}
            User tester
            IdentityFile {key_file}
            HostKeyAlias bastion-key
        """))
    host = Host("web1", address="target", ssh_private_key_file=str(key_file),
                vars={"ssh_known_hosts_file": str(known_hosts)})
    known_hosts.write_text(known_line(sshd.port, host_key))   # the target only
    with pytest.raises(HostKeyRefused, match="bastion-key"):
        connection(host, ssh_config=config).run("true", hide=True, in_stream=False)
    assert sshd.commands == [] and sshd.forwards == []
    with known_hosts.open("a") as f:
        f.write(f"bastion-key {host_key.get_name()} {host_key.get_base64()}\n")
    result = connection(host, ssh_config=config).run("echo via-jump", hide=True,
                                                     in_stream=False)
    assert result.stdout == "via-jump\n"
    assert sshd.forwards == [("127.0.0.1", sshd.port)]
