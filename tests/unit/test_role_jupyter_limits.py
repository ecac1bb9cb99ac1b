"""Role jupyter's resource limits (jupyter_memory, jupyter_cpus,
jupyter_shm_size, jupyter_pids_limit) against canned facts, per distro and
init: the `docker run` options, the comparison with what `docker inspect`
shows of the running container (drift recreates it through the start script),
docker's units normalised, and a bad value refused before any op, naming the
variable and the inventory's file:line. Then the rendered start script, run by
a real /bin/sh against the docker test double: the limits reach HostConfig, and
a `docker update` behind gpuprov's back is drift."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.engine.context import RoleFailed, TaskContext
from gpuprov.engine.roles import load_role
from gpuprov.facts.base import FactView, gather_script, parse_batch
from gpuprov.facts.docker import ContainerInfo, ContainerStatus
from gpuprov.facts.docker_limits import ContainerLimits
from gpuprov.facts.files import FileState
from gpuprov.model.inventory import Inventory
from gpuprov.model.vars import build_host_vars
from tests.unit.role_facts import commands
from tests.unit.role_harness import ROLES, RolePlan, system_for
from tests.unit.test_role_jupyter import (  # noqa: F401 (docker_double: a fixture)
    CONTAINER,
    DOUBLE_IMAGE,
    HOSTS,
    NAME,
    SCRIPT,
    converged,
    docker_double,
    docker_run_argv,
    expected_run,
    fresh,
    run,
    spec_of,
    written,
)

GIB = 1 << 30
LIMITS = {"jupyter_memory": "16g", "jupyter_cpus": 1.5, "jupyter_shm_size": "1g",
          "jupyter_pids_limit": 4096}
RUN_LIMITS = ("--memory", "16g", "--cpus", "1.5", "--shm-size", "1g", "--pids-limit", "4096")
DECLARED = ContainerLimits(16 * GIB, 1_500_000_000, GIB, 4096)
#: docker inspect of a container run without limits but jupyter_shm_size's default
DEFAULT_RUNNING = ContainerLimits(0, 0, 8 * GIB, 0)


def container_op(plan: RolePlan):  # type: ignore[no-untyped-def]
    return next(p.op for p in plan.ops if p.op.label == f"container {NAME}")


def with_limits(facts: dict, limits: ContainerLimits) -> dict:
    """The host's container, as it runs, with these limits in its HostConfig."""
    info = facts[CONTAINER].container
    return {**facts, CONTAINER: ContainerStatus("ok", ContainerInfo(
        info.running, info.status, info.labels, info.ports, limits))}


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_limits_are_passed_to_docker_run_and_compared(distro: str, init: str) -> None:
    plan = run(fresh(init), distro, init, **LIMITS)
    assert docker_run_argv(written(plan, SCRIPT)) == expected_run(spec_of(plan),
                                                                  limits=RUN_LIMITS)
    assert container_op(plan).limits == DECLARED


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_a_container_running_with_the_declared_limits_is_left_alone(distro: str,
                                                                    init: str) -> None:
    facts = with_limits(converged(distro, init, **LIMITS), DECLARED)
    assert run(facts, distro, init, **LIMITS).changes == []
    assert run(with_limits(converged(distro, init), DEFAULT_RUNNING), distro, init).changes == []


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_a_container_running_with_other_limits_is_recreated(distro: str, init: str) -> None:
    # e.g. `docker update --memory 8g`: the label still names the right spec
    facts = with_limits(converged(distro, init, **LIMITS), ContainerLimits(
        8 * GIB, 1_500_000_000, GIB, 4096))
    plan = run(facts, distro, init, **LIMITS)
    assert commands(plan) == [f"{SCRIPT} restart"], "the script is as it should be"
    [change] = plan.changes
    assert (change.action, change.summary) == (
        "recreate", "gpuprov-jupyter runs with memory 8g, declared 16g")
    assert "-memory: 8g\n+memory: 16g\n" in change.diff.unified()


