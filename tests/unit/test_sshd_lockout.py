"""The lockout-safe sshd machinery, with no host: the facts' parsers
(SshdState, UserGroups), sshd_config's Include placement, the preflight
(roles/sshd_hardening/lockout.py: lockout_risks / host_key_kept), the Changes
the SshdConfig op plans (roles/sshd_hardening/config.py), and the armed
revert's host-side shell scripts (gpuprov.ops.armed: prepare / restore /
finish, as the role sets them up) run for real in /bin/sh against a
temporary directory tree."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gpuprov.command import Command
from gpuprov.connectors.base import Session
from gpuprov.facts.base import FactError, FactView
from gpuprov.facts.files import FileState
from gpuprov.facts.sshd import (
    ConfigFile,
    HostKey,
    SshdConfigFiles,
    SshdEffective,
    SshdInfo,
    SshdState,
    UserGroups,
)
from gpuprov.ops.armed import ArmedRevert
from gpuprov.ops.base import Change, Step
from tests.unit.role_facts import file_info
from tests.unit.role_harness import role_module
from tests.unit.shell_helpers import without_upload_check
from tests.unit.sshd_samples import DEBIAN_MAIN, RHEL8_MAIN_BODY, RHEL8_MAIN_HEAD

ROLLBACK = "/var/lib/gpuprov/sshd-rollback"
DROPIN = "/etc/ssh/sshd_config.d/00-gpuprov.conf"
SSHD_CONFIG = "/etc/ssh/sshd_config"
INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf"
RSA_KEY = "/etc/ssh/ssh_host_rsa_key"
ED_KEY = "/etc/ssh/ssh_host_ed25519_key"
MODULI = "/etc/ssh/moduli"
RELOAD = Command("systemctl", "reload-or-restart", "ssh")

# the role's own modules, through the loader its tasks.py is imported with
sshd_config = role_module("sshd_hardening", "config")
lockout = role_module("sshd_hardening", "lockout")
SshdConfig, SshdFile, include_first = (sshd_config.SshdConfig, sshd_config.SshdFile,
                                       sshd_config.include_first)
SshdLockout, host_key_kept, lockout_risks = (lockout.SshdLockout, lockout.host_key_kept,
                                             lockout.lockout_risks)


def armed(reload: Command = RELOAD, revert_after: int = 120) -> ArmedRevert:
    """The armed revert (ops/armed.py) as the role's SshdConfig sets it up."""
    return sshd_config.armed_revert(reload, revert_after)

ADMIN = Session("admin", auth="publickey", key_type="ssh-ed25519", key_bits=256,
                known_host_key_types=("ssh-ed25519",))
ROOT = Session("root", auth="publickey", key_type="ssh-ed25519", key_bits=256,
               known_host_key_types=("ssh-ed25519",))
LOCAL = Session("root")

# the role's defaults as the op sees them (roles/sshd_hardening/defaults.yml)
PUBKEY_DEFAULT = ("sk-ssh-ed25519-cert-v01@openssh.com,ssh-ed25519-cert-v01@openssh.com,"
                  "sk-ssh-ed25519@openssh.com,ssh-ed25519,rsa-sha2-512-cert-v01@openssh.com,"
                  "rsa-sha2-512,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-256")
SETTINGS = {
    "PasswordAuthentication": "no",
    "PubkeyAuthentication": "yes",
    "AuthenticationMethods": "publickey",
    "PermitRootLogin": "no",
    "HostKeyAlgorithms": "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
    "PubkeyAcceptedAlgorithms": PUBKEY_DEFAULT,
    "RequiredRSASize": "3072",
}


def session(user: str = "admin", *, auth: str | None = "publickey",
            key: str = "ssh-ed25519", bits: int = 256,
            known: tuple[str, ...] = ("ssh-ed25519",)) -> Session:
    return Session(user, auth=auth, key_type=key, key_bits=bits, known_host_key_types=known)


# =========================================================================
# 6. facts: SshdState.process, UserGroups

UBUNTU_2204_PROBE = """\
version=OpenSSH_8.9p1 Ubuntu-3ubuntu0.13, OpenSSL 3.0.2 15 Mar 2022
alg.kex=curve25519-sha256
alg.kex=sntrup761x25519-sha512@openssh.com
alg.cipher=chacha20-poly1305@openssh.com
alg.cipher=aes128-ctr
alg.mac=hmac-sha2-256-etm@openssh.com
alg.key-sig=ssh-ed25519
alg.key-sig=rsa-sha2-512
hostkey.ed25519=256 SHA256:3q2+7w/edKey root@gpu-01 (ED25519)
hostkey.rsa=3072 SHA256:abcRsaKey root@gpu-01 (RSA)
hostkey.ecdsa=256 SHA256:ecdsaKey root@gpu-01 (ECDSA)
weak_moduli=41
"""


def test_sshd_state_parses_version_algorithms_keys_and_moduli() -> None:
    info = sshd_config.sshd_state().process(UBUNTU_2204_PROBE, 0)
    assert info.version == (8, 9)
    assert info.algorithms == {
        "kex": frozenset({"curve25519-sha256", "sntrup761x25519-sha512@openssh.com"}),
        "cipher": frozenset({"chacha20-poly1305@openssh.com", "aes128-ctr"}),
        "mac": frozenset({"hmac-sha2-256-etm@openssh.com"}),
        "key-sig": frozenset({"ssh-ed25519", "rsa-sha2-512"}),
    }
    assert info.supports("kex", "sntrup761x25519-sha512@openssh.com")
    assert not info.supports("kex", "sntrup761x25519-sha512")
    assert not info.supports("nonsense", "ssh-ed25519")
    assert info.host_keys == {
        "ed25519": HostKey("ed25519", 256, "SHA256:3q2+7w/edKey"),
        "rsa": HostKey("rsa", 3072, "SHA256:abcRsaKey"),
        "ecdsa": HostKey("ecdsa", 256, "SHA256:ecdsaKey"),
    }
    assert (info.weak_moduli, info.moduli_exists, info.rollback_pending) == (41, True, False)


@pytest.mark.parametrize(("line", "version"), [
    ("OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, OpenSSL 3.0.13 30 Jan 2024", (9, 6)),
    ("OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025", (9, 2)),
    ("OpenSSH_8.7p1, OpenSSL 3.2.2 4 Jun 2024", (8, 7)),
    ("OpenSSH_10.0p2 Debian-7, OpenSSL 3.5.1 1 Jul 2025", (10, 0)),
])
def test_sshd_state_version(line: str, version: tuple[int, int]) -> None:
    info = sshd_config.sshd_state().process(f"version={line}\n", 0)
    assert info.version == version
    # nothing else reported: no algorithms, no keys, no moduli file, nothing pending
    assert (info.algorithms, info.host_keys) == ({}, {})
    assert (info.weak_moduli, info.moduli_exists, info.rollback_pending) == (0, False, False)


def test_sshd_state_rollback_pending_padded_count_and_unreadable_keys() -> None:
    info = sshd_config.sshd_state().process(
        "version=OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025\n"
        "hostkey.rsa=\n"                                # ssh-keygen -l failed
        "hostkey.dsa=is not a public key file.\n"
        "hostkey.ed25519=256 SHA256:edKey no comment (ED25519)\n"
        "weak_moduli=       0\n"                        # BSD-style wc -l padding
        "rollback=pending\n", 0)
    assert info.host_keys == {"ed25519": HostKey("ed25519", 256, "SHA256:edKey")}
    assert (info.weak_moduli, info.moduli_exists, info.rollback_pending) == (0, True, True)


