"""The deploy step, in a process of its own:
`python -m modelyard.serving.endpoint.deploy_step TASK.json`.

The driver resolved which version to deploy (the one its register step made, see
`modelyard.engine.deployment`); this process records the deployment (`service.deploy`), makes
sure the endpoint's supervisor runs, and waits for the rollout's outcome, printing the
endpoint's events to the attempt's log. Why a child process: the wait can last many minutes (a
canary bakes), and as an attempt it gets the step's timeout, retries, cancellation and log. A
rollout that rolls back, or a deployment the service refuses (a stage mismatch, an unapproved
version for prod), fails the attempt with the reason.

The supervisor outlives this process (`service.ensure_supervisor` starts it outside the attempt's
process tree, which is killed when the attempt times out or is cancelled: the rollout then goes
on, and `modelyard endpoint show` follows it).

`autoscale_policy` and `rollout_plan` are also what lint calls, so a project is checked with the
very rules the step applies.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import ModelyardError, StepFailed
from modelyard.executors.base import StepTask
from modelyard.pipeline.deployment import Deployment

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.serving.autoscale import AutoscalePolicy
    from modelyard.store.endpoints import EventRow

    from .rollout import RolloutPlan

DEFAULT_TIMEOUT = 900.0  # how long to wait for a rollout when the step has no timeout


def autoscale_policy(deployment: Deployment) -> AutoscalePolicy | None:
    """The step's autoscaling policy; a ConfigError says what is wrong with it."""
    if deployment.autoscale is None:
        return None
    from modelyard.serving.autoscale import AutoscalePolicy

    return AutoscalePolicy(**deployment.autoscale)


def rollout_plan(deployment: Deployment) -> RolloutPlan | None:
    """The step's rollout settings over the stage's default (None: the default)."""
    from .service import rollout_plan as plan

    return plan(deployment.stage, deployment.rollout or {})


def deploy_version(
    runtime: Runtime,
    *,
    project: str,
    project_root: Path,
    deployment: Deployment,
    model: str,
    version: int,
    actor: str,
    deadline: float,
    say: Callable[[str], object] = print,
) -> dict[str, Any]:
    """Deploy MODEL/VERSION as the step says and wait (until `deadline`, a time.time()) for the
    rollout's end; the step's values. Raises a ModelyardError for anything a user can fix."""
    from . import service

    name = deployment.endpoint
    ref = f"{model}/{version}"
    view = _view(runtime, project, name)
    rollout_id, variant = _rollout_of(view, ref)
    if rollout_id is None:  # the usual case: nothing of ours is rolling out yet
        request = service.DeployRequest(
            name=name,
            model=ref,
            stage=deployment.stage,
            replicas=deployment.replicas,
            autoscale=autoscale_policy(deployment),
            plan=rollout_plan(deployment),
            allow_unapproved=deployment.allow_unapproved,
        )
        result = service.deploy(runtime, project, request, actor)
        say(result.message)
        rollout_id, variant = result.rollout_id, result.variant
    else:  # an earlier attempt (its driver died, or its wait timed out) started it: wait on it
        say(f"{ref} is already rolling out to {name}: waiting for it")
    if service.ensure_supervisor(runtime, project_root, project, name):
        say(f"started the supervisor of {name}")
    outcome = "unchanged"
    if rollout_id is not None:
        rollout = service.wait_rollout(
            runtime,
            project,
            name,
            rollout_id,
            timeout=max(1.0, deadline - time.time()),
            on_event=lambda event: say(_event_line(event)),
        )
        if rollout.phase == "rolled_back":
            restored = f"{rollout.from_variant} serves again" if rollout.from_variant else ""
            raise StepFailed(
                f"rolled back: {rollout.reason}",
                hint=(f"{restored}; " if restored else "")
                + f"`modelyard endpoint show {name}` has the rollout's events",
            )
        if rollout.phase != "completed":
            raise StepFailed(
                f"the rollout of {ref} to {name} ended {rollout.phase}: {rollout.reason}"
            )
        outcome = "completed"
    shown = service.show(runtime, project, name, events=0)
    say(f"{name}: {outcome}; serves on {shown.url}/invocations")
    return {
        "endpoint": name,
        "url": shown.url,
        "variant": variant,
        "model": model,
        "version": version,
        "outcome": outcome,
    }


def _view(runtime: Runtime, project: str, name: str) -> Any:
    from modelyard.errors import NotFound

    from . import service

    try:
        return service.show(runtime, project, name, events=0)
    except NotFound:
        return None


def _rollout_of(view: Any, ref: str) -> tuple[int | None, str]:
    """The rollout in progress to this very version, if any: (its id, the variant)."""
    rollout = view.rollout if view is not None else None
    if rollout is None:
        return None, ""
    target = next((v for v in view.variants if v.name == rollout.to_variant), None)
    if target is None or target.model_ref != ref:
        return None, ""
    return rollout.id, target.name


def _event_line(event: EventRow) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event.at))
    return f"{at}  {event.kind:<8} {event.message}"


def _deadline(timeout: float | None) -> float:
    """When to stop waiting: before the step's timeout kills this process, so the attempt fails
    with a message rather than a kill. Counted from this process's start."""
    from modelyard.executors.processes import start_time

    started = start_time(os.getpid()) or time.time()
    if timeout is None:
        return started + DEFAULT_TIMEOUT
    return started + timeout - min(10.0, timeout * 0.05)


def _open_runtime(project_dir: Path) -> Runtime:
    """The project's runtime, as any modelyard process opens it: the driver passed its database
    and artifact store in MODELYARD_DATABASE_URL and MODELYARD_ARTIFACT_STORE."""
    from modelyard.engine.runtime import Runtime
    from modelyard.project.loader import project_settings
    from modelyard.settings import Settings

    return Runtime(Settings.resolve(project_dir, project_settings(project_dir)))


def main(argv: list[str]) -> int:
    task = StepTask.from_json(Path(argv[1]).read_text(encoding="utf-8"))
    params = task.params
    deadline = _deadline(params.get("timeout"))
    runtime = None
    try:
        runtime = _open_runtime(task.project_dir)
        values = deploy_version(
            runtime,
            project=params["project"],
            project_root=task.project_dir,
            deployment=Deployment.from_json(params["deployment"]),
            model=params["model"],
            version=int(params["version"]),
            actor=f"run {task.run_id}",
            deadline=deadline,
            say=lambda line: print(f"modelyard: {line}", flush=True),
        )
    except ModelyardError as exc:  # a known problem: its message says what to fix
        return task.record_failure(exc, known=True)
    except BaseException as exc:  # anything else: keep the traceback in the log
        return task.record_failure(exc, known=False, prefix="deploying failed: ")
    finally:
        if runtime is not None:
            runtime.close()
    task.values_file.write_text(json.dumps(values), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
