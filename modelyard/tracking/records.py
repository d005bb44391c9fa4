"""Recording what steps logged in the metadata DB, and queueing it for MLflow (the outbox).

The driver calls these inside the transaction that records a step's end or a run's end, so the
metadata DB always agrees with the run; `modelyard.tracking.pusher` drains the outbox later.
Outbox records about a step carry its name (`"step"` in the payload): the pusher logs them on the
step's nested MLflow run with their own names (`rmse`) and on the pipeline's run prefixed with the
step's name (`train.rmse`). A step's numeric values are metrics too (`train.n_rows`). Records
queued before nested runs existed have no step and prefixed names: they go to the pipeline's run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelyard.store import tracking_schema as tt

if TYPE_CHECKING:
    from modelyard.settings import Settings
    from modelyard.tracking.links import Link

MAX_KEY = 250  # MLflow's limit on metric and parameter names
MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter's value
MAX_WARNINGS = 5


@dataclass
class Logged:
    """What one attempt logged: metrics (key, value, step index), parameters, and bad lines."""

    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_metrics_file(path: Path) -> Logged:
    """Parse a metrics file (JSON lines); a bad line is a warning, never an error."""
    logged = Logged()
    if not path.exists():
        return logged
    bad: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        logged.warnings.append(f"cannot read the metrics file: {exc}")
        return logged
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        problem = _parse_line(line, logged)
        if problem:
            bad.append(f"line {number}: {problem}")
    if bad:
        more = f" (and {len(bad) - MAX_WARNINGS} more)" if len(bad) > MAX_WARNINGS else ""
        logged.warnings.append(
            "ignored bad lines of the metrics file: " + "; ".join(bad[:MAX_WARNINGS]) + more
        )
    return logged


def _parse_line(line: str, logged: Logged) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    if "metric" in record:
        key, value, step = record["metric"], record.get("value"), record.get("step", 0)
        if not _good_key(key):
            return "the metric's name must be a non-empty string"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric '{key}' has no numeric value"
        if not math.isfinite(value):
            return f"metric '{key}' is not finite"
        if isinstance(step, bool) or not isinstance(step, int):
            return f"the step of metric '{key}' is not a whole number"
        logged.metrics.append((key, float(value), step))
        return None
    if "param" in record:
        key = record["param"]
        if not _good_key(key) or "value" not in record:
            return "a parameter needs a non-empty name and a value"
        logged.params[key] = param_text(record["value"])
        return None
    return 'expected {"metric": NAME, "value": NUMBER} or {"param": NAME, "value": VALUE}'


def _good_key(key: Any) -> bool:
    return isinstance(key, str) and bool(key.strip()) and len(key) <= MAX_KEY


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_VALUE]


def numeric_values(values: dict[str, Any]) -> list[tuple[str, float, int]]:
    return [
        (k, float(v), 0)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]


def record_step(
    conn: sa.Connection,
    run_id: int,
    step: str,
    logged: Logged,
    values: dict[str, Any],
    at: float | None = None,
) -> None:
    """Record a succeeded step's metrics (logged ones and numeric values) and parameters."""
    at = time.time() if at is None else at
    metrics = logged.metrics + numeric_values(values)
    if metrics:
        conn.execute(
            tt.run_metrics.insert(),
            [
                {"run_id": run_id, "step": step, "key": k, "value": v, "step_index": i, "at": at}
                for k, v, i in metrics
            ],
        )
        millis = int(at * 1000)
        payload = [[k, v, i, millis] for k, v, i in metrics]
        enqueue(conn, run_id, "metrics", {"step": step, "metrics": payload}, at)
    if logged.params:
        _insert_params(conn, run_id, step, logged.params)
        enqueue(conn, run_id, "params", {"step": step, "params": logged.params}, at)


def record_outputs(
    conn: sa.Connection,
    run_id: int,
    step: str,
    kind: str,
    outputs: dict[str, dict[str, Any]],
    at: float | None = None,
) -> None:
    """Queue a succeeded step's outputs (name -> artifact ref JSON) for its nested MLflow run.

    A register step's outputs (the model package, the evidence) are always logged; others only
    up to the pushing process's `tracking_artifact_limit`.
    """
    for name, ref in outputs.items():
        payload = {"step": step, "output": name, "ref": ref, "always": kind == "register"}
        enqueue(conn, run_id, "artifact", payload, at)


def record_step_end(
    conn: sa.Connection,
    run_id: int,
    step: str,
    kind: str,
    status: str,
    *,
    started: float | None,
    at: float,
    cached: bool = False,
) -> None:
    """Queue the end of a step that ran (or came from the cache): its nested MLflow run is
    created if no record made it yet, and terminated with the step's status."""
    payload = {
        "step": step,
        "kind": kind,
        "status": status,
        "cached": cached,
        "started": int((started or at) * 1000),
        "at": int(at * 1000),
    }
    enqueue(conn, run_id, "step", payload, at)


def record_run_params(conn: sa.Connection, run_id: int, params: dict[str, Any]) -> None:
    """Record the run's resolved parameters (at its creation)."""
    texts = {k: param_text(v) for k, v in params.items() if _good_key(k)}
    if texts:
        _insert_params(conn, run_id, None, texts)
    # always queued: the pusher creates the MLflow run on the first record of a run
    enqueue(conn, run_id, "params", {"params": texts})


def record_run_end(conn: sa.Connection, run_id: int, status: str, at: float) -> None:
    enqueue(conn, run_id, "status", {"status": status, "at": int(at * 1000)}, at)


def enqueue(
    conn: sa.Connection, run_id: int, kind: str, payload: dict[str, Any], at: float | None = None
) -> None:
    conn.execute(
        tt.tracking_outbox.insert().values(
            run_id=run_id,
            kind=kind,
            payload=payload,
            created_at=time.time() if at is None else at,
        )
    )


def _insert_params(
    conn: sa.Connection, run_id: int, step: str | None, params: dict[str, str]
) -> None:
    conn.execute(
        tt.run_params.insert(),
        [{"run_id": run_id, "step": step, "key": k, "value": v} for k, v in params.items()],
    )


def run_metrics(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    t = tt.run_metrics
    query = sa.select(t.c.step, t.c.key, t.c.value, t.c.step_index, t.c.at)
    rows = conn.execute(query.where(t.c.run_id == run_id).order_by(t.c.id))
    return [dict(r._mapping) for r in rows]


def run_params(conn: sa.Connection, run_id: int) -> list[dict[str, Any]]:
    t = tt.run_params
    query = sa.select(t.c.step, t.c.key, t.c.value).where(t.c.run_id == run_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(t.c.id))]


def step_metrics(conn: sa.Connection, run_id: int) -> dict[str, dict[str, float]]:
    """step -> metric -> its last value (highest step index; the latest logged on a tie)."""
    latest: dict[str, dict[str, tuple[int, float]]] = {}
    for m in run_metrics(conn, run_id):  # in logging order
        shown = latest.setdefault(m["step"], {})
        if m["key"] not in shown or m["step_index"] >= shown[m["key"]][0]:
            shown[m["key"]] = (m["step_index"], m["value"])
    return {step: {k: v for k, (_, v) in keys.items()} for step, keys in latest.items()}


def tracking_link(conn: sa.Connection, run_id: int, settings: Settings) -> Link:
    """The MLflow link of pipeline run `run_id` (`links.NOT_PUSHED` as its hint until the pusher
    has created the MLflow run); raises NotFound for an unknown run."""
    from modelyard.store.runs import get_run
    from modelyard.tracking.links import run_link

    return run_link(get_run(conn, run_id), settings)
