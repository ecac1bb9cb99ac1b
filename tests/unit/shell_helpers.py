"""Helpers for tests that compare generated shell commands."""

from __future__ import annotations

import re

# The upload integrity check (ops.atomic.received_intact) carries a content
# digest; tests of the surrounding command compare without it, and
# test_upload_check.py tests it on its own.
_UPLOAD_CHECK = re.compile(
    r' && \{ \[ "\$\('
    r'(?:sha256sum <.*? \| cut -c1-64\)" = [0-9a-f]{64}|wc -c <.*?\)" -eq \d+) \] \|\| '
    r"\{ echo 'gpuprov: upload incomplete \(\d+ bytes expected; connection lost\?\), "
    r"target left unchanged' >&2; exit 1; \}; \}")


def without_upload_check(shell: str) -> str:
    return _UPLOAD_CHECK.sub("", shell)
