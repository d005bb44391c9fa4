"""`serve MODEL`: a model server for an MLflow model folder or a registry reference."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from modelyard.cli.common import project_name, runtime_for

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="an MLflow model folder, or NAME/VERSION, NAME@ALIAS or NAME of the registry"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free port)")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=256,
        metavar="ROWS",
        help="rows of concurrent requests predicted together, at most (256)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="how long a request may wait for others to batch with (0: never waits; requests "
        "that arrive together are still batched)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=5.0, metavar="MB", help="largest request body (5)"
    )
    parser.add_argument(
        "--pyfunc",
        action="store_true",
        help="predict through mlflow.pyfunc instead of the flavor's native predict",
    )


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.errors import ConfigError
    from modelyard.serving.app import ServingOptions
    from modelyard.serving.server import load_served_model, resolve_model, run_server

    started = time.monotonic()
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise ConfigError(
            "--max-batch must be 1 or more, --max-wait-ms 0 or more, --max-body-mb above 0"
        )

    def registry() -> tuple[Runtime, str]:
        return runtime_for(args), project_name(args)

    resolved = resolve_model(args.model, registry)
    served = load_served_model(resolved, native=not args.pyfunc)
    options = ServingOptions(
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_batch_rows=args.max_batch,
        max_wait=args.max_wait_ms / 1000,
    )
    run_server(served, host=args.host, port=args.port, options=options, started_at=started)
    return 0
