"""known_hosts policy: verify, accept-new, and errors a person can act on.

paramiko's HostKeys forgets line numbers and treats patterns loosely, and
Fabric/paramiko's AutoAddPolicy accepts anything; we need file:line for the
"key changed" error and OpenSSH's matching rules (hashed names, [host]:port,
wildcards, negation, @revoked), so known_hosts files are parsed here.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import functools
import hashlib
import hmac
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from gpuprov.errors import UnreachableHost

# One lock per file for threads of this process; flock() guards against other
# processes (another gpuprov, or ssh itself with accept-new).
_FILE_LOCKS: dict[Path, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def host_id(address: str, port: int) -> str:
    """The name OpenSSH stores: `host` for port 22, `[host]:port` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256:... as `ssh-keygen -lf` and OpenSSH's own messages print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Entry:
    path: Path
    line: int
    marker: str | None          # None, "@revoked" or "@cert-authority"
    key: paramiko.PKey

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _match_pattern_list(patterns: str, name: str) -> bool:
    """OpenSSH match_hostname: any negated match vetoes, else any positive match."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if pattern.startswith("|1|"):
            hit = _match_hashed(pattern, name)
        else:
            hit = _glob(pattern.lower()).fullmatch(name) is not None
        if hit and negated:
            return False
        matched = matched or hit
    return matched


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    # OpenSSH patterns know only * and ?; fnmatch would read "[host]:port"
    # as a character class.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern))


def _match_hashed(entry: str, name: str) -> bool:
    try:
        _, _, salt_b64, hash_b64 = entry.split("|", 3)
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(hash_b64)
    except (ValueError, binascii.Error):
        return False
    actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(actual, expected)


def parse_file(path: Path, name: str) -> list[Entry]:
    """Entries of one known_hosts file that apply to `name` (a host_id())."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    name = name.lower()
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
            line = line.strip()
        fields = line.split(None, 3)
        if len(fields) < 3 or not _match_pattern_list(fields[0], name):
            continue
        try:
            parsed = HostKeyEntry.from_line(" ".join(fields[:3]), lineno=number)
        except (InvalidHostKey, ValueError, paramiko.SSHException):
            parsed = None
        if parsed is not None:  # None: a key type paramiko cannot use (e.g. sk-*)
            entries.append(Entry(path, number, marker, parsed.key))
    return entries


class KnownHosts:
    """The known_hosts files for a connection, and where new keys are recorded."""

    def __init__(self, user_file: Path, extra_files: tuple[Path, ...] = (),
                 hash_new: bool = False) -> None:
        self.user_file = user_file
        self.files = (user_file, *extra_files)
        self.hash_new = hash_new

    def entries(self, name: str) -> list[Entry]:
        return [e for path in self.files for e in parse_file(path, name)]

    def key_types(self, name: str) -> list[str]:
        """Host key types already known, to prefer them during key exchange."""
        types: list[str] = []
        for entry in self.entries(name):
            if entry.marker is None and entry.key.get_name() not in types:
                types.append(entry.key.get_name())
        return types

    def check(self, host: str, name: str, key: paramiko.PKey, strict: bool) -> bool:
        """Raise UnreachableHost unless `key` is right for `name`; True if newly recorded."""
        if self.verify(host, name, key):
            return False
        if strict:
            fp = fingerprint(key)
            raise UnreachableHost(
                host, "host-key-unknown",
                f"{name} is not in {self.user_file} and strict host key checking is on; "
                f"it offered {key.get_name()} {fp}",
                hint=f"check {fp} with the host's admin (ssh-keygen -lf /etc/ssh/ssh_host_*.pub "
                     f"on the host), then add it: {_keyscan_hint(name, key)} >> {self.user_file}",
            )
        return self.record(host, name, key)

    def verify(self, host: str, name: str, key: paramiko.PKey) -> bool:
        """True if `key` is recorded for `name`, False if `name` is unknown;
        raises UnreachableHost (host-key-changed) if another key is recorded."""
        return _verify(host, name, key, self.entries(name))

    def record(self, host: str, name: str, key: paramiko.PKey) -> bool:
        """Trust `key` for `name`; True if it was appended now."""
        with _locked(self.user_file) as fd:
            # Re-check under the lock: another thread or process may have
            # recorded this host (maybe with another key) in the meantime.
            if _verify(host, name, key, self.entries(name)):
                return False
            _append(fd, self._line(name, key))
        return True

    def _line(self, name: str, key: paramiko.PKey) -> str:
        stored = paramiko.HostKeys.hash_host(name) if self.hash_new else name
        return f"{stored} {key.get_name()} {key.get_base64()}\n"


