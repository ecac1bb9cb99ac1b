"""Shared fixtures. The `fleet` fixture brings up real SSH test hosts once per
session (see tests/fleet/README.md) and always tears them down."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator

import pytest

from tests.fleet.errors import FleetUnavailable


def fleet_required() -> bool:
    """In CI (and when asked) a fleet that cannot be built is a failure, not a skip."""
    return os.environ.get("CI") == "true" or os.environ.get("GPUPROV_REQUIRE_FLEET") == "1"


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    # pytest runs fixture teardown on KeyboardInterrupt but not on SIGTERM:
    # a CI timeout or `kill` must still take the hosts and the bridge down.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # gpuprov's controller-side cache (engine/prefetch.py) of every run the tests
    # start goes to a directory of this session, never the user's ~/.cache
    if "GPUPROV_CACHE_DIR" not in os.environ:
        os.environ["GPUPROV_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpuprov-test-cache-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("GPUPROV_CACHE_DIR"),
                                                 ignore_errors=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "fleet" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fleet)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability summary of the injected faults (tests/fleet/faults.py),
    also written as JSON to $GPUPROV_RELIABILITY_REPORT when set."""
    from tests.fleet import faults

    lines = faults.summary_lines()
    if not lines:
        return
    terminalreporter.section("reliability")
    for line in lines:
        terminalreporter.write_line(line)
    if os.environ.get("GPUPROV_RELIABILITY_REPORT"):
        faults.write_summary(os.environ["GPUPROV_RELIABILITY_REPORT"])


@pytest.fixture(scope="session")
def fleet() -> Iterator[object]:
    from tests.fleet.fleet import Fleet

    size = int(os.environ.get("GPUPROV_FLEET_SIZE", "8"))
    the_fleet = Fleet(size=size)
    try:
        the_fleet.up()
    except FleetUnavailable as exc:
        if os.geteuid() == 0:  # a half-built fleet is still torn down
            the_fleet.down()
        if fleet_required():
            pytest.fail(f"the test fleet is required here (CI) but cannot be built: {exc}")
        pytest.skip(f"test fleet unavailable: {exc}")
    except BaseException:
        the_fleet.down()
        raise
    try:
        yield the_fleet
    finally:
        the_fleet.down()


@pytest.fixture(scope="session")
def systemd_hosts(fleet: object) -> list[object]:
    """Two fleet hosts with systemd as PID 1 (variant "systemd", Debian 12's
    systemd 252 under systemd-nspawn; see tests/fleet/README.md), a lab and a
    cluster one, added to the session's fleet once. Tests that need fresh
    disks reset them (fleet.reset)."""
    from tests.fleet.fleet import Fleet

    assert isinstance(fleet, Fleet)
    found = [h for h in fleet.hosts if h.variant == "systemd"]
    return list(found or fleet.add_hosts(2, variant="systemd", groups=("lab", "cluster")))
