"""GroupMembers / ExistingUsers (getent) and ContainerState (docker inspect)
from canned outputs, parse_publish, and the ops built on them:
group_present (a system group), group_members (exact membership),
container / container_absent."""

from __future__ import annotations

import json

import pytest

from gpuprov.command import Command
from gpuprov.facts.base import FactError, FactView
from gpuprov.facts.docker import (
    ContainerInfo,
    ContainerState,
    ContainerStatus,
    parse_publish,
)
from gpuprov.facts.users import ExistingUsers, GroupInfo, GroupMembers
from gpuprov.ops.docker import container, container_absent
from gpuprov.ops.users import UserError, group_members, group_present

# ---------------------------------------------------------------- getent


def test_group_members_parses_getent_group() -> None:
    fact = GroupMembers("docker")
    assert fact.command().shell() == "getent group docker"
    assert fact.process("docker:x:989:alice,bob\n", 0) == GroupInfo("docker", 989,
                                                                    ("alice", "bob"))
    assert fact.process("docker:x:989:\n", 0) == GroupInfo("docker", 989, ())
    assert fact.process("", 2) is None, "getent exits 2 for no such group"
    with pytest.raises(FactError, match="exited 1"):
        fact.process("", 1)
    with pytest.raises(FactError, match="not a group entry"):
        fact.process("garbage\n", 0)


def test_existing_users_lists_only_those_found() -> None:
    fact = ExistingUsers(("alice", "zoe"))
    assert fact.command().shell() == "getent passwd alice zoe"
    out = "alice:x:1001:1001:Alice:/home/alice:/bin/bash\n"
    assert fact.process(out, 2) == frozenset({"alice"})
    assert ExistingUsers(()).command().shell() == "true", "never every user of the host"


def plan_group(members, info, existing=(), exclusive=True):
    op = group_members("docker", members, exclusive=exclusive, source="docker_users")
    facts = {GroupMembers("docker"): info}
    if op.members:
        facts[ExistingUsers(tuple(sorted(op.members)))] = frozenset(existing)
    assert set(op.facts()) == set(facts)
    return op.plan(FactView(facts))


def test_group_members_exclusive_and_not() -> None:
    info = GroupInfo("docker", 989, ("bob",))
    [change] = plan_group(["alice"], info, existing=["alice"])
    assert [s.command.shell() for s in change.steps] == ["gpasswd -a alice docker",
                                                         "gpasswd -d bob docker"]
    [change] = plan_group(["alice"], info, existing=["alice"], exclusive=False)
    assert [s.command.shell() for s in change.steps] == ["gpasswd -a alice docker"]
    assert plan_group(["bob"], info, existing=["bob"]) == []
    assert plan_group([], GroupInfo("docker", 989, ())) == []
    assert plan_group([], None) == [], "no group, nobody wanted: nothing to do"


def test_group_members_refuses_unknown_users_and_bad_names() -> None:
    with pytest.raises(UserError, match="docker_users: no user zoe on this host"):
        plan_group(["alice", "zoe"], GroupInfo("docker", 989, ()), existing=["alice"])
    with pytest.raises(UserError, match=r"docker_users: 'al ice' is not a user name"):
        group_members("docker", ["al ice"], source="docker_users")


# ---------------------------------------------------------------- docker inspect

def test_group_present_creates_a_missing_system_group_only() -> None:
    op = group_present("gpuprov-jupyter", notify="restart jupyter")
    assert op.label == "group gpuprov-jupyter"
    assert op.facts() == [GroupMembers("gpuprov-jupyter")]
    [change] = op.plan(FactView({GroupMembers("gpuprov-jupyter"): None}))
    assert (change.action, change.summary) == ("create", "create system group gpuprov-jupyter")
    assert [s.command.shell() for s in change.steps] == ["groupadd --system gpuprov-jupyter"]
    assert change.notify == ("restart jupyter",) and change.invalidates == (GroupMembers,)
    present = GroupInfo("gpuprov-jupyter", 998, ())
    assert op.plan(FactView({GroupMembers("gpuprov-jupyter"): present})) == []


@pytest.mark.parametrize("name", ["", "Lab", "-o", "a;b", "x" * 33, "host$"])
def test_group_present_refuses_what_groupadd_would_misread(name: str) -> None:
    with pytest.raises(UserError, match="is not a group name"):
        group_present(name)


def test_parse_publish() -> None:
    assert parse_publish("127.0.0.1:8888:8888") == "127.0.0.1:8888->8888/tcp"
    assert parse_publish("[::1]:2222:22/tcp") == "[::1]:2222->22/tcp"
    assert parse_publish("0.0.0.0:53:53/udp") == "0.0.0.0:53->53/udp"
    for bad in ("8888:8888", "8888", "127.0.0.1:x:8888"):
        with pytest.raises(ValueError, match="not a docker publish spec"):
            parse_publish(bad)


