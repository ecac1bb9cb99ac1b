"""Role sshd_hardening against canned facts, per distro and OpenSSH version:
the drop-in it renders (crypto cut to what the host's OpenSSH knows,
RequiredRSASize only on >= 9.1, host keys, root login, tunnels, users), the
Include placement in sshd_config, the reload command, refused variables, and
the lockout preflight as the role wires it.

The `ssh -Q` lists below are what each distro's OpenSSH prints (trimmed of
nothing: the role must pick from the real lists). Assumptions, per build:
- Ubuntu 22.04, OpenSSH 8.9p1: sntrup761x25519-sha512@openssh.com only (no
  IANA name without the suffix, no RequiredRSASize: that came in 9.1);
- Debian 12, OpenSSH 9.2p1 (deb12u7 and later): Debian took upstream's 2025
  backport of the IANA name, so BOTH sntrup761x25519-sha512 and the
  @openssh.com name are known;
- Ubuntu 24.04, OpenSSH 9.6p1: the @openssh.com name only;
- RHEL 9, OpenSSH 8.7p1: no sntrup761 at all (Red Hat's build leaves the
  post-quantum KEX out until 9.x's ML-KEM update); chacha20-poly1305, umac
  and curve25519 are known (crypto-policies restrict them, not the binary).
No build here knows mlkem768x25519-sha256 (OpenSSH 9.9).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import Session
from gpuprov.engine.context import RoleFailed
from gpuprov.facts.files import FileState
from gpuprov.facts.sshd import ConfigFile, SshdConfigFiles, SshdEffective, UserGroups
from gpuprov.ops.base import Step
from tests.unit.role_facts import ALL_DISTROS, DEBIAN_FAMILY, file_info
from tests.unit.role_harness import MissingFacts, RolePlan, plan_role, role_module, system_for
from tests.unit.sshd_samples import (
    CLOUD_INIT,
    DEBIAN_MAIN,
    RHEL8_MAIN_BODY,
    RHEL8_MAIN_HEAD,
    RHEL9_CRYPTO,
    RHEL9_MAIN,
    RHEL9_REDHAT,
    sshd_t,
)

#: the probe with the role's own policy (moduli threshold, rollback directory)
STATE = role_module("sshd_hardening", "config").sshd_state()

ROLE = "sshd_hardening"
# the role's own modules, through the loader its tasks.py is imported with
sshd_config = role_module(ROLE, "config")
SshdConfig = sshd_config.SshdConfig
SshdLockout = role_module(ROLE, "lockout").SshdLockout
SSHD_CONFIG = "/etc/ssh/sshd_config"
DROPIN = "/etc/ssh/sshd_config.d/00-gpuprov.conf"
INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf"
RSA_KEY = "/etc/ssh/ssh_host_rsa_key"
MODULI = "/etc/ssh/moduli"

ADMIN = Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256,
                known_host_key_types=("ssh-ed25519", "ecdsa-sha2-nistp256"))
ROOT = Session("root", auth="publickey", key_type="ssh-ed25519", key_bits=256,
               known_host_key_types=("ssh-ed25519",))

# ------------------------------------------------------------------ ssh -Q, per build

_KEX_COMMON = (
    "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1",
    "diffie-hellman-group14-sha256", "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521", "curve25519-sha256", "curve25519-sha256@libssh.org")
KEX = {
    "8.9": (*_KEX_COMMON, "sntrup761x25519-sha512@openssh.com"),
    "9.2-debian": (*_KEX_COMMON, "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com"),
    "9.6": (*_KEX_COMMON, "sntrup761x25519-sha512@openssh.com"),
    "8.7-rhel": _KEX_COMMON,
}
CIPHERS = ("3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr",
           "aes256-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "chacha20-poly1305@openssh.com")
MACS = ("hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5",
        "hmac-md5-96", "umac-64@openssh.com", "umac-128@openssh.com",
        "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
        "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
        "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com",
        "umac-128-etm@openssh.com")
KEY_SIG = ("ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-ed25519-cert-v01@openssh.com",
           "sk-ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
           "ecdsa-sha2-nistp521", "sk-ecdsa-sha2-nistp256@openssh.com",
           "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
           "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
           "ecdsa-sha2-nistp521-cert-v01@openssh.com",
           "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "ssh-dss",
           "ssh-dss-cert-v01@openssh.com", "ssh-rsa", "ssh-rsa-cert-v01@openssh.com",
           "rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512",
           "rsa-sha2-512-cert-v01@openssh.com")

# distro -> (ssh -V, kex list)
OPENSSH = {
    "ubuntu2204": ("OpenSSH_8.9p1 Ubuntu-3ubuntu0.13, OpenSSL 3.0.2 15 Mar 2022", KEX["8.9"]),
    "debian12": ("OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025",
                 KEX["9.2-debian"]),
    "ubuntu2404": ("OpenSSH_9.6p1 Ubuntu-3ubuntu13.13, OpenSSL 3.0.13 30 Jan 2024", KEX["9.6"]),
    "rhel9": ("OpenSSH_8.7p1, OpenSSL 3.2.2 4 Jun 2024", KEX["8.7-rhel"]),
}

# `ssh-keygen -l -f` of a stock host's keys (RSA from ssh-keygen -A: 3072 bits)
STOCK_KEYS = {
    "ed25519": "256 SHA256:Zq3V0gEdStockKeyFingerprint0000000000000000 root@gpu-01 (ED25519)",
    "rsa": "3072 SHA256:Rk8xRsaStockKeyFingerprint00000000000000000000 root@gpu-01 (RSA)",
    "ecdsa": "256 SHA256:EcStockKeyFingerprint000000000000000000000000 root@gpu-01 (ECDSA)",
}
HARDENED_KEYS = {
    "ed25519": STOCK_KEYS["ed25519"],
    "rsa": "4096 SHA256:Rk8xRsaNewKeyFingerprint0000000000000000000000 root (RSA)",
    "ecdsa": STOCK_KEYS["ecdsa"],
}


def probe_output(distro: str, *, version: str | None = None, kex: tuple[str, ...] | None = None,
                 host_keys: dict[str, str] = STOCK_KEYS, weak_moduli: int | None = 0,
                 rollback: bool = False) -> str:
    """What SshdState's probe prints on such a host."""
    line, default_kex = OPENSSH[distro]
    lines = [f"version={version or line}"]
    for kind, names in (("kex", kex or default_kex), ("cipher", CIPHERS), ("mac", MACS),
                        ("key-sig", KEY_SIG)):
        lines += [f"alg.{kind}={n}" for n in names]
    lines += [f"hostkey.{t}={v}" for t, v in host_keys.items()]
    if weak_moduli is not None:
        lines.append(f"weak_moduli={weak_moduli}")
    if rollback:
        lines.append("rollback=pending")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ stock sshd_config



