"""`gpuprov verify`: the verify playbook (./playbooks/verify.yml, else the
bundled one), run for real on the selected hosts. The playbook says what is
verified and how (its roles and their variables); the engine only knows its
name."""

from __future__ import annotations

from dataclasses import replace

from gpuprov.engine.executor import Executor, ProgressSink, RunOptions
from gpuprov.engine.results import RunResult
from gpuprov.model.inventory import Host, Inventory
from gpuprov.model.playbook import Play, load_named_plays

VERIFY_PLAYBOOK = "verify.yml"


def verify_plays() -> list[Play]:
    return load_named_plays(VERIFY_PLAYBOOK)


def run_verify(inventory: Inventory, hosts: list[Host], options: RunOptions,
               progress: ProgressSink | None = None) -> RunResult:
    # Never check mode: verifying means starting a container. Every role the
    # playbook selects runs: tags are the playbook's business here.
    options = replace(options, tags=frozenset(), skip_tags=frozenset(), check=False)
    return Executor(inventory, verify_plays(), hosts, options, progress).run("verify")
