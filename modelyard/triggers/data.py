"""Data triggers: snapshots of data sources, their versions, and the watcher that starts runs.

A source's version is the digest of its manifest (`modelyard.store.manifests`). Polling snapshots
every source that triggers a pipeline; each pipeline it triggers that has not yet run on the
current version gets a run reading exactly that version. (Asking "has this pipeline run on it?"
rather than "is the version new?" means a version recorded by `data snapshot`, or by a watcher
that stopped before starting its runs, still gets trained on.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import ConfigError, ModelyardError, NotFound
from modelyard.store import dataversions as dv
from modelyard.store.manifests import Manifest, Snapshot, aws_manifest_keys, read_manifest

if TYPE_CHECKING:
    from modelyard.engine.driver import Observer
    from modelyard.engine.runtime import Runtime
    from modelyard.project.loader import Project
    from modelyard.store.runs import RunRow

DIGEST_PREFIX = 12  # hex digits of a digest shown in a run's trigger


def snapshot(
    runtime: Runtime, project: Project, source: str, aws_manifest: Path | None = None
) -> Snapshot:
    """Take a snapshot of a data source and record its version (once per digest).

    With `aws_manifest`, a JSON file `{"data": [{"bucketName", "objectKey"}, ...]}` as used by
    the AWS scenario, the version is exactly those objects (they must lie below the source's url).
    """
    from modelyard.store.manifests import take_snapshot

    definition = project.data_source(source)
    objects = _read_aws_manifest(aws_manifest) if aws_manifest is not None else None
    return take_snapshot(runtime.db, runtime.store, project.name, project.root, definition, objects)


def _read_aws_manifest(path: Path) -> list[tuple[str, str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the AWS manifest: {exc.strerror or exc}",
            where=str(path),
            hint="check the path",
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"the AWS manifest is not valid JSON: {exc}", where=str(path), hint="fix the file"
        ) from None
    try:
        return aws_manifest_keys(document)
    except ConfigError as exc:
        exc.where = str(path)
        raise


def list_versions(
    runtime: Runtime, project: str, source: str | None = None, limit: int = 50
) -> list[dv.DataVersionRow]:
    with runtime.db.begin() as conn:
        return dv.list_versions(conn, project, source, limit)


@dataclass
class VersionDetail:
    version: dv.DataVersionRow
    manifest: Manifest


def show_version(runtime: Runtime, project: str, digest: str) -> VersionDetail:
    """A data version by its digest or a unique prefix of it, with its manifest's files."""
    text = digest.strip()
    if len(text.removeprefix("sha256:")) < 4:
        raise ConfigError(
            f"'{digest}' is too short to name a data version",
            hint="give at least 4 hex digits of the digest (see `modelyard data versions`)",
        )
    with runtime.db.begin() as conn:
        found = dv.find_versions(conn, project, text.lower())
    if not found:
        raise NotFound(
            f"no data version {digest} in project '{project}'",
            hint="list them with `modelyard data versions`",
        )
    if len({v.digest for v in found}) > 1:
        names = ", ".join(f"{v.source} {v.digest[:19]}" for v in found[:5])
        raise ConfigError(
            f"'{digest}' matches several data versions: {names}",
            hint="give more digits of the digest",
        )
    version = found[0]
    manifest, _ = read_manifest(runtime.store, version.digest)
    return VersionDetail(version, manifest)


def triggered_pipelines(project: Project) -> dict[str, list[str]]:
    """source -> the pipelines it triggers, in file order."""
    triggers: dict[str, list[str]] = {}
    for name, pipeline in project.pipelines.items():
        for source in pipeline.data_triggers:
            triggers.setdefault(source, []).append(name)
    return triggers


def trigger_text(source: str, digest: str) -> str:
    return f"data:{source}@{digest.removeprefix('sha256:')[:DIGEST_PREFIX]}"


@dataclass
class StartedRun:
    pipeline: str
    run_id: int
    status: str
    message: str | None


@dataclass
class PollResult:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    runs: list[StartedRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def poll(
    runtime: Runtime,
    project: Project,
    report: Callable[[str], None] = lambda _: None,
    observer: Observer | None = None,
    on_settled: Callable[[RunRow], None] | None = None,
) -> PollResult:
    """Snapshot every source that triggers a pipeline; for each new version, run (create and
    drive, one after the other) every pipeline it triggers, calling `on_settled` with each run
    once it has settled. Errors are reported, not raised: one failing source or run does not stop
    the others."""
    from modelyard.engine import service

    result = PollResult()
    for source, pipelines in triggered_pipelines(project).items():
        try:
            taken = snapshot(runtime, project, source)
        except ModelyardError as exc:
            named = f"'{source}'" in exc.message  # most messages already name the source
            text = str(exc) if named else f"data source '{source}': {exc}"
            result.errors.append(text)
            report(f"error: {text}")
            continue
        result.snapshots[source] = taken
        digest = taken.version.digest
        pending = [p for p in pipelines if not _has_run_on(runtime, project, p, taken.version)]
        if not pending:
            report(f"{source}: unchanged ({_short(digest)})")
            continue
        what = "new data version" if taken.new else "data version"
        report(
            f"{source}: {what} {_short(digest)} ({_files(taken.version)}); "
            f"starting {', '.join(pending)}"
        )
        for pipeline in pending:
            options = service.RunOptions(
                trigger=trigger_text(source, digest), data_versions={source: digest}
            )
            try:
                run_id = service.create_run(runtime, project, pipeline, {}, options)
                run = service.drive_run(runtime, run_id, observer)
            except ModelyardError as exc:
                result.errors.append(f"pipeline '{pipeline}': {exc}")
                report(f"error: pipeline '{pipeline}' ({source} {_short(digest)}): {exc}")
                continue
            if on_settled is not None:
                on_settled(run)
            result.runs.append(StartedRun(pipeline, run.id, run.status, run.message))
            outcome = f"run {run.id} ({pipeline}) {run.status}"
            report(outcome + (f": {run.message}" if run.message else ""))
    return result


def _has_run_on(
    runtime: Runtime, project: Project, pipeline: str, version: dv.DataVersionRow
) -> bool:
    from modelyard.store.runs import pipeline_used_data

    with runtime.db.begin() as conn:
        return pipeline_used_data(
            conn, project.name, pipeline, version.source, version.digest, version.created_at - 1
        )


def _short(digest: str) -> str:
    return digest[: len("sha256:") + DIGEST_PREFIX]


def _files(version: dv.DataVersionRow) -> str:
    files = "file" if version.file_count == 1 else "files"
    return f"{version.file_count} {files}, {version.total_bytes:,} bytes"
