"""Pull mode over the fleet (issue 19): `gpuprov pull-setup` over real SSH on
4 hosts (two sysvinit hosts: cron; two systemd hosts: the timer), then the
controller's SSH access is taken away (the operator key is removed from
every host's authorized_keys) and the hosts converge on their own from a git
repository served over the bridge by `git daemon`:

- a commit changing a role variable reaches every host within one interval
  plus the splay, and each host's last.json and report name that commit;
- a broken commit (a YAML error) leaves every host as it was, says why in
  last.json and the node_exporter textfile, and the next good commit applies;
- a push apply while a pull holds the host lock is refused (busy), and a
  pull while a push holds it records "busy": never both at once.

The hosts install python3, python3-venv (and cron) from the stand-in
archive, which carries Debian's real packages; the fleet base has none of
them (tests/fleet/base.py)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.fleet import network
from tests.fleet.fleet import Fleet
from tests.fleet.git_server import GitServer
from tests.fleet.host import FleetHost
from tests.fleet.test_engine import gpuprov

pytestmark = pytest.mark.fleet

GIT_PORT = 9418
INTERVAL, SPLAY = 60, 5
#: a run on a fleet host (venv start, facts, the role) on this loaded 2-core machine
RUN_GRACE = 60
#: what one pull run takes here at most (fetch, venv start, facts, the role)
RUN_TIME = 25
LAST = "/var/lib/gpuprov/pull/last.json"
MARKER = "/etc/gpuprov-pull-marker"
TEXTFILE = "/var/lib/node_exporter/textfile_collector/gpuprov_pull.prom"

MARKER_ROLE = {
    "roles/marker/defaults.yml": "# what the marker file says\nmarker_text: none\n",
    "roles/marker/tasks.py": (
        "from gpuprov.ops.files import file\n\n\n"
        "def tasks(ctx):\n"
        "    yield file('/etc/gpuprov-pull-marker', ctx.vars['marker_text'] + '\\n')\n"),
    "playbooks/pull.yml": "- name: marker\n  hosts: all\n  roles: [marker]\n",
}
SLOW_ROLE = {
    "roles/slow/defaults.yml": "# seconds the run holds the host\nslow_seconds: 15\n",
    "roles/slow/tasks.py": (
        "from gpuprov.ops.command import command\n\n\n"
        "def tasks(ctx):\n"
        "    yield command(f\"sleep {ctx.vars['slow_seconds']}\", name='hold the host')\n"),
    "playbooks/slow.yml": "- name: slow\n  hosts: all\n  roles: [slow]\n",
}


def repo_inventory(hosts: list[FleetHost], marker: str) -> str:
    """The team repository's inventory: the hosts by name (pull runs them
    through the local connector: the SSH vars do not matter there)."""
    return yaml.safe_dump({"all": {"vars": {"marker_text": marker},
                                   "hosts": {h.name: {"ansible_host": h.address}
                                             for h in hosts}}}, sort_keys=False)


def last_run(host: FleetHost) -> dict | None:
    text = host.read_file(LAST)
    return json.loads(text) if text else None


def holder(host: FleetHost) -> str:
    """The host lock's holder line (engine/hostlock.py), "" before any run."""
    return host.read_file("/run/gpuprov/run.lock") or ""


def wait_for(what: str, done: Callable[[], bool], seconds: float,
             hosts: list[FleetHost] = ()) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if done():
            return time.monotonic() - started
        time.sleep(2)
    seen = {h.name: (last_run(h), h.read_file("/var/log/gpuprov-pull.log"),
                     h.exec("journalctl -u gpuprov-pull --no-pager | tail -n 20; "
                            "systemctl list-timers --all --no-pager", check=False).stdout
                     if h.init == "systemd" else None) for h in hosts}
    raise AssertionError(f"not within {seconds:.0f} s: {what}; the hosts say: {seen}")


@pytest.fixture(scope="module")
def hosts(fleet: Fleet, systemd_hosts: list[FleetHost]) -> Iterator[list[FleetHost]]:
    default = [h for h in fleet.hosts if h.variant == "default"][-2:]
    # afterwards their authorized_keys are back too
    with fleet.fresh([*default, *systemd_hosts]) as chosen:
        yield chosen


