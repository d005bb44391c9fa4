"""Typed settings: defaults, then the project file's `settings:`, then MODELYARD_* variables.

A frozen dataclass validated by hand rather than a pydantic model: every command reads settings,
and keeping pydantic off that path saves ~70 ms per command. Nothing here touches the disk or
the network at import time; `Settings.resolve` is called once at the edge (CLI, server).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError

STATE_DIR_NAME = ".modelyard"

# Environment variable -> settings field. Only these are read, so a typo in a variable name cannot
# silently change another setting.
ENV_VARS = {
    "MODELYARD_DATABASE_URL": "database_url",
    "MODELYARD_ARTIFACT_STORE": "artifact_store",
    "MODELYARD_MAX_PARALLEL": "max_parallel",
    "MODELYARD_LEASE_SECONDS": "lease_seconds",
    "MODELYARD_KEEP_WORKDIRS": "keep_workdirs",
    "MLFLOW_TRACKING_URI": "tracking_uri",
    "MODELYARD_TRACKING_AUTO_PUSH": "tracking_auto_push",
    "MODELYARD_TRACKING_ARTIFACT_LIMIT": "tracking_artifact_limit",
}

DEFAULT_TRACKING_ARTIFACT_LIMIT = 20 * 1024 * 1024  # 20 MiB


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str | None = None  # SQLAlchemy URL; default: SQLite in the state folder
    artifact_store: str | None = None  # local folder or fsspec URL (s3://bucket/prefix)
    artifact_store_options: dict[str, Any] = field(default_factory=dict)
    max_parallel: int = field(default_factory=lambda: os.cpu_count() or 1)
    lease_seconds: float = 30.0
    keep_workdirs: bool = False
    tracking_uri: str | None = None  # MLflow tracking URI; default: SQLite in the state folder
    tracking_auto_push: bool = True  # push to MLflow in a detached process after `run`/`resume`
    # outputs up to this size (bytes) are logged to MLflow; register steps' outputs always are
    tracking_artifact_limit: int = DEFAULT_TRACKING_ARTIFACT_LIMIT

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'modelyard.db'}"

    @property
    def effective_artifact_store(self) -> str:
        return self.artifact_store or str(self.state_dir / "artifacts")

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def tracking_artifacts_dir(self) -> Path:
        """Where MLflow keeps artifacts of the default (local) tracking store."""
        return self.state_dir / "mlartifacts"

    def embedded_artifact_root(self, tracking_uri: str) -> Path | None:
        """The artifact folder of `tracking_uri` if it is the default embedded store, else None
        (a tracking server or a configured store chooses its own)."""
        if self.tracking_uri or tracking_uri != self.effective_tracking_uri:
            return None
        return self.tracking_artifacts_dir

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    @classmethod
    def resolve(
        cls,
        project_root: Path,
        project_settings: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {"state_dir": project_root / STATE_DIR_NAME}
        for key, value in (project_settings or {}).items():
            if key not in known:
                raise ConfigError(
                    f"unknown setting '{key}'",
                    where="modelyard.yaml settings",
                    hint="the settings are: " + ", ".join(sorted(known - {"state_dir"})),
                )
            values[key] = _convert(key, value, "modelyard.yaml settings")
        for var, key in ENV_VARS.items():
            if env.get(var):
                values[key] = _convert(key, env[var], var)
        return cls(**values)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        whole = isinstance(value, int | str) and not isinstance(value, bool)
        number = int(value) if whole else None
        if number is None or not low <= number <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return convert


def _seconds(value: Any) -> float:
    number = float(value) if isinstance(value, int | float | str) else 0.0
    if number <= 1.0:
        raise ValueError("expected a number of seconds above 1")
    return number


def _bytes(value: Any) -> int:
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    if not text.isdigit():
        raise ValueError("expected a whole number of bytes (0 or more), e.g. 20971520")
    return int(text)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping")
    return value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "state_dir": Path,
    "database_url": _text,
    "artifact_store": _text,
    "artifact_store_options": _mapping,
    "max_parallel": _int_between(1, 1024),
    "lease_seconds": _seconds,
    "keep_workdirs": _flag,
    "tracking_uri": _text,
    "tracking_auto_push": _flag,
    "tracking_artifact_limit": _bytes,
}


def _convert(key: str, value: Any, source: str) -> Any:
    try:
        return _CONVERTERS[key](value)
    except (TypeError, ValueError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "wrong type"
        raise ConfigError(
            f"setting '{key}' is invalid: {message} (got {value!r})"
            if key != "database_url"
            else f"setting '{key}' is invalid: {message}",
            where=source,
            hint="correct the value or remove it to use the default",
        ) from None
