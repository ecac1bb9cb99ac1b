"""pyinfra's side of the benchmark: the desired state of gpuprov's
playbooks/site.yml on a Debian 12 fleet host (sysvinit), written the way a
pyinfra user would, without Jupyter's container internals.

    pyinfra -y --parallel N inventory.py deploy.py     (benchmarks/peers.py runs it)

Host data (group_data/all.py, written by the benchmark): repo_url (the
fleet's stand-in repositories), gpu_image, base_ntp_servers; _sudo = True.
"""

import json
import urllib.request
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File, FileContents
from pyinfra.facts.server import Command, KernelVersion
from pyinfra.operations import apt, files, server, sysvinit
from pyinfra.operations.util import any_changed

FILES = Path(__file__).resolve().parent.parent / "files"
REPO = host.data.repo_url
KEYRINGS = "/etc/apt/keyrings"
TOOLKIT = ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1")
TOOLKIT_VERSION = "1.18.0-1"
JUPYTER = "gpuprov-jupyter"
TOKEN = "/etc/gpuprov/jupyter/token"


def controller_fetch(url):
    """Keys are read on the controller: the hosts have neither curl nor gpg."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def text(content):
    return StringIO(content)


# -- base: login banner and time sync -------------------------------------------
groups = ", ".join(g for g in host.groups if g != "all")
files.put(name="motd", src=text(
    "GPU host managed by gpuprov - local changes to managed files are reverted\n\n"
    f"  host: {host.name}\n  groups: {groups}\n"), dest="/etc/motd")
apt.update(name="apt-get update (stand-in archive)", cache_time=3600)
apt.packages(name="chrony", packages=["chrony"])
chrony_conf = files.put(name="chrony servers", src=text(
    "# Managed by gpuprov (role base): edits here are reverted on the next apply.\n"
    + "".join(f"server {s} iburst\n" for s in host.data.base_ntp_servers)),
    dest="/etc/chrony/conf.d/gpuprov.conf")
sysvinit.service(name="chrony running", service="chrony", running=True, enabled=True)
sysvinit.service(name="restart chrony", service="chrony", restarted=True,
                 _if=chrony_conf.did_change)

# -- sshd: the hardened drop-in, checked before the reload ----------------------------
dropin = files.put(name="sshd drop-in", src=str(FILES / "00-gpuprov.conf"),
                   dest="/etc/ssh/sshd_config.d/00-gpuprov.conf", mode="644")
server.shell(name="sshd -t, reload sshd", commands=["sshd -t", "service ssh reload"],
             _if=dropin.did_change)

# -- nouveau ------------------------------------------------------------------------
blacklist = files.put(name="blacklist nouveau", src=str(FILES / "blacklist-nouveau.conf"),
                      dest="/etc/modprobe.d/blacklist-nouveau.conf")
server.shell(name="update-initramfs -u", commands=["update-initramfs -u"],
             _if=blacklist.did_change)

# -- NVIDIA driver 580 from the CUDA repository, pinned and held --------------------
apt.packages(name="kernel headers", packages=[f"linux-headers-{host.get_fact(KernelVersion)}"])
files.directory(name="apt keyrings", path=KEYRINGS)
cuda_key = files.put(name="CUDA repository key",
                     src=text(controller_fetch(f"{REPO}/keys/cuda.asc")),
                     dest=f"{KEYRINGS}/cuda-archive-keyring.asc")
cuda_repo = apt.repo(name="CUDA repository",
                     src=f"deb [signed-by={KEYRINGS}/cuda-archive-keyring.asc] {REPO}/cuda/ /",
                     filename="cuda-debian12-x86_64")
files.put(name="pin the driver branch", src=str(FILES / "gpuprov-nvidia-driver"),
          dest="/etc/apt/preferences.d/gpuprov-nvidia-driver")
files.put(name="keep unattended-upgrades off the driver",
          src=str(FILES / "51gpuprov-nvidia-driver"),
          dest="/etc/apt/apt.conf.d/51gpuprov-nvidia-driver")

# -- NVIDIA Container Toolkit repository ---------------------------------------------
toolkit_key = files.put(name="toolkit repository key",
                        src=text(controller_fetch(f"{REPO}/libnvidia-container/gpgkey")),
                        dest=f"{KEYRINGS}/nvidia-container-toolkit.asc")
toolkit_repo = apt.repo(
    name="toolkit repository",
    src=f"deb [signed-by={KEYRINGS}/nvidia-container-toolkit.asc] "
        f"{REPO}/libnvidia-container/stable/deb/$(ARCH) /",
    filename="nvidia-container-toolkit")
apt.update(name="apt-get update (new repositories)",
           _if=any_changed(cuda_key, cuda_repo, toolkit_key, toolkit_repo))

apt.packages(name="NVIDIA driver (branch 580 by the pin)", packages=["nvidia-open"])
apt.packages(name="NVIDIA Container Toolkit 1.18.0",
             packages=[f"{p}={TOOLKIT_VERSION}" for p in TOOLKIT])
held = set((host.get_fact(Command, command="apt-mark showhold") or "").split())
to_hold = [p for p in ("nvidia-open", *TOOLKIT) if p not in held]
if to_hold:
    server.shell(name="hold the driver and toolkit",
                 commands=[f"apt-mark hold {' '.join(to_hold)}"])

# -- Docker with the nvidia runtime ---------------------------------------------------
apt.packages(name="Docker Engine", packages=["docker-ce", "docker-ce-cli", "containerd.io"])
files.directory(name="/etc/docker", path="/etc/docker")
current = host.get_fact(FileContents, path="/etc/docker/daemon.json")
daemon = json.loads("\n".join(current)) if current else {}
daemon.setdefault("runtimes", {})["nvidia"] = {"args": [], "path": "nvidia-container-runtime"}
daemon_json = files.put(name="daemon.json: nvidia runtime merged",
                        src=text(json.dumps(daemon, indent=4, sort_keys=True) + "\n"),
                        dest="/etc/docker/daemon.json")
sysvinit.service(name="docker running", service="docker", running=True, enabled=True)
sysvinit.service(name="restart docker", service="docker", restarted=True,
                 _if=daemon_json.did_change)

# -- the GPU image --------------------------------------------------------------------
image = host.data.gpu_image
present = host.get_fact(Command, command=f"docker image inspect --format present {image} "
                                         "2>/dev/null || true")
if present != "present":
    server.shell(name=f"docker pull {image}", commands=[f"docker pull {image}"])

# -- Jupyter: settings and service ----------------------------------------------------
group = server.group(name="group gpuprov-jupyter", group=JUPYTER, system=True)
files.directory(name="/etc/gpuprov/jupyter", path="/etc/gpuprov/jupyter")
files.directory(name="Jupyter data", path="/srv/gpuprov/data", user="admin", group="users",
                mode="750")
token = None
if not host.get_fact(File, path=TOKEN):
    token = server.shell(name="Jupyter token (made on the host)", commands=[
        f"umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {TOKEN}",
        f"chgrp {JUPYTER} {TOKEN} && chmod 0640 {TOKEN}"])
config = files.put(name="Jupyter server config", src=str(FILES / "jupyter_server_config.json"),
                   dest="/etc/gpuprov/jupyter/jupyter_server_config.json", user="root",
                   group=JUPYTER, mode="640")
script = files.put(name="Jupyter start script", src=str(FILES / "gpuprov-jupyter"),
                   dest=f"/usr/local/sbin/{JUPYTER}", mode="755")
init = files.put(name="Jupyter init script", src=str(FILES / "gpuprov-jupyter.init"),
                 dest=f"/etc/init.d/{JUPYTER}", mode="755")
sysvinit.service(name="Jupyter running", service=JUPYTER, running=True, enabled=True)
sysvinit.service(name="restart Jupyter", service=JUPYTER, restarted=True,
                 _if=any_changed(*(op for op in (group, token, config, script, init) if op)))
