"""containerd's effective configuration, read the way the daemon reads it:
`containerd config dump` (the file merged over the built-in defaults and any
imports), parsed as TOML on the controller, reduced to the keys a kubelet
and the NVIDIA runtime depend on.

Two layouts: config version 2 (containerd 1.6/1.7) keeps the CRI settings
under plugins."io.containerd.grpc.v1.cri"; version 3 (containerd 2.x) under
plugins."io.containerd.cri.v1.runtime".
"""

from __future__ import annotations

import posixpath
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from gpuprov.command import Command
from gpuprov.facts.base import Fact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 has no tomllib; pyproject pulls tomli there
    import tomli as tomllib

CRI_V2 = "io.containerd.grpc.v1.cri"
CRI_V3 = "io.containerd.cri.v1.runtime"
#: names under which disabled_plugins turns the CRI off (short name, v2 and v3 ids)
CRI_PLUGIN_NAMES = ("cri", CRI_V2, CRI_V3, "io.containerd.cri.v1.images")
NVIDIA_BINARY = "nvidia-container-runtime"
TOMLDecodeError = tomllib.TOMLDecodeError


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a dict; TOMLDecodeError when it is not TOML."""
    return tomllib.loads(text)


def cri_path(version: int) -> tuple[str, str]:
    """Where the CRI runtime settings live for a config version."""
    return ("plugins", CRI_V3 if version >= 3 else CRI_V2)


def _get(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


@dataclass(frozen=True)
class CriConfig:
    """The keys of a containerd config that matter for Kubernetes with GPUs."""

    version: int
    disabled: tuple[str, ...]           # CRI plugin names in disabled_plugins
    systemd_cgroup: bool                # runc's SystemdCgroup
    nvidia_binary: str | None           # runtimes.nvidia's BinaryName
    default_runtime: str | None         # default_runtime_name
    enable_cdi: bool
    # False: this containerd does not know enable_cdi at all (1.6, Debian 12's: its
    # dump has no such key; CDI came with 1.7), so no config can turn it on
    cdi_supported: bool = True
    # True: a dump with the CRI plugin disabled and no CRI section at all (real
    # containerd prints no settings of a plugin it does not load): they are unknown
    cri_hidden: bool = False

    def issues(self, *, systemd: bool, nvidia_default: bool) -> dict[str, str]:
        """What a kubelet with GPUs would miss: {cri|systemd|nvidia|default|cdi: in words}."""
        out = {}
        if self.disabled:
            names = ", ".join(self.disabled)
            out["cri"] = f"the CRI plugin is disabled (disabled_plugins: {names})"
        if systemd and not self.systemd_cgroup:
            out["systemd"] = "runc's SystemdCgroup is not true"
        if self.nvidia_binary is None or posixpath.basename(self.nvidia_binary) != NVIDIA_BINARY:
            out["nvidia"] = f"no nvidia runtime with BinaryName {NVIDIA_BINARY}"
        if nvidia_default and self.default_runtime != "nvidia":
            name = self.default_runtime or "unset"
            out["default"] = f"default_runtime_name is {name}, not nvidia"
        if self.cdi_supported and not self.enable_cdi:
            out["cdi"] = "enable_cdi is not true"
        return out


def config_version(doc: dict[str, Any], default: int = 2) -> int:
    version = doc.get("version")
    return version if isinstance(version, int) and not isinstance(version, bool) else default


def read_cri(doc: dict[str, Any], default_version: int = 2, *, dump: bool = False) -> CriConfig:
    """The CriConfig of a parsed config (a dump or the file itself). dump: a
    `containerd config dump`, which prints every key this containerd knows."""
    version = config_version(doc, default_version)
    section = _get(doc, *cri_path(version)) or {}
    runtimes = _get(section, "containerd", "runtimes") or {}
    binary = _get(runtimes, "nvidia", "options", "BinaryName")
    disabled = tuple(str(p) for p in doc.get("disabled_plugins") or []
                     if p in CRI_PLUGIN_NAMES)
    return CriConfig(
        version=version,
        disabled=disabled,
        systemd_cgroup=_get(runtimes, "runc", "options", "SystemdCgroup") is True,
        nvidia_binary=str(binary) if binary else None,
        default_runtime=str(_get(section, "containerd", "default_runtime_name") or "") or None,
        enable_cdi=_get(section, "enable_cdi") is True,
        cdi_supported=not (dump and bool(section) and "enable_cdi" not in section),
        cri_hidden=dump and bool(disabled) and not section)


@dataclass(frozen=True)
class EffectiveCri:
    """`containerd config dump`'s answer: the config, or why there is none."""

    config: CriConfig | None
    error: str | None = None


@dataclass(frozen=True)
class ContainerdDump(Fact["EffectiveCri | None"]):
    """The effective CRI settings; None when containerd is not installed.
    sudo: config.toml and its imports may be root-only."""

    sudo: ClassVar[bool] = True

    def command(self) -> Command:
        return Command.script(
            "command -v containerd >/dev/null 2>&1 || exit 0; containerd config dump 2>&1")

    def process(self, output: str, exit_code: int) -> EffectiveCri | None:
        if exit_code == 0 and not output.strip():
            return None
        if exit_code != 0:
            lines = output.strip().splitlines()
            return EffectiveCri(None, lines[-1] if lines else f"exit {exit_code}")
        try:
            return EffectiveCri(read_cri(parse_toml(output), dump=True))
        except TOMLDecodeError as exc:
            return EffectiveCri(None, f"containerd config dump is not TOML: {exc}")
