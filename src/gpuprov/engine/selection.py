"""Which roles of a play run on a host (tags), and whether a verification
play runs at all (`verify: always|on-change`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from gpuprov.engine.results import STOPPED, TAGS, HostResult
from gpuprov.errors import GpuprovError, PlaybookError
from gpuprov.model.inventory import Host
from gpuprov.model.playbook import (
    REBOOT_CHOICES,
    REBOOT_IF_NEEDED,
    REBOOT_NEVER,
    VERIFY_CHOICES,
    VERIFY_ON_CHANGE,
    Play,
    RoleRef,
)


class RebootOptions(Protocol):
    """What reboot_policy() reads of the run's options (RunOptions)."""

    reboot: bool
    extra_vars: dict[str, Any]


class TagOptions(Protocol):
    """What left_out() reads of the run's options (RunOptions)."""

    tags: frozenset[str]
    skip_tags: frozenset[str]


ALWAYS = "always"  # a role tagged `always` runs unless skipped by name
NEVER = "never"    # a role tagged `never` runs only when another of its tags is asked for


def role_tags(play: Play, ref: RoleRef) -> set[str]:
    """A role's tags: its own, its play's, and its name (so `-t nvidia_driver` works)."""
    return {*ref.tags, *play.tags, ref.name}


def role_selected(play: Play, ref: RoleRef, tags: Iterable[str], skip: Iterable[str]) -> bool:
    return tag_skip_reason(play, ref, tags, skip) is None


def tag_skip_reason(play: Play, ref: RoleRef, tags: Iterable[str],
                    skip: Iterable[str]) -> str | None:
    """Why the tags leave a role out (what the run's footer says), None if it runs."""
    mine, wanted = role_tags(play, ref), set(tags)
    hit = sorted(mine & set(skip))
    if hit:
        return f"skipped by --skip-tags {','.join(hit)}"
    asked = f"--tags {','.join(sorted(wanted))}"
    if NEVER in mine:
        # Ansible's `never`: only when one of the role's other tags is asked for.
        if (mine - {NEVER}) & wanted:
            return None
        return f"tagged never, not selected by {asked}" if wanted else "tagged never"
    if not wanted or mine & wanted or ALWAYS in mine:
        return None
    return f"not selected by {asked}"


def left_out(result: HostResult, play: Play, options: TagOptions, why: str = "",
             kind: str = STOPPED) -> None:
    """Note on a host's result the roles of `play` it does not get to: those the
    tags leave out, with the tags' reason; with `why`, every other role too."""
    for ref in play.roles:
        by_tags = tag_skip_reason(play, ref, options.tags, options.skip_tags)
        if by_tags is not None:
            result.note(play.name, [ref.name], by_tags, TAGS)
        elif why:
            result.note(play.name, [ref.name], why, kind)


def selected_roles(plays: Sequence[Play], tags: Iterable[str], skip: Iterable[str]) -> list[str]:
    """The roles the tags select in any play, in playbook order, each once."""
    tags, skip = set(tags), set(skip)
    return list(dict.fromkeys(r.name for p in plays for r in p.roles
                              if role_selected(p, r, tags, skip)))


def check_selected(plays: Sequence[Play], tags: Iterable[str], skip: Iterable[str]) -> None:
    """Tags that leave every role out would make a run that does nothing look
    like success ("in sync"): refuse it before any host is touched."""
    tags, skip = set(tags), set(skip)
    if not (tags or skip) or selected_roles(plays, tags, skip):
        return
    book = next((p.file for p in plays if p.file), "the playbook")
    roles = ", ".join(dict.fromkeys(r.name for p in plays for r in p.roles)) or "none"
    what = f"tags {','.join(sorted(tags))} match no role of {book}"
    if skip:
        what = (f"tags {','.join(sorted(tags))} with " if tags else "") + (
            f"--skip-tags {','.join(sorted(skip))} leave no role of {book}")
    raise PlaybookError(f"nothing selected: {what} (roles: {roles})",
                        hint="tags in this playbook: " + ", ".join(sorted(known_tags(plays))))


def known_tags(plays: Sequence[Play]) -> set[str]:
    """Every tag a role of the playbook carries (its name too), and the special ones."""
    known = {t for p in plays for r in p.roles for t in role_tags(p, r)}
    return known | {t for p in plays for t in p.tags} | {ALWAYS, NEVER}


def check_tags(plays: Sequence[Play], asked: Iterable[str]) -> None:
    """A tag that nothing carries is a typo: say so instead of silently doing nothing."""
    known = known_tags(plays)
    unknown = sorted(set(asked) - known)
    if unknown:
        raise PlaybookError(f"unknown tag(s): {', '.join(unknown)}",
                            hint="tags in this playbook: " + ", ".join(sorted(known)))


def verify_policy(play: Play, host: Host, extra_vars: dict[str, Any]) -> str | None:
    """None for a play that is not a verification play (no `verify:`); else
    -e verify > the host's `verify` var > the play's `verify:`."""
    if play.verify is None:
        return None
    return _first_set(host, VERIFY_CHOICES, play.verify,
                      (extra_vars.get("verify"), "-e verify"),
                      (host.vars.get("verify"), f"inventory var verify of {host.name}"))


def verify_skipped(play: Play, host: Host, extra_vars: dict[str, Any], changed: bool,
                   tags: Iterable[str]) -> bool:
    """A verification play is left out on a host where nothing changed, under
    `on-change`, unless its roles were asked for by tag."""
    if verify_policy(play, host, extra_vars) != VERIFY_ON_CHANGE or changed:
        return False
    asked = set(tags)
    return not (asked and any(role_tags(play, r) & asked - {ALWAYS, NEVER}
                              for r in play.roles if NEVER not in r.tags))


def reboot_policy(play: Play, host: Host, options: RebootOptions) -> str:
    """--reboot > -e reboot > the play's `reboot:` > the host's `reboot` var > never."""
    if options.reboot:
        return REBOOT_IF_NEEDED
    return _first_set(host, REBOOT_CHOICES, REBOOT_NEVER,
                      (options.extra_vars.get("reboot"), "-e reboot"),
                      (play.reboot, f"play {play.name!r}"),
                      (host.vars.get("reboot"), f"inventory var reboot of {host.name}"))


def _first_set(host: Host, choices: Sequence[str], default: str,
               *candidates: tuple[Any, str]) -> str:
    """The first candidate value that is set (highest precedence first), which
    must be one of `choices`; `default` when none is."""
    for value, where in candidates:
        if value is None:
            continue
        if value not in choices:
            raise GpuprovError(f"{host.name}: {where} is {value!r}; expected "
                               + " or ".join(choices))
        return str(value)
    return default
