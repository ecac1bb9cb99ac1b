"""The run locks of all the hosts of one run (engine/hostlock.py is one host's).

A host's lock is taken for its first play and let go right after its last,
so another operator's run waits for this host's own work, not for the
slowest host of this run.

Two runs allowed to wait for each other (--lock-timeout) over the same hosts
must never each hold one host while waiting for the other's: with a single
play that cannot happen (a host's work never waits on another host while it
holds its lock), but with several plays a host's lock is held across the
barrier between plays. So when a run may wait and has several plays, it takes
every host's lock before the first play, one host at a time in one order
that every gpuprov run follows (by host name): waits then never form a cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from gpuprov.connectors.base import Connector
from gpuprov.engine.hostlock import HostLock
from gpuprov.errors import GpuprovError


class RunLocks:
    """The host locks one run holds, by inventory host name."""

    def __init__(self, command: str, wait: float, path: str) -> None:
        self.command, self.wait, self.path = command, wait, path
        self._held: dict[str, HostLock] = {}
        # a host whose lock (or connection) failed while taking them in order:
        # its first play reports that, without trying (and waiting) again
        self._failed: dict[str, GpuprovError] = {}
        self._mutex = threading.Lock()

    def take(self, name: str, connector: Connector, script: str = "") -> str | None:
        """Take the host's lock unless this run holds it already (HostBusy when
        another run keeps it longer than `wait`). `script` runs right after the
        lock is taken, in the same round trip: its output is returned (None
        when it did not run: the lock was held already, or cannot be taken)."""
        with self._mutex:
            if name in self._held:
                return None
            failed = self._failed.pop(name, None)
        if failed is not None:
            raise failed
        lock = HostLock(connector, self.command, self.wait, self.path)
        if not lock.acquire(script):
            return None
        with self._mutex:
            self._held[name] = lock
        return lock.output if script else None

    def take_in_order(self, hosts: Sequence[tuple[str, Connector]], forks: int) -> None:
        """Every host's lock before the first play: connect in parallel, then
        lock one host at a time, sorted by name."""
        def connect(pair: tuple[str, Connector]) -> None:
            try:
                pair[1].connect()
            except GpuprovError as exc:
                with self._mutex:
                    self._failed[pair[0]] = exc

        with ThreadPoolExecutor(max(1, min(forks, len(hosts)))) as pool:
            list(pool.map(connect, hosts))
        for name, connector in sorted(hosts, key=lambda pair: pair[0]):
            with self._mutex:
                if name in self._failed:
                    continue
            try:
                self.take(name, connector)
            except GpuprovError as exc:
                with self._mutex:
                    self._failed[name] = exc

    def holds(self, name: str) -> bool:
        """Whether this run holds the host's lock already."""
        with self._mutex:
            return name in self._held

    def forget(self, name: str) -> None:
        """The host rebooted: its holder is gone with it, nothing to let go."""
        with self._mutex:
            self._held.pop(name, None)

    def release(self, name: str, last: str = "") -> None:
        """Let the host's lock go, running `last` on it first (HostLock.release)."""
        with self._mutex:
            lock = self._held.pop(name, None)
        if lock is not None:
            lock.release(last)

    def release_all(self) -> None:
        with self._mutex:
            held, self._held = list(self._held.values()), {}
            self._failed.clear()
        for lock in held:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - closing must not hide the run's outcome
                continue
