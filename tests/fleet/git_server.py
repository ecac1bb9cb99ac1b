"""A git repository served to the fleet over the bridge with git's own
`git daemon` (read-only git:// protocol), for pull mode's tests (issue 19).

The hosts fetch `git://<bridge address>:<port>/<name>.git`; the test commits
in a working clone on this machine and pushes to the bare repository the
daemon exports (a local path: nothing else listens). The daemon listens on
the bridge address only, so nothing outside the fleet reaches it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: committer identity of the test's commits (no global git config is read)
IDENTITY = {"GIT_AUTHOR_NAME": "gpuprov tests", "GIT_AUTHOR_EMAIL": "tests@fleet.invalid",
            "GIT_COMMITTER_NAME": "gpuprov tests",
            "GIT_COMMITTER_EMAIL": "tests@fleet.invalid"}


def git(*args: str, cwd: Path) -> str:
    """git in `cwd`, without the user's or this machine's config."""
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_CONFIG_NOSYSTEM": "1"}
    res = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout.strip()


class GitServer:
    """`start()` it, commit with `commit()`, always `stop()` it (also on failure)."""

    def __init__(self, root: Path, address: str, port: int, name: str = "team") -> None:
        self.root, self.address, self.port, self.name = root, address, port, name
        self.bare = root / "export" / f"{name}.git"
        self.work = root / "work"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"git://{self.address}:{self.port}/{self.name}.git"

    def start(self) -> None:
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=self.root)
        git("init", "-q", "-b", "main", str(self.work), cwd=self.root)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self._proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--listen={self.address}",
             f"--port={self.port}", f"--base-path={self.bare.parent}", str(self.bare.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.address, self.port), timeout=1):
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"git daemon did not listen on {self.address}:{self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def commit(self, files: dict[str, str], message: str) -> str:
        """Write `files` (path -> content; "" removes it) into the work tree,
        commit and push to the served repository; the commit's sha."""
        for relative, content in files.items():
            path = self.work / relative
            if content == "" and path.exists():
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
