"""Reboot a host and wait for it to come back.

A fresh boot is recognised by a marker file in /run disappearing (/run is a
tmpfs, emptied by every boot), not by boot_id alone: containers and some
virtualised kernels keep boot_id across what users call a reboot.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from gpuprov.command import Command
from gpuprov.connectors.base import Connector
from gpuprov.errors import TaskFailed, UnreachableHost

BOOT_MARKER = "/run/gpuprov/boot-marker"
DEFAULT_TIMEOUT = 600.0


def reboot_and_wait(connector: Connector, timeout: float = DEFAULT_TIMEOUT,
                    sleep: Callable[[float], None] = time.sleep) -> float:
    """Reboot, reconnect with backoff until the marker is gone; returns seconds taken."""
    host = connector.host_name
    token = secrets.token_hex(8)
    started = time.monotonic()
    mark = Command.script(f"mkdir -p /run/gpuprov && echo {token} > {BOOT_MARKER}")
    res = connector.run(mark, sudo=True)
    if not res.ok:
        raise TaskFailed(host, "reboot", mark.display(), res.exit_code, res.stderr)
    # Detached and delayed, so this command returns before sshd goes away.
    trigger = Command.script("nohup sh -c 'sleep 1; /sbin/reboot || reboot' "
                             ">/dev/null 2>&1 </dev/null &")
    res = connector.run(trigger, sudo=True)
    if not res.ok:
        raise TaskFailed(host, "reboot", trigger.display(), res.exit_code, res.stderr)
    connector.close()
    delay = 1.0
    sleep(2.0)
    last = "no answer yet"
    while time.monotonic() - started < timeout:
        try:
            connector.connect()
            res = connector.run(f"cat {BOOT_MARKER} 2>/dev/null; true")
            if token not in res.stdout:
                return time.monotonic() - started
            last = "still up: the reboot has not happened yet"
            connector.close()
        except UnreachableHost as exc:
            last = exc.detail
        sleep(delay)
        delay = min(delay * 2, 10.0)
    raise UnreachableHost(host, "timeout", f"did not come back within {timeout:g}s after "
                          f"reboot (last: {last})",
                          hint="check the host's console; rerun once it is up")
