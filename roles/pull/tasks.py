"""pull: set a host up to converge itself from a git repository (pull mode).

Run by `gpuprov pull-setup INVENTORY`, which makes the wheels (pull_wheelhouse).
Checklist, per host:
0. before anything changes: the wheels fit the host's Python version and
   architecture (refused, naming what differs, when they do not);
1. Python with venv and git (apt: python3, python3-venv, git; dnf: python3.11,
   git, RHEL 9's python3 being 3.9), and cron where the init is not systemd;
2. the wheelhouse in /opt/gpuprov/wheels: each wheel copied only where its
   sha256 differs, wheels no longer in it removed;
3. the venv /opt/gpuprov, and gpuprov installed in it from the wheels alone
   (--no-index) when its version, or its wheel, differs from the controller's;
4. /etc/gpuprov/pull.yml (root 0600), the allowed signers, the deploy key
   (root 0600, a secret: never shown) and, for an ssh repository, the git
   server's host key in pull_known_hosts (the inventory's lines, else this
   controller's known_hosts entry);
5. systemd: gpuprov-pull.service and its timer (every pull_interval s),
   enabled and started; sysvinit: /etc/cron.d/gpuprov-pull and cron running.
"""

import hashlib
from pathlib import Path

from paramiko.hostkeys import HostKeys
from paramiko.ssh_exception import SSHException

from gpuprov.command import Command, Secret
from gpuprov.engine.wheelhouse import Wheelhouse, WheelhouseError, unfit, wheel_tags
from gpuprov.facts.files import FileState
from gpuprov.facts.python import PythonVersion, VenvProjectVersion
from gpuprov.ops.command import command
from gpuprov.ops.files import absent, directory, file, template
from gpuprov.ops.packages import packages
from gpuprov.ops.services import daemon_reload, service
from gpuprov.ops.upload import upload

from .settings import (
    CONFIG,
    CONFIG_DIR,
    CRON,
    DEPLOY_KEY,
    KNOWN_HOSTS,
    LOG,
    PROGRAM,
    SERVICE_UNIT,
    SIGNERS,
    TIMER,
    TIMER_UNIT,
    VENV,
    WHEELS,
    PullVarError,
    config_text,
    cron_schedule,
    settings,
    signers_text,
    ssh_server,
)

#: the interpreter the venv is made with, and what brings it (with git)
PYTHON = {"debian": "python3", "rhel": "python3.11"}
PACKAGES = {"debian": ["python3", "python3-venv", "git"], "rhel": ["python3.11", "git"]}
CRON_PACKAGE = {"debian": "cron", "rhel": "cronie"}
CRON_SERVICE = {"debian": "cron", "rhel": "crond"}
#: the version that interpreter has once the role installed it (asked where present)
DISTRO_PYTHON = {"ubuntu2204": (3, 10), "ubuntu2404": (3, 12), "debian12": (3, 11),
                 "rhel9": (3, 11)}
#: gpuprov's requires-python
MIN_PYTHON = (3, 10)
RELOAD = "reload systemd"
RESTART = "restart pull timer"


def checked(ctx):
    try:
        return settings(ctx.vars)
    except PullVarError as exc:
        raise ctx.bad_var(exc.name, exc.message, exc.hint) from None


def wheelhouse(ctx, s):
    try:
        return Wheelhouse.read(Path(s.wheelhouse))
    except WheelhouseError as exc:
        raise ctx.fail(exc.message, exc.hint) from None


def refuse_unfit(ctx, s, house, python, found):
    """Stop before any change where the wheels cannot install on this host."""
    version = found or DISTRO_PYTHON.get(ctx.os.distro)
    which = f"{python} {version[0]}.{version[1]}" if version else python
    which += "" if found else " (to be installed)"
    if version is None:
        raise ctx.fail(f"no {python} on the host, and no known version for "
                       f"{ctx.os.pretty_name or ctx.os.id}", f"install {python} (>= 3.10) first")
    if version < MIN_PYTHON:
        raise ctx.fail(f"gpuprov needs Python >= 3.10; the host has {which}",
                       "install a newer Python 3 on the host")
    machine = ctx.system.arch.machine
    bad = unfit(house.wheels, version, machine)
    if not bad:
        return
    shown = ", ".join(f"{w.name.split('-')[0]} ({wheel_tags(w)})" for w in house.wheels
                      if w.name.split("-")[0].lower().replace("_", "-") in bad)
    source = ("the wheels repacked from this controller's Python" if s.repacked
              else f"the wheels in --wheelhouse {s.wheelhouse}")
    raise ctx.fail(
        f"{source} do not fit the host's {which} on {machine}: no wheel of "
        f"{', '.join(bad)} installs there (has {shown})",
        f"build wheels for Python {version[0]}.{version[1]} on {machine}, e.g. `pip download "
        f"--only-binary=:all: --python-version {version[0]}.{version[1]} --platform "
        f"manylinux2014_{machine} -d DIR gpuprov's requirements` plus gpuprov's own wheel "
        "(pip wheel --no-deps -w DIR <gpuprov checkout>), then pass --wheelhouse DIR")


