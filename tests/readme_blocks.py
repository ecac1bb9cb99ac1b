"""The README's first two commands as a new user copies them: command 1 (the
first line of the first code block, under the title) and the quick start (the
first code block under the second heading). Used by the fleet test that
follows them literally and by a unit test that fails as soon as the README's
structure no longer lets them be found."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*$")


class ReadmeStructureError(AssertionError):
    """The README no longer has the blocks where a new user (and the test) finds them."""


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: list[list[str]]   # its fenced code blocks, each as its lines


def sections(text: str) -> list[Section]:
    """Headings in order with the code blocks under each; a `#` line inside a
    code block (a shell or Python comment) is not a heading."""
    found: list[Section] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if block is not None:
            if FENCE.match(line):
                if found:
                    found[-1].blocks.append(block)
                block = None
            else:
                block.append(line)
        elif FENCE.match(line):
            block = []
        elif (match := HEADING.match(line)) is not None:
            found.append(Section(match.group(2), []))
    if block is not None:
        raise ReadmeStructureError("README.md: a code block is never closed")
    return found


def _first_block(section: Section) -> list[str]:
    lines = [line for line in (section.blocks[0] if section.blocks else []) if line.strip()]
    if not lines:
        raise ReadmeStructureError(
            f"README.md: no code block under the heading {section.heading!r}")
    return lines


def command_one(text: str) -> str:
    """README command 1: the first line of the first block under the title."""
    found = sections(text)
    if not found:
        raise ReadmeStructureError("README.md has no heading")
    return _first_block(found[0])[0]


def quick_start(text: str) -> list[str]:
    """Every line of the quick start block (the second heading), comments kept."""
    found = sections(text)
    if len(found) < 2 or "quick start" not in found[1].heading.lower():
        headings = [s.heading for s in found[:3]]
        raise ReadmeStructureError(
            f"README.md: the second heading must be the quick start, found {headings}")
    return _first_block(found[1])
