"""file/template/absent/directory/line: canned FileState -> exact Changes,
and the write step run for real by /bin/sh in a tmp directory."""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import signal
import subprocess
import time

import pytest

from gpuprov.command import MASK, Secret
from gpuprov.facts.base import FactView, gather_script, parse_batch
from gpuprov.facts.files import FileInfo, FileState
from gpuprov.ops.base import Change, Diff
from gpuprov.ops.file_plan import FileOpError, NoteDiff, file_mode
from gpuprov.ops.files import absent, directory, file, line, template
from tests.unit.shell_helpers import without_upload_check

TRAP = "t= && trap 'rm -f \"$t\"' EXIT && trap 'exit 143' HUP INT TERM PIPE"


def write_cmd(directory: str, target: str, owner: str = "root:root", mode: str = "0644",
              middle: str = "") -> str:
    """The expected write step, spelled out once (paths already quoted)."""
    return (f"{TRAP} && t=$(mktemp -u {directory}) "
            f"&& (umask 077 && set -C && : >\"$t\") && cat >\"$t\" && chown -h {owner} \"$t\" "
            f"&& chmod {mode} \"$t\""
            f"{middle} && mv -fT \"$t\" {target} && trap - EXIT")


def info(content: bytes | None = b"", *, type: str = "file", owner: str = "root",
         group: str = "root", mode: str = "0644", uid: int = 0, gid: int = 0,
         sha256: str | None = None, link_target: str | None = None) -> FileInfo:
    if sha256 is None and content is not None and type == "file":
        sha256 = hashlib.sha256(content).hexdigest()
    return FileInfo(type=type, owner=owner, group=group, mode=mode,
                    size=len(content or b""), uid=uid, gid=gid, sha256=sha256,
                    content=content if type == "file" else None, link_target=link_target)


def plan(op, value: FileInfo | None) -> list[Change]:
    return op.plan(FactView({op.fact: value}))


# -- file: create / update / no-op ---------------------------------------------

def test_create() -> None:
    op = file("/etc/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\n",
              notify="rebuild initramfs")
    [change] = plan(op, None)
    assert (change.resource, change.action, change.summary) == (
        "file /etc/modprobe.d/blacklist-nouveau.conf", "create",
        "create (18 bytes, root:root 0644)")
    [step] = change.steps
    assert without_upload_check(step.command.shell()) == \
        write_cmd("/etc/modprobe.d/.gpuprov-XXXXXX",
                                             "/etc/modprobe.d/blacklist-nouveau.conf")
    assert step.stdin == b"blacklist nouveau\n" and step.sudo
    assert change.diff == Diff("/etc/modprobe.d/blacklist-nouveau.conf", None,
                               "blacklist nouveau\n")
    assert change.notify == ("rebuild initramfs",)
    assert change.invalidates == (FileState.at("/etc/modprobe.d/blacklist-nouveau.conf"),)
    assert op.facts() == [FileState("/etc/modprobe.d/blacklist-nouveau.conf")]


def test_no_change() -> None:
    assert plan(file("/etc/x.conf", "a\n"), info(b"a\n")) == []
    # numeric ids in the role match the names on the host
    assert plan(file("/etc/x.conf", "a\n", owner="0", group="0"), info(b"a\n")) == []


def test_update_content() -> None:
    [change] = plan(file("/etc/x.conf", "a\nb\n"), info(b"a\n"))
    assert (change.action, change.summary) == ("update", "update content")
    assert without_upload_check(change.steps[0].command.shell()) == \
        write_cmd("/etc/.gpuprov-XXXXXX", "/etc/x.conf")
    assert change.diff is not None
    assert change.diff.unified() == "--- /etc/x.conf\n+++ /etc/x.conf\n@@ -1 +1,2 @@\n a\n+b\n"


def test_missing_final_newline_is_a_difference() -> None:
    [change] = plan(file("/etc/x.conf", b"a"), info(b"a\n"))
    assert change.steps[0].stdin == b"a"
    assert "\\ No newline at end of file" in change.diff.unified()


def test_paths_with_spaces_and_quotes_are_quoted() -> None:
    [change] = plan(file("/srv/my dir/it's.conf", "x"), None)
    assert without_upload_check(change.steps[0].command.shell()) == write_cmd(
        "'/srv/my dir/.gpuprov-XXXXXX'", """'/srv/my dir/it'"'"'s.conf'""")


