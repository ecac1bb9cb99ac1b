"""containerd_cri: a containerd config a kubelet can use with NVIDIA GPUs.

Whether anything is to do is decided on the EFFECTIVE config (`containerd
config dump`, see facts/containerd.py), so a config.toml that differs only in
formatting or comments is no drift, and one whose imports undo a setting is.
When something is missing, config.toml is read on the controller, the CRI
keys set in it (every other setting kept), written back through the atomic
write validated by `containerd config dump`, and the nvidia runtime is then
registered by NVIDIA's own `nvidia-ctk runtime configure`.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import KW_ONLY, field, replace
from typing import Any

import tomli_w

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.containerd import (
    CRI_PLUGIN_NAMES,
    ContainerdDump,
    CriConfig,
    TOMLDecodeError,
    config_version,
    cri_path,
    parse_toml,
    read_cri,
)
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.system import InitSystem
from gpuprov.ops.base import Change, Op, Step, operation
from gpuprov.ops.file_plan import FileOpError, check_path, plan_write, state_fact

RUNC_TYPE = "io.containerd.runc.v2"


def _table(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        node = doc.get(key)
        if not isinstance(node, dict):
            node = doc[key] = {}
        doc = node
    return doc


def patched(current: dict[str, Any], version: int, fix: Collection[str]) -> dict[str, Any]:
    """current with what `fix` names set (cri: the CRI plugin enabled, systemd:
    runc's SystemdCgroup, cdi: enable_cdi); every other key as it was."""
    doc = copy.deepcopy(current)
    doc.setdefault("version", version)
    disabled = doc.get("disabled_plugins")
    if "cri" in fix and isinstance(disabled, list):
        doc["disabled_plugins"] = [p for p in disabled if p not in CRI_PLUGIN_NAMES]
    path = cri_path(config_version(doc, version))
    if "cdi" in fix:
        _table(doc, *path)["enable_cdi"] = True
    if "systemd" in fix:
        runc = _table(doc, *path, "containerd", "runtimes", "runc")
        # A runtimes entry replaces the built-in one whole: without its type
        # containerd would not know how to start runc.
        runc.setdefault("runtime_type", RUNC_TYPE)
        _table(runc, "options")["SystemdCgroup"] = True
    return doc


@operation
class ContainerdCri(Op):
    """The containerd config at `path` has the CRI plugin enabled, runc's
    SystemdCgroup where the host runs systemd, CDI enabled and the nvidia
    runtime (the default one when nvidia_default), judged on the effective
    config. validate: run on the new file before it replaces config.toml."""

    path: str = "/etc/containerd/config.toml"
    _: KW_ONLY
    nvidia_default: bool = False
    validate: str = "containerd --config {} config dump >/dev/null"
    fact: FileState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = check_path(self.path)
        self.label = f"containerd CRI config {self.path}"
        self.fact = state_fact(self.path, read_as_root=True)

    def facts(self) -> Sequence[Fact[Any]]:
        return [self.fact, ContainerdDump(), InitSystem()]

    def configure(self) -> Command:
        where = [] if self.path == "/etc/containerd/config.toml" else [f"--config={self.path}"]
        return Command("nvidia-ctk", "runtime", "configure", "--runtime=containerd", *where,
                       *(["--set-as-default"] if self.nvidia_default else []))

    def plan(self, facts: FactView) -> list[Change]:
        systemd = facts[InitSystem()] == "systemd"
        cur: FileInfo | None = facts[self.fact]
        current = self.read(cur)
        dump = facts[ContainerdDump()]
        if dump is not None and dump.config is not None:
            effective: CriConfig = dump.config
            if effective.cri_hidden:
                # CRI disabled: containerd dumps none of its settings, so the file says
                # (one apply fixes them all), with the dump's disabled list (imports too)
                effective = replace(read_cri(current, effective.version),
                                    disabled=effective.disabled)
        else:  # containerd not installed yet (check mode) or its dump failed: the file says
            effective = read_cri(current)
        want = {"systemd": systemd, "nvidia_default": self.nvidia_default}
        issues = effective.issues(**want)
        if not issues and (dump is None or dump.error is None):
            return []
        # only what the effective config misses: what containerd already gets right
        # (from its defaults or an imported file) is not written into config.toml
        doc = patched(current, effective.version, issues)
        in_file = read_cri(doc, effective.version).issues(**want)
        changes: list[Change] = []
        if doc != current:
            changes += plan_write(self.path, cur, tomli_w.dumps(doc).encode("utf-8"),
                                  owner="root", group="root", mode="0644",
                                  validate=self.validate, notify=self.notify)
        runtime = [k for k in ("nvidia", "default") if k in issues and k in in_file]
        if runtime:
            # the one thing the file edit does not do: the runtime, registered NVIDIA's way
            changes.append(Change(
                "containerd runtime nvidia", "update", self.configure().display(),
                steps=[Step(self.configure())], notify=self.notify,
                invalidates=(FileState.at(self.path),)))
        why = "; ".join(issues.values()) or (dump.error if dump is not None else None) or "?"
        # config.toml already says it, yet containerd sees otherwise (an imported
        # file, a broken config): writing it again would change nothing
        stuck = [text for k, text in issues.items()
                 if k not in in_file and (k in ("nvidia", "default") or doc == current)]
        if not changes or stuck:
            reason = "; ".join(stuck) or why
            return [Change(f"file {self.path}", "update", f"effective config: {reason}",
                           blocked=f"containerd's effective config differs from {self.path} "
                                   f"({reason}); see `containerd config dump`")]
        for change in changes:
            change.invalidates = (*(change.invalidates or ()), ContainerdDump)
        changes[0].summary += f" ({why})"
        return changes

    def report(self, facts: FactView) -> dict[str, Any] | None:
        dump = facts[ContainerdDump()]
        if dump is None or dump.config is None or dump.config.cdi_supported:
            return None
        # not a failure: GPUs still reach containers through the nvidia runtime
        return {"note": "this containerd has no CDI support (enable_cdi came with "
                        "containerd 1.7; Debian 12 ships 1.6): containers get GPUs through "
                        "the nvidia runtime, not containerd's CDI"}

    def read(self, cur: FileInfo | None) -> dict[str, Any]:
        """config.toml parsed; {} when absent or empty."""
        if cur is None:
            return {}
        if cur.type != "file":
            raise FileOpError(f"{self.path} is a {cur.type}, not containerd's config file")
        if cur.content is None:
            raise FileOpError(f"{self.path} is too large ({cur.size} bytes) to read")
        try:
            doc = parse_toml(cur.content.decode("utf-8"))
        except (UnicodeDecodeError, TOMLDecodeError) as exc:
            raise FileOpError(f"{self.path} on the host is not valid TOML ({exc}); "
                              "not overwriting it",
                              hint="fix or remove the file by hand, then re-run") from exc
        if config_version(doc, 1) == 1 and isinstance(_plugins(doc).get("cri"), dict):
            raise FileOpError(f"{self.path} is a version 1 config (plugins.cri); "
                              "gpuprov writes versions 2 and 3 only",
                              hint="migrate it: containerd config migrate, or remove it")
        return doc


def _plugins(doc: dict[str, Any]) -> dict[str, Any]:
    plugins = doc.get("plugins")
    return plugins if isinstance(plugins, dict) else {}


#: containerd_cri(path, nvidia_default=...): see ContainerdCri
containerd_cri = ContainerdCri
