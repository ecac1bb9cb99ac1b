"""The GPU stack end to end over real SSH (issue 5's acceptance): the bundled
site.yml (base, nouveau, nvidia_driver, container_toolkit, gpu_image, verify)
on a mixed lab / cloud / cluster inventory of 8 fleet hosts with the stand-in
packages: converge, idempotence, drift-check, `gpuprov verify`, tampering
detected and fixed, an air-gapped host loading the image from a tarball, and
a host pinned to branch 470 that fails alone, untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.doubles.make_image_archive import make_image_archive
from tests.fleet.fleet import Fleet
from tests.fleet.host import FleetHost
from tests.fleet.site import DIGEST, IMAGE, site_vars
from tests.fleet.test_engine import changed_resources, gpuprov, report

TOOLKIT = ("nvidia-container-toolkit", "nvidia-container-toolkit-base",
           "libnvidia-container-tools", "libnvidia-container1")


@pytest.fixture(scope="module")
def hosts(fleet: Fleet) -> list[FleetHost]:
    chosen = [h for h in fleet.hosts if h.variant == "default"][:8]
    assert len(chosen) == 8
    for host in chosen:
        fleet.reset(host)
    return chosen


def by_group(hosts: list[FleetHost], group: str) -> list[FleetHost]:
    return [h for h in hosts if group in h.groups]


@pytest.fixture(scope="module")
def roles(hosts: list[FleetHost]) -> dict[str, FleetHost]:
    """Who plays which part in this test."""
    lab, cloud, cluster = by_group(hosts, "lab"), by_group(hosts, "cloud"), by_group(hosts,
                                                                                     "cluster")
    assert len(lab) >= 2 and len(cloud) >= 2 and cluster
    return {"old-branch": lab[-1], "air-gapped": cloud[-1], "lab": lab[0], "cloud": cloud[0],
            "cluster": cluster[0]}


@pytest.fixture(scope="module")
def workdir(fleet: Fleet, hosts: list[FleetHost], roles: dict[str, FleetHost],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("gpu-stack")
    url = fleet.repo_url
    inventory = fleet.inventory(hosts)
    inventory["all"]["vars"].update(site_vars(url))
    children = inventory["all"]["children"]
    children["lab"]["vars"] = {"gpu_devices": "0"}
    children["cluster"]["vars"] = {"container_runtime": "containerd"}
    archive = work / "pytorch-cuda.tar"
    make_image_archive(archive, [IMAGE])
    children["cloud"]["hosts"][roles["air-gapped"].name].update(
        {"gpu_image_archive": str(archive), "gpu_image_digest": ""})
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (work / "host_vars").mkdir()
    (work / "host_vars" / f"{roles['old-branch'].name}.yml").write_text(
        "# an old workstation someone pinned to its old driver\nnvidia_driver_branch: 470\n")
    return work


def good(hosts: list[FleetHost], roles: dict[str, FleetHost]) -> list[FleetHost]:
    return [h for h in hosts if h is not roles["old-branch"]]


def docker_calls(host: FleetHost, verb: str) -> int:
    log = host.read_file("/var/lib/gpuprov-test-double/docker/calls.log") or ""
    return sum(1 for line in log.splitlines() if json.loads(line)["argv"][:1] == [verb])


@pytest.fixture(scope="module")
def converged(workdir: Path, hosts: list[FleetHost], roles: dict[str, FleetHost]
              ) -> dict[str, dict]:
    first = gpuprov("apply", "inventory.yml", "--report", "first.json", cwd=workdir)
    # one host is pinned to branch 470 and must fail: exit 2, the others converge
    assert first.returncode == 2, first.stdout + first.stderr
    return report(workdir / "first.json")


def test_a_branch_below_535_fails_that_host_alone_and_touches_nothing(
        converged: dict[str, dict], roles: dict[str, FleetHost], hosts: list[FleetHost]) -> None:
    old = roles["old-branch"]
    result = converged[old.name]
    assert result["failed"], result
    assert "nvidia_driver_branch=470" in result["error"]
    assert "535" in result["error"] and "CUDA 12" in result["error"]
    assert f"host_vars/{old.name}.yml:2" in result["error"], "names the file and line"
    assert result["changed"] == 0
    # refused before anything was touched: not even the base role's files
    assert old.read_file("/etc/modprobe.d/blacklist-nouveau.conf") is None
    assert "gpuprov" not in (old.read_file("/etc/motd") or "")
    for host in good(hosts, roles):
        errors = [t["error"] for t in converged[host.name]["tasks"] if t.get("error")]
        assert not converged[host.name]["failed"], errors


def test_apply_converges_the_mixed_fleet(converged: dict[str, dict], hosts: list[FleetHost],
                                         roles: dict[str, FleetHost]) -> None:
    for host in good(hosts, roles):
        assert "blacklist nouveau" in (host.read_file(
            "/etc/modprobe.d/blacklist-nouveau.conf") or "")
        held = host.exec("apt-mark showhold").stdout.split()
        assert "nvidia-open" in held and set(TOOLKIT) <= set(held), held
        versions = host.exec("dpkg-query -W -f '${Package} ${Version}\\n' " + " ".join(TOOLKIT)
                             ).stdout
        assert versions.count(" 1.18.0-1") == 4, versions
        assert "580.95.05" in host.exec("nvidia-smi --query-gpu=driver_version "
                                        "--format=csv,noheader").stdout
        # the module "loaded" where a kernel shows it (what the nvidia_driver role reads)
        assert host.read_file("/sys/module/nvidia/version") == "580.95.05\n"
        pin = host.read_file("/etc/apt/preferences.d/gpuprov-nvidia-driver") or ""
        assert "Pin: version 580.*" in pin
        daemon = json.loads(host.read_file("/etc/docker/daemon.json") or "{}")
        assert daemon["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
        effective = json.loads(host.read_file(
            "/run/gpuprov-test-double/docker/effective-daemon.json") or "{}")
        assert "nvidia" in effective.get("runtimes", {}), "docker restarted with the new file"
        tasks = [t["task"] for t in converged[host.name]["tasks"] if t.get("handler")]
        assert any("update-initramfs -u" in t for t in tasks), tasks
    cluster = roles["cluster"]
    toml = cluster.read_file("/etc/containerd/config.toml") or ""
    assert "containerd.runtimes.nvidia]" in toml
    assert "containerd.runtimes.nvidia]" in (cluster.read_file(
        "/run/gpuprov-test-double/containerd/effective-config.toml") or "")
    gapped = roles["air-gapped"]
    assert docker_calls(gapped, "pull") == 0 and docker_calls(gapped, "load") == 1
    assert docker_calls(roles["cloud"], "pull") == 1


def test_second_apply_changes_nothing_and_drift_check_is_clean(
        workdir: Path, converged: dict[str, dict], hosts: list[FleetHost],
        roles: dict[str, FleetHost]) -> None:
    limit = f"all:!{roles['old-branch'].name}"
    pulls = {h.name: docker_calls(h, "pull") for h in hosts}
    second = gpuprov("apply", "inventory.yml", "-l", limit, "--report", "second.json",
                     cwd=workdir)
    assert second.returncode == 0, second.stdout + second.stderr
    again = report(workdir / "second.json")
    assert {n: h["changed"] for n, h in again.items()} == {h.name: 0 for h in good(hosts,
                                                                                   roles)}
    assert {h.name: docker_calls(h, "pull") for h in hosts} == pulls, "never re-pulls"
    drift = gpuprov("drift-check", "inventory.yml", "-l", limit, cwd=workdir)
    assert drift.returncode == 0, drift.stdout + drift.stderr


def test_verify_passes_on_every_converged_host(workdir: Path, converged: dict[str, dict],
                                               hosts: list[FleetHost],
                                               roles: dict[str, FleetHost]) -> None:
    limit = f"all:!{roles['old-branch'].name}"
    table = gpuprov("verify", "inventory.yml", "-l", limit, cwd=workdir)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "pass" in table.stdout and "580.95.05" in table.stdout
    out = gpuprov("verify", "inventory.yml", "-l", limit, "--format", "json", cwd=workdir)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {r["host"]: r for r in json.loads(out.stdout)["hosts"]}
    assert set(rows) == {h.name for h in good(hosts, roles)}
    for row in rows.values():
        assert row["status"] == "pass", row
        assert row["driver_version"] == "580.95.05"
        assert row["cuda_version"] and row["torch_cuda"] == "12.8"
        assert len(row["gpus"]) == 2
    assert len(rows[roles["lab"].name]["container_devices"]) == 1, "gpu_devices 0 honoured"
    assert len(rows[roles["cloud"].name]["container_devices"]) == 2
    assert rows[roles["cloud"].name]["image_digest"] == DIGEST
    run = [json.loads(line)["argv"] for line in (roles["lab"].read_file(
        "/var/lib/gpuprov-test-double/docker/calls.log") or "").splitlines()]
    assert ["run", "--rm", "--pull", "never", "--gpus", '"device=0"'] in [a[:6] for a in run]
    # the old-branch host fails verify, with the reason
    bad = gpuprov("verify", "inventory.yml", "-l", roles["old-branch"].name, cwd=workdir)
    assert bad.returncode == 2 and "fail" in bad.stdout, bad.stdout + bad.stderr


JUPYTER = "gpuprov-jupyter"
TOKEN_FILE = "/etc/gpuprov/jupyter/token"
INIT_SCRIPT = "/etc/init.d/gpuprov-jupyter"


def jupyter_run(host: FleetHost) -> list[str]:
    """The argv of the last `docker run` that started the Jupyter container."""
    log = host.read_file("/var/lib/gpuprov-test-double/docker/calls.log") or ""
    runs = [json.loads(line)["argv"] for line in log.splitlines()]
    runs = [a for a in runs if a[:1] == ["run"] and JUPYTER in a]
    assert runs, f"{host.name}: Jupyter was never started"
    return runs[-1]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]


def test_jupyter_is_private_and_its_token_never_leaves_the_host(
        workdir: Path, converged: dict[str, dict], hosts: list[FleetHost],
        roles: dict[str, FleetHost]) -> None:
    reports = (workdir / "first.json").read_text()
    for host in good(hosts, roles):
        argv = jupyter_run(host)
        assert option(argv, "-p") == ["127.0.0.1:8888:8888"], argv
        assert option(argv, "--user") == ["1000:100"]
        assert option(argv, "--security-opt") == ["no-new-privileges"]
        gpus = '"device=0"' if "lab" in host.groups else "all"
        assert option(argv, "--gpus") == [gpus]
        assert "/srv/gpuprov/data:/workspace/data" in option(argv, "-v")
        assert option(argv, "--cap-drop") == ["ALL"]
        # the token: a read-only mounted file, its path in the environment, not its value
        assert f"{TOKEN_FILE}:/etc/gpuprov/jupyter_token:ro" in option(argv, "-v")
        assert option(argv, "-e") == ["HOME=/workspace/data", "JUPYTER_TOKEN=",
                                      "JUPYTER_TOKEN_FILE=/etc/gpuprov/jupyter_token"]
        assert host.exec(f"stat -c '%a %U %G' {TOKEN_FILE}").stdout.split() == \
            ["640", "root", "gpuprov-jupyter"]
        token = host.exec(f"cat {TOKEN_FILE}").stdout
        assert len(token) == 64 and int(token, 16) >= 0, "64 hex digits, no newline"
        assert token not in " ".join(argv)
        assert token not in host.exec(f"docker inspect {JUPYTER}").stdout
        assert token not in host.exec("ps -eo args").stdout
        assert token not in reports
        running = host.exec(f"docker inspect -f '{{{{.State.Running}}}}' {JUPYTER}").stdout
        assert running.strip() == "true"
    # the researcher's way in, without any token
    lab = roles["lab"]
    url = gpuprov("jupyter-url", lab.name, "inventory.yml", cwd=workdir)
    assert url.returncode == 0, url.stderr
    assert f"ssh -L 8888:localhost:8888 admin@{lab.address}" in url.stdout
    assert f"sudo cat {TOKEN_FILE}" in url.stdout
    assert lab.exec(f"cat {TOKEN_FILE}").stdout.strip() not in url.stdout


def test_an_exposed_jupyter_port_or_a_changed_init_script_is_drift(
        workdir: Path, converged: dict[str, dict], roles: dict[str, FleetHost]) -> None:
    lab, cloud = roles["lab"], roles["cloud"]
    # someone re-runs the container by hand, published on every address
    spec = lab.exec(f"docker inspect -f '{{{{index .Config.Labels \"gpuprov.spec\"}}}}' "
                    f"{JUPYTER}").stdout.strip()
    lab.exec(f"docker rm -f {JUPYTER} >/dev/null && docker run -d --name {JUPYTER} "
             f"-p 0.0.0.0:8888:8888 --label gpuprov.spec={spec} {IMAGE} >/dev/null")
    cloud.exec(f"echo '# local tweak' >> {INIT_SCRIPT}")
    limit = f"{lab.name}:{cloud.name}"
    drift = gpuprov("drift-check", "inventory.yml", "-l", limit, "--format", "json",
                    cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    found = {name: {(d["resource"], d.get("summary", "")) for d in h["drift"]}
             for name, h in json.loads(drift.stdout)["hosts"].items()}
    assert any(r == f"container {JUPYTER}" and "publishes 0.0.0.0:8888, wanted 127.0.0.1:8888"
               in summary for r, summary in found[lab.name]), found[lab.name]
    assert {r for r, _ in found[cloud.name]} == {f"file {INIT_SCRIPT}"}, found[cloud.name]

    fixed = gpuprov("apply", "inventory.yml", "-l", limit, cwd=workdir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert option(jupyter_run(lab), "-p") == ["127.0.0.1:8888:8888"]
    clean = gpuprov("drift-check", "inventory.yml", "-l", limit, cwd=workdir)
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_tampering_is_detected_by_drift_check_and_fixed_by_apply(
        workdir: Path, converged: dict[str, dict], hosts: list[FleetHost],
        roles: dict[str, FleetHost]) -> None:
    limit = f"all:!{roles['old-branch'].name}"
    lab, cloud, cluster = roles["lab"], roles["cloud"], roles["cluster"]
    gapped = roles["air-gapped"]
    lab.exec("rm /etc/modprobe.d/blacklist-nouveau.conf")
    cloud.exec("apt-mark unhold " + " ".join(TOOLKIT) + " >/dev/null && "
               "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
               + " ".join(f"{p}=1.17.8-1" for p in TOOLKIT) + " >/dev/null")
    cluster.write_file("/etc/docker/daemon.json", '{"log-level": "warn"}\n')
    gapped.exec("docker rmi -f " + IMAGE)   # -f: the Jupyter container uses it
    tampered = {lab.name: "file /etc/modprobe.d/blacklist-nouveau.conf",
                cloud.name: "packages " + ", ".join(TOOLKIT),
                cluster.name: "file /etc/docker/daemon.json",
                gapped.name: f"docker image {IMAGE} (from pytorch-cuda.tar)"}

    drift = gpuprov("drift-check", "inventory.yml", "-l", limit, "--format", "json",
                    cwd=workdir)
    assert drift.returncode == 3, drift.stdout + drift.stderr
    data = json.loads(drift.stdout)
    found = {name: {d["resource"] for d in h["drift"]} for name, h in data["hosts"].items()
             if h["drift"]}
    assert set(found) == set(tampered), found
    for name, resource in tampered.items():
        assert any(resource in r for r in found[name]), (name, found[name])

    fixed = gpuprov("apply", "inventory.yml", "-l", limit, "--report", "fix.json", cwd=workdir)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    changed = {n: changed_resources(h) for n, h in report(workdir / "fix.json").items()
               if changed_resources(h)}
    assert set(changed) == set(tampered), changed
    assert "1.18.0-1" in cloud.exec("dpkg-query -W -f '${Version}' nvidia-container-toolkit"
                                    ).stdout
    daemon = json.loads(cluster.read_file("/etc/docker/daemon.json") or "{}")
    assert daemon["log-level"] == "warn" and "nvidia" in daemon["runtimes"]
    assert docker_calls(gapped, "load") == 2 and docker_calls(gapped, "pull") == 0
    clean = gpuprov("drift-check", "inventory.yml", "-l", limit, cwd=workdir)
    assert clean.returncode == 0, clean.stdout + clean.stderr
