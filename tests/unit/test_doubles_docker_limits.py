"""The docker double's resource limits, as the real docker keeps them:
`docker run --memory/--cpus/--shm-size/--pids-limit` parsed with docker's
units and refused with its words, shown in `docker inspect`'s HostConfig, and
`docker update` changing them under a running container (not /dev/shm)."""

from __future__ import annotations

import json
import os

import pytest

from tests.unit.test_doubles import IMAGE, Host, gpu_host, host  # noqa: F401 (fixtures)

GIB = 1 << 30


def host_config(h: Host, name: str = "lab") -> dict:
    result = h.run("docker", "inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]["HostConfig"]


def limits(config: dict) -> tuple:
    return tuple(config[k] for k in ("Memory", "MemorySwap", "NanoCpus", "ShmSize", "PidsLimit"))


@pytest.fixture
def pulled(gpu_host: Host) -> Host:  # noqa: F811
    assert gpu_host.run("docker", "pull", "-q", IMAGE).returncode == 0
    return gpu_host


def test_a_container_without_limits_has_dockers_defaults(pulled: Host) -> None:
    assert pulled.run("docker", "run", "-d", "--name", "lab", IMAGE).returncode == 0
    # no memory, swap or CPU limit, a 64m /dev/shm, PidsLimit null
    assert limits(host_config(pulled)) == (0, 0, 0, 64 << 20, None)


def test_the_daemons_default_shm_size_is_the_containers(pulled: Host) -> None:
    pulled.daemon({"default-shm-size": "128M"})
    assert pulled.run("docker", "run", "-d", "--name", "lab", IMAGE).returncode == 0
    assert host_config(pulled)["ShmSize"] == 128 << 20


def test_limits_are_kept_in_docker_units(pulled: Host) -> None:
    run = pulled.run("docker", "run", "-d", "--name", "lab", "--memory", "16g", "--cpus", "1.5",
                     "--shm-size=8g", "--pids-limit", "4096", IMAGE)
    assert run.returncode == 0, run.stderr
    # swap: as much again as memory, docker's default without --memory-swap
    assert limits(host_config(pulled)) == (16 * GIB, 32 * GIB, 1_500_000_000, 8 * GIB, 4096)
    pulled.run("docker", "run", "-d", "--name", "other", "-m", "512m", "--pids-limit", "-1", IMAGE)
    assert limits(host_config(pulled, "other")) == (512 << 20, 1 << 30, 0, 64 << 20, None)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--memory", "16x", 'invalid argument "16x" for "-m, --memory" flag: invalid size: \'16x\''),
    ("--shm-size", "lots", 'invalid argument "lots" for "--shm-size" flag: invalid size: '
     "'lots'"),
    ("--cpus", "two", 'invalid argument "two" for "--cpus" flag: failed to parse two as a '
     "rational number"),
    ("--cpus", "0.0000000001", 'invalid argument "0.0000000001" for "--cpus" flag: value is '
     "too precise"),
    ("--pids-limit", "many", 'invalid argument "many" for "--pids-limit" flag: '
     'strconv.ParseInt: parsing "many": invalid syntax'),
    ("--memory", "4m", "docker: Error response from daemon: Minimum memory limit allowed is "
     "6MB."),
    ("--cpus", "0.001", "docker: Error response from daemon: Range of CPUs is from 0.01 to "),
    ("--cpus", "100000", "docker: Error response from daemon: Range of CPUs is from 0.01 to "
     f"{len(os.sched_getaffinity(0))}.00, as there are only {len(os.sched_getaffinity(0))} CPUs "
     "available"),
])
def test_values_docker_refuses_are_refused_in_its_words(pulled: Host, flag: str, value: str,
                                                        message: str) -> None:
    result = pulled.run("docker", "run", "-d", "--name", "lab", flag, value, IMAGE)
    assert result.returncode == 125
    assert result.stderr.startswith(message)
    assert pulled.run("docker", "inspect", "lab").returncode == 1, "no container made"


def test_docker_update_changes_memory_cpus_and_pids_of_a_running_container(
        pulled: Host) -> None:
    pulled.run("docker", "run", "-d", "--name", "lab", "--memory", "16g", "--cpus", "2",
               "--shm-size", "8g", IMAGE)
    result = pulled.run("docker", "update", "--memory", "8g", "--cpus=1", "--pids-limit", "100",
                        "lab")
    assert (result.returncode, result.stdout) == (0, "lab\n"), result.stderr
    assert limits(host_config(pulled)) == (8 * GIB, 32 * GIB, 1_000_000_000, 8 * GIB, 100)
    assert host_config(pulled)["PortBindings"] == {}, "nothing else changed"
    assert pulled.run("docker", "container", "update", "--pids-limit", "-1", "lab").returncode == 0
    assert host_config(pulled)["PidsLimit"] is None


def test_docker_update_refuses_what_docker_refuses(pulled: Host) -> None:
    pulled.run("docker", "run", "-d", "--name", "lab", "--memory", "1g", IMAGE)
    shm = pulled.run("docker", "update", "--shm-size", "1g", "lab")
    assert (shm.returncode, shm.stderr) == (125, "unknown flag: --shm-size\nSee 'docker update "
                                                 "--help'.\n")
    over = pulled.run("docker", "update", "--memory", "4g", "lab")
    assert over.returncode == 1
    assert over.stderr == ("Error response from daemon: Cannot update container lab: Memory "
                           "limit should be smaller than already set memoryswap limit, update "
                           "the memoryswap at the same time\n")
    both = pulled.run("docker", "update", "--memory", "4g", "--memory-swap", "8g", "lab")
    assert both.returncode == 0, both.stderr
    assert limits(host_config(pulled))[:2] == (4 * GIB, 8 * GIB)
    gone = pulled.run("docker", "update", "--memory", "2g", "nope")
    assert (gone.returncode, gone.stderr) == (1, "Error response from daemon: No such "
                                                 "container: nope\n")
    bare = pulled.run("docker", "update", "lab")
    assert bare.returncode == 1 and "one or more flags" in bare.stderr
