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
    guards = parser.add_argument_group("guards")
    guards.add_argument(
        "--api-keys-env",
        metavar="VAR",
        help="accept only requests with one of the API keys in this environment variable "
        "(comma-separated; `Authorization: Bearer KEY` or `X-Api-Key`). Keys are never taken "
        "from the command line, where other users could read them",
    )
    guards.add_argument(
        "--api-keys-file", metavar="PATH", help="the same, one key a line in a file"
    )
    guards.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="only clients in this network (repeatable), e.g. 127.0.0.1/32",
    )
    guards.add_argument("--rate", type=float, help="requests per second per client (429 above)")
    guards.add_argument("--burst", type=int, help="requests a client may send at once (rate)")
    guards.add_argument(
        "--max-in-flight", type=int, metavar="N", help="503 once N requests are being served"
    )
    guards.add_argument(
        "--timeout-ms", type=float, metavar="MS", help="504 when a prediction takes longer"
    )
    parser.add_argument(
        "--pyfunc",
        action="store_true",
        help="predict through mlflow.pyfunc instead of the flavor's native predict",
    )


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.errors import ConfigError
    from modelyard.serving.app import ServingOptions
    from modelyard.serving.guards import GuardOptions
    from modelyard.serving.server import load_served_model, resolve_model, run_server

    started = time.monotonic()
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_body_mb <= 0:
        raise ConfigError(
            "--max-batch must be 1 or more, --max-wait-ms 0 or more, --max-body-mb above 0"
        )

    def registry() -> tuple[Runtime, str]:
        return runtime_for(args), project_name(args)

    guards = GuardOptions.build(
        keys=_api_keys(args),
        allow=args.allow,
        rate=args.rate,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        timeout=args.timeout_ms / 1000 if args.timeout_ms is not None else None,
    )
    resolved = resolve_model(args.model, registry)
    served = load_served_model(resolved, native=not args.pyfunc)
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
    )
    return 0


def _api_keys(args: argparse.Namespace) -> list[str]:
    import os
    from pathlib import Path

    from modelyard.errors import ConfigError

    keys: list[str] = []
    if args.api_keys_env:
        value = os.environ.get(args.api_keys_env)
        if not value:
            raise ConfigError(
                f"the environment variable {args.api_keys_env} is not set or empty",
                hint=f"export {args.api_keys_env}=KEY1,KEY2 before starting the server",
            )
        keys += [k for k in value.split(",") if k.strip()]
    if args.api_keys_file:
        try:
            text = Path(args.api_keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API keys file: {exc.strerror}", where=args.api_keys_file
            ) from None
        keys += [line for line in text.splitlines() if line.strip()]
    return keys
