"""The CLI end to end: init, run, runs, show, logs, cancel, --version (stable JSON fields)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest

from modelyard.testing import write_project

RUN_KEYS = {
    "id",
    "project",
    "pipeline",
    "status",
    "trigger",
    "params",
    "tracking",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
    "message",
    "data",
    "git",
}
STEP_KEYS = {
    "name",
    "kind",
    "status",
    "cached",
    "cache_key",
    "attempts",
    "started_at",
    "finished_at",
    "duration_s",
    "outputs",
    "values",
    "metrics",
    "tracking",
    "message",
}
ATTEMPT_KEYS = {
    "number",
    "status",
    "exit_code",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
    "log_path",
}


@pytest.fixture
def initialized(tmp_path: Path, cli: Callable) -> Path:
    root = tmp_path / "my project"
    result = cli(None, "init", str(root))
    assert result.code == 0, result.err
    return root


def test_init_creates_a_valid_project(initialized: Path, cli: Callable):
    root = initialized
    assert (root / "modelyard.yaml").is_file()
    assert (root / "steps" / "prepare.py").is_file()
    assert ".modelyard/" in (root / ".gitignore").read_text().splitlines()
    result = cli(root, "validate", "--strict", "--json")
    assert result.code == 0, result.out
    assert result.json()["project"] == "my-project"
    assert result.json()["pipelines"] == {"train": ["prepare", "report"]}


def test_init_refuses_an_existing_project(initialized: Path, cli: Callable):
    before = (initialized / "modelyard.yaml").read_text()
    result = cli(None, "init", str(initialized))
    assert result.code == 2
    assert "already exists" in result.err
    assert (initialized / "modelyard.yaml").read_text() == before


def test_init_keeps_an_existing_gitignore(tmp_path: Path, cli: Callable):
    (tmp_path / ".gitignore").write_text("*.pyc\n")
    assert cli(None, "init", str(tmp_path)).code == 0
    assert (tmp_path / ".gitignore").read_text() == "*.pyc\n.modelyard/\n"


def test_init_then_run_then_everything_cached(initialized: Path, cli_process: Callable):
    root = initialized
    first = cli_process(root, "run", "train")
    assert first.code == 0, first.err
    assert "run 1 succeeded" in first.out
    assert "Traceback" not in first.err

    second = cli_process(root, "run", "train", "--json")
    assert second.code == 0, second.err
    detail = second.json()
    assert detail["id"] == 2
    assert detail["status"] == "succeeded"
    assert [(s["name"], s["status"], s["cached"]) for s in detail["steps"]] == [
        ("prepare", "succeeded", True),
        ("report", "succeeded", True),
    ]

    shown = cli_process(root, "show", "2", "--json")
    assert shown.code == 0
    steps = shown.json()["steps"]
    assert all(step["cached"] for step in steps)
    assert all(step["attempts"] == [] for step in steps)
    assert all("cache hit" in step["message"] for step in steps)
    first_steps = cli_process(root, "show", "1", "--json").json()["steps"]
    assert [s["cache_key"] for s in first_steps] == [s["cache_key"] for s in steps]
    assert not any(s["cached"] for s in first_steps)


def test_json_field_names_are_stable(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    assert cli(root, "run", "train", "--quiet", "-p", "greeting=hi").code == 0

    listed = cli(root, "runs", "--json")
    assert listed.code == 0
    runs = listed.json()
    assert [r["id"] for r in runs] == [2, 1]  # newest first
    for run in runs:
        assert set(run) == RUN_KEYS
        assert run["pipeline"] == "train"
        assert run["project"] == "my-project"
        assert run["trigger"] == "manual"
        assert run["status"] == "succeeded"
        assert run["created_at"].endswith("Z")
        assert isinstance(run["duration_s"], float)
    assert runs[0]["params"] == {"greeting": "hi"}

    shown = cli(root, "show", "1", "--json")
    assert shown.code == 0
    detail = shown.json()
    assert set(detail) == RUN_KEYS | {"steps"}
    assert {k: v for k, v in detail.items() if k != "steps"} == runs[1]
    assert [s["name"] for s in detail["steps"]] == ["prepare", "report"]
    for step in detail["steps"]:
        assert set(step) == STEP_KEYS
        assert step["kind"] == "run"
        assert step["cache_key"].startswith("sha256:")
        [attempt] = step["attempts"]
        assert set(attempt) == ATTEMPT_KEYS
        assert attempt["number"] == 1
        assert attempt["status"] == "succeeded"
        assert attempt["exit_code"] == 0
    prepare = detail["steps"][0]
    assert set(prepare["outputs"]) == {"data"}
    assert prepare["outputs"]["data"]["digest"].startswith("sha256:")


def test_runs_filters_and_text(initialized: Path, cli: Callable):
    root = initialized
    result = cli(root, "runs")
    assert result.code == 0
    assert "no runs yet" in result.out
    assert cli(root, "run", "train", "--quiet").code == 0
    assert [r["id"] for r in cli(root, "runs", "--json", "--status", "succeeded").json()] == [1]
    assert cli(root, "runs", "--json", "--status", "failed").json() == []
    assert cli(root, "runs", "--json", "--pipeline", "other").json() == []
    table = cli(root, "runs").out.splitlines()
    assert table[0].split() == ["ID", "PIPELINE", "STATUS", "CREATED", "DURATION", "MESSAGE"]
    assert table[1].split()[:3] == ["1", "train", "succeeded"]


def test_show_text_has_steps_and_dag(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    result = cli(root, "show", "1")
    assert result.code == 0
    assert result.out.startswith("run 1  train  succeeded  (project my-project)")
    assert "params: greeting='hello'" in result.out
    assert "DAG:\n  prepare\n  report  <- prepare\n" in result.out


def test_logs_prints_what_the_step_printed(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet", "-p", "greeting=bonjour").code == 0
    result = cli(root, "logs", "1", "report")
    assert result.code == 0
    assert result.out == "bonjour, world\n"
    prepare = cli(root, "logs", "1", "prepare", "--attempt", "1")
    assert prepare.out.startswith("wrote ")
    assert prepare.out.rstrip().endswith("message.txt")


def test_logs_of_an_unknown_step_or_attempt(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    result = cli(root, "logs", "1", "nope")
    assert result.code == 3
    assert "run 1 has no step 'nope'" in result.err
    assert "steps: prepare, report" in result.err
    assert cli(root, "logs", "1", "report", "--attempt", "7").code == 3


def test_logs_of_a_cached_step_explain_why_there_is_none(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    assert cli(root, "run", "train", "--quiet").code == 0
    result = cli(root, "logs", "2", "report")
    assert result.code == 3
    assert "has no attempts" in result.err
    assert "cache" in result.err


def test_failing_step_exits_1_and_keeps_its_log(tmp_path: Path, cli: Callable):
    root = write_project(
        tmp_path / "proj",
        """\
        pipelines:
          train:
            steps:
              boom:
                run: python -c "import sys; print('about to fail'); sys.exit(3)"
        """,
    )
    result = cli(root, "run", "train")
    assert result.code == 1
    assert "run 1 failed" in result.out
    assert "modelyard logs 1 STEP" in result.out
    detail = cli(root, "show", "1", "--json").json()
    assert detail["status"] == "failed"
    [step] = detail["steps"]
    assert step["status"] == "failed"
    assert step["attempts"][0]["exit_code"] == 3
    assert cli(root, "logs", "1", "boom").out == "about to fail\n"


def test_show_of_an_unknown_run(tmp_path: Path, cli_process: Callable):
    root = write_project(tmp_path / "proj", "pipelines:\n  t: {steps: {a: {run: echo}}}\n")
    result = cli_process(root, "show", "42")
    assert result.code == 3
    assert "Traceback" not in result.err
    assert "run 42 does not exist" in result.err
    assert "modelyard runs" in result.err


def test_cancel_of_a_finished_run(initialized: Path, cli: Callable, cli_process: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    result = cli_process(root, "cancel", "1")
    assert result.code == 4
    assert "Traceback" not in result.err
    assert "run 1 has already finished (succeeded)" in result.err
    assert cli(root, "show", "1", "--json").json()["status"] == "succeeded"


def test_cancel_of_an_unknown_run(initialized: Path, cli: Callable):
    result = cli(initialized, "cancel", "9")
    assert result.code == 3
    assert "run 9 does not exist" in result.err


def test_resume_of_a_succeeded_run(initialized: Path, cli: Callable):
    assert cli(initialized, "run", "train", "--quiet").code == 0
    result = cli(initialized, "resume", "1")
    assert result.code == 4
    assert "nothing to resume" in result.err


def test_commands_on_runs_work_while_the_file_is_broken(initialized: Path, cli: Callable):
    root = initialized
    assert cli(root, "run", "train", "--quiet").code == 0
    (root / "modelyard.yaml").write_text("pipelines: [\n")
    assert cli(root, "show", "1", "--json").json()["status"] == "succeeded"
    assert [r["id"] for r in cli(root, "runs", "--json").json()] == [1]


def test_version(cli: Callable, cli_process: Callable, tmp_path: Path):
    expected = f"modelyard {version('modelyard')}\n"
    result = cli(None, "--version")
    assert result.code == 0
    assert result.out == expected
    assert cli_process(tmp_path, "--version").out == expected


def test_no_command_prints_help(cli: Callable):
    result = cli(None)
    assert result.code == 2
    assert "usage: modelyard" in result.out
    assert "approve" in result.out


def test_bad_arguments_exit_2(cli: Callable, tmp_path: Path):
    with pytest.raises(SystemExit) as info:
        cli(tmp_path, "show", "not-a-number")
    assert info.value.code == 2
