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

    def templated(self) -> dict[str, Any]:
        """Every value that may hold `${{ }}` references, by field (for dependencies and lint)."""
        return {
            "package": self.package_sources(),
            "input_example": self.input_example,
            "metrics": self.metrics,
            "params": self.params,
            "tags": self.tags,
            "gate": [[r.min, r.max, r.margin] for r in self.gate],
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
        return cls(**values)