def _verify(host: str, name: str, key: paramiko.PKey, entries: list[Entry]) -> bool:
    """True if known and matching; False if unknown; raises if changed or revoked."""
    offered = fingerprint(key)
    for entry in entries:
        if entry.marker == "@revoked" and entry.key.asbytes() == key.asbytes():
            raise UnreachableHost(
                host, "host-key-changed",
                f"{name} offered a key marked @revoked at {entry.where}: {offered}",
                hint="the host's key was revoked on purpose; ask its admin")
    plain = [e for e in entries if e.marker is None]
    if any(e.key.asbytes() == key.asbytes() for e in plain):
        return True
    if not plain:
        return False
    # Same type with other bytes is the classic "key changed". A host known
    # only by other key types is treated the same: we prefer the known types
    # during key exchange, so a server that no longer offers any of them is
    # as suspicious as a changed key (OpenSSH's accept-new would take it).
    same_type = [e for e in plain if e.key.get_name() == key.get_name()]
    expected = (same_type or plain)[0]
    expected_desc = f"{expected.key.get_name()} {fingerprint(expected.key)}"
    raise UnreachableHost(
        host, "host-key-changed",
        f"host key for {name} has CHANGED: {expected.where} expects {expected_desc}, "
        f"the server offered {key.get_name()} {offered}. Someone may be intercepting the "
        "connection (man-in-the-middle), or the host was reinstalled",
        hint=f"if the host was reinstalled, remove the old key: ssh-keygen -R '{name}' "
             f"-f {expected.path} (or delete line {expected.line} of {expected.path}), "
             "then rerun to record the new one",
    )


def _keyscan_hint(name: str, key: paramiko.PKey) -> str:
    host, port = name, 22
    if name.startswith("["):
        host, _, port_text = name[1:].partition("]:")
        port = int(port_text)
    port_opt = f"-p {port} " if port != 22 else ""
    algo = key.get_name().removeprefix("ssh-").split("-")[0]
    return f"ssh-keyscan {port_opt}-t {algo} {host}"


class _locked:
    """Thread lock + flock() on the known_hosts file itself (created if missing).

    Locking the file itself rather than a side `.lock` file leaves no litter
    in ~/.ssh; the open fd is then used for the append.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with _FILE_LOCKS_GUARD:
            self.thread_lock = _FILE_LOCKS.setdefault(path.resolve(), threading.Lock())
        self.fd = -1

    def __enter__(self) -> int:
        self.thread_lock.acquire()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            if self.fd >= 0:
                os.close(self.fd)
            self.thread_lock.release()
            raise
        return self.fd

    def __exit__(self, *exc: object) -> None:
        try:
            os.close(self.fd)  # also drops the flock
        finally:
            self.fd = -1
            self.thread_lock.release()


def _append(fd: int, line: str) -> None:
    # One O_APPEND write of a whole line: readers (and ssh, which does not
    # take our lock) never see half a line, and nothing already there is
    # rewritten, unlike a temp-file + rename that could drop a line ssh just
    # added.
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = "\n" + line
    os.write(fd, line.encode())
    os.fsync(fd)
