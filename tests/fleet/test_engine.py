"""The engine end to end over real SSH (issue 4's acceptance): the `gpuprov`
command with a site.yml of the base role on 8 fleet hosts: converge,
idempotence, drift after tampering, check mode that writes nothing,
unreachable hosts, and a killed run that leaves no partial file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost

REPO = Path(__file__).resolve().parents[2]
# What the hosts' state is judged by in "check mode writes nothing".
# The run lock's holder line (/run/gpuprov/run.lock) is the one thing check mode writes.
SNAPSHOT = ("cd / && find etc var/lib/gpuprov var/lib/dpkg run/gpuprov run/chrony -xdev "
            "! -path run/gpuprov/run.lock \\( -type f -o -type l \\) 2>/dev/null "
            "| sort > /tmp/.snap-list; "
            "xargs -r stat -c '%n %a %U %G %Y %s' < /tmp/.snap-list; "
            "xargs -r sha256sum < /tmp/.snap-list 2>/dev/null; rm -f /tmp/.snap-list; "
            # ps alone, not in a pipeline: a pipeline's other member shows as
            # `sh` or as itself depending on when ps reads /proc
            "ps -eo comm= > /tmp/.snap-ps; sort /tmp/.snap-ps; rm -f /tmp/.snap-ps")


def gpuprov(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it (no terminal)."""
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("TERM", None)
    return subprocess.run([sys.executable, "-m", "gpuprov.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def report(path: Path) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads(path.read_text())["hosts"]}


def changed_resources(host: dict) -> set[str]:
    return {c["resource"] for t in host["tasks"] if t["status"] == "changed"
            and not t.get("handler") for c in t.get("changes", [])}


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> list[FleetHost]:
    """8 hosts with fresh disks (other tests' packages must not leak in here)."""
    chosen = [h for h in fleet.hosts if h.variant == "default"][:8]
    assert len(chosen) == 8, "the engine acceptance runs on 8 hosts"
    for host in chosen:
        fleet.reset(host)
    return chosen


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("engine")
    inventory = fleet.inventory(hosts)
    # The hosts reach the fleet's bridge address only: use it as their NTP server.
    inventory["all"]["vars"]["base_ntp_servers"] = [fleet.repo_url.split("//")[1].split(":")[0]]
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    # The engine's acceptance uses the base role alone (./playbooks/site.yml wins
    # over the bundled one); the GPU stack has its own test (test_gpu_stack.py).
    (work / "playbooks").mkdir()
    (work / "playbooks" / "site.yml").write_text(
        "- name: base system\n  hosts: all\n  roles: [base]\n")
    return work


@pytest.fixture(scope="module")
def converged(workdir: Path, hosts: list[FleetHost]) -> dict[str, dict]:
    first = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    return report(workdir / "first.json")


def snapshot(host: FleetHost) -> str:
    return host.exec(SNAPSHOT).stdout


def test_apply_converges_and_a_second_apply_changes_nothing(
        workdir: Path, hosts: list[FleetHost], converged: dict[str, dict]) -> None:
    assert set(converged) == {h.name for h in hosts}
    for name, host in converged.items():
        assert host["changed"] >= 4, (name, host)
        assert host["connections"] == 1, "one SSH connection per host for the whole run"
    ntp = yaml.safe_load((workdir / "inventory.yml").read_text())["all"]["vars"][
        "base_ntp_servers"][0]
    for host in hosts:
        assert host.exec("service chrony status", check=False).returncode == 0
        # The handler restarted chrony after the drop-in changed: the running
        # daemon's effective config has the server.
        effective = host.read_file("/run/gpuprov-test-double/chrony/effective.conf") or ""
        assert f"server {ntp} iburst" in effective
        assert host.name in (host.read_file("/etc/motd") or "")
        assert host.read_file("/var/lib/gpuprov/pending-handlers") is None

    second = gpuprov("apply", "inventory.yml", "--report", "second.json", "-v", cwd=workdir)
    assert second.returncode == 0, second.stdout + second.stderr
    again = report(workdir / "second.json")
    assert {name: h["changed"] for name, h in again.items()} == dict.fromkeys(converged, 0)
    for host in again.values():
        # sudo probe + the run lock + one facts batch for system facts + one for every op's facts
        assert host["round_trips"] <= 4, host
        assert host["connections"] == 1
    # -v: each host's recap line counts them ("1 round trip" since issue 17's plurals)
    assert re.search(r"\b1 connection, \d+ round trips?\b", second.stdout), second.stdout

    drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_tampering_is_found_and_fixed_on_exactly_those_hosts(
        workdir: Path, hosts: list[FleetHost], converged: dict[str, dict]) -> None:
    edited, removed, stopped = hosts[0], hosts[1], hosts[2]
    edited.write_file("/etc/motd", "hacked\n")
    removed.exec("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q chrony")
    stopped.exec("service chrony stop")

    before = {h.name: snapshot(h) for h in hosts}
    check = gpuprov("apply", "inventory.yml", "--check", "--diff", cwd=workdir)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "-hacked" in check.stdout                      # the diff of /etc/motd
    assert {h.name: snapshot(h) for h in hosts} == before, "check mode must write nothing"

    drift = gpuprov("drift-check", "inventory.yml", "--format", "json", cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    data = json.loads(drift.stdout)
    drifting = {name: {d["resource"] for d in h["drift"]}
                for name, h in data["hosts"].items() if h["status"] != "in_sync"}
    assert drifting == {
        edited.name: {"file /etc/motd"},
        removed.name: {"package chrony", "service chrony"},
        stopped.name: {"service chrony"},
    }
    assert {h.name: snapshot(h) for h in hosts} == before, "drift-check must write nothing"

    fix = gpuprov("apply", "inventory.yml", "--report", "fix.json", cwd=workdir)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    fixed = {name: changed_resources(h) for name, h in report(workdir / "fix.json").items()
             if h["changed"]}
    assert set(fixed) == set(drifting)
    assert fixed[edited.name] == {"file /etc/motd"}
    assert fixed[stopped.name] == {"service chrony"}
    assert "package chrony" in fixed[removed.name]

    after = gpuprov("drift-check", "inventory.yml", cwd=workdir)
    assert after.returncode == 0, after.stdout + after.stderr


def test_an_unreachable_host_is_named_and_the_others_converge(
        workdir: Path, hosts: list[FleetHost], converged: dict[str, dict]) -> None:
    down = hosts[3]
    hosts[4].write_file("/etc/motd", "changed meanwhile\n")
    down.stop()
    try:
        run = gpuprov("apply", "inventory.yml", "--report", "down.json", cwd=workdir)
        assert run.returncode == 4, run.stdout + run.stderr
        result = report(workdir / "down.json")
        assert result[down.name]["status"] == "unreachable"
        reason = result[down.name]["unreachable"]
        assert down.name in reason and any(
            kind in reason for kind in ("(timeout)", "(refused)", "no route")), reason
        assert down.name in run.stdout and "unreachable" in run.stdout
        assert result[hosts[4].name]["changed"] == 1
        assert all(h["status"] in ("ok", "changed") for n, h in result.items() if n != down.name)

        drift = gpuprov("drift-check", "inventory.yml", cwd=workdir)
        assert drift.returncode == 4, drift.stdout + drift.stderr
    finally:
        down.start()


BIG_ROLE = """
from gpuprov.ops.files import file

def tasks(ctx):
    for i in range(ctx.vars["count"]):
        yield file(f"/srv/killtest/f{i}", ctx.vars["payload"] * ctx.vars["repeat"])
"""


def test_a_killed_run_leaves_every_file_old_or_new(
        fleet: Fleet, workdir: Path, hosts: list[FleetHost]) -> None:
    chosen = hosts[:4]
    line = "new content of a big managed file\n"
    repeat, count = 250_000, 4            # ~8.5 MB per file
    new = hashlib.sha256((line * repeat).encode()).hexdigest()
    old = hashlib.sha256(b"old\n").hexdigest()
    for host in chosen:
        host.exec("mkdir -p /srv/killtest && for i in 0 1 2 3; do echo old > /srv/killtest/f$i;"
                  " done")
    role = workdir / "roles" / "bigfiles"
    role.mkdir(parents=True, exist_ok=True)
    (role / "tasks.py").write_text(BIG_ROLE)
    (role / "defaults.yml").write_text(textwrap.dedent(f"""\
        # How many files, and what they hold.
        count: {count}
        # One line of a file.
        payload: {line!r}
        # Lines per file.
        repeat: {repeat}
        """))
    (workdir / "big.yml").write_text("- name: big files\n  hosts: all\n  roles: [bigfiles]\n")
    limit = ",".join(h.name for h in chosen)
    proc = subprocess.Popen([sys.executable, "-m", "gpuprov.cli", "apply", "inventory.yml",
                             "-p", "big.yml", "-l", limit], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        mid_write = False
        while time.monotonic() < deadline and proc.poll() is None:
            # A temp file beside a target = a write in progress somewhere.
            if any(h.exec("ls -A /srv/killtest | grep -q '^.gpuprov-'", check=False).returncode
                   == 0 for h in chosen[:2]):
                mid_write = True
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert mid_write, "the run finished before it could be killed mid-write"
    time.sleep(1)   # the targets notice the dropped connection
    seen: set[str] = set()
    for host in chosen:
        for i in range(count):
            digest = host.exec(f"sha256sum < /srv/killtest/f{i}").stdout.split()[0]
            assert digest in (old, new), f"{host.name}: /srv/killtest/f{i} is partial"
            seen.add(digest)
        # The target's shell notices the dropped connection (EOF on stdin,
        # then the digest check fails) and its EXIT trap removes the temp.
        deadline = time.monotonic() + 20
        while True:
            leftovers = host.exec("ls -A /srv/killtest").stdout.split()
            if sorted(leftovers) == [f"f{i}" for i in range(count)]:
                break
            assert time.monotonic() < deadline, (host.name, leftovers, host.exec(
                "ps -eo pid,ppid,stat,etime,args").stdout)
            time.sleep(0.5)
    assert old in seen, "the kill came after every file was written"
    # And the next run completes the job.
    done = gpuprov("apply", "inventory.yml", "-p", "big.yml", "-l", limit, cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    for host in chosen:
        host.exec("rm -rf /srv/killtest")
