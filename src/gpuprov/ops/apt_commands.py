"""apt-get and apt-mark as gpuprov runs them, and what their failures mean.

Every apt command is non-interactive and waits up to `lock_timeout` s for the
dpkg lock (unattended-upgrades on a fresh VM). Commands that fetch give up on a
silent repository after `net_timeout` s (apt's default is 120 s per try, and
apt 2.3+ tries 4 times: a hanging mirror held a run for minutes), and
`apt-get update` fails when any index cannot be fetched (apt's default is a
warning and the old lists: a later install would then pick stale versions, or
none, far from the cause).

A failed apt step is explained (apt_failure): the lock's holder (pid and
command line, read on the host right after the failure) or the repository
that failed and how, with what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from gpuprov.command import Command
from gpuprov.facts.apt import DpkgLock, DpkgLocked
from gpuprov.ops.base import Explain, Explained, Failure, Step

__all__ = ["LOCK_TIMEOUT", "NET_RETRIES", "NET_TIMEOUT", "apt_failure", "apt_get", "apt_mark",
           "apt_step"]

LOCK_TIMEOUT = 120
#: seconds apt waits on a silent repository connection before that try fails
NET_TIMEOUT = 15
#: further tries of a failed download (apt 2.3+ defaults to 3)
NET_RETRIES = 1
#: apt-get verbs that download (the others never touch the network)
_FETCHING = {"update", "install", "upgrade", "dist-upgrade", "full-upgrade", "download",
             "source", "build-dep"}


def apt_get(*args: str, packages: Sequence[str] = (), lock_timeout: int = LOCK_TIMEOUT,
            net_timeout: int = NET_TIMEOUT) -> Command:
    """apt-get, non-interactive, waiting up to lock_timeout s for the dpkg lock;
    `packages` go after `--`, so none is ever read as an option.

    NEEDRESTART_MODE=l: Ubuntu's needrestart would otherwise restart services
    (sshd, docker) behind the play's back; gpuprov restarts via handlers.
    """
    verb = args[:1]
    net: list[str] = []
    if verb and verb[0] in _FETCHING:
        net = ["-o", f"Acquire::http::Timeout={net_timeout}",
               "-o", f"Acquire::https::Timeout={net_timeout}",
               "-o", f"Acquire::Retries={NET_RETRIES}"]
    if verb == ("update",):
        # an unknown option is ignored by an apt older than 2.1.16
        net += ["-o", "APT::Update::Error-Mode=any"]
    return Command("env", "DEBIAN_FRONTEND=noninteractive", "NEEDRESTART_MODE=l", "apt-get",
                   *verb, "-y", "-o", f"DPkg::Lock::Timeout={lock_timeout}", *net, *args[1:],
                   *(("--", *packages) if packages else ()))


def apt_step(*args: str, packages: Sequence[str] = (), lock_timeout: int = LOCK_TIMEOUT,
             net_timeout: int = NET_TIMEOUT) -> Step:
    """apt_get() as a Step whose failure names the lock holder or the failing repository."""
    return Step(apt_get(*args, packages=packages, lock_timeout=lock_timeout,
                        net_timeout=net_timeout),
                explain=apt_failure(lock_timeout), diagnose=DpkgLocked())


def apt_mark(action: str, names: Iterable[str], lock_timeout: int = LOCK_TIMEOUT) -> Step:
    return Step(Command("apt-mark", "-o", f"DPkg::Lock::Timeout={lock_timeout}", action,
                        "--", *names),
                explain=apt_failure(lock_timeout), diagnose=DpkgLocked())


# ---------------------------------------------------------------- failures

# apt: "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 812 (apt-get)"
_HELD_BY = re.compile(r"Could not get lock (/\S+?)\.? It is held by process (\d+)(?: \(([^)]*)\))?")
# apt, its wait over: "Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend)"
_UNABLE = re.compile(r"Unable to acquire the dpkg (?:frontend )?lock \((/\S+)\)"
                     r"|E: Could not get lock (/\S+?)\.?(?:\s|$)|Unable to lock directory (/\S+)")
# dpkg itself: "dpkg frontend lock was locked by another process with pid 812"
_DPKG_PID = re.compile(r"dpkg (?:frontend )?lock (?:was|is) locked by another process"
                       r"(?: with pid (\d+))?")
# "E: Failed to fetch http://host/debian/dists/x/InRelease  500  Internal Server Error [IP: ...]"
_FETCH = re.compile(r"^[EW]: Failed to fetch (\S+)\s+(.*?)(?:\s*\[IP: [^]]*\])?\s*$", re.M)
# "Err:1 http://host/debian bookworm InRelease": the repository's base URL and suite
_ERR = re.compile(r"^Err:\d+ (\S+) (\S+)", re.M)
_LISTS_LOCK = "/var/lib/apt/lists/lock"


def apt_failure(lock_timeout: int) -> Explain:
    """explain() for an apt step that waited up to lock_timeout s for the lock."""

    def explain(failure: Failure) -> Explained | None:
        text = f"{failure.stdout}\n{failure.stderr}"
        return _lock_failure(text, failure.diagnosis, lock_timeout) or _fetch_failure(text)

    return explain


def _lock_failure(text: str, diagnosis: object, lock_timeout: int) -> Explained | None:
    unable = _UNABLE.search(text)
    dpkg = _DPKG_PID.search(text)
    held = list(_HELD_BY.finditer(text))
    if not (unable or dpkg or held):
        return None
    frontend = "/var/lib/dpkg/lock-frontend"
    path = (next(g for g in unable.groups() if g) if unable else held[-1][1] if held
            else frontend if dpkg and "frontend" in dpkg[0] else "/var/lib/dpkg/lock")
    pid: int | None = int(held[-1][2]) if held else int(dpkg[1]) if dpkg and dpkg[1] else None
    command = held[-1][3] if held and held[-1][3] else ""
    holders = diagnosis.holders if isinstance(diagnosis, DpkgLock) else ()
    # the holder's command line, read on the host after the failure, is fuller than apt's
    # 15-character process name; the pid apt named first, else whoever holds it now
    mine = [h for h in holders if h[1] == pid] or [h for h in holders if h[0] == path]
    if mine:
        pid, command = mine[0][1], mine[0][2] or command
    who = f"pid {pid} ({command or '?'})" if pid is not None else "another process"
    if path.rstrip("/").startswith("/var/lib/apt/lists"):
        # apt-get update does not wait for the lists lock: it fails at once
        return Explained(
            f"apt lists lock {_LISTS_LOCK} held by {who}: another apt-get update is running",
            "wait for it to finish (unattended-upgrades runs one after boot), then run again")
    return Explained(
        f"dpkg lock {path} held by {who} for longer than {lock_timeout}s",
        "wait for it to finish (or stop it: `systemctl stop unattended-upgrades`), then run "
        "again; or raise the op's lock timeout (the nvidia_driver role: "
        "nvidia_driver_apt_lock_timeout)")


def _fetch_failure(text: str) -> Explained | None:
    fetches = _FETCH.findall(text)
    if not fetches:
        return None
    url, why = fetches[0]
    why = " ".join(why.split()) or "failed"
    repo = _repository(url, text)
    more = f" (and {len(fetches) - 1} more download{'s' if len(fetches) > 2 else ''})" \
        if len(fetches) > 1 else ""
    if "unexpected size" in why or "Hash Sum mismatch" in why or "checksum" in why.lower():
        what = "serves files that do not match its Release file (a mirror mid-sync?)"
    elif re.search(r"\b[45]\d\d\b", why):
        what = f"answered {why}"
    else:
        what = f"could not be reached: {why}"
    return Explained(
        f"apt repository {repo} {what}: {url}{more}",
        "nothing was installed; check that the repository (or its mirror or proxy) is up "
        "and complete, or remove its source from /etc/apt/sources.list.d, then run again")


def _repository(url: str, text: str) -> str:
    """The repository's base URL as the sources list names it (apt's Err: line),
    else the download URL up to its dists/ or pool/ part."""
    for base, _suite in _ERR.findall(text):
        if url.startswith(base.rstrip("/") + "/"):
            return base.rstrip("/")
    for marker in ("/dists/", "/pool/", "/./"):
        if marker in url:
            return url.split(marker)[0]
    return url.rsplit("/", 1)[0]
