"""Pending handler notifications, persisted on the target.

A notification is written to the host BEFORE the change that triggers it
runs, and removed only after the handler succeeded: a run that dies in
between still restarts the service on the next run.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact
from gpuprov.ops.base import Step

STATE_DIR = "/var/lib/gpuprov"
PENDING_FILE = f"{STATE_DIR}/pending-handlers"
# In /run: a (real or simulated) reboot clears it, which is the point.
REBOOT_REQUIRED_FILE = "/run/gpuprov/reboot-required"


@dataclass(frozen=True)
class PendingHandlers(Fact[tuple[str, ...]]):
    """Handler names ("role:handler") left pending by earlier runs."""

    def command(self) -> str:
        return f"cat {PENDING_FILE} 2>/dev/null; true"

    def process(self, output: str, exit_code: int) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ln.strip() for ln in output.splitlines() if ln.strip()))


@dataclass(frozen=True)
class RebootRequired(Fact["str | None"]):
    """Why a reboot is pending (gpuprov's marker, or Debian's reboot-required)."""

    def command(self) -> str:
        return (f"cat {REBOOT_REQUIRED_FILE} 2>/dev/null || "
                "{ test -e /var/run/reboot-required && echo 'the system says so "
                "(/var/run/reboot-required)'; }; true")

    def process(self, output: str, exit_code: int) -> str | None:
        return output.strip() or None


def persist_step(names: list[str]) -> Step:
    lines = "".join(f"{n}\n" for n in names).encode()
    return Step(Command("mkdir", "-p", STATE_DIR, Raw("&&"), "cat", Raw(">>"), PENDING_FILE),
                stdin=lines)


def clear_step(name: str) -> Step:
    # Rewrite without that line; an empty result removes the file.
    tmp = f"{PENDING_FILE}.tmp"
    return Step(Command.script(
        f"if [ -f {PENDING_FILE} ]; then "
        f"grep -vxF -e {Command(name).shell()} {PENDING_FILE} > {tmp}; "
        f"if [ -s {tmp} ]; then mv -f {tmp} {PENDING_FILE}; "
        f"else rm -f {tmp} {PENDING_FILE}; fi; fi"))


def reboot_required_step(reason: str) -> Step:
    return Step(Command.script(
        f"mkdir -p {posixpath.dirname(REBOOT_REQUIRED_FILE)} && "
        f"printf '%s\\n' {Command(reason).shell()} "
        f"> {REBOOT_REQUIRED_FILE}"))