# -- owner / mode only -----------------------------------------------------------

def test_mode_only() -> None:
    [change] = plan(file("/etc/token", "t", mode="0600"), info(b"t"))
    assert (change.action, change.summary) == ("update", "mode 0644 -> 0600")
    [step] = change.steps
    assert without_upload_check(step.command.shell()) == "chmod 0600 -- /etc/token"
    assert step.stdin is None
    assert change.diff == NoteDiff("/etc/token (mode 0644 -> 0600)", note="content unchanged")
    assert change.diff.unified() == (
        "--- /etc/token (mode 0644 -> 0600)\n+++ /etc/token (mode 0644 -> 0600)\n"
        "content unchanged\n")


def test_owner_only() -> None:
    [change] = plan(file("/etc/x", "t", owner="jupyter"), info(b"t"))
    assert change.summary == "owner root -> jupyter"
    assert without_upload_check(change.steps[0].command.shell()) == \
        "chown -h jupyter:root -- /etc/x"


def test_owner_group_mode() -> None:
    [change] = plan(file("/etc/x", "t", owner="a", group="b", mode="0640"), info(b"t"))
    assert change.summary == "owner root -> a; group root -> b; mode 0644 -> 0640"
    assert without_upload_check(change.steps[0].command.shell()) == \
        "chown -h a:b -- /etc/x && chmod 0640 -- /etc/x"


def test_content_and_mode() -> None:
    [change] = plan(file("/etc/x", "new\n", mode="0600"), info(b"old\n"))
    assert change.summary == "update content; mode 0644 -> 0600"
    assert change.diff.label == "/etc/x (mode 0644 -> 0600)"
    assert without_upload_check(change.steps[0].command.shell()) == \
        write_cmd("/etc/.gpuprov-XXXXXX", "/etc/x",
                                                        mode="0600")


# -- validate, backup --------------------------------------------------------------

def test_validate() -> None:
    op = file("/etc/ssh/sshd_config.d/50-gpuprov.conf", "PasswordAuthentication no\n",
              validate="sshd -t -f {}", notify=("reload sshd",))
    [change] = plan(op, None)
    middle = (' && { sshd -t -f "$t" || { echo \'gpuprov: validation failed, '
              "/etc/ssh/sshd_config.d/50-gpuprov.conf left unchanged' >&2; exit 1; }; } >&2")
    assert without_upload_check(change.steps[0].command.shell()) == write_cmd(
        "/etc/ssh/sshd_config.d/.gpuprov-XXXXXX", "/etc/ssh/sshd_config.d/50-gpuprov.conf",
        middle=middle)
    assert op.fact.sudo  # /etc/ssh is read as root


def test_validate_needs_placeholder() -> None:
    with pytest.raises(ValueError, match=r"\{\}"):
        file("/etc/x", "a", validate="sshd -t")


def test_backup_only_when_there_is_an_old_file() -> None:
    op = file("/etc/x y", "new", backup=True)
    [change] = plan(op, info(b"old"))
    backup = " && cp -p '/etc/x y' '/etc/x y'.$$.$(date +%Y-%m-%d@%H:%M:%S)~"
    assert without_upload_check(change.steps[0].command.shell()) == \
        write_cmd("/etc/.gpuprov-XXXXXX", "'/etc/x y'",
                                                         middle=backup)
    [create] = plan(op, None)
    assert "cp -p" not in create.steps[0].command.shell()


# -- secrets, binary, large, odd types ---------------------------------------------

def test_secret_masked_everywhere() -> None:
    op = file("/etc/jupyter/token", Secret("s3cr3t-token"), mode="0600")
    [change] = plan(op, info(b"old-token"))
    assert change.steps[0].stdin == b"s3cr3t-token"
    text = str(change.to_json()) + change.steps[0].command.display() + repr(change)
    assert "s3cr3t" not in text and "old-token" not in text
    assert change.diff.secret and MASK in change.diff.unified()
    assert op.fact.sudo  # a 0600 file is read as root


def test_secret_flag_on_plain_text() -> None:
    [change] = plan(file("/etc/x", "hash=abc", secret=True), None)
    assert "abc" not in change.diff.unified() and "abc" not in str(change.to_json())


