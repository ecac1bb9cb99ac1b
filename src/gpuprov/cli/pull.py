"""`gpuprov pull`: run on a host (as root, from its systemd timer or cron entry)
to converge it to the team's git repository; see engine/pull.py for what it
decides and output/pull.py for what it leaves behind."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import click

import gpuprov
from gpuprov.cli.common import guarded, lock_timeout_option, run_options, stderr
from gpuprov.cli.exit_codes import EXIT_FAILED, PULL_CODES, epilog, worst
from gpuprov.engine.executor import RunOptions
from gpuprov.engine.pull import Pull, PullOutcome, Runner, executor_runner
from gpuprov.engine.pullstate import APPLIED, PullRecord, epoch, iso, read_last
from gpuprov.engine.results import RunResult
from gpuprov.model.pullconfig import CHECK, DEFAULT_CONFIG, PullConfig, load_pull_config
from gpuprov.output.pull import (
    changed_count,
    drift_count,
    log_line,
    write_last,
    write_report,
    write_textfile,
)
from gpuprov.output.report import failed_count

#: how the playbook runs (unit tests put a fake here: nothing may touch the machine)
make_runner: Any = executor_runner
#: the splay's sleep (unit tests record it instead)
splay_sleep = time.sleep


@click.command(epilog=epilog("pull"))
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False), help="The pull settings (written by pull-setup).")
@click.option("-C", "--check", is_flag=True,
              help="Only report drift from the commit (mode: check), apply nothing.")
@click.option("--no-splay", is_flag=True,
              help="Fetch now, without the random delay of up to `splay` seconds.")
@lock_timeout_option
@guarded
def pull(config_path: str, check: bool, no_splay: bool, lock_timeout: float) -> int:
    """On a host, as root (its timer or cron runs it): fetch the repository of
    pull.yml, and apply this host's part of it through the local connector
    under the host's run lock; unchanged commit and host: nothing done."""
    config = load_pull_config(config_path)
    if config.splay and not no_splay:
        # so a fleet whose timers fire together does not hit the git server at once
        splay_sleep(random.uniform(0, config.splay))
    started = time.time()
    last = read_last(config.state_dir)
    runner: Runner = make_runner(pull_options(lock_timeout))
    outcome = Pull(config, runner, drift_count, last.get("last_good_commit"), check).run()
    record = make_record(config, outcome, last, check, started)
    code = PULL_CODES[record.result]
    extra = {"inventory": config.inventory, "playbook": config.playbook,
             "limit": config.host, "exit_code": code, "status": record.result}
    now = time.time()
    try:
        if repeats(record, last):
            # nothing new to say (in sync again, the same failure again): a report
            # a run would push the ones worth keeping out of the last keep_reports
            record.report = last["report"]
        else:
            record.report = str(write_report(config.state_dir, record, outcome.run, extra,
                                             config.keep_reports, now))
    except OSError as exc:
        code = _unwritten("the report", exc, code)
    record.duration_s = round(time.time() - started, 3)
    for what, write in (("last.json", lambda: write_last(config.state_dir, record)),
                        ("the textfile", lambda: write_textfile(
                            config.textfile_dir, record, now,
                            now if record.success else epoch(record.last_good_time)))):
        try:
            write()
        except OSError as exc:
            code = _unwritten(what, exc, code)
    click.echo(log_line(record))
    return code


def repeats(record: PullRecord, last: dict[str, Any]) -> bool:
    """This run came to what the last one did, whose report is still there."""
    report = last.get("report")
    return (record.result == last.get("result") and record.commit == last.get("commit")
            and record.message == last.get("message") and record.mode == last.get("mode")
            and record.result != APPLIED and isinstance(report, str) and Path(report).is_file())


def pull_options(lock_timeout: float) -> RunOptions:
    """apply's RunOptions for one host, this one: no tags, no extra vars."""
    return run_options({"forks": 1, "tags": (), "skip_tags": (), "extra_vars": (),
                        "lock_timeout": lock_timeout}, check=False, hosts=1)


def make_record(config: PullConfig, outcome: PullOutcome, last: dict[str, Any], check: bool,
                started: float) -> PullRecord:
    """last.json's record of this run; the last good commit moves only on success."""
    run: RunResult | None = outcome.run
    record = PullRecord(
        time=iso(started), commit=outcome.commit, ref=config.ref,
        mode=CHECK if check else config.mode, result=outcome.result,
        changed=changed_count(run) if run and run.command == "apply" else 0,
        drifted=outcome.drifted,
        failed_tasks=sum(failed_count(h) for h in run.hosts.values()) if run else 0,
        message=outcome.message, last_good_commit=last.get("last_good_commit"),
        last_good_time=last.get("last_good_time"),
        duration_s=round(time.time() - started, 3), gpuprov_version=gpuprov.__version__,
        interval=config.interval)
    if record.success:
        record.last_good_commit, record.last_good_time = outcome.commit, iso(time.time())
    return record


def _unwritten(what: str, exc: OSError, code: int) -> int:
    # the run itself is over: say what could not be recorded, and fail the exit code
    stderr().print(f"error: cannot write {what}: {exc.strerror or exc}: "
                   f"{getattr(exc, 'filename', '') or ''}", markup=False, soft_wrap=True)
    return worst([code, EXIT_FAILED])
