"""sshd facts: what the installed OpenSSH knows, its host keys and moduli,
whether an earlier armed sshd change (ops/armed.py) is still waiting for its
revert, and a user's groups (for AllowGroups)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactError

HOST_KEY_TYPES = ("ed25519", "rsa", "ecdsa", "dsa")

_VERSION = re.compile(r"OpenSSH_(\d+)\.(\d+)")


@dataclass(frozen=True)
class HostKey:
    type: str       # ed25519 | rsa | ecdsa | dsa (the file name's part)
    bits: int
    fingerprint: str


@dataclass(frozen=True)
class SshdInfo:
    version: tuple[int, int]
    #: `ssh -Q` of the same OpenSSH build: kex, cipher, mac, key-sig
    algorithms: dict[str, frozenset[str]] = field(hash=False)
    host_keys: dict[str, HostKey] = field(hash=False)
    weak_moduli: int
    moduli_exists: bool
    #: an earlier change's saved files are still on the host
    rollback_pending: bool

    def supports(self, kind: str, name: str) -> bool:
        return name in self.algorithms.get(kind, frozenset())


@dataclass(frozen=True)
class SshdState(Fact[SshdInfo]):
    """One probe for everything an sshd policy compares (root: host keys).

    moduli_min_bits: group-exchange moduli below this many bits count as weak;
    rollback_dir: where an armed sshd change (ops/armed.py) keeps the files it
    replaced until confirmed (a leftover there is reported as pending).
    Both are the policy's (the sshd_hardening role's), not the probe's.
    """

    moduli_min_bits: int
    rollback_dir: str
    sudo: ClassVar[bool] = True

    def command(self) -> Command:
        return Command.script(
            'echo "version=$(ssh -V 2>&1 | head -n1)"\n'
            "for q in kex cipher mac key-sig; do\n"
            "  for a in $(ssh -Q $q 2>/dev/null || { [ $q = key-sig ] && "
            "ssh -Q HostKeyAlgorithms; }); do echo \"alg.$q=$a\"; done\n"
            "done\n"
            f"for t in {' '.join(HOST_KEY_TYPES)}; do\n"
            "  f=/etc/ssh/ssh_host_${t}_key\n"
            '  [ -f "$f" ] && echo "hostkey.$t=$(ssh-keygen -l -f "$f" 2>/dev/null)"\n'
            "done\n"
            "if [ -f /etc/ssh/moduli ]; then\n"
            f"  echo \"weak_moduli=$(awk '$1 !~ /^#/ && NF >= 7 && "
            f"$5 < {int(self.moduli_min_bits)}' /etc/ssh/moduli | wc -l)\"\n"
            "fi\n"
            f"[ -d {Command(self.rollback_dir).shell()} ] && echo rollback=pending\n"
            "true")

    def process(self, output: str, exit_code: int) -> SshdInfo:
        version: tuple[int, int] | None = None
        algorithms: dict[str, set[str]] = {}
        host_keys: dict[str, HostKey] = {}
        weak, moduli, rollback = 0, False, False
        for line in output.splitlines():
            key, _, value = line.partition("=")
            if key == "version":
                match = _VERSION.search(value)
                if match:
                    version = (int(match[1]), int(match[2]))
            elif key.startswith("alg."):
                algorithms.setdefault(key[4:], set()).add(value.strip())
            elif key.startswith("hostkey."):
                parts = value.split()
                if len(parts) >= 2 and parts[0].isdigit():
                    host_keys[key[8:]] = HostKey(key[8:], int(parts[0]), parts[1])
            elif key == "weak_moduli":
                moduli, weak = True, int(value.strip() or 0)
            elif key == "rollback":
                rollback = True
        if version is None:
            raise FactError("no OpenSSH version from `ssh -V` (is openssh-client installed?)")
        return SshdInfo(version, {k: frozenset(v) for k, v in algorithms.items()}, host_keys,
                        weak, moduli, rollback)


@dataclass(frozen=True)
class UserGroups(Fact["tuple[str, ...] | None"]):
    """`id -Gn USER`: the user's groups; None when the user does not exist."""

    user: str

    def command(self) -> str:
        return f"id -Gn {shlex.quote(self.user)}"

    def process(self, output: str, exit_code: int) -> tuple[str, ...] | None:
        if exit_code != 0:
            return None
        return tuple(output.split())