def test_binary_diff() -> None:
    old, new = b"\x00\x01", b"\xff\xfe"
    [change] = plan(file("/opt/blob", new), info(old))
    a, b = hashlib.sha256(old).hexdigest()[:12], hashlib.sha256(new).hexdigest()[:12]
    assert change.diff.unified() == (
        f"--- /opt/blob\n+++ /opt/blob\nbinary content differs (sha256 {a} -> {b})\n")


def test_large_file_diff_by_sha() -> None:
    [change] = plan(file("/opt/big", "x"), info(None, sha256="f" * 64))
    assert "content differs, too large to show (sha256 ffffffffffff ->" in change.diff.unified()
    assert change.steps[0].stdin == b"x"


def test_directory_in_the_way() -> None:
    with pytest.raises(FileOpError, match="/etc/x is a directory"):
        plan(file("/etc/x", "a"), info(None, type="directory"))


def test_symlink_replaced() -> None:
    [change] = plan(file("/etc/x", "a"), info(None, type="link", link_target="/opt/x"))
    assert change.summary == "replace symlink -> /opt/x with a file"
    assert change.diff == Diff("/etc/x", None, "a")


# -- argument checks ---------------------------------------------------------------

def test_int_mode_is_a_type_error_with_a_hint() -> None:
    with pytest.raises(TypeError, match="quote it"):
        file("/etc/x", "a", mode=0o644)  # type: ignore[arg-type]
    assert file_mode("644") == "0644" and file_mode("2755") == "2755"
    with pytest.raises(ValueError):
        file_mode("0999")


def test_relative_path_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        file("etc/x", "a")


def test_read_as_root_choice() -> None:
    assert not file("/etc/docker/daemon.json", "{}").fact.sudo
    assert file("/etc/sudoers.d/gpuprov", "x", mode="0440").fact.sudo
    assert file("/opt/x", "x", read_as_root=True).fact.sudo


# -- template ------------------------------------------------------------------------

def test_template(tmp_path) -> None:
    src = tmp_path / "daemon.conf.j2"
    src.write_text("branch={{ branch }}\n{% for u in users %}AllowUsers {{ u }}\n{% endfor %}")
    [change] = plan(template("/etc/x.conf", src, {"branch": 580, "users": ["a", "b"]}), None)
    assert change.steps[0].stdin == b"branch=580\nAllowUsers a\nAllowUsers b\n"


def test_template_keeps_trailing_newline_choice(tmp_path) -> None:
    (tmp_path / "t.j2").write_text("x={{ x }}")
    [change] = plan(template("/etc/x", str(tmp_path / "t.j2"), {"x": 1}), None)
    assert change.steps[0].stdin == b"x=1"


def test_template_undefined_variable(tmp_path) -> None:
    (tmp_path / "t.j2").write_text("{{ nvidia_driver_branch }}\n")
    with pytest.raises(FileOpError, match="nvidia_driver_branch"):
        template("/etc/x", tmp_path / "t.j2", {})


def test_template_secret_var_revealed_but_masked(tmp_path) -> None:
    (tmp_path / "t.j2").write_text("c.PasswordIdentityProvider.hashed_password = '{{ h }}'\n")
    [change] = plan(template("/etc/jupyter/config.py", tmp_path / "t.j2",
                             {"h": Secret("argon2:xyz")}), None)
    assert b"argon2:xyz" in change.steps[0].stdin
    assert change.diff.secret and "argon2" not in change.diff.unified()


# -- absent ----------------------------------------------------------------------------

def test_absent() -> None:
    assert plan(absent("/etc/x"), None) == []
    [change] = plan(absent("/etc/x"), info(b"gone\n"))
    assert (change.action, change.steps[0].command.shell()) == ("delete", "rm -f /etc/x")
    assert change.diff == Diff("/etc/x", "gone\n", None)
    [rmdir] = plan(absent("/srv/d"), info(None, type="directory"))
    assert without_upload_check(rmdir.steps[0].command.shell()) == "rmdir /srv/d"
    [rmrf] = plan(absent("/srv/my d", recursive=True), info(None, type="directory"))
    assert without_upload_check(rmrf.steps[0].command.shell()) == "rm -rf '/srv/my d'"
    assert rmrf.invalidates == (FileState.at("/srv/my d"), FileState.under("/srv/my d"))
    with pytest.raises(ValueError):
        absent("/")


# -- directory -------------------------------------------------------------------------