@pytest.mark.parametrize("output", [
    "",
    "version=sh: 1: ssh: not found\nalg.kex=curve25519-sha256\n",
    "version=\n",
])
def test_sshd_state_without_version_is_an_error(output: str) -> None:
    with pytest.raises(FactError, match=r"no OpenSSH version .*openssh-client"):
        sshd_config.sshd_state().process(output, 0)


def test_sshd_state_probe_runs_as_root() -> None:
    assert SshdState.sudo is True
    assert sshd_config.sshd_state() == sshd_config.sshd_state()   # one probe, gathered once


def _fake_bin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("old_query", [False, True], ids=["key-sig", "HostKeyAlgorithms"])
def test_sshd_state_probe_script_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            old_query: bool) -> None:
    """The probe's shell, run in /bin/sh against a fake /etc/ssh and fake ssh /
    ssh-keygen, parses back into the right SshdInfo (including the key-sig
    fallback for an `ssh -Q` that only knows HostKeyAlgorithms)."""
    etc = tmp_path / "etc" / "ssh"
    etc.mkdir(parents=True)
    for kind in ("ed25519", "rsa"):
        (etc / f"ssh_host_{kind}_key").write_text("private\n")
    (etc / "moduli").write_text(
        "#    $OpenBSD: moduli,v 1.33 2023/03/15 ...\n"
        "# Time Type Tests Tries Size Generator Modulus\n"
        "20230316071406 2 6 100 2047 2 C7A1\n"
        "20230316071406 2 6 100 2047 5 C7A3\n"
        "20230316071508 2 6 100 3071 2 D3B1\n"
        "20230316071700 5 6 100 4095 5 E1C1\n")
    rollback = tmp_path / "sshd-rollback"
    rollback.mkdir()
    monkeypatch.setattr(sshd_config, "ROLLBACK_DIR", str(rollback))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    keysig = "HostKeyAlgorithms" if old_query else "key-sig"
    _fake_bin(bindir, "ssh", f"""\
case "$1 $2" in
  "-V ") echo "OpenSSH_9.2p1 Debian-2+deb12u7, OpenSSL 3.0.17 1 Jul 2025" >&2 ;;
  "-Q kex") printf 'curve25519-sha256\\nsntrup761x25519-sha512\\n' ;;
  "-Q cipher") echo aes256-ctr ;;
  "-Q mac") echo hmac-sha2-512-etm@openssh.com ;;
  "-Q {keysig}") printf 'ssh-ed25519\\nrsa-sha2-256\\n' ;;
  *) echo "unknown query $2" >&2; exit 1 ;;
esac
""")
    _fake_bin(bindir, "ssh-keygen", """\
case "${3##*/}" in
  *ed25519*) echo "256 SHA256:edFingerprint root@gpu-01 (ED25519)" ;;
  *rsa*) echo "3072 SHA256:rsaFingerprint root@gpu-01 (RSA)" ;;
esac
""")
    script = sshd_config.sshd_state().command().shell().replace("/etc/ssh/", f"{etc}/")
    assert script.count(str(etc)) >= 3   # the paths really were redirected
    res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert res.returncode == 0, res.stderr
    info = sshd_config.sshd_state().process(res.stdout, res.returncode)
    assert info.version == (9, 2)
    assert info.algorithms == {
        "kex": frozenset({"curve25519-sha256", "sntrup761x25519-sha512"}),
        "cipher": frozenset({"aes256-ctr"}),
        "mac": frozenset({"hmac-sha2-512-etm@openssh.com"}),
        "key-sig": frozenset({"ssh-ed25519", "rsa-sha2-256"}),
    }
    assert info.host_keys == {"ed25519": HostKey("ed25519", 256, "SHA256:edFingerprint"),
                              "rsa": HostKey("rsa", 3072, "SHA256:rsaFingerprint")}
    assert (info.weak_moduli, info.moduli_exists, info.rollback_pending) == (2, True, True)


def test_user_groups() -> None:
    assert UserGroups("admin").command() == "id -Gn admin"
    assert UserGroups("bob smith").command() == "id -Gn 'bob smith'"
    assert UserGroups("admin").process("admin adm sudo docker\n", 0) == (
        "admin", "adm", "sudo", "docker")
    assert UserGroups("ghost").process("id: 'ghost': no such user\n", 1) is None
    assert UserGroups("admin").process("\n", 0) == ()


# =========================================================================
# 2. include_first




def test_include_already_first_is_left_alone() -> None:
    assert include_first(DEBIAN_MAIN, INCLUDE) == DEBIAN_MAIN
    spaced = DEBIAN_MAIN.replace(INCLUDE, "Include\t/etc/ssh/sshd_config.d/*.conf  ")
    assert include_first(spaced, INCLUDE) == spaced


def test_missing_include_goes_after_the_leading_comments() -> None:
    # RHEL 8 style: no Include at all
    assert include_first(RHEL8_MAIN_HEAD + RHEL8_MAIN_BODY, INCLUDE) == (
        RHEL8_MAIN_HEAD + INCLUDE + "\n" + RHEL8_MAIN_BODY)


def test_include_after_a_setting_is_moved_first_and_not_read_twice() -> None:
    text = ("# local config\n\nPort 2200\nPasswordAuthentication yes\n"
            f"{INCLUDE}\nX11Forwarding no\n")
    assert include_first(text, INCLUDE) == (
        f"# local config\n\n{INCLUDE}\nPort 2200\nPasswordAuthentication yes\n"
        "X11Forwarding no\n")


def test_include_first_edge_cases() -> None:
    assert include_first("", INCLUDE) == INCLUDE + "\n"
    assert include_first("# only comments\n", INCLUDE) == f"# only comments\n{INCLUDE}\n"
    assert include_first("Port 22", INCLUDE) == f"{INCLUDE}\nPort 22"
    # another Include (a different glob) is not ours: kept, ours goes before it
    other = "Include /etc/ssh/local.d/*.conf\n"
    assert include_first(other, INCLUDE) == f"{INCLUDE}\n{other}"


def test_a_duplicate_include_is_dropped_even_when_the_first_is_in_place() -> None:
    text = f"# c\n{INCLUDE}\nPort 22\n{INCLUDE}\n"
    assert include_first(text, INCLUDE) == f"# c\n{INCLUDE}\nPort 22\n"


# =========================================================================
# 4. preflight: lockout_risks / host_key_kept

def _with(**changes: str | None) -> dict[str, str]:
    out = dict(SETTINGS)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


RSA_2048 = session(key="ssh-rsa", bits=2048)
RSA_3072 = session(key="ssh-rsa", bits=3072)
ECDSA = session(key="ecdsa-sha2-nistp256", bits=256)
PASSWORD = Session("admin", auth="password", known_host_key_types=("ssh-ed25519",))

