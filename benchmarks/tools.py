"""The tools under test: how each is run against the fleet and how each says
whether a run changed something. gpuprov here; the peers in peers.py."""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.measure import Sample
from tests.fleet.site import IMAGE, site_vars

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# The image and digest the docker double's registry serves (as in
# tests/fleet/test_gpu_stack.py).


@dataclass
class Run:
    """One timed run and what the tool said about it."""

    label: str                     # converge | no-change 1 | no-change 2 | drift-check 1 ...
    sample: Sample
    ok: bool                       # the tool reported success
    changed: int | None            # changes the tool reported (None: not known)
    round_trips: dict[str, int] = field(default_factory=dict)
    note: str = ""
    profile: str = ""              # gpuprov drift-check: its per-host profile

    @property
    def no_change(self) -> bool:
        return self.ok and self.changed == 0

    def to_json(self) -> dict[str, Any]:
        s = self.sample
        hosts = max(len(s.connections), 1)
        return {
            "label": self.label, "ok": self.ok, "changed": self.changed,
            "no_change": self.no_change, "returncode": s.returncode,
            "wall_s": round(s.wall, 3), "controller_cpu_s": round(s.controller_cpu, 3),
            "machine_cpu_s": round(s.machine_cpu, 3),
            "machine_cpu_per_host_s": round(s.machine_cpu / hosts, 4),
            "peak_rss_mib": round(s.peak_rss_mib, 1), "peak_fds": s.peak_fds,
            "connections": s.connections, "round_trips": self.round_trips, "note": self.note,
        }


# Run inside a host after a converge (untimed, not over SSH): the same desired
# state for every tool. Prints one line per thing missing.
STATE_CHECK = r"""
want() { echo "missing: $*"; }
ver() { dpkg-query -W -f '${Status} ${Version}' "$1" 2>/dev/null; }
# held packages say "hold ok installed"
case "$(ver nvidia-open)" in *" ok installed 580."*) ;; *) want nvidia-open 580 ;; esac
for p in nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools \
         libnvidia-container1; do
    case "$(ver $p)" in *" ok installed 1.18.0-1") ;; *) want "$p 1.18.0-1" ;; esac
done
for p in docker-ce chrony "linux-headers-$(uname -r)"; do
    case "$(ver "$p")" in *" ok installed "*) ;; *) want "$p" ;; esac
done
held=$(apt-mark showhold)
for p in nvidia-open nvidia-container-toolkit libnvidia-container1; do
    echo "$held" | grep -qx "$p" || want "hold $p"
done
grep -q '^blacklist nouveau' /etc/modprobe.d/blacklist-nouveau.conf || want nouveau blacklist
grep -q 'Pin: version 580' /etc/apt/preferences.d/gpuprov-nvidia-driver || want driver pin
grep -q '^PasswordAuthentication no' /etc/ssh/sshd_config.d/00-gpuprov.conf || want sshd drop-in
grep -q nvidia-container-runtime /etc/docker/daemon.json || want daemon.json runtime
grep -q nvidia-container-runtime /run/gpuprov-test-double/docker/effective-daemon.json \
    || want "docker restarted with the runtime"
docker image inspect --format x %(image)s >/dev/null 2>&1 || want image
[ "$(wc -c < /etc/gpuprov/jupyter/token)" = 64 ] || want Jupyter token
service gpuprov-jupyter status >/dev/null 2>&1 || want Jupyter running
service chrony status >/dev/null 2>&1 || want chrony running
ls /etc/rc2.d | grep -q gpuprov-jupyter || want Jupyter enabled
"""


def converged_problems(host: Any) -> list[str]:
    """What a converged host lacks of the common desired state (empty: all there)."""
    out = host.exec(STATE_CHECK % {"image": IMAGE}, check=False).stdout
    return [f"{host.name}: {line}" for line in out.splitlines() if line.strip()]


class Tool:
    """A tool's runs against one set of freshly reset hosts."""

    name = ""

    def __init__(self, fleet: Any, hosts: list[Any], work: Path, forks: int | None) -> None:
        self.fleet, self.hosts, self.work, self.forks = fleet, hosts, work, forks

    def prepare(self) -> None:
        """Untimed set-up after the reset (inventory, host-side needs)."""

    def runs(self) -> list[tuple[str, list[str]]]:
        """(label, argv) in order: the converge first."""
        raise NotImplementedError

    def finish(self) -> None:
        """After the last run, also after a failure: stop what the tool left."""

    def env(self) -> dict[str, str]:
        env = {**os.environ, "COLUMNS": "160"}
        env.pop("TERM", None)
        # as on a user's machine: Python caches compiled modules (a sandbox or CI
        # may turn that off, which makes every run compile gpuprov's editable
        # source and the roles afresh; the peers' wheels were compiled by pip)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def judge(self, label: str, sample: Sample) -> Run:
        raise NotImplementedError

    def version(self) -> str:
        return ""


#: the group of the hosts that do not answer (--unreachable)
DEAD_GROUP = "unreachable"


def unreachable_label(count: int, run: str) -> str:
    """A run with `count` dead hosts added; its own prefix, so the plain
    no-change and drift-check means (the ratios) never include it."""
    return f"+{count} unreachable: {run}"


