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


# ------------------------------------------------------------------ the effective config

#: what sshd evaluates Match blocks against when there is no SSH login to go by
#: (the local connector): a connection from the host itself
_NO_LOGIN = "127.0.0.1 0 127.0.0.1 22"


@dataclass(frozen=True)
class EffectiveSshd:
    """`sshd -T -C ...` for one login: keyword (lower case) -> value; a keyword
    sshd prints on several lines (AllowUsers, HostKey) has them joined by a space."""

    values: dict[str, str] = field(hash=False)
    #: what the Match blocks were evaluated against: user, addr, laddr, lport
    user: str
    addr: str
    laddr: str
    lport: str


@dataclass(frozen=True)
class SshdEffective(Fact["EffectiveSshd | None"]):
    """The configuration sshd would use for a login of `user` from where the
    controller's own login comes from ($SSH_CONNECTION of the login that runs
    this probe: sudo drops it from the environment, so it is read from the
    nearest ancestor process that has it). None when `sshd -T` fails (a config
    that does not parse: the files tell the rest)."""

    user: str
    sudo: ClassVar[bool] = True

    def command(self) -> Command:
        user = Command(self.user).shell()
        # The ancestors' pids by the shell's own `read` (no process per ancestor),
        # then ONE sed over their environments, nearest first: the first match wins.
        return Command.script(
            "p=$$; envs=\n"
            "while [ \"${p:-1}\" -gt 1 ] 2>/dev/null; do\n"
            "  envs=\"$envs /proc/$p/environ\"; q=\n"
            "  while read -r k v; do [ \"$k\" = PPid: ] && q=$v; done "
            "<\"/proc/$p/status\" 2>/dev/null\n"
            "  p=$q\n"
            "done\n"
            "c=$(sed -z -n '/^SSH_CONNECTION=/{s///p;q}' $envs 2>/dev/null | tr '\\0' ' ')\n"
            f"set -- ${{c:-{_NO_LOGIN}}}\n"
            f'echo "@@connection {self.user} $1 $3 $4"\n'
            "$(command -v sshd || echo /usr/sbin/sshd) -T "
            f'-C "user="{user}",host=$1,addr=$1,laddr=$3,lport=$4"')

    def process(self, output: str, exit_code: int) -> EffectiveSshd | None:
        lines = output.splitlines()
        conn = lines[0].split()[1:] if lines and lines[0].startswith("@@connection ") else []
        if exit_code != 0 or len(conn) != 4:
            return None
        values: dict[str, list[str]] = {}
        for line in lines[1:]:
            key, _, value = line.strip().partition(" ")
            if key:
                values.setdefault(key.lower(), []).append(value.strip())
        return EffectiveSshd({k: " ".join(v) for k, v in values.items()}, *conn)


@dataclass(frozen=True)
class ConfigFile:
    """One file of sshd's config as the host has it: lines without their newlines."""

    path: str
    owner: str
    group: str
    mode: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class SshdConfigFiles(Fact["tuple[ConfigFile, ...]"]):
    """`main` and every file its Include lines name (recursively, each glob
    expanded by the host's shell), with owner and mode: what sshd reads, for
    the controller to find which line sets a keyword. Relative Include paths
    are relative to /etc/ssh, as sshd has them."""

    main: str = "/etc/ssh/sshd_config"
    sudo: ClassVar[bool] = True

    def command(self) -> Command:
        return Command.script(
            "seen='|'\n"
            "dump() {\n"
            '  [ -f "$1" ] || return 0\n'
            '  case $seen in *"|$1|"*) return 0;; esac\n'
            '  seen="$seen$1|"\n'
            "  printf '@@file %s %s\\n' \"$(stat -c '%U %G %a' \"$1\")\" \"$1\"\n"
            # every line marked, so no content can pass for a header; the echo
            # ends a last line that has no newline (its empty line is not marked)
            "  sed 's/^/|/' \"$1\"; echo\n"
            # unquoted on purpose: the host's shell expands the globs, sorted like sshd's glob(3)
            "  for f in $(awk 'tolower($1) == \"include\" { for (i = 2; i <= NF; i++) "
            "print ($i ~ /^\\// ? $i : \"/etc/ssh/\" $i) }' \"$1\"); do dump \"$f\"; done\n"
            "}\n"
            f"dump {Command(self.main).shell()}\n"
            "true")

    def process(self, output: str, exit_code: int) -> tuple[ConfigFile, ...]:
        files: list[ConfigFile] = []
        head: list[str] | None = None
        lines: list[str] = []
        for line in [*output.splitlines(), "@@file"]:
            if line.startswith("@@file"):
                if head is not None:
                    files.append(ConfigFile(head[3], head[0], head[1], head[2].zfill(4),
                                            tuple(lines)))
                head, lines = line.split(" ", 4)[1:], []
                if len(head) not in (0, 4):
                    raise FactError(f"sshd config files: bad header {line!r}")
            elif line.startswith("|") and head is not None:
                lines.append(line[1:])
        return tuple(files)
