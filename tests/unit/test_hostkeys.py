"""Host key policy: strict by default, accept-new on request, @revoked and
@cert-authority honoured, and no secret sent before the key is verified.

KnownHosts is tested directly with generated keys; the connector tests run
against the in-process fake sshd of test_ssh_connector.py (127.0.0.1 only).
Certificates are made with ssh-keygen, as an admin would make them.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest
from paramiko.message import Message

from gpuprov.cli.exit_codes import EXIT_ERROR
from gpuprov.connectors.base import Become
from gpuprov.connectors.hostcerts import CERT_SUFFIX, certificate_of
from gpuprov.connectors.hostkeys import ACCEPT_NEW, STRICT, KnownHosts, fingerprint
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.connectors.ssh_config import host_key_policy
from gpuprov.engine.connect import ConnectOptions, connector_for
from gpuprov.engine.onboard import OnboardError, OnboardOptions, first_contact
from gpuprov.errors import GpuprovError, InventoryError, UnreachableHost
from gpuprov.model.inventory import Host, Inventory
from tests.unit.fake_sshd import FakeSshd
from tests.unit.test_ssh_connector import make

NAME = "[10.0.0.5]:2222"


pytestmark = pytest.mark.usefixtures("isolated_home")


def known(tmp_path: Path, text: str = "") -> tuple[KnownHosts, list[str]]:
    path = tmp_path / "known_hosts"
    if text:
        path.write_text(text)
    said: list[str] = []
    return KnownHosts(path, announce=said.append), said


def line(name: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{name} {key.get_name()} {key.get_base64()}\n"


# -- unknown keys: strict, prompt, accept-new ---------------------------------

def test_unknown_key_is_refused_with_type_fingerprint_and_ways_forward(tmp_path) -> None:
    hosts, said = known(tmp_path)
    key = paramiko.ECDSAKey.generate()
    with pytest.raises(UnreachableHost) as info:
        hosts.check("gpu1", NAME, key)   # the default policy
    err = info.value
    assert err.kind == "host-key-unknown" and err.host == "gpu1"
    assert f"ecdsa-sha2-nistp256 {fingerprint(key)}" in err.detail
    assert "gpuprov onboard gpu1" in (err.hint or "")
    assert "--accept-new-host-keys" in (err.hint or "")
    assert not hosts.user_file.exists() and said == []


def test_accept_new_records_and_announces_the_key(tmp_path) -> None:
    hosts, said = known(tmp_path)
    key = paramiko.ECDSAKey.generate()
    assert hosts.check("gpu1", NAME, key, ACCEPT_NEW) is True
    assert hosts.user_file.read_text() == line(NAME, key)
    assert said == [f"gpu1: recorded host key {NAME} ecdsa-sha2-nistp256 {fingerprint(key)} "
                    f"in {hosts.user_file}"]
    assert hosts.check("gpu1", NAME, key, STRICT) is False   # known now: nothing more said
    assert len(said) == 1


def test_the_default_announcement_goes_to_stderr(tmp_path, capsys) -> None:
    hosts = KnownHosts(tmp_path / "known_hosts")
    key = paramiko.ECDSAKey.generate()
    hosts.record("gpu1", NAME, key)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fingerprint(key) in err and str(hosts.user_file) in err


def test_accept_new_never_takes_a_changed_key(tmp_path) -> None:
    old, new = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    hosts, said = known(tmp_path, line(NAME, old))
    with pytest.raises(UnreachableHost) as info:
        hosts.check("gpu1", NAME, new, ACCEPT_NEW)
    assert info.value.kind == "host-key-changed" and said == []


@pytest.mark.parametrize("answer", [True, False])
def test_at_a_terminal_a_person_is_asked(tmp_path, answer: bool) -> None:
    hosts, said = known(tmp_path)
    key = paramiko.ECDSAKey.generate()
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        return answer

    if answer:
        assert hosts.check("gpu1", NAME, key, STRICT, confirm) is True
        assert len(said) == 1
    else:
        with pytest.raises(UnreachableHost):
            hosts.check("gpu1", NAME, key, STRICT, confirm)
        assert said == [] and not hosts.user_file.exists()
    assert len(questions) == 1
    assert "can't be established" in questions[0] and fingerprint(key) in questions[0]
    assert questions[0].endswith("(yes/no)?")


def test_accept_new_asks_nobody(tmp_path) -> None:
    hosts, _ = known(tmp_path)
    hosts.check("gpu1", NAME, paramiko.ECDSAKey.generate(), ACCEPT_NEW,
                confirm=lambda q: pytest.fail("asked"))


# -- @revoked -------------------------------------------------------------------

@pytest.mark.parametrize("policy", [STRICT, ACCEPT_NEW])
def test_a_revoked_key_is_refused_even_if_also_listed(tmp_path, policy: str) -> None:
    key = paramiko.ECDSAKey.generate()
    hosts, said = known(tmp_path, line(NAME, key) + line("*", key, "@revoked"))
    with pytest.raises(UnreachableHost) as info:
        hosts.check("gpu1", NAME, key, policy, confirm=lambda q: True)
    assert "@revoked" in info.value.detail and f"{hosts.user_file}:2" in info.value.detail
    assert said == []


# -- host certificates ------------------------------------------------------------

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None,
                                  reason="ssh-keygen (openssh-client) is not installed")


def keygen(directory: Path, name: str) -> Path:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                   check=True)
    return path


def sign(ca: Path, host_key: Path, *options: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "gpu1-hostcert", *options,
                    f"{host_key}.pub"], check=True)
    return Path(f"{host_key}-cert.pub")


def cert_key(cert: Path) -> paramiko.PKey:
    """The host key as paramiko's client gets it from a certificate key exchange."""
    return paramiko.Ed25519Key(msg=Message(base64.b64decode(cert.read_text().split()[1])))


