"""Role jupyter against canned facts, per distro and init: the exact files and
commands; the container published on 127.0.0.1 only, as 1000:100, with
no-new-privileges and --gpus from gpu_devices; the token made on the host and
never anywhere gpuprov can show it; refusals (a public bind without TLS, a
bad password hash); drift of the token file and of the running container;
jupyter_enabled false; the handlers. The start script is also run by a real
/bin/sh against the docker test double."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.base import FactView, gather_script, parse_batch
from gpuprov.facts.docker import ContainerInfo, ContainerState, ContainerStatus, DockerImage
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.facts.services import ServiceInfo, ServiceState
from gpuprov.facts.system import ShellTest
from gpuprov.facts.users import ExistingUsers, GroupInfo, GroupMembers
from gpuprov.model.playbook import load_playbook
from gpuprov.ops.file_plan import FileOpError
from tests.unit.role_facts import commands, ops_until_failure, service_info, write_cmd
from tests.unit.role_harness import RolePlan, plan_role, role_module, system_for

# the role's own module, through the loader its tasks.py is imported with
launch = role_module("jupyter", "launch")

NAME = "gpuprov-jupyter"
IMAGE = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"       # gpu_image's default
DIGEST = "sha256:" + "d1" * 32
CONFIG = "/etc/gpuprov/jupyter/jupyter_server_config.json"
TOKEN = "/etc/gpuprov/jupyter/token"
SCRIPT = "/usr/local/sbin/gpuprov-jupyter"
UNIT = "/etc/systemd/system/gpuprov-jupyter.service"
INIT = "/etc/init.d/gpuprov-jupyter"
GROUP = "gpuprov-jupyter"
GID = 998
# argon2 of "correct horse", as jupyter_server.auth.passwd() made it
HASH = ("argon2:$argon2id$v=19$m=10240,t=10,p=8$5tmfvE2LrjDV3PfuZLXXUQ"
        "$gJnSkf6a35kgY/s0l1pGz/DqxqJdtW1bLc9BMl3Y/54")

# (distro, init): systemd everywhere it is PID 1; Debian 12 also as the fleet runs it
HOSTS = [("ubuntu2204", "systemd"), ("ubuntu2404", "systemd"), ("debian12", "systemd"),
         ("debian12", "sysvinit"), ("rhel9", "systemd")]

CONFIG_DIR_F = FileState("/etc/gpuprov/jupyter", content=False)
DATA_F = FileState("/srv/gpuprov/data", content=False)
TOKEN_F = FileState(TOKEN, content=False, sudo=True)    # stat only: never the content
CONFIG_F = FileState(CONFIG, sudo=True)
SCRIPT_F = FileState(SCRIPT)
UNIT_F = FileState(UNIT)
INIT_F = FileState(INIT)
# under sysvinit the service's running state is the container's: no init script status
SERVICE = ServiceState(NAME, sysv_status=False)
CONTAINER = ContainerState(NAME)
GROUP_F = GroupMembers(GROUP)
RC_LINKS = ShellTest(f"ls /etc/rc[0-6S].d/[SK][0-9][0-9]{NAME}")

GENERATE_TOKEN = (
    "umask 077 && mkdir -p /etc/gpuprov/jupyter && "
    "t= && trap 'rm -f \"$t\"' EXIT && trap 'exit 143' HUP INT TERM PIPE && "
    "t=$(mktemp -u /etc/gpuprov/jupyter/.gpuprov-XXXXXX) && (umask 077 && set -C && : >\"$t\") && "
    # no newline after the hex: jupyter_server takes the whole file as the token
    "od -An -vtx1 -N32 /dev/urandom | tr -d ' \\n' >\"$t\" && "
    "grep -qxE '[0-9a-f]{64}' \"$t\" && chown -h root:gpuprov-jupyter \"$t\" && "
    f"chmod 0640 \"$t\" && mv -fT \"$t\" {TOKEN} && trap - EXIT")


def run(facts: dict, distro: str = "ubuntu2404", init: str = "systemd", *,
        check: bool = False, handler: str | None = None, **vars: object) -> RolePlan:
    # sshd_hardening in the play, as in playbooks/site.yml: its defaults own sshd_dropin
    return plan_role("jupyter", system_for(distro, init=init), facts,
                     vars={"gpu_image": IMAGE, **vars}, check=check, handler=handler,
                     play_roles=("sshd_hardening",))


# ---------------------------------------------------------------- canned hosts

def directory(uid: int = 0, gid: int = 0, mode: str = "0755") -> FileInfo:
    names = {0: "root", 1000: "admin", 100: "users"}
    return FileInfo("directory", names.get(uid, str(uid)), names.get(gid, str(gid)), mode, 4096,
                    uid, gid)


def a_file(content: bytes, mode: str = "0644", gid: int = 0) -> FileInfo:
    group = {100: "users", GID: GROUP}.get(gid, "root")
    return FileInfo("file", "root", group, mode, len(content), 0, gid,
                    hashlib.sha256(content).hexdigest(), content)


def token_info(size: int = 64, mode: str = "0640", owner: str = "root",
               group: str = GROUP) -> FileInfo:
    # what a stat-only FileState gives: no content, no digest
    uid = 0 if owner == "root" else 1000
    return FileInfo("file", owner, group, mode, size, uid, GID if group == GROUP else 0)


def missing_service(init: str) -> ServiceInfo:
    if init == "systemd":
        return service_info(NAME, exists=False)
    return ServiceInfo(NAME, "sysvinit", False, None, None)


def running_service(init: str, running: bool = True) -> ServiceInfo:
    """Under sysvinit, `running` is the container's (the probe leaves it None)."""
    if init == "systemd":
        return service_info(NAME, running=running)
    links = (f"/etc/rc2.d/S01{NAME}", f"/etc/rc0.d/K01{NAME}")
    return ServiceInfo(NAME, "sysvinit", True, None, True, links=links)


