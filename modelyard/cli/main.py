"""The `modelyard` command: parse arguments, call a service function, render the result.

Only argparse is imported up front; each command's module (and so SQLAlchemy, pydantic...) is
imported when that command runs, which keeps `modelyard --help` and fast paths quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# command -> (module under modelyard.cli, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("project_cmds", "create a project (modelyard.yaml and an example step)"),
    "validate": ("project_cmds", "check the project file: schema, references, cycles, files"),
    "run": ("run_cmds", "run a pipeline"),
    "runs": ("run_cmds", "list runs"),
    "show": ("run_cmds", "show a run: steps, attempts, durations, cache hits and the DAG"),
    "logs": ("run_cmds", "print a step's log (--follow to stream it)"),
    "resume": ("run_cmds", "re-run the failed or unfinished steps of a run"),
    "cancel": ("run_cmds", "cancel a run and stop its processes"),
    "outputs": ("output_cmds", "list a step's output artifacts, or write one out (--dest)"),
    "approve": ("approval_cmds", "approve a waiting approval step and continue the run"),
    "reject": ("approval_cmds", "reject a waiting approval step (the run fails)"),
    "evidence": ("evidence_cmds", "the approval evidence of a run's or a model's version"),
    "worker": ("run_cmds", "advance runs whose driver died and expire approvals, in a loop"),
    "data": ("data_cmds", "data sources: snapshot a version, list versions, show a manifest"),
    "watch": ("data_cmds", "poll data sources and run the pipelines their new versions trigger"),
    "tracking": ("tracking_cmds", "MLflow tracking: push pending records, show what waits"),
    "models": ("model_cmds", "model registry: versions, approvals, aliases, cards, packages"),
    "serve": (
        "serve_cmds",
        "serve a model over HTTP (MLflow's scoring protocol, SageMaker's /ping)",
    ),
    "endpoint": (
        "endpoint_cmds",
        "serving endpoints: deploy (rollouts with rollback, autoscaling), list, show, logs",
    ),
}


# the top-level modules of the `control` extra's distributions
CONTROL_PLANE_MODULES = frozenset(
    {
        "sqlalchemy",
        "alembic",
        "pydantic",
        "fsspec",
        "rich",
        "mlflow",
        "matplotlib",
        "prometheus_client",
    }
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelyard",
        description="ML CI/CD in one Python system. Run `modelyard COMMAND --help` for details.",
    )
    parser.add_argument(
        "--project",
        metavar="DIR",
        help="the project folder (default: the nearest folder with modelyard.yaml)",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, Any] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        # each module declares its commands' arguments; importing it is cheap (no heavy imports)
        module = modules.get(module_name) or importlib.import_module(f"modelyard.cli.{module_name}")
        modules[module_name] = module
        module.add_arguments(name, command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(f"modelyard {version('modelyard')}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    from modelyard.errors import ModelyardError

    try:
        module = importlib.import_module(f"modelyard.cli.{args._module}")
        return int(module.execute(args.command, args) or 0)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in CONTROL_PLANE_MODULES:
            raise
        print(
            f"error: {exc.name} is not installed: the control plane needs "
            "`pip install 'modelyard[control]'` (this installation has only the core, which "
            "runs the device agent, `modelyard-agent`)",
            file=sys.stderr,
        )
        return 7
    except ModelyardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    """The console script: run `main`, then leave without the interpreter's slow teardown.

    The teardown (garbage-collecting every object, finalising modules) adds ~0.1 s to each command
    and does nothing a finished command needs: output is flushed, every transaction is committed.
    """
    import os

    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()
