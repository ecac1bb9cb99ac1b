"""nouveau: blacklisted, so the NVIDIA driver gets the GPU.

The initramfs is rebuilt only when the blacklist file changed (early boot
loads modules from it), and a reboot is requested only when nouveau is
loaded right now: on a host where it never loaded, the file is enough.
"""

from gpuprov.facts.system import ModuleLoaded
from gpuprov.ops.base import RebootAfter
from gpuprov.ops.command import command
from gpuprov.ops.files import file

BLACKLIST = "/etc/modprobe.d/blacklist-nouveau.conf"


def tasks(ctx):
    if not ctx.vars["nouveau_blacklist"]:
        raise ctx.skip("nouveau_blacklist is false")
    blacklist = file(BLACKLIST, ctx.render("blacklist-nouveau.conf.j2"),
                     notify="rebuild initramfs")
    if ctx.fact(ModuleLoaded("nouveau")):
        yield RebootAfter(blacklist, "nouveau is loaded and holds the GPU until then")
    else:
        yield blacklist


def rebuild_initramfs(ctx):
    if ctx.os.family == "rhel":
        return [command("dracut --force", name="dracut --force (rebuild initramfs)")]
    return [command("update-initramfs -u", name="update-initramfs -u (rebuild initramfs)")]


HANDLERS = {"rebuild initramfs": rebuild_initramfs}