def stock_main(distro: str) -> Any:
    if distro == "rhel9":
        return file_info(RHEL9_MAIN, mode="0600")
    return file_info(DEBIAN_MAIN)


#: the drop-ins each distro ships beside sshd_config (all sort after gpuprov's)
STOCK_DROPINS = {"ubuntu2204": [CLOUD_INIT], "ubuntu2404": [CLOUD_INIT], "debian12": [],
                 "rhel9": [RHEL9_REDHAT, RHEL9_CRYPTO]}


def config_files(main: str, *others: tuple[str, str], mode: str = "0644"
                 ) -> tuple[ConfigFile, ...]:
    """SshdConfigFiles' answer: sshd_config, then (path, text) of the others."""
    return tuple(ConfigFile(path, "root", "root", mode, tuple(text.splitlines()))
                 for path, text in [(SSHD_CONFIG, main), *others])


def facts(distro: str, *, dropin: str | None = None, main: Any = None,
          groups: dict[str, tuple[str, ...] | None] | None = None,
          extra_files: tuple[tuple[str, str], ...] = (), effective: str | None = None,
          user: str = "admin", **probe: Any) -> dict:
    """Canned facts of a host; `effective`: SshdEffective's output (default: the
    drop-in's settings in effect, or none of them when there is no drop-in)."""
    main_info = main if main is not None else stock_main(distro)
    others = [*extra_files, *STOCK_DROPINS[distro]]
    if dropin is not None:
        others.append((DROPIN, dropin))
    others.sort(key=lambda f: (not f[0].startswith("/etc/ssh/"), f[0]))
    if effective is None:
        effective = sshd_t(dropin or "PasswordAuthentication yes\n", user=user)
    out: dict[Any, Any] = {
        STATE: STATE.process(probe_output(distro, **probe), 0),
        FileState(SSHD_CONFIG, sudo=True): main_info,
        FileState(DROPIN, sudo=True): None if dropin is None else file_info(dropin),
        SshdConfigFiles(): config_files(main_info.content.decode(), *others),
        SshdEffective(user): SshdEffective(user).process(effective, 0),
    }
    for user, value in (groups or {}).items():
        out[UserGroups(user)] = value
    return out


def plan(distro: str = "ubuntu2404", *, vars: dict[str, Any] | None = None,
         session: Session = ADMIN, init: str = "systemd", check: bool = False,
         **fact_args: Any) -> RolePlan:
    return plan_role(ROLE, system_for(distro, init=init),
                     facts(distro, user=session.user, **fact_args), vars=vars, check=check,
                     session=session)


