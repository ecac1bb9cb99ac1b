"""Exit codes, owned once: every command's, their precedence, and the table its
--help, the README and the summary line state.

One meaning per code for every command: 0 ok (in sync), 1 a usage or input
error (nothing ran), 2 a host failed (a task failed, a host could not be
checked, a command failed), 3 drift (drift-check), 4 a host unreachable, 130
interrupted, 5 unhealthy (status: an alert). Several hosts, several outcomes:
the worst wins, in Ansible's order: failed (2) > unreachable (4) > drift (3) >
ok (0); for status an alert comes first: unhealthy (5) > failed (2) >
unreachable (4) > ok (0), as an alert is a known problem a pager must hear,
where an unreachable host may be a network blip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpuprov.engine import pullstate
from gpuprov.engine.health import Alert
from gpuprov.engine.results import FAILED as HOST_FAILED
from gpuprov.engine.results import UNREACHABLE as HOST_UNREACHABLE
from gpuprov.engine.results import RunResult
from gpuprov.output.status import FAILED as STATUS_FAILED
from gpuprov.output.status import UNREACHABLE as STATUS_UNREACHABLE
from gpuprov.output.status import host_state
from gpuprov.output.summary import (
    DRIFT,
    FAILED,
    HEALTHY,
    IN_SYNC,
    UNHEALTHY,
    UNREACHABLE,
    Outcome,
    host_drift_status,
)

EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_DRIFT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_UNHEALTHY = 5
EXIT_INTERRUPTED = 130

#: the worst first: a run's code is the first of these that one of its hosts has
PRECEDENCE = (EXIT_FAILED, EXIT_UNREACHABLE, EXIT_DRIFT, EXIT_OK)
#: a command whose order differs: status puts an alert above all
PRECEDENCES = {"status": (EXIT_UNHEALTHY, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_OK)}

#: the word for each code, in summary lines, JSON ("status") and Prometheus
STATUS = {EXIT_OK: "ok", EXIT_ERROR: "error", EXIT_FAILED: FAILED, EXIT_DRIFT: DRIFT,
          EXIT_UNREACHABLE: UNREACHABLE, EXIT_UNHEALTHY: UNHEALTHY,
          EXIT_INTERRUPTED: "interrupted"}

#: what each code means for each command (None: the command never exits with it)
MEANINGS: dict[str, dict[int, str | None]] = {
    "apply": {EXIT_OK: "every host ok (changed or not)", EXIT_FAILED: "a task failed on a "
              "host (or the run aborted: max-fail)", EXIT_DRIFT: None},
    "drift-check": {EXIT_OK: "every host in sync", EXIT_FAILED: "a host failed to be checked",
                    EXIT_DRIFT: "drift found"},
    "verify": {EXIT_OK: "every host passes", EXIT_FAILED: "a host failed verification",
               EXIT_DRIFT: None},
    "facts": {EXIT_OK: "every host answered", EXIT_FAILED: "a host's answer could not be read",
              EXIT_DRIFT: None},
    "onboard": {EXIT_OK: "onboarded and verified", EXIT_FAILED: "the playbook or verify failed",
                EXIT_DRIFT: None, EXIT_ERROR: "usage or input error, or a step before the "
                "playbook stopped"},
    "run": {EXIT_OK: "the command exited 0 on every host",
            EXIT_FAILED: "the command failed on a host", EXIT_DRIFT: None},
    "status": {EXIT_OK: "every host healthy", EXIT_FAILED: "a host's status could not be read",
               EXIT_DRIFT: None, EXIT_UNHEALTHY: "unhealthy: an alert on a host"},
    "k8s-handoff": {EXIT_OK: "printed (or written with -o)", EXIT_FAILED: None,
                    EXIT_DRIFT: None, EXIT_UNREACHABLE: "--facts: a host unreachable or "
                    "unread (printed all the same)"},
    "pull": {EXIT_OK: "applied, unchanged or in sync", EXIT_ERROR: "bad pull.yml or usage "
             "(nothing ran)", EXIT_FAILED: "failed: the fetch, the signature, the commit or "
             "a task", EXIT_DRIFT: "drift (check mode)", EXIT_UNREACHABLE: "busy: a run holds "
             "the host's lock (retried at the next interval)"},
}

#: commands that work on one host, this one: no "worst wins" to explain
ONE_HOST = frozenset({"pull"})

_COMMON = {EXIT_UNREACHABLE: "a host unreachable",
           EXIT_ERROR: "usage or input error (nothing ran)",
           EXIT_INTERRUPTED: "interrupted (Ctrl-C)"}


def exit_code_table(command: str) -> list[tuple[int, str]]:
    """(code, meaning) of each code a command exits with, lowest first."""
    meanings = {**_COMMON, **{k: v for k, v in MEANINGS[command].items() if v is not None}}
    return sorted(meanings.items())


def epilog(command: str) -> str:
    """The exit codes for a command's --help (\\b: click keeps the lines as they are)."""
    codes = [c for c, _ in exit_code_table(command)]
    worst = " > ".join(str(c) for c in PRECEDENCES.get(command, PRECEDENCE) if c in codes)
    lines = [f"  {code:<3}  {meaning}" for code, meaning in exit_code_table(command)]
    if command in ONE_HOST:
        return "\b\nExit codes:\n" + "\n".join(lines)
    return "\b\nExit codes (several hosts: the worst wins, " + worst + "):\n" + "\n".join(lines)


