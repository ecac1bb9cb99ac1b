"""Role container_toolkit on containerd cluster nodes, per distro: the CRI
plugin enabled, runc's SystemdCgroup, CDI enabled and the nvidia runtime,
judged on canned `containerd config dump` outputs (config v2 of containerd
1.6/1.7 and v3 of containerd 2.x), other settings of config.toml kept, and the
CDI spec regenerated when it does not name the loaded driver."""

from __future__ import annotations

import pytest

from gpuprov.facts.containerd import ContainerdDump, parse_toml
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.services import ServiceState
from gpuprov.facts.system import InitSystem, RootShellTest
from gpuprov.ops.containerd import ContainerdCri
from tests.unit.role_facts import ALL_DISTROS, commands, file_info, service_info, write_cmd
from tests.unit.test_role_container_toolkit import DAEMON, DAEMON_WRITE, converged, key, run

__all__ = ["key"]  # the fixture, used by name

TOML = "/etc/containerd/config.toml"
CTK = "nvidia-ctk runtime configure --runtime=containerd"
TOML_WRITE = write_cmd(TOML, validate="containerd --config {} config dump >/dev/null")
DRIVER = ("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null"
          " | head -n1")
CDI = "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
CDI_ONLY_IF = RootShellTest(f'[ -n "$({DRIVER})" ]')
CDI_UNLESS = RootShellTest(f'v="$({DRIVER})" && grep -qF ".so.$v" /etc/cdi/nvidia.yaml')
# containerd.io's own config.toml: the CRI plugin off, every other setting commented out
SHIPPED = ('#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = ["cri"]\n\n'
           '#root = "/var/lib"\n')
V2, V3 = "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"


def dump(version: int = 2, *, cri: bool = True, systemd: bool = True, nvidia: bool = True,
         default: str = "runc", cdi: bool = True, extra: str = "") -> str:
    """A `containerd config dump` as containerd 1.7 (v2) or 2.x (v3) prints it, cut to the
    CRI sections (quoting as each version prints its keys)."""
    q = '"' if version == 2 else "'"
    cri_id = V2 if version == 2 else V3
    p = f"plugins.{q}{cri_id}{q}"
    lines = [f"disabled_plugins = [{'' if cri else repr('cri')}]".replace("'", '"'),
             f'root = "/var/lib/containerd"\nversion = {version}\n{extra}',
             "[plugins]", f"  [{p}]", f"    enable_cdi = {str(cdi).lower()}",
             "    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']",
             f"    [{p}.containerd]", f"      default_runtime_name = '{default}'",
             f"      [{p}.containerd.runtimes.runc]",
             "        runtime_type = 'io.containerd.runc.v2'",
             f"        [{p}.containerd.runtimes.runc.options]",
             f"          SystemdCgroup = {str(systemd).lower()}"]
    if nvidia:
        lines += [f"      [{p}.containerd.runtimes.nvidia]",
                  "        runtime_type = 'io.containerd.runc.v2'",
                  f"        [{p}.containerd.runtimes.nvidia.options]",
                  "          BinaryName = '/usr/bin/nvidia-container-runtime'"]
    return "\n".join(lines) + "\n"


def facts_for(distro: str, *, config: str | None, effective: str | None,
              init: str = "systemd", cdi_ok: bool = True) -> dict:
    facts = converged(distro)
    facts[FileState(TOML, sudo=True)] = None if config is None else file_info(config)
    facts[ContainerdDump()] = None if effective is None else ContainerdDump().process(
        effective, 0)
    facts[InitSystem()] = init
    facts[FileState("/etc/cdi", content=False)] = FileInfo("directory", "root", "root",
                                                           "0755", 4096, 0, 0)
    facts[CDI_ONLY_IF] = True
    facts[CDI_UNLESS] = cdi_ok
    facts[ServiceState("containerd")] = service_info("containerd")
    return facts


def plan_for(distro: str, facts: dict, key: str, **vars: object):
    return run(distro, facts, key, container_runtime="containerd", docker_install=False, **vars)


