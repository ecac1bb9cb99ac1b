"""onboard_access: an admin user gpuprov reaches with a key, with sudo.

Checklist, per host:
1. the user exists (created with a home and a login shell when missing);
2. ~/.ssh (0700) and each public key in ~/.ssh/authorized_keys (0600), other
   keys kept;
3. /etc/sudoers.d/90-gpuprov-<user>, checked with visudo before it is used.

The user owns its home and ~/.ssh, so root must not write there: the user
could plant a symlink and turn a root write or chown into one on any file.
~/.ssh and authorized_keys are therefore made by the user itself (runuser);
a symlink it plants leads only where it could write anyway.
"""

from gpuprov.command import Command
from gpuprov.facts.users import UserHome
from gpuprov.ops.command import command
from gpuprov.ops.files import directory, file, line
from gpuprov.ops.users import USER_NAME_HINT, is_user_name


def tasks(ctx):
    user = str(ctx.vars["onboard_user"] or ctx.host.ssh_user or "").strip()
    if not user or user == "root":
        raise ctx.bad_var("onboard_user", "must name the (non-root) admin user to create")
    if not is_user_name(user) or user.endswith("$"):
        # the docker_users rule: never a path (sudoers.d/<user>), an option or shell text
        raise ctx.bad_var("onboard_user", "is not a user name", USER_NAME_HINT)
    keys = [str(k).strip() for k in ctx.vars["onboard_authorized_keys"] or []]
    if not keys or any("\n" in k or not k.startswith(("ssh-", "ecdsa-", "sk-")) for k in keys):
        raise ctx.bad_var("onboard_authorized_keys", "must list public keys (ssh-ed25519 AAAA...)")
    sudo = str(ctx.vars["onboard_sudo"])
    if sudo not in ("nopasswd", "password"):
        raise ctx.bad_var("onboard_sudo", "must be nopasswd or password")

    yield command(Command("useradd", "--create-home", "--shell", "/bin/bash", user),
                  unless=f"id {Command(user).shell()}", name=f"user {user}",
                  invalidates=(UserHome,))
    account = ctx.fact(UserHome(user))
    home, group = (account.home, account.group) if account else (f"/home/{user}", user)
    yield directory(f"{home}/.ssh", owner=user, group=group, mode="0700", as_user=user)
    for key in keys:
        yield line(f"{home}/.ssh/authorized_keys", key, create=True, owner=user, group=group,
                   mode="0600", read_as_root=True, as_user=user)
    rule = "NOPASSWD: ALL" if sudo == "nopasswd" else "ALL"
    # sudo skips sudoers.d files whose name has a '.': first.last's file is 90-gpuprov-first_last
    yield file(f"/etc/sudoers.d/90-gpuprov-{user.replace('.', '_')}",
               f"# Managed by gpuprov onboard\n{user} ALL=(ALL) {rule}\n",
               mode="0440", validate="visudo -cf {}")
