"""git for `gpuprov pull`: fetch the repo's ref shallow, verify its signature,
lay out a commit to load and run, and make it the checkout once it ran well.

These run on the host itself (pull mode has no controller), so they are local
processes started with argument lists, never a shell and never a Connector.

{state_dir}/pull/repo is one git repository whose work tree is always the
last good commit: a fetch only adds objects (and FETCH_HEAD), a new commit is
laid out in {state_dir}/pull/next (`git archive`, the index and work tree of
repo untouched) and checked out in repo only after it ran well. A failed
fetch, a commit that does not load or a failed run leave repo as it was.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import IO

from gpuprov.errors import GpuprovError
from gpuprov.model.pullconfig import PullConfig

#: how long a fetch may take (a git server that stops answering, a slow link)
FETCH_TIMEOUT = 300.0
LOCAL_TIMEOUT = 120.0


class GitError(GpuprovError):
    """A git command failed: its stderr's last lines."""


class PullGit:
    """The checkout of one pull.yml's repository under `state_dir`/pull."""

    def __init__(self, config: PullConfig) -> None:
        self.config = config
        root = Path(config.state_dir) / "pull"
        self.repo = root / "repo"
        self.next = root / "next"

    # -- fetch ----------------------------------------------------------------
    def fetch(self) -> str:
        """Fetch the ref (depth 1) into the repository; the full sha it names."""
        if not (self.repo / ".git").is_dir():
            self.repo.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._git("init", "--quiet")
        self._git("fetch", "--depth", "1", "--no-tags", "--quiet", "--",
                  self.config.repo, self.config.ref, timeout=FETCH_TIMEOUT, network=True)
        sha = self._git("rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}").strip()
        # a ref keeps the fetched objects from git gc until the next fetch
        self._git("update-ref", "refs/gpuprov/fetched", sha)
        return sha

    def head(self) -> str | None:
        """The commit checked out in repo (the last good one), None before any."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}").strip()
        except GitError:
            return None

    # -- verify ---------------------------------------------------------------
    def verify(self, sha: str) -> None:
        """GitError unless `sha` carries an ssh signature by a key in allowed_signers."""
        signers = self.config.allowed_signers
        if not Path(signers).is_file():
            raise GitError(f"allowed signers file {signers} does not exist",
                           hint="pull-setup writes it from pull_allowed_signers")
        self._git("-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}",
                  "verify-commit", "--", sha)

    # -- lay out, keep --------------------------------------------------------
    def stage(self, sha: str) -> Path:
        """`sha`'s files in pull/next (emptied first), the work tree of repo untouched."""
        self.discard()
        self.next.mkdir(mode=0o700)
        archive = self.repo / ".git" / "gpuprov-next.tar"
        try:
            with archive.open("wb") as out:
                self._run(["git", "archive", "--format=tar", sha], out, LOCAL_TIMEOUT, False)
            with tarfile.open(archive) as tar:
                _extract(tar, self.next, sha)
        except (tarfile.TarError, OSError) as exc:
            raise GitError(f"{sha[:12]}: cannot lay out the commit: {exc}") from None
        finally:
            archive.unlink(missing_ok=True)
        return self.next

    def keep(self, sha: str) -> None:
        """Make `sha` the checkout of repo: the commit that ran well."""
        self._git("checkout", "--quiet", "--force", "--detach", sha)
        self._git("clean", "-ffdxq")

    def discard(self) -> None:
        """Remove pull/next (a commit laid out for a run that is over)."""
        if self.next.exists():
            shutil.rmtree(self.next)

    # -- running git ----------------------------------------------------------
    def _git(self, *args: str, timeout: float = LOCAL_TIMEOUT, network: bool = False) -> str:
        return self._run(["git", *args], None, timeout, network)

    def _run(self, argv: list[str], out: IO[bytes] | None, timeout: float,
             network: bool) -> str:
        """`argv` in repo; its stdout returned, or written to `out`."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        if network:
            env.update(self._ssh_env())
        try:
            done = subprocess.run(argv, cwd=self.repo, env=env,
                                  stdout=subprocess.PIPE if out is None else out,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise GitError(f"{_shown(argv)}: no answer after {timeout:g}s") from None
        except OSError as exc:
            raise GitError(f"cannot run git: {exc.strerror or exc}",
                           hint="install git (pull-setup does)") from None
        if done.returncode != 0:
            err = (done.stderr or b"").decode(errors="replace").strip().splitlines()
            tail = "; ".join(line.strip() for line in err[-4:]) or f"exit {done.returncode}"
            raise GitError(f"{_shown(argv)}: {tail}")
        return (done.stdout or b"").decode(errors="replace") if out is None else ""

    def _ssh_env(self) -> dict[str, str]:
        """ssh:// with a deploy key: this key only, and the git server's host key
        checked against pull_known_hosts beside pull.yml, never accepted on first
        use. pull-setup writes that file (from the controller's known_hosts entry
        for the git server, or pull_known_hosts lines in the inventory) when it
        writes the deploy key; without it the fetch fails with ssh's host key error."""
        if not self.config.deploy_key:
            return {}
        command = ["ssh", "-i", self.config.deploy_key, "-o", "IdentitiesOnly=yes",
                   "-o", "StrictHostKeyChecking=yes",
                   "-o", f"UserKnownHostsFile={self.config.known_hosts}",
                   "-o", "BatchMode=yes"]
        # git runs GIT_SSH_COMMAND through a shell: each argument quoted once
        return {"GIT_SSH_COMMAND": shlex.join(command)}


def _extract(tar: tarfile.TarFile, into: Path, sha: str) -> None:
    """git archive writes only the commit's own paths; anything else is refused
    anyway (and links out of the tree, where tarfile's data filter exists)."""
    for member in tar.getmembers():
        if member.name.startswith("/") or ".." in Path(member.name).parts:
            raise GitError(f"{sha[:12]}: unsafe path in the tree: {member.name}")
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, filter="data")
    else:   # Python before 3.11.4: the names were checked above
        tar.extractall(into)  # noqa: S202


def _shown(argv: list[str]) -> str:
    """A git command as said in an error: its subcommand, never a URL's credentials."""
    words = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
    return "git " + (words[0] if words else "")
