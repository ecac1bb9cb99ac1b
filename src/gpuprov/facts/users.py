"""Users and groups as NSS sees them (`getent`: /etc/passwd, /etc/group, and
LDAP/SSSD where configured)."""

from __future__ import annotations

from dataclasses import dataclass

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactError

#: getent's exit status for "no such key"
_NOT_FOUND = 2


@dataclass(frozen=True)
class GroupInfo:
    name: str
    gid: int
    #: the supplementary members listed in the group entry (not users whose
    #: primary group it is)
    members: tuple[str, ...]


@dataclass(frozen=True)
class GroupMembers(Fact["GroupInfo | None"]):
    """`getent group NAME`; None when there is no such group."""

    group: str

    def command(self) -> Command:
        return Command("getent", "group", self.group)

    def process(self, output: str, exit_code: int) -> GroupInfo | None:
        if exit_code == _NOT_FOUND or (exit_code == 0 and not output.strip()):
            return None
        if exit_code != 0:
            raise FactError(f"getent group {self.group} exited {exit_code}")
        line = output.strip().splitlines()[0]
        try:
            name, _password, gid, members = line.split(":", 3)
            return GroupInfo(name, int(gid), tuple(m for m in members.split(",") if m))
        except ValueError as exc:
            raise FactError(f"getent group {self.group}: not a group entry: {line!r}") from exc


@dataclass(frozen=True)
class ExistingUsers(Fact[frozenset[str]]):
    """Which of `names` are users on the host (`getent passwd NAME...`)."""

    names: tuple[str, ...]

    def command(self) -> Command:
        if not self.names:   # getent passwd without keys would list every user
            return Command("true")
        return Command("getent", "passwd", *self.names)

    def process(self, output: str, exit_code: int) -> frozenset[str]:
        if exit_code not in (0, _NOT_FOUND):
            raise FactError(f"getent passwd exited {exit_code}")
        return frozenset(line.split(":", 1)[0] for line in output.splitlines() if ":" in line)


@dataclass(frozen=True)
class UserAccount:
    home: str
    group: str      # primary group's name


@dataclass(frozen=True)
class UserHome(Fact["UserAccount | None"]):
    """A user's home directory and primary group; None when there is no such user."""

    user: str

    def command(self) -> Command:
        return Command.join([Command("getent", "passwd", self.user), Command("id", "-gn",
                                                                            self.user)])

    def process(self, output: str, exit_code: int) -> UserAccount | None:
        lines = output.strip().splitlines()
        if exit_code != 0 or len(lines) < 2:
            return None
        fields = lines[0].split(":")
        if len(fields) < 7:
            raise FactError(f"getent passwd {self.user}: not a passwd entry: {lines[0]!r}")
        return UserAccount(fields[5], lines[1].strip())
