"""Exit codes, owned once (design.md): apply 0 ok, 2 a task failed, 4 a
host unreachable; drift-check 0 in sync, 3 drift, 4 unreachable (no drift
seen elsewhere); verify 0 all pass, 2 a host failed, 4 a host unreachable;
1 a usage, input or internal error."""

from __future__ import annotations

from gpuprov.engine.results import RunResult

EXIT_OK, EXIT_ERROR, EXIT_FAILED, EXIT_DRIFT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def apply_exit_code(run: RunResult) -> int:
    if run.any_failed or run.aborted:
        return EXIT_FAILED
    if run.any_unreachable:
        return EXIT_UNREACHABLE
    return EXIT_OK


def drift_exit_code(run: RunResult) -> int:
    # A host whose check failed could not be compared: an error (1), unless
    # drift was found elsewhere, which is what a monitor must hear about.
    if run.any_changed:
        return EXIT_DRIFT
    if run.any_failed:
        return EXIT_ERROR
    if run.any_unreachable:
        return EXIT_UNREACHABLE
    return EXIT_OK
