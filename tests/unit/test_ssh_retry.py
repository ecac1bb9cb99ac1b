"""When connection setup is tried again (connectors/ssh_retry.py, issue 15): a
host that does not answer costs at most one connect timeout, retries included;
a refusal is retried only when expected; transient closes back off."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from gpuprov.connectors import ssh as ssh_mod
from gpuprov.connectors.ssh import SshConnector, SshSettings
from gpuprov.connectors.ssh_config import SetupError
from gpuprov.connectors.ssh_retry import SetupRetry
from gpuprov.errors import UnreachableHost

pytestmark = pytest.mark.usefixtures("isolated_home")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def silent(detail: str = "no answer") -> SetupError:
    return SetupError("timeout", detail, retry=True)


def test_a_silent_host_gets_one_connect_timeout_in_all() -> None:
    clock = Clock()
    retry = SetupRetry(connect_timeout=10, retries=5, budget=15, clock=clock)
    timeouts, delays = [], []
    while True:
        timeouts.append(retry.next_timeout())
        clock.now += 3.0  # no ARP reply: EHOSTUNREACH after 3 s
        delay = retry.backoff(silent())
        if delay is None:
            break
        delays.append(delay)
        clock.now += delay
    # 3 s, sleep 0.5, 3 s, sleep 1, then what is left of the 10 s
    assert timeouts == [10, 6.5, 2.5]
    assert delays == [0.5, 1.0]
    assert clock.now - 100.0 <= 10.0 + 0.5
    assert retry.tries() == " (after 3 attempts in 10.5s)"  # not the last try's 2.5s


def test_a_full_timeout_is_not_retried() -> None:
    clock = Clock()
    retry = SetupRetry(connect_timeout=3, retries=5, budget=15, clock=clock)
    assert retry.next_timeout() == 3
    clock.now += 3.0
    assert retry.backoff(silent()) is None
    assert retry.tries() == ""


def test_transient_closes_get_a_full_timeout_per_try_within_the_budget() -> None:
    clock = Clock()
    retry = SetupRetry(connect_timeout=10, retries=5, budget=15, clock=clock)
    delays = []
    for _ in range(10):
        assert retry.next_timeout() == 10
        delay = retry.backoff(SetupError("closed", "reset during kex", retry=True))
        if delay is None:
            break
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0]   # 0.5 + 1 + 2 + 4 + 8 would pass the 15 s budget


def test_a_refusal_is_retried_only_when_expected() -> None:
    refused = SetupError("refused", "connection refused", retry=True)
    assert SetupRetry(10, 5, 15, clock=Clock()).backoff(refused) is None
    expected = SetupRetry(10, 5, 15, expect_refusal=True, clock=Clock())
    expected.next_timeout()
    assert expected.backoff(refused) == 0.5


def test_errors_that_are_not_transient_are_final() -> None:
    retry = SetupRetry(10, 5, 15, expect_refusal=True, clock=Clock())
    retry.next_timeout()
    assert retry.backoff(SetupError("auth", "permission denied")) is None


def test_an_unreachable_host_fails_within_the_connect_timeout(key_file, known_hosts,
                                                              monkeypatch) -> None:
    # The stopped fleet host: every SYN ends in EHOSTUNREACH after the ARP probes.
    tries: list[float] = []

    def no_route(address, timeout=None, **kwargs):
        tries.append(timeout)
        time.sleep(min(0.3, timeout))
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: time.sleep(s / 10))
    started = time.monotonic()
    with pytest.raises(UnreachableHost) as info:
        SshConnector(SshSettings("gone", "10.213.0.99", key_file=key_file,
                                 known_hosts=known_hosts, connect_timeout=2.0)).connect()
    took = time.monotonic() - started
    assert info.value.kind == "timeout"
    assert took < 2.3, took
    assert len(tries) >= 2 and all(t <= 2.0 for t in tries), tries