def pub(path: Path) -> str:
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    keys = tmp_path / "keys"
    keys.mkdir()
    return {"ca": keygen(keys, "ca"), "other_ca": keygen(keys, "other_ca"),
            "host": keygen(keys, "host")}


@needs_keygen
def test_a_certificate_signed_by_a_trusted_ca_is_accepted_and_nothing_recorded(
        tmp_path, pki) -> None:
    key = cert_key(sign(pki["ca"], pki["host"], "-n", "10.0.0.5,gpu1"))
    text = f"@cert-authority [10.0.0.*]:2222 {pub(pki['ca'])}\n"
    hosts, said = known(tmp_path, text)
    assert hosts.check("gpu1", NAME, key, STRICT) is False
    assert hosts.user_file.read_text() == text and said == []
    assert certificate_of(key) is not None


@needs_keygen
@pytest.mark.parametrize("case", ["other CA", "wrong principal", "expired", "CA revoked"])
def test_a_certificate_that_does_not_hold_is_refused(tmp_path, pki, case: str) -> None:
    ca = pki["other_ca"] if case == "other CA" else pki["ca"]
    principals = "10.9.9.9" if case == "wrong principal" else "10.0.0.5"
    validity = ["-V", "-2d:-1d"] if case == "expired" else []
    key = cert_key(sign(ca, pki["host"], "-n", principals, *validity))
    text = f"@cert-authority [10.0.0.*]:2222 {pub(pki['ca'])}\n"
    if case == "CA revoked":
        text += f"@revoked * {pub(pki['ca'])}\n"
    hosts, said = known(tmp_path, text)
    for policy in (STRICT, ACCEPT_NEW):
        with pytest.raises(UnreachableHost) as info:
            hosts.check("gpu1", NAME, key, policy, confirm=lambda q: True)
        expected = {"other CA": "does not trust", "wrong principal": "not 10.0.0.5",
                    "expired": "not valid now", "CA revoked": "@revoked"}[case]
        assert expected in info.value.detail
    assert hosts.user_file.read_text() == text and said == []