def dropin_of(p: RolePlan) -> str:
    """The drop-in's new content, as the write step uploads it."""
    [change] = [c for c in p.changes if c.resource == f"file {DROPIN}"]
    [write] = [s for s in change.steps if s.stdin is not None]
    return write.stdin.decode()


def lines(p: RolePlan) -> list[str]:
    return dropin_of(p).splitlines()


def keyword(p: RolePlan, name: str) -> str | None:
    found = [ln for ln in lines(p) if ln.split(" ", 1)[0] == name]
    assert len(found) <= 1, found
    return found[0].split(" ", 1)[1] if found else None


# ------------------------------------------------------------------ expected drop-in

HEADER = [
    "# Managed by gpuprov (role sshd_hardening): edits are undone by the next apply.",
    "# Read before sshd_config's own settings and 50-cloud-init.conf: sshd keeps",
    "# the first value it reads for a keyword.",
]
CIPHERS_LINE = ("Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr,"
                "aes192-ctr,aes128-gcm@openssh.com,aes128-ctr")
MACS_LINE = ("MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,"
             "umac-128-etm@openssh.com")
PUBKEY_LINE = ("PubkeyAcceptedAlgorithms sk-ssh-ed25519-cert-v01@openssh.com,"
               "ssh-ed25519-cert-v01@openssh.com,sk-ssh-ed25519@openssh.com,ssh-ed25519,"
               "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-256-cert-v01@openssh.com,"
               "rsa-sha2-256")
_KEX_TAIL = ("curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,"
             "diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha256")


def expected_dropin(kex_line: str, *, required_rsa_size: bool) -> str:
    body = [
        *HEADER,
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "HostKey /etc/ssh/ssh_host_rsa_key",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "AuthenticationMethods publickey",
        "PermitRootLogin no",
        "PermitEmptyPasswords no",
        "UsePAM yes",
        "MaxAuthTries 3",
        "LoginGraceTime 30",
        "MaxStartups 10:30:60",
        "ClientAliveInterval 300",
        "ClientAliveCountMax 3",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding local",
        "PermitOpen localhost:8888 127.0.0.1:8888",
        "LogLevel VERBOSE",
        kex_line,
        CIPHERS_LINE,
        MACS_LINE,
        "HostKeyAlgorithms ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
        PUBKEY_LINE,
    ]
    if required_rsa_size:
        body.append("RequiredRSASize 3072")
    return "\n".join(body) + "\n"


EXPECTED = {
    "ubuntu2204": expected_dropin(
        f"KexAlgorithms sntrup761x25519-sha512@openssh.com,{_KEX_TAIL}", required_rsa_size=False),
    "debian12": expected_dropin(
        f"KexAlgorithms sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,{_KEX_TAIL}",
        required_rsa_size=True),
    "ubuntu2404": expected_dropin(
        f"KexAlgorithms sntrup761x25519-sha512@openssh.com,{_KEX_TAIL}", required_rsa_size=True),
    "rhel9": expected_dropin(f"KexAlgorithms {_KEX_TAIL}", required_rsa_size=False),
}


# ================================================================== the drop-in

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_dropin_per_openssh_version(distro: str) -> None:
    p = plan(distro)
    assert dropin_of(p) == EXPECTED[distro]
    [planned] = p.ops
    assert isinstance(planned.op, SshdConfig)
    assert planned.op.label == "sshd config (lockout-safe)"


@pytest.mark.parametrize(("version", "required"), [
    ("OpenSSH_9.0p1 Ubuntu-1ubuntu8.7, OpenSSL 3.0.5 5 Jul 2022", False),
    ("OpenSSH_9.1p1, OpenSSL 3.0.7 1 Nov 2022", True),
    ("OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 1 Jul 2025", True),
])
def test_required_rsa_size_only_from_9_1(version: str, required: bool) -> None:
    p = plan("ubuntu2404", version=version)
    assert keyword(p, "RequiredRSASize") == ("3072" if required else None)
    p = plan("ubuntu2404", version=version, vars={"sshd_required_rsa_size": 4096})
    assert keyword(p, "RequiredRSASize") == ("4096" if required else None)