# (settings, session, groups of the user, host keys regenerated, expected reasons: prefixes)
RISKS: dict[str, tuple[Mapping[str, str], Session, tuple[str, ...] | None, set[str], list[str]]]
RISKS = {
    "defaults, ed25519 operator": (SETTINGS, ADMIN, None, set(), []),
    "AllowUsers lists the operator": (_with(AllowUsers="alice admin"), ADMIN, None, set(), []),
    "AllowUsers without the operator": (
        _with(AllowUsers="alice bob"), ADMIN, None, set(),
        ["AllowUsers alice bob: does not allow admin, the user gpuprov connects as"]),
    "AllowUsers wildcard matches": (_with(AllowUsers="alice ad*"), ADMIN, None, set(), []),
    "AllowUsers wildcard misses": (_with(AllowUsers="adm? root"), ADMIN, None, set(),
                                   ["AllowUsers adm? root: does not allow admin"]),
    "AllowUsers user@host pattern": (_with(AllowUsers="admin@10.0.0.*"), ADMIN, None, set(), []),
    "AllowUsers other user@host": (_with(AllowUsers="alice@10.0.0.5"), ADMIN, None, set(),
                                   ["AllowUsers alice@10.0.0.5: does not allow admin"]),
    "allowusers keyword in any case": (_with(allowusers="alice"), ADMIN, None, set(),
                                       ["AllowUsers alice: does not allow admin"]),
    "AllowGroups with a group of the operator": (
        _with(AllowGroups="sshusers"), ADMIN, ("admin", "sudo", "sshusers"), set(), []),
    "AllowGroups wildcard": (_with(AllowGroups="ssh*"), ADMIN, ("admin", "sshlogin"), set(), []),
    "AllowGroups without the operator's groups": (
        _with(AllowGroups="sshusers wheel"), ADMIN, ("admin", "sudo"), set(),
        ["AllowGroups sshusers wheel: admin is in none of them (groups: admin sudo)"]),
    "AllowGroups, user has no groups": (
        _with(AllowGroups="sshusers"), ADMIN, (), set(),
        ["AllowGroups sshusers: admin is in none of them (groups: none)"]),
    "AllowGroups, groups unknown": (
        _with(AllowGroups="sshusers"), ADMIN, None, set(),
        ["AllowGroups sshusers: cannot tell the groups of admin"]),
    "DenyUsers the operator": (_with(DenyUsers="guest admin"), ADMIN, None, set(),
                               ["DenyUsers guest admin: denies admin"]),
    "DenyUsers by wildcard": (_with(DenyUsers="ad*"), ADMIN, None, set(),
                              ["DenyUsers ad*: denies admin"]),
    "DenyUsers someone else": (_with(DenyUsers="guest*"), ADMIN, None, set(), []),
    "root operator, PermitRootLogin no": (
        SETTINGS, ROOT, None, set(), ["PermitRootLogin no: you connect as root"]),
    "root operator, forced-commands-only": (
        _with(PermitRootLogin="forced-commands-only"), ROOT, None, set(),
        ["PermitRootLogin forced-commands-only: you connect as root"]),
    "root operator, prohibit-password": (
        _with(PermitRootLogin="prohibit-password"), ROOT, None, set(), []),
    "root operator, PermitRootLogin unset (default prohibit-password)": (
        _with(PermitRootLogin=None), ROOT, None, set(), []),
    "non-root operator, PermitRootLogin no": (SETTINGS, ADMIN, None, set(), []),
    "RSA 2048 key, RequiredRSASize 3072": (
        SETTINGS, RSA_2048, None, set(),
        ["RequiredRSASize 3072: your RSA key has 2048 bits"]),
    "RSA 3072 key, RequiredRSASize 3072": (SETTINGS, RSA_3072, None, set(), []),
    "RSA 2048 key, no RequiredRSASize (OpenSSH < 9.1)": (
        _with(RequiredRSASize=None), RSA_2048, None, set(), []),
    "ecdsa key, default PubkeyAcceptedAlgorithms": (
        SETTINGS, ECDSA, None, set(),
        ["PubkeyAcceptedAlgorithms: your key is ecdsa-sha2-nistp256, which it does not accept "
         "(ecdsa-sha2-nistp256 missing)"]),
    "ecdsa key, PubkeyAcceptedAlgorithms unset": (
        _with(PubkeyAcceptedAlgorithms=None), ECDSA, None, set(), []),
    "RSA key, only ed25519 accepted": (
        _with(PubkeyAcceptedAlgorithms="ssh-ed25519"), RSA_3072, None, set(),
        ["PubkeyAcceptedAlgorithms: your key is ssh-rsa, which it does not accept "
         "(rsa-sha2-512 or rsa-sha2-256 missing)"]),
    "RSA key, rsa-sha2-256 enough": (
        _with(PubkeyAcceptedAlgorithms="ssh-ed25519,rsa-sha2-256"), RSA_3072, None, set(), []),
    "password session, AuthenticationMethods publickey": (
        SETTINGS, PASSWORD, None, set(),
        ["AuthenticationMethods publickey: you log in by password alone; install your SSH "
         "key for admin first"]),
    "password session, AuthenticationMethods any": (
        _with(AuthenticationMethods="any"), PASSWORD, None, set(), []),
    "known_hosts: only ecdsa": (
        SETTINGS, session(known=("ecdsa-sha2-nistp256",)), None, set(),
        ["host keys: your known_hosts trusts this host by ecdsa-sha2-nistp256"]),
    "known_hosts: only rsa, rsa regenerated": (
        SETTINGS, session(known=("ssh-rsa",)), None, {"rsa"},
        ["host keys: your known_hosts trusts this host by ssh-rsa"]),
    "known_hosts: only rsa, rsa kept": (SETTINGS, session(known=("ssh-rsa",)), None, set(), []),
    "known_hosts: only rsa, no rsa-sha2 offered": (
        _with(HostKeyAlgorithms="ssh-ed25519"), session(known=("ssh-rsa",)), None, set(),
        ["host keys: your known_hosts trusts this host by ssh-rsa"]),
    "known_hosts: ed25519": (SETTINGS, ADMIN, None, {"rsa"}, []),
    "known_hosts: ecdsa and rsa, rsa regenerated": (
        SETTINGS, session(known=("ecdsa-sha2-nistp256", "ssh-rsa")), None, {"rsa"},
        ["host keys: your known_hosts trusts this host by ecdsa-sha2-nistp256, ssh-rsa"]),
    "known_hosts: ecdsa and ed25519": (
        SETTINGS, session(known=("ecdsa-sha2-nistp256", "ssh-ed25519")), None, {"rsa"}, []),
    "known_hosts: nothing recorded": (SETTINGS, session(known=()), None, {"rsa"}, []),
    "several at once, in order": (
        _with(AllowUsers="alice", DenyUsers="root"), Session(
            "root", auth="publickey", key_type="ssh-rsa", key_bits=2048,
            known_host_key_types=("ecdsa-sha2-nistp256",)), None, set(),
        ["PermitRootLogin no", "AllowUsers alice", "DenyUsers root", "RequiredRSASize 3072",
         "host keys"]),
    "local session: nothing at stake": (
        _with(AllowUsers="alice", DenyUsers="root", AllowGroups="nobody"), LOCAL, None, {"rsa"},
        []),
}


@pytest.mark.parametrize("case", list(RISKS))
def test_lockout_risks(case: str) -> None:
    settings, who, groups, regenerated, expected = RISKS[case]
    risks = lockout_risks(settings, who, groups, regenerated)
    assert len(risks) == len(expected), risks
    for risk, prefix in zip(risks, expected, strict=True):
        assert risk.startswith(prefix), (risk, prefix)


