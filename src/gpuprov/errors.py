"""Error types that carry what a person needs to act on a failure.

The CLI decides how to print them; nothing below the CLI prints a traceback
for an expected failure.
"""

from __future__ import annotations


class GpuprovError(Exception):
    """An expected failure with a message meant for a person."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InventoryError(GpuprovError):
    """Bad inventory, playbook or vars file: always names the file and line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(where + message, hint)
        self.file = file
        self.line = line


class PlaybookError(InventoryError):
    """Bad playbook or role (missing role, bad tasks.py, bad defaults.yml)."""


class UndefinedVariable(GpuprovError):
    """A role used a variable that no inventory, play or default defines."""

    def __init__(self, name: str, host: str, role: str | None = None) -> None:
        where = f" (role {role})" if role else ""
        super().__init__(
            f"{host}: variable '{name}' is not defined{where}",
            hint=f"set {name} in the inventory (host_vars/group_vars), the play, "
                 f"or with -e {name}=...",
        )
        self.name = name
        self.host = host


class UnreachableHost(GpuprovError):
    """SSH (or local) connection could not be set up.

    kind is one of: dns, refused, timeout, auth, host-key-changed,
    host-key-unknown, host-key-cert (a host certificate that does not hold), closed,
    proxy, sudo.
    """

    def __init__(self, host: str, kind: str, detail: str, hint: str | None = None) -> None:
        super().__init__(f"{host}: unreachable ({kind}): {detail}", hint)
        self.host = host
        self.kind = kind
        self.detail = detail


class TaskFailed(GpuprovError):
    """A command of a task failed on a host."""

    def __init__(self, host: str, task: str, command: str, exit_code: int | None,
                 stderr: str = "", reason: str | None = None, hint: str | None = None) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        parts = [f"{host}: task '{task}' failed"]
        if reason:
            parts.append(f"  reason: {reason}")
        if command:
            parts.append(f"  command: {command}")
        if exit_code is not None:
            parts.append(f"  exit code: {exit_code}")
        if tail:
            indented = "\n".join("    " + ln for ln in tail.splitlines())
            parts.append("  stderr (last lines):\n" + indented)
        super().__init__("\n".join(parts), hint)
        self.host = host
        self.task = task
        self.command = command
        self.exit_code = exit_code
        self.stderr_tail = tail
        self.reason = reason
