"""The per-host profile of a run (-v, --report, drift-check JSON): connect,
each facts batch with its slowest probes by name, plan, each step, so a slow
fact or an extra round trip is visible with what caused it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from gpuprov.engine.hostrun import HostRun, RoleRun
from gpuprov.engine.results import HostResult
from gpuprov.engine.roles import Role
from gpuprov.facts.base import Fact, gather_script, parse_batch
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars
from gpuprov.output.report import profile_text
from tests.unit.test_executor import CountingFactory, executor, project  # noqa: F401
from tests.unit.test_hostrun import HOST, Env, env  # noqa: F401  (the fixtures)


@dataclass(frozen=True)
class Probe(Fact[str]):
    script: str

    def command(self) -> str:
        return self.script

    def process(self, output: str, exit_code: int) -> str:
        return f"{output.strip()}:{exit_code}"


def test_a_timed_script_says_how_long_each_probe_took_and_answers_the_same() -> None:
    facts = [Probe("echo fast"), Probe("sleep 0.2; echo slow; exit 3")]
    script, marker = gather_script(facts, timed=True)
    assert "date" not in script  # no process per probe: /proc/uptime through `read`
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                         check=False).stdout
    timings: dict[Fact[object], float] = {}
    answers = parse_batch(facts, out, marker, timings)  # type: ignore[arg-type]
    assert answers == {facts[0]: "fast:0", facts[1]: "slow:3"}
    assert timings[facts[1]] >= 0.15 and timings[facts[0]] < 0.1
    plain, marker2 = gather_script(facts)
    assert "/proc/uptime" not in plain
    out2 = subprocess.run(["sh", "-s"], input=plain, capture_output=True, text=True,
                          check=False).stdout
    untimed: dict[Fact[object], float] = {}
    assert parse_batch(facts, out2, marker2, untimed) == answers  # type: ignore[arg-type]
    assert untimed == {}


SLOW = '''\
"""Test role: one file whose op reads a slow probe too."""
from dataclasses import dataclass

from gpuprov.facts.base import Fact
from gpuprov.ops.base import Op
from gpuprov.ops.files import file


@dataclass(frozen=True)
class SlowProbe(Fact[str]):
    def command(self):
        return "sleep 0.2; echo warm"

    def process(self, output, exit_code):
        return output.strip()


class NeedsWarm(Op):
    label = "gpu is warm"

    def facts(self):
        return [SlowProbe()]

    def plan(self, facts):
        return []


def tasks(ctx):
    base, own = ctx.vars["base"], {"owner": ctx.vars["owner"], "group": ctx.vars["group"]}
    yield NeedsWarm()
    yield file(f"{base}/a.conf", "a=1\\n", **own)
'''


def _run(env: Env, role: Role, timed: bool) -> HostResult:  # noqa: F811
    host = Host(HOST)
    run = RoleRun(role, build_host_vars(host, role_defaults=role.defaults, role=role.name))
    return HostRun(host, env.connector(), [run], False, play="play one", timed=timed).run()


def test_the_profile_names_each_round_trip_and_the_slowest_probe(env: Env) -> None:  # noqa: F811
    role = env.role("slow", SLOW)
    first = _run(env, role, timed=True)
    phases = [(p["phase"], p["why"]) for p in first.profile]
    # one entry per round trip (facts, step), then the planning time
    assert phases[:2] == [("connect", ""), ("facts", "system")]
    assert phases[2] == ("facts", "ops")
    assert ("step", f"file {env.target}/a.conf") in phases
    assert phases[-1] == ("plan", "")
    assert sum(p in {"facts", "step"} for p, _ in phases) == first.round_trips
    ops = first.profile[2]
    assert ops["slowest"][0][0] == "SlowProbe()" and ops["slowest"][0][1] >= 0.15
    assert all(p["play"] == "play one" for p in first.profile)
    text = profile_text(first)
    assert f"profile {HOST}: 1 connection(s), {first.round_trips} round trip(s)" in text
    assert "slowest: SlowProbe() 0." in text
    assert first.to_json()["profile"] == first.profile

    second = _run(env, role, timed=False)  # without -v: the same phases, no probe timings
    assert [p["phase"] for p in second.profile] == ["connect", "facts", "facts", "plan"]
    assert all(p.get("slowest", []) == [] for p in second.profile)


def test_the_executor_profiles_connect_and_lock_and_v_turns_probe_timing_on() -> None:
    from gpuprov.cli.common import run_options

    base = {"ask_become_pass": False, "forks": 5, "tags": "", "skip_tags": "",
            "extra_vars": ()}
    assert run_options({**base, "verbose": 1}, check=True, hosts=1).profile
    assert not run_options({**base, "verbose": 0}, check=True, hosts=1).profile


def test_a_run_report_holds_each_hosts_profile_from_connect_on(project: Path) -> None:  # noqa: F811
    run = executor(project, CountingFactory()).run("apply")
    for result in run.hosts.values():
        phases = [p["phase"] for p in result.profile]
        assert phases[0] == "connect" and phases.count("connect") == 1
        assert phases.count("facts") >= 1 and "plan" in phases and "step" in phases
        assert result.to_json()["profile"] == result.profile