def test_lockout_reasons_say_what_to_do() -> None:
    [root] = lockout_risks(SETTINGS, ROOT)
    assert "set sshd_permit_root_login: prohibit-password" in root
    [users] = lockout_risks(_with(AllowUsers="alice"), ADMIN)
    assert users.endswith("add it to ssh_allow_users")
    [keys] = lockout_risks(SETTINGS, session(known=("ssh-rsa",)), regenerated_host_keys={"rsa"})
    assert "ssh-keyscan -t ed25519" in keys
    [ecdsa] = lockout_risks(SETTINGS, ECDSA)
    assert "use an ed25519 key" in ecdsa


@pytest.mark.parametrize("changes", [
    {"AuthenticationMethods": "password"},
    {"AuthenticationMethods": "publickey,password"},   # key AND password: gpuprov has no password
    {"PubkeyAuthentication": "no", "AuthenticationMethods": "any"},
], ids=["password-only", "key-and-password", "pubkey-off"])
def test_settings_that_refuse_public_keys_are_risks(changes: dict[str, str]) -> None:
    assert lockout_risks(_with(**changes), ADMIN) != []


@pytest.mark.parametrize(("known", "offered", "regenerated", "kept"), [
    ("ssh-ed25519", ("ssh-ed25519", "rsa-sha2-512"), set(), True),
    ("ssh-ed25519", ("rsa-sha2-512",), set(), False),
    ("ssh-ed25519", ("ssh-ed25519",), {"ed25519"}, False),
    ("ssh-ed25519", ("ssh-ed25519",), {"rsa"}, True),
    ("ssh-rsa", ("ssh-ed25519", "rsa-sha2-256"), set(), True),
    ("ssh-rsa", ("ssh-ed25519", "rsa-sha2-512"), {"rsa"}, False),
    ("ssh-rsa", ("ssh-ed25519", "ssh-rsa"), set(), False),     # SHA-1 only: not offered
    ("ssh-rsa", ("ssh-ed25519",), set(), False),
    ("ecdsa-sha2-nistp256", ("ssh-ed25519", "rsa-sha2-512"), set(), False),
    ("ecdsa-sha2-nistp256", ("ecdsa-sha2-nistp256",), set(), True),
])
def test_host_key_kept(known: str, offered: tuple[str, ...], regenerated: set[str],
                       kept: bool) -> None:
    assert host_key_kept(known, offered, regenerated) is kept


# =========================================================================
# 3. the SshdConfig op's changes

DROPIN_TEXT = b"HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin no\n"
MAIN_OLD = b"# c\nPort 22\n" + INCLUDE.encode() + b"\n"
MAIN_NEW = b"# c\n" + INCLUDE.encode() + b"\nPort 22\n"


def key(kind: str, bits: int) -> HostKey:
    return HostKey(kind, bits, f"SHA256:{kind}{bits}")


CONVERGED_KEYS = {"ed25519": key("ed25519", 256), "rsa": key("rsa", 4096)}


def sshd_info(host_keys: Mapping[str, HostKey] = CONVERGED_KEYS, weak: int = 0,
              rollback: bool = False) -> SshdInfo:
    return SshdInfo((9, 6), {}, dict(host_keys), weak, True, rollback)


def make_op(settings: Mapping[str, str] = SETTINGS, who: Session = ADMIN,
            files: tuple[SshdFile, ...] = (SshdFile(DROPIN, DROPIN_TEXT),),
            **kwargs: Any) -> SshdConfig:
    kwargs.setdefault("rsa_host_key_bits", 4096)
    return SshdConfig(files, settings, session=who, reload=RELOAD, **kwargs)


def op_facts(info: SshdInfo, current: Mapping[str, bytes | None] | None = None,
             groups: Mapping[str, tuple[str, ...] | None] | None = None) -> dict[Any, Any]:
    """FileState(path, sudo=True) for each file (None: absent), SshdState, UserGroups;
    SshdConfigFiles: sshd_config including the drop-in; SshdEffective: `sshd -T`
    not answering (None), so only the files count (the effective config has
    its own tests, test_sshd_conflicts.py)."""
    facts: dict[Any, Any] = {sshd_config.sshd_state(): info}
    main = (current or {}).get(SSHD_CONFIG) or MAIN_NEW
    dropin = (current or {}).get(DROPIN)
    facts[SshdConfigFiles()] = (
        ConfigFile(SSHD_CONFIG, "root", "root", "0644", tuple(main.decode().splitlines())),
        *([] if dropin is None else [ConfigFile(DROPIN, "root", "root", "0644",
                                                tuple(dropin.decode().splitlines()))]))
    for user in ("admin", "root"):
        facts[SshdEffective(user)] = None
    for path, content in (current or {}).items():
        facts[FileState(path, sudo=True)] = None if content is None else file_info(content)
    for user, value in (groups or {}).items():
        facts[UserGroups(user)] = value
    return facts


def plan(op: SshdConfig, facts: Mapping[Any, Any]) -> list[Change]:
    missing = [f.key for f in op.facts() if f not in facts]
    assert not missing, f"op asks for facts the test did not give: {missing}"
    return op.plan(FactView(dict(facts)))


def expected_rollback() -> list[Step]:
    return [Step(Command.script(f"[ ! -f {ROLLBACK}/restore ] || sh {ROLLBACK}/restore"))]


def test_op_asks_for_its_files_as_root_and_the_sshd_probe() -> None:
    op = make_op(files=(SshdFile(DROPIN, DROPIN_TEXT), SshdFile(SSHD_CONFIG, MAIN_NEW, "0600")))
    # and (issue 14) the config files as sshd reads them and `sshd -T` for this login
    assert op.facts() == [FileState(DROPIN, sudo=True), FileState(SSHD_CONFIG, sudo=True),
                          sshd_config.sshd_state(), SshdConfigFiles(), SshdEffective("admin")]
    # AllowGroups: the operator's groups too, but only when an SSH login is at stake
    assert make_op(_with(AllowGroups="sshusers")).facts()[-1] == UserGroups("admin")
    assert UserGroups("root") not in make_op(_with(AllowGroups="sshusers"), LOCAL).facts()


def test_converged_host_has_no_change() -> None:
    facts = op_facts(sshd_info(), {DROPIN: DROPIN_TEXT})
    assert plan(make_op(), facts) == []
    # a larger RSA key than asked for is fine too
    bigger = sshd_info({"ed25519": key("ed25519", 256), "rsa": key("rsa", 8192)})
    assert plan(make_op(), op_facts(bigger, {DROPIN: DROPIN_TEXT})) == []
    # no RSA host key wanted: an existing one is left alone, a missing one not generated
    assert plan(make_op(rsa_host_key_bits=0),
                op_facts(sshd_info({"ed25519": key("ed25519", 256)}), {DROPIN: DROPIN_TEXT})) == []
    # weak moduli are left alone when asked to
    assert plan(make_op(strong_moduli=False),
                op_facts(sshd_info(weak=40), {DROPIN: DROPIN_TEXT})) == []


def _fresh_plan(**kwargs: Any) -> tuple[SshdConfig, list[Change]]:
    """A stock host: no drop-in, Include not first, RSA 3072, 41 weak moduli."""
    op = make_op(files=(SshdFile(DROPIN, DROPIN_TEXT), SshdFile(SSHD_CONFIG, MAIN_NEW)),
                 **kwargs)
    info = sshd_info({"ed25519": key("ed25519", 256), "rsa": key("rsa", 3072),
                      "ecdsa": key("ecdsa", 256)}, weak=41)
    return op, plan(op, op_facts(info, {DROPIN: None, SSHD_CONFIG: MAIN_OLD}))


