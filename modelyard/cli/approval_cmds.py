"""`approve` and `reject`: a person's decision on a waiting approval step."""

from __future__ import annotations

import argparse

from modelyard.cli.common import runtime_for


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=int, help="run id")
    parser.add_argument("step", help="the approval step's name")
    parser.add_argument("-m", "--comment", default="", help="why (recorded with the decision)")
    parser.add_argument("--by", help="who decides (default: the current user)")
    parser.add_argument(
        "--no-continue",
        action="store_true",
        help="only record the decision; a worker or `modelyard resume` continues the run",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.cli.progress import progress_for
    from modelyard.cli.run_cmds import OUTCOME_EXIT, _push_in_background
    from modelyard.engine import service

    runtime = runtime_for(args)
    approve = name == "approve"
    service.decide_approval(
        runtime, args.run, args.step, approve=approve, comment=args.comment, actor=args.by
    )
    verb = "approved" if approve else "rejected"
    print(f"run {args.run}: step '{args.step}' {verb}")
    if args.no_continue:
        return 0
    detail = service.run_detail(runtime, args.run)
    with progress_for(list(detail.steps), quiet=args.quiet) as progress:
        run = service.continue_after_decision(runtime, args.run, progress)
    if run is None:
        print(f"run {args.run} continues in the process that drives it")
        return 0
    _push_in_background(runtime, run)
    print(f"run {run.id} {run.status}" + (f": {run.message}" if run.message else ""))
    return OUTCOME_EXIT.get(run.status, 1)
