"""`run`, `runs`, `show`, `logs`, `resume`, `cancel` and `worker`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from modelyard.cli.common import (
    add_json_flag,
    duration,
    human_duration,
    iso,
    load,
    local_time,
    print_file,
    print_json,
    runtime_for,
    table,
)

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.engine.service import RunDetail
    from modelyard.settings import Settings
    from modelyard.store.runs import RunRow, StepRow

# exit codes of `run` and `resume`: the run's outcome
OUTCOME_EXIT = {"succeeded": 0, "waiting": 0, "failed": 1, "cancelled": 1}


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "run":
        parser.add_argument("pipeline", help="the pipeline's name in modelyard.yaml")
        parser.add_argument(
            "-p",
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter (repeatable); the value is converted to its type",
        )
        parser.add_argument("--no-cache", action="store_true", help="run every step again")
        parser.add_argument(
            "--no-cache-step",
            action="append",
            default=[],
            metavar="STEP",
            help="run this step again even if cached (repeatable)",
        )
        parser.add_argument("--max-parallel", type=int, metavar="N", help="steps at once")
        parser.add_argument("--quiet", action="store_true", help="no progress display")
        add_json_flag(parser)
    elif name == "runs":
        parser.add_argument("--pipeline", help="only runs of this pipeline")
        parser.add_argument("--status", help="only runs with this status")
        parser.add_argument("--limit", type=int, default=20, help="how many (newest first)")
        add_json_flag(parser)
    elif name == "show":
        parser.add_argument("run", type=int, help="run id")
        add_json_flag(parser)
    elif name == "logs":
        parser.add_argument("run", type=int, help="run id")
        parser.add_argument("step", help="step name")
        parser.add_argument("--attempt", type=int, help="attempt number (default: the latest)")
        parser.add_argument(
            "-f", "--follow", action="store_true", help="keep printing until the attempt ends"
        )
    elif name == "resume":
        parser.add_argument("run", type=int, help="run id")
        parser.add_argument("--quiet", action="store_true", help="no progress display")
        add_json_flag(parser)
    elif name == "cancel":
        parser.add_argument("run", type=int, help="run id")
    elif name == "worker":
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument(
            "--interval", type=float, default=5.0, help="seconds between passes (default 5)"
        )


def execute(name: str, args: argparse.Namespace) -> int:
    handler = {
        "run": _run,
        "runs": _runs,
        "show": _show,
        "logs": _logs,
        "resume": _resume,
        "cancel": _cancel,
        "worker": _worker,
    }[name]
    return handler(args)


def _parse_params(pairs: list[str]) -> dict[str, str]:
    from modelyard.errors import ConfigError

    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"'-p {pair}' is not KEY=VALUE", hint="write e.g. -p max_depth=6")
        params[key.strip()] = value
    return params


def _run(args: argparse.Namespace) -> int:
    from modelyard.engine import service

    project = load(args)
    runtime = runtime_for(args, project)
    options = service.RunOptions(
        no_cache=args.no_cache,
        no_cache_steps=tuple(args.no_cache_step),
        max_parallel=args.max_parallel,
    )
    run_id = service.create_run(runtime, project, args.pipeline, _parse_params(args.param), options)
    steps = list(project.pipeline(args.pipeline).steps)
    return _drive(runtime, run_id, steps, args, lambda obs: service.drive_run(runtime, run_id, obs))


def _resume(args: argparse.Namespace) -> int:
    from modelyard.engine import service

    runtime = runtime_for(args)
    detail = service.run_detail(runtime, args.run)
    steps = list(detail.steps)
    return _drive(
        runtime, args.run, steps, args, lambda obs: service.resume_run(runtime, args.run, obs)
    )


def _drive(
    runtime: Runtime, run_id: int, steps: list[str], args: argparse.Namespace, drive: Any
) -> int:
    from modelyard.cli.progress import progress_for
    from modelyard.engine import service

    quiet = args.quiet or args.json
    try:
        with progress_for(steps, quiet=quiet) as progress:
            run = drive(progress)
    except KeyboardInterrupt:
        service.request_cancel(runtime, run_id)
        print(f"run {run_id} cancelled", file=sys.stderr)
        return 130
    _push_in_background(runtime, run)
    detail = service.run_detail(runtime, run_id)
    if args.json:
        print_json(detail_json(detail, runtime.settings))
    else:
        print(_outcome_line(runtime, run))
    return OUTCOME_EXIT.get(run.status, 1)


def _push_in_background(runtime: Runtime, run: RunRow) -> None:
    push_in_background(runtime, run.project_dir)  # `approve` calls this one


def push_in_background(runtime: Runtime, project_dir: str, prefix: str = "") -> None:
    """Send the runs' tracking records to MLflow from a detached process (never fails the run)."""
    if not runtime.settings.tracking_auto_push:
        return  # nothing to start: not even the pusher module is imported
    from modelyard.tracking.pusher import try_background_push

    warning = try_background_push(runtime.settings, project_dir)
    if warning:
        print(f"{prefix}warning: {warning}", file=sys.stderr, flush=True)


