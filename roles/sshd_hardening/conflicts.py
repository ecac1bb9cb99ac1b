"""Which line of sshd's config wins over gpuprov's drop-in, and what `sshd -T`
says is in effect.

sshd keeps the FIRST value it reads for a keyword, so a file that sorts
before the drop-in (`00-aaa.conf`), or a Match block that applies to the
login, overrides it silently; the drop-in's own content says nothing about
that. Here the config files (facts.sshd.SshdConfigFiles) are read in
sshd's order: Include lines expanded in place (globs sorted, relative paths
under /etc/ssh), a Match block ending at the end of its file, an Include
inside a Match inheriting it. Match criteria are evaluated against the
login's user and addresses; what cannot be told from here (Group, RDomain)
counts as applying, so a doubtful override is shown rather than hidden.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from gpuprov.facts.sshd import EffectiveSshd

#: keywords whose lines add up instead of the first one winning (servconf.c)
ACCUMULATE = frozenset({"allowusers", "allowgroups", "denyusers", "denygroups"})
#: sshd -T prints the first name of a value that has several
_ALIASES = {"without-password": "prohibit-password"}
_TIME_KEYWORDS = frozenset({"logingracetime", "clientaliveinterval"})
_TIME = re.compile(r"(\d+)([smhdw]?)", re.I)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DEPTH = 16   # sshd's own Include depth limit


@dataclass(frozen=True)
class Login:
    """What Match blocks are evaluated against (addresses None: unknown)."""

    user: str
    addr: str | None = None
    laddr: str | None = None
    lport: str | None = None

    @classmethod
    def of(cls, user: str, effective: EffectiveSshd | None) -> Login:
        if effective is None:
            return cls(user)
        return cls(effective.user, effective.addr, effective.laddr, effective.lport)


@dataclass(frozen=True)
class ConfigLine:
    path: str
    number: int
    keyword: str            # lower case
    value: str
    text: str
    #: the Match line this one is under; None: global
    match: str | None


@dataclass(frozen=True)
class Conflict:
    """A line that sets one of gpuprov's keywords to another value, and wins."""

    path: str
    number: int
    text: str
    keyword: str            # as gpuprov's drop-in spells it
    wanted: str

    def where(self) -> str:
        return f"{self.path}:{self.number}"

    def describe(self, dropin: str) -> str:
        return (f"{self.where()}: `{self.text.strip()}` overrides `{self.keyword} {self.wanted}` "
                f"of {dropin} (sshd keeps the first value it reads)")


def _split(line: str) -> tuple[str, str] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = re.split(r"[\s=]+", text, maxsplit=1)
    return parts[0].lower(), parts[1].strip() if len(parts) > 1 else ""


def _glob(pattern: str, paths: Sequence[str]) -> list[str]:
    """glob(3) over known paths: wildcards never cross a '/'; sorted, as sshd has them."""
    want = pattern.split("/")
    return sorted(p for p in paths if len(p.split("/")) == len(want)
                  and all(fnmatch.fnmatchcase(a, b) for a, b in zip(p.split("/"), want,
                                                                   strict=True)))


def read_order(files: Mapping[str, Sequence[str]], main: str) -> list[ConfigLine]:
    """Every setting line of the config in the order sshd reads it."""
    out: list[ConfigLine] = []

    def walk(path: str, match: str | None, depth: int) -> None:
        current = match
        for number, line in enumerate(files.get(path, ()), start=1):
            parsed = _split(line)
            if parsed is None:
                continue
            keyword, value = parsed
            if keyword == "match":
                current = line.strip()
            elif keyword == "include":
                if depth >= _MAX_DEPTH:
                    continue
                for pattern in value.split():
                    full = pattern if pattern.startswith("/") else posixpath.join("/etc/ssh",
                                                                                   pattern)
                    for found in _glob(full, list(files)):
                        walk(found, current, depth + 1)
            else:
                out.append(ConfigLine(path, number, keyword, value, line, current))

    walk(main, None, 0)
    return out


def _pattern_list(patterns: str, value: str | None, match: object) -> bool | None:
    """sshd's match_pattern_list: a negated hit refuses, else any hit accepts."""
    if value is None:
        return None
    hit = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if match(value, pattern.lstrip("!")):   # type: ignore[operator]
            if negated:
                return False
            hit = True
    return hit


def _address(value: str, pattern: str) -> bool:
    if "/" in pattern:
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(value, pattern)


def match_applies(match_line: str, login: Login) -> bool:
    """Whether a `Match ...` line applies to the login (unknown criteria: yes)."""
    words = match_line.split()[1:]
    if [w.lower() for w in words] == ["all"]:
        return True
    for name, patterns in zip(words[::2], words[1::2], strict=False):
        name = name.lower()
        if name == "user":
            ok = _pattern_list(patterns, login.user, fnmatch.fnmatchcase)
        elif name in ("address", "host"):   # UseDNS no: the host is its address
            ok = _pattern_list(patterns, login.addr, _address)
        elif name == "localaddress":
            ok = _pattern_list(patterns, login.laddr, _address)
        elif name == "localport":
            ok = None if login.lport is None else login.lport in patterns.split(",")
        else:
            ok = None
        if ok is False:
            return False
    return True


def normalized(keyword: str, value: str) -> list[str]:
    """A value as sshd compares it: words, case-folded, one name per alias, times in seconds."""
    words = [_ALIASES.get(w, w) for w in re.split(r"[\s,]+", value.strip().casefold()) if w]
    if keyword.lower() in _TIME_KEYWORDS and len(words) == 1:
        total = 0
        for number, unit in _TIME.findall(words[0]):
            total += int(number) * _UNITS[unit.lower()]
        if _TIME.sub("", words[0]) == "":
            words = [str(total)]
    return words


def conflicts(lines: Sequence[ConfigLine], settings: Mapping[str, str], dropin: str,
              login: Login) -> list[Conflict]:
    """The lines that win over the drop-in's settings for this login."""
    found: list[Conflict] = []
    for keyword, wanted in settings.items():
        key = keyword.lower()
        want = normalized(key, wanted)
        mine = [ln for ln in lines if ln.keyword == key]
        for ln in _winners(mine, key, login):
            if ln.path != dropin and normalized(key, ln.value) != want:
                found.append(Conflict(ln.path, ln.number, ln.text, keyword, wanted))
    return sorted(found, key=lambda c: (c.path, c.number))


def _winners(lines: Sequence[ConfigLine], key: str, login: Login) -> Iterator[ConfigLine]:
    glob = [ln for ln in lines if ln.match is None]
    if key in ACCUMULATE:
        yield from glob
    elif glob:
        yield glob[0]
    # a Match block that applies overrides the global value: its first line wins
    yield from [ln for ln in lines if ln.match is not None
                and match_applies(ln.match, login)][:1]


def mismatches(effective: EffectiveSshd, settings: Mapping[str, str]
               ) -> list[tuple[str, str, str]]:
    """(keyword, wanted, what sshd -T shows) for each setting not in effect; a
    keyword sshd -T does not print (an alias, a keyword of another build) is
    not compared."""
    out = []
    for keyword, wanted in settings.items():
        got = effective.values.get(keyword.lower())
        if got is not None and normalized(keyword, got) != normalized(keyword, wanted):
            out.append((keyword, wanted, got))
    return out


def commented(lines: Sequence[str], numbers: set[int], dropin: str) -> str:
    """The file with the given lines commented out, each saying why."""
    out = [f"#{ln}  # gpuprov (sshd_conflicts: comment): overrode {dropin}"
           if n in numbers else ln for n, ln in enumerate(lines, start=1)]
    return "\n".join(out) + "\n"
