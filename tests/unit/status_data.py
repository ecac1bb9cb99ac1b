"""Canned `gpuprov status` data in engine/status.py's shape, for the unit tests."""

from __future__ import annotations

import copy
from typing import Any


def gpu(index: int = 0, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": index, "name": "NVIDIA A100-SXM4-80GB", "uuid": f"GPU-0000000{index}",
        "pci_bus_id": f"00000000:0{index}:00.0", "utilization_gpu_pct": 45.0,
        "memory_used_mib": 1200.0, "memory_total_mib": 81920.0, "temperature_c": 61.0,
        "power_draw_w": 250.5, "power_limit_w": 400.0, "ecc_volatile_uncorrected": 0,
        "retired_pages_pending": False, "remapped_rows_pending": False,
        "throttle_reasons": [],
        "processes": [{"pid": 4242, "user": "ann", "container": "jupyter",
                       "used_memory_mib": 1100.0}],
    }
    data.update(changes)
    return data


def host(name: str, gpus: int = 2, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "host": name, "reachable": True, "error": None, "round_trips": 1,
        "driver_version": "550.54.14", "cuda_version": "12.4",
        "gpus": [gpu(i) for i in range(gpus)], "gpu_reason": None,
        "host_health": {"reboot_pending": False, "uptime_s": 93784.0,
                        "load": [0.5, 0.25, 0.125], "memory_total_mib": 65536.0,
                        "memory_available_mib": 51200.0, "data_dir": "/data",
                        "data_dir_free_mib": 204800.0},
        "services": {"sshd": "running", "docker": "running", "containerd": "running",
                     "jupyter": {"container": "running", "spec_matches": True, "port": 8888,
                                 "http_status": 403, "detail": None}},
        "last_apply": {"time": "2026-12-06T18:00:00+00:00", "version": "0.1.0",
                       "gpu_count": gpus},
        "last_pull": None,
        "notes": [],
    }
    data.update(copy.deepcopy(changes))
    return data


def unreachable(name: str) -> dict[str, Any]:
    return {"host": name, "reachable": False, "error": "timeout: no answer in 10s",
            "round_trips": 0, "driver_version": None, "cuda_version": None, "gpus": [],
            "gpu_reason": None, "host_health": None, "services": None, "last_apply": None,
            "last_pull": None, "notes": []}
