"""`models list|versions|show|compare|approve|reject|alias|card|download`: the model registry.

References: `NAME` (the newest version), `NAME/VERSION` or `NAME@ALIAS`. None of these commands
imports MLflow: a downloaded package is loaded by whoever uses it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.cli.common import add_json_flag, iso, local_time, print_json, project_name, table

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.registry.service import Comparison, ModelSummary, VersionDetail

_REF_HELP = "NAME (newest version), NAME/VERSION or NAME@ALIAS"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    listing = sub.add_parser("list", help="list the models with their newest version and aliases")
    add_json_flag(listing)
    versions = sub.add_parser("versions", help="list a model's versions, newest first")
    versions.add_argument("name", help="the model's name")
    add_json_flag(versions)
    show = sub.add_parser(
        "show",
        help="a version: metrics, params, lineage, approval, aliases, package, signature",
    )
    show.add_argument("ref", help=_REF_HELP)
    add_json_flag(show)
    compare = sub.add_parser("compare", help="two versions' metrics side by side, with deltas")
    compare.add_argument("a", help=_REF_HELP)
    compare.add_argument("b", help=_REF_HELP)
    add_json_flag(compare)
    for verb, what in (("approve", "approve"), ("reject", "reject")):
        decide = sub.add_parser(verb, help=f"{what} a pending version (once; it is final)")
        decide.add_argument("ref", help=_REF_HELP)
        decide.add_argument("-m", "--comment", default="", help="why (recorded with the decision)")
        decide.add_argument("--by", help="who decides (default: the current user)")
        decide.add_argument(
            "--no-continue",
            action="store_true",
            help="do not continue a run whose approval step waits on this version",
        )
        add_json_flag(decide)
    alias = sub.add_parser("alias", help="point an alias (e.g. champion) at a version, or unset it")
    alias_sub = alias.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    alias_set = alias_sub.add_parser("set", help="point ALIAS at VERSION of model NAME")
    alias_set.add_argument("name", help="the model's name")
    alias_set.add_argument("alias", help="e.g. champion")
    # dest `number`: `version` is the global --version flag's
    alias_set.add_argument("number", metavar="VERSION", type=int, help="the version number")
    alias_set.add_argument("--by", help="who sets it (default: the current user)")
    alias_unset = alias_sub.add_parser("unset", help="remove ALIAS of model NAME")
    alias_unset.add_argument("name", help="the model's name")
    alias_unset.add_argument("alias", help="e.g. champion")
    alias_unset.add_argument("--by", help="who removes it (default: the current user)")
    card = sub.add_parser("card", help="print a version's model card (markdown)")
    card.add_argument("ref", help=_REF_HELP)
    download = sub.add_parser(
        "download", help="write a version's MLflow package to a folder (mlflow.pyfunc loads it)"
    )
    download.add_argument("ref", help=_REF_HELP)
    download.add_argument("dest", type=Path, help="a new (or empty) folder")
    add_json_flag(download)


def execute(name: str, args: argparse.Namespace) -> int:
    handler = {
        "list": _list,
        "versions": _versions,
        "show": _show,
        "compare": _compare,
        "approve": _decide,
        "reject": _decide,
        "alias": _alias,
        "card": _card,
        "download": _download,
    }[args.models_command]
    return handler(args)


# -- JSON ----------------------------------------------------------------------------------------


def version_json(detail: VersionDetail, *, history: bool = False) -> dict[str, Any]:
    version = detail.version
    data: dict[str, Any] = {
        "model": detail.model.name,
        "version": version.version,
        "ref": detail.ref,
        "description": detail.model.description,
        "created_at": iso(version.created_at),
        "approval": {
            "status": version.approval_status,
            "by": version.decided_by,
            "at": iso(version.decided_at),
            "comment": version.decision_comment,
        },
        "aliases": detail.aliases,
        "metrics": version.metrics,
        "params": version.params,
        "tags": version.tags,
        "package": {
            "digest": version.package_digest,
            "size": version.package_size,
            "flavor": version.flavor,
            "signature": version.signature,
        },
        "lineage": version.lineage,
        "gate": version.gate,
        "run_id": version.run_id,
        "evidence": version.evidence_digest,
    }
    if history:
        data["history"] = [
            {"kind": e.kind, "actor": e.actor, "at": iso(e.at), "message": e.message}
            for e in detail.events
        ]
    return data


def summary_json(summary: ModelSummary) -> dict[str, Any]:
    latest = summary.latest
    return {
        "name": summary.model.name,
        "description": summary.model.description,
        "created_at": iso(summary.model.created_at),
        "versions": summary.version_count,
        "latest": None
        if latest is None
        else {
            "version": latest.version,
            "approval_status": latest.approval_status,
            "created_at": iso(latest.created_at),
            "metrics": latest.metrics,
        },
        "aliases": summary.aliases,
    }


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "a": version_json(comparison.a),
        "b": version_json(comparison.b),
        "metrics": [m.to_json() for m in comparison.metrics],
    }


# -- commands ------------------------------------------------------------------------------------


def _runtime_and_project(args: argparse.Namespace) -> tuple[Runtime, str]:
    from modelyard.cli.common import runtime_for

    return runtime_for(args), project_name(args)


def _list(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    summaries = service.list_models(runtime, project)
    if args.json:
        print_json([summary_json(s) for s in summaries])
        return 0
    if not summaries:
        print("no models yet: a pipeline's register step registers versions")
        return 0
    rows = []
    for s in summaries:
        latest = s.latest
        rows.append(
            [
                s.model.name,
                str(s.version_count),
                str(latest.version) if latest else "-",
                latest.approval_status if latest else "-",
                ", ".join(f"{a}->{v}" for a, v in s.aliases.items()) or "-",
                local_time(latest.created_at) if latest else "-",
            ]
        )
    print(table(["model", "versions", "latest", "status", "aliases", "registered"], rows))
    return 0


def _versions(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    model, details = service.list_versions(runtime, project, args.name)
    if args.json:
        print_json([version_json(d) for d in details])
        return 0
    if not details:
        print(f"model '{model.name}' has no versions yet")
        return 0
    rows = [
        [
            str(d.version.version),
            d.version.approval_status,
            ", ".join(d.aliases) or "-",
            _metrics_text(d.version.metrics, limit=60),
            str(d.version.run_id) if d.version.run_id is not None else "-",
            local_time(d.version.created_at),
        ]
        for d in details
    ]
    print(table(["version", "status", "aliases", "metrics", "run", "registered"], rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from modelyard.engine.service import tracking_link
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    detail = service.show_version(runtime, project, args.ref)
    run_id = detail.version.lineage.get("run_id", detail.version.run_id)
    link = tracking_link(runtime, run_id) if run_id is not None else None
    if args.json:
        tracking = link.to_json() if link is not None else None
        print_json(version_json(detail, history=True) | {"tracking": tracking})
        return 0
    mlflow = None
    if run_id is not None:
        mlflow = link.text() if link is not None else f"run {run_id} no longer exists"
    print(_describe(detail, mlflow))
    return 0


def _describe(detail: VersionDetail, mlflow: str | None = None) -> str:
    from modelyard.registry.cards import signature_summary

    version = detail.version
    aliases = f"  aliases: {', '.join(detail.aliases)}" if detail.aliases else ""
    lines = [f"{detail.ref}  {version.approval_status}{aliases}"]
    if detail.model.description:
        lines.append(f"  {detail.model.description}")
    lines.append(f"  registered {local_time(version.created_at)}")
    if version.decided_by:
        decision = f"  {version.approval_status} by {version.decided_by}"
        decision += f" at {local_time(version.decided_at)}"
        if version.decision_comment:
            decision += f": {version.decision_comment}"
        lines.append(decision)
    size = f"{version.package_size:,} bytes"
    lines.append(f"  package {version.package_digest} ({size}, flavor {version.flavor})")
    lines.append(f"  inputs: {signature_summary(version.signature, 'inputs')}")
    lines.append(f"  outputs: {signature_summary(version.signature, 'outputs')}")
    lines.append(f"  metrics: {_metrics_text(version.metrics) or '(none)'}")
    for result in version.gate:
        verdict = "passed" if result.get("passed") else "failed"
        lines.append(f"  gate: {verdict}: {result.get('detail')}")
    lines.append(f"  lineage: {_lineage_text(version.lineage)}")
    if mlflow is not None:
        lines.append(f"  mlflow: {mlflow}")
    if version.evidence_digest is not None:
        lines.append(f"  evidence: modelyard evidence {detail.ref} (what the reviewer saw)")
    if version.params:
        lines.append("  params: " + ", ".join(f"{k}={v!r}" for k, v in version.params.items()))
    if version.tags:
        lines.append("  tags: " + ", ".join(f"{k}={v}" for k, v in version.tags.items()))
    if detail.events:
        lines.append("  history:")
        for event in detail.events:
            message = f": {event.message}" if event.message else ""
            lines.append(f"    {local_time(event.at)}  {event.kind} by {event.actor}{message}")
    return "\n".join(lines)


def _lineage_text(lineage: dict[str, Any]) -> str:
    parts = [f"run {lineage.get('run_id')} ({lineage.get('pipeline')}/{lineage.get('step')})"]
    git = lineage.get("git")
    if git:
        commit = (git.get("commit") or "no commit yet")[:12]
        dirty = {True: " + uncommitted changes", False: "", None: ""}[git.get("dirty")]
        parts.append(f"commit {commit}{dirty}")
    else:
        parts.append("not a git repo")
    for source, digest in (lineage.get("data") or {}).items():
        parts.append(f"data {source}@{digest[:19]}")
    for parent in lineage.get("parents") or []:
        parts.append(f"compared with {parent.get('alias')} = version {parent.get('version')}")
    return ", ".join(parts)


def _metrics_text(metrics: dict[str, Any], limit: int | None = None) -> str:
    text = ", ".join(f"{k}={_number(v)}" for k, v in metrics.items())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _compare(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    comparison = service.compare_versions(runtime, project, args.a, args.b)
    if args.json:
        print_json(comparison_json(comparison))
        return 0
    a, b = comparison.a.ref, comparison.b.ref
    if not comparison.metrics:
        print(f"{a} and {b} have no metrics")
        return 0
    better_names = {"a": a, "b": b, "equal": "equal"}
    rows = []
    for m in comparison.metrics:
        delta = "-" if m.delta is None else f"{m.delta:+.6g}"
        better = better_names.get(m.better or "", "?")
        rows.append([m.name, _shown(m.a), _shown(m.b), delta, m.direction or "?", better])
    print(table(["metric", a, b, "delta", "better is", "better"], rows))
    return 0


def _shown(value: Any) -> str:
    return "-" if value is None else _number(value)


def _decide(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    approve = args.models_command == "approve"
    detail = service.decide(
        runtime, project, args.ref, approve=approve, comment=args.comment, actor=args.by
    )
    if args.json:
        print_json(version_json(detail, history=True))
    else:
        print(f"{detail.ref} {detail.version.approval_status} by {detail.version.decided_by}")
    if detail.version.run_id is not None and not args.no_continue:
        _continue_waiting_run(runtime, detail.version.run_id, quiet=args.json)
    return 0


def _continue_waiting_run(runtime: Runtime, run_id: int, *, quiet: bool) -> None:
    """The decision may have been an approval step's too (`approves:`): let its run go on."""
    import sys

    from modelyard.engine import service as runs
    from modelyard.store import runs as db

    with runtime.db.begin() as conn:
        waiting = db.get_run(conn, run_id).status == db.WAITING
    if not waiting:
        return
    from modelyard.cli.run_cmds import push_in_background

    run = runs.continue_after_decision(runtime, run_id)
    out = sys.stderr if quiet else sys.stdout
    if run is None:
        print(f"run {run_id} continues in the process that drives it", file=out)
        return
    push_in_background(runtime, run.project_dir)
    print(f"run {run.id} {run.status}" + (f": {run.message}" if run.message else ""), file=out)


def _alias(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    if args.alias_command == "set":
        detail, before = service.set_alias(
            runtime, project, args.name, args.alias, args.number, args.by
        )
        was = ""
        if before is not None:
            was = f" (was {before})" if before != args.number else " (unchanged)"
        print(f"{args.name}@{args.alias} -> version {detail.version.version}{was}")
        return 0
    previous = service.unset_alias(runtime, project, args.name, args.alias, args.by)
    print(f"{args.name}@{args.alias} removed (it pointed at version {previous})")
    return 0


def _card(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    print(service.model_card(runtime, project, args.ref).version.card, end="")
    return 0


def _download(args: argparse.Namespace) -> int:
    from modelyard.registry import service

    runtime, project = _runtime_and_project(args)
    detail = service.download(runtime, project, args.ref, args.dest)
    if args.json:
        print_json(version_json(detail) | {"path": str(args.dest.resolve())})
        return 0
    print(
        f"{detail.ref} ({detail.version.package_digest}) written to {args.dest}\n"
        f"  load it with mlflow.pyfunc.load_model({str(args.dest)!r})"
    )
    return 0