def _outcome_line(runtime: Runtime, run: RunRow) -> str:
    took = human_duration(duration(run.started_at, run.finished_at or time.time()))
    line = f"run {run.id} {run.status} in {took}"
    if run.message:
        line += f": {run.message}"
    if run.status == "waiting":
        from modelyard.store import runs as db

        with runtime.db.begin() as conn:
            steps = db.get_steps(conn, run.id).values()
        for step in (s for s in steps if s.kind == "approval" and s.status == db.WAITING):
            values = step.values or {}
            if "version" in values:
                line += f"\n  evidence for {values['model']}/{values['version']}: "
                line += f"modelyard evidence {run.id}"
            line += f"\n  decide: modelyard approve {run.id} {step.name} --comment '...' "
            line += "(or reject)"
    if run.status == "failed":
        line += f"\n  see: modelyard show {run.id} / modelyard logs {run.id} STEP"
        line += f"; after a fix: modelyard resume {run.id}"
    return line


def run_json(run: RunRow, settings: Settings) -> dict[str, Any]:
    from modelyard.tracking.links import run_link

    return {
        "id": run.id,
        "project": run.project,
        "pipeline": run.pipeline,
        "status": run.status,
        "trigger": run.trigger,
        "params": run.params,
        "tracking": run_link(run, settings).to_json(),
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": duration(run.started_at, run.finished_at),
        "message": run.message,
        "data": run.data_versions or {},
        "git": None
        if run.git_commit is None and run.git_branch is None and run.git_dirty is None
        else {"commit": run.git_commit, "dirty": run.git_dirty, "branch": run.git_branch},
    }


def step_json(
    step: StepRow, attempts: list[Any], metrics: dict[str, float], tracking: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "name": step.name,
        "kind": step.kind,
        "status": step.status,
        "cached": step.cached,
        "cache_key": step.cache_key,
        "attempts": [
            {
                "number": a.number,
                "status": a.status,
                "exit_code": a.exit_code,
                "started_at": iso(a.started_at),
                "finished_at": iso(a.finished_at),
                "duration_s": duration(a.started_at, a.finished_at),
                "error": a.error,
                "log_path": a.log_path,
            }
            for a in attempts
        ],
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration_s": duration(step.started_at, step.finished_at),
        "outputs": step.outputs or {},
        "values": step.values or {},
        "metrics": metrics,
        "tracking": tracking,
        "message": step.message,
    }


def detail_json(detail: RunDetail, settings: Settings) -> dict[str, Any]:
    steps = [
        step_json(
            s, detail.attempts[n], detail.metrics.get(n, {}), _step_tracking(detail, s, settings)
        )
        for n, s in detail.steps.items()
    ]
    return run_json(detail.run, settings) | {"steps": steps}


def _step_tracking(detail: RunDetail, step: StepRow, settings: Settings) -> dict[str, Any] | None:
    """The step's nested MLflow run (None until pushed)."""
    from modelyard.tracking.links import run_link

    if step.mlflow_run_id is None:
        return None
    link = run_link(detail.run, settings, nested_run_id=step.mlflow_run_id)
    return {"run_id": step.mlflow_run_id, "url": link.url}


