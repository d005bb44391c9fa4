"""`endpoint deploy|list|show|logs|rollback|stop|start|delete`: serving endpoints.

An endpoint is a stable address (127.0.0.1:PORT by default) in a stage, served by a supervisor
process of its own: it starts replicas of the model server, routes traffic between variants, rolls
new versions out (and back), and autoscales. Its state is in the metadata database.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from modelyard.cli.common import (
    add_json_flag,
    local_time,
    print_file,
    print_json,
    project_name,
    runtime_for,
    table,
)

if TYPE_CHECKING:
    from modelyard.serving.endpoint.service import EndpointView
    from modelyard.store.endpoints import EventRow


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    from modelyard.cli.serving_args import add_batching_arguments, add_guard_arguments

    sub = parser.add_subparsers(dest="endpoint_command", metavar="SUBCOMMAND", required=True)
    deploy = sub.add_parser(
        "deploy",
        help="deploy a model version to an endpoint (created on first use); a new version rolls "
        "out from the one serving",
    )
    deploy.add_argument("name", help="the endpoint's name, e.g. abalone-prod")
    deploy.add_argument(
        "--model", required=True, help="NAME/VERSION, NAME@ALIAS or NAME (newest version)"
    )
    deploy.add_argument("--stage", required=True, choices=("dev", "prod"))
    deploy.add_argument("--replicas", type=int, help="replica processes (1; kept on redeploy)")
    deploy.add_argument(
        "--autoscale",
        metavar="MIN,MAX,TARGET",
        help="autoscale between MIN and MAX replicas on TARGET invocations per replica per minute",
    )
    deploy.add_argument(
        "--cooldown", type=float, default=60.0, metavar="S", help="autoscaling cooldowns (60)"
    )
    deploy.add_argument(
        "--scale-window",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds of traffic the invocation rate is measured over (60)",
    )
    rollout = deploy.add_argument_group("rollout (when a version already serves)")
    rollout.add_argument(
        "--strategy",
        choices=("all-at-once", "canary", "linear"),
        help="how traffic moves to the new version (dev: all-at-once; prod: canary)",
    )
    rollout.add_argument("--canary-percent", type=float, metavar="P", help="canary share (10)")
    rollout.add_argument(
        "--linear-step-percent", type=float, metavar="P", help="linear step share (25)"
    )
    rollout.add_argument(
        "--bake-seconds",
        type=float,
        metavar="S",
        help="how long each share is watched (prod 60, dev 0)",
    )
    rollout.add_argument(
        "--max-error-rate",
        type=float,
        metavar="R",
        help="roll back above this share of server errors of the new version (0.05)",
    )
    rollout.add_argument(
        "--max-p99-ms", type=float, metavar="MS", help="roll back above this p99 latency"
    )
    rollout.add_argument(
        "--min-requests", type=int, metavar="N", help="requests needed to judge the new version"
    )
    rollout.add_argument(
        "--ready-timeout",
        type=float,
        metavar="S",
        help="roll back when the new version's replicas are not ready by then (120)",
    )
    deploy.add_argument("--host", default="127.0.0.1", help="address of the endpoint (127.0.0.1)")
    deploy.add_argument("--port", type=int, help="its port (a free one the first time; kept)")
    deploy.add_argument(
        "--backend",
        choices=("local", "ray"),
        help="where replicas run: processes of this machine, or a Ray Serve cluster (local; an "
        "endpoint keeps its backend)",
    )
    deploy.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster of --backend ray, as ray.init takes it (host:port, auto, "
        "ray://host:port); default: a local Ray instance of the endpoint's own",
    )
    add_batching_arguments(deploy, defaults=False)
    add_guard_arguments(deploy)
    deploy.add_argument(
        "--allow-unapproved",
        action="store_true",
        help="deploy a version to prod that no one approved",
    )
    deploy.add_argument(
        "--no-wait", action="store_true", help="return at once; the rollout goes on"
    )
    deploy.add_argument(
        "--timeout", type=float, default=900.0, metavar="S", help="how long to wait (900)"
    )
    add_json_flag(deploy)

    listing = sub.add_parser("list", help="the endpoints: stage, address, status, variants")
    add_json_flag(listing)
    show = sub.add_parser("show", help="an endpoint: variants, replicas, traffic, rollouts, events")
    show.add_argument("name")
    add_json_flag(show)
    logs = sub.add_parser("logs", help="the supervisor's log, or a replica's (--replica)")
    logs.add_argument("name")
    logs.add_argument("--replica", metavar="VARIANT/SLOT", help="e.g. abalone-3/1")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    for verb, what in (
        ("rollback", "roll the rollout in progress back to the version that served before"),
        ("stop", "stop the endpoint's processes (it stays recorded; `start` brings it back)"),
        ("start", "start the endpoint's supervisor again (after a stop or a reboot)"),
        ("delete", "stop the endpoint and forget it"),
    ):
        verb_parser = sub.add_parser(verb, help=what)
        verb_parser.add_argument("name")
        add_json_flag(verb_parser)
    supervise = sub.add_parser(
        "supervise",
        help="run the endpoint's supervisor in the foreground (what deploy and start run, "
        "detached)",
    )
    supervise.add_argument("name")


def execute(name: str, args: argparse.Namespace) -> int:
    handler = {
        "deploy": _deploy,
        "list": _list,
        "show": _show,
        "logs": _logs,
        "rollback": _rollback,
        "stop": _stop,
        "start": _start,
        "delete": _delete,
        "supervise": _supervise,
    }[args.endpoint_command]
    return handler(args)


def _project_root(args: argparse.Namespace) -> Any:
    from modelyard.cli.common import project_dir
    from modelyard.project.loader import find_project_root

    return find_project_root(project_dir(args))


def _deploy(args: argparse.Namespace) -> int:
    from modelyard.cli.serving_args import check_batching
    from modelyard.registry.service import current_user
    from modelyard.serving.endpoint import service

    check_batching(args)
    runtime = runtime_for(args)
    project = project_name(args)
    request = service.DeployRequest(
        name=args.name,
        model=args.model,
        stage=args.stage,
        replicas=args.replicas,
        autoscale=_autoscale(args),
        plan=_plan(args),
        host=args.host,
        port=args.port,
        config=_config(args),
        allow_unapproved=args.allow_unapproved,
        backend=args.backend,
        ray_address=args.ray_address,
    )
    result = service.deploy(runtime, project, request, current_user())
    if args.api_keys_env:  # the supervisor keeps the keys' digests only, never the keys
        os.environ.pop(args.api_keys_env, None)
    started = service.ensure_supervisor(runtime, _project_root(args), project, args.name)
    if not args.json:
        print(result.message)
        if started:
            print(f"started the supervisor of {args.name}")
    outcome = None
    if result.rollout_id is not None and not args.no_wait:
        printer = None if args.json else _print_event
        outcome = service.wait_rollout(
            runtime,
            project,
            args.name,
            result.rollout_id,
            timeout=args.timeout,
            on_event=printer or (lambda event: None),
        )
    view = service.show(runtime, project, args.name, events=0)
    if args.json:
        data = view.to_json()
        data["deployed"] = {
            "variant": result.variant,
            "rollout": result.rollout_id,
            "outcome": outcome.phase if outcome else None,
            "reason": outcome.reason if outcome else None,
        }
        print_json(data)
    elif outcome is not None:
        print(f"{args.name}: {outcome.phase}" + (f" ({outcome.reason})" if outcome.reason else ""))
        if view.url:
            print(f"{args.name} serves on {view.url}/invocations")
    return 1 if outcome is not None and outcome.phase != "completed" else 0


def _autoscale(args: argparse.Namespace) -> Any:
    if args.autoscale is None:
        return None
    from modelyard.serving.autoscale import AutoscalePolicy

    return AutoscalePolicy.parse(args.autoscale, cooldown=args.cooldown, window=args.scale_window)


def _plan(args: argparse.Namespace) -> Any:
    from modelyard.serving.endpoint.service import rollout_plan

    return rollout_plan(
        args.stage,
        {
            "strategy": args.strategy.replace("-", "_") if args.strategy else None,
            "canary_percent": args.canary_percent,
            "linear_step_percent": args.linear_step_percent,
            "bake_seconds": args.bake_seconds,
            "max_error_rate": args.max_error_rate,
            "max_p99_ms": args.max_p99_ms,
            "min_requests": args.min_requests,
            "ready_timeout": args.ready_timeout,
        },
    )


def _config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The endpoint's serving options and guards, or None to keep what it has."""
    from modelyard.cli.serving_args import guard_options, guards_given

    serving = {
        key: getattr(args, key)
        for key in ("max_batch", "max_wait_ms", "max_body_mb")
        if getattr(args, key) is not None
    }
    if not serving and not guards_given(args):
        return None
    options = guard_options(args)
    guards = {
        "allow": [str(network) for network in options.allow],
        "rate": options.rate,
        "burst": options.burst if options.rate is not None else None,
        "max_in_flight": options.max_in_flight,
        "timeout": options.timeout,
    }
    return {
        "serving": serving,
        "guards": {k: v for k, v in guards.items() if v not in (None, [])},
        "key_digests": list(options.key_digests),  # never the keys themselves
    }


