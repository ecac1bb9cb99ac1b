"""Distro-neutral packages: apt on the Debian family, dnf on the RHEL family.

Roles that install the same names everywhere call this; roles whose package
names differ per distro pick apt or dnf themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpuprov.errors import GpuprovError
from gpuprov.facts.system import OsInfo
from gpuprov.ops import apt, dnf
from gpuprov.ops.base import Op


def packages(os: OsInfo, names: str | Iterable[str] | Mapping[str, str | None],
             **options: Any) -> Op:
    """names installed with the host's package manager: apt.AptPackages or
    dnf.DnfPackages, which take the options (state, depends_on: both; held,
    purge...: apt only)."""
    if os.family == "debian":
        return apt.AptPackages(names, **options)
    if os.family == "rhel":
        return dnf.DnfPackages(names, **options)
    raise GpuprovError(f"no package manager known for {os.pretty_name or os.id!r}",
                       hint="supported: Ubuntu 22.04/24.04, Debian 12, RHEL 9 and rebuilds")
