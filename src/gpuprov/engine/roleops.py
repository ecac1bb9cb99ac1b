"""Helpers of planning and running a role's ops on one host: blocked changes,
secret marking, where a role's bug is, a failed step's own explanation."""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Sequence

from gpuprov import templating
from gpuprov.connectors.base import Connector
from gpuprov.engine.roles import Role
from gpuprov.errors import GpuprovError
from gpuprov.ops.base import Change, Explained, Failure, Op, Step


def settle_blocked(changes: Sequence[Change], check: bool) -> str | None:
    """What becomes of changes that cannot be done (Change.blocked): check mode
    reports each as unknown, saying apply stops there; apply gets the reasons,
    to fail the task before it runs any step (or persists a notification)."""
    reasons = [c.blocked for c in changes if c.blocked]
    if not reasons:
        return None
    if check:
        for change in changes:
            if change.blocked and not change.unknown:
                change.unknown = f"{change.blocked}; apply would stop here"
        return None
    return "; ".join(reasons)


def where_in_role(exc: BaseException, role: Role) -> str:
    """"tasks.py:12: " for the innermost frame of the role's own code, or ""."""
    role_dir = str(role.path) + "/"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith(role_dir)]
    if not frames:
        return ""
    return f"{frames[-1].filename[len(role_dir):]}:{frames[-1].lineno}: "


def secrets_marked(ops: list[Op], secrets: list[str]) -> list[Op]:
    """An op that writes a known secret value of the host is made secret (diff
    masked, no digest in the report), however the role built the content
    ("token=" + value is a plain str): the renderer's marking, once more."""
    values = [v.encode() for v in secrets if v]
    for op in ops:
        if getattr(op, "secret", None) is not False:
            continue
        content = getattr(op, "content", None)
        if content is None and getattr(op, "patch", None) is not None:
            content = json.dumps(op.patch, ensure_ascii=False, default=str).encode()  # type: ignore[attr-defined]
        if (isinstance(content, bytes) and any(v in content for v in values)) or \
                templating.contains_secret(getattr(op, "patch", None)):
            op.secret = True  # type: ignore[attr-defined]
    return ops


def explain_failure(connector: Connector, step: Step, code: int, stdout: str,
                    stderr: str) -> Explained | None:
    """The step's own reading of its failure (see Step.explain), with its
    diagnosis read first; a diagnosis that cannot be read is None."""
    if step.explain is None:
        return None
    diagnosis = None
    if step.diagnose is not None:
        fact = step.diagnose
        with contextlib.suppress(GpuprovError, ValueError, IndexError):
            probe = connector.run(fact.command(), sudo=fact.sudo)
            diagnosis = fact.process(probe.stdout, probe.exit_code)
    return step.explain(Failure(code, stdout, stderr, diagnosis))


def unknown_handlers(roles: Sequence[Role], names: list[str]) -> list[str]:
    """Of the notified `role:handler` names, those no role of the play defines."""
    handlers = {f"{r.name}:{h}" for r in roles for h in r.handlers}
    return [repr(n.partition(":")[2]) for n in dict.fromkeys(names) if n not in handlers]
