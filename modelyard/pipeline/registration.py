"""What a register step does, as plain data (pure): package a model, check its gate, record a
version. Part of `Step.registration`; it round-trips through JSON with the run's definition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PackageFile:
    """A file of a model package: `source` is a reference to a step output
    (`${{ steps.S.outputs.O }}`) or a project path; `file` names the file inside a folder
    (default: found by its usual name)."""

    source: str
    file: str | None = None


@dataclass(frozen=True)
class GateRule:
    """An automatic check on a metric before a version is registered.

    Either thresholds (`min` and/or `max`), or `better_than` an alias of the model (the version
    it points at; a rule on an unset alias passes). Numbers may be `${{ }}` references.
    """

    metric: str
    min: float | str | None = None
    max: float | str | None = None
    better_than: str | None = None
    direction: str | None = None  # "lower" or "higher" is better; default: known metric names
    margin: float | str = 0.0


@dataclass(frozen=True)
class EvidenceSpec:
    """What a reviewer will see: the candidate's and the champion's predictions on `data`.

    `data` is a reference to a step output or a project path: a CSV file with a header, or a
    folder of them, holding the model's raw input columns and the `label` column (the actual
    values). `compare_with` is the alias of the version the candidate would replace.
    """

    data: str
    label: str
    compare_with: str = "champion"
    file: str | None = None  # the CSV file inside a folder (default: every *.csv, sorted)


@dataclass(frozen=True)
class Registration:
    """What a register step does: package a model, check its gates, record a version.

    The package is either an inference pipeline (`preprocessor` then `booster`) or a folder that
    already is an MLflow model (`mlflow_model`).
    """

    model: str
    description: str = ""
    preprocessor: PackageFile | None = None
    booster: PackageFile | None = None
    columns: tuple[str, ...] | None = None
    input_example: Any = None  # raw rows or records, inline or as a `${{ }}` reference
    requirements: tuple[str, ...] = ()
    mlflow_model: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    approval_status: str = "pending"
    gate: tuple[GateRule, ...] = ()
    alias_on_register: str | None = None
    evidence: EvidenceSpec | None = None

    def package_sources(self) -> dict[str, str]:
        """Where each package file comes from: `{"preprocessor": "${{ ... }}", ...}`."""
        sources = {}
        if self.preprocessor is not None:
            sources["preprocessor"] = self.preprocessor.source
        if self.booster is not None:
            sources["booster"] = self.booster.source
        if self.mlflow_model is not None:
            sources["mlflow_model"] = self.mlflow_model
        return sources

    def file_sources(self) -> dict[str, str]:
        """The package's files and the evidence's evaluation data: what the step reads."""
        sources = self.package_sources()
        if self.evidence is not None:
            sources["evidence"] = self.evidence.data
        return sources

    def templated(self) -> dict[str, Any]:
        """Every value that may hold `${{ }}` references, by field (for dependencies and lint)."""
        return {
            "package": self.package_sources(),
            "input_example": self.input_example,
            "metrics": self.metrics,
            "params": self.params,
            "tags": self.tags,
            "gate": [[r.min, r.max, r.margin] for r in self.gate],
            "evidence": self.evidence.data if self.evidence is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registration:
        values = dict(data)
        for key in ("preprocessor", "booster"):
            if values.get(key) is not None:
                values[key] = PackageFile(**values[key])
        for key in ("columns", "requirements"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        values["gate"] = tuple(GateRule(**rule) for rule in values.get("gate", ()))
        if values.get("evidence") is not None:
            values["evidence"] = EvidenceSpec(**values["evidence"])
        return cls(**values)
