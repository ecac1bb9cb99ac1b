"""Distro-neutral packages: apt on the Debian family, dnf on the RHEL family.

Roles that install the same names everywhere call this; roles whose package
names differ per distro pick apt or dnf themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gpuprov.errors import GpuprovError
from gpuprov.facts.system import OsInfo
from gpuprov.ops import apt, dnf
from gpuprov.ops.base import Op


def packages(os: OsInfo, names: str | Iterable[str] | Mapping[str, str | None], *,
             state: str = "present", depends_on: str | None = None) -> Op:
    """names installed (present | latest | absent) with the host's package manager."""
    if os.family == "debian":
        return apt.packages(names, state=state, depends_on=depends_on)
    if os.family == "rhel":
        return dnf.packages(names, state=state, depends_on=depends_on)
    raise GpuprovError(f"no package manager known for {os.pretty_name or os.id!r}",
                       hint="supported: Ubuntu 22.04/24.04, Debian 12, RHEL 9 and rebuilds")
