"""The wheels `gpuprov pull-setup` installs on a host, made on the controller.

Without network on the host (air-gapped) pip installs only from the
wheelhouse copied over. The default one is repacked from the distributions
installed in the running interpreter: the very versions this controller
runs. An installed distribution's RECORD lists its files relative to
site-packages; those files plus its .dist-info (without what the installer
added) are what its wheel held. Files outside site-packages (console
scripts, data) are left out: pip makes the scripts again from
entry_points.txt. An editable gpuprov (a checkout) has no files to repack:
its wheel is built from the source tree.

Binary wheels (cffi, PyYAML, MarkupSafe...) fit one Python minor version and
one architecture: `unfit()` names the projects that have no wheel a host can
install, so pull-setup refuses before it changes anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from gpuprov.errors import GpuprovError

# written by the installer, not part of the wheel (RECORD is made anew)
INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
# not needed to build a wheel from a checkout, and large or machine-specific
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                                     ".mypy_cache", ".fleet-state", ".benchmarks", "tests")


class WheelhouseError(GpuprovError):
    """The wheels for the hosts cannot be made or read."""


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
    name = dist.metadata["Name"]
    if files is None or wheel_meta is None:
        raise WheelhouseError(f"{name} was not installed from a wheel (no RECORD or WHEEL): "
                              "cannot repack it",
                              hint="build the wheels yourself (pip wheel / pip download) "
                                   "and pass --wheelhouse DIR")
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise WheelhouseError(f"{name}: its WHEEL file names no tag")
    # all its tags in the file name (py2.py3-none-any): pip reads only the name
    python, abi, platform = (".".join(sorted({t.split("-")[i] for t in tags})) for i in range(3))
    target = dest / f"{re.sub(r'[-_.]+', '_', name)}-{dist.version}-{python}-{abi}-{platform}.whl"
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
            # a fixed date: the same files make the same wheel, byte for byte, so a
            # second pull-setup finds every wheel on the host unchanged
            info = zipfile.ZipInfo(member.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            zf.writestr(info, data)
            record_lines.append(f"{member.as_posix()},{_record_hash(data)},{len(data)}")
        if not record_name:
            raise WheelhouseError(f"{name}: its RECORD does not list itself")
        record_lines.append(f"{record_name},,")
        info = zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, "\n".join(record_lines) + "\n")
    return target


def build(dest: Path, roots: Iterable[str]) -> list[Path]:
    """A wheel in `dest` for every installed distribution `roots` need."""
    dest.mkdir(parents=True, exist_ok=True)
    return [repack(dist, dest) for dist in closure(roots)]


def editable_source(dist: metadata.Distribution) -> Path | None:
    """The checkout an editable install (pip install -e) points at, else None."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    url = data.get("url", "") if isinstance(data, dict) else ""
    editable = isinstance(data, dict) and (data.get("dir_info") or {}).get("editable")
    return Path(url[len("file://"):]) if editable and url.startswith("file://") else None


def build_from_source(source: Path, dest: Path) -> Path:
    """The wheel of the project checked out at `source`, built offline with this
    interpreter's setuptools (from a copy: a build in place leaves build/ behind)."""
    with tempfile.TemporaryDirectory(prefix="gpuprov-wheel-") as work:
        copy = Path(work) / "source"
        shutil.copytree(source, copy, ignore=_NOT_COPIED, symlinks=True)
        out = Path(work) / "dist"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-index", "--no-build-isolation", "-w", str(out), str(copy)],
            capture_output=True, text=True, timeout=600,
            # fixed dates in the zip: the same checkout makes the same wheel, which a
            # second pull-setup then finds unchanged on the host
            env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
        built = sorted(out.glob("*.whl")) if proc.returncode == 0 else []
        if not built:
            raise WheelhouseError(
                f"cannot build the wheel of the checkout {source}: "
                f"{(proc.stderr or proc.stdout).strip()[-400:]}",
                hint="install setuptools>=68 and wheel here, or build the wheels yourself "
                     "and pass --wheelhouse DIR")
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(built[0], dest / built[0].name))


@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels; `version` is the gpuprov wheel's."""

    directory: Path
    wheels: tuple[Path, ...]
    version: str

    @classmethod
    def read(cls, directory: Path) -> Wheelhouse:
        """The wheels an operator built (pip download / pip wheel) in `directory`."""
        if not directory.is_dir():
            raise WheelhouseError(f"--wheelhouse {directory}: not a directory")
        wheels = tuple(sorted(directory.glob("*.whl")))
        versions = []
        for wheel in wheels:
            try:
                name, version, _, _ = parse_wheel_filename(wheel.name)
            except ValueError as exc:
                raise WheelhouseError(f"--wheelhouse {directory}: {wheel.name}: {exc}") from None
            if name == "gpuprov":
                versions.append(str(version))
        if len(set(versions)) != 1:
            found = ", ".join(sorted(set(versions))) or "none"
            raise WheelhouseError(
                f"--wheelhouse {directory} must hold exactly one gpuprov version "
                f"(found: {found})",
                hint="pip wheel --no-deps -w DIR <gpuprov checkout>, then pip download "
                     "the requirements for the hosts' Python into DIR")
        return cls(directory, wheels, versions[0])


def gpuprov_wheelhouse(dest: Path) -> Wheelhouse:
    """The wheels of this controller's gpuprov and of everything it requires here."""
    dest.mkdir(parents=True, exist_ok=True)
    own = metadata.distribution("gpuprov")
    wheels = [repack(d, dest) for d in closure(requirements("gpuprov"))]
    source = editable_source(own)
    wheels.append(build_from_source(source, dest) if source else repack(own, dest))
    return Wheelhouse(dest, tuple(sorted(wheels)), own.version)


def host_tags(python: tuple[int, int], machine: str) -> set[Tag]:
    """The wheel tags a CPython `python` on a glibc Linux `machine` (uname -m)
    accepts. The host's glibc is not asked: every manylinux generation counts."""
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(40, 4, -1)]
    platforms += [f"manylinux{legacy}_{machine}" for legacy in ("2014", "2010", "1")]
    platforms.append(f"linux_{machine}")
    return {*cpython_tags(python, platforms=platforms),
            *compatible_tags(python, interpreter=f"cp{python[0]}{python[1]}",
                             platforms=platforms)}


def unfit(wheels: Sequence[Path], python: tuple[int, int], machine: str) -> list[str]:
    """The projects of `wheels` none of whose wheels installs on that host
    (a wheelhouse may hold several builds of one project, for several hosts)."""
    accepted = host_tags(python, machine)
    fits: dict[str, bool] = {}
    for wheel in wheels:
        name, _, _, tags = parse_wheel_filename(wheel.name)
        fits[name] = fits.get(name, False) or bool(set(tags) & accepted)
    return sorted(n for n, ok in fits.items() if not ok)


def wheel_tags(wheel: Path) -> str:
    """The python-abi-platform part of a wheel's file name ("cp311-cp311-manylinux...")."""
    return "-".join(wheel.name[:-len(".whl")].split("-")[-3:])
