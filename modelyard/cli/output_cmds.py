"""`outputs RUN STEP [OUTPUT] [--dest DIR]`: list a step's output artifacts, or write one out.

What a step produced is content-addressed in the artifact store; this gets it back as plain files
(checked against its digest), e.g. the deployable bundle of a pipeline's last step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from modelyard.cli.common import add_json_flag, print_json, runtime_for, table


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    parser.add_argument("step", help="the step's name")
    parser.add_argument("output", nargs="?", help="one output to write out (with --dest)")
    parser.add_argument(
        "--dest", type=Path, help="write OUTPUT here (a new path: a file, or a folder for a dir)"
    )
    add_json_flag(parser)


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.engine.service import run_detail
    from modelyard.errors import ConfigError, NotFound
    from modelyard.store.artifacts import ArtifactRef

    runtime = runtime_for(args)
    detail = run_detail(runtime, args.run)
    step = detail.steps.get(args.step)
    if step is None:
        raise NotFound(
            f"run {args.run} has no step '{args.step}'", hint="steps: " + ", ".join(detail.steps)
        )
    outputs = step.outputs or {}
    if args.output is None:
        if args.dest is not None:
            raise ConfigError("--dest needs the OUTPUT to write", hint=_names(outputs))
        if args.json:
            print_json(outputs)
        elif outputs:
            rows = [[n, o["kind"], f"{o['size']:,}", o["digest"]] for n, o in outputs.items()]
            print(table(["output", "kind", "bytes", "digest"], rows))
        else:
            print(f"step {args.step} of run {args.run} has no outputs ({step.status})")
        return 0
    if args.output not in outputs:
        raise NotFound(
            f"step {args.step} of run {args.run} has no output '{args.output}' ({step.status})",
            hint=_names(outputs),
        )
    if args.dest is None:
        raise ConfigError(
            f"say where to write '{args.output}'",
            hint=f"e.g. modelyard outputs {args.run} {args.step} {args.output} --dest ./out",
        )
    ref = ArtifactRef.from_json(outputs[args.output])
    path = runtime.store.materialize(ref, args.dest)
    if args.json:
        print_json({"output": args.output, "path": str(path.resolve()), **outputs[args.output]})
    else:
        print(f"{args.output} ({ref.kind}, {ref.digest}) written to {path}")
    return 0


def _names(outputs: dict[str, object]) -> str:
    return "its outputs: " + (", ".join(outputs) or "none")
