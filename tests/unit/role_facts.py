"""Canned fact values for the role tests (test_role_*.py): small builders, so
each test spells out only the part of a host that matters to it, plus the
exact command strings the ops are expected to produce."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gpuprov.engine.context import RoleFailed, TaskContext
from gpuprov.engine.roles import load_role
from gpuprov.facts.apt import AptPolicy, AptVersion, DebPackage
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.dnf import RpmPackage
from gpuprov.facts.files import FileInfo
from gpuprov.facts.services import ServiceInfo
from gpuprov.facts.system import SystemFacts
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars
from gpuprov.ops.base import Op
from tests.unit.role_harness import ROLES, RolePlan
from tests.unit.shell_helpers import without_upload_check

DEBIAN_FAMILY = ("ubuntu2204", "ubuntu2404", "debian12")
ALL_DISTROS = (*DEBIAN_FAMILY, "rhel9")

APT = "env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l apt-get"
#: dnf as gpuprov runs it: a silent repository gives up (ops/dnf.py)
DNF = "dnf -y --setopt=timeout=15 --setopt=retries=1"
CONFOPTS = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
#: what every apt-get that downloads carries (ops/apt_commands.py): a silent repo gives up
NET = ("-o Acquire::http::Timeout=15 -o Acquire::https::Timeout=15 -o Acquire::Retries=1")


def apt_install(*args: str, timeout: int = 120, downgrade: bool = False) -> str:
    extra = " --allow-downgrades" if downgrade else ""
    return (f"{APT} install -y -o DPkg::Lock::Timeout={timeout} {NET} "
            f"--no-install-recommends{extra} "
            f"{CONFOPTS} -- {' '.join(args)}")


def apt_update(timeout: int = 120) -> str:
    return (f"{APT} update -y -o DPkg::Lock::Timeout={timeout} {NET} "
            "-o APT::Update::Error-Mode=any")


def apt_source_update(list_path: str, timeout: int = 120) -> str:
    return (f"{apt_update(timeout)} -o Dir::Etc::sourcelist={list_path} "
            "-o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0")


def apt_mark(action: str, *names: str, timeout: int = 120) -> str:
    return f"apt-mark -o DPkg::Lock::Timeout={timeout} {action} -- {' '.join(names)}"


def write_cmd(path: str, *, mode: str = "0644", mkdir: bool = False,
              validate: str | None = None, owner: str = "root:root") -> str:
    """atomic.write_command's shell for `path`, as displayed, without the upload check."""
    directory = path.rsplit("/", 1)[0]
    check = ""
    if validate:
        check = (f"{{ {validate.replace('{}', chr(34) + '$t' + chr(34))} || "
                 f"{{ echo 'gpuprov: validation failed, {path} left unchanged' >&2; exit 1; }}; "
                 "} >&2 && ")
    return ((f"mkdir -p {directory} && " if mkdir else "")
            + "t= && trap 'rm -f \"$t\"' EXIT && trap 'exit 143' HUP INT TERM PIPE && "
            f"t=$(mktemp -u {directory}/.gpuprov-XXXXXX) "
            "&& (umask 077 && set -C && : >\"$t\") && cat >\"$t\" && "
            f"chown -h {owner} \"$t\" && "
            f"chmod {mode} \"$t\" && {check}mv -fT \"$t\" {path} && trap - EXIT")


def commands(plan: RolePlan) -> list[str]:
    """RolePlan.commands with the upload digest of file writes left out."""
    return [without_upload_check(c) for c in plan.commands]


# ---------------------------------------------------------------- signing key

# Not a real OpenPGP key: apt.dearmor only checks the armor (base64 + CRC-24),
# and the ops compare and write the bytes, never parse the packets.
KEY_BYTES = b"\x99\x01\x0d\x04gpuprov-test-key" + bytes(range(64))