def test_names_the_host_does_not_know_are_left_out_in_the_given_order() -> None:
    kex = ["mlkem768x25519-sha256", "curve25519-sha256", "sntrup761x25519-sha512",
           "diffie-hellman-group14-sha256", "sntrup761x25519-sha512@openssh.com"]
    p = plan("ubuntu2204", vars={"sshd_kex_algorithms": kex,
                                 "sshd_macs": "hmac-sha2-512-etm@openssh.com, hmac-sha3-512, "
                                              "hmac-sha2-256"})
    assert keyword(p, "KexAlgorithms") == ("curve25519-sha256,diffie-hellman-group14-sha256,"
                                           "sntrup761x25519-sha512@openssh.com")
    # a string list is split on commas and blanks
    assert keyword(p, "MACs") == "hmac-sha2-512-etm@openssh.com,hmac-sha2-256"
    # RHEL 9: the mlkem and both sntrup names dropped
    p = plan("rhel9", vars={"sshd_kex_algorithms": kex})
    assert keyword(p, "KexAlgorithms") == "curve25519-sha256,diffie-hellman-group14-sha256"


def test_a_host_whose_ssh_cannot_list_a_kind_keeps_the_list() -> None:
    # `ssh -Q mac` printed nothing: no filter (the crypto() fallback for old builds)
    f = facts("ubuntu2404")
    info = f[STATE]
    f[STATE] = type(info)(info.version, {k: v for k, v in info.algorithms.items()
                                               if k != "mac"},
                                info.host_keys, info.weak_moduli, info.moduli_exists,
                                info.rollback_pending)
    p = plan_role(ROLE, system_for("ubuntu2404"), f, session=ADMIN)
    assert f"{MACS_LINE}" in lines(p)


def test_no_rsa_host_key() -> None:
    p = plan("debian12", vars={"sshd_rsa_host_key_bits": 0})
    got = lines(p)
    assert [ln for ln in got if ln.startswith("HostKey ")] == [
        "HostKey /etc/ssh/ssh_host_ed25519_key"]
    assert keyword(p, "HostKeyAlgorithms") == "ssh-ed25519"
    # client RSA keys are still accepted: that is a different list
    assert PUBKEY_LINE in got
    # and the 3072-bit RSA key is not regenerated (nor removed)
    assert "host key rsa" not in [c.resource for c in p.changes]
    # ... nor generated when missing
    p = plan("debian12", vars={"sshd_rsa_host_key_bits": 0},
             host_keys={"ed25519": STOCK_KEYS["ed25519"]})
    assert [c.resource for c in p.changes if c.resource.startswith("host key")] == []


def test_host_keys_ed25519_first() -> None:
    got = lines(plan("ubuntu2404"))
    assert got[3:5] == ["HostKey /etc/ssh/ssh_host_ed25519_key",
                        "HostKey /etc/ssh/ssh_host_rsa_key"]
    assert not any("ecdsa" in ln or "dsa_key" in ln for ln in got)


@pytest.mark.parametrize(("value", "who", "expected"), [
    ("auto", ADMIN, "no"),
    ("auto", ROOT, "prohibit-password"),
    ("AUTO", ROOT, "prohibit-password"),
    ("no", ADMIN, "no"),
    ("prohibit-password", ADMIN, "prohibit-password"),
    ("prohibit-password", ROOT, "prohibit-password"),
    ("yes", ADMIN, "yes"),
])
def test_permit_root_login(value: str, who: Session, expected: str) -> None:
    p = plan("ubuntu2204", vars={"sshd_permit_root_login": value}, session=who)
    assert keyword(p, "PermitRootLogin") == expected


def test_permit_root_login_auto_without_an_ssh_session() -> None:
    # no session given: the engine's default (root, local): keys only, not off
    p = plan_role(ROLE, system_for("ubuntu2404"), facts("ubuntu2404", user="root"))
    assert keyword(p, "PermitRootLogin") == "prohibit-password"


@pytest.mark.parametrize(("vars", "expected"), [
    ({}, "localhost:8888 127.0.0.1:8888"),
    ({"jupyter_port": 9999}, "localhost:9999 127.0.0.1:9999"),
    ({"container_ssh": False, "container_ssh_port": 2200}, "localhost:8888 127.0.0.1:8888"),
    ({"container_ssh": True}, "localhost:8888 127.0.0.1:8888 localhost:2222 127.0.0.1:2222"),
    ({"jupyter_port": 8890, "container_ssh": True, "container_ssh_port": 2200},
     "localhost:8890 127.0.0.1:8890 localhost:2200 127.0.0.1:2200"),
    ({"sshd_permit_open": "any"}, "any"),
    ({"sshd_permit_open": ["127.0.0.1:5432", "db.internal:5432"]},
     "127.0.0.1:5432 db.internal:5432"),
    ({"sshd_permit_open": []}, "none"),
])
def test_permit_open(vars: dict[str, Any], expected: str) -> None:
    p = plan("ubuntu2404", vars=vars)
    assert keyword(p, "PermitOpen") == expected
    assert keyword(p, "AllowTcpForwarding") == "local"


