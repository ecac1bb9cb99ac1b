"""Groups: a system group a role owns (group_present), and membership:
exactly the users the inventory names, e.g. the docker group, whose members
are root-equivalent (they can mount / into a container).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY
from typing import Any

from gpuprov.command import Command
from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.users import ExistingUsers, GroupInfo, GroupMembers
from gpuprov.ops.base import Change, Diff, Op, Step, operation

# What useradd accepts on Debian and RHEL (NAME_REGEX), minus the odd cases.
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
_INVALIDATES = (GroupMembers,)


class UserError(GpuprovError):
    """A membership list names a user the host does not have, or no user at all."""


USER_NAME_HINT = "user names are lowercase letters, digits, _ . - (e.g. alice)"


def is_user_name(name: str) -> bool:
    """The one user-name rule (docker_users, onboard_user): never a path, an
    option (leading '-') or shell text."""
    return _USER.fullmatch(name) is not None


@operation
class GroupMembership(Op):
    """`group` has the users `members` (gpasswd -a); with exclusive, nobody
    else (gpasswd -d). A member that is not a user on the host is an error
    naming `source` (the variable the list came from)."""

    group: str
    members: Iterable[str]
    _: KW_ONLY
    exclusive: bool = True
    source: str = "members"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.members = tuple(dict.fromkeys(str(m).strip() for m in self.members))
        bad = [m for m in self.members if not is_user_name(m)]
        if bad:
            raise UserError(f"{self.source}: {', '.join(map(repr, bad))} "
                            f"{'is not a user name' if len(bad) == 1 else 'are not user names'}",
                            USER_NAME_HINT)
        self.label = f"group {self.group} members"

    def facts(self) -> Sequence[Fact[Any]]:
        wanted: list[Fact[Any]] = [GroupMembers(self.group)]
        if self.members:
            wanted.append(ExistingUsers(tuple(sorted(self.members))))
        return wanted

    def plan(self, facts: FactView) -> list[Change]:
        info: GroupInfo | None = facts[GroupMembers(self.group)]
        if self.members:
            known = facts[ExistingUsers(tuple(sorted(self.members)))]
            missing = [m for m in self.members if m not in known]
            if missing:
                raise UserError(f"{self.source}: no user {', '.join(missing)} on this host",
                                f"create the user first, or remove it from {self.source}")
        current = info.members if info is not None else ()
        add = [m for m in self.members if m not in current]
        remove = [m for m in current if m not in self.members] if self.exclusive else []
        if not add and not remove:
            return []
        steps = [Step(Command("gpasswd", "-a", m, self.group)) for m in add]
        steps += [Step(Command("gpasswd", "-d", m, self.group)) for m in remove]
        summary = "; ".join([*(f"add {m}" for m in add), *(f"remove {m}" for m in remove)])
        after = [*[m for m in current if m not in remove], *add]
        unknown = None
        if info is None:
            # docker-ce creates the docker group: probably an earlier task of this run
            unknown = (f"group {self.group} does not exist yet: depends on the package "
                       "that creates it")
        return [Change(self.label, "update", summary, steps,
                       Diff(self.label, _lines(current), _lines(after)), unknown=unknown,
                       invalidates=_INVALIDATES)]


@operation
class GroupPresent(Op):
    """A system group `name` exists (groupadd --system: a gid from the system
    range, no user of that name). Its gid is whatever the host gives it."""

    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _USER.fullmatch(self.name) or self.name.endswith("$"):
            raise UserError(f"{self.name!r} is not a group name",
                            "group names are lowercase letters, digits, _ . - (e.g. lab)")
        self.label = f"group {self.name}"

    def facts(self) -> Sequence[Fact[Any]]:
        return [GroupMembers(self.name)]

    def plan(self, facts: FactView) -> list[Change]:
        if facts[GroupMembers(self.name)] is not None:
            return []
        return [Change(self.label, "create", f"create system group {self.name}",
                       [Step(Command("groupadd", "--system", self.name))],
                       Diff(self.label, "", f"{self.name}\n"), notify=self.notify,
                       invalidates=_INVALIDATES)]


def _lines(names: Iterable[str]) -> str:
    return "".join(f"{n}\n" for n in sorted(names))


#: group_present(name): see GroupPresent
group_present = GroupPresent
#: group_members(group, members, exclusive=, source=): see GroupMembership
group_members = GroupMembership