def fresh(init: str = "systemd", docker: str = "ok") -> dict:
    return {GROUP_F: None, CONFIG_DIR_F: None, DATA_F: None, TOKEN_F: None, CONFIG_F: None,
            SCRIPT_F: None, UNIT_F: None, INIT_F: None, SERVICE: missing_service(init),
            CONTAINER: ContainerStatus(docker, message="docker is not installed"
                                       if docker == "absent" else "")}


def written(plan: RolePlan, path: str) -> bytes:
    """What the plan writes to `path` (the stdin of its file change)."""
    [change] = [c for c in plan.changes if c.resource == f"file {path}"]
    return change.steps[0].stdin


def running(spec: str, *ports: str, status: str = "running") -> ContainerStatus:
    return ContainerStatus("ok", ContainerInfo(status == "running", status,
                                               (("gpuprov.spec", spec),), frozenset(ports)))


def spec_of(plan: RolePlan) -> str:
    return next(p.op for p in plan.ops if p.op.label == f"container {NAME}").spec


def converged(distro: str = "ubuntu2404", init: str = "systemd", **vars: object) -> dict:
    """The host after the fresh plan was applied: every file as it writes it."""
    plan = run(fresh(init), distro, init, **vars)
    facts = fresh(init)
    facts.update({
        GROUP_F: GroupInfo(GROUP, GID, ()),
        CONFIG_DIR_F: directory(), DATA_F: directory(1000, 100, "0750"),
        TOKEN_F: token_info(), CONFIG_F: a_file(written(plan, CONFIG), "0640", gid=GID),
        SCRIPT_F: a_file(written(plan, SCRIPT), "0755"),
        SERVICE: running_service(init),
        CONTAINER: running(spec_of(plan), "127.0.0.1:8888->8888/tcp"),
    })
    if init == "systemd":
        facts[UNIT_F] = a_file(written(plan, UNIT))
    else:
        facts[INIT_F] = a_file(written(plan, INIT), "0755")
    return facts


def docker_run_argv(script: bytes) -> list[str]:
    """The `docker run` of the start script, as argv."""
    text = script.decode()
    start = text.index("    docker run \\\n")
    end = text.index(" >/dev/null\n", start)
    return shlex.split(text[start:end].replace("\\\n", " "))


def expected_run(spec: str, *, gpus: str = "all", image: str = IMAGE, token: bool = True,
                 publish: tuple[str, ...] = ("127.0.0.1:8888:8888",),
                 extra: tuple[str, ...] = (),
                 limits: tuple[str, ...] = ("--shm-size", "8g")) -> list[str]:
    # limits: jupyter_shm_size's default 8g, for PyTorch's DataLoader workers
    argv = ["docker", "run", "-d", "--name", NAME, "--restart", "on-failure:5",
            "--pull", "never", "--user", "1000:100", "--security-opt", "no-new-privileges",
            "--cap-drop", "ALL", "--group-add", "$JUPYTER_GID", "--gpus", gpus, *limits]
    for p in publish:
        argv += ["-p", p]
    argv += ["-e", "HOME=/workspace/data", "-v", "/srv/gpuprov/data:/workspace/data",
             "-v", f"{CONFIG}:/etc/gpuprov/jupyter_server_config.json:ro", *extra]
    if token:
        argv += ["-v", f"{TOKEN}:/etc/gpuprov/jupyter_token:ro", "-e", "JUPYTER_TOKEN=",
                 "-e", "JUPYTER_TOKEN_FILE=/etc/gpuprov/jupyter_token"]
    return [*argv, "--label", f"gpuprov.spec={spec}", image, "jupyter", "lab",
            "--config=/etc/gpuprov/jupyter_server_config.json"]


def everything_shown(plan: RolePlan) -> str:
    """All a person or a report can see of a plan: changes, commands, diffs."""
    return json.dumps([c.to_json() for c in plan.changes])


# ---------------------------------------------------------------- a fresh host

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_fresh_host_gets_config_token_script_service_and_container(distro: str,
                                                                    init: str) -> None:
    plan = run(fresh(init), distro, init)
    service_file = ([write_cmd(UNIT)] if init == "systemd"
                    else [write_cmd(INIT, mode="0755")])
    service_cmds = (["systemctl enable gpuprov-jupyter", "systemctl start gpuprov-jupyter"]
                    if init == "systemd" else
                    ["update-rc.d gpuprov-jupyter defaults", "service gpuprov-jupyter start"])
    assert commands(plan) == [
        "groupadd --system gpuprov-jupyter",
        "mkdir -p -- /etc/gpuprov/jupyter && [ -d /etc/gpuprov/jupyter ] && "
        "chown -h root:root -- /etc/gpuprov/jupyter && chmod 0755 -- /etc/gpuprov/jupyter",
        "mkdir -p -- /srv/gpuprov/data && [ -d /srv/gpuprov/data ] && "
        "chown -h 1000:100 -- /srv/gpuprov/data && chmod 0750 -- /srv/gpuprov/data",
        GENERATE_TOKEN,
        write_cmd(CONFIG, mode="0640", owner="root:gpuprov-jupyter"),
        write_cmd(SCRIPT, mode="0755"),
        *service_file,
        *service_cmds,
        f"{SCRIPT} restart",
    ]
    notified = {c.resource: c.notify for c in plan.changes if c.notify}
    assert notified == {f"group {GROUP}": ("restart jupyter",),
                        f"token {TOKEN}": ("restart jupyter",),
                        f"file {CONFIG}": ("restart jupyter",),
                        f"file {SCRIPT}": ("restart jupyter",),
                        f"file {UNIT if init == 'systemd' else INIT}": ("restart jupyter",)}
    container = plan.changes[-1]
    assert (container.resource, container.action) == (f"container {NAME}", "start")
    assert container.summary == f"{NAME} does not exist"
    assert container.invalidates == (ContainerState,)
    # the service's start changes the container: it is read again before the container op
    assert all(ContainerState in c.invalidates for c in plan.changes
               if c.resource == f"service {NAME}")


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_the_container_is_private_unprivileged_and_gets_only_its_gpus(distro: str,
                                                                      init: str) -> None:
    plan = run(fresh(init), distro, init)
    spec = spec_of(plan)
    assert docker_run_argv(written(plan, SCRIPT)) == expected_run(spec)
    lab = run(fresh(init), distro, init, gpu_devices="0,1")
    assert docker_run_argv(written(lab, SCRIPT)) == expected_run(spec_of(lab),
                                                                 gpus='"device=0,1"')
    assert spec_of(lab) != spec, "the spec label follows the run options"


