"""What the CLI (and the `deploy` step) do to endpoints: deploy, list, show, stop, start, delete.

A deploy writes the desired state in one transaction: the endpoint (created on first use), a new
variant for the model version and a rollout from the current variant to it; then it makes sure
the endpoint's supervisor process runs, which carries the rollout out. The caller may wait for
the rollout's outcome (`wait_rollout`), reading the events the supervisor writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, NotFound, StateConflict
from modelyard.store import endpoints as store

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.serving.autoscale import AutoscalePolicy

    from .rollout import RolloutPlan

STAGES = ("dev", "prod")
BACKENDS = ("local", "ray")  # where replicas run: processes here, or Ray Serve (ray_backend.py)
HEARTBEAT_SECONDS = 1.0  # how often a supervisor writes that it is alive
STALE_AFTER = 15.0  # a supervisor silent this long is taken for dead (another machine's, say)


@dataclass(frozen=True)
class DeployRequest:
    name: str
    model: str  # a registry reference: abalone/3, abalone@champion, abalone
    stage: str
    replicas: int | None = None  # None: keep (1 for a new endpoint)
    autoscale: AutoscalePolicy | None = None
    plan: RolloutPlan | None = None  # None: the stage's default
    host: str = "127.0.0.1"
    port: int | None = None  # None: keep, or a free port for a new endpoint
    config: dict[str, Any] | None = None  # serving options and guards; None: keep
    allow_unapproved: bool = False
    backend: str | None = None  # None: keep ("local" for a new endpoint)
    ray_address: str | None = None  # the ray backend's cluster; None: keep (a local instance)


@dataclass(frozen=True)
class DeployResult:
    endpoint: str
    variant: str
    rollout_id: int | None  # None: the version already serves; only its replicas changed
    message: str


@dataclass
class EndpointView:
    """An endpoint as the CLI shows it: its rows plus whether its supervisor is alive."""

    row: store.EndpointRow
    variants: list[store.VariantRow]
    rollout: store.RolloutRow | None = None
    recent_rollouts: list[store.RolloutRow] = field(default_factory=list)
    events: list[store.EventRow] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return supervisor_alive(self.row)

    @property
    def status(self) -> str:
        if not self.running:
            return "stopped" if self.row.status in ("stopped", "deleting") else "down"
        return self.row.status

    @property
    def url(self) -> str | None:
        if self.row.port is None:
            return None
        return f"http://{self.row.host}:{self.row.port}"

    def to_json(self) -> dict[str, Any]:
        row = self.row
        data: dict[str, Any] = {
            "name": row.name,
            "stage": row.stage,
            "backend": row.backend,
            "ray": row.config.get("ray") if row.backend == "ray" else None,
            "url": self.url,
            "status": self.status,
            "status_reason": row.status_reason,
            "supervisor_running": self.running,
            "supervisor": row.supervisor,  # host:pid:start-time
            "variants": [
                {
                    "name": v.name,
                    "model": v.model_ref,
                    "state": v.state,
                    "weight": v.weight,
                    "replicas": v.replicas,
                    "autoscale": v.autoscale,
                    "observed": v.observed,
                }
                for v in self.variants
            ],
            "rollout": _rollout_json(self.rollout) if self.rollout else None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
        guards = row.config.get("guards", {})
        data["guards"] = {
            "api_keys": len(row.config.get("key_digests", [])),
            **{k: v for k, v in guards.items()},
        }
        if self.recent_rollouts:
            data["rollouts"] = [_rollout_json(r) for r in self.recent_rollouts]
        if self.events:
            data["events"] = [
                {"id": e.id, "at": e.at, "kind": e.kind, "message": e.message} for e in self.events
            ]
        return data


def _rollout_json(rollout: store.RolloutRow) -> dict[str, Any]:
    return {
        "id": rollout.id,
        "from": rollout.from_variant,
        "to": rollout.to_variant,
        "phase": rollout.phase,
        "reason": rollout.reason,
        "plan": rollout.plan,
        "state": rollout.state,
        "created_by": rollout.created_by,
        "created_at": rollout.created_at,
        "finished_at": rollout.finished_at,
    }


def supervisor_alive(row: store.EndpointRow) -> bool:
    from modelyard.engine.runtime import owner_is_dead

    if row.supervisor is None or owner_is_dead(row.supervisor):
        return False
    return row.heartbeat_at is not None and time.time() - row.heartbeat_at < STALE_AFTER


def check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise ConfigError(
            f"'{name}' is not a valid endpoint name",
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit "
            "(at most 63 characters), e.g. abalone-prod",
        )


def rollout_plan(stage: str, given: Mapping[str, Any]) -> RolloutPlan | None:
    """The settings a user gave (RolloutPlan's fields) over the stage's default plan; None when
    none was given. A chosen strategy comes with its own default bake."""
    chosen = {key: value for key, value in given.items() if value is not None}
    if not chosen:
        return None
    from .rollout import RolloutPlan

    base = default_plan(stage, first=False).to_json()
    if "strategy" in chosen and chosen["strategy"] != base["strategy"]:
        base.pop("bake_seconds", None)
    return RolloutPlan.from_json(base | chosen)


def default_plan(stage: str, first: bool) -> RolloutPlan:
    """The first variant of an endpoint has nothing to roll back to: it only has to become
    ready. Later ones: all at once in dev; in prod a 10% canary baked for a minute."""
    from .rollout import RolloutPlan

    if first:
        return RolloutPlan(strategy="all_at_once", bake_seconds=0.0)
    if stage == "prod":
        return RolloutPlan(strategy="canary", canary_percent=10.0, bake_seconds=60.0)
    return RolloutPlan(strategy="all_at_once", bake_seconds=0.0)


def deploy(runtime: Runtime, project: str, request: DeployRequest, actor: str) -> DeployResult:
    """Record the deployment of a model version to an endpoint (the supervisor carries it out)."""
    from modelyard.registry import service as registry
    from modelyard.store import registry as registry_store

    check_name(request.name)
    if request.stage not in STAGES:
        raise ConfigError(
            f"unknown stage '{request.stage}'", hint=f"use one of: {', '.join(STAGES)}"
        )
    if request.replicas is not None and request.replicas < 1:
        raise ConfigError(f"--replicas must be 1 or more, not {request.replicas}")
    _check_backend(request)
    detail = registry.show_version(runtime, project, request.model)
    version = detail.version
    if (
        request.stage == "prod"
        and version.approval_status != registry_store.APPROVED
        and not request.allow_unapproved
    ):
        raise StateConflict(
            f"{detail.ref} is {version.approval_status}: only approved versions go to prod",
            hint=f"approve it first (`modelyard models approve {detail.ref}`), or pass "
            "--allow-unapproved",
        )
    variant_name = detail.ref.replace("/", "-")
    autoscale = _autoscale_json(request.autoscale)
    with runtime.db.begin() as conn:
        endpoint = store.get_endpoint(conn, project, request.name, lock=True)
        if endpoint is None:
            replicas = _replicas(request, None)
            backend = request.backend or "local"
            if request.ray_address is not None and backend != "ray":
                raise _address_without_ray()
            config = dict(request.config or {})
            if backend == "ray":
                config["ray"] = {"address": request.ray_address}
            endpoint = store.insert_endpoint(
                conn,
                project=project,
                name=request.name,
                stage=request.stage,
                backend=backend,
                host=request.host,
                port=request.port,
                config=config,
                status="creating",
            )
            current: list[store.VariantRow] = []
        else:
            _check_redeploy(endpoint, request)
            running = store.current_rollout(conn, endpoint.id)
            if running is not None:
                raise StateConflict(
                    f"endpoint {request.name} is rolling out {running.to_variant} "
                    f"({running.phase})",
                    hint=f"wait for it (`modelyard endpoint show {request.name}`) or roll it back "
                    f"(`modelyard endpoint rollback {request.name}`)",
                )
            changes: dict[str, Any] = {}
            if request.config is not None:  # the backend's settings are the endpoint's for life
                kept = {k: v for k, v in endpoint.config.items() if k == "ray"}
                changes["config"] = request.config | kept
            if request.port is not None:
                changes["port"] = request.port
            if changes:
                store.update_endpoint(conn, endpoint.id, **changes)
            current = store.variants(conn, endpoint.id)
        serving = next((v for v in current if v.weight > 0), None)
        same = next((v for v in current if v.name == variant_name), None)
        if same is not None:  # already deployed: a change of capacity, not a rollout
            values: dict[str, Any] = {"replicas": _replicas(request, same)}
            if request.autoscale is not None or request.replicas is not None:
                values["autoscale"] = autoscale
            store.update_variant(conn, endpoint.id, same.name, **values)
            message = f"{variant_name} already serves on {request.name}: " + _capacity(
                values["replicas"], values.get("autoscale", same.autoscale)
            )
            store.add_event(conn, endpoint.id, "deploy", f"{actor}: {message}")
            store.bump_generation(conn, endpoint.id)
            return DeployResult(request.name, variant_name, None, message)
        template = serving or (current[0] if current else None)
        replicas = _replicas(request, template)
        if request.autoscale is None and request.replicas is None and template is not None:
            autoscale = template.autoscale
        plan = _plan_for(request, endpoint.stage, first=serving is None)
        store.put_variant(
            conn,
            endpoint.id,
            name=variant_name,
            model_ref=detail.ref,
            package_digest=version.package_digest,
            package_size=version.package_size,
            replicas=replicas,
            autoscale=autoscale,
            weight=0.0,
            state=store.PENDING,
        )
        rollout_id = store.insert_rollout(
            conn,
            endpoint.id,
            from_variant=serving.name if serving else None,
            to_variant=variant_name,
            plan=plan.to_json(),
            created_by=actor,
        )
        if serving is not None:
            message = (
                f"deploying {detail.ref} to {request.name} from {serving.name} ({plan.describe()})"
            )
        else:
            message = (
                f"deploying {detail.ref} to {request.name}: "
                f"{_capacity(replicas, autoscale)}, serving once ready"
            )
        store.add_event(conn, endpoint.id, "deploy", f"{actor}: {message}")
        store.bump_generation(conn, endpoint.id)
    return DeployResult(request.name, variant_name, rollout_id, message)


def _plan_for(request: DeployRequest, stage: str, *, first: bool) -> RolloutPlan:
    """A first variant has nothing to shift traffic from or roll back to: it only has to become
    ready (in the given ready_timeout); a later one rolls out as asked, or as the stage does."""
    if not first:
        return request.plan or default_plan(stage, first=False)
    plan = default_plan(stage, first=True)
    if request.plan is not None:
        plan = replace(plan, ready_timeout=request.plan.ready_timeout)
    return plan


def _check_backend(request: DeployRequest) -> None:
    if request.backend is not None and request.backend not in BACKENDS:
        raise ConfigError(
            f"unknown backend '{request.backend}'", hint=f"use one of: {', '.join(BACKENDS)}"
        )
    if request.ray_address is not None and request.backend == "local":
        raise _address_without_ray()
    if request.backend == "ray":
        from .ray_backend import require_ray

        require_ray()  # before anything is recorded: exit 7 with how to install it


def _address_without_ray() -> ConfigError:
    return ConfigError(
        "a Ray address is for the ray backend", hint="add --backend ray, or drop --ray-address"
    )


def _check_redeploy(endpoint: store.EndpointRow, request: DeployRequest) -> None:
    if endpoint.stage != request.stage:
        raise ConfigError(
            f"endpoint {endpoint.name} is a {endpoint.stage} endpoint, not {request.stage}",
            hint="an endpoint keeps its stage: deploy to another endpoint for the other stage",
        )
    if endpoint.host != request.host:
        raise ConfigError(
            f"endpoint {endpoint.name} listens on {endpoint.host}, not {request.host}",
            hint="an endpoint keeps its address: delete it and deploy again to move it",
        )
    if request.backend is not None and request.backend != endpoint.backend:
        raise ConfigError(
            f"endpoint {endpoint.name} runs on the {endpoint.backend} backend, not "
            f"{request.backend}",
            hint="an endpoint keeps its backend: deploy to another endpoint, or delete this one "
            "and deploy again",
        )
    if endpoint.backend == "ray":
        from .ray_backend import require_ray

        require_ray()
    elif request.ray_address is not None:
        raise _address_without_ray()
    address = endpoint.config.get("ray", {}).get("address")
    if request.ray_address is not None and request.ray_address != address:
        raise ConfigError(
            f"endpoint {endpoint.name} uses the Ray cluster at "
            f"{address or 'a local instance of its own'}, not {request.ray_address}",
            hint="an endpoint keeps its Ray cluster: delete it and deploy again to move it",
        )


def _replicas(request: DeployRequest, template: store.VariantRow | None) -> int:
    if request.autoscale is not None:
        return request.autoscale.min_replicas
    if request.replicas is not None:
        return request.replicas
    return template.replicas if template is not None else 1


def _autoscale_json(policy: AutoscalePolicy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    from dataclasses import asdict

    return asdict(policy)


def _capacity(replicas: int, autoscale: dict[str, Any] | None) -> str:
    if autoscale:
        return (
            f"autoscaling {autoscale['min_replicas']}..{autoscale['max_replicas']} replicas at "
            f"{autoscale['target']:g} invocations/replica/minute"
        )
    return f"{replicas} replica{'s' if replicas != 1 else ''}"


# the supervisor process --------------------------------------------------------------------------


def log_dir(runtime: Runtime, name: str) -> Path:
    return runtime.settings.state_dir / "endpoints" / name


def ensure_supervisor(runtime: Runtime, project_root: Path, project: str, name: str) -> bool:
    """Start the endpoint's supervisor unless it runs; True if one was started."""
    with runtime.db.begin() as conn:
        endpoint = _endpoint(conn, project, name)
    if supervisor_alive(endpoint):
        return False
    folder = log_dir(runtime, name)
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "modelyard", "--project", str(project_root)]
    _spawn_detached([*argv, "endpoint", "supervise", name], project_root, folder / "supervisor.log")
    return True


