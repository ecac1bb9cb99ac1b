"""What `gpuprov pull` leaves behind for people and monitors, for every
outcome, failures included: the JSON report (apply --report's, plus a "pull"
block) under reports/, pull/last.json, node_exporter's gpuprov_pull.prom and
one log line (journald or the cron log keeps it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gpuprov.engine.pullstate import (
    LAST_MODE,
    PullRecord,
    last_path,
    prepare_reports_dir,
    prune_reports,
    report_name,
)
from gpuprov.engine.results import RunResult
from gpuprov.output.prometheus import gauge, text
from gpuprov.output.report import REPORT_MODE, report_data, write_text_atomic
from gpuprov.output.summary import drifted

TEXTFILE_NAME = "gpuprov_pull.prom"


def drift_count(run: RunResult) -> int:
    """The resources that differ from the commit (drift-check's count)."""
    return sum(len(drifted(h)) for h in run.hosts.values())


def changed_count(run: RunResult) -> int:
    """The tasks that changed something (apply's recap count)."""
    return sum(h.changed for h in run.hosts.values())


def pull_report(record: PullRecord, run: RunResult | None,
                extra: dict[str, Any]) -> dict[str, Any]:
    """apply --report's JSON (an empty run when none ran: the failure came
    first), with a "pull" block saying which commit, ref and mode, and why."""
    data = report_data(run or RunResult("pull", record.mode == "check"), extra)
    data["pull"] = {"commit": record.commit, "ref": record.ref, "mode": record.mode,
                    "result": record.result, "message": record.message,
                    "last_good_commit": record.last_good_commit}
    return data


def write_report(state_dir: str, record: PullRecord, run: RunResult | None,
                 extra: dict[str, Any], keep: int, now: float) -> Path:
    """reports/<time>-<sha12>.json (0600 in a 0700 directory), then all but the
    newest `keep` removed."""
    directory = prepare_reports_dir(state_dir)
    path = directory / report_name(now, record.commit)
    text_ = json.dumps(pull_report(record, run, extra), indent=2) + "\n"
    write_text_atomic(path, text_, REPORT_MODE)
    prune_reports(state_dir, keep)
    return path


def write_last(state_dir: str, record: PullRecord) -> Path:
    """pull/last.json, 0644 (gpuprov status reads it without root), atomically."""
    path = last_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_text_atomic(path, json.dumps(record.to_json(), indent=2) + "\n", LAST_MODE)
    return path


def pull_prometheus(record: PullRecord, now: float, last_success: float | None) -> str:
    """gpuprov_pull.prom: when it last ran and last succeeded, whether this run
    did, how much it changed or found drifted, and what it ran (info labels)."""
    registry = CollectorRegistry()
    gauge(registry, "gpuprov_pull_last_run_timestamp_seconds",
          "When gpuprov pull last ran (Unix time).", [((), now)])
    gauge(registry, "gpuprov_pull_last_success_timestamp_seconds",
          "When gpuprov pull last left the host as its commit says (Unix time).",
          [((), last_success)])
    gauge(registry, "gpuprov_pull_success", "1 when the last pull applied or found the host "
          "in sync, else 0.", [((), 1.0 if record.success else 0.0)])
    gauge(registry, "gpuprov_pull_changed_resources", "Tasks the last pull changed.",
          [((), record.changed)])
    gauge(registry, "gpuprov_pull_drifted_resources", "Resources the last pull found "
          "differing from the commit.", [((), record.drifted)])
    gauge(registry, "gpuprov_pull_info", "What the last pull ran and came to.",
          [((record.commit or "", record.ref, record.mode, record.result), 1.0)],
          labels=("commit", "ref", "mode", "result"))
    return text(registry)


def write_textfile(textfile_dir: str, record: PullRecord, now: float,
                   last_success: float | None) -> Path:
    """{textfile_dir}/gpuprov_pull.prom, atomically (node_exporter never reads half)."""
    path = Path(textfile_dir) / TEXTFILE_NAME
    # before node_exporter is installed too: the metrics are there when it comes
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, pull_prometheus(record, now, last_success), LAST_MODE)
    return path


def log_line(record: PullRecord) -> str:
    """One line per run, for journald or the cron log."""
    commit = record.commit[:12] if record.commit else "-"
    line = (f"gpuprov pull: {record.result} commit={commit} ref={record.ref} "
            f"mode={record.mode} changed={record.changed} drifted={record.drifted} "
            f"failed={record.failed_tasks} {record.duration_s:.1f}s")
    return f"{line}: {record.message}" if record.message else line