def test_directory() -> None:
    op = directory("/var/lib/gpu data", owner="jupyter", group="jupyter", mode="0750")
    [change] = plan(op, None)
    assert without_upload_check(change.steps[0].command.shell()) == (
        "mkdir -p -- '/var/lib/gpu data' && [ -d '/var/lib/gpu data' ] && "
        "chown -h jupyter:jupyter -- '/var/lib/gpu data' && chmod 0750 -- '/var/lib/gpu data'")
    assert change.invalidates == (FileState.at("/var/lib/gpu data"), FileState.at("/var/lib"),
                                  FileState.at("/var"))
    same = info(None, type="directory", owner="jupyter", group="jupyter", mode="0750")
    assert plan(op, same) == []
    [attrs] = plan(op, info(None, type="directory", owner="jupyter", group="jupyter"))
    assert without_upload_check(attrs.steps[0].command.shell()) == \
        "chmod 0750 -- '/var/lib/gpu data'"
    assert attrs.summary == "mode 0644 -> 0750"
    with pytest.raises(FileOpError, match="not a directory"):
        plan(op, info(b"x"))
    assert op.fact == FileState("/var/lib/gpu data", content=False)


# -- line ------------------------------------------------------------------------------

def line_result(op, before: bytes | None) -> bytes | None:
    changes = plan(op, None if before is None else info(before))
    return changes[0].steps[0].stdin if changes else None


def test_line_append_keeps_other_lines_and_fixes_missing_newline() -> None:
    op = line("/etc/modules", "nvidia-drm")
    assert line_result(op, b"loop\nfuse") == b"loop\nfuse\nnvidia-drm\n"
    assert line_result(op, b"loop\nnvidia-drm\n") is None
    assert line_result(op, b"") == b"nvidia-drm\n"


def test_line_regexp_replaces_last_match() -> None:
    op = line("/etc/default/grub", 'GRUB_CMDLINE_LINUX="nouveau.modeset=0"',
              regexp=r"^GRUB_CMDLINE_LINUX=")
    before = b'GRUB_CMDLINE_LINUX="a"\nX=1\nGRUB_CMDLINE_LINUX="b"\nY=2'
    assert line_result(op, before) == (
        b'GRUB_CMDLINE_LINUX="a"\nX=1\nGRUB_CMDLINE_LINUX="nouveau.modeset=0"\nY=2')
    assert line_result(op, b'GRUB_CMDLINE_LINUX="nouveau.modeset=0"\n') is None


def test_line_insert_after_before() -> None:
    text = b"[a]\nx=1\n[b]\ny=2\n"
    after = line("/etc/c.ini", "z=3", insert_after=r"^\[a\]")
    assert line_result(after, text) == b"[a]\nz=3\nx=1\n[b]\ny=2\n"
    before = line("/etc/c.ini", "z=3", insert_before=r"^\[b\]")
    assert line_result(before, text) == b"[a]\nx=1\nz=3\n[b]\ny=2\n"
    bof = line("/etc/c.ini", "# managed", insert_before="BOF")
    assert line_result(bof, text) == b"# managed\n" + text
    nomatch = line("/etc/c.ini", "z=3", insert_after="^nothing")
    assert line_result(nomatch, text) == text + b"z=3\n"


def test_line_absent() -> None:
    op = line("/etc/ssh/sshd_config", None, regexp=r"^#?PasswordAuthentication", state="absent")
    assert line_result(op, b"A\nPasswordAuthentication yes\n#PasswordAuthentication no\nB\n") \
        == b"A\nB\n"
    assert line_result(op, b"A\n") is None
    assert plan(op, None) == []


def test_line_missing_file() -> None:
    with pytest.raises(FileOpError, match="/etc/modules does not exist"):
        plan(line("/etc/modules", "x"), None)
    [change] = plan(line("/etc/modules", "x", create=True), None)
    assert change.steps[0].stdin == b"x\n" and change.action == "create"


def test_line_keeps_owner_and_mode() -> None:
    cur = info(b"a\n", owner="alice", group="staff", mode="0640")
    [change] = plan(line("/home/alice/.profile", "b"), cur)
    assert without_upload_check(change.steps[0].command.shell()) == write_cmd(
        "/home/alice/.gpuprov-XXXXXX", "/home/alice/.profile", owner="alice:staff", mode="0640")
    assert change.diff == Diff("/home/alice/.profile", "a\n", "a\nb\n")