def test_every_differing_limit_is_named() -> None:
    facts = with_limits(converged(**LIMITS), ContainerLimits(0, 4_000_000_000, 64 << 20, 0))
    [change] = run(facts, **LIMITS).changes
    assert change.summary == "; ".join(f"gpuprov-jupyter runs with {d}" for d in (
        "memory unlimited, declared 16g", "cpus 4, declared 1.5", "shm-size 64m, declared 1g",
        "pids-limit unlimited, declared 4096"))


def test_a_limit_put_on_by_hand_where_none_is_declared_is_drift() -> None:
    facts = with_limits(converged(), ContainerLimits(8 * GIB, 0, 8 * GIB, 0))
    [change] = run(facts, check=True).changes
    assert change.summary == "gpuprov-jupyter runs with memory 8g, declared unlimited"


def test_a_changed_limit_rewrites_the_script_and_names_the_limit() -> None:
    facts = with_limits(converged(**LIMITS), DECLARED)
    plan = run(facts, **{**LIMITS, "jupyter_memory": "32g"})
    script, container = plan.changes
    assert script.resource == f"file {SCRIPT}" and "--memory 32g" in written(plan, SCRIPT).decode()
    assert container.summary.endswith("; gpuprov-jupyter runs with memory 16g, declared 32g")


def test_defaults_no_limit_but_a_8g_shm_for_dataloader_workers() -> None:
    plan = run(fresh())
    assert container_op(plan).limits == ContainerLimits(0, 0, 8 * GIB, 0)
    argv = docker_run_argv(written(plan, SCRIPT))
    assert "--shm-size" in argv and not {"--memory", "--cpus", "--pids-limit"} & set(argv)
    # no shm-size: the daemon's default /dev/shm, whatever that is, not compared
    plan = run(fresh(), jupyter_shm_size="")
    assert container_op(plan).limits == ContainerLimits(0, 0, None, 0)
    assert "--shm-size" not in docker_run_argv(written(plan, SCRIPT))


@pytest.mark.parametrize("spelling", [
    {"jupyter_memory": "16G", "jupyter_cpus": "1.50", "jupyter_shm_size": "1024m"},
    {"jupyter_memory": "16384MiB", "jupyter_cpus": 1.5, "jupyter_shm_size": 1073741824},
    {"jupyter_memory": 17179869184, "jupyter_cpus": "1.5", "jupyter_shm_size": "1 GB"},
])
def test_one_limit_in_any_docker_spelling_is_one_spec(spelling: dict) -> None:
    plan = run(fresh(), **{**LIMITS, **spelling})
    reference = run(fresh(), **LIMITS)
    assert spec_of(plan) == spec_of(reference)
    assert docker_run_argv(written(plan, SCRIPT)) == docker_run_argv(written(reference, SCRIPT))


# ---------------------------------------------------------------- refusals