@needs_keygen
def test_a_sha1_ca_signature_is_refused_like_openssh_does(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    ca = keys / "rsa_ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(ca)],
                   check=True)
    host = keygen(keys, "host")
    hosts, _ = known(tmp_path, f"@cert-authority * {pub(ca)}\n")
    sha2 = cert_key(sign(ca, host, "-t", "rsa-sha2-512"))
    assert hosts.check("gpu1", NAME, sha2) is False
    sha1 = cert_key(sign(ca, host, "-t", "ssh-rsa"))
    with pytest.raises(UnreachableHost, match="SHA-1"):
        hosts.check("gpu1", NAME, sha1)


@needs_keygen
def test_a_plain_key_is_not_recorded_beside_a_trusted_ca(tmp_path, pki) -> None:
    plain = paramiko.Ed25519Key(msg=Message(base64.b64decode(pub(pki["host"]).split()[1])))
    text = f"@cert-authority [10.0.0.*]:2222 {pub(pki['ca'])}\n"
    hosts, said = known(tmp_path, text)
    with pytest.raises(UnreachableHost) as info:
        hosts.check("gpu1", NAME, plain, ACCEPT_NEW, confirm=lambda q: True)
    assert "without a certificate" in info.value.detail and f"{hosts.user_file}:1" in \
        info.value.detail
    assert hosts.user_file.read_text() == text and said == []


@needs_keygen
def test_certificate_types_are_asked_for_first_when_a_ca_is_trusted(tmp_path, pki) -> None:
    hosts, _ = known(tmp_path, f"@cert-authority * {pub(pki['ca'])}\n")
    types = hosts.key_types(NAME)
    assert types[0] == "ssh-ed25519" + CERT_SUFFIX
    assert known(tmp_path / "..", "")[0].key_types("other") == []


class _CertHostKey(paramiko.Ed25519Key):
    """A server host key presented as its certificate (paramiko's server
    side only knows plain keys)."""

    def get_name(self) -> str:
        blob = getattr(self, "public_blob", None)
        return blob.key_type if blob else super().get_name()

    def asbytes(self) -> bytes:
        blob = getattr(self, "public_blob", None)
        return blob.key_blob if blob else super().asbytes()


@needs_keygen
def test_connector_verifies_a_host_certificate_end_to_end(tmp_path, pki) -> None:
    cert = sign(pki["ca"], pki["host"], "-n", "127.0.0.1")
    host_key = _CertHostKey(filename=str(pki["host"]))
    host_key.load_certificate(str(cert))
    client = paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_client"
    client.write_private_key_file(str(key_file))
    workdir = tmp_path / "remote"
    workdir.mkdir()
    sshd = FakeSshd(workdir, host_key, [client])
    try:
        known_hosts = tmp_path / "known_hosts"
        text = f"@cert-authority [127.0.0.1]:* {pub(pki['ca'])}\n"
        known_hosts.write_text(text)
        with make(sshd, key_file, known_hosts, host_key_checking=None) as conn:
            assert conn.run("echo certified").stdout == "certified\n"
        assert known_hosts.read_text() == text   # no plain key recorded

        known_hosts.write_text(f"@cert-authority [127.0.0.1]:* {pub(pki['other_ca'])}\n")
        with pytest.raises(UnreachableHost) as info:
            make(sshd, key_file, known_hosts, host_key_checking="accept-new").connect()
        assert info.value.kind == "host-key-cert"
    finally:
        sshd.stop()


# -- nothing secret before the key is verified ----------------------------------------

def test_no_key_password_or_sudo_password_reaches_an_unverified_host(tmp_path) -> None:
    host_key, client = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_client"
    client.write_private_key_file(str(key_file))
    workdir = tmp_path / "remote"
    workdir.mkdir()
    sshd = FakeSshd(workdir, host_key, [client])
    sshd.password = "login-pass"
    try:
        conn = make(sshd, key_file, tmp_path / "known_hosts", host_key_checking=None,
                    password="login-pass", become=Become(password="sudo-pass"))
        with pytest.raises(UnreachableHost) as info:
            conn.run("true", sudo=True)
        assert info.value.kind == "host-key-unknown"
        assert sshd.auth_attempts == [] and sshd.commands == []
    finally:
        sshd.stop()