def test_fresh_host_changes_in_one_armed_transaction() -> None:
    op, changes = _fresh_plan()
    assert [(c.resource, c.action) for c in changes] == [
        (f"file {DROPIN}", "create"),
        (f"file {SSHD_CONFIG}", "update"),
        ("host key rsa", "update"),
        (f"file {MODULI}", "update"),
        ("service sshd", "reload"),
    ]
    assert changes[2].summary == ("regenerate the rsa host key (3072 -> 4096 bits; its "
                                  "fingerprint changes)")
    assert changes[3].summary == "remove 41 group-exchange moduli under 3071 bits"
    assert changes[4].summary == (
        "check the whole config (sshd -t), reload sshd, confirm a NEW login + sudo, then "
        "cancel the automatic revert (armed: 120s)")

    # the FIRST step of the first change saves every file about to change and arms the revert
    saved = [DROPIN, SSHD_CONFIG, RSA_KEY, RSA_KEY + ".pub", MODULI]
    arm = changes[0].steps[0]
    assert arm == Step(Command.script(armed().prepare_script(saved)))
    assert arm.sudo and arm.stdin is None and not arm.new_connection
    # ... and only there: no other change arms again
    prepares = [c.resource for c in changes for s in c.steps
                if "GPUPROV_RESTORE" in s.command.shell()]
    assert prepares == [f"file {DROPIN}"]
    # after it, the drop-in's own atomic write (its content as stdin)
    assert changes[0].steps[1].stdin == DROPIN_TEXT
    assert changes[1].steps[0].stdin == MAIN_NEW

    # every change, the final one included, rolls back the same way
    for change in changes:
        assert change.rollback == expected_rollback(), change.resource

    keygen = changes[2].steps
    assert [s.command.display() for s in keygen] == [
        f"rm -f {RSA_KEY}.gpuprov-new {RSA_KEY}.gpuprov-new.pub && "
        f"ssh-keygen -q -t rsa -b 4096 -N '' -C '' -f {RSA_KEY}.gpuprov-new && "
        f"mv -f {RSA_KEY}.gpuprov-new.pub {RSA_KEY}.pub && mv -f {RSA_KEY}.gpuprov-new {RSA_KEY}"]
    assert [s.command.display() for s in changes[3].steps] == [
        f"awk '$1 ~ /^#/ || NF < 7 || $5 >= 3071' {MODULI} > {MODULI}.gpuprov-new && "
        f"chmod 0644 {MODULI}.gpuprov-new && mv -f {MODULI}.gpuprov-new {MODULI}"]

    final = changes[-1]
    assert final.steps == [
        Step(Command.script("mkdir -p /run/sshd && chmod 0755 /run/sshd && "
                            "$(command -v sshd || echo /usr/sbin/sshd) -t")),
        Step(RELOAD),
        Step(Command("true"), new_connection=True),
        Step(Command.script(armed().finish_script())),
    ]
    assert final.steps[2].sudo is True     # the new login proves sudo works too
    assert [s.new_connection for s in final.steps] == [False, False, True, False]
    # the config files and `sshd -T` are stale too (issue 14: re-read after the change)
    assert final.invalidates == (SshdState, SshdConfigFiles, SshdEffective,
                                 *(FileState.at(p) for p in saved))
    assert all(SshdState in (c.invalidates or ()) for c in changes[2:])


def test_revert_delay_and_pending_rollback_are_shown() -> None:
    op = make_op(revert_after=45)
    [write, final] = plan(op, op_facts(sshd_info(), {DROPIN: None}))
    assert write.steps[0] == Step(Command.script(
        armed(RELOAD, 45).prepare_script([DROPIN])))
    assert "--on-active=45 " in write.steps[0].command.shell()
    assert "sleep 45;" in write.steps[0].command.shell()
    assert final.summary.endswith("(armed: 45s)")
    # an earlier change never confirmed: undone alone, then the op is planned again
    [undo] = plan(op, op_facts(sshd_info(rollback=True), {DROPIN: None}))
    assert undo.replan and undo.steps == armed(RELOAD, 45).rollback()


def test_missing_ed25519_host_key_is_generated_and_saved() -> None:
    # known by its RSA key: a NEW ed25519 key cannot be the one known_hosts trusts
    op = make_op(who=session(known=("ssh-rsa",)))
    info = sshd_info({"rsa": key("rsa", 4096)})
    changes = plan(op, op_facts(info, {DROPIN: DROPIN_TEXT}))
    assert [(c.resource, c.action, c.summary) for c in changes] == [
        ("host key ed25519", "create", "generate the ed25519 host key"),
        ("service sshd", "reload", changes[1].summary),
    ]
    saved = [ED_KEY, ED_KEY + ".pub"]
    assert changes[0].steps[0] == Step(Command.script(
        armed().prepare_script(saved)))
    assert changes[0].steps[1].command.display() == (
        f"rm -f {ED_KEY}.gpuprov-new {ED_KEY}.gpuprov-new.pub && "
        f"ssh-keygen -q -t ed25519 -N '' -C '' -f {ED_KEY}.gpuprov-new && "
        f"mv -f {ED_KEY}.gpuprov-new.pub {ED_KEY}.pub && mv -f {ED_KEY}.gpuprov-new {ED_KEY}")
    # an ed25519 key that exists is never replaced
    assert plan(op, op_facts(sshd_info(), {DROPIN: DROPIN_TEXT})) == []


def test_missing_rsa_host_key_is_generated() -> None:
    changes = plan(make_op(), op_facts(sshd_info({"ed25519": key("ed25519", 256)}),
                                       {DROPIN: DROPIN_TEXT}))
    assert [(c.resource, c.action, c.summary) for c in changes[:1]] == [
        ("host key rsa", "create", "generate the rsa host key")]
    assert "ssh-keygen -q -t rsa -b 4096 " in changes[0].steps[1].command.display()


def test_only_a_mode_change_is_still_transactional() -> None:
    facts = op_facts(sshd_info(), {})
    facts[FileState(DROPIN, sudo=True)] = file_info(DROPIN_TEXT, mode="0600")
    changes = plan(make_op(), facts)
    assert [c.resource for c in changes] == [f"file {DROPIN}", "service sshd"]
    assert [without_upload_check(s.command.display())
            for s in changes[0].steps][1:] == [f"chmod 0644 -- {DROPIN}"]
    assert "GPUPROV_RESTORE" in changes[0].steps[0].command.shell()


def test_a_risky_plan_is_refused_before_any_change() -> None:
    op = make_op(_with(AllowUsers="alice bob"))
    with pytest.raises(SshdLockout) as info:
        plan(op, op_facts(sshd_info(), {DROPIN: None}))
    message = str(info.value)
    assert message.startswith("refusing to change sshd: the new settings would lock out admin "
                              "(the user gpuprov connects as); nothing was changed:\n  - "
                              "AllowUsers alice bob: does not allow admin")
    assert "roles/sshd_hardening/defaults.yml" in message   # the hint


