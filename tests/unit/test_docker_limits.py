"""Container resource limits: docker's units ("16g" = 17179869184 bytes, 1.5
CPUs = 1500000000 NanoCpus) both ways, the limits read from `docker inspect`
(HostConfig Memory, NanoCpus, ShmSize, PidsLimit; docker's null or -1 pids
are no limit), and ContainerRunning reporting a container whose limits
differ from the declared ones."""

from __future__ import annotations

import json

import pytest

from gpuprov.command import Command
from gpuprov.facts.base import FactView
from gpuprov.facts.docker import DOCKER_INSPECT, ContainerInfo, ContainerState, ContainerStatus
from gpuprov.facts.docker_limits import (
    ContainerLimits,
    format_cpus,
    format_size,
    parse_cpus,
    parse_size,
)
from gpuprov.ops.docker import container

GIB = 1 << 30


@pytest.mark.parametrize(("text", "size"), [
    ("16g", 16 * GIB), ("16G", 16 * GIB), ("16gb", 16 * GIB), ("16GiB", 16 * GIB),
    ("16 g", 16 * GIB), ("512m", 512 << 20), ("1.5g", 1610612736), ("64k", 65536),
    ("1024", 1024), (1073741824, GIB), ("2t", 2 << 40), (" 8g ", 8 * GIB),
])
def test_sizes_are_binary_as_docker_reads_them(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "g", "16x", "-1g", "16gg", "1.2.3g", "lots", True])
def test_sizes_docker_refuses_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(("size", "text"), [
    (16 * GIB, "16g"), (8 * GIB, "8g"), (512 << 20, "512m"), (1610612736, "1536m"),
    (64 << 20, "64m"), (1000, "1000b"), (2 << 40, "2t"), (65536, "64k")])
def test_sizes_are_shown_in_the_largest_exact_unit(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size, "what is shown reads back as the same number"


@pytest.mark.parametrize(("value", "nano"), [
    ("1.5", 1_500_000_000), (1.5, 1_500_000_000), (2, 2_000_000_000), ("0.01", 10_000_000),
    ("8", 8_000_000_000), ("0.000000001", 1)])
def test_cpus_are_billionths_as_docker_counts_them(value: object, nano: int) -> None:
    assert parse_cpus(value) == nano
    assert parse_cpus(format_cpus(nano)) == nano


def test_cpus_are_shown_without_trailing_zeros() -> None:
    assert [format_cpus(n) for n in (1_500_000_000, 2_000_000_000, 10_000_000, 1)] == [
        "1.5", "2", "0.01", "0.000000001"]


@pytest.mark.parametrize(("value", "message"), [
    ("two", "is not a number"), ("nan", "is not a number"), ("inf", "is not a number"),
    (True, "is not a number"), ("0.0000000001", "is too precise")])
def test_cpus_docker_refuses_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpus(value)


# ---------------------------------------------------------------- docker inspect

def inspect_line(limits: object) -> str:
    return json.dumps({"id": "cd" * 32, "tags": None, "digests": None,
                       "state": {"status": "running", "running": True},
                       "labels": {"gpuprov.spec": "ab"}, "ports": {}, "limits": limits})


@pytest.mark.parametrize(("limits", "expected"), [
    # docker run with no limit: 0, 0, its 64m /dev/shm, PidsLimit null
    ({"memory": 0, "nano_cpus": 0, "shm_size": 67108864, "pids_limit": None},
     ContainerLimits(0, 0, 64 << 20, 0)),
    ({"memory": 17179869184, "nano_cpus": 1500000000, "shm_size": 8 * GIB, "pids_limit": 4096},
     ContainerLimits(16 * GIB, 1_500_000_000, 8 * GIB, 4096)),
    # --pids-limit -1 on an older daemon: no limit, as 0
    ({"memory": 0, "nano_cpus": 0, "shm_size": 67108864, "pids_limit": -1},
     ContainerLimits(0, 0, 64 << 20, 0)),
    (None, None),
])
def test_the_container_fact_reads_its_limits(limits: object,
                                             expected: ContainerLimits | None) -> None:
    state = ContainerState("gpuprov-jupyter").process(inspect_line(limits), 0)
    assert state.container is not None and state.container.limits == expected


def test_the_inspect_template_asks_for_the_four_limits_never_the_environment() -> None:
    shell = DOCKER_INSPECT.command([ContainerState("gpuprov-jupyter")]).shell()
    for field in ("Memory", "NanoCpus", "ShmSize", "PidsLimit"):
        assert f'(index . "{field}")' in shell
    assert "Env" not in shell


# ---------------------------------------------------------------- drift

DECLARED = ContainerLimits(16 * GIB, 1_500_000_000, 8 * GIB, 4096)


def test_drift_names_each_limit_with_both_values() -> None:
    assert DECLARED.drift(DECLARED) == []
    assert DECLARED.drift(ContainerLimits(8 * GIB, 1_500_000_000, 8 * GIB, 4096)) == [
        "memory 8g, declared 16g"]
    assert DECLARED.drift(ContainerLimits(0, 4_000_000_000, 64 << 20, 0)) == [
        "memory unlimited, declared 16g", "cpus 4, declared 1.5", "shm-size 64m, declared 8g",
        "pids-limit unlimited, declared 4096"]
    # nothing declared: a limit put on by hand is drift too
    assert ContainerLimits().drift(ContainerLimits(8 * GIB, 0, 64 << 20, 100)) == [
        "memory 8g, declared unlimited", "pids-limit 100, declared unlimited"]
    assert DECLARED.drift(None) == [], "limits not reported: nothing to compare"


def running(limits: ContainerLimits | None) -> FactView:
    info = ContainerInfo(True, "running", (("gpuprov.spec", "ab" * 32),),
                         frozenset({"127.0.0.1:8888->8888/tcp"}), limits)
    return FactView({ContainerState("lab"): ContainerStatus("ok", info)})


def test_a_container_with_other_limits_is_recreated_and_the_diff_shows_them() -> None:
    op = container("lab", spec="ab" * 32, publish=["127.0.0.1:8888:8888"], limits=DECLARED,
                   fix=Command("/usr/local/sbin/lab", "restart"))
    assert op.plan(running(DECLARED)) == []
    [change] = op.plan(running(ContainerLimits(8 * GIB, 1_500_000_000, 8 * GIB, 4096)))
    assert (change.action, change.summary) == ("recreate", "lab runs with memory 8g, "
                                                           "declared 16g")
    assert [s.command.display() for s in change.steps] == ["/usr/local/sbin/lab restart"]
    assert [ln for ln in change.diff.unified().splitlines() if ln[:1] in "+-"
            and ln[:3] not in ("+++", "---")] == ["-memory: 8g", "+memory: 16g"]


def test_limits_not_declared_or_not_reported_are_not_compared() -> None:
    other = ContainerLimits(8 * GIB, 0, 64 << 20, 0)
    plain = container("lab", spec="ab" * 32, publish=["127.0.0.1:8888:8888"],
                      fix=Command("true"))
    assert plain.plan(running(other)) == [], "an op without limits compares none"
    declared = container("lab", spec="ab" * 32, publish=["127.0.0.1:8888:8888"],
                         limits=ContainerLimits(0, 0, None, 0), fix=Command("true"))
    # no shm-size declared: the daemon's default-shm-size decides, whatever it is
    assert declared.plan(running(ContainerLimits(0, 0, 2 * GIB, 0))) == []
    assert declared.plan(running(None)) == []