def test_password_authentication_on() -> None:
    p = plan("debian12", vars={"sshd_password_authentication": True})
    assert [keyword(p, k) for k in ("PasswordAuthentication", "KbdInteractiveAuthentication",
                                    "AuthenticationMethods")] == ["yes", "yes", "any"]


def test_allow_users_and_groups_only_when_set() -> None:
    p = plan("ubuntu2404")
    assert keyword(p, "AllowUsers") is None and keyword(p, "AllowGroups") is None
    p = plan("ubuntu2404", vars={"ssh_allow_users": ["admin", "alice"],
                                 "ssh_allow_groups": ["sshusers"]},
             groups={"admin": ("admin", "sudo", "sshusers")})
    got = lines(p)
    at = got.index("LogLevel VERBOSE")
    assert got[at + 1:at + 3] == ["AllowUsers admin alice", "AllowGroups sshusers"]
    assert got[at + 3].startswith("KexAlgorithms ")


def test_allow_groups_needs_the_operators_groups() -> None:
    with pytest.raises(MissingFacts, match=r"UserGroups\('admin'\)"):
        plan("ubuntu2404", vars={"ssh_allow_groups": ["sshusers"]})


def test_extra_settings_are_appended_or_override_in_place() -> None:
    p = plan("ubuntu2404", vars={"sshd_extra_settings": {
        "Banner": "/etc/issue.net", "MaxAuthTries": 5, "DebianBanner": "no"}})
    got = lines(p)
    assert got[-2:] == ["Banner /etc/issue.net", "DebianBanner no"]
    assert got.index("MaxAuthTries 5") == EXPECTED["ubuntu2404"].splitlines().index(
        "MaxAuthTries 3")
    assert "MaxAuthTries 3" not in got


def test_other_variables_reach_the_dropin() -> None:
    p = plan("rhel9", vars={"sshd_max_auth_tries": 6, "sshd_login_grace_time": 20,
                            "sshd_max_startups": "5:50:20", "sshd_client_alive_interval": 60,
                            "sshd_client_alive_count_max": 2, "sshd_x11_forwarding": True,
                            "sshd_allow_agent_forwarding": True,
                            "sshd_allow_tcp_forwarding": "no", "sshd_log_level": "INFO"})
    assert [keyword(p, k) for k in (
        "MaxAuthTries", "LoginGraceTime", "MaxStartups", "ClientAliveInterval",
        "ClientAliveCountMax", "X11Forwarding", "AllowAgentForwarding", "AllowTcpForwarding",
        "LogLevel")] == ["6", "20", "5:50:20", "60", "2", "yes", "yes", "no", "INFO"]


def test_dropin_path_is_a_variable() -> None:
    other = "/etc/ssh/sshd_config.d/01-site.conf"
    f = facts("ubuntu2404")
    f[FileState(other, sudo=True)] = None
    p = plan_role(ROLE, system_for("ubuntu2404"), f, vars={"sshd_dropin": other}, session=ADMIN)
    assert p.changes[0].resource == f"file {other}"


# ================================================================== refused variables

@pytest.mark.parametrize(("vars", "message"), [
    ({"sshd_rsa_host_key_bits": 2048},
     "sshd_rsa_host_key_bits=2048: must be 0 or at least 3072"),
    ({"sshd_rsa_host_key_bits": 1024},
     "sshd_rsa_host_key_bits=1024: must be 0 or at least 3072"),
    ({"sshd_kex_algorithms": ["mlkem768x25519-sha256", "no-such-kex"]},
     "sshd_kex_algorithms=['mlkem768x25519-sha256', 'no-such-kex']: none of these names is "
     "known to OpenSSH 8.9 on this host"),
    ({"sshd_ciphers": ["aes256-gcm"]},
     "sshd_ciphers=['aes256-gcm']: none of these names is known to OpenSSH 8.9 on this host"),
    ({"sshd_host_key_algorithms": ["rsa-sha2-512"], "sshd_rsa_host_key_bits": 0},
     "sshd_host_key_algorithms=['rsa-sha2-512']: none of these names is known"),
    ({"sshd_permit_root_login": "maybe"},
     "sshd_permit_root_login='maybe': must be auto, no, prohibit-password, "
     "forced-commands-only or yes"),
    ({"sshd_permit_root_login": False}, "sshd_permit_root_login=False: must be auto"),
    ({"sshd_macs": 5}, "sshd_macs=5: must be a list of names"),
    ({"ssh_allow_users": [1, 2]}, "ssh_allow_users=[1, 2]: must be a list of names"),
    ({"sshd_extra_settings": ["Banner /etc/issue"]},
     "sshd_extra_settings=['Banner /etc/issue']: must be a mapping of sshd keyword: value"),
])
def test_bad_variables_are_refused_by_name(vars: dict[str, Any], message: str) -> None:
    with pytest.raises(RoleFailed) as info:
        plan("ubuntu2204", vars=vars)
    assert info.value.message.startswith(f"gpu-01: role sshd_hardening: {message}")


