"""Services: running state and start-at-boot, for systemd and sysvinit.

The init comes from ServiceState itself (its probe tests /run/systemd/system
like InitSystem does). restarted / reloaded are handler actions: asked for,
they are always a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, replace
from typing import Any

from gpuprov.command import Command
from gpuprov.facts.base import Fact, FactView, Selector
from gpuprov.facts.docker import ContainerState, ContainerStatus
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.ops.base import Change, Diff, Op, Step, operation
from gpuprov.ops.command import command

_STATES = ("started", "stopped", "restarted", "reloaded")


def _run_cmd(info: ServiceInfo, verb: str) -> Command:
    if info.init == "systemd":
        return Command("systemctl", verb, info.name)
    # `service` gives the init script a clean environment, unlike calling it directly.
    return Command("service", info.name, verb)


def _boot_cmd(info: ServiceInfo, enable: bool) -> Command:
    if info.init == "systemd":
        return Command("systemctl", "enable" if enable else "disable", info.name)
    if enable and not info.links:
        # update-rc.d enable only edits existing links; a script never
        # registered needs its default links created.
        return Command("update-rc.d", info.name, "defaults")
    return Command("update-rc.d", info.name, "enable" if enable else "disable")


@operation
class Service(Op):
    """A service's state (started | stopped | restarted | reloaded | None = leave)
    and start at boot (True | False | None = leave), under systemd or sysvinit.

    also_invalidates: Fact classes or selectors of facts that starting or
    stopping it changes besides ServiceState (e.g. ContainerState for a
    service that runs a container).

    container: the docker container the service keeps running. Under
    sysvinit the service runs when the container does, read from
    ContainerState (which the container's own op reads too) rather than from
    the init script's `status`, which would start docker once more per run;
    ContainerState is invalidated with ServiceState.
    """

    name: str
    state: str | None = "started"
    enabled: bool | None = None
    _: KW_ONLY
    also_invalidates: tuple[Selector, ...] = ()
    container: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state is not None and self.state not in _STATES:
            raise ValueError(f"service {self.name}: state must be one of {', '.join(_STATES)}")
        extra = (ContainerState,) if self.container and ContainerState not in \
            self.also_invalidates else ()
        self.invalidates = (ServiceState, *self.also_invalidates, *extra)
        self.label = f"service {self.name}"

    def facts(self) -> Sequence[Fact[Any]]:
        if self.container:
            return [ServiceState(self.name, sysv_status=False), ContainerState(self.container)]
        return [ServiceState(self.name)]

    def _info(self, facts: FactView) -> ServiceInfo:
        if not self.container:
            info: ServiceInfo = facts[ServiceState(self.name)]
            return info
        info = facts[ServiceState(self.name, sysv_status=False)]
        if info.running is not None:
            return info   # systemd said
        state: ContainerStatus = facts[ContainerState(self.container)]
        # what the wrapper's status says: the container is running (no docker: it is not)
        running = state.docker == "ok" and state.container is not None \
            and state.container.running
        return replace(info, running=running)

    def plan(self, facts: FactView) -> list[Change]:
        info = self._info(facts)
        unknown = None
        if not info.exists:
            # Probably installed by an earlier op of this play: say so in check
            # mode; in apply, facts are fresh here and the step reports the error.
            unknown = (f"{self.name} is not installed ({info.init}): depends on the package "
                       "that provides it")
        changes: list[Change] = []
        # A service that is not installed does not start at boot: nothing to disable.
        if self.enabled is not None and info.enabled is not None and info.enabled != self.enabled \
                or self.enabled and not info.exists:
            verb = "enable" if self.enabled else "disable"
            changes.append(Change(
                self.label, verb, f"{verb} {self.name} at boot ({info.init})",
                [Step(_boot_cmd(info, bool(self.enabled)))],
                Diff(f"{self.label} boot", _word(info.enabled, "enabled", "disabled"),
                     _word(self.enabled, "enabled", "disabled")),
                unknown=unknown, invalidates=self.invalidates))
        run = self._run_change(info, unknown)
        if run is not None:
            changes.append(run)
        return changes

    def _run_change(self, info: ServiceInfo, unknown: str | None) -> Change | None:
        state = self.state
        if state is None:
            return None
        if state == "started" and info.running or state == "stopped" and not info.running \
                and info.exists:
            return None
        if state == "stopped" and not info.exists:
            return None   # nothing installed is nothing running
        verb = {"started": "start", "stopped": "stop", "restarted": "restart",
                "reloaded": "reload"}[state]
        if verb == "reload" and not info.running:
            verb = "start"   # reloading a stopped service means starting it
        before = _word(info.running, "running", "stopped")
        after = "stopped\n" if verb == "stop" else "running\n"
        return Change(self.label, verb, f"{verb} {self.name} ({info.init})",
                      [Step(_run_cmd(info, verb))],
                      Diff(self.label, before, after) if before != after else None,
                      unknown=unknown, invalidates=self.invalidates)


def _word(flag: bool | None, yes: str, no: str) -> str | None:
    return None if flag is None else (yes if flag else no) + "\n"


#: roles write service(...) like the other ops' names
service = Service


def daemon_reload(init: str) -> list[Op]:
    """`systemctl daemon-reload` where the init is systemd, else nothing: systemd
    reads a changed unit file only when told, before the restart that needs it
    (a role's "reload systemd" handler)."""
    if init != "systemd":
        return []
    return [command("systemctl daemon-reload", name="systemctl daemon-reload",
                    invalidates=(ServiceState,))]
