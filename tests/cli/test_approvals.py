"""`approve` and `reject` through the CLI on a pipeline that waits for a person."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.testing import write_project

PROJECT = """\
pipelines:
  release:
    steps:
      build:
        run: python -c "print('built')"
      sign_off:
        approval: "Ship build?"
        after: [build]
      ship:
        run: python -c "print('shipped')"
        after: [sign_off]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", PROJECT)


def statuses(cli: Callable, root: Path, run_id: int) -> dict[str, str]:
    detail = cli(root, "show", str(run_id), "--json").json()
    return {"run": detail["status"]} | {s["name"]: s["status"] for s in detail["steps"]}


def test_approve_continues_the_run(root: Path, cli_process: Callable, cli: Callable):
    started = cli_process(root, "run", "release")
    assert started.code == 0, started.err
    assert "run 1 waiting" in started.out
    assert "modelyard approve 1" in started.out
    assert statuses(cli, root, 1) == {
        "run": "waiting",
        "build": "succeeded",
        "sign_off": "waiting",
        "ship": "pending",
    }

    approved = cli_process(root, "approve", "1", "sign_off", "-m", "looks good", "--by", "alice")
    assert approved.code == 0, approved.err
    assert "run 1: step 'sign_off' approved" in approved.out
    assert "run 1 succeeded" in approved.out
    assert statuses(cli, root, 1) == {
        "run": "succeeded",
        "build": "succeeded",
        "sign_off": "succeeded",
        "ship": "succeeded",
    }
    step = cli(root, "show", "1", "--json").json()["steps"][1]
    assert "alice" in step["message"]
    assert "looks good" in step["message"]
    assert cli(root, "logs", "1", "ship").out == "shipped\n"

    again = cli_process(root, "approve", "1", "sign_off")
    assert again.code == 4
    assert "Traceback" not in again.err
    assert "already been decided" in again.err
    rejected_late = cli_process(root, "reject", "1", "sign_off")
    assert rejected_late.code == 4
    assert "already been decided" in rejected_late.err
    assert statuses(cli, root, 1)["run"] == "succeeded"


def test_reject_fails_the_run(root: Path, cli: Callable):
    assert cli(root, "run", "release", "--quiet").code == 0
    result = cli(root, "reject", "1", "sign_off", "-m", "not today", "--by", "bob", "--quiet")
    assert result.code == 1
    assert "run 1: step 'sign_off' rejected" in result.out
    assert "run 1 failed" in result.out
    found = statuses(cli, root, 1)
    assert found["run"] == "failed"
    assert found["sign_off"] == "failed"
    assert found["ship"] != "succeeded"
    detail = cli(root, "show", "1", "--json").json()
    assert "bob" in detail["steps"][1]["message"]
    second = cli(root, "approve", "1", "sign_off")
    assert second.code == 4
    assert "already been decided" in second.err


def test_approve_with_no_continue_only_records(root: Path, cli: Callable):
    assert cli(root, "run", "release", "--quiet").code == 0
    result = cli(root, "approve", "1", "sign_off", "--no-continue")
    assert result.code == 0
    assert "approved" in result.out
    assert statuses(cli, root, 1)["ship"] == "pending"
    resumed = cli(root, "resume", "1", "--quiet")
    assert resumed.code == 0
    assert statuses(cli, root, 1) == {
        "run": "succeeded",
        "build": "succeeded",
        "sign_off": "succeeded",
        "ship": "succeeded",
    }


def test_approve_a_step_that_is_not_an_approval(root: Path, cli: Callable):
    assert cli(root, "run", "release", "--quiet").code == 0
    result = cli(root, "approve", "1", "build")
    assert result.code == 4
    assert "is a run step, not an approval" in result.err
    assert "sign_off" in result.err


def test_approve_an_unknown_step_or_run(root: Path, cli: Callable):
    assert cli(root, "run", "release", "--quiet").code == 0
    unknown_step = cli(root, "approve", "1", "nope")
    assert unknown_step.code == 3
    assert "run 1 has no step 'nope'" in unknown_step.err
    unknown_run = cli(root, "approve", "7", "sign_off")
    assert unknown_run.code == 3
    assert "run 7 does not exist" in unknown_run.err


def test_cancel_a_waiting_run(root: Path, cli: Callable):
    assert cli(root, "run", "release", "--quiet").code == 0
    result = cli(root, "cancel", "1")
    assert result.code == 0
    assert "run 1 cancelled" in result.out
    assert statuses(cli, root, 1)["run"] == "cancelled"
    late = cli(root, "approve", "1", "sign_off")
    assert late.code == 4
    again = cli(root, "cancel", "1")
    assert again.code == 4
    assert "run 1 has already finished (cancelled)" in again.err
