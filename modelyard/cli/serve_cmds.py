"""`serve MODEL`: a model server for an MLflow model folder or a registry reference."""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

from modelyard.cli.common import project_name, runtime_for

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    from modelyard.cli.serving_args import add_batching_arguments, add_guard_arguments

    parser.add_argument(
        "model", help="an MLflow model folder, or NAME/VERSION, NAME@ALIAS or NAME of the registry"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free port)")
    add_batching_arguments(parser)
    add_guard_arguments(parser)
    parser.add_argument(
        "--pyfunc",
        action="store_true",
        help="predict through mlflow.pyfunc instead of the flavor's native predict",
    )
    # Hidden: how an endpoint's supervisor runs its replicas (modelyard.serving.endpoint).
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # inherited listening socket
    parser.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    # shut down once the parent dies; `=PID` names the parent, which closes the race of a parent
    # dying before this process could read its pid (without `=`, put it after MODEL)
    parser.add_argument(
        "--exit-with-parent", nargs="?", const=0, type=int, metavar="PID", help=argparse.SUPPRESS
    )
    parser.add_argument("--name", help=argparse.SUPPRESS)  # what /health shows: "abalone/3"


def execute(name: str, args: argparse.Namespace) -> int:
    import dataclasses

    from modelyard.cli.serving_args import check_batching, guard_options
    from modelyard.serving.app import ServingOptions
    from modelyard.serving.server import (
        inherited_socket,
        load_served_model,
        resolve_model,
        run_server,
    )

    started = time.monotonic()
    # read first: a parent dying while the model loads must still be noticed
    parent = None
    if args.exit_with_parent is not None:
        parent = args.exit_with_parent or os.getppid()
    check_batching(args)
    sock = inherited_socket(args.fd) if args.fd is not None else None

    def registry() -> tuple[Runtime, str]:
        return runtime_for(args), project_name(args)

    guards = guard_options(args)
    resolved = resolve_model(args.model, registry)
    if args.name:
        resolved = dataclasses.replace(resolved, name=args.name)
    served = load_served_model(resolved, native=not args.pyfunc, variant=args.variant)
    options = ServingOptions(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_batch_rows=args.max_batch,
        max_wait=args.max_wait_ms / 1000,
    )
    run_server(
        served,
        host=args.host,
        port=args.port,
        options=options,
        guards=guards,
        started_at=started,
        sock=sock,
        parent_pid=parent,
    )
    return 0
