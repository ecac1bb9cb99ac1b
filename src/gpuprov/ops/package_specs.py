"""How roles name packages, for apt and dnf alike: one name, a list of
names, or a mapping of name -> version spec (None: any version)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

PackageSpecs = str | Iterable[str] | Mapping[str, "str | None"]


def package_versions(names: PackageSpecs) -> dict[str, str | None]:
    """name -> wanted version spec, in the order given."""
    if isinstance(names, str):
        return {names: None}
    if isinstance(names, Mapping):
        return {n: (str(v) if v is not None else None) for n, v in names.items()}
    return dict.fromkeys(names)


def package_resource(names: Sequence[str]) -> str:
    """How a change names its packages in reports: "package a" / "packages a, b"."""
    return f"package {names[0]}" if len(names) == 1 else f"packages {', '.join(names)}"
