"""OpenSSH host certificates, checked against the `@cert-authority` keys of known_hosts.

paramiko negotiates a certificate host key (`ssh-ed25519-cert-v01@openssh.com`...)
and proves the server holds the certified key's private half, but it never
looks inside the certificate (paramiko issue #2277). This module does what
OpenSSH's sshkey_cert_check_authority() does for a host: the certificate is
a host certificate, signed by a trusted CA (the signature over the whole
certificate body is verified), valid now, and issued for this host name.
Certificate extensions and critical options are not interpreted (OpenSSH
defines none for host certificates). Format: PROTOCOL.certkeys.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass

import paramiko
from paramiko.message import Message

CERT_SUFFIX = "-cert-v01@openssh.com"
_HOST_CERT = 2

# What precedes the common fields, per key type: the public key numbers.
_KEY_FIELDS = {
    "ssh-ed25519": ("string",),
    "ssh-rsa": ("mpint", "mpint"),
    "ecdsa-sha2-nistp256": ("string", "string"),
    "ecdsa-sha2-nistp384": ("string", "string"),
    "ecdsa-sha2-nistp521": ("string", "string"),
}


class CertificateError(Exception):
    """The certificate is malformed, or not acceptable for this host."""


@dataclass(frozen=True)
class HostCertificate:
    key_type: str            # e.g. ssh-ed25519-cert-v01@openssh.com
    serial: int
    cert_type: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: int
    valid_before: int
    ca_key: paramiko.PKey
    signed: bytes            # the bytes the CA signed: everything before the signature
    signature: bytes

    def check(self, names: Iterable[str], trusted: Iterable[paramiko.PKey],
              now: float | None = None) -> None:
        """Raise CertificateError unless this is a valid host certificate for
        one of `names`, signed by one of the `trusted` CA keys."""
        if self.cert_type != _HOST_CERT:
            raise CertificateError(f"certificate {self.key_id!r} is a user certificate, "
                                   "not a host certificate")
        if not any(ca.asbytes() == self.ca_key.asbytes() for ca in trusted):
            raise CertificateError(f"certificate {self.key_id!r} is signed by a CA that "
                                   "known_hosts does not trust for this host")
        if Message(self.signature).get_text() == "ssh-rsa":
            # OpenSSH (8.2+, CASignatureAlgorithms) refuses SHA-1 CA signatures too.
            raise CertificateError(f"certificate {self.key_id!r} is signed with ssh-rsa "
                                   "(SHA-1), which is not accepted; re-sign it with "
                                   "rsa-sha2-512")
        if not self.ca_key.verify_ssh_sig(self.signed, Message(self.signature)):
            raise CertificateError(f"certificate {self.key_id!r}: the CA signature is invalid")
        moment = int(time.time() if now is None else now)
        if not self.valid_after <= moment < self.valid_before:
            raise CertificateError(f"certificate {self.key_id!r} is not valid now (valid "
                                   f"from {_when(self.valid_after)} to "
                                   f"{_when(self.valid_before)})")
        wanted = [n.lower() for n in names]
        # No principals: valid for any host, as in OpenSSH; host principals
        # may be wildcard patterns.
        if self.principals and not any(fnmatch.fnmatchcase(n, p.lower())
                                       for p in self.principals for n in wanted):
            raise CertificateError(f"certificate {self.key_id!r} is for "
                                   f"{', '.join(self.principals)}, not {' / '.join(wanted)}")


def certificate_of(key: paramiko.PKey) -> HostCertificate | None:
    """The certificate a host key came with (paramiko keeps it as public_blob)."""
    blob = getattr(key, "public_blob", None)
    if blob is None or not blob.key_type.endswith(CERT_SUFFIX):
        return None
    return parse(blob.key_blob)


def parse(data: bytes) -> HostCertificate:
    msg = Message(data)
    try:
        key_type = msg.get_text()
        plain = key_type.removesuffix(CERT_SUFFIX)
        if plain == key_type or plain not in _KEY_FIELDS:
            raise CertificateError(f"unsupported certificate type {key_type!r}")
        msg.get_string()  # nonce
        for kind in _KEY_FIELDS[plain]:
            msg.get_mpint() if kind == "mpint" else msg.get_string()
        serial = msg.get_int64()
        cert_type = msg.get_int()
        key_id = msg.get_text()
        principals = _strings(msg.get_string())
        valid_after, valid_before = msg.get_int64(), msg.get_int64()
        msg.get_string()  # critical options
        msg.get_string()  # extensions
        msg.get_string()  # reserved
        ca_blob = msg.get_string()
        signed = data[:msg.packet.tell()]
        signature = msg.get_string()
        ca_key = paramiko.PKey.from_type_string(Message(ca_blob).get_text(), ca_blob)
    except (paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
        raise CertificateError(f"malformed host certificate: {exc}") from exc
    return HostCertificate(key_type, serial, cert_type, key_id, tuple(principals),
                           valid_after, valid_before, ca_key, signed, signature)


def _strings(packed: bytes) -> list[str]:
    inner = Message(packed)
    out = []
    while inner.get_remainder():
        out.append(inner.get_text())
    return out


def _when(stamp: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    except (OverflowError, ValueError, OSError):
        return "forever"   # OpenSSH's "no end" is 2**64 - 1