def test_server_config_is_exactly_what_server_config_renders() -> None:
    plan = run(fresh())
    text = written(plan, CONFIG).decode()
    assert json.loads(text) == {
        "ServerApp": {"ip": "0.0.0.0", "port": 8888, "port_retries": 0, "open_browser": False,
                      "allow_root": False, "allow_remote_access": False,
                      "disable_check_xsrf": False, "allow_origin": "",
                      "root_dir": "/workspace"},
        "PasswordIdentityProvider": {"allow_password_change": False},
    }
    assert text == launch.server_config_json({"gpu_image": IMAGE})
    [config] = [c for c in plan.changes if c.resource == f"file {CONFIG}"]
    assert config.summary == f"create ({len(text)} bytes, root:gpuprov-jupyter 0640)"
    assert config.diff.after == text and not config.diff.secret


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_start_script_and_service_files(distro: str, init: str) -> None:
    plan = run(fresh(init), distro, init)
    script = written(plan, SCRIPT).decode()
    assert script.startswith("#!/bin/sh\n# Managed by gpuprov (role jupyter)")
    assert f"# JupyterLab in {IMAGE}, published on 127.0.0.1:8888 only.\n" in script
    assert f"SPEC={spec_of(plan)}\n" in script
    assert f"\nGROUP={GROUP}\nTOKEN_FILE={TOKEN}\n" in script
    # the script never reads the token: it checks its size, docker mounts the file
    assert "cat " not in script and "JUPYTER_TOKEN=\"" not in script
    assert 'JUPYTER_GID="$(getent group "$GROUP" | cut -d: -f3)"' in script
    if init == "systemd":
        unit = written(plan, UNIT).decode()
        for line in ("Requires=docker.service", "After=docker.service network-online.target",
                     "Type=oneshot", "RemainAfterExit=yes", f"ExecStart={SCRIPT} start",
                     f"ExecStop={SCRIPT} stop", "WantedBy=multi-user.target"):
            assert f"\n{line}\n" in unit
        assert not [c for c in plan.changes if c.resource == f"file {INIT}"]
    else:
        lsb = written(plan, INIT).decode()
        assert "# Provides:          gpuprov-jupyter\n" in lsb
        assert "# Required-Start:    $remote_fs $network docker\n" in lsb
        assert f'start|stop|restart|status) exec {SCRIPT} "$1" ;;' in lsb
        assert not [c for c in plan.changes if c.resource == f"file {UNIT}"]


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_converged_host_has_no_change(distro: str, init: str) -> None:
    plan = run(converged(distro, init), distro, init)
    assert plan.changes == []
    unit = UNIT if init == "systemd" else INIT
    assert plan.labels == [f"group {GROUP}", f"group {GROUP} members",
                           "directory /etc/gpuprov/jupyter", "directory /srv/gpuprov/data",
                           f"token {TOKEN}", f"file {CONFIG}", f"file {SCRIPT}", f"file {unit}",
                           f"service {NAME}", f"container {NAME}"]


def test_docker_not_installed_yet_is_unknown_in_check_mode() -> None:
    plan = run(fresh(docker="absent"), check=True)
    container = plan.changes[-1]
    assert container.unknown == "docker is not installed yet: depends on the container_toolkit role"
    assert container.summary == f"start {NAME}"


def test_image_pinned_by_digest_or_given_explicitly() -> None:
    plan = run(fresh(), gpu_image_digest=DIGEST)
    assert docker_run_argv(written(plan, SCRIPT)) == expected_run(
        spec_of(plan), image=f"pytorch/pytorch@{DIGEST}")
    own = run(fresh(), jupyter_image="ghcr.io/lab/notebook:1.2")
    assert docker_run_argv(written(own, SCRIPT))[-4:] == [
        "ghcr.io/lab/notebook:1.2", "jupyter", "lab",
        "--config=/etc/gpuprov/jupyter_server_config.json"]


# ---------------------------------------------------------------- the token

def test_no_token_is_ever_read_shown_or_passed_on_a_command_line() -> None:
    plan = run(fresh())
    # the only fact about the token file is a stat: its content never leaves the host
    token_facts = [f for p in plan.ops for f in p.op.facts()
                   if isinstance(f, FileState) and f.path == TOKEN]
    assert token_facts == [TOKEN_F] and TOKEN_F.content is False
    [token] = [c for c in plan.changes if c.resource == f"token {TOKEN}"]
    assert token.steps[0].stdin is None, "made on the host, not uploaded"
    assert token.diff.unified() == (f"--- {TOKEN}\n+++ {TOKEN}\ngenerate a token (32 random "
                                    "bytes as 64 hex chars, made on the host); never shown\n")
    # docker gets the token FILE, read-only, and the path inside: no value in
    # any environment (JUPYTER_TOKEN= is set empty, so one from the image cannot win)
    argv = docker_run_argv(written(plan, SCRIPT))
    assert f"{TOKEN}:/etc/gpuprov/jupyter_token:ro" in argv
    env = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert env == ["HOME=/workspace/data", "JUPYTER_TOKEN=",
                   "JUPYTER_TOKEN_FILE=/etc/gpuprov/jupyter_token"]
    # the container fact asks docker for state, labels and ports only, never Config.Env
    command = CONTAINER.command().shell()
    assert "--format" in command and '"Labels"' in command and "Env" not in command


