"""Host patterns (--limit, a play's hosts:) with Ansible's meaning.

A pattern is terms joined by ',' (or ':' when there is no comma, so IPv6
addresses can be listed with commas). A term is a host name, a group name,
`all` or `*`, a glob (fnmatch, matched against hosts and groups), or `~regex`.
`&term` intersects, `!term` excludes. As in Ansible, terms are applied in
the order: plain terms (union), then `&` terms, then `!` terms, whatever the
order written; a pattern that starts with `&` or `!` starts from `all`.

Unlike Ansible (which warns), a term that matches nothing is an error: a
typo in --limit must not silently run against fewer hosts.

Patterns need only host names and group membership (the `Hosts` protocol),
so this module knows nothing of how an inventory is loaded; inventory.py
imports it, never the other way round.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from gpuprov.errors import InventoryError
from gpuprov.model.yamlfile import close_names

__all__ = ["GroupMembers", "Hosts", "match_term", "select", "split_pattern"]

H = TypeVar("H", covariant=True)


class GroupMembers(Protocol):
    """A group as patterns see it: the hosts listed in it and its child groups."""

    @property
    def hosts(self) -> Sequence[str]: ...
    @property
    def children(self) -> Sequence[str]: ...


class Hosts(Protocol[H]):
    """What a pattern selects from: hosts by name (in inventory order), groups by name."""

    @property
    def hosts(self) -> Mapping[str, H]: ...
    @property
    def groups(self) -> Mapping[str, GroupMembers]: ...


def split_pattern(pattern: str) -> list[str]:
    """Terms of a pattern, in written order, blanks dropped."""
    sep = "," if "," in pattern else ":"
    return [t.strip() for t in pattern.split(sep) if t.strip()]


def select(inventory: Hosts[H], pattern: str, allow_empty: bool = False) -> list[H]:
    """Hosts of `inventory` that `pattern` selects, in inventory order.

    Raises InventoryError when a term matches nothing (naming the term and
    close names) or, unless allow_empty, when the whole pattern selects no host.
    """
    terms = split_pattern(pattern)
    if not terms:
        raise InventoryError(f"empty host pattern {pattern!r}",
                             hint="use a host, a group, 'all', or e.g. 'lab:!ws-03'")
    unions = [t for t in terms if t[0] not in "&!"]
    intersections = [t[1:] for t in terms if t[0] == "&"]
    exclusions = [t[1:] for t in terms if t[0] == "!"]
    if not unions:
        unions = ["all"]
    chosen: set[str] = set()
    for term in unions:
        chosen |= match_term(inventory, term)
    for term in intersections:
        chosen &= match_term(inventory, term)
    for term in exclusions:
        chosen -= match_term(inventory, term)
    hosts = [h for name, h in inventory.hosts.items() if name in chosen]
    if not hosts and not allow_empty:
        raise InventoryError(f"host pattern {pattern!r} selects no hosts",
                             hint="the intersections/exclusions removed every host"
                             if intersections or exclusions else "the matched groups have no hosts")
    return hosts


def match_term(inventory: Hosts[object], term: str) -> set[str]:
    """Names of the hosts one term (without its &/! prefix) matches."""
    if not term:
        raise InventoryError("empty term in host pattern (a lone '&' or '!')")
    if term in ("all", "*"):
        return set(inventory.hosts)
    if term in inventory.hosts:
        return {term}
    if term in inventory.groups:
        return _group_hosts(inventory, term)
    if term.startswith("~"):
        try:
            rx = re.compile(term[1:])
        except re.error as e:
            raise InventoryError(f"bad regular expression in host pattern {term!r}: {e}") from None
        matches = lambda name: rx.search(name) is not None  # noqa: E731
    elif any(c in term for c in "*?["):
        matches = lambda name: fnmatch.fnmatchcase(name, term)  # noqa: E731
    else:
        matches = None
    found: set[str] = set()
    if matches is not None:
        for group in inventory.groups:
            if matches(group):
                found |= _group_hosts(inventory, group)
        found |= {h for h in inventory.hosts if matches(h)}
    if not found and not _matches_a_group(inventory, term, matches):
        names = list(inventory.hosts) + [g for g in inventory.groups if g != "ungrouped"]
        near = close_names(term, names)
        raise InventoryError(
            f"host pattern {term!r} matches no host or group in the inventory",
            hint=("did you mean " + ", ".join(repr(n) for n in near) + "?") if near else
            "known groups: " + ", ".join(g for g in inventory.groups if g != "ungrouped"))
    return found


def _matches_a_group(inventory: Hosts[object], term: str, matches: object) -> bool:
    # A glob that only matches empty groups is not a typo; it just has no hosts.
    return callable(matches) and any(matches(g) for g in inventory.groups)


def _group_hosts(inventory: Hosts[object], name: str) -> set[str]:
    """Hosts of a group and of all its descendants."""
    out: set[str] = set()
    todo, seen = [name], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        group = inventory.groups[current]
        out.update(group.hosts)
        todo.extend(group.children)
    return out