def _spawn_detached(argv: list[str], cwd: Path, log: Path) -> None:
    """Start a process that is no descendant of this one: from a forked child that exits at once.
    A pipeline step that deploys is killed with its whole process tree when it times out or is
    cancelled; the endpoint it started must not go with it."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child only spawns and leaves: no database, no buffered output
        code = 1
        try:
            with open(log, "ab") as out:
                subprocess.Popen(
                    argv,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # no signal of this terminal reaches it
                    close_fds=True,
                )
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise StateConflict(
            f"cannot start `{' '.join(argv[2:])}`",
            hint=f"see {log}; check that the project folder {cwd} exists",
        )


def wait_rollout(
    runtime: Runtime,
    project: str,
    name: str,
    rollout_id: int,
    *,
    timeout: float,
    on_event: Callable[[store.EventRow], Any] = lambda event: None,
    poll: float = 0.25,
) -> store.RolloutRow:
    """Wait until the rollout ends (or `timeout`), passing each new event of the endpoint on."""
    deadline = time.monotonic() + timeout
    seen = 0
    with runtime.db.begin() as conn:
        endpoint = _endpoint(conn, project, name)
        history = store.events(conn, endpoint.id, limit=1)
        seen = history[-1].id if history else 0
    while True:
        with runtime.db.begin() as conn:
            rollout = store.get_rollout(conn, rollout_id)
            fresh = store.events(conn, endpoint.id, after=seen, limit=1000)
            endpoint = _endpoint(conn, project, name)
        for event in fresh:
            on_event(event)
            seen = event.id
        if rollout is None:
            raise NotFound(f"rollout {rollout_id} of endpoint {name} is gone (deleted?)")
        if rollout.done:
            return rollout
        if not supervisor_alive(endpoint) and time.time() - endpoint.updated_at > STALE_AFTER:
            raise StateConflict(
                f"the supervisor of endpoint {name} is not running; the rollout is {rollout.phase}",
                hint=f"see {log_dir(runtime, name) / 'supervisor.log'}, then "
                f"`modelyard endpoint start {name}`",
            )
        if time.monotonic() > deadline:
            raise StateConflict(
                f"rollout of {rollout.to_variant} to {name} still {rollout.phase} after "
                f"{timeout:.0f}s",
                hint=f"it goes on in the background: `modelyard endpoint show {name}`",
            )
        time.sleep(poll)


# reading -----------------------------------------------------------------------------------------


def list_endpoints(runtime: Runtime, project: str) -> list[EndpointView]:
    with runtime.db.begin() as conn:
        rows = store.list_endpoints(conn, project)
        variants = store.variants_of(conn, [r.id for r in rows])
        return [
            EndpointView(row, variants[row.id], store.current_rollout(conn, row.id)) for row in rows
        ]


def show(runtime: Runtime, project: str, name: str, *, events: int = 20) -> EndpointView:
    with runtime.db.begin() as conn:
        row = _endpoint(conn, project, name)
        return EndpointView(
            row,
            store.variants(conn, row.id),
            store.current_rollout(conn, row.id),
            store.rollouts(conn, row.id, limit=5),
            store.events(conn, row.id, limit=events),
        )


def _endpoint(conn: Any, project: str, name: str, *, lock: bool = False) -> store.EndpointRow:
    endpoint = store.get_endpoint(conn, project, name, lock=lock)
    if endpoint is None:
        raise NotFound(
            f"no endpoint named {name}",
            hint="`modelyard endpoint list` shows the endpoints; "
            "`modelyard endpoint deploy NAME --model REF --stage dev` creates one",
        )
    return endpoint


# stopping and deleting ---------------------------------------------------------------------------


def rollback(runtime: Runtime, project: str, name: str, actor: str) -> store.RolloutRow:
    """Ask the supervisor to roll the current rollout back (it does at its next tick)."""
    with runtime.db.begin() as conn:
        endpoint = _endpoint(conn, project, name, lock=True)
        rollout = store.current_rollout(conn, endpoint.id)
        if rollout is None:
            raise StateConflict(f"endpoint {name} has no rollout in progress")
        store.update_rollout(conn, rollout.id, reason=f"rollback requested by {actor}")
        store.add_event(conn, endpoint.id, "rollout", f"{actor}: rollback of {rollout.to_variant}")
        store.bump_generation(conn, endpoint.id)
        return rollout


def stop(runtime: Runtime, project: str, name: str, *, timeout: float = 60.0) -> bool:
    """Stop the endpoint's supervisor (it drains and stops its replicas); True if one ran.
    The endpoint and its variants stay recorded: `start` brings them back."""
    import signal

    with runtime.db.begin() as conn:
        endpoint = _endpoint(conn, project, name)
        store.update_endpoint(conn, endpoint.id, status="stopped", status_reason="stopped")
    from modelyard.engine.runtime import owner_is_dead

    # a supervisor whose heartbeat is stale but whose process lives is stopped all the same
    if endpoint.supervisor is None or owner_is_dead(endpoint.supervisor):
        return False
    pid = int(endpoint.supervisor.split(":")[1])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    from modelyard.executors.processes import wait_gone

    if not wait_gone(pid, timeout):
        raise StateConflict(
            f"the supervisor of {name} (pid {pid}) did not stop within {timeout:.0f}s",
            hint=f"see {log_dir(runtime, name) / 'supervisor.log'}",
        )
    return True


def delete(runtime: Runtime, project: str, name: str) -> None:
    """Stop the endpoint and forget it (its variants, rollouts and events)."""
    stop(runtime, project, name)
    with runtime.db.begin() as conn:
        endpoint = _endpoint(conn, project, name, lock=True)
        if supervisor_alive(endpoint):  # started again meanwhile
            raise StateConflict(f"endpoint {name} was started again while being deleted")
        store.delete_endpoint(conn, endpoint.id)
