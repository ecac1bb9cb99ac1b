"""`gpuprov k8s-handoff`: a 3-node cluster group's output matches the golden
file; the Operator's values hold only keys its documentation lists (a schema
written from the docs cited in output/handoff.py); bad input is one error
naming the host and the variable; -o writes atomically; --facts lists GPUs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gpuprov.cli import handoff as handoff_cli
from gpuprov.engine.handoff import GpuSummary, Node, cluster_nodes, gpu_summary
from gpuprov.model.inventory import Inventory
from gpuprov.output.handoff import node_labels, operator_values, plugin_values, render
from tests.unit.cli_runner import gpuprov

DATA = Path(__file__).parent / "data" / "handoff"
GOLDEN = DATA / "cluster3.golden"


def _bool() -> dict[str, Any]:
    return {"type": "boolean"}


def _section(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "additionalProperties": False}


# The keys the GPU Operator documents ("Common chart customization options",
# docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/getting-started.html, and
# the chart's deployments/gpu-operator/values.yaml), with the values they take.
OPERATOR_SCHEMA = _section(
    driver=_section(enabled=_bool()),
    toolkit=_section(enabled=_bool()),
    cdi=_section(enabled=_bool(), default=_bool()),
    operator=_section(defaultRuntime={"enum": ["docker", "crio", "containerd"]}),
    devicePlugin=_section(enabled=_bool()),
    dcgmExporter=_section(enabled=_bool()),
)

# NVIDIA/k8s-device-plugin's chart values (deployments/helm/nvidia-device-plugin/values.yaml)
PLUGIN_SCHEMA = _section(
    runtimeClassName={"type": ["string", "null"]},
    deviceListStrategy={"enum": ["envvar", "volume-mounts", "cdi-annotations", "cdi-cri"]},
    deviceIDStrategy={"enum": ["uuid", "index"]},
    nvidiaDriverRoot={"type": "string"},
    migStrategy={"enum": ["none", "single", "mixed"]},
    failOnInitError=_bool(),
)


@pytest.fixture()
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)   # no ./roles: the bundled roles' defaults
    shutil.copy(DATA / "cluster.yml", tmp_path / "cluster.yml")
    return tmp_path / "cluster.yml"


def _nodes(path: Path, pattern: str = "cluster") -> list[Node]:
    return cluster_nodes(Inventory.load(path).select(pattern))


def test_three_node_cluster_matches_the_golden_file(cluster: Path) -> None:
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster")
    assert out.code == 0, out.both
    assert out.stdout == GOLDEN.read_text()


def test_the_values_parse_and_hold_only_documented_keys(cluster: Path) -> None:
    out = gpuprov("k8s-handoff", "-i", str(cluster), "-l", "cluster", "--format", "values")
    values = yaml.safe_load(out.stdout)
    jsonschema.validate(values, OPERATOR_SCHEMA)
    assert values["driver"] == {"enabled": False} and values["toolkit"] == {"enabled": False}
    assert values["cdi"] == {"enabled": True, "default": True}
    assert values["operator"]["defaultRuntime"] == "containerd"
    assert "#   gpu-node-01: driver branch 580" in out.stdout
    assert "#   node-03.cluster: driver branch 570" in out.stdout


def test_an_undocumented_key_fails_the_schema() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"driver": {"enabled": False, "installed": True}}, OPERATOR_SCHEMA)


def test_device_plugin_values_follow_the_runtime_default(cluster: Path) -> None:
    nodes = _nodes(cluster)
    values = plugin_values(nodes)
    jsonschema.validate(values, PLUGIN_SCHEMA)
    assert values["runtimeClassName"] is None      # nvidia is containerd's default
    assert values["deviceListStrategy"] == "cdi-annotations"
    not_default = [Node(n.host, n.name, n.driver_branch, False, n.gpu_exporter) for n in nodes]
    assert plugin_values(not_default)["runtimeClassName"] == "nvidia"
    assert operator_values(not_default)["cdi"]["default"] is False


def test_dcgm_exporter_off_only_where_gpu_exporter_runs(cluster: Path) -> None:
    nodes = _nodes(cluster)
    assert operator_values(nodes)["dcgmExporter"] == {"enabled": True}
    assert [("nvidia.com/gpu.deploy.dcgm-exporter" in node_labels(n)) for n in nodes] == \
        [False, True, False]
    everywhere = [Node(n.host, n.name, n.driver_branch, n.nvidia_default, True) for n in nodes]
    assert operator_values(everywhere)["dcgmExporter"] == {"enabled": False}


def test_k8s_node_name_overrides_the_inventory_name(cluster: Path) -> None:
    assert [n.name for n in _nodes(cluster)] == ["gpu-node-01", "node-02.cluster",
                                                "node-03.cluster"]


def test_a_host_without_containerd_is_one_error_naming_host_and_var(cluster: Path) -> None:
    out = gpuprov("k8s-handoff", str(cluster), "-l", "all")
    assert out.code == 1 and out.stdout == ""
    assert "host ws1.example.com: container_runtime is 'docker', not 'containerd'" in out.stderr
    assert "container_toolkit/defaults.yml" in out.stderr   # where the value came from
    assert out.stderr.count("error:") == 1


def test_no_hosts_selected_is_an_error(cluster: Path) -> None:
    out = gpuprov("k8s-handoff", str(cluster), "-l", "nosuchgroup")
    assert out.code == 1 and out.stdout == ""
    assert "nosuchgroup" in out.stderr
    with pytest.raises(Exception, match="no hosts selected"):
        cluster_nodes([])


def test_nodes_disagreeing_on_the_runtime_default_are_named(cluster: Path) -> None:
    text = cluster.read_text().replace("          gpu_exporter_enabled: true\n",
                                       "          gpu_exporter_enabled: true\n"
                                       "          containerd_nvidia_default: false\n")
    cluster.write_text(text)
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster")
    assert out.code == 1
    assert "containerd_nvidia_default differs" in out.stderr
    assert "node-02.cluster=false" in out.stderr


def test_container_toolkit_default_runtime_makes_nvidia_the_default_too(cluster: Path) -> None:
    # the role sets --set-as-default for either variable: the hand-off must say so
    text = cluster.read_text().replace("containerd_nvidia_default: true",
                                       "container_toolkit_default_runtime: true")
    assert text != cluster.read_text()
    cluster.write_text(text)
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster", "--format", "values")
    assert out.code == 0, out.both
    assert "default: true" in out.stdout


def test_a_flag_that_is_not_a_boolean_names_host_and_var(cluster: Path) -> None:
    cluster.write_text(cluster.read_text().replace("gpu_exporter_enabled: true",
                                                   "gpu_exporter_enabled: maybe"))
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster")
    assert out.code == 1
    assert "host node-02.cluster: gpu_exporter_enabled must be true or false" in out.stderr
    assert "cluster.yml:" in out.stderr


def test_output_file_is_written_atomically(cluster: Path, tmp_path: Path) -> None:
    target = tmp_path / "values.yaml"
    target.write_text("old\n")
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster", "--format", "values",
                  "-o", str(target))
    assert out.code == 0 and out.stdout == ""
    jsonschema.validate(yaml.safe_load(target.read_text()), OPERATOR_SCHEMA)
    assert oct(os.stat(target).st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_output_into_a_missing_directory_writes_nothing(cluster: Path, tmp_path: Path) -> None:
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster", "-o",
                  str(tmp_path / "nope" / "values.yaml"))
    assert out.code == 1 and "does not exist" in out.stderr
    assert not (tmp_path / "nope").exists()


def test_a_failed_check_leaves_an_existing_output_alone(cluster: Path, tmp_path: Path) -> None:
    target = tmp_path / "values.yaml"
    target.write_text("old\n")
    out = gpuprov("k8s-handoff", str(cluster), "-l", "all", "-o", str(target))
    assert out.code == 1
    assert target.read_text() == "old\n"


def test_each_format_is_a_part_of_all(cluster: Path) -> None:
    nodes = _nodes(cluster)
    whole = render(nodes, "all")
    for fmt in ("values", "labels", "device-plugin"):
        assert render(nodes, fmt) in whole
    assert render(nodes, "labels").splitlines()[1] == (
        "kubectl label node gpu-node-01 nvidia.com/gpu.deploy.driver=false "
        "nvidia.com/gpu.deploy.container-toolkit=false --overwrite")


def test_facts_list_each_nodes_gpus(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "uuid": "u"}
    answers = {"node-01.cluster": {"gpus": [h100, {**h100, "index": 1}]},
               "node-02.cluster": {"gpus": [], "nvidia": {"reason": "nvidia-smi lists no GPU"}},
               "node-03.cluster": {"unreachable": "node-03.cluster: timed out\nmore",
                                   "error": None}}
    asked: list[Any] = []

    def fake(hosts: Any, options: Any, names: Any) -> dict[str, Any]:
        asked.append(list(names))
        return answers

    monkeypatch.setattr(handoff_cli, "collect_facts", fake)
    out = gpuprov("k8s-handoff", str(cluster), "-l", "cluster", "--format", "values",
                  "--facts")
    assert asked == [["gpu", "containerd"]]   # the containerd version rides along
    assert out.code == 4   # an unreachable node: printed all the same
    assert ("#   gpu-node-01: driver branch 580  2 x NVIDIA H100 80GB HBM3, 81559 MiB each"
            in out.stdout)
    assert "#   node-02.cluster: driver branch 580  no GPU: nvidia-smi lists no GPU" in out.stdout
    assert "node-03.cluster: driver branch 570  no GPU: node-03.cluster: timed out\n" \
        in out.stdout


def test_gpu_summary_of_mixed_memory() -> None:
    gpus = [{"name": "A", "memory_total_mib": 40960}, {"name": "A", "memory_total_mib": 81920}]
    assert gpu_summary({"gpus": gpus}) == GpuSummary(2, ("A",), (40960, 81920))


def test_facts_through_the_real_collector_on_a_local_host(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
        "    container_runtime: containerd\n  hosts:\n    here:\n")
    out = gpuprov("k8s-handoff", "local.yml", "--format", "values", "--facts")
    assert out.code == 0, out.both
    line = next(x for x in out.stdout.splitlines() if x.startswith("#   here: driver branch"))
    assert " x " in line or "no GPU: " in line   # this machine's answer, GPU or not
