"""`gpuprov run`'s output: a block per host, like ansible's ad-hoc output.

    lab-01 | rc=0 >>
    <stdout>
    <stderr>

Plain text (no markup, no colour), so it pipes and greps the same as it reads.
"""

from __future__ import annotations

from gpuprov.engine.adhoc import AdhocResult


def render_block(result: AdhocResult) -> str:
    """One host's block, ending with a newline."""
    if result.unreachable is not None:
        head, body = f"{result.host} | UNREACHABLE >>", result.unreachable
    elif result.rc is None:
        head, body = f"{result.host} | ERROR >>", result.error or ""
    else:
        status = "" if result.rc == 0 else " FAILED |"
        head, body = f"{result.host} |{status} rc={result.rc} >>", result.stdout + result.stderr
    return head + "\n" + (body if not body or body.endswith("\n") else body + "\n")


def summary(results: list[AdhocResult]) -> str:
    """One line: how many hosts ran it, failed, were unreachable."""
    ok = sum(1 for r in results if not r.failed and r.unreachable is None)
    failed = sum(1 for r in results if r.failed)
    unreachable = sum(1 for r in results if r.unreachable is not None)
    hosts = f"{len(results)} host{'s' if len(results) != 1 else ''}"
    return f"{hosts}: {ok} ok, {failed} failed, {unreachable} unreachable"