def written(plan) -> dict:
    """config.toml as gpuprov writes it, parsed."""
    [step] = [s for c in plan.changes if c.resource == f"file {TOML}" for s in c.steps]
    assert step.stdin is not None
    return parse_toml(step.stdin.decode())


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_shipped_config_gets_cri_systemd_cgroup_cdi_and_nvidia(distro: str, key: str) -> None:
    plan = plan_for(distro, facts_for(distro, config=SHIPPED,
                                      effective=dump(cri=False, systemd=False, nvidia=False,
                                                     cdi=False)), key)
    assert commands(plan) == [TOML_WRITE, CTK]
    assert all(c.notify == ("restart containerd",) for c in plan.changes)
    doc = written(plan)
    assert doc["version"] == 2 and doc["disabled_plugins"] == []
    section = doc["plugins"][V2]
    assert section["enable_cdi"] is True
    assert section["containerd"]["runtimes"]["runc"] == {
        "runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}
    # why, in words, from the effective config
    assert "the CRI plugin is disabled (disabled_plugins: cri)" in plan.changes[0].summary
    assert plan.labels[-4:] == [f"containerd CRI config {TOML}", "directory /etc/cdi",
                                f"command {CDI}", "service containerd"]
    assert f"json_merge {DAEMON}" not in plan.labels


@pytest.mark.parametrize("distro", ALL_DISTROS)
@pytest.mark.parametrize("version", [2, 3])
def test_effective_config_in_order_is_no_change(distro: str, version: int, key: str) -> None:
    # config.toml's text differs from the dump (comments, defaults): not drift
    plan = plan_for(distro, facts_for(distro, config=SHIPPED.replace('["cri"]', "[]"),
                                      effective=dump(version)), key)
    assert plan.changes == []


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_cri_disabled_again_is_drift(distro: str, key: str) -> None:
    good = dump(nvidia=True)
    tampered = good.replace("disabled_plugins = []", 'disabled_plugins = ["cri"]')
    plan = plan_for(distro, facts_for(distro, config=tampered, effective=tampered), key,
                    check=True)
    assert commands(plan) == [TOML_WRITE]
    doc = written(plan)
    assert doc["disabled_plugins"] == []
    # the rest of the file as it was, the nvidia runtime included
    assert doc["plugins"][V2]["containerd"]["runtimes"]["nvidia"]["options"] == {
        "BinaryName": "/usr/bin/nvidia-container-runtime"}


def test_v3_config_keys_in_the_cri_runtime_plugin(key: str) -> None:
    config = 'version = 3\ndisabled_plugins = ["cri"]\n'
    plan = plan_for("ubuntu2404", facts_for(
        "ubuntu2404", config=config,
        effective=dump(3, cri=False, systemd=False, nvidia=False, cdi=True)), key)
    assert commands(plan) == [TOML_WRITE, CTK]
    doc = written(plan)
    assert doc["version"] == 3 and V2 not in doc.get("plugins", {})
    assert doc["plugins"][V3]["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": True}


def test_other_settings_are_kept(key: str) -> None:
    config = ('version = 2\nroot = "/data/containerd"\ndisabled_plugins = ["cri", "zfs"]\n'
              f'[plugins."{V2}"]\nsandbox_image = "registry.local/pause:3.9"\n'
              f'[plugins."{V2}".registry]\nconfig_path = "/etc/containerd/certs.d"\n')
    plan = plan_for("debian12", facts_for("debian12", config=config,
                                          effective=dump(cri=False, nvidia=False)), key)
    doc = written(plan)
    assert doc["root"] == "/data/containerd" and doc["disabled_plugins"] == ["zfs"]
    assert doc["plugins"][V2]["sandbox_image"] == "registry.local/pause:3.9"
    assert doc["plugins"][V2]["registry"] == {"config_path": "/etc/containerd/certs.d"}


def test_no_systemd_no_systemd_cgroup(key: str) -> None:
    plan = plan_for("debian12", facts_for("debian12", config=SHIPPED, init="sysvinit",
                                          effective=dump(cri=False, systemd=False)), key)
    # only the CRI plugin was missing: nothing else is written
    assert written(plan) == {"version": 2, "disabled_plugins": []}
    # and a sysvinit host with SystemdCgroup false is in order
    plan = plan_for("debian12", facts_for("debian12", config="", init="sysvinit",
                                          effective=dump(systemd=False)), key)
    assert plan.changes == []


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("var", ["containerd_nvidia_default", "container_toolkit_default_runtime"])
def test_nvidia_as_default_runtime(version: int, var: str, key: str) -> None:
    facts = facts_for("rhel9", config=f"version = {version}\n", effective=dump(version))
    plan = plan_for("rhel9", facts, key, **{var: True})
    assert commands(plan) == [f"{CTK} --set-as-default"]
    assert "default_runtime_name is runc, not nvidia" in plan.changes[0].summary
    facts[ContainerdDump()] = ContainerdDump().process(dump(version, default="nvidia"), 0)
    assert plan_for("rhel9", facts, key, **{var: True}).changes == []


def test_runtime_nvidia_missing_runs_nvidia_ctk_only(key: str) -> None:
    plan = plan_for("ubuntu2204", facts_for("ubuntu2204", config=dump(nvidia=False),
                                            effective=dump(nvidia=False)), key)
    assert commands(plan) == [CTK]


def test_effective_config_undone_elsewhere_is_blocked_not_looped(key: str) -> None:
    # config.toml has it all, yet the dump disables CRI (an imported file): say so
    plan = plan_for("ubuntu2404", facts_for("ubuntu2404", config=dump(),
                                            effective=dump(cri=False)), key, check=True)
    [change] = plan.changes
    assert change.blocked is not None and "the CRI plugin is disabled" in change.blocked


def test_cdi_spec_regenerated_when_it_misses_the_driver(key: str) -> None:
    plan = plan_for("debian12", facts_for("debian12", config="", effective=dump(),
                                          cdi_ok=False), key)
    assert commands(plan) == [CDI]
    cdi = next(p.op for p in plan.ops if p.op.label == f"command {CDI}")
    assert set(cdi.facts()) == {CDI_ONLY_IF, CDI_UNLESS} and CDI_UNLESS.sudo


def test_containerd_not_installed_yet_plans_from_the_file(key: str) -> None:
    plan = plan_for("ubuntu2404", facts_for("ubuntu2404", config=None, effective=None), key,
                    check=True)
    assert commands(plan) == [TOML_WRITE, CTK]
    assert written(plan)["version"] == 2


def test_dump_failure_is_read_from_the_file(key: str) -> None:
    facts = facts_for("debian12", config=SHIPPED, effective=None)
    facts[ContainerdDump()] = ContainerdDump().process("containerd: invalid config\n", 1)
    plan = plan_for("debian12", facts, key)
    assert commands(plan) == [TOML_WRITE, CTK]


def test_with_docker_installed_configures_both(key: str) -> None:
    facts = facts_for("ubuntu2404", config=SHIPPED, effective=dump(cri=False))
    facts[FileState(DAEMON)] = None
    plan = run("ubuntu2404", facts, key, container_runtime="containerd")
    assert commands(plan) == [DAEMON_WRITE, TOML_WRITE]
    assert [c.notify for c in plan.changes] == [("restart docker",), ("restart containerd",)]


def test_version_1_config_is_refused() -> None:
    op = ContainerdCri(TOML)
    with pytest.raises(Exception, match="version 1 config"):
        op.read(file_info('[plugins.cri]\nsandbox_image = "x"\n'))


# ---------------------------------------------------------------- the dump fact

def test_dump_fact_reads_v2_and_v3() -> None:
    v2 = ContainerdDump().process(dump(2, default="nvidia"), 0)
    v3 = ContainerdDump().process(dump(3, cri=False, systemd=False, cdi=False), 0)
    assert v2 is not None and v2.config is not None and v3 is not None and v3.config is not None
    assert (v2.config.version, v2.config.disabled, v2.config.systemd_cgroup,
            v2.config.nvidia_binary, v2.config.default_runtime, v2.config.enable_cdi) == (
        2, (), True, "/usr/bin/nvidia-container-runtime", "nvidia", True)
    assert v3.config.issues(systemd=True, nvidia_default=False) == {
        "cri": "the CRI plugin is disabled (disabled_plugins: cri)",
        "systemd": "runc's SystemdCgroup is not true", "cdi": "enable_cdi is not true"}
    # a v3 dump's keys are not read under the v2 plugin id, nor the reverse
    assert dump(3).count(V2) == 0


def test_dump_fact_without_containerd_or_with_a_broken_config() -> None:
    assert ContainerdDump().process("", 0) is None
    broken = ContainerdDump().process("containerd: failed to load TOML: near line 3\n", 1)
    assert broken is not None and broken.config is None
    assert broken.error == "containerd: failed to load TOML: near line 3"
    garbage = ContainerdDump().process("not = [toml", 0)
    assert garbage is not None and garbage.error is not None
