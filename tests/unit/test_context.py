"""TaskContext.bad_var: names the variable and where it was set, and shows
its value unless the variable is a secret (errors reach logs and reports)."""

from __future__ import annotations

from pathlib import Path

from gpuprov.engine.context import TaskContext
from gpuprov.facts.base import FactView
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars
from tests.unit.role_harness import system_for


def context(**vars: object) -> TaskContext:
    host = Host("gpu-01", vars=dict(vars))
    return TaskContext(host, build_host_vars(host, role="r"), system_for("debian12"),
                       FactView({}), "r", Path("."))


def test_bad_var_shows_an_ordinary_value() -> None:
    error = context(gpu_devices="zero").bad_var("gpu_devices", "must be all or 0,1")
    assert error.message == "gpu-01: role r: gpu_devices='zero': must be all or 0,1"


def test_bad_var_never_shows_a_secret() -> None:
    error = context(registry_password="hunter2-secret").bad_var("registry_password",
                                                                "is too short")
    assert error.message == "gpu-01: role r: registry_password: is too short"
    assert "hunter2" not in str(error)
