"""The fleet's network: one bridge, one veth per host, one private /24.

Hosts get no default route and the bridge forwards nowhere, so nothing a
host sends can leave this machine. The controller (the test process)
reaches hosts through the bridge address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from pathlib import Path

from tests.fleet.errors import FleetError, FleetUnavailable

# Several fleets may coexist (e.g. the kill-and-rerun test starts a second
# one): each has its own id, bridge, subnet and run dir.
FLEET_ID = int(os.environ.get("GPUPROV_FLEET_ID", "0"))
BRIDGE = f"gpfbr{FLEET_ID}"
SUBNET = ipaddress.ip_network(
    os.environ.get("GPUPROV_FLEET_SUBNET", f"10.213.{FLEET_ID}.0/24"))
GATEWAY = SUBNET.network_address + 1
FIRST_HOST = 11


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def host_address(index: int) -> str:
    address = SUBNET.network_address + FIRST_HOST + index
    if address not in SUBNET or address == SUBNET.broadcast_address:
        raise FleetError(f"fleet subnet {SUBNET} has no room for host #{index}")
    return str(address)


def veth_name(index: int) -> str:
    return f"gpf{FLEET_ID}v{index}"


def _subnet_in_use() -> str | None:
    routes = ip("-o", "route", "show", "table", "all").stdout.splitlines()
    for line in routes:
        dest = line.split()[0]
        if dest in ("default", "local", "broadcast", "unreachable", "multicast"):
            continue
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.overlaps(SUBNET) and f"dev {BRIDGE}" not in line:
            return line
    return None


def create_bridge() -> None:
    delete_bridge()
    clash = _subnet_in_use()
    if clash:
        raise FleetUnavailable(
            f"fleet subnet {SUBNET} is already routed here ({clash}); "
            "set GPUPROV_FLEET_SUBNET to a free private /24")
    ip("link", "add", BRIDGE, "type", "bridge")
    ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    _no_ipv6(BRIDGE)
    ip("link", "set", BRIDGE, "up")


def delete_bridge() -> None:
    ip("link", "del", BRIDGE, check=False)


def attach_host(index: int, netns_pid: int) -> None:
    """A veth pair: one end on the bridge, the other as eth0 in the host."""
    name = veth_name(index)
    ip("link", "del", name, check=False)
    # A stable MAC per host: after a stop/start the bridge's ARP cache
    # still points at the right interface (a new random MAC made the
    # controller's SYNs vanish until the stale entry expired).
    mac = f"02:00:0a:d5:{FLEET_ID:02x}:{index:02x}"
    ip("neigh", "flush", "to", host_address(index), "dev", BRIDGE, check=False)
    res = ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "address", mac,
             "netns", str(netns_pid), check=False)
    if res.returncode != 0:
        raise FleetError(f"cannot create veth for host #{index}: {res.stderr.strip()}")
    _no_ipv6(name)
    ip("link", "set", name, "master", BRIDGE)
    ip("link", "set", name, "up")


def _no_ipv6(interface: str) -> None:
    # Only for interfaces this run created: no IPv6 chatter on the fleet bridge.
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6").write_text("1")
