"""dnf as gpuprov runs it, and what its repository failures mean.

Every dnf command may refresh expired repository metadata, so each carries
network limits: dnf's defaults (30 s per connection, 10 retries) kept a run
waiting for minutes on a hanging mirror. dnf 4 waits for its own lock with no
timeout (another dnf, dnf-automatic): that wait is left as it is.

A failed dnf step whose repository failed is explained (dnf_failure): the
repository's id, the URL, and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gpuprov.command import Command
from gpuprov.ops.base import Explained, Failure, Step

__all__ = ["NET_RETRIES", "NET_TIMEOUT", "dnf", "dnf_failure", "dnf_step"]

#: seconds dnf waits on a silent repository connection (dnf's default: 30; slower
#: than minrate for that long also fails) and its further tries (dnf's default: 10)
NET_TIMEOUT = 15
NET_RETRIES = 1


def dnf(*args: str, packages: Sequence[str] = ()) -> Command:
    """dnf -y ARGS; `packages` go after `--`, so none is ever read as an option."""
    return Command("dnf", "-y", f"--setopt=timeout={NET_TIMEOUT}",
                   f"--setopt=retries={NET_RETRIES}", *args,
                   *(("--", *packages) if packages else ()))


def dnf_step(*args: str, packages: Sequence[str] = ()) -> Step:
    """dnf() as a Step whose failure names the repository that failed."""
    return Step(dnf(*args, packages=packages), explain=dnf_failure)


# "Error: Failed to download metadata for repo 'cuda-rhel9-x86_64': Cannot download repomd.xml"
_REPO = re.compile(r"(?:Failed to download metadata for repo|downloading metadata for "
                   r"repository) '([^']+)'")
# "  - Curl error (28): Timeout was reached for https://x/repodata/repomd.xml [Operation ...]"
# "  - Status code: 500 for https://x/repodata/repomd.xml (IP: 10.0.0.1)"
_WHY = re.compile(r"(Curl error \(\d+\): .*?|Status code: (\d+)) for (\S+)")


def dnf_failure(failure: Failure) -> Explained | None:
    text = f"{failure.stderr}\n{failure.stdout}"
    why = _WHY.search(text)
    repo = _REPO.search(text)
    if why is None and repo is None:
        return None
    url = why[3] if why else ""
    base = url.split("/repodata/")[0] if "/repodata/" in url else url.rsplit("/", 1)[0]
    name = f"'{repo[1]}'" if repo else base
    if why is None:
        what = "could not be read"
    elif why[2]:
        what = f"answered HTTP {why[2]}: {url}"
    else:
        what = f"could not be reached: {why[1]}: {url}"
    where = f" ({base})" if repo and base else ""
    disable = (f"disable it (`dnf config-manager --set-disabled {repo[1]}`)" if repo
               else "remove its .repo file from /etc/yum.repos.d")
    return Explained(
        f"dnf repository {name}{where} {what}",
        f"nothing was installed; check that the repository (or its mirror or proxy) is up "
        f"and complete, or {disable}, then run again")
