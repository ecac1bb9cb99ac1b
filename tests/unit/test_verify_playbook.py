"""`gpuprov verify` (and onboarding) run a playbook: ./playbooks/verify.yml, else the bundled
one, where the verify role runs (gpu_image is listed for its defaults only)
and a pending reboot fails the check; the engine knows only the name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuprov.engine import verify
from gpuprov.engine.executor import role_selected
from gpuprov.engine.onboard import ACCESS_PLAYBOOK
from gpuprov.errors import GpuprovError
from gpuprov.model import playbook
from gpuprov.model.paths import bundled_dir, playbook_named
from gpuprov.model.playbook import load_named_plays

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_verify_playbook_runs_verify_with_gpu_images_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)           # no ./playbooks, no ./roles here
    assert playbook_named("verify.yml") == bundled_dir("playbooks") / "verify.yml"
    [play] = verify.verify_plays()
    assert play.hosts == "all"
    assert [(r.name, r.path) for r in play.roles] == [
        ("gpu_image", ROOT / "roles" / "gpu_image"), ("verify", ROOT / "roles" / "verify")]
    assert play.vars == {"verify_fail_if_reboot_pending": True}
    # run with no tags (run_verify clears them): only verify runs
    assert [r.name for r in play.roles if role_selected(play, r, (), ())] == ["verify"]


def test_a_verify_playbook_in_the_current_directory_wins(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "playbooks" / "verify.yml"
    own.parent.mkdir()
    own.write_text("- hosts: lab\n  roles: [verify]\n")
    monkeypatch.chdir(tmp_path)
    assert playbook_named("verify.yml") == own
    [play] = verify.verify_plays()
    assert play.hosts == "lab" and [r.name for r in play.roles] == ["verify"]


def test_no_verify_playbook_anywhere_is_one_clear_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(playbook, "playbook_named", lambda name: None)
    with pytest.raises(GpuprovError, match="no playbooks/verify.yml found"):
        verify.verify_plays()


def test_onboarding_runs_the_onboard_playbook_and_its_access_role() -> None:
    plays = load_named_plays(ACCESS_PLAYBOOK)
    assert [(p.hosts, [r.name for r in p.roles]) for p in plays] == [("all", ["onboard_access"])]
    assert plays[0].roles[0].path == ROOT / "roles" / "onboard_access"
