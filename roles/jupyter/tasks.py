"""jupyter: JupyterLab in the team's GPU image, private to each host.

Checklist, per host:
1. the system group gpuprov-jupyter, with exactly jupyter_token_readers as
   members: it may read the token and the config, and so may the container
   (--group-add), not the whole `users` group;
2. the server config (launch.server_config) in /etc/gpuprov/jupyter,
   root:gpuprov-jupyter 0640, mounted read-only into the container;
3. the data directory, owned by jupyter_user;
4. auth: the password hash in the config, or a token file made ON the host
   (root:gpuprov-jupyter 0640, never read back) mounted read-only into the
   container, where Jupyter reads it (JUPYTER_TOKEN_FILE);
5. the start script /usr/local/sbin/gpuprov-jupyter (docker run: --user,
   no-new-privileges, --cap-drop ALL, --gpus gpu_devices, the resource
   limits (--memory, --cpus, --shm-size, --pids-limit), -p on
   jupyter_bind_address only, a gpuprov.spec label) and its systemd unit or
   sysvinit script;
6. the service started and enabled, restarted when any of the above changed;
7. the container itself: running, from this very spec, publishing exactly
   the wanted ports, with the declared memory, CPU, /dev/shm and pids limits
   (drift fixed by the start script).
jupyter_enabled false: stopped, disabled, unit and script removed, data kept.
"""

from gpuprov.command import Command
from gpuprov.facts.services import ServiceState
from gpuprov.ops.command import command
from gpuprov.ops.docker import container, container_absent
from gpuprov.ops.files import absent, directory, file, template
from gpuprov.ops.generated import generated_secret
from gpuprov.ops.services import daemon_reload, service
from gpuprov.ops.users import group_members, group_present

from . import launch
from .settings import (
    AUTHORIZED_KEYS,
    CONFIG,
    CONFIG_DIR,
    GROUP,
    INIT_SCRIPT,
    NAME,
    SCRIPT,
    SSH_DIR,
    SSH_DROPIN,
    UNIT,
    JupyterVarError,
    enabled,
    settings,
)

RESTART = "restart jupyter"


def checked(ctx):
    """The role's variables, or the refusal naming the bad one."""
    try:
        return settings(ctx.vars)
    except JupyterVarError as exc:
        raise ctx.bad_var(exc.name, exc.message, exc.hint) from None


def tasks(ctx):
    s = checked(ctx)
    if not s.enabled:
        yield from removed(ctx)
        return
    templates = ctx.role_dir / "templates"
    # the start script looks the gid up when it runs: a new group needs a restart
    yield group_present(GROUP, notify=RESTART)
    yield group_members(GROUP, s.token_readers, source="jupyter_token_readers")
    yield directory(CONFIG_DIR)
    yield directory(s.data_dir, owner=s.uid, group=s.gid, mode="0750")
    if s.token:
        # no newline: jupyter_server takes the whole file as the token
        yield generated_secret(s.token_file, nbytes=32, group=GROUP, mode="0640",
                               newline=False, notify=RESTART)
    yield file(CONFIG, launch.server_config_json(ctx.vars), group=GROUP, mode="0640",
               secret=not s.token, notify=RESTART)
    if s.ssh:
        yield directory(SSH_DIR)
        yield file(AUTHORIZED_KEYS, launch.authorized_keys(s), notify=RESTART)
        yield file(SSH_DROPIN, launch.ssh_dropin(), notify=RESTART)
    names = {"name": NAME, "script": SCRIPT}
    yield template(SCRIPT, templates / "gpuprov-jupyter.sh.j2",
                   {**names, **launch.start_script_vars(s)}, mode="0755", notify=RESTART)
    if ctx.system.init == "systemd":
        yield template(UNIT, templates / "gpuprov-jupyter.service.j2", names,
                       notify=RESTART)
    else:
        yield template(INIT_SCRIPT, templates / "gpuprov-jupyter.init.j2", names,
                       mode="0755", notify=RESTART)
    # The service runs the container (under sysvinit its running state is the
    # container's, one docker inspect for both ops); starting it re-reads the container.
    yield service(NAME, state="started", enabled=True, container=NAME)
    yield container(NAME, spec=launch.spec_hash(s), publish=s.publish, limits=s.limits,
                    fix=Command(SCRIPT, "restart"))


def removed(ctx):
    systemd = ctx.system.init == "systemd"
    # sysvinit: the rc links go with `update-rc.d remove` once the script is gone
    yield service(NAME, state="stopped", enabled=False if systemd else None, container=NAME)
    yield container_absent(NAME)
    yield absent(SCRIPT)
    if systemd:
        yield absent(UNIT, notify="reload systemd")
    else:
        yield absent(INIT_SCRIPT)
        yield command(Command("update-rc.d", NAME, "remove"),
                      only_if=f"ls /etc/rc[0-6S].d/[SK][0-9][0-9]{NAME}",
                      name=f"update-rc.d {NAME} remove",
                      invalidates=(ServiceState,))


def reload_systemd(ctx):
    return daemon_reload(ctx.system.init)


def restart(ctx):
    if not enabled(ctx.vars):
        return []   # a notification left pending before jupyter was disabled
    # the unit file may have changed: systemd must read it before the restart
    return [*reload_systemd(ctx), service(NAME, state="restarted", container=NAME)]


HANDLERS = {
    RESTART: restart,
    "reload systemd": reload_systemd,
}
