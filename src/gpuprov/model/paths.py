"""Where the bundled roles and playbooks are: in the installed package, or
(editable install, running from a checkout) at the repository's top level."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent   # the gpuprov package


def bundled_dir(kind: str) -> Path | None:
    """gpuprov's own `roles` or `playbooks` directory, None if not shipped."""
    for candidate in (_PACKAGE / "bundled" / kind, _PACKAGE.parent.parent / kind):
        if candidate.is_dir():
            return candidate
    return None


def default_playbook(cwd: Path | None = None) -> Path | None:
    """./playbooks/site.yml if there is one, else the bundled site.yml."""
    return playbook_named("site.yml", cwd)


def playbook_named(name: str, cwd: Path | None = None) -> Path | None:
    """./playbooks/<name> if there is one (a fork wins), else the bundled one."""
    local = (cwd or Path.cwd()) / "playbooks" / name
    if local.is_file():
        return local
    bundled = bundled_dir("playbooks")
    return bundled / name if bundled and (bundled / name).is_file() else None
