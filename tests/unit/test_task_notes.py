"""Notes that ops report (a `note` in Op.report's data, e.g. k8s_node's
"kubelet not installed"): shown in apply's footer and in drift-check's table
and JSON, never counted as a change, drift or failure."""

from __future__ import annotations

import io
import json

from rich.console import Console

from gpuprov.engine.results import OK, RunResult, TaskResult
from gpuprov.output.drift import drift_json, drift_table_text, host_drift_status
from gpuprov.output.report import render_recap

NOTE = "kubelet not installed: install it with your cluster's tooling"


def make_run(command: str) -> RunResult:
    run = RunResult(command, check=command != "apply", started=1000.0, finished=1001.0)
    host = run.host("node-01")
    host.tasks = [TaskResult("k8s_node", "file /etc/sysctl.d/99-k8s.conf", OK),
                  TaskResult("k8s_node", "check kubelet/kubeadm/kubectl", OK,
                             data={"kubernetes_tools": {"kubelet": None}, "note": NOTE}),
                  TaskResult("verify", "gpu", OK, data={"gpus": []})]
    return run


def test_task_notes_are_the_notes_of_the_tasks_data() -> None:
    assert make_run("apply").host("node-01").task_notes() == [f"k8s_node: {NOTE}"]


def test_apply_footer_shows_the_note() -> None:
    buf = io.StringIO()
    render_recap(make_run("apply"), Console(file=buf, width=200, color_system=None))
    assert f"note node-01: k8s_node: {NOTE}" in buf.getvalue()


def test_drift_check_shows_the_note_and_stays_in_sync() -> None:
    run = make_run("drift-check")
    assert host_drift_status(run.host("node-01")) == "in_sync"
    text = drift_table_text(run)
    assert "node-01  in sync\n" in text
    assert f"    note: k8s_node: {NOTE}\n" in text
    data = json.loads(drift_json(run))
    assert data["in_sync"] is True
    assert data["hosts"]["node-01"]["notes"] == [f"k8s_node: {NOTE}"]
