"""When a failed SSH connection setup is tried again, and how long the next try may take.

Transient failures are retried with backoff (0.5 s, doubling) within `retries`
and `budget`: a connection closed during the handshake (sshd restarting,
MaxStartups), a reset, and a refusal when the caller expects one (right after
an sshd reload). A host that does not answer (kind "timeout": no SYN-ACK, no
route, no ARP reply, a handshake that stalls) costs at most `connect_timeout`
in all, retries included: after the first silence the remaining tries share
what is left of one connect timeout, since waiting a full timeout per try
turned one stopped host into 20 s of a drift-check (issue 15). A reboot is
waited for by the engine's own loop, not here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuprov.connectors.ssh_config import SetupError

#: no try is started with less than this left: it could not even finish a TCP handshake
MIN_TRY = 0.2


@dataclass
class SetupRetry:
    connect_timeout: float
    retries: int
    budget: float
    expect_refusal: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    attempt: int = 0
    slept: float = 0.0
    delay: float = 0.5
    started: float = field(init=False)
    #: set at the first silence: the time by which the host must have answered
    silent_deadline: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.started = self._now()

    def _now(self) -> float:
        return self.clock()

    def next_timeout(self) -> float:
        """The connect timeout of the try about to start (counts it as an attempt)."""
        self.attempt += 1
        if self.silent_deadline is None:
            return self.connect_timeout
        return max(self.silent_deadline - self._now(), MIN_TRY)

    def backoff(self, exc: SetupError) -> float | None:
        """Seconds to sleep before the next try, or None: give up (raise `exc`)."""
        now = self._now()
        # `slept` keeps the budget honest when sleep is patched out in tests.
        spent = max(now - self.started, self.slept)
        if exc.kind == "timeout" and self.silent_deadline is None:
            self.silent_deadline = self.started + self.connect_timeout
        retry = exc.retry and (self.expect_refusal or exc.kind != "refused")
        if (not retry or self.attempt > self.retries or spent + self.delay > self.budget):
            return None
        if (self.silent_deadline is not None
                and max(now, self.started + spent) + self.delay + MIN_TRY > self.silent_deadline):
            return None
        delay = self.delay
        self.slept += delay
        self.delay *= 2
        return delay

    def tries(self) -> str:
        """What the final error adds about the tries made."""
        if self.attempt <= 1:
            return ""
        # the last try's own timeout (in the message) is only what was left of the budget
        spent = max(self._now() - self.started, self.slept)
        return f" (after {self.attempt} attempts in {spent:.1f}s)"
