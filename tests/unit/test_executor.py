"""The executor across several hosts, with local connectors and a role that
writes files under tmp_path: batches, tags, max-fail, unreachable hosts,
one connection per host for the whole run, reboot policy."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path

import pytest

from gpuprov.connectors.base import Become, Connector
from gpuprov.connectors.local import LocalConnector
from gpuprov.engine.connect import ConnectOptions
from gpuprov.engine.executor import (
    Executor,
    RunOptions,
    batches,
    check_tags,
    reboot_policy,
    role_selected,
)
from gpuprov.engine.results import CHANGED, FAILED, OK, SKIPPED
from gpuprov.errors import GpuprovError, PlaybookError, UnreachableHost
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import Play, RoleRef, load_playbook, resolve_roles

ROLE = """
from gpuprov.ops.files import file

def tasks(ctx):
    if ctx.host.name in ctx.vars["fail_on"]:
        raise ctx.fail("refusing on purpose")
    yield file(ctx.vars["out_dir"] + "/" + ctx.host.name + ".txt",
               ctx.vars["greeting"] + "\\n", owner=ctx.vars["me"], group=ctx.vars["mygroup"])
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    import grp
    import os
    import pwd

    (tmp_path / "out").mkdir()
    role = tmp_path / "roles" / "greet"
    role.mkdir(parents=True)
    (role / "tasks.py").write_text(ROLE)
    (role / "defaults.yml").write_text(textwrap.dedent(f"""\
        # What each host's file says.
        greeting: hello
        # Hosts that fail on purpose.
        fail_on: []
        # Where files go.
        out_dir: {tmp_path / 'out'}
        # Owner of the files: whoever runs the tests.
        me: {pwd.getpwuid(os.getuid()).pw_name}
        # Group of the files.
        mygroup: {grp.getgrgid(os.getgid()).gr_name}
        """))
    (tmp_path / "site.yml").write_text(textwrap.dedent("""\
        - name: greet
          hosts: all
          roles:
            - role: greet
              tags: [hello]
        """))
    hosts = "\n".join(f"        h{i}:" for i in range(1, 6))
    (tmp_path / "inventory.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n  hosts:\n"
        + textwrap.dedent(hosts).replace("h", "    h") + "\n")
    return tmp_path


class CountingFactory:
    """Local connectors (one per host), some hosts unreachable; counts creations."""

    def __init__(self, down: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.down = down
        self.made: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, host: Host, options: ConnectOptions) -> Connector:
        with self.lock:
            self.made.append(host.name)
        if host.name in self.down:
            return DownConnector(host.name)
        return LocalConnector(host.name, Become(enabled=False))


class DownConnector(LocalConnector):
    def connect(self, *, expect_refusal: bool = False) -> None:
        raise UnreachableHost(self.host_name, "refused", "connection refused on port 22")


def executor(project: Path, factory: CountingFactory, **options: object) -> Executor:
    inventory = Inventory.load(project / "inventory.yml")
    plays = load_playbook(project / "site.yml")
    resolve_roles(plays, [project / "roles"])
    return Executor(inventory, plays, list(inventory.hosts.values()), RunOptions(**options),
                    connector_factory=factory)


def test_apply_then_second_apply_changes_nothing(project: Path) -> None:
    factory = CountingFactory()
    run = executor(project, factory).run("apply")
    assert {h.status for h in run.hosts.values()} == {CHANGED}
    assert (project / "out" / "h3.txt").read_text() == "hello\n"
    assert sorted(factory.made) == [f"h{i}" for i in range(1, 6)]
    again = executor(project, CountingFactory()).run("apply")
    assert [h.changed for h in again.hosts.values()] == [0] * 5
    assert all(h.round_trips >= 1 and h.connections == 1 for h in again.hosts.values())


def test_check_mode_reports_without_writing(project: Path) -> None:
    run = executor(project, CountingFactory(), check=True).run("check")
    assert all(h.changed == 1 for h in run.hosts.values())
    assert list((project / "out").iterdir()) == []


def test_extra_vars_win_and_reach_the_role(project: Path) -> None:
    executor(project, CountingFactory(), extra_vars={"greeting": "hi"}).run("apply")
    assert (project / "out" / "h1.txt").read_text() == "hi\n"


