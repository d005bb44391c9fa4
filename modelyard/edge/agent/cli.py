"""`modelyard-agent`: run the device agent, deploy to it, and look at what it runs.

    modelyard-agent run --root DIR [--thing-name NAME] [--health-window S]
    modelyard-agent deploy --root DIR [--recipe-dir D] [--artifact-dir D] [--merge NAME=VERSION ...]
        [--remove NAME ...] [--update-config FILE|JSON] [--failure-policy ROLLBACK|DO_NOTHING]
        [--notify-timeout S | --skip-notify] [--wait [--timeout S]] [--json]
    modelyard-agent components --root DIR [--json]
    modelyard-agent deployments --root DIR [--json]
    modelyard-agent logs --root DIR [COMPONENT] [-f]

`deploy` works like `greengrass-cli deployment create`: the device's root components, plus
`--merge`, minus `--remove`; it adds `--recipe-dir`'s recipes to the store and puts the
deployment document in the agent's queue (the agent need not be running: it takes the queue
when it starts). With `--wait` it follows the deployment and exits 0 when it SUCCEEDED, 1 when
it FAILED (printing why). Errors are one line saying what, where and how to fix it; exit codes:
2 bad input, 3 not found, 4 conflict (another agent on the root), 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from modelyard.edge.agent.agent import Agent, prepare_root, read_status, running_agent
from modelyard.edge.agent.deployments import (
    DEFAULT_UPDATE_TIMEOUT,
    DocumentError,
    local_deployment,
    parse_deployment,
    parse_update_config,
)
from modelyard.edge.agent.errors import AgentError
from modelyard.edge.agent.journal import FINAL, QUEUED, SUCCEEDED, DeploymentRecord, Journal
from modelyard.edge.agent.logs import agent_log_path, component_log_path, logs_dir
from modelyard.edge.agent.store import ComponentStore

PROG = "modelyard-agent"
DEFAULT_WAIT_TIMEOUT = 600.0
_POLL = 0.2


class NotFoundError(AgentError):
    exit_code = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="The modelyard device agent (Greengrass v2 components)."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the agent on a root folder (until SIGTERM)")
    run.add_argument("--root", required=True, help="the agent's folder (created 0700)")
    run.add_argument("--thing-name", help="the device's name: {iot:thingName} (default: host)")
    run.add_argument(
        "--health-window",
        type=_seconds,
        default=10.0,
        help="seconds every component must stay healthy for a deployment to succeed",
    )

    deploy = commands.add_parser("deploy", help="queue a local deployment")
    deploy.add_argument("--root", required=True)
    deploy.add_argument("--recipe-dir", action="append", default=[], help="add these recipes")
    deploy.add_argument(
        "--artifact-dir", action="append", default=[], help="<dir>/<name>/<version>/<file>"
    )
    deploy.add_argument("--merge", nargs="+", action="extend", default=[], metavar="NAME=VERSION")
    deploy.add_argument("--remove", nargs="+", action="extend", default=[], metavar="NAME")
    deploy.add_argument(
        "--update-config",
        metavar="FILE|JSON",
        help='{"NAME": {"MERGE": {...}, "RESET": ["/pointer", ...]}}, in a file or inline',
    )
    deploy.add_argument("--failure-policy", choices=("ROLLBACK", "DO_NOTHING"), default="ROLLBACK")
    notify = deploy.add_mutually_exclusive_group()
    notify.add_argument("--notify-timeout", type=_seconds, default=DEFAULT_UPDATE_TIMEOUT)
    notify.add_argument("--skip-notify", action="store_true", help="SKIP_NOTIFY_COMPONENTS")
    deploy.add_argument("--wait", action="store_true", help="follow it until it ends")
    deploy.add_argument("--timeout", type=_seconds, default=DEFAULT_WAIT_TIMEOUT)
    deploy.add_argument("--json", action="store_true")

    components = commands.add_parser("components", help="the components and their states")
    components.add_argument("--root", required=True)
    components.add_argument("--json", action="store_true")

    deployments = commands.add_parser("deployments", help="the deployments and their results")
    deployments.add_argument("--root", required=True)
    deployments.add_argument("--json", action="store_true")

    logs = commands.add_parser("logs", help="the agent's log, or a component's")
    logs.add_argument("--root", required=True)
    logs.add_argument("component", nargs="?")
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "run": _run,
        "deploy": _deploy,
        "components": _components,
        "deployments": _deployments,
        "logs": _logs,
    }
    try:
        return handlers[args.command](args)
    except AgentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours: still one line (`run` logs the traceback)
        print(
            f"{PROG}: internal error: {exc!r} (please report it, with the agent's log: "
            f"{PROG} logs --root {args.root})",
            file=sys.stderr,
        )
        return 1


# --- run -------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    echo = logging.StreamHandler(sys.stderr)
    echo.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("modelyard.edge.agent")
    logger.addHandler(echo)
    agent = Agent(args.root, thing_name=args.thing_name, health_window=args.health_window)
    asyncio.run(agent.run())
    return 0


# --- deploy ----------------------------------------------------------------------------------


def _existing_root(text: str) -> Path:
    root = Path(text).expanduser().resolve()
    if not root.is_dir():
        raise NotFoundError(
            f"no agent root at {root}", hint=f"start an agent there: {PROG} run --root {text}"
        )
    return root


def _deploy(args: argparse.Namespace) -> int:
    update_config = _update_config(args.update_config) if args.update_config else None
    artifact_dirs = []
    for folder in args.artifact_dir:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise NotFoundError(
                f"no artifact folder {path}",
                path="--artifact-dir",
                hint="give a folder laid out as <dir>/<component>/<version>/<file>",
            )
        artifact_dirs.append(str(path))
    for folder in args.recipe_dir:
        if not Path(folder).expanduser().is_dir():
            raise NotFoundError(
                f"no recipe folder {folder}",
                path="--recipe-dir",
                hint="give the folder that holds the recipe files (*.yaml, *.json)",
            )
    root = prepare_root(Path(args.root))
    journal = Journal(root)
    with journal.lock():  # the agent's store clean-up waits until it is queued
        document = local_deployment(  # validated first: a mistake adds no recipe
            _base_roots(journal),
            merge=args.merge,
            remove=args.remove,
            update_config=update_config,
            failure_policy=args.failure_policy,
            notify_timeout=args.notify_timeout,
            skip_notify=args.skip_notify,
            artifact_dirs=artifact_dirs,
        )
        if args.recipe_dir:
            store = ComponentStore(root)
            for folder in args.recipe_dir:
                store.add_recipes(Path(folder).expanduser())
        journal.enqueue(document)
    deployment_id = document["deploymentId"]
    if running_agent(root) is None:
        print(
            f"note: no agent is running on {root}; the deployment runs when one starts "
            f"({PROG} run --root {root})",
            file=sys.stderr,
        )
    if args.wait:
        return _follow(journal, deployment_id, args.timeout, as_json=args.json)
    if args.json:
        print(json.dumps({"deploymentId": deployment_id, "status": QUEUED}))
    else:
        print(f"deployment {deployment_id} queued")
    return 0


def _update_config(text: str) -> dict[str, Any]:
    source = "--update-config"
    if not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise NotFoundError(
                f"cannot read {path}: {exc.strerror or exc}",
                path=source,
                hint="give a JSON file, or the JSON itself",
            ) from None
        source = str(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DocumentError(
            f"not valid JSON: {exc}",
            path=source,
            hint='write {"NAME": {"MERGE": {...}, "RESET": ["/pointer"]}}',
        ) from None
    return dict(parse_update_config(data, source=source))


def _base_roots(journal: Journal) -> dict[str, str]:
    """The roots a new local deployment starts from: the last queued deployment's if any is
    waiting (deployments queue up in order), else what the device runs."""
    for item in reversed(journal.queued()):
        try:
            return parse_deployment(item.document).roots
        except AgentError:
            continue
    return dict(journal.current().roots)


def _follow(journal: Journal, deployment_id: str, timeout: float, *, as_json: bool) -> int:
    deadline = time.monotonic() + timeout
    shown: tuple[str, str | None] | None = None
    while True:
        record = journal.record(deployment_id)
        status = record.status if record is not None else QUEUED
        phase = record.phase if record is not None else None
        if not as_json and (status, phase) != shown:
            shown = (status, phase)
            print(f"{deployment_id}: {status}" + (f" ({phase})" if phase else ""), file=sys.stderr)
        if record is not None and status in FINAL:
            if as_json:
                print(json.dumps(_summary(record), indent=2))
            elif status == SUCCEEDED:
                print(f"deployment {deployment_id} SUCCEEDED")
            else:
                print(f"deployment {deployment_id} FAILED: {record.reason}")
            return 0 if status == SUCCEEDED else 1
        if time.monotonic() >= deadline:
            print(
                f"{PROG}: deployment {deployment_id} is still {status} after {timeout:g}s "
                f"(follow it with: {PROG} deployments --root {journal.root})",
                file=sys.stderr,
            )
            return 1
        time.sleep(_POLL)


def _summary(record: DeploymentRecord) -> dict[str, Any]:
    return {
        "deploymentId": record.deployment_id,
        "status": record.status,
        "phase": record.phase,
        "reason": record.reason,
        "createdAt": record.created_at,
        "startedAt": record.started_at,
        "finishedAt": record.finished_at,
        "components": record.outcomes,
        "deferrals": record.deferrals,
    }


# --- components, deployments, logs -------------------------------------------------------------


def _components(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    pid = running_agent(root)
    status = read_status(root) or {}
    entries = status.get("components") if isinstance(status.get("components"), dict) else {}
    rows = [
        {
            "name": name,
            "version": entry.get("version"),
            "state": entry.get("state"),
            "reason": entry.get("reason"),
            "root": bool(entry.get("root")),
        }
        for name, entry in sorted((entries or {}).items())
        if isinstance(entry, dict)
    ]
    deployment = status.get("deployment") if pid is not None else None
    if args.json:
        print(
            json.dumps(
                {
                    "agentRunning": pid is not None,
                    "agentPid": pid or None,
                    "deployment": deployment,
                    "components": rows,
                },
                indent=2,
            )
        )
        return 0
    if pid is None:
        print(f"the agent is not running on {root} (start it: {PROG} run --root {root})")
        if rows:
            print("last known states:")
    elif deployment:
        print(
            f"deployment {deployment.get('deploymentId')} in progress ({deployment.get('phase')})"
        )
    if not rows:
        print("no components")
        return 0
    _table(
        ["NAME", "VERSION", "STATE", "REASON"],
        [[r["name"], r["version"], r["state"], r["reason"] or ""] for r in rows],
    )
    return 0


def _deployments(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    journal = Journal(root)
    records = {r.deployment_id: r for r in journal.records()}
    for item in journal.queued():  # waiting, maybe not yet seen by the agent
        if item.deployment_id not in records:
            document = item.document if isinstance(item.document, dict) else {}
            waiting = DeploymentRecord(item.deployment_id, document)
            waiting.created_at = item.queued_at or waiting.created_at
            records[item.deployment_id] = waiting
    ordered = sorted(records.values(), key=lambda r: (r.created_at, r.deployment_id))
    if args.json:
        print(json.dumps([_summary(r) for r in ordered], indent=2))
        return 0
    if not ordered:
        print("no deployments")
        return 0
    _table(
        ["ID", "STATUS", "WHEN", "REASON"],
        [
            [
                r.deployment_id,
                r.status + (f" ({r.phase})" if r.phase else ""),
                r.finished_at or r.started_at or r.created_at,
                r.reason or "",
            ]
            for r in ordered
        ],
    )
    return 0


def _logs(args: argparse.Namespace) -> int:
    root = _existing_root(args.root)
    try:
        path = component_log_path(root, args.component) if args.component else agent_log_path(root)
    except ValueError as exc:
        raise DocumentError(str(exc), path="COMPONENT") from None
    if not path.exists() and not args.follow:
        known = (
            sorted(p.stem for p in logs_dir(root).glob("*.log")) if logs_dir(root).is_dir() else []
        )
        raise NotFoundError(
            f"no log at {path}",
            hint=f"logs there: {', '.join(known)}" if known else "no component has run yet",
        )
    position = 0
    if path.exists():
        with open(path, "rb") as handle:
            data = handle.read()
        sys.stdout.write(data.decode("utf-8", errors="replace"))
        sys.stdout.flush()
        position = len(data)
    while args.follow:
        time.sleep(_POLL)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if size < position:  # rotated: the new file starts over
            position = 0
        if size > position:
            with open(path, "rb") as handle:
                handle.seek(position)
                data = handle.read()
            position += len(data)
            sys.stdout.write(data.decode("utf-8", errors="replace"))
            sys.stdout.flush()
    return 0


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print(f"{line}  {row[-1]}".rstrip())
