"""Building a candidate's approval evidence, inside the register step's child process.

The register step has just written the candidate's package; here the candidate and the champion
(the version the candidate would replace, materialized by the driver) both predict on the same
evaluation set, and `modelyard.registry.evidence` renders what a reviewer sees. The folder written
(`report.html`, `summary.md`, the plots and `evidence.json` with the numbers behind them) becomes
the step's `evidence` output and is recorded with the version.

A candidate that cannot predict on the evaluation set fails the step (its package would fail in
production the same way). A champion that cannot (an older package, a changed input schema) is
said in the report, and the candidate is shown alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError, ModelyardError

from .evidence import Evidence, VersionEvidence, write_report

EVIDENCE_JSON = "evidence.json"


def build_evidence(params: dict[str, Any], package: Path, out: Path) -> Evidence:
    """Predict with the candidate (`package`) and the champion, and write the report to `out`.

    `params` (made by `modelyard.engine.registration`): model, data (a CSV file or a folder of
    CSV files), label, candidate {label, metrics, params, lineage}, champion (the same plus
    `package`, or None), directions, file.
    """
    frame = read_evaluation_set(Path(params["data"]), params.get("file"))
    label = params["label"]
    if label not in frame.columns:
        raise ConfigError(
            f"the evaluation set has no column '{label}' (the actual values)",
            where=str(params["data"]),
            hint="its columns are: " + ", ".join(map(str, frame.columns[:20])),
        )
    try:
        actuals = [float(v) for v in frame[label]]
    except (TypeError, ValueError):
        raise ConfigError(
            f"the label column '{label}' of the evaluation set holds values that are not numbers",
            where=str(params["data"]),
            hint="evidence plots compare numeric predictions with numeric actual values",
        ) from None
    features = frame.drop(columns=[label])
    candidate = params["candidate"]
    predictions = predict(package, features, "the candidate")
    notes: list[str] = []
    champion_side = None
    champion = params.get("champion")
    if champion is not None:
        try:
            champion_predictions: list[float] | None = predict(
                Path(champion["package"]), features, champion["label"]
            )
        except ModelyardError as exc:
            champion_predictions = None
            notes.append(f"{champion['label']} could not predict on the evaluation set: {exc}")
        champion_side = _side(champion, champion_predictions)
    evidence = Evidence(
        model=params["model"],
        candidate=_side(candidate, predictions),
        champion=champion_side,
        actuals=actuals,
        metric_directions=params.get("directions") or {},
        notes=notes,
    )
    write_report(evidence, out)
    record = {
        "model": evidence.model,
        "label": label,
        "rows": len(actuals),
        "actuals": actuals,
        "candidate": _side_json(evidence.candidate),
        "champion": (
            _side_json(champion_side, champion.get("ref"))
            if champion is not None and champion_side is not None
            else None
        ),
        "directions": dict(evidence.metric_directions),
        "notes": notes,
    }
    (out / EVIDENCE_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return evidence


def read_evaluation_set(path: Path, file: str | None = None) -> Any:
    """A DataFrame from a CSV file with a header, or from every `*.csv` of a folder (sorted)."""
    import pandas as pd  # comes with mlflow, a core dependency

    if path.is_dir():
        files = [path / file] if file else sorted(path.rglob("*.csv"))
        if not files or not all(f.is_file() for f in files):
            raise ConfigError(
                f"the evaluation set folder has no {file or '*.csv file'}",
                where=str(path),
                hint="write the evaluation rows as CSV with a header (the model's input columns "
                "and the label), or name the file with `file:`",
            )
    else:
        files = [path]
    try:
        frames = [pd.read_csv(f) for f in files]
    except (ValueError, OSError) as exc:  # pandas' parser errors are ValueErrors
        raise ConfigError(
            f"cannot read the evaluation set: {exc}",
            where=str(path),
            hint="give a CSV file with a header row",
        ) from None
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if frame.empty:
        raise ConfigError("the evaluation set has no rows", where=str(path))
    return frame


def predict(package: Path, features: Any, who: str) -> list[float]:
    """One number per row from an MLflow model folder, or a ModelyardError saying why not."""
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(str(package))
        output = model.predict(_as_signature_types(model, features))
    except Exception as exc:  # any library's failure: say whose and what
        message = " ".join(str(exc).split())[:300]
        raise ModelyardError(f"{who} failed to predict: {type(exc).__name__}: {message}") from None
    values = _flat(output)
    if len(values) != len(features):
        raise ModelyardError(
            f"{who} returned {len(values)} predictions for {len(features)} evaluation rows"
        )
    return values


def _as_signature_types(model: Any, features: Any) -> Any:
    """Whole-number columns as floats where the model takes doubles: a CSV reader reads `1,2` as
    integers, which MLflow's schema check refuses to widen."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return features
    floating = {
        spec.name
        for spec in schema.inputs
        if getattr(getattr(spec, "type", None), "name", "") in ("double", "float")
    }
    columns = [c for c in features.columns if c in floating and features[c].dtype.kind in "iu"]
    return features.astype(dict.fromkeys(columns, "float64")) if columns else features


def _flat(output: Any) -> list[float]:
    import numpy as np

    array = np.asarray(output, dtype=float)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ModelyardError(
            f"predictions have shape {array.shape}: evidence plots need one number per row"
        )
    return [float(v) for v in array]


def _side(info: dict[str, Any], predictions: list[float] | None) -> VersionEvidence:
    return VersionEvidence(
        label=info["label"],
        metrics=info.get("metrics") or {},
        params=info.get("params") or {},
        lineage=info.get("lineage") or {},
        mlflow_run_url=info.get("mlflow_run_url"),
        predictions=predictions,
    )


def _side_json(side: VersionEvidence, ref: str | None = None) -> dict[str, Any]:
    return {
        "label": side.label,
        "ref": ref,
        "metrics": dict(side.metrics),
        "predictions": list(side.predictions) if side.predictions is not None else None,
    }
