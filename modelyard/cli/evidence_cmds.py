"""`evidence REF`: what a reviewer looks at before approving a model version.

REF is a run id (the versions that run registered) or a model reference (`NAME/VERSION`,
`NAME@ALIAS`, `NAME`). The evidence folder recorded with the version (report.html with the plots,
summary.md, evidence.json) is written out, its markdown summary printed, and the report's path
given, so `modelyard evidence 12` then a browser (or `--open`) shows it all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.cli.common import add_json_flag, print_json, project_name, runtime_for
from modelyard.errors import NotFound

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="a run id, or NAME/VERSION, NAME@ALIAS or NAME")
    parser.add_argument(
        "--dest",
        type=Path,
        help="write the report here (a new or empty folder; default: "
        ".modelyard/evidence/NAME-VERSION, replaced each time)",
    )
    parser.add_argument("--open", action="store_true", help="open the report in a browser")
    add_json_flag(parser)


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.registry import service
    from modelyard.registry.evidence import HTML_FILE, MARKDOWN_FILE

    runtime = runtime_for(args)
    project = project_name(args)
    shown: list[dict[str, Any]] = []
    refs = _version_refs(runtime, args.ref)
    for ref in refs:
        # resolved first: NAME@ALIAS and NAME name a folder by the version they point at
        label = service.show_version(runtime, project, ref).ref.replace("/", "-")
        if args.dest is None:
            dest = runtime.settings.state_dir / "evidence" / label
        else:  # a run that registered several versions: one folder each
            dest = args.dest / label if len(refs) > 1 else args.dest
        detail = service.write_evidence(runtime, project, ref, dest, replace=args.dest is None)
        summary = (dest / MARKDOWN_FILE).read_text(encoding="utf-8")
        report = (dest / HTML_FILE).resolve()
        shown.append(
            {
                "version": detail.ref,
                "approval_status": detail.version.approval_status,
                "folder": str(dest.resolve()),
                "report": str(report),
                "summary": summary,
                "mlflow": _mlflow_links(runtime, project, detail.version.run_id, dest),
            }
        )
        if args.open:
            import webbrowser

            webbrowser.open(report.as_uri())
    if args.json:
        print_json(shown if len(shown) > 1 else shown[0])
        return 0
    for item in shown:
        print(item["summary"].rstrip())
        print(f"\nreport: {item['report']}  ({item['version']} is {item['approval_status']})")
        for role, link in item["mlflow"].items():
            print(f"mlflow ({role}): {link['url'] or link['hint']}")
    return 0


def _mlflow_links(
    runtime: Runtime, project: str, run_id: int | None, folder: Path
) -> dict[str, dict[str, Any]]:
    """The MLflow runs of the candidate and the champion, as they are now (the report was
    written before the candidate's run reached MLflow)."""
    from modelyard.engine.service import tracking_link
    from modelyard.registry import service
    from modelyard.registry.evidence_build import EVIDENCE_JSON

    runs = {"candidate": run_id}
    record = json.loads((folder / EVIDENCE_JSON).read_text(encoding="utf-8"))
    champion = (record.get("champion") or {}).get("ref")
    if champion:
        runs["champion"] = service.show_version(runtime, project, champion).version.run_id
    links = {}
    for role, rid in runs.items():
        link = tracking_link(runtime, rid) if rid is not None else None
        if link is not None:
            links[role] = link.to_json()
    return links


def _version_refs(runtime: Runtime, ref: str) -> list[str]:
    """The versions a run id registered, or the model reference itself."""
    if not ref.isdigit():
        return [ref]
    from modelyard.store import runs as db

    run_id = int(ref)
    with runtime.db.begin() as conn:
        steps = db.get_steps(conn, run_id) if db.get_run(conn, run_id) else {}
    refs = [
        f"{values['model']}/{values['version']}"
        for row in steps.values()
        if row.kind == "register" and (values := row.values or {}).get("registered")
    ]
    if not refs:
        raise NotFound(
            f"run {run_id} registered no model version (yet)",
            hint=f"see its steps with `modelyard show {run_id}`",
        )
    return refs