def test_token_readers_are_exactly_the_members_of_the_dedicated_group() -> None:
    facts = converged() | {GROUP_F: GroupInfo(GROUP, GID, ("carol",)),
                           ExistingUsers(("alice",)): frozenset({"alice"})}
    plan = run(facts, jupyter_token_readers=["alice"])
    assert commands(plan) == [f"gpasswd -a alice {GROUP}", f"gpasswd -d carol {GROUP}"]
    # reading a file needs no restart: nothing is notified
    assert [c.notify for c in plan.changes] == [()]
    # by default nobody but root (the config and token are not the `users` group's)
    assert commands(run(facts)) == [f"gpasswd -d carol {GROUP}"]


@pytest.mark.parametrize("readers", ["alice", ["Alice"], ["x;rm"], [1]])
def test_bad_token_readers_are_refused(readers: object) -> None:
    ops, exc = ops_until_failure("jupyter", system_for("ubuntu2404"), fresh(),
                                 vars={"gpu_image": IMAGE, "jupyter_token_readers": readers})
    assert ops == []
    assert "jupyter_token_readers" in exc.message and "must be a list of user names" in \
        exc.message


def test_an_existing_token_and_config_move_from_root_and_users_to_the_group() -> None:
    # a host converged before the dedicated group: token root:root 0600 + newline,
    # config root:users 0640
    facts = converged()
    facts[GROUP_F] = None
    facts[TOKEN_F] = token_info(size=65, mode="0600", group="root")
    facts[CONFIG_F] = a_file(written(run(fresh()), CONFIG), "0640", gid=100)
    plan = run(facts)
    assert commands(plan) == ["groupadd --system gpuprov-jupyter", GENERATE_TOKEN,
                              f"chown -h root:{GROUP} -- {CONFIG}"]
    assert all(c.notify == ("restart jupyter",) for c in plan.changes[:2])


@pytest.mark.parametrize(("token", "summary"), [
    (None, "generate a token (32 random bytes as 64 hex chars, made on the host)"),
    (token_info(size=0), "replace a 0-byte token, shorter than 64 hex chars (32 random "
                         "bytes as 64 hex chars, made on the host)"),
    (token_info(size=40), "replace a 40-byte token, shorter than 64 hex chars (32 random "
                          "bytes as 64 hex chars, made on the host)"),
    # the format before JUPYTER_TOKEN_FILE (hex + newline): Jupyter would take the
    # newline as part of the token, so it is replaced (researchers read it again)
    (token_info(size=65), "replace a 65-byte token, not exactly 64 hex chars (32 random "
                          "bytes as 64 hex chars, made on the host)"),
])
def test_token_is_generated_only_when_absent_or_too_short(token: FileInfo | None,
                                                         summary: str) -> None:
    facts = converged()
    facts[TOKEN_F] = token
    plan = run(facts)
    assert commands(plan) == [GENERATE_TOKEN]
    [change] = plan.changes
    assert (change.summary, change.notify) == (summary, ("restart jupyter",))
    # a present token of full length (a hand-made one too) is kept as is
    facts[TOKEN_F] = token_info(size=64)
    assert run(facts).changes == []


@pytest.mark.parametrize(("token", "expected", "notes"), [
    (token_info(mode="0644"), [f"chmod 0640 -- {TOKEN}"], "mode 0644 -> 0640"),
    (token_info(owner="admin"), [f"chown -h root:{GROUP} -- {TOKEN}"], "owner admin -> root"),
    # the mode and group before the dedicated group: root:root 0600
    (token_info(mode="0600", group="root"), [f"chown -h root:{GROUP} -- {TOKEN} && chmod 0640 "
                                             f"-- {TOKEN}"], f"group root -> {GROUP}, mode 0600 "
                                                             "-> 0640"),
])
def test_token_file_mode_and_owner_drift_is_fixed_without_reading_it(
        token: FileInfo, expected: list[str], notes: str) -> None:
    facts = converged()
    facts[TOKEN_F] = token
    plan = run(facts)
    assert commands(plan) == expected
    [change] = plan.changes
    assert change.summary == notes
    assert change.notify == (), "the token is unchanged: nothing to restart"


def test_token_path_taken_by_a_directory_is_an_error() -> None:
    facts = converged()
    facts[TOKEN_F] = directory()
    with pytest.raises(FileOpError, match=f"{TOKEN} is a directory, not a token file"):
        run(facts)


def test_the_generation_command_really_makes_a_private_token(tmp_path: Path) -> None:
    from gpuprov.ops.generated import generate_command
    target = tmp_path / "new" / "token"
    me = f"{os.getuid()}"
    cmd = generate_command(str(target), 32, me, str(os.getgid()), "0600")
    subprocess.run(["/bin/sh", "-c", cmd.shell()], check=True)
    text = target.read_text()
    assert len(text) == 65 and text.endswith("\n") and int(text, 16) >= 0
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert oct(target.parent.stat().st_mode & 0o777) == "0o700", "umask 077 for a new dir"
    assert os.listdir(target.parent) == ["token"], "no temp file left"
    subprocess.run(["/bin/sh", "-c", cmd.shell()], check=True)
    assert target.read_text() != text, "a second run makes a new one (only planned when short)"


# ---------------------------------------------------------------- password

