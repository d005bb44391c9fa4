"""`init` and `validate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from modelyard.cli.common import add_json_flag, print_json

EXAMPLE_PROJECT = """\
# modelyard project: pipelines of steps. Run one with `modelyard run train`.
name: {name}

pipelines:
  train:
    parameters:
      greeting: {{type: str, default: hello}}
    steps:
      prepare:
        # a command under the files-in/files-out contract: ${{{{ outputs.NAME }}}} is a folder
        run: >-
          python steps/prepare.py --greeting ${{{{ params.greeting }}}}
          --out ${{{{ outputs.data }}}}
        outputs: [data]
      report:
        run: python steps/report.py --data ${{{{ inputs.data }}}}
        inputs:
          data: ${{{{ steps.prepare.outputs.data }}}}
"""

PREPARE = """\
import argparse
import pathlib

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", required=True)
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()
(args.out / "message.txt").write_text(f"{args.greeting}, world\\n")
print("wrote", args.out / "message.txt")
"""

REPORT = """\
import argparse
import pathlib

parser = argparse.ArgumentParser()
parser.add_argument("--data", type=pathlib.Path, required=True)
args = parser.parse_args()
print((args.data / "message.txt").read_text().strip())
"""


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "init":
        parser.add_argument("directory", nargs="?", default=".", help="where (default: here)")
    else:
        parser.add_argument(
            "--strict", action="store_true", help="treat warnings (e.g. unused outputs) as errors"
        )
        add_json_flag(parser)


def execute(name: str, args: argparse.Namespace) -> int:
    return _init(args) if name == "init" else _validate(args)


def _init(args: argparse.Namespace) -> int:
    from modelyard.errors import ConfigError
    from modelyard.project.loader import PROJECT_FILE

    root = Path(args.directory).resolve()
    if (root / PROJECT_FILE).exists():
        raise ConfigError(
            f"{root / PROJECT_FILE} already exists", hint="edit it, or init another folder"
        )
    (root / "steps").mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "_-" else "-" for c in root.name) or "project"
    if not name[0].isalpha():
        name = "p-" + name
    (root / PROJECT_FILE).write_text(EXAMPLE_PROJECT.format(name=name))
    for filename, text in (("prepare.py", PREPARE), ("report.py", REPORT)):
        if not (root / "steps" / filename).exists():
            (root / "steps" / filename).write_text(text)
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if ".modelyard/" not in lines:
        gitignore.write_text("\n".join([*lines, ".modelyard/"]) + "\n")
    print(f"created {root / PROJECT_FILE}; try: cd {root} && modelyard run train")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from modelyard.project.loader import ProjectInvalid, load_project

    try:
        project = load_project(Path(args.project) if args.project else None)
    except ProjectInvalid as exc:
        if args.json:
            print_json({"valid": False, "problems": [p.__dict__ for p in exc.problems]})
            return exc.exit_code
        raise
    warnings = project.warnings
    if args.json:
        print_json(
            {
                "valid": not (args.strict and warnings),
                "project": project.name,
                "pipelines": {n: list(p.steps) for n, p in project.pipelines.items()},
                "problems": [p.__dict__ for p in warnings],
            }
        )
    else:
        for warning in warnings:
            print(warning)
        count = sum(len(p.steps) for p in project.pipelines.values())
        print(
            f"{project.file}: valid ({len(project.pipelines)} pipelines, {count} steps"
            + (f", {len(warnings)} warnings" if warnings else "")
            + ")"
        )
    return 2 if args.strict and warnings else 0
