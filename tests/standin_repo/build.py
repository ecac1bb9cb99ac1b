# TEST DOUBLE repositories for gpuprov's test fleet: builds the stand-in apt repos.
# Never publish them or point real hosts at them.
"""Build signed local apt repositories of stand-in packages (dpkg-deb +
dpkg-scanpackages; Release written here; signed with keys generated into GNUPGHOME)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.standin_repo import packages as pkgdata
from tests.standin_repo.packages import ARCHIVE, CUDA, DOUBLES, TOOLKIT, Package

HERE = Path(__file__).resolve().parent
# Fixed timestamps keep the .debs and Release byte-stable for the same inputs.
SOURCE_DATE_EPOCH = "1735689600"  # 2025-01-01
RELEASE_DATE = "Wed, 01 Jan 2025 00:00:00 UTC"
# The archive stays unsigned: hosts use it with [trusted=yes], and an InRelease signed by
# a key apt does not know would print a GPG warning on every apt-get update.
KEY_UIDS = {
    TOOLKIT: "gpuprov test libnvidia-container (TEST DOUBLE) <toolkit@gpuprov-test.invalid>",
    CUDA: "gpuprov test cuda (TEST DOUBLE) <cuda@gpuprov-test.invalid>",
}


@dataclass(frozen=True)
class BuiltRepos:
    """What build_repos() made.  Paths are absolute; keys are per repo name
    ("archive", "libnvidia-container", "cuda")."""

    out_dir: Path
    archive_dir: Path                # flat repo: deb [trusted=yes] URL/archive ./
    libnvidia_container_dir: Path    # has gpgkey; repo at stable/deb/amd64
    libnvidia_container_repo: Path   # flat repo: deb [signed-by=...] URL/stable/deb/amd64 /
    cuda_dir: Path                   # flat repo: deb [signed-by=...] URL /
    fingerprints: dict[str, str]     # "libnvidia-container", "cuda" (archive is unsigned)
    armored_keys: dict[str, Path]    # ASCII-armored public keys
    binary_keys: dict[str, Path]     # dearmored (what signed-by= wants)
    versions: dict[str, list[str]]   # package -> versions built (all repos)
    input_hash: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BuiltRepos:
        data = json.loads(text)
        for key in ("out_dir", "archive_dir", "libnvidia_container_dir",
                    "libnvidia_container_repo", "cuda_dir"):
            data[key] = Path(data[key])
        for key in ("armored_keys", "binary_keys"):
            data[key] = {k: Path(v) for k, v in data[key].items()}
        return cls(**data)


def input_hash(kernel_release: str, cuda_repo_url: str, real_debs: Path | None = None) -> str:
    """Hash of everything the build reads: package data, builder code, double sources,
    kernel release, CUDA repo URL and the real .debs' manifest.  Same hash -> an earlier
    build can be reused."""
    digest = hashlib.sha256()
    digest.update(f"{kernel_release}\0{cuda_repo_url}\0".encode())
    if real_debs is not None:
        digest.update((Path(real_debs) / "manifest.json").read_bytes())
    for base in (HERE, DOUBLES):
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts or path.suffix == ".md":
                continue
            rel = path.relative_to(base.parent).as_posix()
            if path.is_symlink():
                digest.update(f"L {rel} {os.readlink(path)}\0".encode())
            elif path.is_file():
                digest.update(f"F {rel} {path.stat().st_mode & 0o111:o}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kwargs)


def _gpg(gnupg_home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, GNUPGHOME=str(gnupg_home))
    return _run(["gpg", "--batch", "--quiet", "--no-tty", *args], env=env, **kwargs)


def ensure_key(gnupg_home: Path, uid: str) -> str:
    """Fingerprint of the key with this uid, generated (ed25519, no passphrase) if absent."""
    gnupg_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(gnupg_home, 0o700)
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys", uid],
        env=dict(os.environ, GNUPGHOME=str(gnupg_home)), capture_output=True, text=True)
    if listing.returncode != 0:
        _gpg(gnupg_home, "--pinentry-mode", "loopback", "--passphrase", "",
             "--quick-generate-key", uid, "ed25519", "sign", "never")
        listing = _gpg(gnupg_home, "--with-colons", "--list-secret-keys", uid, text=True)
    return next(line.split(":")[9] for line in listing.stdout.splitlines()
                if line.startswith("fpr:"))


def _stage(pkg: Package, stage: Path, generated: dict[str, bytes]) -> None:
    for spec in pkg.files:
        target = stage / spec.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec.link is not None:
            target.symlink_to(spec.link)
            continue
        if spec.source is not None:
            target.write_bytes((DOUBLES / spec.source).read_bytes())
        elif spec.generated is not None:
            target.write_bytes(generated[spec.generated])
        else:
            target.write_text(spec.text or "")
        target.chmod(spec.mode)
    debian = stage / "DEBIAN"
    debian.mkdir(parents=True)
    fields = [("Package", pkg.name), ("Version", pkg.version),
              ("Architecture", pkg.architecture), ("Maintainer", pkgdata.MAINTAINER),
              ("Section", "misc"), ("Priority", "optional")]
    for name, values in (("Depends", pkg.depends), ("Provides", pkg.provides),
                         ("Conflicts", pkg.conflicts), ("Replaces", pkg.replaces)):
        if values:
            fields.append((name, ", ".join(values)))
    fields += list(pkg.extra_fields)
    fields.append(("Description", pkg.description))
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields))
    # Files under /etc are conffiles, as debhelper would mark them (symlinks are not).
    conffiles = [f.path for f in pkg.files if f.path.startswith("/etc/") and f.link is None]
    if conffiles:
        (debian / "conffiles").write_text("".join(f"{p}\n" for p in conffiles))
    for script, template in pkg.scripts:
        text = (DOUBLES / "maint" / template).read_text()
        for key, value in pkg.subst:
            text = text.replace(f"@{key}@", value)
        (debian / script).write_text(text)
        (debian / script).chmod(0o755)


def _build_deb(pkg: Package, work: Path, pool: Path, generated: dict[str, bytes]) -> Path:
    version = pkg.version.split(":", 1)[-1]
    stage = work / f"{pkg.repo}_{pkg.name}_{version}"
    _stage(pkg, stage, generated)
    deb = pool / f"{pkg.name}_{version}_{pkg.architecture}.deb"
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(stage), str(deb)],
         env=env)
    return deb


def _index(repo_dir: Path, gnupg_home: Path, fingerprint: str | None, label: str) -> None:
    """Packages, Packages.gz, Release, InRelease and Release.gpg of a flat repo."""
    scan = _run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=repo_dir)
    (repo_dir / "Packages").write_bytes(scan.stdout)
    with open(repo_dir / "Packages.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(scan.stdout)
    lines = [f"Origin: {label}", f"Label: {label}", f"Date: {RELEASE_DATE}",
             "Architectures: amd64 all", f"Description: {label} (gpuprov TEST DOUBLE repo)"]
    for algo, name in (("md5", "MD5Sum"), ("sha256", "SHA256")):
        lines.append(f"{name}:")
        for index in ("Packages", "Packages.gz"):
            data = (repo_dir / index).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data):>8} {index}")
    release = repo_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    if fingerprint is None:
        return
    _gpg(gnupg_home, "--local-user", fingerprint, "--digest-algo", "SHA256", "--clearsign",
         "--output", str(repo_dir / "InRelease"), str(release))
    _gpg(gnupg_home, "--local-user", fingerprint, "--digest-algo", "SHA256", "--armor",
         "--detach-sign", "--output", str(repo_dir / "Release.gpg"), str(release))


def build_repos(out_dir: Path, kernel_release: str, gnupg_home: Path,
                cuda_repo_url: str, real_debs: Path | None = None) -> BuiltRepos:
    """Build archive/, libnvidia-container/ and cuda/ under out_dir (replacing them).
    real_debs: a directory of real Debian .debs (tests/fleet/realdebs.py) indexed in
    archive/ beside the stand-ins."""
    out_dir = Path(out_dir).resolve()
    gnupg_home = Path(gnupg_home).resolve()
    repo_dirs = {ARCHIVE: out_dir / "archive",
                 TOOLKIT: out_dir / "libnvidia-container" / "stable" / "deb" / "amd64",
                 CUDA: out_dir / "cuda"}
    keys_dir = out_dir / "keys"
    for path in (out_dir / "archive", out_dir / "libnvidia-container", out_dir / "cuda", keys_dir):
        shutil.rmtree(path, ignore_errors=True)
    for path in list(repo_dirs.values()) + [keys_dir]:
        path.mkdir(parents=True)
    try:
        fingerprints = {repo: ensure_key(gnupg_home, uid) for repo, uid in KEY_UIDS.items()}
        armored, binary = {}, {}
        for repo, fpr in fingerprints.items():
            armored[repo] = keys_dir / f"{repo}.asc"
            binary[repo] = keys_dir / f"{repo}.gpg"
            armored[repo].write_bytes(_gpg(gnupg_home, "--armor", "--export", fpr).stdout)
            binary[repo].write_bytes(_gpg(gnupg_home, "--export", fpr).stdout)
        shutil.copy(armored[TOOLKIT], out_dir / "libnvidia-container" / "gpgkey")
        shutil.copy(binary[CUDA], repo_dirs[CUDA] / "cuda-archive-keyring.gpg")
        generated = {"cuda-keyring": binary[CUDA].read_bytes()}
        pkgs = pkgdata.all_packages(kernel_release, cuda_repo_url)
        with tempfile.TemporaryDirectory(prefix="gpuprov-standin-") as work, \
                ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            jobs = [pool.submit(_build_deb, p, Path(work), repo_dirs[p.repo], generated)
                    for p in pkgs]
            for job in jobs:
                job.result()
        if real_debs is not None:
            _add_real_debs(Path(real_debs), repo_dirs[ARCHIVE])
        for repo, repo_dir in repo_dirs.items():
            _index(repo_dir, gnupg_home, fingerprints.get(repo), f"gpuprov-{repo}")
    finally:
        # gpg starts an agent for key generation and signing; don't leave it running.
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True, check=False,
                       env=dict(os.environ, GNUPGHOME=str(gnupg_home)))
    versions: dict[str, list[str]] = {}
    for pkg in pkgs:
        if pkg.version not in versions.setdefault(pkg.name, []):
            versions[pkg.name].append(pkg.version)
    for name, version in _real_versions(real_debs).items():
        versions.setdefault(name, []).append(version)
    built = BuiltRepos(out_dir, repo_dirs[ARCHIVE], out_dir / "libnvidia-container",
                       repo_dirs[TOOLKIT], repo_dirs[CUDA], fingerprints, armored, binary,
                       versions, input_hash(kernel_release, cuda_repo_url, real_debs))
    (out_dir / "built.json").write_text(built.to_json())
    return built


def _add_real_debs(real_debs: Path, archive: Path) -> None:
    """Hard links where the cache shares a file system with the archive (~50 MB of .debs)."""
    for deb in sorted(real_debs.glob("*.deb")):
        try:
            os.link(deb, archive / deb.name)
        except OSError:
            shutil.copyfile(deb, archive / deb.name)


def _real_versions(real_debs: Path | None) -> dict[str, str]:
    if real_debs is None:
        return {}
    manifest = json.loads((Path(real_debs) / "manifest.json").read_text())
    return {name: entry["version"] for name, entry in manifest["packages"].items()}


def ensure_repos(cache_root: Path, kernel_release: str, cuda_repo_url: str,
                 real_debs: Path | None = None) -> BuiltRepos:
    """build_repos() into cache_root/<input hash>/ unless that build already exists;
    GNUPGHOME is cache_root/<hash>/gnupg.  Safe to call from every test run."""
    digest = input_hash(kernel_release, cuda_repo_url, real_debs)
    final = Path(cache_root).resolve() / digest[:16]
    if (final / "built.json").exists():
        return BuiltRepos.from_json((final / "built.json").read_text())
    # built.json is written last, so a directory without it is an interrupted build.
    shutil.rmtree(final, ignore_errors=True)
    try:
        return build_repos(final, kernel_release, final / "gnupg", cuda_repo_url, real_debs)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
