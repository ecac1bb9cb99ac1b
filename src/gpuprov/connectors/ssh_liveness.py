"""Is the host still there? OpenSSH's ServerAliveInterval / ServerAliveCountMax
for a paramiko transport.

A host whose network is cut sends nothing, not even a reset: without this,
a read waits for the kernel's TCP retransmission timeout (~15 minutes).
Silence on a channel proves nothing (apt install can print nothing for
minutes), so liveness is asked of the transport: a global request that wants
a reply ("keepalive@openssh.com"; sshd answers an unknown request with a
failure, which is an answer too). paramiko's own set_keepalive() never waits
for a reply, hence this. When no reply has come for `interval * count_max`
seconds the transport is closed: every blocked read on it wakes up, and the
connector reports the host unreachable (kind "timeout").
"""

from __future__ import annotations

import threading
import time

import paramiko

KEEPALIVE_REQUEST = "keepalive@openssh.com"


class Liveness:
    """Pings `transport` every `interval` seconds; closes it after
    `interval * count_max` seconds without any reply (then `dead` is set).
    Its threads end with the transport."""

    def __init__(self, transport: paramiko.Transport, interval: float, count_max: int) -> None:
        self.transport = transport
        self.interval = interval
        self.count_max = count_max
        self.dead = threading.Event()
        self._last_reply = time.monotonic()
        self._threads = [threading.Thread(target=self._ping, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]

    @property
    def limit(self) -> float:
        """Seconds of silence after which the host is declared gone."""
        return self.interval * self.count_max

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _ping(self) -> None:
        # global_request() blocks until the reply or until the transport is
        # closed, so the pinger never piles up requests; _watch judges time.
        while self.transport.is_active():
            try:
                self.transport.global_request(KEEPALIVE_REQUEST, wait=True)
            except (paramiko.SSHException, EOFError, OSError):
                return
            if not self.transport.is_active():
                return
            self._last_reply = time.monotonic()
            time.sleep(self.interval)

    def _watch(self) -> None:
        # Checked a few times per interval, so the verdict comes within a
        # fraction of an interval of the limit.
        while self.transport.is_active():
            time.sleep(min(self.interval / 4, 1.0))
            if not self.transport.is_active():
                return
            if time.monotonic() - self._last_reply > self.limit:
                self.dead.set()
                self.transport.close()
                return
