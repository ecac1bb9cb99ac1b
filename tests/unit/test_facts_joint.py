"""Joint facts (facts/base.py): facts of one kind answered by ONE command in the
facts script, each given its own part, and a failing probe beside them (or a
member the command cannot answer) spoiling nothing else."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from gpuprov.command import Command, Raw
from gpuprov.facts.base import Fact, FactError, Joint, JointProbe, gather_script, parse_batch


class Lines(Joint):
    """`printf` of every member's word, one line each; a word "missing" is answered on
    stderr (like docker's "no such object") and makes the command exit 1."""

    name: ClassVar[str] = "lines"

    def command(self, members: Sequence[Fact[Any]]) -> Command:
        words = [m.word for m in members]  # type: ignore[attr-defined]
        return Command(Raw("rc=0; for w in"), *words, Raw(
            '; do if [ "$w" = missing ]; then echo "no such: $w"; rc=1; '
            'else echo "line $w"; fi; done; exit $rc'))

    def split(self, members: Sequence[Fact[Any]], output: str,
              exit_code: int) -> list[tuple[str, int]]:
        return [(line, 1 if line.startswith("no such") else 0)
                for line in output.splitlines()]


LINES = Lines()


@dataclass(frozen=True)
class Word(Fact[tuple[str, int]]):
    word: str
    joint: ClassVar[Joint | None] = LINES

    def process(self, output: str, exit_code: int) -> tuple[str, int]:
        return output.strip(), exit_code


@dataclass(frozen=True)
class Shell(Fact[tuple[str, int]]):
    text: str

    def command(self) -> str:
        return self.text

    def process(self, output: str, exit_code: int) -> tuple[str, int]:
        return output.strip(), exit_code


def run(script: str) -> str:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_members_share_one_command_where_the_first_stood() -> None:
    facts = [Shell("echo before"), Word("a"), Shell("exit 3"), Word("missing"), Word("b")]
    script, marker = gather_script(facts)
    assert script.count("for w in") == 1
    assert script.index("echo before") < script.index("for w in a missing b ;") \
        < script.index("exit 3")
    got = parse_batch(facts, run(script), marker)
    assert got == {facts[0]: ("before", 0), facts[1]: ("line a", 0), facts[2]: ("", 3),
                   facts[3]: ("no such: missing", 1), facts[4]: ("line b", 0)}


def test_a_lone_member_runs_its_own_command() -> None:
    fact = Word("a")
    assert fact.command() == LINES.command([fact])
    script, marker = gather_script([Shell("true"), fact])
    assert "for w in a ;" in script
    assert parse_batch([Shell("true"), fact], run(script), marker)[fact] == ("line a", 0)


def test_a_split_that_cannot_attribute_names_every_member() -> None:
    facts = [Word("a"), Word("b")]
    script, marker = gather_script(facts)
    output = run(script).replace("line b\n", "")
    with pytest.raises(FactError, match=r"lines: Word\('a'\), Word\('b'\): 1 answers for 2"):
        parse_batch(facts, output, marker)


def test_a_split_bug_is_a_fact_error_naming_the_members() -> None:
    class Broken(Lines):
        def split(self, members: Sequence[Fact[Any]], output: str,
                  exit_code: int) -> list[tuple[str, int]]:
            raise KeyError("x")

    @dataclass(frozen=True)
    class Other(Word):
        joint: ClassVar[Joint | None] = Broken()

    facts = [Other("a"), Other("b")]
    script, marker = gather_script(facts)
    with pytest.raises(FactError, match=r"Other\('a'\), Other\('b'\): cannot split output"):
        parse_batch(facts, run(script), marker)


def test_timed_batch_names_the_joint_command_with_its_members() -> None:
    facts = [Word("a"), Shell("true"), Word("b")]
    script, marker = gather_script(facts, timed=True)
    timings: dict[Fact[Any], float] = {}
    got = parse_batch(facts, run(script), marker, timings)
    assert got[facts[2]] == ("line b", 0)
    assert set(timings) == {JointProbe((facts[0], facts[2])), facts[1]}
    assert JointProbe((facts[0], facts[2])).key == "lines: Word('a'), Word('b')"


def test_lenient_leaves_out_only_what_it_cannot_read() -> None:
    """A guessed batch (lenient): a joint command docker could not attribute leaves its
    members unknown, asked again later; the other probes' answers stay."""
    facts = [Word("a"), Shell("echo ok"), Word("b")]
    script, marker = gather_script(facts)
    output = run(script).replace("line b\n", "")
    got = parse_batch(facts, output, marker, lenient=True)
    assert got == {facts[1]: ("ok", 0)}
    with pytest.raises(FactError):
        parse_batch(facts, output, marker)
