"""The deploy step on the driver's side: which version to deploy, and the attempt that deploys it.

The version is the one the step's register step made (its values `registered`, `model`,
`version`); a register step whose gate refused the version leaves nothing to deploy, and the
deploy step is skipped with the gate's reason. Otherwise each attempt is a child process
(`modelyard.serving.endpoint.deploy_step`) that deploys and waits for the rollout; its values
say where the version serves. Nothing here imports the serving code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.executors.base import Executor, StepTask
from modelyard.pipeline.deployment import Deployment
from modelyard.pipeline.model import DEPLOY_VALUES, Step
from modelyard.settings import Settings
from modelyard.store import runs as db

from .preparation import fresh_workdir
from .runtime import Runtime


@dataclass
class PreparedDeployment:
    runtime: Runtime
    run: db.RunRow
    step: Step
    deployment: Deployment
    model: str  # the registry model's name
    version: int
    cache_key: str | None = None  # deploying is a side effect: it is never cached

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    def executor(self) -> Executor:
        from modelyard.executors.local import LocalProcessExecutor

        return LocalProcessExecutor()

    def task_for_attempt(self, settings: Settings, number: int) -> StepTask:
        run, step = self.run, self.step
        workdir = fresh_workdir(settings, run.id, step.name, number)
        task_file = workdir / "task.json"
        project_dir = Path(run.project_dir)
        params: dict[str, Any] = {
            "project": run.project,
            "deployment": self.deployment.to_json(),
            "model": self.model,
            "version": self.version,
            "timeout": step.timeout,
        }
        task = StepTask(
            run_id=run.id,
            step=step.name,
            attempt=number,
            kind="deploy",
            project_dir=project_dir,
            cwd=project_dir,
            workdir=workdir,
            log_path=settings.logs_dir / f"run-{run.id}" / step.name / f"attempt-{number}.log",
            inputs={},
            outputs={},
            params=params,
            values=list(DEPLOY_VALUES),
            argv=[
                sys.executable,
                "-m",
                "modelyard.serving.endpoint.deploy_step",
                str(task_file),
            ],
            timeout=step.timeout,
        )
        task_file.write_text(task.to_json(), encoding="utf-8")
        # The child, and the endpoint supervisor it starts, must use this run's database and
        # artifact store even when they are not the project's defaults (a runtime opened on other
        # settings). Set after the task file is written: a database URL may carry a password.
        task.env = {
            "MODELYARD_DATABASE_URL": settings.effective_database_url,
            "MODELYARD_ARTIFACT_STORE": settings.effective_artifact_store,
        }
        return task


def nothing_to_deploy(step: Step, steps: dict[str, db.StepRow]) -> str | None:
    """Why there is no version to deploy (the register step's gate refused it), or None."""
    assert step.deployment is not None
    row = steps.get(step.deployment.model)
    values = (row.values or {}) if row is not None else {}
    if row is None or row.status != db.SUCCEEDED or values.get("registered") is not False:
        return None
    return str(values.get("reason") or "the register step registered no version")


def prepare_deployment(
    runtime: Runtime, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]
) -> PreparedDeployment:
    """The version the step deploys; a ConfigError if its register step recorded none."""
    deployment = step.deployment
    assert deployment is not None
    row = steps.get(deployment.model)
    values = (row.values or {}) if row is not None else {}
    if row is None or row.status != db.SUCCEEDED or values.get("version") is None:
        raise ConfigError(
            f"deploy step '{step.name}': register step '{deployment.model}' recorded no version",
            hint="`deploy.model` must name a register step of the pipeline",
        )
    return PreparedDeployment(
        runtime, run, step, deployment, str(values["model"]), int(values["version"])
    )
