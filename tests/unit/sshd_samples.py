"""Stock sshd_config files, as the distributions ship them (canned facts for
the sshd tests)."""

DEBIAN_MAIN = """\

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

# This sshd was compiled with PATH=/usr/local/bin:/usr/bin:/bin:/usr/games

# The strategy used for options in the default sshd_config shipped with
# OpenSSH is to specify options with their default value where
# possible, but leave them commented.  Uncommented options override the
# default value.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#AddressFamily any
#ListenAddress 0.0.0.0

KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem\tsftp\t/usr/lib/openssh/sftp-server
"""

RHEL9_MAIN = """\
#\t$OpenBSD: sshd_config,v 1.104 2021/07/02 05:11:21 dtucker Exp $

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

# To modify the system-wide sshd configuration, create a  *.conf  file under
#  /etc/ssh/sshd_config.d/  which will be automatically included below
Include /etc/ssh/sshd_config.d/*.conf

# If you want to change the port on a SELinux system, you have to tell
# SELinux about this change.
# semanage port -a -t ssh_port_t -p tcp #PORTNUMBER
#
#Port 22
AuthorizedKeysFile\t.ssh/authorized_keys
Subsystem\tsftp\t/usr/libexec/openssh/sftp-server
"""

RHEL8_MAIN_HEAD = """\
#\t$OpenBSD: sshd_config,v 1.103 2018/04/09 20:41:22 tj Exp $

# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

"""

RHEL8_MAIN_BODY = """\
HostKey /etc/ssh/ssh_host_rsa_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_ed25519_key
SyslogFacility AUTHPRIV
PermitRootLogin yes
PasswordAuthentication yes
Subsystem\tsftp\t/usr/libexec/openssh/sftp-server
"""

# ------------------------------------------------------------------ drop-ins shipped beside it

#: cloud images (Ubuntu 22.04/24.04): sorts after 00-gpuprov.conf, so it loses
CLOUD_INIT = ("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n")
#: RHEL 9's own drop-in and the crypto policy it includes (sorts after ours too)
RHEL9_REDHAT = ("/etc/ssh/sshd_config.d/50-redhat.conf", """\
# This system is following system-wide crypto policy. The changes to
# crypto properties (Ciphers, MACs, ...) will not have any effect in
# this or following included files. To override some configuration option,
# write it before this block or in an earlier included file.
Include /etc/crypto-policies/back-ends/opensshserver.config

SyslogFacility AUTHPRIV

ChallengeResponseAuthentication no

GSSAPIAuthentication yes
GSSAPICleanupCredentials no

UsePAM yes

X11Forwarding yes

# It is recommended to use pam_motd in /etc/pam.d/sshd instead of PrintMotd,
# as it is more configurable and versatile than the built-in version.
PrintMotd no
""")
#: RHEL 9.4's DEFAULT crypto policy for sshd: keyword -> its list
_RHEL9_POLICY = {
    "Ciphers": (
        'aes256-gcm@openssh.com', 'chacha20-poly1305@openssh.com', 'aes256-ctr',
        'aes128-gcm@openssh.com', 'aes128-ctr'),
    "MACs": (
        'hmac-sha2-256-etm@openssh.com', 'hmac-sha1-etm@openssh.com', 'umac-128-etm@openssh.com',
        'hmac-sha2-512-etm@openssh.com', 'hmac-sha2-256', 'hmac-sha1', 'umac-128@openssh.com',
        'hmac-sha2-512'),
    "GSSAPIKexAlgorithms": (
        'gss-curve25519-sha256-', 'gss-nistp256-sha256-', 'gss-group14-sha256-',
        'gss-group16-sha512-'),
    "KexAlgorithms": (
        'curve25519-sha256', 'curve25519-sha256@libssh.org', 'ecdh-sha2-nistp256',
        'ecdh-sha2-nistp384', 'ecdh-sha2-nistp521', 'diffie-hellman-group-exchange-sha256',
        'diffie-hellman-group14-sha256', 'diffie-hellman-group16-sha512',
        'diffie-hellman-group18-sha512'),
    "HostKeyAlgorithms": (
        'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp256-cert-v01@openssh.com',
        'sk-ecdsa-sha2-nistp256@openssh.com', 'sk-ecdsa-sha2-nistp256-cert-v01@openssh.com',
        'ssh-ed25519', 'ssh-ed25519-cert-v01@openssh.com', 'sk-ssh-ed25519@openssh.com',
        'sk-ssh-ed25519-cert-v01@openssh.com', 'rsa-sha2-256',
        'rsa-sha2-256-cert-v01@openssh.com', 'rsa-sha2-512', 'rsa-sha2-512-cert-v01@openssh.com'),
    "PubkeyAcceptedAlgorithms": (
        'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp256-cert-v01@openssh.com',
        'sk-ecdsa-sha2-nistp256@openssh.com', 'sk-ecdsa-sha2-nistp256-cert-v01@openssh.com',
        'ssh-ed25519', 'ssh-ed25519-cert-v01@openssh.com', 'sk-ssh-ed25519@openssh.com',
        'sk-ssh-ed25519-cert-v01@openssh.com', 'rsa-sha2-256',
        'rsa-sha2-256-cert-v01@openssh.com', 'rsa-sha2-512', 'rsa-sha2-512-cert-v01@openssh.com'),
    "CASignatureAlgorithms": (
        'ecdsa-sha2-nistp256', 'sk-ecdsa-sha2-nistp256@openssh.com', 'ecdsa-sha2-nistp384',
        'ecdsa-sha2-nistp521', 'ssh-ed25519', 'sk-ssh-ed25519@openssh.com', 'rsa-sha2-256',
        'rsa-sha2-512'),
}
RHEL9_CRYPTO = ("/etc/crypto-policies/back-ends/opensshserver.config",
                "".join(f"{k} {','.join(v)}\n" for k, v in _RHEL9_POLICY.items()))
#: the foreign drop-in of issue 14: sorts before gpuprov's and turns passwords back on
FOREIGN_00 = ("/etc/ssh/sshd_config.d/00-aaa.conf",
              "# left by an old image\nPasswordAuthentication yes\nX11Forwarding no\n")

#: keywords `sshd -T` prints on every build besides the drop-in's, with stock values
SSHD_T_OTHERS = """\
port 22
addressfamily any
listenaddress [::]:22
listenaddress 0.0.0.0:22
pidfile /run/sshd.pid
maxsessions 10
printmotd no
permittunnel no
subsystem sftp /usr/lib/openssh/sftp-server
"""

#: what `sshd -T` prints for a keyword, where it differs from the config's spelling
_SSHD_T_SPELLING = {"prohibit-password": "without-password"}


def sshd_t(dropin: str, *, user: str = "admin", addr: str = "10.213.0.1",
           laddr: str = "10.213.0.11", overrides: dict[str, str] | None = None) -> str:
    """SshdEffective's output on a host whose settings are `dropin`'s (as sshd
    -T prints them: keywords in lower case, one AllowUsers name a line, root
    login's first alias), with `overrides` ({keyword: value}) winning."""
    values: dict[str, str] = {}
    for line in dropin.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key.lower() != "hostkey":
            values.setdefault(key.lower(), _SSHD_T_SPELLING.get(value, value))
    values.update({k.lower(): v for k, v in (overrides or {}).items()})
    out = [f"@@connection {user} {addr} {laddr} 22"]
    for key, value in values.items():
        if key in ("allowusers", "allowgroups"):
            out += [f"{key} {v}" for v in value.split()]
        else:
            out.append(f"{key} {value}")
    return "\n".join(out) + "\n" + SSHD_T_OTHERS