class Gpuprov(Tool):
    name = "gpuprov"

    def __init__(self, fleet: Any, hosts: list[Any], work: Path, forks: int | None,
                 unreachable: list[str] | None = None) -> None:
        super().__init__(fleet, hosts, work, forks)
        #: addresses with no host behind them (fleet.dead_addresses): no SYN-ACK, no ARP reply
        self.unreachable = list(unreachable or [])

    def prepare(self) -> None:
        inventory = self.fleet.inventory(self.hosts)
        inventory["all"]["vars"].update(site_vars(self.fleet.repo_url))
        (self.work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        if self.unreachable:
            (self.work / "inventory-unreachable.yml").write_text(
                yaml.safe_dump(with_dead_hosts(inventory, self.unreachable), sort_keys=False))

    def env(self) -> dict[str, str]:
        # the hosts' fact plans (engine/prefetch.py) start empty in every benchmark:
        # the converge learns them as a first run does
        return {**super().env(), "GPUPROV_CACHE_DIR": str(self.work / "cache")}

    def _cli(self, *args: str) -> list[str]:
        forks = ["--forks", str(self.forks)] if self.forks else []
        return [sys.executable, "-m", "gpuprov.cli", *args, *forks]

    def runs(self) -> list[tuple[str, list[str]]]:
        out = [(label, self._cli("apply", "inventory.yml", "-v", "--report", f"{slug(label)}.json"))
               for label in ("converge", "no-change 1", "no-change 2")]
        # gpuprov status on the converged hosts: its wall and round trips per host (one each)
        out.append(("status", self._cli("status", "inventory.yml", "-v", "--format", "json",
                                        "-o", "status.json")))
        out += [(label, self._cli("drift-check", "inventory.yml", "-v", "--format", "json",
                                  "-o", f"{slug(label)}.json"))
                for label in ("drift-check 1", "drift-check 2")]
        if self.unreachable:
            # the same no-change runs with dead hosts added: what they cost the others
            n, inventory = len(self.unreachable), "inventory-unreachable.yml"
            label = unreachable_label(n, "no-change")
            out.append((label, self._cli("apply", inventory, "-v", "--report",
                                         f"{slug(label)}.json")))
            label = unreachable_label(n, "drift-check")
            out.append((label, self._cli("drift-check", inventory, "-v", "--format", "json",
                                         "-o", f"{slug(label)}.json")))
        return out

    def judge(self, label: str, sample: Sample) -> Run:
        path = self.work / f"{slug(label)}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return Run(label, sample, ok=False, changed=None, note=f"no report {path.name}")
        if label == "status":
            hosts = data["hosts"]
            dead = {n for n, h in hosts.items() if not h.get("reachable")}
            trips = {n: h["round_trips"] for n, h in hosts.items() if n not in dead}
            # 5: an alert on a converged stand-in host is a finding, not a failed run;
            # status changes nothing by construction
            return self._with_dead(Run(label, sample, ok=sample.returncode in (0, 5),
                                       changed=0, round_trips=trips), dead)
        if "drift-check" in label:
            hosts = data["hosts"]
            dead = {n for n, h in hosts.items() if h.get("unreachable")}
            changed = sum(len(h["drift"]) for h in hosts.values())
            trips = {n: h["round_trips"] for n, h in hosts.items()
                     if "round_trips" in h and n not in dead}
            return self._with_dead(Run(label, sample, ok=sample.returncode in (0, 3),
                                       changed=changed, round_trips=trips,
                                       profile=drift_profile(hosts)), dead)
        reports = data["hosts"]
        dead = {h["host"] for h in reports if h.get("unreachable")}
        changed = sum(h["changed"] for h in reports)
        trips = {h["host"]: h["round_trips"] for h in reports if h["host"] not in dead}
        return self._with_dead(Run(label, sample, ok=sample.returncode == 0, changed=changed,
                                   round_trips=trips), dead)

    def _with_dead(self, run: Run, dead: set[str]) -> Run:
        """A run with dead hosts: ok when exactly they, and no other, were
        unreachable (exit 4: unreachable, nothing else wrong)."""
        expected = {f"dead-{i + 1:02d}" for i in range(len(self.unreachable))}
        if not run.label.startswith("+"):
            if dead:
                run.ok, run.note = False, f"unreachable: {', '.join(sorted(dead))}"
            return run
        run.ok = run.sample.returncode == 4 and dead == expected
        if not run.ok:
            run.note = (f"expected exactly {', '.join(sorted(expected))} unreachable (exit 4), "
                        f"got {', '.join(sorted(dead)) or 'none'} (exit "
                        f"{run.sample.returncode})")
        return run

    def version(self) -> str:
        from importlib.metadata import version

        return version("gpuprov")


def drift_profile(hosts: dict[str, Any]) -> str:
    """drift-check's per-host profile (its JSON's), as apply -v prints it."""
    from gpuprov.engine.results import HostResult
    from gpuprov.output.report import profile_text

    return "\n".join(profile_text(HostResult(name, connections=h.get("connections", 0),
                                              round_trips=h.get("round_trips", 0),
                                              profile=h.get("profile", [])))
                     for name, h in hosts.items())


def with_dead_hosts(inventory: dict[str, Any], addresses: list[str]) -> dict[str, Any]:
    """The inventory plus one host per address, dead-01 ..., in their own group
    (site.yml's plays are `hosts: all`, so every play tries them)."""
    out = json.loads(json.dumps(inventory))   # a deep copy: the base inventory stays
    out["all"]["children"][DEAD_GROUP] = {"hosts": {
        f"dead-{i + 1:02d}": {"ansible_host": address} for i, address in enumerate(addresses)}}
    return out


def slug(label: str) -> str:
    """A run's label as a file name: no-change 1 -> no-change-1."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
