"""What a host's last run asked: its facts go into the first round trip of the next.

Which facts a role needs is only known as its tasks() run, one batch of
questions after another (system facts, then what the roles ask, then what
their ops read). On a no-change run they ask what they asked last time, so
the facts of the host's last run are gathered in one batch with the run lock
and the system facts; each later batch then finds its facts known and costs
no round trip. A guess costs only a probe whose answer goes unused; a fact
it missed is asked as before, so a wrong or stale plan never changes a result.

The plan lives on the controller under GPUPROV_CACHE_DIR (default
$XDG_CACHE_HOME/gpuprov, else ~/.cache/gpuprov), one file per host and role
set, 0600 in a 0700 directory: it names which read-only probes run on the
host, so a file anyone else could write is ignored. GPUPROV_CACHE_DIR=off
turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gpuprov.facts.base import Fact, fact_class

CACHE_DIR_ENV = "GPUPROV_CACHE_DIR"
#: bumped when the file's format changes: an old file is then ignored
FORMAT = 1


def default_cache_dir() -> Path | None:
    """Where plans live; None when GPUPROV_CACHE_DIR=off."""
    configured = os.environ.get(CACHE_DIR_ENV, "")
    if configured.lower() == "off":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuprov"


def encode(fact: Fact[Any]) -> dict[str, Any] | None:
    """A fact as JSON data; None for one whose arguments JSON cannot carry."""
    args = {f.name: getattr(fact, f.name) for f in dataclasses.fields(fact)}
    entry = {"fact": f"{type(fact).__module__}:{type(fact).__qualname__}", "args": args}
    try:
        return entry if decode(json.loads(json.dumps(entry))) == fact else None
    except (TypeError, ValueError):
        return None


def decode(entry: Any) -> Fact[Any] | None:
    """The fact an encoded entry names; None for a class no longer known
    (renamed, its role gone) or arguments it no longer takes."""
    try:
        cls = fact_class(str(entry["fact"]))
        return cls(**{k: _tuples(v) for k, v in dict(entry["args"]).items()}) \
            if cls is not None else None
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _tuples(value: Any) -> Any:
    # facts are frozen and hashed: JSON's lists were tuples
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class FactPlans:
    """The plans of one run's hosts, in `directory` (None: no plans at all).
    `selection`: what decides which questions a run asks besides the host (its
    roles' paths, the tags): another selection keeps plans of its own."""

    def __init__(self, directory: Path | None, selection: Sequence[object]) -> None:
        self.directory = directory
        self._roles = "\0".join(sorted(str(p) for p in selection))

    def _path(self, host: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(f"{host}\0{self._roles}".encode()).hexdigest()[:32]
        return self.directory / "prefetch" / f"{digest}.json"

    def load(self, host: str) -> list[Fact[Any]]:
        """The facts the host's last run with these roles asked; [] when unknown."""
        path = self._path(host)
        if path is None:
            return []
        try:
            with path.open("rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    return []
                data = json.loads(handle.read())
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return []
        facts = (decode(entry) for entry in data.get("facts") or [])
        return [f for f in facts if f is not None]

    def save(self, host: str, facts: Iterable[Fact[Any]]) -> None:
        """Remember what this run asked on the host (written whole, then renamed)."""
        path = self._path(host)
        if path is None:
            return
        entries = [e for e in (encode(f) for f in dict.fromkeys(facts)) if e is not None]
        data = json.dumps({"format": FORMAT, "host": host, "facts": entries}, sort_keys=True)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
            os.replace(temp, path)
        except OSError:
            # a read-only home costs the next run its first-batch guess, nothing more
            with contextlib.suppress(OSError, UnboundLocalError):
                temp.unlink()
