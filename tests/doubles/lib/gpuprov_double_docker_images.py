# TEST DOUBLE for gpuprov's test fleet: docker image commands. Never install on real hosts.
"""pull, image inspect, images, rmi and load against the JSON image store."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from typing import Any, BinaryIO

from gpuprov_double import host_path
from gpuprov_double_docker_format import TemplateError, render
from gpuprov_double_docker_state import (
    config_blob,
    find_image,
    image_record,
    load_images,
    parse_ref,
    registry,
    save_images,
)


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")


def _human_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{size}B"


def pull(ref: str, quiet: bool = False, out: Any = None) -> tuple[dict[str, Any] | None, str]:
    """Pull ref into the store. Returns (record, error message or '')."""
    out = out or sys.stdout
    parsed = parse_ref(ref)
    if parsed is None:
        return None, f'invalid reference format: repository name ({ref}) must be lowercase'
    repo, tag, digest = parsed
    entries = registry()
    same_repo = {r: e for r, e in entries.items() if parse_ref(r) and parse_ref(r)[0] == repo}
    if not same_repo:
        return None, (f"pull access denied for {repo}, repository does not exist or may require "
                      "'docker login': denied: requested access to the resource is denied")
    if digest:
        entry = next((e for e in same_repo.values() if e["digest"] == digest), None)
        shown = f"{repo}@{digest}"
    else:
        entry = same_repo.get(f"{repo}:{tag}")
        shown = f"{repo}:{tag}"
    if entry is None:
        return None, f"manifest for {shown} not found: manifest unknown: manifest unknown"
    images = load_images()
    record = images.get(entry["id"])
    repo_digest = f"{repo}@{entry['digest']}"
    up_to_date = record is not None and repo_digest in record["RepoDigests"] and (
        tag is None or shown in record["RepoTags"])
    if record is None:
        record = image_record(config_blob(entry.get("variant", entry["id"])), int(entry["size"]))
        record["Id"] = entry["id"]  # the registry is the authority on the id
    if tag and not digest:
        for other in images.values():  # a tag moves: the old image keeps only its digests
            if other["Id"] != record["Id"] and shown in other["RepoTags"]:
                other["RepoTags"].remove(shown)
        if shown not in record["RepoTags"]:
            record["RepoTags"].append(shown)
    if repo_digest not in record["RepoDigests"]:
        record["RepoDigests"].append(repo_digest)
    images[record["Id"]] = record
    save_images(images)
    if not quiet:
        path = repo.split("/", 1)[1] if "/" in repo and "." in repo.split("/")[0] else (
            repo if "/" in repo else f"library/{repo}")
        out.write(f"{digest or tag}: Pulling from {path}\n")
        if not up_to_date:
            layer = entry["digest"].removeprefix("sha256:")
            for start in (0, 12, 24):
                out.write(f"{layer[start:start + 12]}: Pull complete\n")
        out.write(f"Digest: {entry['digest']}\n")
        status = "Image is up to date for" if up_to_date else "Downloaded newer image for"
        out.write(f"Status: {status} {shown}\n")
    out.write(f"{shown}\n")
    return record, ""


def cmd_pull(args: list[str]) -> int:
    quiet = any(a in ("-q", "--quiet") for a in args)
    refs = [a for a in args if not a.startswith("-")]
    if len(refs) != 1:
        _err('"docker pull" requires exactly 1 argument.')
        return 1
    ref = refs[0]
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref and not quiet:
        sys.stdout.write("Using default tag: latest\n")
    record, error = pull(ref, quiet)
    if record is None:
        _err(f"Error response from daemon: {error}")
        return 1
    return 0


def format_option(args: list[str]) -> tuple[str | None, list[str]]:
    rest, fmt = [], None
    it = iter(args)
    for arg in it:
        if arg in ("-f", "--format"):
            fmt = next(it, "")
        elif arg.startswith("--format="):
            fmt = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return fmt, rest


def print_objects(objects: list[dict[str, Any]], fmt: str | None) -> int:
    if fmt is None or fmt == "json":
        if fmt == "json":
            for obj in objects:
                sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write(json.dumps(objects, indent=4) + "\n")
        return 0
    try:
        for obj in objects:
            sys.stdout.write(render(fmt, obj) + "\n")
    except TemplateError as err:
        _err(f"template: :1: executing \"\" at <{fmt}>: {err}")
        return 1
    return 0


def cmd_image_inspect(args: list[str]) -> int:
    fmt, refs = format_option(args)
    images = load_images()
    found, missing = [], []
    for ref in refs:
        record = find_image(images, ref)
        (found.append(record) if record else missing.append(ref))
    if found or fmt is None:
        code = print_objects(found, fmt)
        if code:
            return code
    for ref in missing:
        _err(f"Error: No such image: {ref}")
    return 1 if missing else 0


def cmd_images(args: list[str]) -> int:
    fmt, rest = format_option(args)
    quiet = "-q" in rest or "--quiet" in rest
    rows = []
    for record in load_images().values():
        tags = record["RepoTags"] or ["<none>:<none>"]
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            rows.append({"Repository": repo, "Tag": name, "ID": record["Id"][7:19],
                         "CreatedSince": "2 weeks ago", "CreatedAt": record["Created"],
                         "Size": _human_size(record["Size"]),
                         "Digest": (record["RepoDigests"] or ["<none>"])[0].split("@")[-1]})
    if quiet:
        sys.stdout.write("".join(sorted({r["ID"] + "\n" for r in rows})))
        return 0
    if fmt:
        return print_objects(rows, fmt)
    sys.stdout.write(f"{'REPOSITORY':<48} {'TAG':<20} {'IMAGE ID':<12}   {'CREATED':<12}   SIZE\n")
    for r in rows:
        sys.stdout.write(f"{r['Repository']:<48} {r['Tag']:<20} {r['ID']:<12}   "
                         f"{r['CreatedSince']:<12}   {r['Size']}\n")
    return 0


def cmd_rmi(args: list[str], containers: dict[str, dict[str, Any]]) -> int:
    force = any(a in ("-f", "--force") for a in args)
    images = load_images()
    code = 0
    for ref in (a for a in args if not a.startswith("-")):
        record = find_image(images, ref)
        if record is None:
            _err(f"Error response from daemon: No such image: {ref}")
            code = 1
            continue
        users = [c for c in containers.values() if c["Image"] == record["Id"]]
        if users and not force:
            _err(f'Error response from daemon: conflict: unable to remove repository reference '
                 f'"{ref}" (must force) - container {users[0]["Id"][:12]} is using its '
                 f'referenced image {record["Id"][7:19]}')
            code = 1
            continue
        parsed = parse_ref(ref)
        tag = f"{parsed[0]}:{parsed[1]}" if parsed and parsed[1] else None
        if tag in record["RepoTags"] and len(record["RepoTags"]) > 1 and not force:
            record["RepoTags"].remove(tag)
            sys.stdout.write(f"Untagged: {tag}\n")
            continue
        for name in record["RepoTags"] + record["RepoDigests"]:
            sys.stdout.write(f"Untagged: {name}\n")
        sys.stdout.write(f"Deleted: {record['Id']}\n")
        del images[record["Id"]]
    save_images(images)
    return code


def load_archive(stream: BinaryIO) -> list[str]:
    """Import a `docker save` tarball; returns the output lines."""
    data = stream.read()
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            blobs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore
                     if m.isfile()}
    except (tarfile.TarError, KeyError, json.JSONDecodeError, TypeError) as err:
        raise ValueError("unexpected EOF" if not data else f"invalid archive: {err}") from err
    images = load_images()
    lines = []
    for item in manifest:
        config = blobs[item["Config"]]
        size = sum(len(blobs[layer]) for layer in item.get("Layers", []))
        record = image_record(config, size)
        record = images.get(record["Id"], record)
        for tag in item.get("RepoTags") or []:
            for other in images.values():
                if other["Id"] != record["Id"] and tag in other["RepoTags"]:
                    other["RepoTags"].remove(tag)
            if tag not in record["RepoTags"]:
                record["RepoTags"].append(tag)
            lines.append(f"Loaded image: {tag}")
        if not item.get("RepoTags"):
            lines.append(f"Loaded image ID: {record['Id']}")
        images[record["Id"]] = record
    save_images(images)
    return lines


def cmd_load(args: list[str]) -> int:
    path = None
    it = iter(args)
    for arg in it:
        if arg in ("-i", "--input"):
            path = next(it, None)
        elif arg.startswith("--input="):
            path = arg.split("=", 1)[1]
    try:
        if path is None:
            lines = load_archive(sys.stdin.buffer)
        else:
            # Absolute paths name files on the (simulated) host; relative ones the cwd.
            target = host_path(path) if path.startswith("/") else path
            with open(target, "rb") as handle:
                lines = load_archive(handle)
    except FileNotFoundError:
        _err(f"open {path}: no such file or directory")
        return 1
    except ValueError as err:
        _err(f"Error response from daemon: {err}")
        return 1
    if "-q" not in args and "--quiet" not in args:
        sys.stdout.write("".join(line + "\n" for line in lines))
    return 0