def _crc24(data: bytes) -> int:
    """RFC 4880, 6.1 (written again here rather than imported from the code under test)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armored(data: bytes = KEY_BYTES) -> str:
    b64 = base64.b64encode(data).decode()
    body = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode()
    return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: gpuprov unit tests\n\n"
            f"{body}\n={crc}\n-----END PGP PUBLIC KEY BLOCK-----\n")


ARMORED_KEY = armored()

# A real ed25519 public key made with `gpg --quick-gen-key` for these tests;
# gpg reports the fingerprint below for it.
REAL_KEY = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxVWbRYJKwYBBAHaRw8BAQdAE++Z6sVFNZs4z85CfFtbQOE7KDtJ9nCpYVKS
pTyyY720I2dwdXByb3YgdGVzdCA8dGVzdEBncHVwcm92LmludmFsaWQ+iJAEExYI
ADgWIQSQglqAX26YP4ffV2TRq2X5ShUaeAUCaxVWbQIbAwULCQgHAgYVCgkICwIE
FgIDAQIeAQIXgAAKCRDRq2X5ShUaeL0WAQCfxpJLNP+Wj4ZY5I0SLDj9+3cyePmX
OQiMHHbU1/WNswEA83hqH5SBQ1qHcSx/zxFkAcdFLbEdBEoIlPutS7K0dwc=
=8xsH
-----END PGP PUBLIC KEY BLOCK-----
"""
REAL_FPR = "90825A805F6E983F87DF5764D1AB65F94A151A78"
KEY_SHA256 = hashlib.sha256(KEY_BYTES).hexdigest()            # dearmored (apt keyrings)
ARMORED_SHA256 = hashlib.sha256(ARMORED_KEY.encode()).hexdigest()  # as is (rpm-gpg files)


def make_key_file(directory: Path) -> str:
    """An armored key in a file on the controller, as a role var's `key:` names it."""
    path = directory / "repo-key.asc"
    path.write_text(ARMORED_KEY)
    return str(path)


# ---------------------------------------------------------------- fact values

def file_info(content: bytes | str, mode: str = "0644") -> FileInfo:
    data = content.encode() if isinstance(content, str) else content
    return FileInfo(type="file", owner="root", group="root", mode=mode, size=len(data), uid=0,
                    gid=0, sha256=hashlib.sha256(data).hexdigest(), content=data)


def deb(name: str, version: str, *, held: bool = False, status: str = "installed",
        arch: str = "amd64") -> DebPackage:
    return DebPackage(name, version, arch, "hold" if held else "install", status)


def dpkg(*packages: DebPackage) -> dict[str, DebPackage]:
    return {p.name: p for p in packages}


def held(*packages: DebPackage) -> frozenset[str]:
    return frozenset(p.name for p in packages if p.want == "hold")


def policy(name: str, *versions: str, installed: str | None = None) -> AptPolicy:
    """apt-cache policy of `name`: the first version is the candidate."""
    table = tuple(AptVersion(v, 500, (), v == installed) for v in versions)
    return AptPolicy(name, installed, versions[0] if versions else None, table)


def policies(*rows: AptPolicy) -> dict[str, AptPolicy]:
    return {p.name: p for p in rows}


def rpm(name: str, version: str, release: str, epoch: int = 0,
        arch: str = "x86_64") -> RpmPackage:
    return RpmPackage(name, epoch, version, release, arch)


def rpms(*rows: RpmPackage) -> dict[str, tuple[RpmPackage, ...]]:
    out: dict[str, tuple[RpmPackage, ...]] = {}
    for row in rows:
        out[row.name] = (*out.get(row.name, ()), row)
    return out


def service_info(name: str, *, running: bool = True, enabled: bool = True,
                 exists: bool = True) -> ServiceInfo:
    if not exists:
        return ServiceInfo(name, "systemd", False, False, None, "not-found", "inactive", "dead",
                           "")
    return ServiceInfo(name, "systemd", True, running, enabled, "loaded",
                       "active" if running else "inactive", "running" if running else "dead",
                       "enabled" if enabled else "disabled")


# ---------------------------------------------------------------- refusals

def ops_until_failure(role: str, system: SystemFacts, facts: Mapping[Fact[Any], Any], *,
                      vars: Mapping[str, Any] | None = None
                      ) -> tuple[list[Op], RoleFailed]:
    """Run a role's tasks() like role_harness.plan_role, but keep the ops it
    yielded before it raised RoleFailed: a refusal must come before any op."""
    loaded = load_role(role, ROLES / role)
    host = Host("gpu-01", vars=dict(vars or {}))
    ctx = TaskContext(host, build_host_vars(host, role_defaults=loaded.defaults, role=role),
                      system, FactView(dict(facts)), role, loaded.path)
    yielded: list[Op] = []
    with pytest.raises(RoleFailed) as info:
        for op in loaded.tasks(ctx):
            yielded.append(op)
    return yielded, info.value
