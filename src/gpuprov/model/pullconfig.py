"""/etc/gpuprov/pull.yml: what `gpuprov pull` fetches and runs on this host.

Written by `gpuprov pull-setup`, read on every timer tick; every error names
the file, the line and the key, since the person fixing it reads a journal
line, not a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuprov.errors import InventoryError
from gpuprov.model.yamlfile import YamlMap, did_you_mean, kind_of, load_yaml, location

DEFAULT_CONFIG = "/etc/gpuprov/pull.yml"
APPLY, CHECK = "apply", "check"
VERIFY_NONE, VERIFY_SIGNED = "none", "signed"
#: beside pull.yml: the git server's host key for an ssh:// repo (see engine/pullgit.py)
KNOWN_HOSTS_NAME = "pull_known_hosts"

#: a URL, or ssh's scp-like user@host:path (what git hosting sites show)
REPO_URL = re.compile(r"(https?|git|ssh|file)://\S+|[\w.-]+@[\w.-]+:[^/\s]\S*")


class PullConfigError(InventoryError):
    """pull.yml is missing, unreadable or wrong: names the file, line and key."""


@dataclass(frozen=True)
class PullConfig:
    repo: str
    host: str
    ref: str = "main"
    inventory: str = "inventory.yml"
    playbook: str = "playbooks/site.yml"
    mode: str = APPLY
    interval: int = 900
    splay: int = 300
    verify: str = VERIFY_NONE
    allowed_signers: str = "/etc/gpuprov/pull-allowed-signers"
    deploy_key: str | None = None
    keep_reports: int = 20
    textfile_dir: str = "/var/lib/node_exporter/textfile_collector"
    state_dir: str = "/var/lib/gpuprov"
    #: the file this was read from (its directory holds pull_known_hosts)
    path: str = DEFAULT_CONFIG

    @property
    def known_hosts(self) -> Path:
        return Path(self.path).parent / KNOWN_HOSTS_NAME


#: key -> (type, choices); `str | None` keys may be null
_KEYS: dict[str, tuple[type, tuple[str, ...]]] = {
    "repo": (str, ()), "host": (str, ()), "ref": (str, ()), "inventory": (str, ()),
    "playbook": (str, ()), "mode": (str, (APPLY, CHECK)), "interval": (int, ()),
    "splay": (int, ()), "verify": (str, (VERIFY_NONE, VERIFY_SIGNED)),
    "allowed_signers": (str, ()), "deploy_key": (str, ()), "keep_reports": (int, ()),
    "textfile_dir": (str, ()), "state_dir": (str, ()),
}
_REQUIRED = ("repo", "host")
_REQUIRED_HINTS = {"repo": "add `repo: URL` (the git repository with inventory and playbooks)",
                   "host": "add `host: NAME`, this host's name in the repo's inventory"}
_NULLABLE = ("deploy_key",)
_MINIMUM = {"interval": 1, "splay": 0, "keep_reports": 1}
_IN_REPO = ("inventory", "playbook")
_ABSOLUTE = ("allowed_signers", "deploy_key", "textfile_dir", "state_dir")


def load_pull_config(path: str | Path = DEFAULT_CONFIG) -> PullConfig:
    """pull.yml, checked key by key; PullConfigError at the first problem."""
    name = str(path)
    data = load_yaml(path, PullConfigError)
    if not isinstance(data, YamlMap):
        raise PullConfigError(f"expected a mapping of settings, got {kind_of(data)}", name,
                              location(data).line, hint="see `gpuprov pull --help` for the keys")
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = location(data, key)
        if key not in _KEYS:
            raise PullConfigError(f"unknown key {key!r}", name, where.line,
                                  hint=did_you_mean(str(key), _KEYS) or
                                  "known keys: " + ", ".join(_KEYS))
        values[key] = _checked(key, value, name, where.line)
    for key in _REQUIRED:
        if key not in values:
            raise PullConfigError(f"{key!r} is required", name, data.line,
                                  hint=_REQUIRED_HINTS[key])
    if not REPO_URL.fullmatch(values["repo"]):
        raise PullConfigError(f"repo {values['repo']!r} is not a git URL", name,
                              location(data, "repo").line,
                              hint="use https://, ssh://, git://, file:// or user@host:path")
    if values.get("verify") == VERIFY_SIGNED and "allowed_signers" not in values \
            and not Path(PullConfig.allowed_signers).is_file():
        raise PullConfigError("verify: signed needs allowed_signers", name,
                              location(data, "verify").line,
                              hint=f"set allowed_signers: PATH (default "
                                   f"{PullConfig.allowed_signers} does not exist)")
    return PullConfig(**values, path=name)


def _checked(key: str, value: Any, name: str, line: int | None) -> Any:
    kind: Any = _KEYS[key][0]   # Any: isinstance() must not narrow value to object
    choices = _KEYS[key][1]
    if value is None and key in _NULLABLE:
        return None
    # bool is an int to Python; a YAML true is never a count of seconds
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PullConfigError(f"{key}: expected {'an integer' if kind is int else 'a string'}, "
                              f"got {kind_of(value)}", name, line)
    if choices and value not in choices:
        raise PullConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}", name,
                              line)
    if key in _MINIMUM and value < _MINIMUM[key]:
        raise PullConfigError(f"{key}: {value} is below {_MINIMUM[key]}", name, line)
    if kind is str and not value.strip():
        raise PullConfigError(f"{key}: empty", name, line)
    if key in _IN_REPO and (Path(value).is_absolute() or ".." in Path(value).parts):
        raise PullConfigError(f"{key}: {value!r} must be a path inside the repository", name,
                              line, hint=f"e.g. {getattr(PullConfig, key)}")
    if key in _ABSOLUTE and not Path(value).is_absolute():
        raise PullConfigError(f"{key}: {value!r} must be an absolute path", name, line)
    if key == "ref" and (value.startswith("-") or ".." in value or " " in value):
        raise PullConfigError(f"ref: {value!r} is not a branch or tag name", name, line)
    return value