def worst(codes: Iterable[int], command: str | None = None) -> int:
    """The code of several hosts' outcomes: failed > unreachable > drift > ok
    (status: unhealthy > failed > unreachable > ok)."""
    found = set(codes)
    order = PRECEDENCES.get(command or "", PRECEDENCE)
    return next((code for code in order if code in found), EXIT_OK)


def outcome(code: int, command: str = "apply") -> Outcome:
    zero = {"drift-check": IN_SYNC, "status": HEALTHY}.get(command, STATUS[EXIT_OK])
    word = zero if code == EXIT_OK else STATUS[code]
    return Outcome(code, word)


def apply_outcome(run: RunResult) -> Outcome:
    codes = {EXIT_FAILED if h.status == HOST_FAILED else EXIT_UNREACHABLE
             if h.status == HOST_UNREACHABLE else EXIT_OK for h in run.hosts.values()}
    if run.aborted:
        codes.add(EXIT_FAILED)
    return outcome(worst(codes))


def drift_outcome(run: RunResult) -> Outcome:
    by_status = {IN_SYNC: EXIT_OK, DRIFT: EXIT_DRIFT, FAILED: EXIT_FAILED,
                 UNREACHABLE: EXIT_UNREACHABLE}
    codes = {by_status[host_drift_status(h)] for h in run.hosts.values()}
    if run.aborted:
        codes.add(EXIT_FAILED)
    return outcome(worst(codes), "drift-check")


def apply_exit_code(run: RunResult) -> int:
    return apply_outcome(run).code


def drift_exit_code(run: RunResult) -> int:
    return drift_outcome(run).code


def status_outcome(status: Mapping[str, Mapping[str, Any]],
                   alerts: Mapping[str, list[Alert]]) -> Outcome:
    """gpuprov status: unhealthy (an alert) > failed > unreachable > healthy."""
    by_state = {HEALTHY: EXIT_OK, UNHEALTHY: EXIT_UNHEALTHY, STATUS_FAILED: EXIT_FAILED,
                STATUS_UNREACHABLE: EXIT_UNREACHABLE}
    codes = {by_state[host_state(data, alerts.get(name, []))] for name, data in status.items()}
    return outcome(worst(codes, "status"), "status")


#: `gpuprov pull`'s code for each result (engine/pullstate.py): one host, one result
PULL_CODES = {pullstate.APPLIED: EXIT_OK, pullstate.UNCHANGED: EXIT_OK,
              pullstate.DRIFT: EXIT_DRIFT, pullstate.FAILED: EXIT_FAILED,
              pullstate.FETCH_FAILED: EXIT_FAILED, pullstate.BAD_COMMIT: EXIT_FAILED,
              pullstate.UNSIGNED: EXIT_FAILED, pullstate.BUSY: EXIT_UNREACHABLE}


def host_code(*, failed: bool = False, unreachable: bool = False, drift: bool = False) -> int:
    """One host's code (verify, facts, run): what made it fail, else drift, else ok."""
    if unreachable:
        return EXIT_UNREACHABLE
    return EXIT_FAILED if failed else EXIT_DRIFT if drift else EXIT_OK