def test_line_argument_checks() -> None:
    with pytest.raises(ValueError):
        line("/etc/x", "a\nb")
    with pytest.raises(ValueError):
        line("/etc/x", "a", insert_after="x", insert_before="y")
    with pytest.raises(ValueError):
        line("/etc/x", None)


# -- the write step, run for real ------------------------------------------------------

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def run(step) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", step.command.shell()], input=step.stdin,
                          capture_output=True)


def gather_plan(op) -> list[Change]:
    """Facts as the engine gathers them (one script), then the plan."""
    facts = list(op.facts())
    script, marker = gather_script(facts)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, check=True).stdout
    return op.plan(FactView(parse_batch(facts, out.decode(), marker)))


def leftovers(path) -> list[str]:
    return [n for n in os.listdir(path) if n.startswith(".gpuprov-")]


def test_local_write_then_converged(tmp_path) -> None:
    target = tmp_path / "my conf's.json"
    target.write_bytes(b"old\n")
    op = file(str(target), b"new, no final newline", owner=ME, group=MY_GROUP, mode="0640",
              read_as_root=False)
    [change] = gather_plan(op)
    result = run(change.steps[0])
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"new, no final newline"
    assert oct(target.stat().st_mode & 0o7777) == "0o640"
    assert leftovers(tmp_path) == []
    assert gather_plan(op) == []  # a second run changes nothing


def test_local_validate_failure_keeps_old_file(tmp_path) -> None:
    target = tmp_path / "sshd.conf"
    target.write_bytes(b"good\n")
    op = file(str(target), "bad\n", owner=ME, group=MY_GROUP, read_as_root=False,
              validate="sh -c 'grep -q good \"$1\" || { echo line 1: bad option >&2; "
                       "exit 255; }' sshd {}")
    [change] = gather_plan(op)
    result = run(change.steps[0])
    assert result.returncode != 0
    assert b"line 1: bad option" in result.stderr
    assert b"validation failed" in result.stderr
    assert target.read_bytes() == b"good\n"
    assert leftovers(tmp_path) == []


def test_local_validate_success_and_backup(tmp_path) -> None:
    target = tmp_path / "daemon.json"
    target.write_bytes(b"{}\n")
    op = file(str(target), "{\"good\": 1}\n", owner=ME, group=MY_GROUP, backup=True,
              validate="grep -q good {}", read_as_root=False)
    [change] = gather_plan(op)
    result = run(change.steps[0])
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""  # validator output goes to stderr, not mixed in stdout
    assert target.read_bytes() == b"{\"good\": 1}\n"
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("daemon.json.")]
    assert len(backups) == 1 and backups[0].name.endswith("~")
    assert backups[0].read_bytes() == b"{}\n"
    assert leftovers(tmp_path) == []


def test_local_killed_mid_write_leaves_old_file(tmp_path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old\n")
    [change] = plan(file(str(target), "x" * 100, owner=ME, group=MY_GROUP), info(b"old\n"))
    proc = subprocess.Popen(["/bin/sh", "-c", change.steps[0].command.shell()],
                            stdin=subprocess.PIPE, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(b"half")
    proc.stdin.flush()
    deadline = time.monotonic() + 5
    while not leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert leftovers(tmp_path), "the temp file should exist while writing"
    # as sshd does when the connection drops: SIGHUP to the group, and the
    # channel's stdin closed (the shell may be between two commands then, and
    # runs its trap only when the current one ends)
    os.killpg(proc.pid, signal.SIGHUP)
    proc.stdin.close()
    proc.wait(5)
    assert proc.returncode != 0
    assert target.read_bytes() == b"old\n"
    assert leftovers(tmp_path) == []


def test_local_line_edit_converges(tmp_path) -> None:
    target = tmp_path / "modules"
    target.write_bytes(b"loop")
    os.chmod(target, 0o600)
    op = line(str(target), "nvidia-drm", read_as_root=False)
    [change] = gather_plan(op)
    assert run(change.steps[0]).returncode == 0
    assert target.read_bytes() == b"loop\nnvidia-drm\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"  # kept
    assert gather_plan(op) == []


def test_local_directory_converges(tmp_path) -> None:
    op = directory(str(tmp_path / "a b" / "c"), owner=ME, group=MY_GROUP, mode="0750",
                   read_as_root=False)
    [change] = gather_plan(op)
    assert run(change.steps[0]).returncode == 0
    assert oct((tmp_path / "a b" / "c").stat().st_mode & 0o777) == "0o750"
    assert gather_plan(op) == []