# what DockerInspect's template prints for a container (one line per object)
INSPECT = {"id": "cd" * 32, "tags": None, "digests": None,
           "state": {"running": True, "status": "running"},
           "labels": {"gpuprov.spec": "ab" * 32, "org.opencontainers.image.title": "x"},
           "ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8888"}],
                     "22/tcp": [{"HostIp": "", "HostPort": "2222"}]}}


def line(state: dict | None, labels: dict | None = None, ports: dict | None = None) -> str:
    return json.dumps({"id": "cd" * 32, "tags": None, "digests": None, "state": state,
                       "labels": labels, "ports": ports}) + "\n"


def test_container_state_reads_state_labels_and_ports_only() -> None:
    fact = ContainerState("gpuprov-jupyter")
    shell = fact.command().shell()
    assert shell.startswith("command -v docker >/dev/null 2>&1 || { echo no-docker; exit 0; }; "
                            "docker inspect --format ")
    assert shell.endswith(" -- gpuprov-jupyter 2>&1")
    assert "Env" not in shell and fact.sudo
    state = fact.process(json.dumps(INSPECT, separators=(",", ":")) + "\n", 0)
    assert state == ContainerStatus("ok", ContainerInfo(
        True, "running", (("gpuprov.spec", "ab" * 32), ("org.opencontainers.image.title", "x")),
        frozenset({"127.0.0.1:8888->8888/tcp", "0.0.0.0:2222->22/tcp"})))
    assert state.container.label("gpuprov.spec") == "ab" * 32
    stopped = fact.process(line({"running": False, "status": "exited"}, None, {}), 0)
    assert stopped.container == ContainerInfo(False, "exited", (), frozenset())
    # docker says Running while a crashing container waits to be restarted
    looping = fact.process(line({"running": True, "status": "restarting"}, {}, {}), 0)
    assert looping.container == ContainerInfo(False, "restarting", (), frozenset())
    # docker inspect without --type finds an image (or a network) by that name: no container
    assert fact.process(line(None, {"a": "b"}), 0) == ContainerStatus("ok")


@pytest.mark.parametrize(("output", "code", "expected"), [
    ("no-docker\n", 0, ContainerStatus("absent", message="docker is not installed")),
    ("\nError: No such object: gpuprov-jupyter\n", 1, ContainerStatus("ok")),
    ("\nerror: no such object: gpuprov-jupyter\n", 1, ContainerStatus("ok")),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon "
     "running?\n", 1, ContainerStatus("down", message="Cannot connect to the Docker daemon at "
                                      "unix:///var/run/docker.sock. Is the docker daemon "
                                      "running?")),
])
def test_container_state_absent_missing_and_down(output: str, code: int,
                                                 expected: ContainerStatus) -> None:
    assert ContainerState("gpuprov-jupyter").process(output, code) == expected


def test_container_state_garbage_is_a_fact_error() -> None:
    with pytest.raises(FactError, match="printed no JSON"):
        ContainerState("x").process("template: :1: bad\n", 0)


FIX = Command("/usr/local/sbin/app", "restart")


def test_container_op_reports_each_problem() -> None:
    op = container("app", spec="cd" * 32, publish=["127.0.0.1:8888:8888"], fix=FIX)
    info = ContainerInfo(False, "restarting", (("gpuprov.spec", "ab" * 32),),
                         frozenset({"0.0.0.0:8888->8888/tcp"}))
    [change] = op.plan(FactView({ContainerState("app"): ContainerStatus("ok", info)}))
    assert change.summary == ("app is restarting; app was started from spec abababababab, "
                              "wanted cdcdcdcdcdcd; app publishes 0.0.0.0:8888, wanted "
                              "127.0.0.1:8888")
    assert [s.command.shell() for s in change.steps] == ["/usr/local/sbin/app restart"]
    assert change.diff.before == ("state: restarting\nspec: abababababab\n"
                                  "publishes: 0.0.0.0:8888->8888/tcp\n")
    assert change.diff.after == ("state: running\nspec: cdcdcdcdcdcd\n"
                                 "publishes: 127.0.0.1:8888->8888/tcp\n")
    good = ContainerInfo(True, "running", (("gpuprov.spec", "cd" * 32),),
                         frozenset({"127.0.0.1:8888->8888/tcp"}))
    assert op.plan(FactView({ContainerState("app"): ContainerStatus("ok", good)})) == []


def test_container_absent_op() -> None:
    op = container_absent("app")
    state = ContainerStatus("ok", ContainerInfo(False, "exited", (), frozenset()))
    [change] = op.plan(FactView({ContainerState("app"): state}))
    assert [s.command.shell() for s in change.steps] == ["docker rm -f app"]
    for gone in (ContainerStatus("ok"), ContainerStatus("absent", message="no docker")):
        assert op.plan(FactView({ContainerState("app"): gone})) == []
    [down] = op.plan(FactView({ContainerState("app"): ContainerStatus("down", message="x")}))
    assert down.unknown == "the docker daemon does not answer (x): depends on docker running"