def test_unreachable_host_does_not_stop_the_others(project: Path) -> None:
    run = executor(project, CountingFactory(down={"h2"})).run("apply")
    assert run.hosts["h2"].unreachable and "refused" in run.hosts["h2"].unreachable
    assert run.any_unreachable and not run.any_failed
    assert sorted(p.name for p in (project / "out").iterdir()) == [
        "h1.txt", "h3.txt", "h4.txt", "h5.txt"]


def test_max_fail_percentage_stops_later_batches(project: Path) -> None:
    run = executor(project, CountingFactory(), serial=2, max_fail_percentage=0,
                   extra_vars={"fail_on": ["h1"]}).run("apply")
    assert run.aborted and "max_fail_percentage" in run.aborted
    assert set(run.hosts) == {"h1", "h2"}   # the first batch only
    assert "refusing on purpose" in (run.hosts["h1"].error or "")
    assert run.hosts["h2"].status == CHANGED


def test_failures_without_max_fail_let_the_rest_finish(project: Path) -> None:
    run = executor(project, CountingFactory(), serial=2,
                   extra_vars={"fail_on": ["h1"]}).run("apply")
    assert run.aborted is None and len(run.hosts) == 5
    assert run.any_failed


def test_tags_skip_roles_and_say_so(project: Path) -> None:
    # a second role, so that skipping greet still leaves something to run
    (project / "roles" / "quiet").mkdir()
    (project / "roles" / "quiet" / "tasks.py").write_text("def tasks(ctx):\n    return []\n")
    with (project / "site.yml").open("a") as book:
        book.write("    - quiet\n")
    run = executor(project, CountingFactory(), skip_tags=frozenset({"hello"})).run("apply")
    assert [t.status for t in run.hosts["h1"].tasks] == [SKIPPED]
    assert list((project / "out").iterdir()) == []
    assert [n.to_json() for n in run.hosts["h1"].not_reached()] == [
        {"role": "greet", "play": "greet", "why": "skipped by --skip-tags hello",
         "kind": "tags"}]
    assert run.hosts["h1"].reached == {"quiet"}
    with pytest.raises(PlaybookError, match="unknown tag.*helo"):
        executor(project, CountingFactory(), tags=frozenset({"helo"}))


def test_a_bug_in_one_host_costs_that_host_only(project: Path) -> None:
    class Exploding(CountingFactory):
        def __call__(self, host: Host, options: ConnectOptions) -> Connector:
            if host.name == "h4":
                conn = LocalConnector(host.name, Become(enabled=False))
                conn.run = None  # type: ignore[assignment]  # calling it raises TypeError
                return conn
            return super().__call__(host, options)

    run = executor(project, Exploding()).run("apply")
    assert "internal error" in (run.hosts["h4"].error or "")
    assert run.hosts["h5"].status == CHANGED


def test_batches() -> None:
    hosts = [Host(f"h{i}") for i in range(10)]
    assert [len(b) for b in batches(hosts, None)] == [10]
    assert [len(b) for b in batches(hosts, 3)] == [3, 3, 3, 1]
    assert [len(b) for b in batches(hosts, "30%")] == [3, 3, 3, 1]
    assert [len(b) for b in batches(hosts[:2], "10%")] == [1, 1]   # never an empty batch
    assert batches([], 2) == []


def test_role_selection_by_tags() -> None:
    play = Play("p", "all", tags=["gpu"])
    ref = RoleRef("nvidia_driver", tags=["driver"])
    assert role_selected(play, ref, [], [])
    assert role_selected(play, ref, ["driver"], [])
    assert role_selected(play, ref, ["nvidia_driver"], [])     # the role's name is a tag
    assert role_selected(play, ref, ["gpu"], [])               # the play's tags apply
    assert not role_selected(play, ref, ["sshd"], [])
    assert not role_selected(play, ref, [], ["gpu"])
    assert role_selected(play, RoleRef("base", tags=["always"]), ["sshd"], [])
    check_tags([play], ["gpu", "always"])
    with pytest.raises(PlaybookError):
        check_tags([play], ["gpus"])


def test_a_role_tagged_never_runs_only_when_another_of_its_tags_is_asked() -> None:
    play = Play("p", "all")
    ref = RoleRef("gpu_image", tags=["never", "image"])
    assert not role_selected(play, ref, [], [])
    assert not role_selected(play, ref, ["verify"], [])
    assert role_selected(play, ref, ["image"], [])
    assert role_selected(play, ref, ["gpu_image"], [])
    check_tags([play], ["never"])