def refusal(tmp_path: Path, var: str, value: str) -> tuple[list, RoleFailed, Path]:
    """tasks() of the role for a host whose inventory sets `var: value`."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f"all:\n  vars:\n    gpu_image: {DOUBLE_IMAGE}\n  hosts:\n"
                         f"    gpu-01:\n      {var}: {value}\n")
    host = Inventory.load(inventory).hosts["gpu-01"]
    role = load_role("jupyter", ROLES / "jupyter")
    vars = build_host_vars(host, role_defaults=role.defaults, role="jupyter",
                           play_defaults=[load_role("sshd_hardening",
                                                    ROLES / "sshd_hardening").defaults])
    ctx = TaskContext(host, vars, system_for("rhel9"), FactView(fresh()), "jupyter", role.path)
    ops: list = []
    with pytest.raises(RoleFailed) as info:
        ops.extend(role.tasks(ctx))
    return ops, info.value, inventory


@pytest.mark.parametrize(("var", "value", "shown", "message"), [
    ("jupyter_memory", "16x", "'16x'", "must be a size as docker writes it"),
    ("jupyter_memory", "lots", "'lots'", "must be a size as docker writes it"),
    ("jupyter_memory", "4m", "'4m'", "must be at least 6m"),
    ("jupyter_memory", "true", "True", "must be a size as docker writes it"),
    ("jupyter_shm_size", "-1g", "'-1g'", "must be a size as docker writes it"),
    ("jupyter_shm_size", "0", "0", "must be at least 1b"),
    ("jupyter_cpus", "two", "'two'", "must be a number of CPUs: 'two' is not a number"),
    ("jupyter_cpus", "0.001", "0.001", "must be at least 0.01"),
    ("jupyter_cpus", "0.0000000001", "1e-10", "must be a number of CPUs: '1e-10' is too "
     "precise"),
    ("jupyter_pids_limit", "0", "0", "must be a whole number of processes and threads"),
    ("jupyter_pids_limit", "-1", "-1", "must be a whole number of processes and threads"),
    ("jupyter_pids_limit", "1.5", "1.5", "must be a whole number of processes and threads"),
    ("jupyter_pids_limit", "many", "'many'", "must be a whole number of processes and threads"),
])
def test_a_bad_limit_is_refused_naming_it_and_where_it_is_set(
        tmp_path: Path, var: str, value: str, shown: str, message: str) -> None:
    ops, exc, inventory = refusal(tmp_path, var, value)
    assert ops == [], "refused before any change is planned"
    assert exc.message.startswith(f"gpu-01: role jupyter: {var}={shown} "
                                  f"(set at {inventory}:6): {message}"), exc.message


# ---------------------------------------------------------------- the script, really run

def test_the_double_runs_the_container_with_the_limits_and_a_docker_update_is_drift(
        docker_double: dict) -> None:  # noqa: F811 (the imported fixture)
    env, tmp = docker_double["env"], docker_double["tmp"]
    (tmp / "token").write_text("ab" * 32)
    vars = {"gpu_image": DOUBLE_IMAGE, "jupyter_token_file": str(tmp / "token"), **LIMITS}
    facts = fresh() | {FileState(str(tmp / "token"), content=False, sudo=True): None}
    plan = run(facts, **vars)
    script = tmp / "gpuprov-jupyter"
    script.write_bytes(written(plan, SCRIPT))

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, capture_output=True, text=True)

    assert sh("/bin/sh", str(script), "start").returncode == 0

    def drift() -> list[str]:
        text, marker = gather_script([CONTAINER])
        out = sh("/bin/sh", "-c", text).stdout
        state = parse_batch([CONTAINER], out, marker)[CONTAINER]
        return [c.summary for c in container_op(plan).plan(FactView({CONTAINER: state}))]

    inspect = sh("docker", "inspect", "--format", "{{json .HostConfig}}", NAME)
    assert '"Memory":17179869184' in inspect.stdout and '"NanoCpus":1500000000' in inspect.stdout
    assert '"ShmSize":1073741824' in inspect.stdout and '"PidsLimit":4096' in inspect.stdout
    assert drift() == []
    updated = sh("docker", "update", "--memory", "8g", NAME)
    assert (updated.returncode, updated.stdout) == (0, f"{NAME}\n"), updated.stderr
    assert drift() == ["gpuprov-jupyter runs with memory 8g, declared 16g"]
    # the fix: the start script's restart recreates it as declared
    assert sh("/bin/sh", str(script), "restart").returncode == 0
    assert drift() == []


def test_more_cpus_than_the_host_has_fails_the_start_with_dockers_words(
        docker_double: dict) -> None:  # noqa: F811 (the imported fixture)
    # only the host knows its CPUs: docker refuses, and the start script says why
    env, tmp = docker_double["env"], docker_double["tmp"]
    (tmp / "token").write_text("ab" * 32)
    facts = fresh() | {FileState(str(tmp / "token"), content=False, sudo=True): None}
    plan = run(facts, gpu_image=DOUBLE_IMAGE, jupyter_token_file=str(tmp / "token"),
               jupyter_cpus=100000)
    script = tmp / "gpuprov-jupyter"
    script.write_bytes(written(plan, SCRIPT))
    started = subprocess.run(["/bin/sh", str(script), "start"], env=env, capture_output=True,
                             text=True)
    assert started.returncode == 125
    assert "docker: Error response from daemon: Range of CPUs is from 0.01 to " in started.stderr
