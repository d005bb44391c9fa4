"""`modelyard data snapshot|versions|show` and `modelyard watch --once` end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.testing import write_project

PROJECT = """
data_sources:
  raw: {url: raw, include: ["**/*.csv"]}
pipelines:
  train:
    triggers: {data: [raw]}
    steps:
      read:
        run: python read.py ${{ inputs.data }}
        inputs: {data: "${{ data.raw }}"}
"""

FILES = {
    "raw/a.csv": "1,2\n",
    "raw/sub/b.csv": "3,4\n",
    "raw/skip.txt": "x\n",
    "read.py": """
        import pathlib, sys
        print(sorted(p.name for p in pathlib.Path(sys.argv[1]).rglob("*.csv")))
    """,
}

VERSION_KEYS = {"source", "digest", "url", "file_count", "total_bytes", "created_at", "run_id"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", PROJECT, FILES)


def test_snapshot_versions_and_show(root: Path, cli: Callable):
    first = cli(root, "data", "snapshot", "raw", "--json")
    assert first.code == 0, first.err
    taken = first.json()
    assert set(taken) == VERSION_KEYS | {"new"}
    assert taken["new"] is True
    assert (taken["file_count"], taken["total_bytes"], taken["run_id"]) == (2, 8, None)
    again = cli(root, "data", "snapshot", "raw")
    assert again.code == 0
    assert again.out.startswith(f"raw: unchanged {taken['digest']}")
    assert "2 files, 8 bytes" in again.out

    listed = cli(root, "data", "versions", "--json")
    assert [v["digest"] for v in listed.json()] == [taken["digest"]]
    assert set(listed.json()[0]) == VERSION_KEYS
    assert cli(root, "data", "versions", "other", "--json").json() == []
    table = cli(root, "data", "versions")
    assert "raw" in table.out and taken["digest"][:19] in table.out

    prefix = taken["digest"].removeprefix("sha256:")[:10]
    shown = cli(root, "data", "show", prefix, "--json").json()
    assert [(f["path"], f["size"]) for f in shown["files"]] == [("a.csv", 4), ("sub/b.csv", 4)]
    assert shown["digest"] == taken["digest"]
    text = cli(root, "data", "show", taken["digest"])
    assert "sub/b.csv" in text.out and "skip.txt" not in text.out

    (root / "raw" / "c.csv").write_text("5,6\n")
    newer = cli(root, "data", "snapshot", "raw", "--json").json()
    assert newer["new"] and newer["digest"] != taken["digest"]
    assert [v["digest"] for v in cli(root, "data", "versions", "--json").json()] == [
        newer["digest"],
        taken["digest"],
    ]


def test_data_command_errors(root: Path, cli: Callable):
    unknown = cli(root, "data", "snapshot", "nope")
    assert unknown.code == 2
    assert (
        "no data source named 'nope'" in unknown.err and "the data sources are: raw" in unknown.err
    )
    missing = cli(root, "data", "show", "abcdef12")
    assert missing.code == 3 and "no data version abcdef12" in missing.err
    short = cli(root, "data", "show", "ab")
    assert short.code == 2 and "too short" in short.err
    (root / "raw" / "a.csv").unlink()
    (root / "raw" / "sub" / "b.csv").unlink()
    (root / "raw" / "sub").rmdir()
    (root / "raw" / "skip.txt").unlink()
    (root / "raw").rmdir()
    gone = cli(root, "data", "snapshot", "raw")
    assert gone.code == 5 and "does not exist" in gone.err and "Traceback" not in gone.err


def test_a_run_records_its_data_version(root: Path, cli: Callable):
    run = cli(root, "run", "train", "--json")
    assert run.code == 0, run.err
    detail = run.json()
    versions = cli(root, "data", "versions", "--json").json()
    assert detail["data"] == {"raw": versions[0]["digest"]}
    assert versions[0]["run_id"] == detail["id"]
    shown = cli(root, "show", str(detail["id"]))
    assert f"data: raw@{versions[0]['digest'][:19]}" in shown.out


def runs(root: Path, cli: Callable) -> list[dict]:
    return cli(root, "runs", "--json").json()


def test_watch_once_starts_one_run_per_new_version(root: Path, cli: Callable):
    first = cli(root, "watch", "--once")
    assert first.code == 0, first.err
    started = runs(root, cli)
    assert len(started) == 1
    digest = cli(root, "data", "versions", "--json").json()[0]["digest"]
    run = started[0]
    assert run["trigger"] == f"data:raw@{digest.removeprefix('sha256:')[:12]}"
    assert run["status"] == "succeeded" and run["data"] == {"raw": digest}
    assert (
        "raw: new data version" in first.out and f"run {run['id']} (train) succeeded" in first.out
    )

    second = cli(root, "watch", "--once")
    assert second.code == 0 and "raw: unchanged" in second.out
    assert len(runs(root, cli)) == 1

    (root / "raw" / "new.csv").write_text("7,8\n")
    third = cli(root, "watch", "--once")
    assert third.code == 0, third.err
    after = runs(root, cli)
    assert len(after) == 2
    assert after[0]["data"]["raw"] != digest and after[0]["trigger"].startswith("data:raw@")


def test_watch_keeps_going_after_a_failing_run(tmp_path: Path, cli: Callable):
    root = write_project(
        tmp_path / "proj",
        """
        data_sources:
          raw: {url: raw}
          gone: {url: missing-folder}
        pipelines:
          broken:
            triggers: {data: [raw, gone]}
            steps:
              fail: {run: python -c "raise SystemExit(3)"}
          fine:
            triggers: {data: [raw]}
            steps:
              ok: {run: python -c "print('ok')"}
        """,
        {"raw/a.csv": "1\n"},
    )
    result = cli(root, "watch", "--once")
    statuses = {r["pipeline"]: r["status"] for r in runs(root, cli)}
    assert statuses == {"broken": "failed", "fine": "succeeded"}
    assert "error: data source 'gone'" in result.out and "does not exist" in result.out
    assert "(broken) failed" in result.out
    assert result.code == 1  # a source could not be read


def test_watch_with_nothing_to_watch_says_so(tmp_path: Path, cli: Callable):
    root = write_project(tmp_path / "p", "pipelines:\n  p:\n    steps:\n      a: {run: echo}\n")
    result = cli(root, "watch", "--once")
    assert result.code == 0 and "nothing to watch" in result.out


def test_aws_manifest_needs_a_remote_source(root: Path, cli: Callable, tmp_path: Path):
    listing = tmp_path / "aws.json"
    listing.write_text(json.dumps({"data": [{"bucketName": "b", "objectKey": "raw/a.csv"}]}))
    result = cli(root, "data", "snapshot", "raw", "--from-aws-manifest", str(listing))
    assert result.code == 2 and "is a local folder" in result.err
    assert "needs a remote source such as s3://" in result.err
    listing.write_text("{")
    broken = cli(root, "data", "snapshot", "raw", "--from-aws-manifest", str(listing))
    assert broken.code == 2 and f"{listing}: the AWS manifest is not valid JSON" in broken.err
