"""`gpuprov verify` output: one row per host from the verify task's report,
hosts that could not be checked included, as a table and as JSON."""

from __future__ import annotations

import io
import json

from rich.console import Console

from gpuprov.engine.results import FAILED, OK, HostResult, RunResult, TaskResult
from gpuprov.output.verify import verify_json, verify_rows, verify_table

FOUND = {"status": "pass", "gpus": ["NVIDIA A100-SXM4-80GB"] * 2, "driver_version": "580.95.05",
         "cuda_version": "13.0", "torch": "2.9.0+cu128", "torch_cuda": "12.8",
         "image_digest": "sha256:" + "e" * 64, "problems": []}


def run_of(*hosts: HostResult) -> RunResult:
    run = RunResult("verify", check=False)
    for host in hosts:
        run.hosts[host.host] = host
    return run


def test_rows_pass_fail_and_unreachable() -> None:
    good = HostResult("lab-01", [TaskResult("verify", "verify GPU", OK, data=FOUND)])
    bad_data = {**FOUND, "status": "fail", "problems": ["nvidia-smi: the nvidia kernel module "
                                                        "is not loaded"]}
    bad = HostResult("lab-02", [TaskResult("verify", "verify GPU", FAILED, data=bad_data,
                                           error="lab-02: GPU verification failed")])
    refused = HostResult("lab-03", error="lab-03: role verify: gpu_devices='x' ...")
    gone = HostResult("cloud-01", unreachable="connection refused")
    rows = verify_rows(run_of(good, bad, refused, gone))
    assert [(r["host"], r["status"]) for r in rows] == [
        ("lab-01", "pass"), ("lab-02", "fail"), ("lab-03", "fail"), ("cloud-01", "unreachable")]
    assert rows[2]["problems"] == ["lab-03: role verify: gpu_devices='x' ..."]
    data = json.loads(verify_json(rows))
    assert data["summary"] == {"pass": 1, "fail": 2, "unreachable": 1}

    out = io.StringIO()
    verify_table(rows, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "2x NVIDIA A100-SXM4-80GB" in text and "580.95.05" in text
    assert "2.9.0+cu128 (CUDA 12.8)" in text
    assert "lab-02: nvidia-smi: the nvidia kernel module is not loaded" in text
    assert "cloud-01: connection refused" in text
    assert text.rstrip().endswith("4 hosts: 1 passed, 3 not")
