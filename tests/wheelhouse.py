"""Wheels repacked from the distributions installed in the running
interpreter, so a test can run a literal `pip install .` in a fresh venv with
`PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheelhouse>`: no network or index needed, and
the same versions the rest of the suite runs with.

An installed distribution's RECORD lists its files relative to
site-packages; those files plus its .dist-info (without what the installer
added) are what its wheel held. Files outside site-packages (console
scripts, data) are left out: pip makes the scripts again from
entry_points.txt."""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# written by the installer, not part of the wheel (RECORD is made anew)
INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(name: str) -> list[str]:
    """The names of what the installed distribution `name` requires here (no extras)."""
    reqs = [Requirement(spec) for spec in metadata.requires(name) or []]
    # evaluate() starts from this interpreter's environment
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions `roots` need, the roots included, each once
    (requirements whose markers do not hold here are left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [_normalize(r) for r in roots]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen[name] = metadata.distribution(name)
            todo += [_normalize(r) for r in requirements(name)]
    return sorted(seen.values(), key=lambda d: _normalize(d.metadata["Name"]))


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def repack(dist: metadata.Distribution, dest: Path) -> Path:
    """`dist` as a wheel file in `dest`."""
    files = dist.files
    wheel_meta = dist.read_text("WHEEL")
    if files is None or wheel_meta is None:
        raise RuntimeError(f"{dist.metadata['Name']} was not installed from a wheel "
                           "(no RECORD or WHEEL): cannot repack it")
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise RuntimeError(f"{dist.metadata['Name']}: WHEEL names no tag")
    # all its tags in the file name (py2.py3-none-any): pip reads only the name
    python, abi, platform = (".".join(sorted({t.split("-")[i] for t in tags})) for i in range(3))
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    target = dest / f"{name}-{dist.version}-{python}-{abi}-{platform}.whl"
    record_lines: list[str] = []
    record_name = ""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in files:
            parts = member.parts
            if parts[0] == ".." or "__pycache__" in parts:
                continue
            if parts[0].endswith(".dist-info"):
                if parts[-1] == "RECORD":
                    record_name = member.as_posix()
                if parts[-1] in INSTALLER_FILES:
                    continue
            path = Path(str(dist.locate_file(member)))
            if not path.is_file():
                continue
            data = path.read_bytes()
            zf.writestr(member.as_posix(), data)
            record_lines.append(f"{member.as_posix()},{_record_hash(data)},{len(data)}")
        if not record_name:
            raise RuntimeError(f"{dist.metadata['Name']}: RECORD lists no RECORD")
        record_lines.append(f"{record_name},,")
        zf.writestr(record_name, "\n".join(record_lines) + "\n")
    return target


def build(dest: Path, roots: Iterable[str]) -> list[Path]:
    """A wheel in `dest` for every installed distribution `roots` need."""
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(dist, dest) for dist in closure(roots)]