def test_password_hash_replaces_the_token_and_stays_secret() -> None:
    plan = run(fresh(), jupyter_password_hash=HASH)
    config = json.loads(written(plan, CONFIG))
    assert config["PasswordIdentityProvider"] == {
        "allow_password_change": False, "hashed_password": HASH, "password_required": True,
        "token": ""}
    assert not [c for c in plan.changes if c.resource.startswith("token ")]
    argv = docker_run_argv(written(plan, SCRIPT))
    assert argv == expected_run(spec_of(plan), token=False)
    assert "JUPYTER_TOKEN" not in written(plan, SCRIPT).decode()
    [change] = [c for c in plan.changes if c.resource == f"file {CONFIG}"]
    assert change.diff.secret
    assert HASH not in everything_shown(plan) and "5tmfvE2LrjDV3PfuZLXXUQ" not in \
        everything_shown(plan)


@pytest.mark.parametrize("value", ["correct horse", "sha1:abc:def", "argon2:",
                                   HASH.replace("argon2:", ""), HASH.rsplit("$", 1)[0]])
def test_a_password_hash_that_is_not_argon2_is_refused_without_showing_it(value: str) -> None:
    ops, exc = ops_until_failure("jupyter", system_for("ubuntu2404"), fresh(),
                                 vars={"gpu_image": IMAGE, "jupyter_password_hash": value})
    assert ops == []
    if value.startswith("argon2:"):
        # one that does start so is not told it must (the message contradicted itself)
        assert exc.message == ("gpu-01: role jupyter: jupyter_password_hash: starts with "
                               "'argon2:' but is not a whole argon2 hash as produced by "
                               "jupyter_server.auth.passwd() (argon2:$argon2id$v=..$m=..,t=..,"
                               "p=..$SALT$HASH)")
    else:
        assert exc.message == ("gpu-01: role jupyter: jupyter_password_hash: is not an argon2 "
                               "hash as produced by jupyter_server.auth.passwd() (it must start "
                               "with 'argon2:')")
    assert value not in str(exc) or value == "argon2:"
    assert "passwd()" in exc.hint


# ---------------------------------------------------------------- binding and TLS

@pytest.mark.parametrize("address", ["0.0.0.0", "10.0.0.5", "::"])
def test_a_non_loopback_bind_without_tls_is_refused(address: str) -> None:
    ops, exc = ops_until_failure("jupyter", system_for("debian12", init="sysvinit"), fresh(),
                                 vars={"gpu_image": IMAGE, "jupyter_bind_address": address})
    assert ops == []
    assert exc.message == (f"gpu-01: role jupyter: jupyter_bind_address={address!r}: "
                           "publishing Jupyter on a non-loopback address needs TLS")
    assert "jupyter_tls_cert and jupyter_tls_key" in exc.hint


def test_a_non_loopback_bind_with_tls_mounts_the_pair_read_only() -> None:
    plan = run(fresh(), jupyter_bind_address="10.0.0.5", jupyter_tls_cert="/etc/ssl/lab.crt",
               jupyter_tls_key="/etc/ssl/private/lab.key")
    app = json.loads(written(plan, CONFIG))["ServerApp"]
    assert (app["certfile"], app["keyfile"]) == ("/etc/gpuprov/tls/cert.pem",
                                                 "/etc/gpuprov/tls/key.pem")
    assert app["allow_remote_access"] is True, "served under the host's own name"
    assert docker_run_argv(written(plan, SCRIPT)) == expected_run(
        spec_of(plan), publish=("10.0.0.5:8888:8888",),
        extra=("-v", "/etc/ssl/lab.crt:/etc/gpuprov/tls/cert.pem:ro",
               "-v", "/etc/ssl/private/lab.key:/etc/gpuprov/tls/key.pem:ro"))


def test_half_a_tls_pair_is_refused() -> None:
    with pytest.raises(RoleFailed, match=r"jupyter_tls_key='' \(set at .*/roles/jupyter/"
                                         r"defaults.yml:\d+\): must be set together with "
                                         "jupyter_tls_cert"):
        run(fresh(), jupyter_tls_cert="/etc/ssl/lab.crt")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("jupyter_bind_address", "localhost", "must be an IP address"),
    ("jupyter_port", "http", "must be a TCP port number"),
    ("jupyter_user", "jovyan", "must be numeric uid:gid like 1000:100"),
    ("jupyter_user", "0:100", "must not be root"),
    ("gpu_devices", "first", 'gpu_devices must be "all" or GPU indexes/UUIDs'),
    ("data_dir", "data", "must be an absolute path"),
    ("jupyter_command", [], "must be a non-empty list of words"),
    ("jupyter_enabled", "maybe", "must be true or false"),
])
def test_bad_variables_are_refused_naming_them(var: str, value: object, message: str) -> None:
    ops, exc = ops_until_failure("jupyter", system_for("rhel9"), fresh(),
                                 vars={"gpu_image": IMAGE, var: value})
    assert ops == []
    assert exc.message.startswith(f"gpu-01: role jupyter: {var}={value!r}: {message}")


# ---------------------------------------------------------------- the running container

@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_container_not_running_is_restarted(distro: str, init: str) -> None:
    facts = converged(distro, init)
    facts[CONTAINER] = running(spec_of(run(fresh(init), distro, init)),
                               "127.0.0.1:8888->8888/tcp", status="exited")
    plan = run(facts, distro, init)
    changes = plan.changes
    if init == "sysvinit":
        # the service runs when its container does (what the init script's status
        # says): it is started first, and the container op reads the container again
        service_start, *changes = changes
        assert [s.command.display() for s in service_start.steps] == [f"service {NAME} start"]
        assert ContainerState in service_start.invalidates
    assert [s.command.display() for c in changes for s in c.steps] == [f"{SCRIPT} restart"]
    [change] = changes
    assert (change.action, change.summary) == ("recreate", f"{NAME} is exited")
    assert change.diff.before.startswith("state: exited\n")


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_a_converged_host_costs_one_docker_call(distro: str, init: str) -> None:
    """The service, the container and the image (gpu_image) share one docker inspect;
    no init script status, which would start docker once more."""
    plan = run(converged(distro, init), distro, init)
    assert plan.changes == []
    facts = [f for p in plan.ops for f in p.op.facts()] + [DockerImage(IMAGE)]
    script, _ = gather_script(list(dict.fromkeys(facts)))
    # every docker word but `command -v docker` (is it installed?) is that one call
    assert script.count("docker ") - script.count("command -v docker ") == 1
    assert "docker inspect --format" in script
    assert '"/etc/init.d/$n" status' not in script


