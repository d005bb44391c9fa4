"""Command-line options shared by `serve` and `endpoint deploy`: batching, body limit, guards."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.serving.guards import GuardOptions

GUARD_FLAGS = (
    "api_keys_env",
    "api_keys_file",
    "allow",
    "rate",
    "burst",
    "max_in_flight",
    "timeout_ms",
)


def add_batching_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """`defaults=False`: absent options are None (a redeploy keeps what the endpoint has)."""
    parser.add_argument(
        "--max-batch",
        type=int,
        default=256 if defaults else None,
        metavar="ROWS",
        help="rows of concurrent requests predicted together, at most (256)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=0.0 if defaults else None,
        metavar="MS",
        help="how long a request may wait for others to batch with (0: never waits; requests "
        "that arrive together are still batched)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=5.0 if defaults else None,
        metavar="MB",
        help="largest request body (5)",
    )


def check_batching(args: argparse.Namespace) -> None:
    from modelyard.errors import ConfigError

    if (
        (args.max_batch is not None and args.max_batch < 1)
        or (args.max_wait_ms is not None and args.max_wait_ms < 0)
        or (args.max_body_mb is not None and args.max_body_mb <= 0)
    ):
        raise ConfigError(
            "--max-batch must be 1 or more, --max-wait-ms 0 or more, --max-body-mb above 0"
        )


def add_guard_arguments(parser: argparse.ArgumentParser) -> None:
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


def guards_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, flag) not in (None, []) for flag in GUARD_FLAGS)


def guard_options(args: argparse.Namespace) -> GuardOptions:
    """Validated guards from the command line (keys read from the environment or a file)."""
    from modelyard.serving.guards import GuardOptions

    return GuardOptions.build(
        keys=api_keys(args),
        allow=args.allow,
        rate=args.rate,
        burst=args.burst,
        max_in_flight=args.max_in_flight,
        timeout=args.timeout_ms / 1000 if args.timeout_ms is not None else None,
    )


def api_keys(args: argparse.Namespace) -> list[str]:
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