def test_an_unknown_jump_host_is_refused_before_logging_in_to_it(tmp_path,
                                                                 isolated_home) -> None:
    host_key, client = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_client"
    client.write_private_key_file(str(key_file))
    workdir = tmp_path / "remote"
    workdir.mkdir()
    sshd = FakeSshd(workdir, host_key, [client])
    config = tmp_path / "ssh_config"
    config.write_text(f"Host target\n  HostName 127.0.0.2\n  Port 1\n  StrictHostKeyChecking "
                      f"accept-new\n  ProxyJump tester@127.0.0.1:{sshd.port}\n")
    try:
        conn = SshConnector(SshSettings(
            "gpu7", "target", key_file=key_file, known_hosts=tmp_path / "known_hosts",
            ssh_config=config, connect_timeout=5))
        with pytest.raises(UnreachableHost) as info:
            conn.connect()
        # the jump host has no StrictHostKeyChecking of its own: strict
        assert info.value.kind == "host-key-unknown" and sshd.auth_attempts == []
    finally:
        sshd.stop()


# -- where the policy comes from ------------------------------------------------------

@pytest.mark.parametrize(("explicit", "configured", "policy"), [
    (None, None, STRICT), (None, "yes", STRICT), (None, "ask", STRICT),
    (None, "accept-new", ACCEPT_NEW), (None, "no", ACCEPT_NEW), (None, "off", ACCEPT_NEW),
    ("strict", "no", STRICT), ("accept-new", "yes", ACCEPT_NEW),
])
def test_policy_explicit_then_ssh_config_then_strict(explicit, configured, policy) -> None:
    options = paramiko.SSHConfigDict()
    if configured is not None:
        options["stricthostkeychecking"] = configured
    assert host_key_policy(explicit, options) == policy


def test_an_unknown_policy_is_an_error() -> None:
    with pytest.raises(GpuprovError, match="'no'"):
        host_key_policy("no", paramiko.SSHConfigDict())


def load(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "inventory.yml"
    path.write_text(text)
    return Inventory.load(str(path))


def test_ssh_host_key_checking_per_group_and_host(tmp_path) -> None:
    inv = load(tmp_path, """\
all:
  children:
    cloud:
      vars:
        ssh_host_key_checking: accept-new
      hosts:
        vm1:
        vm2:
          ssh_host_key_checking: strict
    lab:
      hosts:
        ws1:
""")
    checking = {name: h.ssh_host_key_checking for name, h in inv.hosts.items()}
    assert checking == {"vm1": "accept-new", "vm2": "strict", "ws1": None}
    assert connector_for(inv.hosts["vm1"], ConnectOptions()).route.policies == (ACCEPT_NEW,)
    assert connector_for(inv.hosts["ws1"], ConnectOptions()).route.policies == (STRICT,)
    # --accept-new-host-keys / --strict-host-keys win over the inventory
    flagged = connector_for(inv.hosts["vm2"], ConnectOptions(host_key_checking=ACCEPT_NEW))
    assert flagged.route.policies == (ACCEPT_NEW,)
    forced = connector_for(inv.hosts["vm1"], ConnectOptions(host_key_checking=STRICT))
    assert forced.route.policies == (STRICT,)


def test_a_bad_ssh_host_key_checking_names_file_and_line(tmp_path) -> None:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, "all:\n  hosts:\n    vm1:\n      ssh_host_key_checking: no\n")
    assert "inventory.yml:4" in str(info.value) and "strict or accept-new" in str(info.value)


# -- onboard --host-key-fingerprint ----------------------------------------------------

def onboard_host(tmp_path: Path, monkeypatch, key: paramiko.PKey) -> Host:
    monkeypatch.setattr(SshConnector, "host_key", lambda self: key)
    return Host("gpu9", address="10.0.0.9",
                vars={"ssh_known_hosts_file": str(tmp_path / "known_hosts")})


