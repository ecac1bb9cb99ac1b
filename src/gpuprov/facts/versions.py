"""Version order of Debian and rpm packages, computed on the controller.

Ports of dpkg's verrevcmp and rpm's rpmvercmp: roles compare driver
branches and ops tell an upgrade from a downgrade without asking the host.
"""

from __future__ import annotations

import re

__all__ = ["deb_version_compare", "rpm_version_compare"]


def _deb_order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit() or not c:
        return 0
    return ord(c) if c.isalpha() else ord(c) + 256


def _deb_verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _deb_order(a[i] if i < len(a) else "")
            bc = _deb_order(b[j] if j < len(b) else "")
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        m = re.match(r"0*(\d*)", a[i:])
        n = re.match(r"0*(\d*)", b[j:])
        assert m and n
        i, j = i + m.end(), j + n.end()
        da, db = m[1], n[1]
        if len(da) != len(db):
            return len(da) - len(db)
        if da != db:
            return -1 if da < db else 1
    return 0


def _split_deb(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or 0), upstream, revision


def deb_version_compare(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version a sorts before, equal to, after b."""
    ea, ua, ra = _split_deb(a)
    eb, ub, rb = _split_deb(b)
    if ea != eb:
        return ea - eb
    return _deb_verrevcmp(ua, ub) or _deb_verrevcmp(ra, rb)


def _rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    ta = re.findall(r"~|\^|\d+|[A-Za-z]+", a)
    tb = re.findall(r"~|\^|\d+|[A-Za-z]+", b)
    for k in range(max(len(ta), len(tb))):
        x = ta[k] if k < len(ta) else None
        y = tb[k] if k < len(tb) else None
        if x == "~" or y == "~":          # tilde sorts before anything, even the end
            if x != y:
                return -1 if x == "~" else 1
            continue
        if x == "^" or y == "^":          # caret sorts after the end, before anything else
            if x == y:
                continue
            if x is None:
                return -1
            if y is None:
                return 1
            return -1 if x == "^" else 1
        if x is None or y is None:
            return -1 if x is None else 1
        if x.isdigit() != y.isdigit():    # a numeric segment is newer than an alpha one
            return 1 if x.isdigit() else -1
        if x.isdigit():
            x, y = x.lstrip("0"), y.lstrip("0")
            if len(x) != len(y):
                return len(x) - len(y)
        if x != y:
            return -1 if x < y else 1
    return 0


def rpm_version_compare(a: str, b: str) -> int:
    """<0, 0, >0 for rpm [epoch:]version[-release] strings."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
        version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
        return int(epoch or 0), version, release
    ea, va, ra = split(a)
    eb, vb, rb = split(b)
    if ea != eb:
        return ea - eb
    return _rpmvercmp(va, vb) or _rpmvercmp(ra, rb)
