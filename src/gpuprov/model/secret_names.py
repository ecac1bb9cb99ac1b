"""Which variable names hold secrets: one rule, used by the variables (their
values become Secrets when read) and by `gpuprov inventory` (masked)."""

from __future__ import annotations

__all__ = ["NON_SECRET_KEY_SUFFIXES", "SECRET_SUFFIXES", "is_secret_name"]

SECRET_SUFFIXES = ("_password", "_password_hash", "_passwd", "_pass", "_passphrase", "_token",
                   "_secret", "_key")
#: `*_key` names that hold where a key is or a public key, not a secret: a
#: TLS key's PATH on the host (jupyter_tls_key), a repository signing key's URL
NON_SECRET_KEY_SUFFIXES = ("_tls_key", "_ssl_key", "_public_key", "_repo_key", "_gpg_key",
                           "_signing_key")


def is_secret_name(name: str) -> bool:
    """True for names that hold secrets by convention; their values are masked
    in every output. The rule (case-insensitive):

    - a name ending in _password, _password_hash, _passwd, _pass, _passphrase,
      _token, _secret or _key (db_password, api_key, ssh_key_passphrase);
    - a name containing `secret` anywhere (aws_secret_access_key);
    - Ansible's connection passwords: `ansible_` names containing `pass`
      (ansible_ssh_pass, ansible_become_pass, ansible_become_password);
    - except `*_key` names that say the value is a path, a URL or a public
      key: NON_SECRET_KEY_SUFFIXES (jupyter_tls_key is the key file's path).
      The `key` inside a repository mapping is not a variable name, so never
      matches. Anything else can be marked with `!secret`.
    """
    lower = name.lower()
    if lower.endswith(NON_SECRET_KEY_SUFFIXES):
        return False
    return (lower.endswith(SECRET_SUFFIXES) or "secret" in lower
            or (lower.startswith("ansible_") and "pass" in lower))