def test_unknown_crypto_names_hint_at_ssh_q() -> None:
    with pytest.raises(RoleFailed) as info:
        plan("rhel9", vars={"sshd_kex_algorithms": ["sntrup761x25519-sha512@openssh.com"]})
    assert "known to OpenSSH 8.7 on this host" in info.value.message
    assert info.value.hint == "see `ssh -Q kex` on the host"


def test_no_ssh_server_means_nothing_to_harden() -> None:
    # no sshd_config: nothing installed (the sshd probe is asked in the same batch:
    # one round trip; its answer is not read)
    p = plan_role(ROLE, system_for("debian12"),
                  {FileState(SSHD_CONFIG, sudo=True): None, STATE: None}, session=ADMIN)
    assert p.ops == [] and p.skipped == "no sshd installed"


def test_unreadable_sshd_config_is_refused() -> None:
    f = facts("debian12")
    info = stock_main("debian12")
    f[FileState(SSHD_CONFIG, sudo=True)] = type(info)(
        "file", "root", "root", "0600", 5_000_000, 0, 0, "0" * 64, None)   # over the size limit
    with pytest.raises(RoleFailed, match=r"/etc/ssh/sshd_config is not a readable text file"):
        plan_role(ROLE, system_for("debian12"), f, session=ADMIN)


def test_asks_for_sshd_config_and_the_probe_in_one_batch() -> None:
    # Changed deliberately (issue 16): both at once, one round trip instead of two.
    with pytest.raises(MissingFacts, match=r"asked for: FileState\('/etc/ssh/sshd_config', "
                                           r".*sudo=True\), SshdState\(3071, "
                                           r"'/var/lib/gpuprov/sshd-rollback'\)$"):
        plan_role(ROLE, system_for("ubuntu2204"), {}, session=ADMIN)
    [planned] = plan("ubuntu2204").ops
    assert planned.op.facts() == [FileState(DROPIN, sudo=True), STATE, SshdConfigFiles(),
                                  SshdEffective("admin")]


# ================================================================== sshd_config's Include

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_stock_sshd_config_is_left_alone(distro: str) -> None:
    p = plan(distro)
    assert f"file {SSHD_CONFIG}" not in [c.resource for c in p.changes]


def test_include_is_added_where_missing_keeping_the_files_mode() -> None:
    main = file_info(RHEL8_MAIN_HEAD + RHEL8_MAIN_BODY, mode="0600")
    p = plan("rhel9", main=main)
    [change] = [c for c in p.changes if c.resource == f"file {SSHD_CONFIG}"]
    assert change.action == "update" and change.summary == "update content"
    [write] = [s for s in change.steps if s.stdin is not None]
    assert write.stdin.decode() == RHEL8_MAIN_HEAD + INCLUDE + "\n" + RHEL8_MAIN_BODY
    assert "chmod 0600 " in write.command.display()


def test_include_after_a_setting_is_moved_first() -> None:
    text = DEBIAN_MAIN.replace(INCLUDE + "\n", "").replace("UsePAM yes\n",
                                                           f"UsePAM yes\n{INCLUDE}\n")
    p = plan("debian12", main=file_info(text))
    [change] = [c for c in p.changes if c.resource == f"file {SSHD_CONFIG}"]
    [write] = [s for s in change.steps if s.stdin is not None]
    new = write.stdin.decode()
    assert new.count(INCLUDE) == 1
    first = next(ln for ln in new.splitlines() if ln.strip() and not ln.startswith("#"))
    assert first == INCLUDE


def test_the_dropin_directory_is_created_when_missing() -> None:
    p = plan("rhel9", main=file_info(RHEL8_MAIN_HEAD + RHEL8_MAIN_BODY, mode="0600"))
    cmds = p.commands
    write_at = next(i for i, c in enumerate(cmds) if "mktemp -u /etc/ssh/sshd_config.d/" in c)
    made = re.compile(r"mkdir -p (-m \S+ )?/etc/ssh/sshd_config\.d(/)?( |$|;|&|\n)")
    assert any(made.search(c) for c in cmds[:write_at + 1])


# ================================================================== the changes

