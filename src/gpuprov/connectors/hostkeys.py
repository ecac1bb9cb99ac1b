"""known_hosts policy: verify, strict or accept-new, and errors a person can act on.

paramiko's HostKeys forgets line numbers and treats patterns loosely, and
Fabric/paramiko's AutoAddPolicy accepts anything; we need file:line for the
"key changed" error and OpenSSH's matching rules (hashed names, [host]:port,
wildcards, negation, @revoked, @cert-authority), so known_hosts files are
parsed here.

The default is OpenSSH's `StrictHostKeyChecking yes`: an unknown key is
refused (or, at a terminal, shown to a person who may accept it), because
the next thing sent over the connection is a login and maybe a sudo
password. `accept-new` records an unknown key; a changed or revoked key is
refused whatever the policy. Every key recorded is announced.
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
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from gpuprov.connectors.hostcerts import CERT_SUFFIX, CertificateError, certificate_of
from gpuprov.errors import UnreachableHost

#: refuse unknown keys (OpenSSH `StrictHostKeyChecking yes`), the default
STRICT = "strict"
#: record unknown keys, refuse changed ones (OpenSSH `accept-new`)
ACCEPT_NEW = "accept-new"
POLICIES = (STRICT, ACCEPT_NEW)

#: asks a person a yes/no question; None where nobody can answer
Confirm = Callable[[str], bool]

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


def announce_on_stderr(line: str) -> None:
    """Default announcement of a recorded key: one line on stderr."""
    print(line, file=sys.stderr, flush=True)


class KnownHosts:
    """The known_hosts files for a connection, and where new keys are recorded."""

    def __init__(self, user_file: Path, extra_files: tuple[Path, ...] = (),
                 hash_new: bool = False,
                 announce: Callable[[str], None] = announce_on_stderr) -> None:
        self.user_file = user_file
        self.files = (user_file, *extra_files)
        self.hash_new = hash_new
        self.announce = announce

    def entries(self, name: str) -> list[Entry]:
        return [e for path in self.files for e in parse_file(path, name)]

    def key_types(self, name: str) -> list[str]:
        """Host key types to ask for first during key exchange: certificates
        when a CA is trusted for `name` (as OpenSSH does), then known plain keys."""
        types: list[str] = []
        entries = self.entries(name)
        if any(e.marker == "@cert-authority" for e in entries):
            types += [t + CERT_SUFFIX for t in ("ssh-ed25519", "ecdsa-sha2-nistp256",
                                                "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")]
            types += ["rsa-sha2-512" + CERT_SUFFIX, "rsa-sha2-256" + CERT_SUFFIX]
        for entry in entries:
            if entry.marker is None and entry.key.get_name() not in types:
                types.append(entry.key.get_name())
        return types

    def check(self, host: str, name: str, key: paramiko.PKey, policy: str = STRICT,
              confirm: Confirm | None = None) -> bool:
        """Raise UnreachableHost unless `key` is right for `name`; True if newly recorded.

        Unknown keys: recorded under accept-new; under strict, recorded only
        if `confirm` (a person at a terminal) says yes, else refused.
        """
        entries = self.entries(name)
        if _verify(host, name, key, entries):
            return False
        fp = f"{key.get_name()} {fingerprint(key)}"
        if any(e.marker == "@cert-authority" for e in entries):
            # A CA vouches for this host: a plain key it did not certify is
            # not recorded beside it, whatever the policy.
            raise UnreachableHost(
                host, "host-key-unknown",
                f"{name} offered a plain host key {fp} without a certificate, but "
                f"known_hosts trusts a @cert-authority for it ({_ca_where(entries)})",
                hint="have the host's sshd present its certificate (HostCertificate in "
                     "sshd_config), or remove the @cert-authority line for this host")
        if policy == ACCEPT_NEW:
            return self.record(host, name, key)
        if confirm is not None and confirm(
                f"The authenticity of host '{name}' can't be established.\n"
                f"{key.get_name()} key fingerprint is {fingerprint(key)}.\n"
                "Are you sure you want to continue connecting (yes/no)?"):
            return self.record(host, name, key)
        raise UnreachableHost(
            host, "host-key-unknown",
            f"{name} offered host key {fp}, which is not in {self.user_file}; "
            "refusing to connect to an unverified host (strict host key checking)",
            hint=f"check {fingerprint(key)} with the host's admin (ssh-keygen -lf "
                 "/etc/ssh/ssh_host_*.pub on the host), then either onboard it with "
                 f"`gpuprov onboard {host} --host-key-fingerprint {fingerprint(key)}` "
                 "(confirms first contact), or rerun with --accept-new-host-keys "
                 "(records unknown keys, like OpenSSH's accept-new; or set "
                 "ssh_host_key_checking: accept-new), or add it yourself: "
                 f"{_keyscan_hint(name, key)} >> {self.user_file}",
        )

    def verify(self, host: str, name: str, key: paramiko.PKey) -> bool:
        """True if `key` is recorded (or certified by a trusted CA) for `name`,
        False if `name` is unknown; raises UnreachableHost if another key is
        recorded, the key is revoked or its certificate is not valid."""
        return _verify(host, name, key, self.entries(name))

    def record(self, host: str, name: str, key: paramiko.PKey) -> bool:
        """Trust `key` for `name`; True if it was appended now (and announced)."""
        with _locked(self.user_file) as fd:
            # Re-check under the lock: another thread or process may have
            # recorded this host (maybe with another key) in the meantime.
            if _verify(host, name, key, self.entries(name)):
                return False
            _append(fd, self._line(name, key))
        self.announce(f"{host}: recorded host key {name} {key.get_name()} "
                      f"{fingerprint(key)} in {self.user_file}")
        return True

    def _line(self, name: str, key: paramiko.PKey) -> str:
        stored = paramiko.HostKeys.hash_host(name) if self.hash_new else name
        return f"{stored} {key.get_name()} {key.get_base64()}\n"


def _ca_where(entries: list[Entry]) -> str:
    return ", ".join(e.where for e in entries if e.marker == "@cert-authority")


def _verify(host: str, name: str, key: paramiko.PKey, entries: list[Entry]) -> bool:
    """True if known and matching; False if unknown; raises if changed or revoked."""
    offered = fingerprint(key)
    cert = certificate_of(key)
    for entry in entries:
        revoked = entry.key.asbytes() == key.asbytes() or (
            cert is not None and entry.key.asbytes() == cert.ca_key.asbytes())
        if entry.marker == "@revoked" and revoked:
            what = "a key" if entry.key.asbytes() == key.asbytes() else "a certificate by a CA"
            raise UnreachableHost(
                host, "host-key-changed",
                f"{name} offered {what} marked @revoked at {entry.where}: {offered}",
                hint="the host's key was revoked on purpose; ask its admin")
    if cert is not None:
        cas = [e for e in entries if e.marker == "@cert-authority"]
        if cas:
            try:
                cert.check(_principal_names(name), [e.key for e in cas])
            except CertificateError as exc:
                raise UnreachableHost(
                    host, "host-key-cert", f"{name} offered a host certificate that "
                    f"known_hosts ({_ca_where(entries)}) does not accept: {exc}",
                    hint="renew or re-sign the host certificate (ssh-keygen -s CA -h -n "
                         "HOSTNAME), or check the @cert-authority line") from exc
            return True
        # No CA for this host: the certificate is ignored and the key inside
        # is checked like a plain one (OpenSSH asks for certificates only
        # when it trusts a CA, so this is a server that offers nothing else).
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


def _principal_names(name: str) -> list[str]:
    """The names a host certificate's principals are matched against: the
    host name or HostKeyAlias, without OpenSSH's [host]:port wrapping."""
    if name.startswith("[") and "]:" in name:
        return [name[1:].partition("]:")[0]]
    return [name]


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
