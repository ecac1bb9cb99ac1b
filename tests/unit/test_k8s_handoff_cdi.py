"""`gpuprov k8s-handoff` and containerd without CDI (older than 1.7, Debian 12's
1.6): with --facts the values leave CDI off for the whole cluster and say
which nodes and why (golden file); without --facts, nodes on the
distribution's containerd keep today's values with a warning."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gpuprov.cli import handoff as handoff_cli
from gpuprov.engine.handoff import (
    Node,
    cluster_cdi,
    cluster_nodes,
    containerd_version,
    has_cdi,
    unread_distro_containerd,
)
from gpuprov.model.inventory import Inventory
from gpuprov.output.handoff import cdi_comments, operator_values, plugin_values
from tests.unit.cli_runner import gpuprov
from tests.unit.test_k8s_handoff import DATA, GOLDEN, OPERATOR_SCHEMA, PLUGIN_SCHEMA

GOLDEN16 = DATA / "cluster-containerd16.golden"
H100 = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mib": 81559, "uuid": "u"}


def _answer(version: str | None) -> dict[str, Any]:
    return {"gpus": [H100], "nvidia": {}, "containerd": version}


#: Debian 12's containerd on two nodes, Docker's 1.7 on the third
MIXED = {"deb-01.cluster": _answer("1.6.20~ds1"), "deb-02.cluster": _answer("1.6.20~ds1"),
         "node-03.cluster": _answer("1.7.27")}


@pytest.fixture()
def debian12(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)   # no ./roles: the bundled roles' defaults
    shutil.copy(DATA / "cluster-debian12.yml", tmp_path / "cluster.yml")
    return tmp_path / "cluster.yml"


def _facts(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> list[Any]:
    asked: list[Any] = []

    def fake(hosts: Any, options: Any, names: Any) -> dict[str, Any]:
        asked.append(list(names))
        return answers

    monkeypatch.setattr(handoff_cli, "collect_facts", fake)
    return asked


def _nodes(path: Path) -> list[Node]:
    return cluster_nodes(Inventory.load(path).select("cluster"))


@pytest.mark.parametrize(("version", "cdi"), [
    ("1.6.20~ds1", False), ("1.6.0", False), ("v1.6.36", False), ("1.7.27", True),
    ("1.7.0", True), ("2.0.4", True), ("2.1.1~ds1", True), (None, None), ("", None),
    ("unknown", None)])
def test_containerd_has_cdi_from_17(version: str | None, cdi: bool | None) -> None:
    assert has_cdi(version) is cdi


def test_mixed_cluster_with_containerd_16_matches_the_golden_file(
        debian12: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _facts(monkeypatch, MIXED)
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--facts")
    assert out.code == 0, out.both
    assert asked == [["gpu", "containerd"]]   # one facts script per host, as before
    assert out.stdout == GOLDEN16.read_text()
    assert "CDI is off for the whole cluster" in out.stderr
    assert "deb-01.cluster (1.6.20~ds1), gpu-deb-02 (1.6.20~ds1)" in out.stderr


def test_without_cdi_the_values_use_the_nvidia_runtime(
        debian12: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _facts(monkeypatch, MIXED)
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--facts",
                  "--format", "values")
    values = yaml.safe_load(out.stdout)
    jsonschema.validate(values, OPERATOR_SCHEMA)
    assert values["cdi"] == {"enabled": False, "default": False}
    assert values["driver"] == {"enabled": False} and values["toolkit"] == {"enabled": False}
    assert "#   deb-01.cluster: containerd 1.6.20~ds1" in out.stdout
    assert "#   gpu-deb-02: containerd 1.6.20~ds1" in out.stdout
    # mixed: the common setting, and the output says so
    assert "# node-03.cluster (1.7.27) could use CDI" in out.stdout
    assert "# one setting for the whole cluster: the one every node can run." in out.stdout
    assert "# runtimeClassName: nvidia (or set containerd_nvidia_default: true)." in out.stdout
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--facts",
                  "--format", "device-plugin")
    plugin = yaml.safe_load(out.stdout)
    jsonschema.validate(plugin, PLUGIN_SCHEMA)
    assert plugin["deviceListStrategy"] == "envvar"
    assert plugin["runtimeClassName"] == "nvidia"   # nvidia is not containerd's default
    assert "#   deb-01.cluster: containerd 1.6.20~ds1" in out.stdout


def test_every_node_without_cdi_and_nvidia_the_default(debian12: Path) -> None:
    nodes = [Node(n.host, n.name, n.driver_branch, True, n.gpu_exporter,
                  containerd_package="containerd", containerd="1.6.20~ds1")
             for n in _nodes(debian12)]
    assert operator_values(nodes)["cdi"] == {"enabled": False, "default": False}
    values = plugin_values(nodes)
    assert values["deviceListStrategy"] == "envvar" and values["runtimeClassName"] is None
    text = "\n".join(cdi_comments(nodes))
    assert "could use CDI" not in text   # not mixed: nothing to explain
    assert "containerd's default runtime on every node." in text


def test_containerd_17_and_later_everywhere_keeps_cdi(
        debian12: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _facts(monkeypatch, {**MIXED, "deb-01.cluster": _answer("1.7.24~ds1"),
                         "deb-02.cluster": _answer("2.0.4")})
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--facts")
    assert out.code == 0 and out.stderr == "", out.both
    assert "cdi:\n  enabled: true\n  default: false\n" in out.stdout
    assert "deviceListStrategy: cdi-annotations" in out.stdout
    assert "CDI is off" not in out.stdout and "WARNING" not in out.stdout


def test_without_facts_the_distributions_containerd_is_a_warning(debian12: Path) -> None:
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster")
    assert out.code == 0, out.both
    # today's values, the version being unknown
    assert "cdi:\n  enabled: true\n" in out.stdout
    assert "deviceListStrategy: cdi-annotations" in out.stdout
    warning = ("# WARNING: containerd_package: containerd (the distribution's) on "
               "deb-01.cluster, gpu-deb-02:")
    assert out.stdout.count(warning) == 2   # in the values and the device plugin's
    assert "# containerd older than 1.7 (Debian 12's 1.6) has no CDI" in out.stdout
    assert "node-03.cluster" not in warning   # Docker's containerd.io
    assert "warning:" in out.stderr and "re-run with --facts" in out.stderr
    assert "deb-01.cluster, gpu-deb-02:" in out.stderr


def test_the_warning_travels_with_the_values_file(debian12: Path, tmp_path: Path) -> None:
    target = tmp_path / "values.yaml"
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--format", "values",
                  "-o", str(target))
    assert out.code == 0 and out.stdout == ""
    assert "re-run with --facts" in out.stderr
    assert "# WARNING: containerd_package: containerd" in target.read_text()
    jsonschema.validate(yaml.safe_load(target.read_text()), OPERATOR_SCHEMA)


def test_docker_containerd_io_without_facts_has_no_warning(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "cluster.yml", tmp_path / "cluster.yml")
    out = gpuprov("k8s-handoff", "cluster.yml", "-l", "cluster")
    assert out.stdout == GOLDEN.read_text() and out.stderr == ""


def test_an_unread_version_keeps_cdi_and_says_why(debian12: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _facts(monkeypatch, {**MIXED, "deb-01.cluster": {"unreachable": "deb-01: timed out\nmore",
                                                     "error": None},
                         "deb-02.cluster": _answer(None)})
    out = gpuprov("k8s-handoff", str(debian12), "-l", "cluster", "--facts",
                  "--format", "values")
    assert out.code == 4   # unreachable: printed all the same
    assert "cdi:\n  enabled: true\n" in out.stdout
    assert ("# WARNING: containerd_package: containerd (the distribution's) on "
            "deb-01.cluster (deb-01: timed out), gpu-deb-02 (containerd is not installed):"
            in out.stdout)


def test_one_old_node_turns_cdi_off_whatever_its_package(debian12: Path) -> None:
    nodes = _nodes(debian12)
    assert [n.containerd_package for n in nodes] == ["containerd", "containerd",
                                                    "containerd.io"]
    assert [n.name for n in unread_distro_containerd(nodes)] == ["deb-01.cluster",
                                                                 "gpu-deb-02"]
    # Docker's repository once shipped containerd.io 1.6 too: the version decides
    read = [Node(n.host, n.name, n.driver_branch, False, False,
                 containerd_package="containerd.io", containerd=v)
            for n, v in zip(nodes, ("1.7.27", "1.7.27", "1.6.33"), strict=True)]
    assert not cluster_cdi(read) and unread_distro_containerd(read) == []


def test_containerd_version_of_an_answer() -> None:
    assert containerd_version({"containerd": "1.6.20~ds1"}) == ("1.6.20~ds1", "")
    assert containerd_version({"containerd": None}) == (None, "containerd is not installed")
    assert containerd_version({"unreachable": None, "error": "bad\nx"}) == (None, "bad")


def test_facts_one_round_trip_on_a_local_host(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # read-only: nvidia-smi and containerd --version on this machine
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.yml").write_text(
        "all:\n  vars:\n    ansible_connection: local\n    become: false\n"
        "    container_runtime: containerd\n  hosts:\n    here:\n")
    real = handoff_cli.collect_facts
    seen: list[dict[str, Any]] = []

    def spy(*args: Any) -> dict[str, Any]:
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(handoff_cli, "collect_facts", spy)
    out = gpuprov("k8s-handoff", "local.yml", "--format", "values", "--facts")
    assert out.code == 0, out.both
    assert seen[0]["here"]["round_trips"] == 1
    assert "containerd" in seen[0]["here"]