def test_preflight_reads_the_users_groups_and_the_regenerated_keys() -> None:
    op = make_op(_with(AllowGroups="sshusers"))
    facts = op_facts(sshd_info(), {DROPIN: None}, groups={"admin": ("admin", "sudo")})
    with pytest.raises(SshdLockout, match=r"AllowGroups sshusers: admin is in none of them"):
        plan(op, facts)
    facts[UserGroups("admin")] = ("admin", "sshusers")
    assert plan(op, facts) != []
    facts[UserGroups("admin")] = None   # no such user on the host
    with pytest.raises(SshdLockout, match=r"cannot tell the groups of admin"):
        plan(op, facts)

    # the operator knows the host only by its RSA key, which this plan regenerates
    rsa_only = session(known=("ssh-rsa",))
    small_rsa = sshd_info({"ed25519": key("ed25519", 256), "rsa": key("rsa", 2048)})
    with pytest.raises(SshdLockout, match=r"host keys: your known_hosts trusts this host by "
                                          r"ssh-rsa"):
        plan(make_op(who=rsa_only), op_facts(small_rsa, {DROPIN: DROPIN_TEXT}))
    # ... while an RSA key of the right size is kept, so the same operator is fine
    assert plan(make_op(who=rsa_only), op_facts(sshd_info(), {DROPIN: None})) != []


def test_a_newly_generated_ed25519_key_is_not_the_known_one() -> None:
    who = session(known=("ssh-ed25519", "ssh-rsa"))
    info = sshd_info({"rsa": key("rsa", 2048)})   # no ed25519 key; RSA regenerated
    with pytest.raises(SshdLockout, match=r"host keys"):
        plan(make_op(who=who), op_facts(info, {DROPIN: DROPIN_TEXT}))


def test_preflight_false_skips_the_refusal() -> None:
    op = make_op(_with(AllowUsers="alice"), ROOT, preflight=False)
    changes = plan(op, op_facts(sshd_info(), {DROPIN: None}))
    assert [c.resource for c in changes] == [f"file {DROPIN}", "service sshd"]
    assert "GPUPROV_RESTORE" in changes[0].steps[0].command.shell()   # the revert still protects


def test_nothing_to_change_means_nothing_to_refuse() -> None:
    op = make_op(_with(AllowUsers="alice"))
    assert plan(op, op_facts(sshd_info(), {DROPIN: DROPIN_TEXT})) == []


def test_moduli_filter_keeps_comments_and_strong_groups(tmp_path: Path) -> None:
    moduli = tmp_path / "moduli"
    text = ("#    $OpenBSD: moduli,v 1.33 2023/03/15 ...\n"
            "# Time Type Tests Tries Size Generator Modulus\n"
            "20230316071406 2 6 100 2047 2 C7A1\n"
            "20230316071508 2 6 100 3071 2 D3B1\n"
            "20230316071407 2 6 100 3070 5 C7A3\n"
            "20230316071700 5 6 100 4095 5 E1C1\n")
    moduli.write_text(text)
    _, changes = _fresh_plan()
    [step] = changes[3].steps
    script = step.command.shell().replace(MODULI, str(moduli))
    subprocess.run(["/bin/sh", "-c", script], check=True, timeout=30)
    assert moduli.read_text() == ("#    $OpenBSD: moduli,v 1.33 2023/03/15 ...\n"
                                  "# Time Type Tests Tries Size Generator Modulus\n"
                                  "20230316071508 2 6 100 3071 2 D3B1\n"
                                  "20230316071700 5 6 100 4095 5 E1C1\n")
    assert oct(moduli.stat().st_mode & 0o777) == "0o644"


# =========================================================================
# 5. the host-side scripts, for real, in /bin/sh

PR_SET_CHILD_SUBREAPER = 36
NO_SYSTEMD_MARK = "/run/systemd/system"
#: where the armed revert's boot hook goes (ops/armed.py): moved under the fake root
BOOT_HOOK_DIRS = re.compile(r"/etc/(?=systemd/system|init\.d|rc[2-5]\.d)")


