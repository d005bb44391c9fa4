"""Typed settings: defaults, then the project file's `settings:`, then MODELYARD_* variables.

Nothing here touches the disk or the network at import time; `Settings.resolve` is called once at
the edge (CLI, server) and the typed object is passed down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelyard.errors import ConfigError

STATE_DIR_NAME = ".modelyard"

# Environment variable -> settings field. Only these are read, so a typo in a variable name cannot
# silently change behaviour of another setting.
ENV_VARS = {
    "MODELYARD_DATABASE_URL": "database_url",
    "MODELYARD_ARTIFACT_STORE": "artifact_store",
    "MODELYARD_MAX_PARALLEL": "max_parallel",
    "MODELYARD_LEASE_SECONDS": "lease_seconds",
    "MODELYARD_KEEP_WORKDIRS": "keep_workdirs",
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = Field(description="Folder for the embedded database, artifacts and logs.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in the state folder."
    )
    artifact_store: str | None = Field(
        default=None, description="Local folder or fsspec URL (s3://bucket/prefix)."
    )
    artifact_store_options: dict[str, Any] = Field(default_factory=dict)
    max_parallel: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    lease_seconds: float = Field(default=30.0, gt=1.0)
    keep_workdirs: bool = False

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'modelyard.db'}"

    @property
    def effective_artifact_store(self) -> str:
        return self.artifact_store or str(self.state_dir / "artifacts")

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
        values: dict[str, Any] = {"state_dir": project_root / STATE_DIR_NAME}
        values.update(project_settings or {})
        for var, field in ENV_VARS.items():
            if env.get(var):
                values[field] = env[var]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            source = next((v for v, f in ENV_VARS.items() if f == field and env.get(v)), None)
            raise ConfigError(
                f"setting '{field}' is invalid: {first['msg']}",
                where=source or "modelyard.yaml settings",
                hint="correct the value or remove it to use the default",
            ) from None