def test_container_published_on_every_address_is_recreated() -> None:
    facts = converged()
    spec = spec_of(run(fresh()))
    facts[CONTAINER] = running(spec, "0.0.0.0:8888->8888/tcp")
    plan = run(facts)
    assert commands(plan) == [f"{SCRIPT} restart"]
    assert plan.changes[0].summary == (f"{NAME} publishes 0.0.0.0:8888, wanted 127.0.0.1:8888")
    assert plan.changes[0].diff.unified().splitlines()[-2:] == [
        "-publishes: 0.0.0.0:8888->8888/tcp", "+publishes: 127.0.0.1:8888->8888/tcp"]


def test_changed_spec_rewrites_the_script_and_recreates_the_container() -> None:
    facts = converged()
    plan = run(facts, gpu_devices="0")
    assert commands(plan) == [write_cmd(SCRIPT, mode="0755"), f"{SCRIPT} restart"]
    script, container = plan.changes
    assert script.notify == ("restart jupyter",)
    old, new = spec_of(run(fresh())), spec_of(plan)
    assert container.summary == f"{NAME} was started from spec {old[:12]}, wanted {new[:12]}"


def test_a_container_started_by_hand_is_replaced() -> None:
    facts = converged()
    facts[CONTAINER] = ContainerStatus("ok", ContainerInfo(True, "running", (),
                                                           frozenset({"127.0.0.1:8888->8888/tcp"})))
    plan = run(facts)
    assert plan.changes[0].summary == (f"{NAME} has no gpuprov.spec label (not started by "
                                       "gpuprov)")


def test_docker_daemon_down_is_unknown_not_a_crash() -> None:
    facts = converged()
    facts[CONTAINER] = ContainerStatus("down", message="Cannot connect to the Docker daemon")
    [change] = run(facts, check=True).changes
    assert change.unknown == ("the docker daemon does not answer (Cannot connect to the Docker "
                              "daemon): depends on docker running")


# ---------------------------------------------------------------- SSH into the container

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFd1Y2tlZCBrZXkgZm9yIHRlc3RzIG9ubHkgISEh alice@laptop"


SSH_FILES = {FileState("/etc/gpuprov/jupyter/ssh", content=False): None,
             FileState("/etc/gpuprov/jupyter/ssh/authorized_keys"): None,
             FileState("/etc/gpuprov/jupyter/ssh/00-gpuprov-container.conf"): None}


def test_container_ssh_publishes_22_and_mounts_the_hardened_config_and_keys() -> None:
    facts = fresh()
    plan = run({**facts, **SSH_FILES}, container_ssh=True, container_ssh_authorized_keys=[KEY])
    assert written(plan, "/etc/gpuprov/jupyter/ssh/authorized_keys").decode().endswith(
        KEY + "\n")
    assert written(plan, "/etc/gpuprov/jupyter/ssh/00-gpuprov-container.conf").decode() \
        .endswith("AuthorizedKeysFile /etc/ssh/gpuprov/authorized_keys\n")
    dropin = "/etc/ssh/sshd_config.d/00-gpuprov.conf"
    assert docker_run_argv(written(plan, SCRIPT)) == expected_run(
        spec_of(plan), publish=("127.0.0.1:8888:8888", "127.0.0.1:2222:22"),
        extra=("--mount", f"type=bind,source={dropin},target={dropin},readonly",
               "-v", "/etc/gpuprov/jupyter/ssh/00-gpuprov-container.conf:"
                     "/etc/ssh/sshd_config.d/00-gpuprov-container.conf:ro",
               "-v", "/etc/gpuprov/jupyter/ssh/authorized_keys:"
                     "/etc/ssh/gpuprov/authorized_keys:ro"))
    container = next(p.op for p in plan.ops if p.op.label == f"container {NAME}")
    assert container.ports == {"127.0.0.1:8888->8888/tcp", "127.0.0.1:2222->22/tcp"}


def test_container_ssh_mounts_the_drop_in_sshd_hardening_writes() -> None:
    # one owner of the path: sshd_hardening's defaults, or the inventory
    ssh_vars = {"container_ssh": True, "container_ssh_authorized_keys": [KEY]}
    other = "/etc/ssh/sshd_config.d/10-lab.conf"
    plan = run({**fresh(), **SSH_FILES}, **ssh_vars, sshd_dropin=other)
    assert f"type=bind,source={other},target={other},readonly" in docker_run_argv(
        written(plan, SCRIPT))
    # alone in its play and not set anywhere: a refusal that says where it comes from
    ops, exc = ops_until_failure("jupyter", system_for("ubuntu2204"), fresh(),
                                 vars={"gpu_image": IMAGE, **ssh_vars})
    assert ops == [] and "sshd_dropin" in exc.message and "is not set" in exc.message
    assert exc.hint is not None and "list the sshd_hardening role in this play" in exc.hint
    # without container_ssh nothing needs it
    alone = plan_role("jupyter", system_for("ubuntu2204"), fresh(), vars={"gpu_image": IMAGE})
    assert "--mount" not in docker_run_argv(written(alone, SCRIPT))


def test_site_playbook_lists_sshd_hardening_with_jupyter_for_its_defaults() -> None:
    site = Path(__file__).resolve().parents[2] / "playbooks" / "site.yml"
    jupyter_play = next(p for p in load_playbook(site) if any(r.name == "jupyter"
                                                             for r in p.roles))
    refs = {r.name: r for r in jupyter_play.roles}
    assert refs["sshd_hardening"].tags == ["never"]    # read, not run twice