def _runs(args: argparse.Namespace) -> int:
    from modelyard.engine import service

    runtime = runtime_for(args)
    runs = service.list_runs(runtime, args.pipeline, args.status, args.limit)
    if args.json:
        print_json([run_json(r, runtime.settings) for r in runs])
        return 0
    if not runs:
        print("no runs yet: start one with `modelyard run PIPELINE`")
        return 0
    rows = [
        [
            str(r.id),
            r.pipeline,
            r.status,
            local_time(r.created_at),
            human_duration(duration(r.started_at, r.finished_at)),
            (r.message or "")[:60],
        ]
        for r in runs
    ]
    print(table(["id", "pipeline", "status", "created", "duration", "message"], rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from modelyard.engine import service
    from modelyard.pipeline.dag import Dag
    from modelyard.pipeline.model import Pipeline
    from modelyard.tracking.links import run_link

    runtime = runtime_for(args)
    detail = service.run_detail(runtime, args.run)
    if args.json:
        print_json(detail_json(detail, runtime.settings))
        return 0
    run = detail.run
    print(f"run {run.id}  {run.pipeline}  {run.status}  (project {run.project})")
    print(
        f"  created {local_time(run.created_at)}  trigger {run.trigger}  took "
        f"{human_duration(duration(run.started_at, run.finished_at))}"
    )
    if run.params:
        print("  params: " + ", ".join(f"{k}={v!r}" for k, v in run.params.items()))
    if run.data_versions:
        print("  data: " + ", ".join(f"{k}@{v[:19]}" for k, v in run.data_versions.items()))
    if run.git_commit or run.git_branch:
        dirty = " + uncommitted changes" if run.git_dirty else ""
        print(f"  git: {(run.git_commit or 'no commit yet')[:12]}{dirty} ({run.git_branch or '-'})")
    print(f"  mlflow: {run_link(run, runtime.settings).text()}")
    if run.message:
        print(f"  {run.message}")
    rows = []
    for name, step in detail.steps.items():
        attempts = detail.attempts[name]
        status = "cached" if step.cached else step.status
        rows.append(
            [
                name,
                step.kind,
                status,
                str(len(attempts)),
                human_duration(duration(step.started_at, step.finished_at)),
                (step.message or "").replace("\n", " ")[:70],
            ]
        )
    print()
    print(table(["step", "kind", "status", "attempts", "duration", "message"], rows))
    if detail.metrics:
        print()
        print("metrics:")
        for name, metrics in detail.metrics.items():
            print(f"  {name}: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    print()
    print("DAG:")
    for line in Dag(Pipeline.from_json(run.definition)).render_text().splitlines():
        print(f"  {line}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from modelyard.engine import service

    runtime = runtime_for(args)
    attempt, path = service.attempt_log(runtime, args.run, args.step, args.attempt)
    if path is None:
        if attempt.log_digest:
            from modelyard.store.artifacts import ArtifactRef

            ref = ArtifactRef(attempt.log_digest, "file", 0)
            sys.stdout.write(runtime.store.read_file(ref).decode(errors="replace"))
            return 0
        print(f"(no log for attempt {attempt.number})", file=sys.stderr)
        return 0

    def running() -> bool:
        return service.attempt_log(runtime, args.run, args.step, attempt.number)[0].status == (
            "running"
        )

    print_file(path, follow=running if args.follow else None)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from modelyard.engine import service

    outcome = service.request_cancel(runtime_for(args), args.run)
    if outcome == "requested":
        print(f"run {args.run}: cancellation requested; its driver is stopping it")
    else:
        print(f"run {args.run} cancelled")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from modelyard.cli.progress import LineProgress
    from modelyard.engine import service
    from modelyard.errors import StateConflict

    runtime = runtime_for(args)
    progress = LineProgress(sys.stdout)
    while True:
        for run in service.orphaned_runs(runtime):
            print(f"worker: resuming run {run.id} ({run.pipeline})", flush=True)
            try:
                service.resume_run(runtime, run.id, progress)
            except StateConflict as exc:
                print(f"worker: run {run.id}: {exc}", flush=True)
                continue
            push_in_background(runtime, run.project_dir, "worker: ")
        for run_id in service.expire_approvals(runtime, progress):
            print(f"worker: run {run_id}: an approval timed out", flush=True)
            project = service.run_detail(runtime, run_id).run.project_dir
            push_in_background(runtime, project, "worker: ")
        if args.once:
            return 0
        time.sleep(args.interval)