def opts(fp: str | None) -> OnboardOptions:
    return OnboardOptions(name="gpu9", group="lab", inventory=Path("inventory.yml"),
                          host_key_fingerprint=fp)


def test_onboard_fingerprint_is_compared_even_when_the_key_is_known(tmp_path,
                                                                     monkeypatch) -> None:
    key = paramiko.ECDSAKey.generate()
    host = onboard_host(tmp_path, monkeypatch, key)
    (tmp_path / "known_hosts").write_text(line("10.0.0.9", key))
    wrong = fingerprint(paramiko.ECDSAKey.generate())
    with pytest.raises(OnboardError) as info:
        first_contact(host, opts(wrong))
    assert wrong in str(info.value) and fingerprint(key) in str(info.value)
    assert "in known_hosts" in str(info.value)
    assert "already known and matches" in first_contact(host, opts(fingerprint(key)))


def test_onboard_records_a_new_key_whose_fingerprint_matches(tmp_path, monkeypatch,
                                                             capsys) -> None:
    key = paramiko.ECDSAKey.generate()
    host = onboard_host(tmp_path, monkeypatch, key)
    said = first_contact(host, opts(fingerprint(key).removeprefix("SHA256:")))
    assert "recorded" in said and (tmp_path / "known_hosts").read_text() == line("10.0.0.9", key)
    assert fingerprint(key) in capsys.readouterr().err   # announced like any recorded key
    with pytest.raises(UnreachableHost) as info:
        first_contact(onboard_host(tmp_path, monkeypatch, paramiko.ECDSAKey.generate()),
                      opts(None))   # a changed key: refused before any fingerprint talk
    assert info.value.kind == "host-key-changed"



# -- the CLI ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["apply", "drift-check", "verify", "facts"])
def test_every_host_running_command_takes_the_host_key_flags(command: str) -> None:
    from tests.unit.cli_runner import gpuprov

    out = gpuprov(command, "--help")
    assert out.code == 0 and "--accept-new-host-keys" in out.stdout
    assert "--strict-host-keys" in out.stdout
    both = gpuprov(command, "--accept-new-host-keys", "--strict-host-keys", "none.yml")
    # gpuprov exits 1 for a usage error too (cli/exit_codes.py), before any inventory is read
    assert both.code == EXIT_ERROR and "contradict" in both.stderr


def test_facts_refuses_an_unknown_host_then_accept_new_records_it(tmp_path,
                                                                  monkeypatch) -> None:
    from tests.unit.cli_runner import gpuprov

    host_key, client = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    key_file = tmp_path / "id_client"
    client.write_private_key_file(str(key_file))
    workdir = tmp_path / "remote"
    workdir.mkdir()
    sshd = FakeSshd(workdir, host_key, [client])
    known_hosts = tmp_path / "known_hosts"
    (tmp_path / "inventory.yml").write_text(f"""\
all:
  vars:
    ansible_user: tester
    ansible_ssh_private_key_file: {key_file}
    ssh_known_hosts_file: {known_hosts}
  hosts:
    web1: {{ansible_host: 127.0.0.1, ansible_port: {sshd.port}}}
""")
    monkeypatch.chdir(tmp_path)
    try:
        refused = gpuprov("facts", "inventory.yml")
        assert refused.code == 4
        assert "host-key-unknown" in refused.both and fingerprint(host_key) in refused.both
        assert not known_hosts.exists() and sshd.auth_attempts == []
        accepted = gpuprov("facts", "inventory.yml", "--accept-new-host-keys")
        assert f"web1: recorded host key [127.0.0.1]:{sshd.port} ecdsa-sha2-nistp256 " \
               f"{fingerprint(host_key)} in {known_hosts}" in accepted.stderr
        assert known_hosts.read_text() == line(f"[127.0.0.1]:{sshd.port}", host_key)
    finally:
        sshd.stop()
