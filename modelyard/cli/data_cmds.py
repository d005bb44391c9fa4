"""`data snapshot|versions|show` and `watch`: data sources, their versions, and data triggers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.cli.common import (
    add_json_flag,
    iso,
    load,
    local_time,
    print_json,
    project_name,
    table,
)

if TYPE_CHECKING:
    from modelyard.store.dataversions import DataVersionRow
    from modelyard.store.runs import RunRow


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "watch":
        parser.add_argument("--once", action="store_true", help="poll once, then exit")
        parser.add_argument(
            "--interval", type=float, default=60.0, help="seconds between polls (default 60)"
        )
        return
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    snap = sub.add_parser(
        "snapshot",
        help="record the data version of a source: its manifest's digest",
        description="List and hash a data source's files; record the manifest as a data "
        "version (printed as 'unchanged' if that digest is already known).",
    )
    snap.add_argument("source", help="a data source of modelyard.yaml")
    snap.add_argument(
        "--from-aws-manifest",
        metavar="FILE",
        type=Path,
        help='take exactly the objects of an AWS manifest {"data": [{"bucketName", '
        '"objectKey"}]} (they must lie below the source\'s url)',
    )
    add_json_flag(snap)
    versions = sub.add_parser("versions", help="list recorded data versions, newest first")
    versions.add_argument("source", nargs="?", help="only this data source")
    versions.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    add_json_flag(versions)
    show = sub.add_parser("show", help="show a data version's files")
    show.add_argument("digest", help="the digest, or a unique prefix of it")
    add_json_flag(show)


def execute(name: str, args: argparse.Namespace) -> int:
    if name == "watch":
        return _watch(args)
    handler = {"snapshot": _snapshot, "versions": _versions, "show": _show}[args.data_command]
    return handler(args)


def version_json(version: DataVersionRow) -> dict[str, Any]:
    return {
        "source": version.source,
        "digest": version.digest,
        "url": version.url,
        "file_count": version.file_count,
        "total_bytes": version.total_bytes,
        "created_at": iso(version.created_at),
        "run_id": version.run_id,
    }


def _snapshot(args: argparse.Namespace) -> int:
    from modelyard.cli.common import runtime_for
    from modelyard.triggers import data

    project = load(args)
    taken = data.snapshot(runtime_for(args, project), project, args.source, args.from_aws_manifest)
    version = taken.version
    if args.json:
        print_json(version_json(version) | {"new": taken.new})
        return 0
    state = "new data version" if taken.new else "unchanged"
    files = "file" if version.file_count == 1 else "files"
    print(
        f"{version.source}: {state} {version.digest}\n"
        f"  {version.file_count} {files}, {version.total_bytes:,} bytes"
        f" ({taken.hashed} read, {version.file_count - taken.hashed} unchanged since the last"
        " snapshot)"
    )
    return 0


def _versions(args: argparse.Namespace) -> int:
    from modelyard.cli.common import runtime_for
    from modelyard.triggers import data

    found = data.list_versions(runtime_for(args), project_name(args), args.source, args.limit)
    if args.json:
        print_json([version_json(v) for v in found])
        return 0
    if not found:
        print("no data versions yet: record one with `modelyard data snapshot SOURCE`")
        return 0
    rows = [
        [
            v.source,
            v.digest[:19],
            str(v.file_count),
            f"{v.total_bytes:,}",
            local_time(v.created_at),
            str(v.run_id) if v.run_id is not None else "-",
        ]
        for v in found
    ]
    print(table(["source", "digest", "files", "bytes", "created", "first run"], rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from modelyard.cli.common import runtime_for
    from modelyard.triggers import data

    detail = data.show_version(runtime_for(args), project_name(args), args.digest)
    version, manifest = detail.version, detail.manifest
    if args.json:
        print_json(version_json(version) | {"files": [f.to_json() for f in manifest.files]})
        return 0
    print(f"data version {version.digest}")
    print(f"  source {version.source} ({version.url}), recorded {local_time(version.created_at)}")
    if version.run_id is not None:
        print(f"  first used by run {version.run_id}")
    print()
    dated = any(f.date is not None for f in manifest.files)
    headers = ["path", "size", "sha256", *(["date"] if dated else [])]
    rows = [
        [f.path, f"{f.size:,}", f.sha256[:16], *([f.date or "-"] if dated else [])]
        for f in manifest.files
    ]
    print(table(headers, rows) if rows else "(no files)")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from modelyard.cli.common import runtime_for
    from modelyard.cli.progress import LineProgress
    from modelyard.cli.run_cmds import push_in_background
    from modelyard.errors import ModelyardError
    from modelyard.triggers import data

    def report(line: str) -> None:
        print(f"watch: {line}", flush=True)

    def settled(run: RunRow) -> None:  # each run's records go to MLflow as soon as it ends
        assert runtime is not None
        push_in_background(runtime, run.project_dir, "watch: ")

    progress = LineProgress(sys.stdout)
    runtime = None
    while True:
        failed = False
        try:
            project = load(args)  # each poll: the project file may have changed
            runtime = runtime or runtime_for(args, project)
            sources = data.triggered_pipelines(project)
            if not sources:
                report("no pipeline has `triggers: {data: [SOURCE]}`: nothing to watch")
            result = data.poll(runtime, project, report, progress, on_settled=settled)
            failed = bool(result.errors)
        except ModelyardError as exc:  # an invalid project file: report it, keep watching
            report(f"error: {exc}")
            failed = True
        if args.once:
            return 1 if failed else 0
        time.sleep(args.interval)  # polling interval between two polls, not a synchronisation
