"""sshd hardening checked by effect (issue 14), against canned facts per distro:
a line that wins over gpuprov's drop-in (a file read first, a Match block for
the operator's login) is drift naming file:line; apply fails on it
(sshd_conflicts: fail) or comments it out inside the armed change
(sshd_conflicts: comment); with the files in place, `sshd -T` must show
every setting. Plus the two facts (SshdEffective, SshdConfigFiles): their
parsers and their shell run against a fake /etc/ssh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpuprov.engine.context import RoleFailed
from gpuprov.facts.sshd import ConfigFile, EffectiveSshd, SshdConfigFiles, SshdEffective
from tests.unit.role_facts import ALL_DISTROS, file_info
from tests.unit.role_harness import role_module
from tests.unit.sshd_samples import (
    DEBIAN_MAIN,
    FOREIGN_00,
    RHEL8_MAIN_BODY,
    RHEL8_MAIN_HEAD,
    RHEL9_MAIN,
    sshd_t,
)
from tests.unit.test_role_sshd_hardening import (
    DROPIN,
    EXPECTED,
    HARDENED_KEYS,
    ROOT,
    SSHD_CONFIG,
    plan,
    sshd_config,
)

conflicts = role_module("sshd_hardening", "conflicts")
FOREIGN, FOREIGN_TEXT = FOREIGN_00


def converged(distro: str, **kwargs: Any) -> Any:
    """A hardened host (drop-in, keys, moduli as wanted), plus kwargs."""
    kwargs.setdefault("dropin", EXPECTED[distro])
    return plan(distro, host_keys=HARDENED_KEYS, weak_moduli=0, **kwargs)


def main_with(distro: str, tail: str) -> Any:
    main = RHEL9_MAIN if distro == "rhel9" else DEBIAN_MAIN
    return file_info(main + tail, mode="0600" if distro == "rhel9" else "0644")


def main_line(distro: str, offset: int) -> int:
    """The number of the tail's line `offset` (1: its first) in a main file
    made by main_with()."""
    main = RHEL9_MAIN if distro == "rhel9" else DEBIAN_MAIN
    return len(main.splitlines()) + offset


# ================================================================== the stock files lose

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_stock_dropins_sorting_after_gpuprovs_are_no_conflict(distro: str) -> None:
    # 50-cloud-init.conf (PasswordAuthentication yes), RHEL's crypto policy: read later
    assert converged(distro).changes == []


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_a_line_with_the_same_value_read_first_is_no_conflict(distro: str) -> None:
    same = ("/etc/ssh/sshd_config.d/00-aaa.conf", "PasswordAuthentication no\nX11Forwarding no\n")
    assert converged(distro, extra_files=(same,)).changes == []


# ================================================================== sshd_conflicts: fail

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_a_foreign_dropin_read_first_is_drift_naming_file_and_line(distro: str) -> None:
    effective = sshd_t(EXPECTED[distro], overrides={"PasswordAuthentication": "yes"})
    p = converged(distro, extra_files=(FOREIGN_00,), effective=effective, check=True)
    [change] = p.changes
    assert change.resource == f"file {FOREIGN}"
    assert change.summary == (f"line 2: `PasswordAuthentication yes` overrides "
                              f"`PasswordAuthentication no` of {DROPIN}")
    # check mode (drift-check): unknown, saying apply stops there; no step at all
    assert change.unknown is not None and change.unknown.endswith("apply would stop here")
    assert f"{FOREIGN}:2:" in change.unknown
    assert change.steps == []


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_apply_fails_naming_the_line_and_changes_nothing(distro: str) -> None:
    # a stock host: the drop-in is not written either (the whole task is refused)
    p = plan(distro, extra_files=(FOREIGN_00,))
    [(label, error)] = p.failed
    assert label == "sshd config (lockout-safe)"
    assert (f"{FOREIGN}:2: `PasswordAuthentication yes` overrides `PasswordAuthentication no` "
            f"of {DROPIN} (sshd keeps the first value it reads); remove the line, or set "
            "sshd_conflicts: comment") in error
    assert [c.resource for c in p.changes][0] == f"file {FOREIGN}"


def test_several_lines_of_one_file_are_one_change() -> None:
    text = "PasswordAuthentication yes\nPermitRootLogin yes\nMaxAuthTries 3\n"
    p = converged("debian12", extra_files=(("/etc/ssh/sshd_config.d/00-aaa.conf", text),))
    [change] = p.changes
    assert change.summary.count("line ") == 2
    assert "line 1:" in change.summary and "line 2: `PermitRootLogin yes`" in change.summary


def test_a_match_block_for_the_login_overrides() -> None:
    tail = "\nMatch Address 10.213.0.0/16\n    PasswordAuthentication yes\n"
    p = converged("ubuntu2404", main=main_with("ubuntu2404", tail))
    [change] = p.changes
    assert change.resource == f"file {SSHD_CONFIG}"
    assert change.summary.startswith(
        f"line {main_line('ubuntu2404', 3)}: `PasswordAuthentication yes` overrides")


@pytest.mark.parametrize(("match", "overrides"), [
    ("Match Address 10.213.0.0/16", True),          # the controller's address (sshd_t)
    ("Match Address 192.168.0.0/16", False),
    ("Match Address 10.213.0.*,!10.213.0.1", False),
    ("Match User admin", True),
    ("Match User alice,bob", False),
    ("Match User * Address 172.16.0.0/12", False),
    ("Match LocalPort 22", True),
    ("Match LocalPort 2222", False),
    ("Match LocalAddress 10.213.0.11", True),
    ("Match Group sftponly", True),                 # cannot be told from here: shown
    ("Match all", True),
])
def test_match_criteria_against_the_operators_login(match: str, overrides: bool) -> None:
    p = converged("debian12", main=main_with("debian12", f"\n{match}\n  X11Forwarding yes\n"))
    assert bool(p.changes) is overrides, match


def test_a_match_block_ends_with_its_file() -> None:
    # a Match in 00-aaa.conf does not reach gpuprov's file, nor sshd_config after it
    text = "Match User nobody\n  PasswordAuthentication yes\n"
    assert converged("debian12", extra_files=(("/etc/ssh/sshd_config.d/00-aaa.conf", text),)
                     ).changes == []


def test_an_include_inside_a_match_takes_the_match() -> None:
    tail = "\nMatch User admin\n  Include /etc/ssh/admin.d/*.conf\n"
    extra = (("/etc/ssh/admin.d/x.conf", "AllowAgentForwarding yes\n"),)
    p = converged("debian12", main=main_with("debian12", tail), extra_files=extra)
    [change] = p.changes
    assert change.resource == "file /etc/ssh/admin.d/x.conf"
    tail = "\nMatch User alice\n  Include /etc/ssh/admin.d/*.conf\n"
    assert converged("debian12", main=main_with("debian12", tail), extra_files=extra
                     ).changes == []


def test_allow_users_lines_add_up_wherever_they_are() -> None:
    late = ("/etc/ssh/sshd_config.d/90-late.conf", "AllowUsers mallory\n")
    vars = {"ssh_allow_users": ["admin"]}
    dropin = EXPECTED["debian12"].replace("LogLevel VERBOSE\n",
                                          "LogLevel VERBOSE\nAllowUsers admin\n")
    assert converged("debian12", dropin=dropin, vars=vars).changes == []
    p = converged("debian12", dropin=dropin, vars=vars, extra_files=(late,))
    assert [c.resource for c in p.changes] == [f"file {late[0]}"]


# ================================================================== sshd_conflicts: comment

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_comment_out_inside_the_armed_change(distro: str) -> None:
    p = converged(distro, extra_files=(FOREIGN_00,), vars={"sshd_conflicts": "comment"})
    assert [(c.resource, c.action) for c in p.changes] == [
        (f"file {FOREIGN}", "update"), ("service sshd", "reload")]
    fix, final = p.changes
    assert fix.summary == f"comment out line 2 (overrode {DROPIN}; backup beside it)"
    # the first step arms the revert, saving the foreign file first
    armed = sshd_config.armed_revert(final.steps[1].command, 120)
    assert fix.steps[0].command.shell() == armed.prepare_script([FOREIGN])
    [write] = [s for s in fix.steps if s.stdin is not None]
    assert write.stdin.decode() == (
        "# left by an old image\n"
        f"#PasswordAuthentication yes  # gpuprov (sshd_conflicts: comment): overrode {DROPIN}\n"
        "X11Forwarding no\n")
    shown = write.command.display()
    assert "cp -p /etc/ssh/sshd_config.d/00-aaa.conf" in shown and ")~" in shown   # the backup
    assert "chown -h root:root" in shown and "chmod 0644" in shown     # kept as they were
    assert fix.rollback == final.rollback and fix.rollback
    assert "-PasswordAuthentication yes" in fix.diff.unified()
    assert p.failed == []


def test_comment_out_a_line_of_a_file_this_change_writes_anyway() -> None:
    # RHEL 8-style sshd_config without Include (rewritten) with a Match for everyone
    body = RHEL8_MAIN_BODY + "Match all\n  PermitRootLogin yes\n"
    p = converged("rhel9", main=file_info(RHEL8_MAIN_HEAD + body, mode="0600"),
                  vars={"sshd_conflicts": "comment"})
    assert [c.resource for c in p.changes] == [f"file {SSHD_CONFIG}", "service sshd"]
    [write] = [s for s in p.changes[0].steps if s.stdin is not None]
    new = write.stdin.decode().splitlines()
    assert "Include /etc/ssh/sshd_config.d/*.conf" in new
    assert "#  PermitRootLogin yes  # gpuprov (sshd_conflicts: comment): overrode " \
           f"{DROPIN}" in new
    assert "PermitRootLogin yes" in new   # the global one: read after the drop-in, loses


def test_sshd_conflicts_must_be_fail_or_comment() -> None:
    with pytest.raises(RoleFailed, match=r"sshd_conflicts='rename': must be fail or comment"):
        plan("debian12", vars={"sshd_conflicts": "rename"})


# ================================================================== sshd -T

@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_sshd_t_showing_another_value_with_no_line_found_fails(distro: str) -> None:
    effective = sshd_t(EXPECTED[distro], overrides={"MaxAuthTries": "6", "LogLevel": "INFO"})
    p = converged(distro, effective=effective)
    [change] = p.changes
    assert change.resource == "service sshd"
    assert change.summary == ("not in effect (sshd -T): MaxAuthTries is `6`, wanted `3`; "
                              "LogLevel is `INFO`, wanted `VERBOSE`")
    [(_, error)] = p.failed
    assert "sshd -T for admin from 10.213.0.1 shows MaxAuthTries is `6`" in error
    assert "no line of sshd_config or its Include files was found that sets it" in error


def test_sshd_t_spelling_is_not_drift() -> None:
    # root: prohibit-password, which sshd -T prints as without-password; case; times
    p = converged("ubuntu2404", session=ROOT,
                  dropin=EXPECTED["ubuntu2404"].replace("PermitRootLogin no",
                                                        "PermitRootLogin prohibit-password"),
                  effective=None)
    assert p.changes == []
    effective = sshd_t(EXPECTED["debian12"], overrides={"LogLevel": "verbose",
                                                        "LoginGraceTime": "30s"})
    assert converged("debian12", effective=effective).changes == []


def test_sshd_t_failing_leaves_the_files_to_tell() -> None:
    f_none = "@@connection admin 10.213.0.1 10.213.0.11 22\n/etc/ssh/sshd_config line 3: bad\n"
    assert SshdEffective("admin").process(f_none, 255) is None
    p = converged("debian12", effective=f_none.replace("line 3: bad", ""))
    # exit 0 but nothing printed: nothing to compare, nothing reported
    assert p.changes == []


# ================================================================== the facts

def test_sshd_effective_parses_keywords_and_the_login() -> None:
    out = sshd_t("PermitRootLogin prohibit-password\nAllowUsers admin alice\nLogLevel VERBOSE\n")
    got = SshdEffective("admin").process(out, 0)
    assert got == EffectiveSshd(got.values, "admin", "10.213.0.1", "10.213.0.11", "22")
    assert got.values["permitrootlogin"] == "without-password"
    assert got.values["allowusers"] == "admin alice"
    assert got.values["loglevel"] == "VERBOSE" and got.values["port"] == "22"
    assert SshdEffective("admin").process("port 22\n", 0) is None   # no connection line
    assert SshdEffective.sudo is True


def _fake_bin(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_sshd_effective_probe_takes_the_login_from_ssh_connection(tmp_path: Path) -> None:
    _fake_bin(tmp_path, "sshd", 'echo "args $*"; echo "passwordauthentication no"\n')
    script = SshdEffective("ad min").command().shell()
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    # run as a child of a shell that has SSH_CONNECTION, as sudo's is
    parent = {**env, "SSH_CONNECTION": "10.213.0.1 50122 10.213.0.11 22"}
    child = 'env -u SSH_CONNECTION /bin/sh -c "$0"; exit $?'   # not exec'd: the parent stays
    res = subprocess.run(["/bin/sh", "-c", child, script], capture_output=True, text=True,
                         timeout=30, env=parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == [
        "@@connection ad min 10.213.0.1 10.213.0.11 22",
        "args -T -C user=ad min,host=10.213.0.1,addr=10.213.0.1,laddr=10.213.0.11,lport=22"]
    # no SSH login anywhere above: a connection from the host itself
    clean = {k: v for k, v in env.items() if k != "SSH_CONNECTION"}
    res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                         env=clean)
    if "SSH_CONNECTION" not in os.environ:   # (a test run inside an SSH session has one)
        assert "addr=127.0.0.1,laddr=127.0.0.1,lport=22" in res.stdout


def test_sshd_config_files_probe_follows_includes_in_order(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "ssh"
    (etc / "sshd_config.d").mkdir(parents=True)
    (etc / "extra").mkdir()
    (etc / "sshd_config").write_text("Include sshd_config.d/*.conf\nPort 22\n"
                                     "Match User x\n  include extra/*.conf\n")
    (etc / "sshd_config.d" / "50-b.conf").write_text("X11Forwarding yes\n")
    # an Include back to the main file (a loop: read once), no final newline
    (etc / "sshd_config.d" / "00-a.conf").write_text(f"Include {etc}/sshd_config\n"
                                                     "PasswordAuthentication yes")
    (etc / "sshd_config.d" / "skip.txt").write_text("never read\n")
    (etc / "extra" / "m.conf").write_text("AllowTcpForwarding yes\n")
    script = SshdConfigFiles().command().shell().replace("/etc/ssh", str(etc))
    res = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    files = SshdConfigFiles().process(res.stdout, 0)
    assert [f.path for f in files] == [str(etc / "sshd_config"),
                                       str(etc / "sshd_config.d" / "00-a.conf"),
                                       str(etc / "sshd_config.d" / "50-b.conf"),
                                       str(etc / "extra" / "m.conf")]
    assert files[1].lines == (f"Include {etc}/sshd_config", "PasswordAuthentication yes")
    assert files[0].mode.isdigit() and len(files[0].mode) == 4


def test_read_order_expands_includes_in_place() -> None:
    files = {
        "/etc/ssh/sshd_config": ["# c", "X11Forwarding yes",
                                 "Include /etc/ssh/sshd_config.d/*.conf", "Port 22"],
        "/etc/ssh/sshd_config.d/10-b.conf": ["LogLevel INFO"],
        "/etc/ssh/sshd_config.d/00-a.conf": ["Match User x", "LogLevel DEBUG"],
        "/etc/ssh/sshd_config.d/sub/00-c.conf": ["LogLevel QUIET"],   # * stops at a '/'
    }
    got = [(ln.path.rsplit("/", 1)[1], ln.number, ln.keyword, ln.value, ln.match)
           for ln in conflicts.read_order(files, "/etc/ssh/sshd_config")]
    assert got == [("sshd_config", 2, "x11forwarding", "yes", None),
                   ("00-a.conf", 2, "loglevel", "DEBUG", "Match User x"),
                   ("10-b.conf", 1, "loglevel", "INFO", None),
                   ("sshd_config", 4, "port", "22", None)]


def test_config_file_fact_default_and_equality() -> None:
    assert SshdConfigFiles() == SshdConfigFiles("/etc/ssh/sshd_config")
    assert SshdConfigFiles.sudo is True
    out = "@@file root root 644 /etc/ssh/sshd_config\n|Port 22\n||x\n"
    assert SshdConfigFiles().process(out, 0) == (
        ConfigFile("/etc/ssh/sshd_config", "root", "root", "0644", ("Port 22", "|x")),)


@pytest.mark.parametrize("distro", ALL_DISTROS)
def test_after_commenting_out_the_recheck_shows_no_drift(distro: str) -> None:
    """What the engine re-reads after the change (the final change invalidates
    both facts): the commented file and `sshd -T` with gpuprov's value."""
    p = converged(distro, extra_files=(FOREIGN_00,), vars={"sshd_conflicts": "comment"})
    [write] = [s for s in p.changes[0].steps if s.stdin is not None]
    final = p.changes[-1]
    assert {SshdConfigFiles, SshdEffective} <= set(final.invalidates or ())
    after = converged(distro, extra_files=((FOREIGN, write.stdin.decode()),),
                      vars={"sshd_conflicts": "comment"})
    assert after.changes == []
