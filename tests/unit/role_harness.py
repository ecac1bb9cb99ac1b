"""Plan a bundled role against canned facts, with no host: which ops, which
Changes, which commands. The same code paths as the engine (role tasks(),
op.facts(), op.plan(), the engine's settle_blocked()), so what these tests
pin is what apply would run."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gpuprov.connectors.base import Session
from gpuprov.engine.context import NeedFacts, RoleSkipped, TaskContext
from gpuprov.engine.roleops import settle_blocked
from gpuprov.engine.roles import load_role, load_role_module
from gpuprov.facts.apt import AptCandidates, AptPolicy, DebPackage, DebPackages
from gpuprov.facts.base import Fact, FactView
from gpuprov.facts.system import ArchInfo, OsInfo, SystemFacts
from gpuprov.model.inventory import Host
from gpuprov.model.vars import build_host_vars
from gpuprov.ops.base import Change, Op

ROLES = Path(__file__).resolve().parents[2] / "roles"

UBUNTU_2204 = OsInfo("ubuntu", "22.04", ("debian",), "jammy", "Ubuntu 22.04.5 LTS")
UBUNTU_2404 = OsInfo("ubuntu", "24.04", ("debian",), "noble", "Ubuntu 24.04.1 LTS")
DEBIAN_12 = OsInfo("debian", "12", (), "bookworm", "Debian GNU/Linux 12 (bookworm)")
RHEL_9 = OsInfo("rhel", "9.4", ("fedora",), "", "Red Hat Enterprise Linux 9.4 (Plow)")
DISTROS = {"ubuntu2204": UBUNTU_2204, "ubuntu2404": UBUNTU_2404, "debian12": DEBIAN_12,
           "rhel9": RHEL_9}
KERNELS = {"ubuntu2204": "5.15.0-125-generic", "ubuntu2404": "6.8.0-48-generic",
           "debian12": "6.1.0-26-amd64", "rhel9": "5.14.0-427.13.1.el9_4.x86_64"}


def role_module(role: str, module: str) -> ModuleType:
    """roles/<role>/<module>.py through the engine's role loader: the very
    module object the role's tasks.py imports (patch it, and the role sees it)."""
    return load_role_module(role, ROLES / role, module)


class MissingFacts(AssertionError):
    """The test did not provide a fact the role or an op asked for."""


@dataclass
class Planned:
    op: Op
    changes: list[Change]
    #: why the engine fails this task before running it (a blocked change, in apply)
    error: str | None = None


@dataclass
class RolePlan:
    ops: list[Planned] = field(default_factory=list)
    #: why the role left the host alone (`raise ctx.skip(why)`), None if it did not
    skipped: str | None = None

    @property
    def changes(self) -> list[Change]:
        return [c for p in self.ops for c in p.changes]

    @property
    def commands(self) -> list[str]:
        """Every step's command line, as displayed (secrets masked), in order."""
        return [s.command.display() for c in self.changes for s in c.steps]

    @property
    def labels(self) -> list[str]:
        return [p.op.label for p in self.ops]

    @property
    def failed(self) -> list[tuple[str, str]]:
        """(label, reason) of the task the engine would fail (the last one planned)."""
        return [(p.op.label, p.error) for p in self.ops if p.error is not None]

    def changed(self) -> list[str]:
        """Labels of the ops that would change something."""
        return [p.op.label for p in self.ops if p.changes]


#: uname -m -> dpkg's name for it
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def system_for(distro: str, *, secure_boot: str = "disabled", kernel: str | None = None,
               init: str = "systemd", arch: str = "x86_64", tegra: str | None = None
               ) -> SystemFacts:
    """`arch`: uname -m (x86_64, aarch64: a Grace/sbsa server); `tegra`: the
    Arch fact's Jetson evidence."""
    deb = None if distro == "rhel9" else DEB_ARCH[arch]
    kernel = kernel or KERNELS[distro].replace(".x86_64", f".{arch}")
    return SystemFacts(DISTROS[distro], kernel, ArchInfo(arch, deb, tegra), init, secure_boot)


def candidates_answer(fact: AptCandidates, dpkg: Mapping[str, DebPackage],
                      policy: Mapping[str, AptPolicy]) -> dict[str, AptPolicy]:
    """What a conditional AptCandidates probe answers on a host whose dpkg
    has `dpkg` and whose `apt-cache policy` says `policy`: {} when every package
    is installed (native or all) at a version its pattern matches, as the
    probe's shell decides (facts/apt.py), else the policy of its names."""
    def settled(name: str, pattern: str) -> bool:
        cur = dpkg.get(name)
        return cur is not None and cur.installed and fnmatch.fnmatchcase(cur.version, pattern)

    if fact.unless_installed and all(settled(n, p) for n, p in fact.unless_installed):
        return {}
    return {n: p for n, p in policy.items() if n in fact.names}


def with_candidate_probes(ops: Iterable[Op], facts: Mapping[Fact[Any], Any]
                          ) -> dict[Fact[Any], Any]:
    """`facts`, plus the answer of each conditional AptCandidates probe an op
    asks, derived from the test's canned `apt-cache policy` of the same names
    (AptCandidates(names)) and its canned DebPackages, as the host would give it."""
    out = dict(facts)
    for op in ops:
        for fact in op.facts():
            plain = AptCandidates(fact.names) if isinstance(fact, AptCandidates) else None
            if plain is not None and fact not in out and plain in out:
                out[fact] = candidates_answer(fact, out.get(DebPackages(), {}), out[plain])
    return out


def plan_role(role: str, system: SystemFacts, facts: Mapping[Fact[Any], Any], *,
              vars: Mapping[str, Any] | None = None, check: bool = False,
              host: str = "gpu-01", handler: str | None = None,
              session: Session | None = None, play_roles: tuple[str, ...] = ()) -> RolePlan:
    """tasks() (or the named handler) of roles/<role> planned against `facts`.

    Raises MissingFacts naming every fact asked for but not given, and lets a
    role's own refusal (RoleFailed) or an op's error propagate to the test.
    A blocked change is unknown in check mode; in apply its task fails (see
    RolePlan.failed) and, as in the engine, nothing after it is planned.
    `session`: how the operator is logged in (ctx.session; default: the
    engine's own default, root with no SSH login). `play_roles`: the play's
    other roles, whose defaults the role sees below its own (as the executor
    gives them).
    """
    loaded = load_role(role, ROLES / role)
    the_host = Host(host, vars=dict(vars or {}))
    play_defaults = [load_role(name, ROLES / name).defaults for name in play_roles]
    host_vars = build_host_vars(the_host, role_defaults=loaded.defaults, role=role,
                                play_defaults=play_defaults)
    ctx = TaskContext(the_host, host_vars, system, FactView(dict(facts)), role, loaded.path,
                      session=session)
    produce = loaded.handlers[handler] if handler else loaded.tasks
    try:
        ops = list(produce(ctx))
    except NeedFacts as need:
        raise MissingFacts(f"role {role} asked for: {', '.join(f.key for f in need.facts)}"
                           ) from None
    except RoleSkipped as skip:
        return RolePlan(skipped=skip.reason)
    facts = with_candidate_probes(ops, facts)
    plan = RolePlan()
    view = FactView(dict(facts))
    for op in ops:
        missing = [f.key for f in op.facts() if f not in facts]
        if missing:
            raise MissingFacts(f"{op.label} needs: {', '.join(missing)}")
        changes = op.plan(view)
        plan.ops.append(Planned(op, changes, settle_blocked(changes, check)))
        if plan.ops[-1].error is not None:
            break
    return plan