@pytest.fixture(scope="module")
def server(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    served = GitServer(tmp_path_factory.mktemp("pull-git"), str(network.GATEWAY), GIT_PORT)
    served.start()
    try:
        yield served
    finally:
        served.remove()


def controller_inventory(fleet: Fleet, hosts: list[FleetHost], work: Path, url: str,
                         **pull_vars: object) -> Path:
    inventory = fleet.inventory(hosts)
    inventory["all"]["vars"].update({
        "pull_repo": url, "pull_ref": "main", "pull_inventory": "inventory.yml",
        "pull_playbook": "playbooks/pull.yml", "pull_interval": INTERVAL,
        "pull_splay": SPLAY, **pull_vars})
    path = work / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def test_hosts_converge_from_the_repository_without_the_controller(
        fleet: Fleet, hosts: list[FleetHost], server: GitServer,
        tmp_path: Path) -> None:
    first = server.commit({**MARKER_ROLE, "inventory.yml": repo_inventory(hosts, "one")},
                          "marker one")
    controller_inventory(fleet, hosts, tmp_path, server.url)
    setup = gpuprov("pull-setup", "inventory.yml", cwd=tmp_path, timeout=900)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    again = gpuprov("pull-setup", "inventory.yml", cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    for host in hosts:
        assert re.search(rf"{re.escape(host.name)}\s+ok=\d+ changed=0 failed=0",
                         again.stdout), again.stdout
    for host in hosts:
        scheduled = (host.read_file("/etc/systemd/system/gpuprov-pull.timer")
                     if host.init == "systemd" else host.read_file("/etc/cron.d/gpuprov-pull"))
        assert scheduled, f"{host.name}: no timer or cron entry"
        config = yaml.safe_load(host.exec("cat /etc/gpuprov/pull.yml").stdout)
        assert (config["host"], config["repo"]) == (host.name, server.url)

    # From here on the controller cannot reach any host over SSH: whatever
    # happens next, the hosts do on their own.
    for host in hosts:
        host.exec("rm -f /root/.ssh/authorized_keys /home/admin/.ssh/authorized_keys")
        assert fleet.ssh(host, "true", check=False).returncode != 0

    def at(commit: str, result: str) -> Callable[[], bool]:
        def check() -> bool:
            runs = [last_run(h) for h in hosts]
            # a host that applied it may have run again since: same commit, in sync
            results = {result, "unchanged"} if result == "applied" else {result}
            return all(r is not None and r["commit"] == commit and r["result"] in results
                       for r in runs)
        return check

    # the first scheduled run (the timer's OnBootSec has passed: it fires at once)
    wait_for("the first commit on every host", at(first, "applied"),
             INTERVAL + SPLAY + RUN_GRACE, hosts)
    assert {h.name: h.read_file(MARKER) for h in hosts} == {h.name: "one\n" for h in hosts}

    second = server.commit({"inventory.yml": repo_inventory(hosts, "two")}, "marker two")
    took = wait_for("the second commit on every host", at(second, "applied"),
                    INTERVAL + SPLAY + RUN_GRACE, hosts)
    # one interval and the splay, plus the run itself on this loaded machine
    assert took < INTERVAL + SPLAY + RUN_TIME, took
    assert {h.name: h.read_file(MARKER) for h in hosts} == {h.name: "two\n" for h in hosts}
    print(f"commit reached all {len(hosts)} hosts in {took:.0f} s")
    for host in hosts:
        run = last_run(host)
        assert run is not None and run["report"], run
        saved = json.loads(host.exec(f"cat {run['report']}").stdout)
        assert saved["pull"]["commit"] == second
        assert host.exec(f"stat -c %a {run['report']}").stdout.strip() == "600"

    broken = server.commit({"inventory.yml": "all:\n  vars:\n    marker_text: [three\n"},
                           "broken inventory")
    wait_for("the broken commit seen by every host", at(broken, "bad-commit"),
             INTERVAL + SPLAY + RUN_GRACE, hosts)
    for host in hosts:
        run = last_run(host)
        assert run is not None and "inventory.yml" in run["message"], run
        assert run["last_good_commit"] == second
        assert host.read_file(MARKER) == "two\n"   # left as it was
        metrics = host.read_file(TEXTFILE) or ""
        assert "gpuprov_pull_success 0" in metrics, metrics

    fixed = server.commit({"inventory.yml": repo_inventory(hosts, "three")}, "marker three")
    wait_for("the fixed commit on every host", at(fixed, "applied"),
             INTERVAL + SPLAY + RUN_GRACE, hosts)
    for host in hosts:
        assert host.read_file(MARKER) == "three\n"
        assert "gpuprov_pull_success 1" in (host.read_file(TEXTFILE) or "")


def test_a_push_and_a_pull_never_run_at_once(fleet: Fleet, hosts: list[FleetHost],
                                             server: GitServer, tmp_path: Path) -> None:
    host = hosts[0]
    fleet.reset(host)   # its keys back; the other test's pull setup gone
    server.commit({**SLOW_ROLE, "inventory.yml": repo_inventory([host], "four")}, "slow")
    # a long interval: only the runs this test starts
    controller_inventory(fleet, [host], tmp_path, server.url, pull_interval=3600,
                         pull_playbook="playbooks/slow.yml")
    setup = gpuprov("pull-setup", "inventory.yml", cwd=tmp_path, timeout=900)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "slow.yml").write_text(SLOW_ROLE["playbooks/slow.yml"])
    (tmp_path / "roles").mkdir()
    for name in ("defaults.yml", "tasks.py"):
        (tmp_path / "roles" / "slow").mkdir(exist_ok=True)
        (tmp_path / "roles" / "slow" / name).write_text(SLOW_ROLE[f"roles/slow/{name}"])

    # a pull holds the host: a push is refused, naming the holder
    pulling = threading.Thread(
        target=host.exec, args=("/opt/gpuprov/bin/gpuprov pull --no-splay",),
        kwargs={"check": False})
    pulling.start()
    try:
        wait_for("the pull to take the host lock",
                 lambda: holder(host).startswith("command=pull:"), 60)
        push = gpuprov("apply", "inventory.yml", "-p", "playbooks/slow.yml",
                       "--lock-timeout", "0", cwd=tmp_path)
        # a busy host is a failed host for a push (exit 2), as with another push
        assert push.returncode == 2, push.stdout + push.stderr
        assert f"busy: pull apply by root@{host.name}" in push.stdout, push.stdout
    finally:
        pulling.join(timeout=120)
    assert last_run(host)["result"] == "applied"

    # a push holds the host: the pull says busy and changes nothing
    pushing = threading.Thread(target=gpuprov, args=("apply", "inventory.yml", "-p",
                                                     "playbooks/slow.yml"),
                               kwargs={"cwd": tmp_path})
    pushing.start()
    try:
        # (the pull's own line stays in the file after it ended)
        wait_for("the push to take the host lock",
                 lambda: holder(host).startswith("command=apply "), 60)
        pulled = host.exec("/opt/gpuprov/bin/gpuprov pull --no-splay", check=False)
        assert pulled.returncode == 4, pulled.stdout + pulled.stderr
        assert last_run(host)["result"] == "busy"
    finally:
        pushing.join(timeout=120)
