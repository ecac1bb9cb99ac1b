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


# The symlink guards (ops.atomic.safe_dirs_check and not_symlink) are long
# and the same in every write, chown and chmod; tests of the surrounding
# command compare without them, and test_ops_files_hygiene.py tests them.
_DIRS_CHECK = re.compile(r'\{ gp_u=\$\(id -u\) .*?r=\$\(dirname -- "\$r"\); done; \} && ')
_NOT_SYMLINK = re.compile(r"\{ \[ ! -L .*? \] \|\| \{ echo .*?"
                          r"refusing to change its owner or mode'? >&2; false; \}; \} && ")


def without_upload_check(shell: str) -> str:
    """The command without the upload digest and the symlink guards."""
    return _NOT_SYMLINK.sub("", _DIRS_CHECK.sub("", _UPLOAD_CHECK.sub("", shell)))