def tasks(ctx):
    ctx.require_supported_os()
    s = checked(ctx)
    if s.deploy_key and not Path(s.deploy_key).expanduser().is_file():
        raise ctx.bad_var("pull_deploy_key", "no such file on this machine",
                          "the path, on the controller, of the private key that reads the "
                          "repository")
    house = wheelhouse(ctx, s)
    family, systemd = ctx.os.family, ctx.system.init == "systemd"
    python = PYTHON[family]
    [own] = [w for w in house.wheels if w.name.startswith("gpuprov-")]
    found, installed, own_on_host = ctx.facts(
        PythonVersion(python), VenvProjectVersion(VENV, "gpuprov"),
        FileState(f"{WHEELS}/{own.name}", content=False))
    refuse_unfit(ctx, s, house, python, found)

    yield packages(ctx.os, PACKAGES[family] + ([] if systemd else [CRON_PACKAGE[family]]))
    yield directory(VENV)
    yield directory(WHEELS)
    for wheel in house.wheels:
        yield upload(f"{WHEELS}/{wheel.name}", wheel)
    yield stale_wheels_removed(house)
    yield command(Command(python, "-m", "venv", VENV), creates=f"{VENV}/bin/pip",
                  name=f"{python} -m venv {VENV}")
    same_build = own_on_host is not None and own_on_host.sha256 == own_sha(own)
    if installed != house.version or not same_build:
        # the same version from another build (a checkout's): replace gpuprov itself
        again = ["--force-reinstall", "--no-deps"] if installed == house.version else []
        yield command(Command(f"{VENV}/bin/pip", "install", "-q", "--disable-pip-version-check",
                              "--no-index", "--find-links", WHEELS, *again,
                              f"gpuprov=={house.version}"),
                      name=f"pip install gpuprov=={house.version} into {VENV}",
                      invalidates=(VenvProjectVersion,))

    yield directory(CONFIG_DIR)
    config = config_text(s, ctx.host.name)
    yield file(CONFIG, Secret(config) if ctx.vars.is_secret("pull_repo") else config,
               mode="0600")
    if s.allowed_signers:
        yield file(SIGNERS, signers_text(s))
    else:
        yield absent(SIGNERS)
    server = ssh_server(s.repo)
    if s.deploy_key:
        yield upload(DEPLOY_KEY, Path(s.deploy_key).expanduser(), mode="0600", secret=True)
    else:
        yield absent(DEPLOY_KEY, read_as_root=True, secret=True)
    if s.deploy_key and server:
        yield file(KNOWN_HOSTS, "".join(f"{line}\n" for line in known_hosts(ctx, s, server)))
    else:
        yield absent(KNOWN_HOSTS)

    templates = ctx.role_dir / "templates"
    if systemd:
        names = {"program": PROGRAM, "interval": s.interval}
        yield template(SERVICE_UNIT, templates / "gpuprov-pull.service.j2", names, notify=RELOAD)
        yield template(TIMER_UNIT, templates / "gpuprov-pull.timer.j2", names, notify=RESTART)
        yield service(TIMER, state="started", enabled=True)
    else:
        minutes, schedule = cron_schedule(s.interval)
        yield template(CRON, templates / "gpuprov-pull.cron.j2",
                       {"program": PROGRAM, "minutes": minutes, "schedule": schedule,
                        "log": LOG})
        yield service(CRON_SERVICE[family], state="started", enabled=True)


def known_hosts(ctx, s, server):
    """The git server's host key lines: the inventory's, else this controller's
    ~/.ssh/known_hosts entries for it (hashed ones too)."""
    if s.known_hosts:
        return s.known_hosts
    path = Path("~/.ssh/known_hosts").expanduser()
    try:
        found = HostKeys(str(path)).lookup(server) if path.is_file() else None
    except (OSError, SSHException):
        found = None
    if not found:
        raise ctx.bad_var("pull_known_hosts", f"the git server {server}'s host key is needed "
                          f"(gpuprov pull accepts no other), and {path} has none for it",
                          f"ssh-keyscan {server.strip('[]').split(']:')[0]}, check the "
                          "fingerprint, and set pull_known_hosts: [\"<the line>\"]")
    return [f"{server} {kind} {key.get_base64()}" for kind, key in sorted(found.items())]


def own_sha(wheel: Path) -> str:
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def stale_wheels_removed(house):
    """Wheels an earlier setup copied that this wheelhouse no longer has: pip
    picks among every wheel it finds."""
    keep = [arg for w in house.wheels for arg in ("!", "-name", w.name)]
    find = ["find", WHEELS, "-maxdepth", "1", "-type", "f", "-name", "*.whl", *keep]
    return command(Command(*find, "-delete"),
                   only_if=f"{Command(*find).shell()} | grep -q .",
                   name=f"remove wheels no longer in the wheelhouse from {WHEELS}",
                   invalidates=(FileState.under(WHEELS),))


def reload_systemd(ctx):
    return daemon_reload(ctx.system.init)


def restart(ctx):
    # the interval is in the timer's unit file: systemd must read it first
    return [*reload_systemd(ctx), service(TIMER, state="restarted")]


HANDLERS = {
    RELOAD: reload_systemd,
    RESTART: restart,
}
