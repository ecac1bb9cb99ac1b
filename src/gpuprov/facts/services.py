"""Service state under systemd or sysvinit, answered by one probe.

The probe itself picks the init (the same test as InitSystem), so an op
reading ServiceState needs no second fact and never asks systemctl on a
host whose PID 1 is not systemd (containers, the sysvinit test fleet).
"""

from __future__ import annotations

import shlex
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

from gpuprov.command import Command
from gpuprov.facts.base import Fact

# is-enabled answers that mean "starts at boot" / "cannot be toggled" (static
# units are pulled in by others; enabling them is an error, so no change).
_ENABLED = {"enabled", "alias"}
_NOT_TOGGLABLE = {"static", "indirect", "generated", "transient"}
_RUNNING = {"active", "reloading", "activating"}


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    init: str                       # systemd | sysvinit
    exists: bool
    #: None where the probe did not ask (sysvinit, ServiceState(sysv_status=False))
    running: bool | None
    #: True/False; None when the init cannot enable it (static unit) or it does not exist
    enabled: bool | None
    load_state: str = ""            # systemd: loaded | not-found | masked
    active_state: str = ""          # systemd: active | inactive | failed | ...
    sub_state: str = ""
    unit_file_state: str = ""       # systemd is-enabled answer
    status_code: int | None = None  # sysvinit: `/etc/init.d/NAME status` exit code
    links: tuple[str, ...] = ()     # sysvinit: /etc/rc?.d links

    @property
    def masked(self) -> bool:
        return self.load_state == "masked" or self.unit_file_state.startswith("masked")


@dataclass(frozen=True)
class ServiceState(Fact[ServiceInfo]):
    name: str
    _: KW_ONLY
    #: sysvinit: run the init script's `status`. False where the caller reads
    #: the running state elsewhere: the status of a service that wraps a
    #: container asks docker, which the caller's ContainerState asks anyway.
    sysv_status: bool = True

    # sysvinit `status` checks the daemon's pid with kill -0, which fails
    # with EPERM for a root daemon when asked as an ordinary user.
    sudo: ClassVar[bool] = True

    def command(self) -> Command:
        # The name is quoted once into a variable; everything after is fixed text.
        status = ('    "/etc/init.d/$n" status >/dev/null 2>&1; echo "status=$?"\n'
                  if self.sysv_status else '    echo script=yes\n')
        return Command.script(
            f"n={shlex.quote(self.name)}\n"
            "if [ -d /run/systemd/system ]; then\n"
            "  echo init=systemd\n"
            "  systemctl show --no-pager "
            "--property=LoadState,ActiveState,SubState,UnitFileState -- \"$n\"\n"
            "  echo \"is-enabled=$(systemctl is-enabled -- \"$n\" 2>/dev/null)\"\n"
            "else\n"
            "  echo init=sysvinit\n"
            "  if [ -x \"/etc/init.d/$n\" ]; then\n"
            + status +
            "  fi\n"
            "  for l in /etc/rc[0-6S].d/[SK][0-9][0-9]\"$n\"; do\n"
            "    [ -e \"$l\" ] && echo \"link=$l\"\n"
            "  done\n"
            "fi\n"
            "true")

    def process(self, output: str, exit_code: int) -> ServiceInfo:
        values: dict[str, str] = {}
        links: list[str] = []
        for line in output.splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "link":
                links.append(value)
            else:
                values[key] = value.strip()
        if values.get("init") == "systemd":
            return self._systemd(values)
        return self._sysvinit(values, tuple(links))

    def _systemd(self, v: dict[str, str]) -> ServiceInfo:
        load = v.get("LoadState", "")
        exists = load not in ("", "not-found")
        state = v.get("is-enabled") or v.get("UnitFileState", "")
        if not exists:
            enabled = None
        elif state in _ENABLED:
            enabled = True
        elif state in _NOT_TOGGLABLE:
            enabled = None
        else:  # disabled, masked, enabled-runtime (gone at reboot), linked
            enabled = False
        return ServiceInfo(self.name, "systemd", exists, v.get("ActiveState", "") in _RUNNING,
                           enabled, load, v.get("ActiveState", ""), v.get("SubState", ""), state)

    def _sysvinit(self, v: dict[str, str], links: tuple[str, ...]) -> ServiceInfo:
        code = int(v["status"]) if v.get("status", "").isdigit() else None
        exists = code is not None or v.get("script") == "yes"
        # Enabled = started in a multi-user runlevel (2-5), as update-rc.d sets it up.
        enabled = any(ln.split("/")[2][2] in "2345" and ln.split("/")[3].startswith("S")
                      for ln in links) if exists else None
        running = code == 0 if self.sysv_status else None
        return ServiceInfo(self.name, "sysvinit", exists, running, enabled,
                           status_code=code, links=links)
