"""What a role's tasks() sees of one host: vars, system facts, templates.

Roles read like a checklist; everything mechanical lives here and in ops/.
A role may ask for a runtime fact with ctx.fact(): if it is not gathered yet
the engine gathers it (batched with every other missing fact) and runs the
role's tasks() again, so conditions on facts stay plain Python `if`s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from gpuprov.connectors.base import Session
from gpuprov.errors import GpuprovError
from gpuprov.facts.base import Fact
from gpuprov.facts.system import OsInfo, SystemFacts
from gpuprov.model.inventory import Host
from gpuprov.model.vars import HostVars

T = TypeVar("T")


class NeedFacts(Exception):
    """Raised inside tasks() when it asked for facts not gathered yet."""

    def __init__(self, facts: list[Fact[Any]]) -> None:
        super().__init__(", ".join(f.key for f in facts))
        self.facts = facts


class RoleFailed(GpuprovError):
    """A role refuses to go on for this host (e.g. a driver branch below 535)."""


class RoleSkipped(Exception):
    """Raised inside tasks() (`raise ctx.skip(why)`): the role has nothing to do
    on this host, for a reason the run's footer and JSON name (not an error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskContext:
    def __init__(self, host: Host, vars: HostVars, system: SystemFacts,
                 facts: Mapping[Fact[Any], Any], role: str, role_dir: Path,
                 session: Session | None = None) -> None:
        self.host = host
        #: how the operator is logged in (user, key type): what sshd changes must keep working
        self.session = session if session is not None else Session(host.ssh_user or "root")
        self.vars = vars
        self.system = system
        self.role = role
        self.role_dir = role_dir
        self._facts = facts
        #: every fact tasks() read, known or not: the host's fact plan must hold
        #: them all (one read from the prefetch is asked of nobody, yet needed
        #: by the next run)
        self.read: dict[Fact[Any], None] = {}

    @property
    def os(self) -> OsInfo:
        return self.system.os

    def fact(self, fact: Fact[T]) -> T:
        self.read[fact] = None
        if fact not in self._facts:
            raise NeedFacts([fact])
        return self._facts[fact]

    def facts(self, *facts: Fact[Any]) -> list[Any]:
        """Several facts at once: all missing ones are gathered in one go."""
        self.read.update(dict.fromkeys(facts))
        missing = [f for f in facts if f not in self._facts]
        if missing:
            raise NeedFacts(missing)
        return [self._facts[f] for f in facts]

    def render(self, template: str) -> str:
        """Render templates/<template> of this role with the host's vars."""
        path = self.role_dir / "templates" / template
        try:
            text = path.read_text()
        except OSError as exc:
            raise RoleFailed(f"role {self.role}: template {template} not found at {path}") from exc
        return self.vars.render_text(text, str(path))

    def file_path(self, name: str) -> Path:
        """A file shipped in the role's files/ directory."""
        return self.role_dir / "files" / name

    def fail(self, message: str, hint: str | None = None) -> RoleFailed:
        return RoleFailed(f"{self.host.name}: role {self.role}: {message}", hint)

    def skip(self, reason: str) -> RoleSkipped:
        """Leave this role out on this host and say why (e.g. "no sshd installed"):
        unlike a bare `return`, the reason reaches the recap and the reports."""
        return RoleSkipped(reason)

    def bad_var(self, name: str, message: str, hint: str | None = None) -> RoleFailed:
        """A variable's value is refused: say where it was set (and the value,
        unless it is a secret: errors end up in logs and reports)."""
        origin = self.vars.origin(name)
        where = f" (set at {origin})" if origin.file else ""
        shown = "" if self.vars.is_secret(name) else f"={self.vars.get(name)!r}"
        return self.fail(f"{name}{shown}{where}: {message}", hint)

    def require_supported_os(self) -> None:
        """Stop this host's role with a clear error on a distro gpuprov does not support."""
        if not self.os.supported:
            raise self.fail(f"{self.os.pretty_name or self.os.id or 'this OS'} is not supported",
                            "supported: Ubuntu 22.04/24.04, Debian 12, RHEL 9 and its rebuilds")

    def refuse_jetson(self) -> None:
        """Stop on a Jetson (L4T) before any change: its driver comes with the
        board support package, not from NVIDIA's CUDA repositories."""
        if self.system.arch.tegra:
            raise self.fail(
                f"this host is an NVIDIA Jetson (L4T: {self.system.arch.tegra}); its GPU driver "
                "is part of the L4T/JetPack board support package, a different driver model "
                "that gpuprov does not manage yet",
                "update it with NVIDIA's JetPack/SDK Manager; leave this host out of the "
                "nvidia_driver and container_toolkit plays")