@pytest.mark.parametrize(("keys", "message"), [
    ([], "container_ssh_authorized_keys=[]: is empty but container_ssh is true"),
    (["-----BEGIN OPENSSH PRIVATE KEY-----"], "item 1 is not one public key line"),
])
def test_container_ssh_needs_public_keys(keys: list, message: str) -> None:
    ops, exc = ops_until_failure("jupyter", system_for("ubuntu2204"), fresh(),
                                 vars={"gpu_image": IMAGE, "container_ssh": True,
                                       "container_ssh_authorized_keys": keys})
    assert ops == [] and message in exc.message


# ---------------------------------------------------------------- disabled

def test_disabled_on_systemd_stops_disables_and_removes_unit_and_script() -> None:
    facts = converged()
    facts[CONTAINER] = ContainerStatus("ok")    # the service's stop removed it
    plan = run(facts, jupyter_enabled=False)
    assert commands(plan) == ["systemctl disable gpuprov-jupyter",
                              "systemctl stop gpuprov-jupyter",
                              f"rm -f {SCRIPT}", f"rm -f {UNIT}"]
    assert [c.notify for c in plan.changes][-1] == ("reload systemd",)
    assert not [c for c in commands(plan) if "/srv/gpuprov" in c], "data is kept"


def test_disabled_on_sysvinit_removes_the_script_and_its_links() -> None:
    facts = converged("debian12", "sysvinit")
    facts[CONTAINER] = running("0" * 64, "127.0.0.1:8888->8888/tcp")   # one started by hand
    facts[RC_LINKS] = True
    plan = run(facts, "debian12", "sysvinit", jupyter_enabled=False)
    assert commands(plan) == ["service gpuprov-jupyter stop", f"docker rm -f {NAME}",
                              f"rm -f {SCRIPT}", f"rm -f {INIT}",
                              "update-rc.d gpuprov-jupyter remove"]


@pytest.mark.parametrize(("distro", "init"), HOSTS)
def test_disabled_on_a_host_without_jupyter_changes_nothing(distro: str, init: str) -> None:
    facts = fresh(init)
    facts[RC_LINKS] = False
    assert run(facts, distro, init, jupyter_enabled=False).changes == []
    assert run(fresh(init, docker="absent") | {RC_LINKS: False}, distro, init,
               jupyter_enabled="false").changes == []


# ---------------------------------------------------------------- handlers

@pytest.mark.parametrize(("init", "expected"), [
    ("systemd", ["systemctl daemon-reload", "systemctl restart gpuprov-jupyter"]),
    ("sysvinit", ["service gpuprov-jupyter restart"]),
])
def test_restart_handler(init: str, expected: list[str]) -> None:
    facts = {SERVICE: running_service(init), CONTAINER: ContainerStatus("ok")}
    plan = run(facts, "debian12", init, handler="restart jupyter")
    assert plan.commands == expected
    restart = plan.changes[-1]
    assert ContainerState in restart.invalidates
    assert run(facts, "debian12", init, handler="restart jupyter",
               jupyter_enabled=False).changes == []


def test_reload_systemd_handler() -> None:
    assert run({}, handler="reload systemd").commands == ["systemctl daemon-reload"]
    assert run({}, "debian12", "sysvinit", handler="reload systemd").commands == []


# ---------------------------------------------------------------- the script, really run

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
DOUBLE_IMAGE = "ghcr.io/example-lab/pytorch-cuda:2.9.0-cuda12.8"   # in the doubles' registry
DOCKER = f"{shlex.quote(sys.executable)} {DOUBLES / 'bin' / 'docker'}"


