"""Model cards: a markdown page per version, written when it is registered (pure).

The card says what the version is and where it came from (metrics, gate results, parameters,
lineage, inputs of its signature), so that a reviewer can judge it without the database. It is
stored with the version: later approvals and aliases are shown by `modelyard models show`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def render_card(
    *,
    model: str,
    version: int,
    description: str,
    created_at: float,
    approval_status: str,
    package_digest: str,
    flavor: str,
    signature: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    gate: Sequence[Mapping[str, Any]],
    lineage: Mapping[str, Any],
    tags: Mapping[str, str],
) -> str:
    when = datetime.fromtimestamp(created_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {model} version {version}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"- registered: {when}, approval status at registration: {approval_status}",
        f"- package: `{package_digest}` (MLflow model, flavor {flavor})",
    ]
    lines += [f"- tag {k}: {v}" for k, v in sorted(tags.items())]
    lines += ["", "## Metrics", ""]
    lines += _table(["metric", "value"], [[k, _value(v)] for k, v in metrics.items()])
    if gate:
        lines += ["", "## Gate", ""]
        lines += [f"- {'passed' if g.get('passed') else 'failed'}: {g.get('detail')}" for g in gate]
    lines += ["", "## Lineage", ""]
    lines += _lineage(lineage)
    if signature:
        lines += ["", "## Inputs and outputs", ""]
        lines += [f"- inputs: {signature_summary(signature, 'inputs')}"]
        lines += [f"- outputs: {signature_summary(signature, 'outputs')}"]
    if params:
        lines += ["", "## Parameters", ""]
        lines += _table(["parameter", "value"], [[k, _value(v)] for k, v in params.items()])
    return "\n".join(lines) + "\n"


def signature_summary(signature: Mapping[str, Any] | None, part: str) -> str:
    """`sex (string), length (double), ...` for the inputs or outputs of an MLflow signature."""
    specs = (signature or {}).get(part)
    if not specs:
        return "(not recorded)"
    if not isinstance(specs, list):
        return str(specs)
    shown = []
    for spec in specs:
        if not isinstance(spec, dict):
            continue
        kind = spec.get("type", "?")
        if kind == "tensor":
            kind = f"tensor {spec.get('tensor-spec', {}).get('dtype', '?')}"
        name = spec.get("name")
        shown.append(f"{name} ({kind})" if name else str(kind))
    return ", ".join(shown) or "(none)"


def _lineage(lineage: Mapping[str, Any]) -> list[str]:
    lines = [
        f"- run {lineage.get('run_id')} of pipeline `{lineage.get('pipeline')}`, step "
        f"`{lineage.get('step')}` (project {lineage.get('project')})"
    ]
    git = lineage.get("git")
    if git:
        dirty = {True: " with uncommitted changes", False: "", None: " (clean state unknown)"}
        branch = f" on branch {git.get('branch')}" if git.get("branch") else ""
        commit = git.get("commit") or "(no commit yet)"
        lines.append(f"- code: git commit `{commit}`{branch}{dirty[git.get('dirty')]}")
    else:
        lines.append("- code: not a git repository")
    for source, digest in sorted((lineage.get("data") or {}).items()):
        lines.append(f"- data: `{source}` version `{digest}`")
    for name, digest in sorted((lineage.get("inputs") or {}).items()):
        lines.append(f"- {name}: `{digest}`")
    for parent in lineage.get("parents") or []:
        lines.append(
            f"- compared with {parent.get('model')} version {parent.get('version')} "
            f"({parent.get('alias')})"
        )
    return lines


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
