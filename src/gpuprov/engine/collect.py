"""`gpuprov facts`: the system facts of each host, as JSON data."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpuprov.engine.connect import connector_for
from gpuprov.engine.executor import ConnectorFactory, RunOptions, internal_error
from gpuprov.engine.hostrun import HostRun
from gpuprov.facts.system import SystemFacts
from gpuprov.model.inventory import Host


def collect_facts(hosts: Sequence[Host], options: RunOptions,
                  connector_factory: ConnectorFactory = connector_for) -> dict[str, Any]:
    """`gpuprov facts`: the system facts of each host (one round trip each), as JSON data."""
    def one(host: Host) -> tuple[str, Any]:
        connector = connector_factory(host, options.connect)
        try:
            run = HostRun(host, connector, [], check=True)
            result = run.run()
            if result.unreachable or result.error:
                return host.name, {"unreachable": result.unreachable, "error": result.error}
            system = SystemFacts.from_facts(run.facts)
            return host.name, {**dataclasses.asdict(system),
                               "os_family": system.os.family, "supported": system.os.supported,
                               "reboot_pending": result.reboot_pending,
                               "connections": result.connections,
                               "round_trips": result.round_trips}
        except Exception as exc:
            return host.name, {"error": internal_error(exc)}
        finally:
            connector.close()

    with ThreadPoolExecutor(max(1, min(options.forks, len(hosts) or 1))) as pool:
        return dict(pool.map(one, hosts))
