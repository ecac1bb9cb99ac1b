"""The armed revert survives a reboot (issue 15): the boot hook that ops/armed.py
installs with the save (an init.d script with rc links, or a systemd unit with
its wants link), removed with it (confirmed, rolled back, restored), that
restores the saved files at boot and then removes itself; and a restore that
cannot put a file back keeps the save for the next boot or run.

The generated scripts run for real in /bin/sh against the fake host root of
test_sshd_lockout.py (ShHost: /etc/ssh, the rollback dir, /etc/init.d, rc2.d,
rc3.d, /etc/systemd/system all under a temp dir), as the sshd_hardening role
sets them up."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit import test_sshd_lockout as lockout_tests
from tests.unit.test_sshd_lockout import ShHost, armed

NAME = "gpuprov-sshd-revert-boot"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShHost]:
    root = tmp_path / "host"
    root.mkdir()
    fake = ShHost(root)
    monkeypatch.setattr(lockout_tests.sshd_config, "ROLLBACK_DIR", str(fake.rollback))
    reaper = lockout_tests._set_subreaper(True)
    try:
        yield fake
    finally:
        fake.kill_timers()
        if reaper:
            lockout_tests._set_subreaper(False)


def init_script(host: ShHost) -> Path:
    return host.root / "etc" / "init.d" / NAME


def rc_link(host: ShHost, level: str) -> Path:
    return host.root / "etc" / f"rc{level}.d" / f"S00{NAME}"


def unit_file(host: ShHost) -> Path:
    return host.root / "etc" / "systemd" / "system" / f"{NAME}.service"


def wants_link(host: ShHost) -> Path:
    return host.root / "etc" / "systemd" / "system" / "multi-user.target.wants" / f"{NAME}.service"


def hook_files(host: ShHost) -> list[str]:
    """Every boot hook file present under the fake /etc (links too, dangling or not)."""
    return sorted(str(p.relative_to(host.root)) for p in (host.root / "etc").rglob("*")
                  if NAME in p.name and (p.exists() or p.is_symlink()))


def arm_and_change(host: ShHost) -> None:
    """An armed change half done: saved, hook installed, new files written."""
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    host.write_new_config()


def reboot(host: ShHost) -> None:
    """What a reboot does to the armed change: the timer dies with the host."""
    host.kill_timers()


def boot_sysvinit(host: ShHost) -> subprocess.CompletedProcess[str]:
    """What the fleet's PID 1 and Debian's rc do: every S* link of rc2.d, with `start`."""
    res = None
    for link in sorted((host.root / "etc" / "rc2.d").iterdir()):
        res = host.sh(f'exec "{link}" start')
    assert res is not None, "no rc2.d link to start"
    return res


def boot_systemd(host: ShHost) -> subprocess.CompletedProcess[str]:
    """What systemd runs for the unit: its ExecStart, with $$ unescaped."""
    exec_start = re.search(r"^ExecStart=/bin/sh -c '(.*)'$", unit_file(host).read_text(), re.M)
    assert exec_start is not None
    return host.sh(exec_start.group(1).replace("$$", "$"))


def fail_copies_to(host: ShHost, path: Path) -> None:
    """A cp that fails for one target (a full disk, an I/O error), fine otherwise."""
    (host.bin / "cp").write_text(
        "#!/bin/sh\n"
        f'for a; do case "$a" in {path}.gpuprov-restore) echo "cp: no space left" >&2; '
        "exit 1;; esac; done\n"
        'exec /bin/cp "$@"\n')
    (host.bin / "cp").chmod(0o755)


# -- sysvinit: an init.d script with rc links ------------------------------------------


def test_sysvinit_hook_is_installed_with_the_save(host: ShHost) -> None:
    arm_and_change(host)
    script = init_script(host)
    assert script.read_text() == host.place(armed().boot_init_script())
    assert script.stat().st_mode & 0o777 == 0o755
    # every runlevel directory the host has (rc4.d, rc5.d are not there)
    for level in ("2", "3"):
        assert os.readlink(rc_link(host, level)) == f"../init.d/{NAME}"
        assert rc_link(host, level).resolve() == script.resolve()
    assert hook_files(host) == [f"etc/init.d/{NAME}", f"etc/rc2.d/S00{NAME}",
                                f"etc/rc3.d/S00{NAME}"]
    text = script.read_text()
    assert "# X-Start-Before:    ssh sshd\n" in text
    assert "# Default-Start:     2 3 4 5\n" in text
    # no temp file left beside it
    assert not list((host.root / "etc").rglob(".gpuprov-*"))
    # and it sorts before sshd's own start link (S01ssh), as the fleet's init and rc run them
    assert sorted([f"S00{NAME}", "S01ssh", "S01sudo"])[0] == f"S00{NAME}"


def test_sysvinit_hook_is_removed_when_the_change_is_confirmed(host: ShHost) -> None:
    arm_and_change(host)
    new = host.snapshot()
    res = host.sh(host.finish())
    assert res.returncode == 0, res.stderr
    assert hook_files(host) == []
    assert host.snapshot() == new


def test_sysvinit_hook_is_removed_by_the_rollback(host: ShHost) -> None:
    arm_and_change(host)
    res = host.sh_file(host.rollback / "restore")
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and host.reloads() == 1
    assert hook_files(host) == []


def test_sysvinit_hook_is_removed_when_the_timer_restored(host: ShHost) -> None:
    res = host.sh(host.prepare(revert_after=1))
    assert res.returncode == 0, res.stderr
    host.write_new_config()
    assert host.wait_for(lambda: host.reloads() == 1 and not host.rollback.exists(), 15)
    assert host.snapshot() == host.originals
    assert host.wait_for(lambda: hook_files(host) == [], 5), hook_files(host)


def test_after_a_reboot_the_boot_hook_restores_and_removes_itself(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    res = boot_sysvinit(host)
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals          # bytes, modes, mtimes
    assert not host.dropin.exists()
    assert host.reloads() == 0                        # sshd starts later, with these files
    assert not host.rollback.exists() and not Path(f"{host.rollback}.restoring").exists()
    assert hook_files(host) == []
    assert "sshd: previous config restored" in (host.root / "logger.log").read_text()
    # the next boot: nothing left to run
    assert sorted(p.name for p in (host.root / "etc" / "rc2.d").iterdir()) == []


def test_at_boot_a_stale_timer_pid_is_not_killed(host: ShHost) -> None:
    # after a reboot the pid in timer.pid may name someone else's process group
    arm_and_change(host)
    reboot(host)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (host.rollback / "timer.pid").write_text(f"{other.pid}\n")
        assert boot_sysvinit(host).returncode == 0
        assert other.poll() is None, "the boot hook killed a stranger's process group"
        assert host.snapshot() == host.originals
    finally:
        other.kill()
        other.wait()


def test_the_boot_hook_without_a_save_only_removes_itself(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    # e.g. the confirmation's cleanup claimed the save, then the host went down
    os.rename(host.rollback, f"{host.rollback}.done")
    new = host.snapshot()
    res = boot_sysvinit(host)
    assert res.returncode == 0, res.stderr
    assert hook_files(host) == [] and host.snapshot() == new and host.reloads() == 0


def test_the_boot_hook_finishes_a_restore_cut_short(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    # the host went down right after a restore had claimed the save
    os.rename(host.rollback, f"{host.rollback}.restoring")
    res = boot_sysvinit(host)
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and hook_files(host) == []
    assert not Path(f"{host.rollback}.restoring").exists()


def test_the_hook_is_reinstalled_idempotently(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    # a stale save (its hook lost, say by hand): the next prepare restores it first
    for path in hook_files(host):
        (host.root / path).unlink()
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and host.reloads() == 1
    assert hook_files(host) == [f"etc/init.d/{NAME}", f"etc/rc2.d/S00{NAME}",
                                f"etc/rc3.d/S00{NAME}"]
    # and once more over an existing hook: same files, still whole
    host.kill_timers()
    res = host.sh(host.prepare())
    assert res.returncode == 0, res.stderr
    assert init_script(host).read_text() == host.place(armed().boot_init_script())


# -- a restore that cannot put a file back keeps the save --------------------------------


def test_a_failed_copy_keeps_the_save_and_the_hook(host: ShHost) -> None:
    arm_and_change(host)
    saved = sorted((p.name, p.read_bytes()) for p in host.rollback.iterdir())
    fail_copies_to(host, host.rsa_key)
    res = host.sh_file(host.rollback / "restore")
    assert res.returncode == 1
    assert res.stderr.strip().endswith(
        f"gpuprov: sshd: could not put back {host.rsa_key}; the saved files stay in "
        f"{host.rollback} for the next boot or run")
    # the save is whole, under its own name, for the next boot or run
    assert sorted((p.name, p.read_bytes()) for p in host.rollback.iterdir()) == saved
    assert not Path(f"{host.rollback}.restoring").exists()
    assert hook_files(host) != []
    assert host.reloads() == 0                 # a mix of old and new files is not made live
    assert "could not put back" in (host.root / "logger.log").read_text()
    assert not list(host.etc.rglob("*.gpuprov-restore"))
    # once the copy works again, the same restore finishes the job
    (host.bin / "cp").unlink()
    res = host.sh_file(host.rollback / "restore")
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals and host.reloads() == 1
    assert not host.rollback.exists() and hook_files(host) == []


def test_a_failed_copy_at_boot_is_retried_at_the_next_boot(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    fail_copies_to(host, host.config)
    assert (host.rollback / "timer.pid").exists()
    assert boot_sysvinit(host).returncode == 1
    assert host.rollback.is_dir() and hook_files(host) != []
    # the pid of a timer from before the reboot is dropped: nobody may signal it later
    assert not (host.rollback / "timer.pid").exists()
    (host.bin / "cp").unlink()
    assert boot_sysvinit(host).returncode == 0
    assert host.snapshot() == host.originals and hook_files(host) == []


def test_a_failed_copy_makes_the_next_prepare_fail_not_resave(host: ShHost) -> None:
    arm_and_change(host)
    reboot(host)
    fail_copies_to(host, host.config)
    res = host.sh(host.prepare())
    assert res.returncode != 0
    assert "could not put back" in res.stderr
    # the old save is still the one on the host: never overwritten by the new files
    assert (host.rollback / "0").read_bytes() == host.originals[str(host.config)][0]  # type: ignore[index]


# -- systemd: a unit in /etc/systemd/system, enabled by its wants link -------------------


def test_systemd_hook_is_installed_with_the_save_without_a_daemon_call(host: ShHost) -> None:
    host.systemd()
    arm_and_change(host)
    assert unit_file(host).read_text() == host.place(armed().boot_unit())
    assert wants_link(host).resolve() == unit_file(host).resolve()
    assert hook_files(host) == [f"etc/systemd/system/{NAME}.service",
                                f"etc/systemd/system/multi-user.target.wants/{NAME}.service"]
    unit = unit_file(host).read_text()
    assert "\nBefore=multi-user.target ssh.service sshd.service\n" in unit
    assert "\nType=oneshot\n" in unit and unit.endswith("\n[Install]\nWantedBy=multi-user.target\n")
    # no daemon-reload or enable: only the timer's own calls
    assert [line.split()[:2] for line in host.systemd_log.read_text().splitlines()] == [
        ["systemctl", "reset-failed"], ["systemd-run", "--quiet"]]


def test_systemd_hook_is_removed_on_finish_and_on_rollback(host: ShHost) -> None:
    host.systemd()
    arm_and_change(host)
    assert host.sh(host.finish()).returncode == 0
    assert hook_files(host) == []
    confirmed = host.snapshot()
    res = host.sh(host.prepare())
    assert res.returncode == 0 and hook_files(host) != [], res.stderr
    host.dropin.write_bytes(b"PasswordAuthentication maybe\n")
    assert host.sh_file(host.rollback / "restore").returncode == 0
    assert hook_files(host) == [] and host.snapshot() == confirmed


def test_systemd_boot_unit_restores_without_activating_and_removes_itself(host: ShHost) -> None:
    host.systemd()
    arm_and_change(host)
    host.systemd_log.unlink()
    res = boot_systemd(host)
    assert res.returncode == 0, res.stderr
    assert host.snapshot() == host.originals
    # no reload (ssh.service is ordered after this unit: a reload-or-restart would
    # wait for it), no timer to stop (none survives a reboot)
    assert host.reloads() == 0 and not host.systemd_log.exists()
    assert hook_files(host) == [] and not host.rollback.exists()
    # no save (the unit ran again before it was gone): it only removes itself
    arm_and_change(host)
    assert host.sh(host.finish()).returncode == 0
    unit_file(host).write_text(host.place(armed().boot_unit()))
    assert boot_systemd(host).returncode == 0 and hook_files(host) == []
