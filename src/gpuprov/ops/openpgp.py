"""OpenPGP public keys on the controller, without gpg: dearmoring (what
`gpg --dearmor` does) and the v4 fingerprints of the primary keys in a key
block, so a repository's key can be pinned by the fingerprint its vendor
publishes (RFC 4880 sections 4.2, 6 and 12.2).
"""

from __future__ import annotations

import base64
import hashlib
import re

_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(key: str | bytes) -> bytes:
    """ASCII-armored OpenPGP key(s) -> binary keyring, on the controller
    (what `gpg --dearmor` does), so targets need no gpg. Binary keys pass
    through. Raises ValueError on a truncated or corrupted armor."""
    if isinstance(key, bytes):
        if _ARMOR_BEGIN.encode() not in key:
            return key
        key = key.decode("ascii")
    if _ARMOR_BEGIN not in key:
        raise ValueError("key is neither binary nor an ASCII-armored public key block")
    out = b""
    for block in key.split(_ARMOR_BEGIN)[1:]:
        if _ARMOR_END not in block:
            raise ValueError("armored key has no END line (truncated?)")
        lines = [ln.strip() for ln in block.split(_ARMOR_END)[0].strip().splitlines()]
        # Armor headers ("Comment: ...") end at the first blank line, if any.
        if "" in lines and any(":" in ln for ln in lines[:lines.index("")]):
            lines = lines[lines.index("") + 1:]
        body = [ln for ln in lines if ln]
        checksum = None
        if body and body[-1].startswith("=") and len(body[-1]) == 5:
            checksum = body.pop()
        data = base64.b64decode("".join(body), validate=True)
        if checksum is not None and _crc24(data).to_bytes(3, "big") != base64.b64decode(
                checksum[1:]):
            raise ValueError("armored key checksum mismatch (corrupted key text)")
        out += data
    return out


_PUBLIC_KEY_TAG = 6


def fingerprints(key: str | bytes) -> list[str]:
    """The fingerprints (40 upper-case hex digits) of the primary keys in an
    armored or binary key block: SHA-1 over 0x99, the two-byte length and the
    public key packet's body. Raises ValueError for anything but v4 keys or
    a malformed packet stream."""
    data = dearmor(key)
    found = []
    for tag, body in _packets(data):
        if tag != _PUBLIC_KEY_TAG:
            continue
        if not body or body[0] != 4:
            raise ValueError(f"a version {body[0] if body else '?'} primary key: only "
                             "version 4 fingerprints can be checked")
        found.append(hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body,
                                  usedforsecurity=False).hexdigest().upper())
    if not found:
        raise ValueError("no public key packet in the key")
    return found


def normalize_fingerprint(text: str) -> str:
    """A fingerprint as people write it (spaces, lower case, 0x) -> 40 upper-case
    hex digits; ValueError for anything else (a short key id is not enough)."""
    value = re.sub(r"\s+", "", text).upper().removeprefix("0X")
    if not re.fullmatch(r"[0-9A-F]{40}", value):
        raise ValueError(f"{text!r} is not an OpenPGP v4 fingerprint (40 hex digits; "
                         "a short key id is not enough)")
    return value


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of each packet; old and new header formats."""
    packets = []
    pos = 0
    while pos < len(data):
        head = data[pos]
        if not head & 0x80:
            raise ValueError(f"not an OpenPGP packet at byte {pos}")
        if head & 0x40:  # new format
            tag = head & 0x3F
            pos += 1
            if pos >= len(data):
                raise ValueError("truncated packet header")
            first = data[pos]
            if first < 192:
                length, pos = first, pos + 1
            elif first < 224:
                if pos + 1 >= len(data):
                    raise ValueError("truncated packet header")
                length, pos = ((first - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif first == 255:
                length, pos = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
            else:  # partial body lengths: only data packets use them, never keys
                raise ValueError("a partial-length packet in a key block")
        else:
            tag = (head >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(head & 0x03)
            if size is None:
                raise ValueError("an indeterminate-length packet in a key block")
            length = int.from_bytes(data[pos + 1:pos + 1 + size], "big")
            pos += 1 + size
        if pos + length > len(data):
            raise ValueError("truncated packet")
        packets.append((tag, data[pos:pos + length]))
        pos += length
    return packets