@pytest.fixture
def docker_double(tmp_path: Path) -> dict:
    """A `docker` on PATH that is the fleet's docker test double, with a GPU host
    state (driver, toolkit, daemon) in a temp root."""
    from tests.unit.test_doubles import Host

    host = Host(tmp_path / "root")
    host.driver("580.95.05", "580.95.05")
    host.dpkg(nvidia_container_toolkit="1.18.0-1")
    host.write("/usr/bin/nvidia-smi", "")
    host.daemon({"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\nexec {DOCKER} "$@"\n')
    (bin_dir / "docker").chmod(0o755)
    # the group the role makes, as this machine's getent would show it on a host
    (bin_dir / "getent").write_text(f'#!/bin/sh\n[ "$*" = "group {GROUP}" ] && '
                                    f'echo "{GROUP}:x:{GID}:" || exit 2\n')
    (bin_dir / "getent").chmod(0o755)
    env = {**host.env(), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    assert subprocess.run(["docker", "pull", "-q", DOUBLE_IMAGE], env=env,
                          capture_output=True).returncode == 0
    return {"env": env, "host": host, "tmp": tmp_path}


def test_start_script_runs_the_spec_and_mounts_the_token_file_never_its_value(
        docker_double: dict) -> None:
    env, host, tmp = docker_double["env"], docker_double["host"], docker_double["tmp"]
    fake = "f00d" * 16            # a recognisable token: it must show up nowhere
    (tmp / "token").write_text(fake)
    vars = {"gpu_image": DOUBLE_IMAGE, "jupyter_token_file": str(tmp / "token"),
            "gpu_devices": "0"}
    facts = fresh() | {FileState(str(tmp / "token"), content=False, sudo=True): None}
    facts.pop(TOKEN_F)
    plan = run(facts, **vars)
    script = tmp / "gpuprov-jupyter"
    script.write_bytes(written(plan, SCRIPT))

    def sh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(script), *args], env=env, capture_output=True,
                              text=True)

    assert sh("status").returncode == 3
    started = sh("start")
    assert started.returncode == 0, started.stderr
    assert sh("status").stdout == "gpuprov-jupyter is running\n"
    # the fact the container op reads, against the same docker
    script_text, marker = gather_script([CONTAINER])
    out = subprocess.run(["/bin/sh", "-c", script_text], env=env, capture_output=True, text=True)
    state = parse_batch([CONTAINER], out.stdout, marker)[CONTAINER]
    assert state.container.running and state.container.ports == {"127.0.0.1:8888->8888/tcp"}
    container_op = next(p.op for p in plan.ops if p.op.label == f"container {NAME}")
    assert container_op.plan(FactView({CONTAINER: state})) == [], "converged: no drift"
    # start again: same spec, left running (no second docker run)
    calls = lambda: [json.loads(line)["argv"] for line in host.path(  # noqa: E731
        "/var/lib/gpuprov-test-double/docker/calls.log").read_text().splitlines()]
    runs = sum(1 for c in calls() if c[0] == "run")
    assert sh("start").returncode == 0
    assert sum(1 for c in calls() if c[0] == "run") == runs == 1
    # the token: on no command line, nowhere in docker inspect (Env included);
    # the container gets the file, read-only, and where it is
    assert not [c for c in calls() if any(fake in a for a in c)]
    inspect = subprocess.run(["docker", "inspect", NAME], env=env, capture_output=True,
                             text=True)
    assert fake not in inspect.stdout
    info = json.loads(inspect.stdout)[0]
    assert [e for e in info["Config"]["Env"] if e.startswith("JUPYTER_TOKEN")] == [
        "JUPYTER_TOKEN=", "JUPYTER_TOKEN_FILE=/etc/gpuprov/jupyter_token"]
    assert f"{tmp / 'token'}:/etc/gpuprov/jupyter_token:ro" in info["HostConfig"]["Binds"]
    assert info["Config"]["User"] == "1000:100"
    assert info["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    assert (info["HostConfig"]["CapDrop"], info["HostConfig"]["CapAdd"]) == (["ALL"], None)
    assert info["HostConfig"]["GroupAdd"] == [str(GID)], "the host group's gid, looked up"
    assert info["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["0"]
    assert fake not in out.stdout, "the container fact never sees the token"
    # stop removes it
    assert sh("stop").returncode == 0 and sh("status").returncode == 3


def start_with_token(docker_double: dict, token: str) -> subprocess.CompletedProcess[str]:
    """The rendered start script run against the docker double, with this token file."""
    env, tmp = docker_double["env"], docker_double["tmp"]
    (tmp / "token").write_text(token)
    vars = {"gpu_image": DOUBLE_IMAGE, "jupyter_token_file": str(tmp / "token")}
    facts = fresh() | {FileState(str(tmp / "token"), content=False, sudo=True): None}
    script = tmp / "gpuprov-jupyter"
    script.write_bytes(written(run(facts, **vars), SCRIPT))
    return subprocess.run(["/bin/sh", str(script), "start"], env=env, capture_output=True,
                          text=True)


def test_start_script_fails_with_the_reason_when_the_container_dies_at_once(
        docker_double: dict) -> None:
    tmp = docker_double["tmp"]
    # this docker's containers die right after `run` (a command missing from the image)
    (tmp / "bin" / "docker").write_text(
        f'#!/bin/sh\n{DOCKER} "$@"\nrc=$?\n'
        f'[ "$1" = run ] && {DOCKER} stop {NAME} >/dev/null\nexit $rc\n')
    result = start_with_token(docker_double, "ab" * 32)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{NAME}: the container stopped right after it started; "
                                    "its last output:\n")


@pytest.mark.parametrize("token", ["", "ab" * 32 + "\n", "ab" * 16])
def test_start_script_refuses_a_token_file_jupyter_would_misread(docker_double: dict,
                                                                 token: str) -> None:
    # empty, short, or with the newline jupyter_server would keep as part of the token
    tmp = docker_double["tmp"]
    result = start_with_token(docker_double, token)
    assert result.returncode == 1
    assert result.stderr == (f"gpuprov-jupyter: no token of 64 hex characters in "
                             f"{tmp / 'token'}; run gpuprov apply\n")


def test_start_script_refuses_to_start_without_the_group(docker_double: dict) -> None:
    (docker_double["tmp"] / "bin" / "getent").write_text("#!/bin/sh\nexit 2\n")
    result = start_with_token(docker_double, "ab" * 32)
    assert result.returncode == 1
    assert result.stderr == f"gpuprov-jupyter: no group {GROUP} on this host; run gpuprov apply\n"


HOSTILE = "/srv/lab token;touch ${HOME}pwned;$(id)`id`"


def test_a_hostile_token_file_path_stays_one_quoted_word(docker_double: dict) -> None:
    # spaces, ;, $(...) and backquotes in jupyter_token_file: the root start script
    # must treat it as one path, never as shell
    plan = run(fresh() | {FileState(HOSTILE, content=False, sudo=True): None},
               jupyter_token_file=HOSTILE)
    script = written(plan, SCRIPT).decode()
    assert f"\nTOKEN_FILE={shlex.quote(HOSTILE)}\n" in script
    assert f"{HOSTILE}:/etc/gpuprov/jupyter_token:ro" in docker_run_argv(written(plan, SCRIPT))
    [token] = [c for c in plan.changes if c.resource == f"token {HOSTILE}"]
    assert f"mv -fT \"$t\" {shlex.quote(HOSTILE)}" in token.steps[0].command.shell()
    # really run: the message names the path as is, and nothing was executed
    tmp = docker_double["tmp"]
    env = {**docker_double["env"], "HOME": str(tmp) + "/"}
    path = tmp / "gpuprov-jupyter"
    path.write_bytes(written(plan, SCRIPT))
    result = subprocess.run(["/bin/sh", str(path), "start"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert result.stderr == (f"gpuprov-jupyter: no token of 64 hex characters in {HOSTILE}; "
                             "run gpuprov apply\n")
    assert not (tmp / "pwned").exists()