def _set_subreaper(on: bool) -> bool:
    """Make this process adopt orphans, so a killed timer can be reaped here: PID 1 of
    a container may never reap, and `kill -0` on a zombie still succeeds."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[2])


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None and stat[2] == pgid:
            members.append(int(entry))
    return members


class ShHost:
    """A fake host root in a temp dir: /etc/ssh files, the rollback dir, a log of
    reloads, and (optionally) fake systemd tools. Scripts built after the
    fixture ran use the temp ROLLBACK_DIR; the /run/systemd/system test in them
    is pointed at a temp path, so the branch taken never depends on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etc = root / "etc" / "ssh"
        (self.etc / "sshd_config.d").mkdir(parents=True)
        self.rollback = root / "state" / "sshd-rollback"
        self.rollback.parent.mkdir(parents=True)
        self.log = root / "reload.log"
        self.systemd_log = root / "systemd.log"
        self.bin = root / "bin"
        self.bin.mkdir()
        self.systemd_dir = root / "run" / "systemd" / "system"   # created only for systemd tests
        # where the boot hook goes: /etc/init.d and rc2.d-rc3.d as on Debian, and
        # /etc/systemd/system (used only when systemd_dir exists)
        for sub in ("init.d", "rc2.d", "rc3.d", "systemd/system"):
            (root / "etc" / sub).mkdir(parents=True)
        _fake_bin(self.bin, "logger", f'echo "logger $*" >> {self.root}/logger.log\n')
        self.reload = Command("sh", "-c", f"echo reloaded >> {self.log}")
        self.pgids: set[int] = set()
        self.config = self.etc / "sshd_config"
        self.dropin = self.etc / "sshd_config.d" / "00-gpuprov.conf"
        self.rsa_key = self.etc / "ssh_host_rsa_key"
        self.rsa_pub = self.etc / "ssh_host_rsa_key.pub"
        self.config.write_bytes(b"# stock\nInclude /etc/ssh/sshd_config.d/*.conf\n"
                                b"PasswordAuthentication yes\n")
        self.config.chmod(0o600)
        self.rsa_key.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\nold\x00\xff\n")
        self.rsa_key.chmod(0o600)
        self.rsa_pub.write_bytes(b"ssh-rsa AAAAold root@gpu-01\n")
        self.saved = [str(self.config), str(self.dropin), str(self.rsa_key), str(self.rsa_pub)]
        for path in (self.config, self.rsa_key, self.rsa_pub):   # as shipped, long ago
            os.utime(path, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
        self.originals = self.snapshot()

    def snapshot(self) -> dict[str, tuple[bytes, int, int] | None]:
        """Content, mode and mtime (cp -p keeps them) of each saved path; None: absent."""
        out: dict[str, tuple[bytes, int, int] | None] = {}
        for path in map(Path, self.saved):
            out[str(path)] = (path.read_bytes(), path.stat().st_mode & 0o7777,
                              path.stat().st_mtime_ns) if path.exists() else None
        return out

    def write_new_config(self) -> None:
        """What the change's later steps do: new drop-in, edited main file, new key."""
        self.dropin.write_bytes(b"PasswordAuthentication no\n")
        self.config.write_bytes(b"Include /etc/ssh/sshd_config.d/*.conf\n# stock\n")
        self.rsa_key.write_bytes(b"new key\n")
        self.rsa_pub.write_bytes(b"ssh-rsa AAAAnew\n")

    def systemd(self, *, timer_active: bool = False) -> None:
        """Pretend this host runs systemd: the marker dir plus logging fakes."""
        self.systemd_dir.mkdir(parents=True)
        _fake_bin(self.bin, "systemd-run", f'echo "systemd-run $*" >> {self.systemd_log}\n')
        active = "exit 0" if timer_active else "exit 3"
        _fake_bin(self.bin, "systemctl", f"""\
echo "systemctl $*" >> {self.systemd_log}
case "$*" in *is-active*) {active} ;; esac
exit 0
""")

    def adapt(self, script: str) -> str:
        assert NO_SYSTEMD_MARK in script
        return self.place(script.replace(NO_SYSTEMD_MARK, str(self.systemd_dir)))

    def place(self, script: str) -> str:
        """The boot hook's paths moved under the fake root."""
        script = BOOT_HOOK_DIRS.sub(f"{self.root}/etc/", script)
        # never this machine's own /etc
        assert not re.search(r"(?<!/host)/etc/(systemd|init\.d|rc)", script), script
        return script

    def restore(self) -> str:
        return self.adapt(armed(self.reload).restore_script(self.saved))

    def prepare(self, revert_after: int = 300) -> str:
        return self.adapt(armed(self.reload, revert_after).prepare_script(self.saved))

    def finish(self) -> str:
        return self.adapt(armed(self.reload).finish_script())

    def sh(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["/bin/sh", "-c", script, "sh", *args], capture_output=True,
                             text=True, timeout=30,
                             env={**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"})
        self.track()
        return res

    def sh_file(self, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sh(f'exec sh "{path}" "$@"', *args)

    def track(self) -> None:
        """Remember the timer's process group (for assertions and teardown), once
        its leader has become one (setsid runs just after prepare returns)."""
        for pid_file in self.root.rglob("timer.pid"):
            text = pid_file.read_text().strip()
            if text.isdigit() and int(text) not in self.pgids:
                pid = int(text)
                self.pgids.add(pid)
                self.wait_for(lambda pid=pid: (s := _proc_stat(pid)) is None or s[2] == pid, 5)

    def timer_pid(self) -> int:
        return int((self.rollback / "timer.pid").read_text())

    def timer_alive(self, pgid: int) -> bool:
        self.reap()
        # A zombie of ours counts as alive until reaped (by the next call): one
        # that died between reap() and this look still answers `kill -0`.
        me = os.getpid()
        return any((s := _proc_stat(p)) is not None and (s[0] not in "ZX" or s[1] == me)
                   for p in _group_members(pgid))

    def reap(self) -> None:
        """Collect our own timers' zombies (adopted: we are their subreaper)."""
        for pgid in self.pgids:
            for pid in _group_members(pgid):
                stat = _proc_stat(pid)
                if stat is not None and stat[0] == "Z" and stat[1] == os.getpid():
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)

    def kill_timers(self) -> None:
        self.track()
        for pgid in self.pgids:
            # a pid stays reserved while it names a live process group: only ours here
            if _group_members(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(self.timer_alive(g) for g in self.pgids):
            time.sleep(0.05)
        self.reap()

    def reloads(self) -> int:
        return self.log.read_text().count("reloaded\n") if self.log.exists() else 0

    def wait_for(self, condition: Callable[[], bool], seconds: float = 10) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShHost]:
    root = tmp_path / "host"
    root.mkdir()
    fake = ShHost(root)
    monkeypatch.setattr(sshd_config, "ROLLBACK_DIR", str(fake.rollback))
    reaper = _set_subreaper(True)
    try:
        yield fake
    finally:
        fake.kill_timers()
        if reaper:
            _set_subreaper(False)


def test_scripts_use_the_patched_rollback_dir(host: ShHost) -> None:
    # guards every test below: nothing may touch the real /var/lib/gpuprov
    for script in (host.restore(), host.prepare(), host.finish()):
        assert ROLLBACK not in script
        assert f"d={host.rollback}\n" in script


def test_prepare_saves_files_and_arms_a_background_timer(host: ShHost) -> None:
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    d = host.rollback
    assert sorted(p.name for p in d.iterdir()) == ["0", "1.absent", "2", "3", "restore",
                                                   "timer.pid"]
    assert (d / "0").read_bytes() == host.originals[str(host.config)][0]   # type: ignore[index]
    assert (d / "0").stat().st_mode & 0o777 == 0o600                      # cp -p
    assert (d / "2").read_bytes() == host.rsa_key.read_bytes()
    assert (d / "restore").read_text() == host.restore()
    assert d.stat().st_mode & 0o777 == 0o700
    assert not Path(f"{d}.new").exists()
    pgid = host.timer_pid()
    assert host.timer_alive(pgid)
    # a sleeping restore, in its own session (survives the connection's end)
    assert os.getsid(pgid) == pgid
    assert "--from-timer" in Path(f"/proc/{pgid}/cmdline").read_bytes().decode(errors="replace")
    assert host.reloads() == 0
    assert not host.systemd_log.exists()      # no systemd: no systemd-run


def test_finish_cancels_the_timer_and_removes_the_save(host: ShHost) -> None:
    assert host.sh(host.prepare()).returncode == 0
    pgid = host.timer_pid()
    assert host.timer_alive(pgid)
    host.write_new_config()
    new = host.snapshot()
    res = host.sh(host.finish())
    assert res.returncode == 0, res.stderr
    assert host.wait_for(lambda: not host.timer_alive(pgid), 5), "timer still running"
    assert not host.rollback.exists() and not Path(f"{host.rollback}.done").exists()
    assert host.snapshot() == new          # the new config is kept
    assert host.reloads() == 0


def test_finish_after_the_revert_ran_fails_clearly(host: ShHost) -> None:
    res = host.sh(host.finish())
    assert res.returncode == 1
    assert "the automatic revert already ran" in res.stderr


def test_restore_puts_back_exact_bytes_and_is_idempotent(host: ShHost) -> None:
    assert host.sh(host.prepare()).returncode == 0
    pgid = host.timer_pid()
    host.write_new_config()
    assert host.dropin.exists()
    res = host.sh_file(host.rollback / "restore")          # what the change's rollback runs
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals              # bytes and modes
    assert not host.dropin.exists()                        # it was absent before
    assert host.reloads() == 1
    assert not host.rollback.exists() and not Path(f"{host.rollback}.restoring").exists()
    assert host.wait_for(lambda: not host.timer_alive(pgid), 5), "timer not cancelled"
    assert "sshd: previous config restored" in (host.root / "logger.log").read_text()
    leftovers = sorted(p.name for p in host.etc.rglob("*gpuprov-restore*"))
    assert leftovers == []
    # second run: nothing to do, no second reload
    host.dropin.write_bytes(b"written after the restore\n")
    res = host.sh(host.restore())
    assert res.returncode == 0
    assert host.reloads() == 1
    assert host.dropin.read_bytes() == b"written after the restore\n"


def test_the_rollback_step_runs_the_saved_restore_only_when_there_is_one(host: ShHost) -> None:
    changes = plan(make_op(), op_facts(sshd_info(), {DROPIN: None}))
    [rollback] = changes[0].rollback
    assert rollback.command.shell() == (f"[ ! -f {host.rollback}/restore ] || "
                                        f"sh {host.rollback}/restore")
    assert host.sh(rollback.command.shell()).returncode == 0      # nothing saved: no-op
    assert host.sh(host.prepare()).returncode == 0
    host.write_new_config()
    assert host.sh(rollback.command.shell()).returncode == 0
    assert host.snapshot() == host.originals and host.reloads() == 1


def test_the_timer_fires_and_restores(host: ShHost) -> None:
    assert host.sh(host.prepare(revert_after=1)).returncode == 0
    host.write_new_config()
    assert host.wait_for(lambda: host.reloads() == 1 and not host.rollback.exists()
                         and not Path(f"{host.rollback}.restoring").exists(), 15), \
        "the automatic revert did not run within 15 s"
    assert host.snapshot() == host.originals
    assert host.reloads() == 1
    # the confirmation came too late: finish says so and fails
    res = host.sh(host.finish())
    assert res.returncode == 1 and "the old config is back" in res.stderr


def test_prepare_with_a_pending_timer_undoes_that_change_first(host: ShHost) -> None:
    # Issue 15: a controller killed between the reload and the confirmation
    # left its revert pending. The next run holds the host's run lock, so no
    # live run owns that change: it is undone now, as its timer would (this
    # used to refuse until the timer had run, failing every apply for minutes).
    assert host.sh(host.prepare()).returncode == 0
    old_pgid = host.timer_pid()
    host.write_new_config()
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert host.wait_for(lambda: not host.timer_alive(old_pgid), 5), "old timer not stopped"
    assert host.reloads() == 1                         # the earlier change undone ...
    assert host.snapshot() == host.originals
    d = host.rollback                                  # ... and the originals saved again
    assert (d / "0").read_bytes() == host.originals[str(host.config)][0]  # type: ignore[index]
    new_pgid = host.timer_pid()
    assert new_pgid != old_pgid and host.timer_alive(new_pgid)


def test_prepare_finishes_a_restore_its_timer_began(host: ShHost) -> None:
    # the old timer was stopped mid-restore (the save already moved aside)
    assert host.sh(host.prepare()).returncode == 0
    old_pgid = host.timer_pid()
    host.write_new_config()
    os.killpg(old_pgid, signal.SIGKILL)
    host.rollback.rename(f"{host.rollback}.restoring")
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert host.reloads() == 1 and host.snapshot() == host.originals
    assert not Path(f"{host.rollback}.restoring").exists()
    assert host.timer_alive(host.timer_pid())


def test_prepare_with_a_stale_save_restores_it_first(host: ShHost) -> None:
    # an earlier change was interrupted and its timer died with a reboot
    assert host.sh(host.prepare()).returncode == 0
    old_pgid = host.timer_pid()
    host.write_new_config()
    os.killpg(old_pgid, signal.SIGKILL)
    assert host.wait_for(lambda: not host.timer_alive(old_pgid), 5)
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert host.reloads() == 1                         # the stale save was restored ...
    assert host.snapshot() == host.originals
    d = host.rollback                                  # ... and the originals saved again
    assert (d / "0").read_bytes() == host.originals[str(host.config)][0]  # type: ignore[index]
    assert (d / "1.absent").exists() and not (d / "1").exists()
    new_pgid = host.timer_pid()
    assert new_pgid != old_pgid and host.timer_alive(new_pgid)


def test_a_leftover_restoring_dir_does_not_restore_stale_files(host: ShHost) -> None:
    stale = Path(f"{host.rollback}.restoring")
    stale.mkdir()
    (stale / "0").write_bytes(b"STALE: not this change's sshd_config\n")
    assert host.sh(host.prepare()).returncode == 0
    host.write_new_config()
    assert host.sh_file(host.rollback / "restore").returncode == 0
    assert host.snapshot() == host.originals


def test_systemd_branch_arms_and_cancels_a_transient_timer(host: ShHost) -> None:
    host.systemd()
    res = host.sh(host.prepare(revert_after=120))
    assert res.returncode == 0, res.stderr
    assert not (host.rollback / "timer.pid").exists()     # no background sleep
    assert host.systemd_log.read_text().splitlines() == [
        "systemctl reset-failed gpuprov-sshd-revert.timer gpuprov-sshd-revert.service",
        # on time: systemd's default AccuracySec (1 min) would delay the revert
        "systemd-run --quiet --unit=gpuprov-sshd-revert --on-active=120 "
        f"--timer-property=AccuracySec=1s /bin/sh {host.rollback}/restore --from-timer",
    ]
    host.systemd_log.unlink()
    assert host.sh(host.finish()).returncode == 0
    assert host.systemd_log.read_text().splitlines() == [
        "systemctl stop gpuprov-sshd-revert.timer"]
    assert not host.rollback.exists()


def test_systemd_branch_restore_from_timer_does_not_stop_itself(host: ShHost) -> None:
    host.systemd()
    assert host.sh(host.prepare()).returncode == 0
    host.write_new_config()
    host.systemd_log.unlink()
    res = host.sh_file(host.rollback / "restore", "--from-timer")
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and host.reloads() == 1
    assert not host.systemd_log.exists()    # stopping its own unit would kill the restore
    # from the rollback instead: the pending timer is stopped
    assert host.sh(host.prepare()).returncode == 0
    host.systemd_log.unlink()
    assert host.sh_file(host.rollback / "restore").returncode == 0
    assert host.systemd_log.read_text().splitlines() == [
        "systemctl stop gpuprov-sshd-revert.timer"]


def test_systemd_branch_undoes_a_change_whose_timer_unit_is_active(host: ShHost) -> None:
    host.systemd(timer_active=True)
    assert host.sh(host.prepare()).returncode == 0
    host.write_new_config()
    host.systemd_log.unlink()
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and host.reloads() == 1
    log = host.systemd_log.read_text().splitlines()
    # the pending timer stopped before the restore, then a new one armed
    assert log[0] == "systemctl stop gpuprov-sshd-revert.timer"
    assert log[-1].startswith("systemd-run --quiet --unit=gpuprov-sshd-revert ")


def test_restore_script_quotes_paths(host: ShHost) -> None:
    odd = host.etc / "odd name's.conf"
    odd.write_bytes(b"before\n")
    script = host.adapt(armed(host.reload).restore_script([str(odd)]))
    prepare = host.adapt(armed(host.reload, 300).prepare_script([str(odd)]))
    assert host.sh(prepare).returncode == 0
    odd.write_bytes(b"after\n")
    assert host.sh(script).returncode == 0
    assert odd.read_bytes() == b"before\n"


def test_saved_copy_is_byte_exact(host: ShHost) -> None:
    blob = bytes(range(256)) * 4 + b"\n\n no newline at end"
    host.rsa_key.write_bytes(blob)
    assert host.sh(host.prepare()).returncode == 0
    assert hashlib.sha256((host.rollback / "2").read_bytes()).digest() == \
        hashlib.sha256(blob).digest()
    host.rsa_key.write_bytes(b"x")
    assert host.sh_file(host.rollback / "restore").returncode == 0
    assert host.rsa_key.read_bytes() == blob


def test_prepare_script_runs_under_set_e_and_embeds_restore_verbatim() -> None:
    restore = armed().restore_script(["/etc/ssh/sshd_config"])
    script = armed().prepare_script(["/etc/ssh/sshd_config"])
    assert script.startswith("set -e\n")
    # quoted heredoc: the restore script's $d, $1, $(...) are not expanded at save time
    assert "<<'GPUPROV_RESTORE'\n" + restore + "GPUPROV_RESTORE\n" in script
    assert re.search(r"^put 0 /etc/ssh/sshd_config$", restore, re.M)
    assert "systemctl reload-or-restart ssh\n" in restore
