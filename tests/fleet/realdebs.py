"""Real Debian 12 .debs for the fleet's stand-in archive, fetched once and cached.

Some packages the roles install are Debian's own and must behave like them on a
fleet host: python3 + python3-venv + cron (pull mode), git (in the base root),
containerd + runc (a cluster node's `containerd config dump` is the real one).
They come from the same mirror as the base root (base.MIRROR), verified like apt
would: InRelease with gpgv against this machine's Debian archive keyring, the
Packages index against InRelease's SHA256, every .deb against the index.

What to fetch is the listed packages plus whatever they need that the base root
lacks: a small resolver walks Depends/Pre-Depends over the Packages index against
the base root's dpkg status (with versions: a point release newer than the base
pulls the newer library too). The result is cached under the fleet cache root,
keyed by the list, the mirror and the base's dpkg status; a download goes to a
temp dir renamed into place when complete, so a killed run never leaves a half
cache that later runs would trust.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.fleet.base import MIRROR, SUITE
from tests.fleet.errors import FleetUnavailable

# Pull mode (issue 19): what `gpuprov pull-setup` installs on a host.
PULL_PACKAGES = ("python3", "python3-venv", "cron")
# A Kubernetes node's runtime (issue 20): Debian 12's own containerd and runc.
CLUSTER_PACKAGES = ("containerd", "runc")
PACKAGES = PULL_PACKAGES + CLUSTER_PACKAGES
ARCH = "amd64"
COMPONENT = "main"
KEYRING = Path(os.environ.get("GPUPROV_FLEET_KEYRING",
                              "/usr/share/keyrings/debian-archive-keyring.gpg"))
TIMEOUT = 120  # seconds per HTTP request

Stanza = dict[str, str]


class ResolveError(FleetUnavailable):
    """A listed package (or one it needs) cannot be satisfied from the index."""


# -- deb822 ------------------------------------------------------------------------
def parse_stanzas(text: str) -> list[Stanza]:
    """Paragraphs of a Packages or dpkg status file (continuation lines joined)."""
    out: list[Stanza] = []
    current: Stanza = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current, key = {}, ""
        elif line[0] in " \t":
            if key:
                current[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        out.append(current)
    return out


def installed(status_text: str) -> dict[str, str]:
    """name -> version of what dpkg says is installed, plus what those provide
    (a provided name maps to "" : satisfied, version unknown)."""
    out: dict[str, str] = {}
    for st in parse_stanzas(status_text):
        if st.get("Status", "").split()[-1:] != ["installed"]:
            continue
        out[st["Package"]] = st["Version"]
        for name, _ in _provides(st):
            out.setdefault(name, "")
    return out


def _provides(st: Stanza) -> list[tuple[str, str]]:
    return [(alt[0], alt[2]) for group in _relations(st.get("Provides", "")) for alt in group]


_REL = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*"
                  r"(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?\s*(?:\[[^]]*\])?\s*$")


def _relations(field: str) -> list[list[tuple[str, str, str]]]:
    """ "a (>= 1) | b, c" -> [[(a, >=, 1), (b, "", "")], [(c, "", "")]]"""
    groups = []
    for group in field.split(","):
        if not group.strip():
            continue
        alts = []
        for alt in group.split("|"):
            m = _REL.match(alt)
            if m is None:
                raise ResolveError(f"cannot parse the relation {alt.strip()!r}")
            alts.append((m.group(1), m.group(2) or "", m.group(3) or ""))
        groups.append(alts)
    return groups


def version_ok(have: str, op: str, want: str) -> bool:
    """dpkg's own comparison (this machine has dpkg: the fleet needs dpkg-deb anyway)."""
    if not op:
        return True
    if not have:
        return False  # provided without a version never satisfies a versioned relation
    dpkg_op = {"<<": "lt", "<=": "le", "=": "eq", ">=": "ge", ">>": "gt"}[op]
    return subprocess.run(["dpkg", "--compare-versions", have, dpkg_op, want],
                          check=False).returncode == 0


# -- resolver ------------------------------------------------------------------------
def resolve(wanted: Iterable[str], index: Iterable[Stanza],
            have: Mapping[str, str]) -> list[Stanza]:
    """The index stanzas to add so that `wanted` installs on a root with `have`
    (see installed()): the wanted packages themselves, and every Depends /
    Pre-Depends alternative group not already satisfied, satisfied by its first
    alternative the index has (a real package or a provider of the name)."""
    by_name: dict[str, Stanza] = {}
    providers: dict[str, list[Stanza]] = {}
    for st in index:
        by_name[st["Package"]] = st
        for name, _ in _provides(st):
            providers.setdefault(name, []).append(st)
    chosen: dict[str, Stanza] = {}
    queue = list(wanted)
    for name in queue:
        if name not in by_name:
            raise ResolveError(f"{name} is not in the {SUITE} index")
    todo: list[Stanza] = [by_name[n] for n in queue]
    while todo:
        st = todo.pop(0)
        if st["Package"] in chosen:
            continue
        chosen[st["Package"]] = st
        relations = f"{st.get('Pre-Depends', '')},{st.get('Depends', '')}"
        for group in _relations(relations):
            if _satisfied(group, have, chosen):
                continue
            pick = _pick(group, by_name, providers)
            if pick is None:
                raise ResolveError(f"{st['Package']} needs {_show(group)}: not in the "
                                   f"{SUITE} index at a fitting version")
            todo.append(pick)
    return sorted(chosen.values(), key=lambda s: s["Package"])