def test_converged_host_has_no_change_and_no_commands() -> None:
    for distro in ALL_DISTROS:
        p = plan(distro, dropin=EXPECTED[distro], host_keys=HARDENED_KEYS, weak_moduli=0)
        assert p.changes == [] and p.commands == [], distro


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_a_converged_host_with_an_unconfirmed_change_gets_it_confirmed(distro: str) -> None:
    # Issue 15: a controller killed after the reload, before the confirmation:
    # the files are as wanted, the revert still armed. Not "in sync": the
    # revert would undo the change minutes later. Reload, confirm, cancel it.
    p = plan(distro, dropin=EXPECTED[distro], host_keys=HARDENED_KEYS, weak_moduli=0,
             rollback=True)
    [change] = p.changes
    assert (change.resource, change.action) == ("service sshd", "reload")
    assert change.summary.startswith("an earlier sshd change was never confirmed")
    assert p.commands[0].endswith("sshd) -t")
    assert change.steps[-2] == Step(Command("true"), new_connection=True)
    assert "mv \"$d\" \"$d.done\"" in p.commands[-1]
    # and check mode says the same (drift-check: the host is not in sync yet)
    assert plan(distro, dropin=EXPECTED[distro], host_keys=HARDENED_KEYS, weak_moduli=0,
                rollback=True, check=True).changes[0].summary == change.summary


