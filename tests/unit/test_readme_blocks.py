"""README command 1 and the quick start stay where a new user (and the fleet
test tests/fleet/test_readme_quickstart.py, which runs them literally) finds
them: the first code block under the title and under the second heading."""

from __future__ import annotations

import pytest

from tests.readme_blocks import README, ReadmeStructureError, command_one, quick_start, sections


def test_the_readme_has_command_one_and_a_quick_start_that_uses_what_it_installs() -> None:
    text = README.read_text()
    first = command_one(text)
    # command 1 leaves `gpuprov` on PATH in the user's shell: the venv is activated
    assert ". .venv/bin/activate" in first and first.endswith("gpuprov drift-check"), first
    lines = quick_start(text)
    assert lines[0].startswith("cp inventory.example.yml inventory.yml")
    assert all(line.startswith("gpuprov ") for line in lines[1:]), lines
    # a new user can run every line as written: nothing writes outside the clone
    assert not [line for line in lines if " /var/" in line or " /etc/" in line], lines


def test_the_readme_sections_come_in_the_documented_order() -> None:
    headings = [s.heading for s in sections(README.read_text())]
    order = ["gpuprov", "Quick start", "CLI reference", "The GPU stack", "Hardened access",
             "Kubernetes cluster nodes", "Onboarding", "Security model", "Writing roles",
             "Performance", "Tests"]
    positions = [next(i for i, h in enumerate(headings) if h.startswith(want)) for want in order]
    assert positions == sorted(positions), headings


def test_a_comment_in_a_code_block_is_not_a_heading() -> None:
    text = "# t\n\n```sh\ncmd one\n# a comment\n```\n\n## Quick start\n\n```\nx\n```\n"
    assert [s.heading for s in sections(text)] == ["t", "Quick start"]
    assert command_one(text) == "cmd one" and quick_start(text) == ["x"]


@pytest.mark.parametrize("text", [
    "# t\n\nno block\n\n## Quick start\n\n```\nx\n```\n",        # no command 1
    "# t\n\n```\ncmd\n```\n\n## Install\n\n```\nx\n```\n",       # quick start moved
    "# t\n\n```\ncmd\n```\n\n## Quick start\n\nno block\n",      # quick start block gone
    "# t\n\n```\ncmd\n",                                          # a block never closed
])
def test_a_readme_whose_structure_changed_fails_loudly(text: str) -> None:
    with pytest.raises(ReadmeStructureError):
        command_one(text)
        quick_start(text)
