"""gpu_exporter: per-GPU metrics in dcgm-exporter's names for node_exporter's textfile collector.

Checklist, per host (gpu_exporter_enabled: true):
1. the textfile directory, created root:root 0755 when missing (an existing
   one is node_exporter's business and left as it is);
2. the program /usr/local/sbin/gpuprov-gpu-exporter (POSIX sh + awk: one
   `nvidia-smi --query-gpu`, gpu_exporter.prom replaced atomically);
3. systemd: a oneshot service and its timer (every gpu_exporter_interval s),
   the timer enabled and running; sysvinit: an init script that runs the
   program's loop as a daemon, enabled and running;
4. restarted when any of the above changed.
gpu_exporter_enabled false: stopped, disabled, program, units and
gpu_exporter.prom removed (node_exporter would serve its last values forever).
"""

import posixpath
import shlex

from gpuprov.command import Command
from gpuprov.facts.services import ServiceState
from gpuprov.ops.command import command
from gpuprov.ops.file_plan import state_fact
from gpuprov.ops.files import absent, directory, template
from gpuprov.ops.services import daemon_reload, service

NAME = "gpuprov-gpu-exporter"
PROGRAM = f"/usr/local/sbin/{NAME}"
SERVICE_UNIT = f"/etc/systemd/system/{NAME}.service"
TIMER = f"{NAME}.timer"
TIMER_UNIT = f"/etc/systemd/system/{TIMER}"
INIT_SCRIPT = f"/etc/init.d/{NAME}"
TEXTFILE = "gpu_exporter.prom"
RESTART = "restart gpu exporter"


# -e name=value gives strings: "false", "30"
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def enabled(ctx) -> bool:
    value = ctx.vars["gpu_exporter_enabled"]
    text = str(value).strip().lower()
    if isinstance(value, bool) or text in _TRUE | _FALSE:
        return value if isinstance(value, bool) else text in _TRUE
    raise ctx.bad_var("gpu_exporter_enabled", "must be true or false")


def interval(ctx) -> int:
    value = ctx.vars["gpu_exporter_interval"]
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, int | str) or not text.isdigit() \
            or int(text) < 1:
        raise ctx.bad_var("gpu_exporter_interval", "must be a whole number of seconds, at least 1",
                          "e.g. gpu_exporter_interval: 15")
    return int(text)


def textfile_dir(ctx) -> str:
    value = ctx.vars["gpu_exporter_textfile_dir"]
    if not isinstance(value, str) or not value.startswith("/") or value == "/" \
            or posixpath.normpath(value) != value or any(c in value for c in "\n\0"):
        raise ctx.bad_var("gpu_exporter_textfile_dir",
                          "must be an absolute, normalised directory path other than /",
                          "node_exporter's --collector.textfile.directory, e.g. "
                          "/var/lib/prometheus/node-exporter")
    return value


def tasks(ctx):
    if not enabled(ctx):
        yield from removed(ctx)
        return
    every, where = interval(ctx), textfile_dir(ctx)
    if ctx.fact(state_fact(where, content=False, probe=where + "/")) is None:
        yield directory(where)
    names = {"name": NAME, "program": PROGRAM, "interval": every}
    yield template(PROGRAM, ctx.role_dir / "templates" / f"{NAME}.sh.j2",
                   {**names, "textfile_dir": where, "textfile_dir_sh": shlex.quote(where)},
                   mode="0755", notify=RESTART)
    if ctx.system.init == "systemd":
        yield template(SERVICE_UNIT, ctx.role_dir / "templates" / f"{NAME}.service.j2", names,
                       notify=RESTART)
        yield template(TIMER_UNIT, ctx.role_dir / "templates" / f"{NAME}.timer.j2", names,
                       notify=RESTART)
        yield service(TIMER, state="started", enabled=True)
    else:
        yield template(INIT_SCRIPT, ctx.role_dir / "templates" / f"{NAME}.init.j2", names,
                       mode="0755", notify=RESTART)
        yield service(NAME, state="started", enabled=True)


def removed(ctx):
    systemd = ctx.system.init == "systemd"
    if systemd:
        yield service(TIMER, state="stopped", enabled=False)
        yield absent(TIMER_UNIT, notify="reload systemd")
        yield absent(SERVICE_UNIT, notify="reload systemd")
    else:
        # the rc links go with `update-rc.d remove` once the script is gone
        yield service(NAME, state="stopped")
        yield absent(INIT_SCRIPT)
        yield command(Command("update-rc.d", NAME, "remove"),
                      only_if=f"ls /etc/rc[0-6S].d/[SK][0-9][0-9]{NAME}",
                      name=f"update-rc.d {NAME} remove", invalidates=(ServiceState,))
    yield absent(PROGRAM)
    # the variable may be bad or changed since: remove only where it points now
    where = ctx.vars["gpu_exporter_textfile_dir"]
    if isinstance(where, str) and where.startswith("/"):
        yield absent(posixpath.join(where, TEXTFILE))


def reload_systemd(ctx):
    return daemon_reload(ctx.system.init)


def restart(ctx):
    if not enabled(ctx):
        return []   # a notification left pending before the exporter was disabled
    if ctx.system.init == "systemd":
        # the timer's interval is in its unit file: systemd must read it first
        return [*reload_systemd(ctx), service(TIMER, state="restarted")]
    return [service(NAME, state="restarted")]


HANDLERS = {
    RESTART: restart,
    "reload systemd": reload_systemd,
}