def test_hosts_without_a_moduli_file_have_nothing_to_filter() -> None:
    p = plan("ubuntu2404", dropin=EXPECTED["ubuntu2404"], host_keys=HARDENED_KEYS,
             weak_moduli=None)
    assert p.changes == []


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_stock_host(distro: str) -> None:
    p = plan(distro, weak_moduli=41)
    changes = p.changes
    assert [(c.resource, c.action) for c in changes] == [
        (f"file {DROPIN}", "create"),
        ("host key rsa", "update"),
        (f"file {MODULI}", "update"),
        ("service sshd", "reload"),
    ]
    reload = Command("systemctl", "reload-or-restart", "sshd" if distro == "rhel9" else "ssh")
    saved = [DROPIN, RSA_KEY, f"{RSA_KEY}.pub", MODULI]
    armed = sshd_config.armed_revert(reload, 120)
    assert changes[0].steps[0] == Step(Command.script(armed.prepare_script(saved)))
    rollback = [Step(Command.script("[ ! -f /var/lib/gpuprov/sshd-rollback/restore ] || "
                                    "sh /var/lib/gpuprov/sshd-rollback/restore"))]
    assert all(c.rollback == rollback for c in changes)
    assert changes[-1].steps == [
        Step(Command.script("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                            "$(command -v sshd || echo /usr/sbin/sshd) -t")),
        Step(reload),
        Step(Command("true"), new_connection=True),
        Step(Command.script(armed.finish_script())),
    ]


def test_missing_ed25519_host_key_is_generated() -> None:
    keys = {"rsa": HARDENED_KEYS["rsa"]}
    rsa_known = Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256,
                        known_host_key_types=("ssh-rsa",))
    p = plan("ubuntu2204", dropin=EXPECTED["ubuntu2204"], host_keys=keys, session=rsa_known)
    assert [(c.resource, c.action) for c in p.changes] == [
        ("host key ed25519", "create"), ("service sshd", "reload")]
    assert "ssh-keygen -q -t ed25519 -N '' -C '' -f /etc/ssh/ssh_host_ed25519_key.gpuprov-new" \
        in p.commands[1]


def test_the_revert_delay_is_a_variable() -> None:
    p = plan("debian12", vars={"sshd_revert_after": 30})
    assert "--on-active=30 " in p.commands[0] and "sleep 30;" in p.commands[0]
    assert p.changes[-1].summary.endswith("(armed: 30s)")


def test_moduli_left_alone_when_asked() -> None:
    p = plan("debian12", weak_moduli=41, vars={"sshd_strong_moduli": False})
    assert f"file {MODULI}" not in [c.resource for c in p.changes]


def test_an_earlier_interrupted_change_is_undone_alone_then_planned_again() -> None:
    # Changed deliberately: the undo used to be the arming step's first act inside the
    # new transaction, whose changes had been planned from the state before the undo
    # (a file the dead run had written already was left out, then restored away:
    # drift after a "converged" apply, seen by the fleet's SIGKILL test).
    p = plan("ubuntu2404", rollback=True)
    [undo] = p.changes
    assert (undo.resource, undo.action, undo.replan) == ("service sshd", "restore", True)
    assert undo.summary.startswith("roll back an earlier sshd change that was never confirmed")


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_check_mode_plans_the_same_changes(distro: str) -> None:
    def shape(p: RolePlan) -> list[Any]:
        return [(c.to_json(), c.rollback, [(s.stdin, s.sudo, s.new_connection) for s in c.steps])
                for c in p.changes]
    applied = plan(distro, weak_moduli=12)
    checked = plan(distro, weak_moduli=12, check=True)
    assert shape(checked) == shape(applied)
    assert len(checked.changes) == 4


@pytest.mark.parametrize(("distro", "init", "expected"), [
    ("ubuntu2204", "systemd", "systemctl reload-or-restart ssh"),
    ("ubuntu2404", "systemd", "systemctl reload-or-restart ssh"),
    ("debian12", "systemd", "systemctl reload-or-restart ssh"),
    ("rhel9", "systemd", "systemctl reload-or-restart sshd"),
    ("ubuntu2204", "sysvinit", "service ssh reload"),
    ("debian12", "sysvinit", "service ssh reload"),
    ("rhel9", "sysvinit", "service sshd reload"),
])
def test_reload_command(distro: str, init: str, expected: str) -> None:
    p = plan(distro, init=init)
    final = p.changes[-1]
    assert final.steps[1].command.display() == expected
    # the restore script (run by the rollback and the timer) reloads the same way
    assert f"\n{expected}\n" in p.changes[0].steps[0].command.shell()


# ================================================================== preflight, as wired

@pytest.mark.parametrize("distro", DEBIAN_FAMILY)
def test_operator_not_in_allow_users_is_refused_before_any_change(distro: str) -> None:
    with pytest.raises(SshdLockout) as info:
        plan(distro, vars={"ssh_allow_users": ["alice", "bob"]})
    assert "AllowUsers alice bob: does not allow admin" in info.value.message
    assert "nothing was changed" in info.value.message


def test_root_operator_with_root_login_off_is_refused() -> None:
    with pytest.raises(SshdLockout, match=r"PermitRootLogin no: you connect as root"):
        plan("rhel9", vars={"sshd_permit_root_login": "no"}, session=ROOT)


def test_operator_groups_checked_against_allow_groups() -> None:
    vars = {"ssh_allow_groups": ["sshusers"]}
    with pytest.raises(SshdLockout, match=r"AllowGroups sshusers: admin is in none of them"):
        plan("ubuntu2404", vars=vars, groups={"admin": ("admin", "sudo")})
    assert plan("ubuntu2404", vars=vars, groups={"admin": ("admin", "sshusers")}).changes


def test_small_rsa_operator_key_on_9_1_plus_only() -> None:
    rsa2048 = Session("admin", auth="publickey", key_type="ssh-rsa", key_bits=2048,
                      known_host_key_types=("ssh-ed25519",))
    with pytest.raises(SshdLockout, match=r"RequiredRSASize 3072: your RSA key has 2048 bits"):
        plan("debian12", session=rsa2048)
    assert plan("ubuntu2204", session=rsa2048).changes   # 8.9: no RequiredRSASize


def test_ecdsa_operator_key_is_refused() -> None:
    ecdsa = Session("admin", auth="publickey", key_type="ecdsa-sha2-nistp256", key_bits=256,
                    known_host_key_types=("ssh-ed25519",))
    with pytest.raises(SshdLockout, match=r"PubkeyAcceptedAlgorithms: your key is "
                                          r"ecdsa-sha2-nistp256"):
        plan("ubuntu2404", session=ecdsa)


@pytest.mark.parametrize(("known", "vars", "refused"), [
    (("ecdsa-sha2-nistp256",), {}, True),
    (("ssh-rsa",), {}, True),                                 # stock 3072 RSA is regenerated
    (("ssh-rsa",), {"sshd_rsa_host_key_bits": 3072}, False),  # ... unless 3072 is enough
    (("ssh-rsa",), {"sshd_rsa_host_key_bits": 0}, True),      # no rsa-sha2-* offered any more
    (("ssh-ed25519",), {}, False),
])
def test_known_host_key_must_survive(known: tuple[str, ...], vars: dict[str, Any],
                                     refused: bool) -> None:
    who = Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256,
                  known_host_key_types=known)
    if refused:
        with pytest.raises(SshdLockout, match=r"host keys: your known_hosts trusts this host"):
            plan("debian12", vars=vars, session=who)
    else:
        assert plan("debian12", vars=vars, session=who).changes


def test_preflight_false_lets_a_risky_plan_through() -> None:
    p = plan("ubuntu2404", vars={"ssh_allow_users": ["alice"], "sshd_preflight": False})
    assert keyword(p, "AllowUsers") == "alice"
    assert p.changes[-1].resource == "service sshd"
