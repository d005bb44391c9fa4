"""`tracking push` and `tracking status`: the MLflow outbox of the metadata DB."""

from __future__ import annotations

import argparse
import sys

from modelyard.cli.common import add_json_flag, local_time, print_json, runtime_for, table


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tracking_command", metavar="ACTION", required=True)
    push = sub.add_parser("push", help="send the pending records to MLflow now")
    push.add_argument("--run", type=int, help="only this run's records")
    add_json_flag(push)
    status = sub.add_parser("status", help="runs whose records have not reached MLflow yet")
    add_json_flag(status)


def execute(name: str, args: argparse.Namespace) -> int:
    from modelyard.tracking import pusher
    from modelyard.tracking.links import redact

    runtime = runtime_for(args)
    uri = redact(runtime.settings.effective_tracking_uri)  # a URI may carry a password
    if args.tracking_command == "push":
        report = pusher.push(runtime, run_id=args.run)
        if args.json:
            print_json(report.to_json())
        elif report.busy:
            print("another push is in progress; try again when it ends")
        else:
            print(f"pushed {report.pushed} record(s) to {uri}")
            for run_id, error in report.errors.items():
                print(f"run {run_id}: records wait: {error}", file=sys.stderr)
        return 1 if report.errors else 0
    rows = pusher.pending(runtime)
    if args.json:
        print_json(
            {
                "tracking_uri": uri,
                "pending": [
                    {
                        "run_id": r["run_id"],
                        "records": r["records"],
                        "attempts": r["attempts"],
                        "last_error": r["last_error"] and redact(r["last_error"]),
                    }
                    for r in rows
                ],
            }
        )
        return 0
    print(f"tracking URI: {uri}")
    if not rows:
        print("nothing pending: MLflow has every record")
        return 0
    body = [
        [
            str(r["run_id"]),
            str(r["records"]),
            str(r["attempts"]),
            local_time(r["oldest"]),
            redact(r["last_error"] or "-")[:80],
        ]
        for r in rows
    ]
    print(table(["run", "records", "attempts", "since", "last error"], body))
    return 0
