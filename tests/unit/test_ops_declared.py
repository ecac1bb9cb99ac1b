"""Every op is declared once: an @operation dataclass whose fields are its
parameters, and the lowercase names roles call are the classes themselves
(or a factory that adds something, passing the options through)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from gpuprov.ops.base import Op

# ops/sshd, ops/tokens and ops/verify are converted separately
MODULES = ["apt", "apt_packages", "apt_repos", "base", "command", "dnf", "docker", "files",
           "jsonfile", "kernel", "packages", "repositories", "services", "users"]


def _ops() -> list[type[Op]]:
    found: dict[str, type[Op]] = {}
    for name in MODULES:
        module = importlib.import_module(f"gpuprov.ops.{name}")
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, Op) and cls is not Op \
                    and cls.__module__ == module.__name__:
                found[cls.__qualname__] = cls
    return list(found.values())


@pytest.mark.parametrize("cls", _ops(), ids=lambda c: c.__name__)
def test_every_op_is_an_operation_dataclass(cls: type[Op]) -> None:
    # its own fields, not only Op's: a hand-written __init__ would restate them
    assert "__dataclass_fields__" in vars(cls), f"{cls.__name__} is not declared with @operation"
    params = set(inspect.signature(cls).parameters)
    assert params == {f.name for f in dataclasses.fields(cls) if f.init}
    assert "notify" in params


@pytest.mark.parametrize("name, cls", [
    ("absent", "Absent"), ("directory", "Directory"), ("line", "Line"),
    ("json_merge", "JsonMerge"), ("command", "RunCommand"), ("group_members", "GroupMembership"),
    ("container", "ContainerRunning"), ("container_absent", "ContainerAbsent"),
    ("packages", "AptPackages"), ("apt_update", "AptUpdate"),
    ("apt_repository", "AptRepository"), ("apt_pin", "AptPin"),
    ("signed_repository", "SignedRepository"),
])
def test_lowercase_names_are_the_classes(name: str, cls: str) -> None:
    module = next(m for m in (importlib.import_module(f"gpuprov.ops.{n}") for n in MODULES)
                  if name in vars(m) and cls in vars(m))
    assert getattr(module, name) is getattr(module, cls)


def test_dnf_names_are_the_classes() -> None:
    from gpuprov.ops import dnf
    assert (dnf.packages, dnf.versionlock, dnf.module_enable, dnf.repository) == (
        dnf.DnfPackages, dnf.DnfVersionlockOp, dnf.DnfModuleEnable, dnf.DnfRepository)


def test_notify_takes_a_name_or_several_everywhere() -> None:
    from gpuprov.ops.command import command
    from gpuprov.ops.files import directory, file
    assert command("true", notify="restart x").notify == ("restart x",)
    assert file("/etc/x", "x", notify=["a", "b"]).notify == ("a", "b")
    assert directory("/etc/x", notify="a").notify == ("a",)
    with pytest.raises(TypeError, match="notify takes handler names"):
        command("true", notify=("",))
