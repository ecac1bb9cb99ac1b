"""How roles name packages, for apt and dnf alike: one name, a list of
names, or a mapping of name -> version spec (None: any version).

Names and versions are checked here, before any command is built: a package
name lands on a root command line, and one that starts with '-' is read as
an option (apt-get's `-oDPkg::Pre-Invoke::=cmd` runs cmd as root). Commands
also put `--` before the names; the check makes the error readable and early.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from gpuprov.errors import GpuprovError

PackageSpecs = str | Iterable[str] | Mapping[str, "str | None"]

# Debian policy 5.6.7 (lowercase, starts alphanumeric, at least 2 chars), with
# apt's optional :arch qualifier (libc6:i386).
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?")
# Debian versions ([epoch:]upstream[-revision]) plus apt's glob '*'.
_DEB_VERSION = re.compile(r"[A-Za-z0-9.+~:*][A-Za-z0-9.+~:*-]*")
# RPM: no whitespace or shell metacharacters, never a leading '-'.
_RPM_NAME = re.compile(r"[A-Za-z0-9._+][A-Za-z0-9._+-]*")
# [epoch:]version[-release] plus dnf's globs '*' '?'; ~ and ^ are rpm's sort marks.
_RPM_VERSION = re.compile(r"[A-Za-z0-9._+~^:*?][A-Za-z0-9._+~^:*?-]*")

_RULES = {
    "deb": (_DEB_NAME, _DEB_VERSION,
            "Debian package names are lowercase letters, digits, + . - and start with a "
            "letter or digit (e.g. nvidia-utils-580-server)"),
    "rpm": (_RPM_NAME, _RPM_VERSION,
            "RPM package names are letters, digits, . _ + - and never start with '-' "
            "(e.g. kernel-devel)"),
}


class PackageNameError(GpuprovError):
    """A package name or version that is not one, refused before it reaches a command."""


def package_versions(names: PackageSpecs, kind: str | None = None,
                     source: str = "names") -> dict[str, str | None]:
    """name -> wanted version spec, in the order given; with `kind` ("deb" or
    "rpm") every name and version is checked (PackageNameError naming `source`,
    the variable or role the names came from)."""
    if isinstance(names, str):
        out: dict[str, str | None] = {names: None}
    elif isinstance(names, Mapping):
        out = {str(n): (str(v) if v is not None else None) for n, v in names.items()}
    else:
        out = dict.fromkeys(str(n) for n in names)
    if kind is not None:
        check_packages(out, kind, source)
    return out


def check_packages(packages: Mapping[str, str | None], kind: str, source: str) -> None:
    name_re, version_re, rule = _RULES[kind]
    for name, version in packages.items():
        if not name_re.fullmatch(name):
            raise PackageNameError(f"{source}: {name!r} is not a valid package name", rule)
        if version is not None and not version_re.fullmatch(version):
            raise PackageNameError(
                f"{source}: version {version!r} of package {name} is not a valid version",
                "versions are letters, digits and . + ~ : - (globs * allowed), "
                "with no spaces or shell characters")


def package_resource(names: Sequence[str]) -> str:
    """How a change names its packages in reports: "package a" / "packages a, b"."""
    return f"package {names[0]}" if len(names) == 1 else f"packages {', '.join(names)}"