def _print_event(event: EventRow) -> None:
    print(f"{local_time(event.at)}  {event.kind:<8} {event.message}", flush=True)


def _list(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint import service

    views = service.list_endpoints(runtime_for(args), project_name(args))
    if args.json:
        print_json([v.to_json() for v in views])
        return 0
    if not views:
        print("no endpoints yet: `modelyard endpoint deploy NAME --model REF --stage dev`")
        return 0
    rows = []
    for view in views:
        rows.append(
            [
                view.row.name,
                view.row.stage,
                view.url or "-",
                view.status,
                ", ".join(_variant_text(v) for v in view.variants) or "-",
                view.rollout.phase if view.rollout else "-",
            ]
        )
    print(table(["name", "stage", "url", "status", "variants", "rollout"], rows))
    return 0


def _variant_text(variant: Any) -> str:
    observed = variant.observed or {}
    ready = observed.get("ready")
    replicas = f"{ready}/{variant.replicas}" if ready is not None else f"-/{variant.replicas}"
    return f"{variant.model_ref} {variant.weight:g}% ({replicas} ready)"


def _show(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint import service

    view = service.show(runtime_for(args), project_name(args), args.name)
    if args.json:
        print_json(view.to_json())
        return 0
    _print_view(view)
    return 0


def _print_view(view: EndpointView) -> None:
    row = view.row
    print(f"endpoint {row.name} ({row.stage})  {view.url or '-'}  {view.status}")
    print(f"  backend: {_backend_text(view)}")
    if row.status_reason and view.running:
        print(f"  {row.status_reason}")
    guards = view.to_json()["guards"]
    shown = ", ".join(f"{k} {v}" for k, v in guards.items() if v) or "none"
    print(f"  guards: {shown}")
    print()
    rows = []
    for variant in view.variants:
        observed = variant.observed or {}
        minute = observed.get("last_minute", {})
        capacity = (
            f"{variant.autoscale['min_replicas']}..{variant.autoscale['max_replicas']}"
            if variant.autoscale
            else "fixed"
        )
        rows.append(
            [
                variant.name,
                variant.model_ref,
                variant.state,
                f"{variant.weight:g}%",
                f"{observed.get('ready', '-')}/{variant.replicas} ({capacity})",
                str(minute.get("requests", "-")),
                str(minute.get("errors", "-")),
                _ms(minute.get("p99_ms")),
            ]
        )
    print(
        table(
            ["variant", "model", "state", "traffic", "ready", "req/min", "errors", "p99"],
            rows,
        )
    )
    replicas = [
        [
            f"{variant.name}/{r['slot']}",
            str(r.get("pid") or "-"),
            str(r.get("port")),
            r["state"],
            str(r.get("restarts", 0)),
            r.get("last_exit") or "-",
        ]
        for variant in view.variants
        for r in (variant.observed or {}).get("replicas", [])
    ]
    if replicas:
        print()
        print(table(["replica", "pid", "port", "state", "restarts", "last exit"], replicas))
    if view.recent_rollouts:
        print()
        print(
            table(
                ["rollout", "from", "to", "phase", "started", "reason"],
                [
                    [
                        str(r.id),
                        r.from_variant or "-",
                        r.to_variant,
                        r.phase,
                        local_time(r.created_at),
                        r.reason or "-",
                    ]
                    for r in view.recent_rollouts
                ],
            )
        )
    if view.events:
        print()
        for event in view.events:
            _print_event(event)


def _backend_text(view: EndpointView) -> str:
    if view.row.backend != "ray":
        return view.row.backend
    address = (view.row.config.get("ray") or {}).get("address")
    return f"ray ({address or 'a local Ray instance of its own'})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _logs(args: argparse.Namespace) -> int:
    from modelyard.errors import NotFound
    from modelyard.serving.endpoint import service

    runtime = runtime_for(args)
    project = project_name(args)
    service.show(runtime, project, args.name, events=0)  # NotFound for an unknown endpoint
    folder = service.log_dir(runtime, args.name)
    if args.replica:
        variant, _, slot = args.replica.partition("/")
        path = folder / "replicas" / f"{variant}-{slot or 1}.log"
    else:
        path = folder / "supervisor.log"
    if not path.is_file():
        raise NotFound(f"no log at {path}", hint="`modelyard endpoint show NAME` lists replicas")
    print_file(path, follow=(lambda: True) if args.follow else None)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from modelyard.registry.service import current_user
    from modelyard.serving.endpoint import service

    runtime = runtime_for(args)
    project = project_name(args)
    rollout = service.rollback(runtime, project, args.name, current_user())
    outcome = service.wait_rollout(runtime, project, args.name, rollout.id, timeout=120)
    if args.json:
        print_json({"rollout": rollout.id, "phase": outcome.phase, "reason": outcome.reason})
    else:
        print(f"{args.name}: rollout of {rollout.to_variant} {outcome.phase} ({outcome.reason})")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint import service

    stopped = service.stop(runtime_for(args), project_name(args), args.name)
    if args.json:
        print_json({"endpoint": args.name, "stopped": stopped})
    else:
        print(f"{args.name}: " + ("stopped" if stopped else "was not running"))
    return 0


def _start(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint import service

    runtime = runtime_for(args)
    project = project_name(args)
    started = service.ensure_supervisor(runtime, _project_root(args), project, args.name)
    if args.json:
        print_json({"endpoint": args.name, "started": started})
    else:
        print(f"{args.name}: " + ("starting" if started else "already running"))
    return 0


def _delete(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint import service

    service.delete(runtime_for(args), project_name(args), args.name)
    if args.json:
        print_json({"endpoint": args.name, "deleted": True})
    else:
        print(f"{args.name}: deleted")
    return 0


def _supervise(args: argparse.Namespace) -> int:
    from modelyard.serving.endpoint.supervisor import main

    return main(runtime_for(args), project_name(args), args.name, _project_root(args))
