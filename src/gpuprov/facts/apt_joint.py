"""The joint command of AptCandidates (facts/apt.py): every packages op of a
play asks its own candidates, and each asking alone started `dpkg
--print-architecture` plus one dpkg-query per package to decide whether
`apt-cache policy` is needed at all. Together they start each once: one
dpkg-query over every package any of them may skip apt-cache for, then per
fact the shell test on that answer, and `apt-cache policy` only where it is
needed (each call loads apt's whole package cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from gpuprov.command import Arg, Command, Raw
from gpuprov.facts.base import Fact, Joint

#: the line before each member's part of a joint answer (apt-cache never prints "@@")
MARK = "@@gpuprov-apt-candidates"

# $s: "name arch want flag state version" lines of the packages asked; settled
# NAME PATTERN: is NAME installed (native or all) at a version PATTERN matches?
_QUERY = ("a=$(dpkg --print-architecture 2>/dev/null); "
          "s=$(dpkg-query -W -f='${Package} ${Architecture} ${Status} ${Version}\\n' --")
_SETTLED = (
    "2>/dev/null); settled() { printf '%s\\n' \"$s\" | { "
    "while read -r name arch _want _flag state version; do "
    "[ \"$name\" = \"$1\" ] || continue; "
    "[ \"$arch\" = \"$a\" ] || [ \"$arch\" = all ] || continue; "
    "case $state in installed|triggers-pending|triggers-awaited) ;; *) continue ;; esac; "
    "case $version in $2) exit 0 ;; esac; done; exit 1; }; };")


class Candidates(Protocol):
    names: tuple[str, ...]
    unless_installed: tuple[tuple[str, str], ...]


class AptCandidatesJoint(Joint):
    name: ClassVar[str] = "apt candidates"

    def command(self, members: Sequence[Fact[Any]]) -> Command:
        asked: list[Candidates] = list(members)  # type: ignore[arg-type]
        args: list[Arg] = [Raw("command -v apt-cache >/dev/null 2>&1 || exit 0;")]
        settle = sorted({name for m in asked for name, _ in m.unless_installed})
        if settle:
            args += [Raw(_QUERY), *settle, Raw(_SETTLED)]
        for i, member in enumerate(asked):
            if len(asked) > 1:
                args.append(Raw(f"echo '{MARK} {i}';"))
            args += _one(member)
        return Command(*args)

    def split(self, members: Sequence[Fact[Any]], output: str,
              exit_code: int) -> list[tuple[str, int]]:
        parts = [""] * len(members)
        current = None
        for line in output.splitlines(keepends=True):
            head, _, index = line.rstrip("\n").partition(" ")
            if head == MARK and index.isdigit() and int(index) < len(parts):
                current = int(index)
            elif current is not None:
                parts[current] += line
        # no apt-cache (not a Debian host): every member's answer is empty
        return [(part, 0) for part in parts]


def _one(member: Candidates) -> list[Arg]:
    if not member.names:
        return [Raw("true;")]
    policy: list[Arg] = [Raw("apt-cache policy --"), *member.names]
    if not member.unless_installed:
        return [*policy, Raw(";")]
    tests: list[Arg] = []
    for name, pattern in member.unless_installed:
        tests += [Raw("&&") if tests else Raw("if"), Raw("settled"), name, pattern]
    return [*tests, Raw("; then echo settled; else"), *policy, Raw("; fi;")]


APT_CANDIDATES = AptCandidatesJoint()