def test_every_role_sees_the_defaults_of_the_other_roles_of_its_play(project: Path) -> None:
    # Ansible's behaviour: `verify` reads gpu_image's `gpu_image` default even
    # when gpu_image itself is skipped by tags; a role's own defaults win.
    other = project / "roles" / "other"
    other.mkdir()
    (other / "defaults.yml").write_text("# shared\ngreeting: from other\n"
                                        "# other's own\nonly_other: 1\n")
    (other / "tasks.py").write_text("def tasks(ctx):\n    return []\n")
    (project / "roles" / "greet" / "tasks.py").write_text(ROLE.replace(
        'ctx.vars["greeting"]', 'ctx.vars["greeting"] + str(ctx.vars["only_other"])'))
    (project / "site.yml").write_text(
        "- name: p\n  hosts: all\n  roles:\n    - role: other\n      tags: [never]\n"
        "    - greet\n")
    run = executor(project, CountingFactory()).run("apply")
    assert not run.any_failed, run.to_json()
    assert (project / "out" / "h1.txt").read_text() == "hello1\n"


def test_reboot_policy_precedence() -> None:
    host = Host("h", vars={"reboot": "if-needed"})
    assert reboot_policy(Play("p", "all"), host, RunOptions()) == "if-needed"
    assert reboot_policy(Play("p", "all", reboot="never"), host, RunOptions()) == "never"
    assert reboot_policy(Play("p", "all", reboot="never"), host,
                         RunOptions(extra_vars={"reboot": "if-needed"})) == "if-needed"
    assert reboot_policy(Play("p", "all"), Host("h"), RunOptions()) == "never"
    assert reboot_policy(Play("p", "all"), Host("h"), RunOptions(reboot=True)) == "if-needed"
    with pytest.raises(GpuprovError, match="expected never or if-needed"):
        reboot_policy(Play("p", "all"), Host("h", vars={"reboot": "yes"}), RunOptions())


def test_results_are_ok_on_converged_hosts(project: Path) -> None:
    executor(project, CountingFactory()).run("apply")
    run = executor(project, CountingFactory(), check=True).run("check")
    assert [t.status for t in run.hosts["h1"].tasks] == [OK]
    assert FAILED not in {h.status for h in run.hosts.values()}


def test_a_busy_host_fails_with_the_holders_name_and_the_others_proceed(project: Path) -> None:
    from gpuprov.cli.exit_codes import EXIT_FAILED, apply_exit_code, drift_exit_code
    from gpuprov.engine.hostlock import HostLock, default_lock_path

    other = HostLock(LocalConnector("h2", Become(enabled=False)), "apply", 0, default_lock_path())
    assert other.acquire()
    try:
        run = executor(project, CountingFactory()).run("apply")
        assert run.hosts["h2"].error is not None
        assert run.hosts["h2"].error.startswith("busy: apply by ")
        assert not run.hosts["h2"].tasks
        assert not (project / "out" / "h2.txt").exists()
        assert (project / "out" / "h1.txt").exists() and (project / "out" / "h5.txt").exists()
        assert apply_exit_code(run) == 2
        # drift-check: the busy host failed to be checked (2), not drift; the others are in sync
        check = executor(project, CountingFactory(), check=True).run("drift-check")
        assert check.hosts["h2"].error and check.hosts["h2"].error.startswith("busy: apply by ")
        assert not check.any_changed
        assert drift_exit_code(check) == EXIT_FAILED
    finally:
        other.release()
    assert not executor(project, CountingFactory()).run("apply").any_failed


def test_the_run_lock_is_held_for_the_whole_run_and_let_go_after(project: Path) -> None:
    from gpuprov.engine.hostlock import HostBusy, HostLock, default_lock_path

    seen: list[str] = []
    ex = executor(project, CountingFactory(), forks=1)
    original = ex._lock_host

    def lock_then_probe(host: Host, connector: Connector, cache: object = None) -> None:
        # once the run holds the host, anybody else finds it busy
        original(host, connector, cache)  # type: ignore[arg-type]
        try:
            HostLock(LocalConnector(host.name, Become(enabled=False)), "drift-check", 0,
                     default_lock_path()).acquire()
        except HostBusy as exc:
            seen.append(exc.message)

    ex._lock_host = lock_then_probe  # type: ignore[method-assign]
    ex.run("apply")
    assert len(seen) == 5 and all(s.startswith("busy: apply by ") for s in seen)
    after = HostLock(LocalConnector("h1", Become(enabled=False)), "apply", 0, default_lock_path())
    assert after.acquire()
    after.release()
