"""What `gpuprov pull` keeps between runs under state_dir: the last run
(pull/last.json, which `gpuprov status` reads from the controller too) and the
last keep_reports JSON reports (reports/, root only: they hold diffs of
root-only files). output/pull.py writes them; this module names and reads them.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

APPLIED, UNCHANGED, DRIFT, FAILED = "applied", "unchanged", "drift", "failed"
FETCH_FAILED, BAD_COMMIT, UNSIGNED, BUSY = "fetch-failed", "bad-commit", "unsigned", "busy"
#: a run that left the host matching its commit: its commit becomes the last good one
GOOD = frozenset({APPLIED, UNCHANGED})
RESULTS = (APPLIED, UNCHANGED, DRIFT, FAILED, FETCH_FAILED, BAD_COMMIT, UNSIGNED, BUSY)

REPORTS_DIR_MODE = 0o700
LAST_MODE = 0o644


@dataclass
class PullRecord:
    """pull/last.json: one run of `gpuprov pull` (the fields of the pull spec)."""

    time: str
    commit: str | None
    ref: str
    mode: str
    result: str
    changed: int = 0
    drifted: int = 0
    failed_tasks: int = 0
    message: str = ""
    last_good_commit: str | None = None
    last_good_time: str | None = None
    report: str | None = None
    duration_s: float = 0.0
    gpuprov_version: str = ""
    #: pull.yml's interval (s): how old a last good pull may grow (status' stale rule)
    interval: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def success(self) -> bool:
        """The run left the host as its commit says (a check finding it in sync too)."""
        return self.result in GOOD


def iso(epoch: float) -> str:
    """ISO-8601 UTC, to the second, with a Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def epoch(text: str | None) -> float | None:
    """An iso() time back as Unix time; None for anything else."""
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def pull_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "pull"


def last_path(state_dir: str | Path) -> Path:
    return pull_dir(state_dir) / "last.json"


def reports_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "reports"


def read_last(state_dir: str | Path) -> dict[str, Any]:
    """The last run's record; {} before the first or when it cannot be read
    (then the next run applies again, which is safe: apply is idempotent)."""
    try:
        data = json.loads(last_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def report_name(epoch: float, commit: str | None) -> str:
    """<YYYYmmddTHHMMSSZ>-<sha12>.json (sorted by name = by time)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))
    return f"{stamp}-{(commit or 'nocommit')[:12]}.json"


def prepare_reports_dir(state_dir: str | Path) -> Path:
    """reports/, created 0700 and kept 0700 (an existing wider one is narrowed)."""
    directory = reports_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=REPORTS_DIR_MODE)
    if directory.stat().st_mode & 0o777 != REPORTS_DIR_MODE:
        os.chmod(directory, REPORTS_DIR_MODE)
    return directory


def prune_reports(state_dir: str | Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` reports; the ones removed."""
    directory = reports_dir(state_dir)
    if not directory.is_dir():
        return []
    reports = sorted(p for p in directory.iterdir()
                     if p.is_file() and p.suffix == ".json" and not p.name.startswith("."))
    gone = reports[:max(0, len(reports) - keep)]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