def _satisfied(group: list[tuple[str, str, str]], have: Mapping[str, str],
               chosen: Mapping[str, Stanza]) -> bool:
    for name, op, want in group:
        if name in chosen and version_ok(chosen[name]["Version"], op, want):
            return True
        if any(p == name and (not op or version_ok(v, op, want))
               for st in chosen.values() for p, v in _provides(st)):
            return True
        if name in have and version_ok(have[name], op, want):
            return True
    return False


def _pick(group: list[tuple[str, str, str]], by_name: Mapping[str, Stanza],
          providers: Mapping[str, list[Stanza]]) -> Stanza | None:
    for name, op, want in group:
        st = by_name.get(name)
        if st is not None and version_ok(st["Version"], op, want):
            return st
        for provider in providers.get(name, []):
            if any(p == name and (not op or version_ok(v, op, want))
                   for p, v in _provides(provider)):
                return provider
    return None


def _show(group: list[tuple[str, str, str]]) -> str:
    return " | ".join(f"{n} ({o} {v})" if o else n for n, o, v in group)


# -- download and verify -----------------------------------------------------------------
def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:  # noqa: S310 - http mirror
            return resp.read()
    except OSError as exc:
        raise FleetUnavailable(f"downloading {url} failed: {exc}") from exc


def verified_release(inrelease: bytes, keyring: Path = KEYRING) -> str:
    """InRelease's signed text, checked with gpgv against the archive keyring."""
    if not keyring.exists():
        raise FleetUnavailable(f"{keyring} is missing (apt-get install debian-archive-keyring)")
    with tempfile.TemporaryDirectory(prefix="gpuprov-realdebs-") as tmp:
        signed = Path(tmp) / "InRelease"
        signed.write_bytes(inrelease)
        res = subprocess.run(["gpgv", "--keyring", str(keyring), "--output", "-", str(signed)],
                             capture_output=True, check=False)
    if res.returncode != 0:
        raise FleetUnavailable("the mirror's InRelease does not verify against "
                               f"{keyring}: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout.decode()


def release_sha256(release: str, path: str) -> tuple[str, int]:
    """(sha256, size) that a Release file lists for `path`."""
    section = release.split("\nSHA256:", 1)[-1]
    for line in section.splitlines()[1:]:
        if not line.startswith(" "):
            break
        digest, size, name = line.split()
        if name == path:
            return digest, int(size)
    raise FleetUnavailable(f"the mirror's Release does not list {path}")


def fetch_index(mirror: str = MIRROR) -> list[Stanza]:
    release = verified_release(_get(f"{mirror}/dists/{SUITE}/InRelease"))
    path = f"{COMPONENT}/binary-{ARCH}/Packages.xz"
    digest, size = release_sha256(release, path)
    data = _get(f"{mirror}/dists/{SUITE}/{path}")
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise FleetUnavailable(f"{mirror}/dists/{SUITE}/{path} does not match InRelease")
    return parse_stanzas(lzma.decompress(data).decode())


def _download_deb(mirror: str, st: Stanza, into: Path) -> Path:
    data = _get(f"{mirror}/{st['Filename']}")
    if hashlib.sha256(data).hexdigest() != st["SHA256"] or len(data) != int(st["Size"]):
        raise FleetUnavailable(f"{st['Filename']} does not match the Packages index")
    deb = into / Path(st["Filename"]).name
    deb.write_bytes(data)
    return deb


# -- cache ---------------------------------------------------------------------------------
def cache_key(packages: Iterable[str], mirror: str, status_text: str) -> str:
    h = hashlib.sha256(f"{SUITE}\n{ARCH}\n{mirror}\n{' '.join(sorted(packages))}\n".encode())
    h.update(status_text.encode())
    return h.hexdigest()[:16]


def ensure_real_debs(cache_root: Path, base_root: Path, packages: Iterable[str] = PACKAGES,
                     mirror: str = MIRROR) -> Path:
    """cache_root/realdebs/<key>/: the .debs and manifest.json, fetched if missing."""
    packages = tuple(packages)
    status_text = (base_root / "var/lib/dpkg/status").read_text()
    key = cache_key(packages, mirror, status_text)
    root = cache_root / "realdebs"
    final = root / key
    if (final / "manifest.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():  # killed downloads and lists no longer wanted
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f"tmp-{key}-", dir=root))
    try:
        chosen = resolve(packages, fetch_index(mirror), installed(status_text))
        manifest = {}
        for st in chosen:
            deb = _download_deb(mirror, st, building)
            manifest[st["Package"]] = {"version": st["Version"], "file": deb.name,
                                       "sha256": st["SHA256"]}
        (building / "manifest.json").write_text(json.dumps(
            {"mirror": mirror, "suite": SUITE, "wanted": list(packages),
             "packages": manifest}, indent=2, sort_keys=True) + "\n")
        building.rename(final)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return final
