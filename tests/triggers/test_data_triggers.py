"""The data trigger service on each metadata DB: polling, the runs a new version starts, and
recording a version once when two snapshots race."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.engine import service
from modelyard.engine.runtime import Runtime
from modelyard.errors import ConfigError, NotFound
from modelyard.project.loader import load_project
from modelyard.store import dataversions
from modelyard.store.manifests import take_snapshot
from modelyard.testing import open_runtime, write_project
from modelyard.triggers import data

LONG = "a_data_source_with_a_name_much_longer_than_forty_characters"

PROJECT = f"""
data_sources:
  {LONG}: {{url: raw}}
  other: {{url: other}}
pipelines:
  train:
    triggers: {{data: [{LONG}]}}
    steps:
      read:
        run: python -c "import sys; print(sys.argv[1])" ${{{{ inputs.d }}}}
        inputs: {{d: "${{{{ data.{LONG} }}}}"}}
"""


@pytest.fixture
def setup(tmp_path: Path, database_url: str) -> Iterator[tuple[Path, Runtime]]:
    root = write_project(tmp_path / "proj", PROJECT, {"raw/a.csv": "1\n", "other/b.csv": "2\n"})
    runtime = open_runtime(root, database_url)
    yield root, runtime
    runtime.close()


def test_poll_runs_each_new_version_once(setup: tuple[Path, Runtime]):
    root, runtime = setup
    lines: list[str] = []
    first = data.poll(runtime, load_project(root), lines.append)
    assert first.errors == [] and len(first.runs) == 1
    run = service.run_detail(runtime, first.runs[0].run_id).run
    digest = first.snapshots[LONG].version.digest
    # the trigger has room for a long source name (0002 widened the column)
    assert run.trigger == f"data:{LONG}@{digest[7:19]}"
    assert run.status == "succeeded" and run.data_versions == {LONG: digest}
    assert data.poll(runtime, load_project(root), lines.append).runs == []
    (root / "raw" / "b.csv").write_text("3\n")
    third = data.poll(runtime, load_project(root), lines.append)
    assert len(third.runs) == 1 and third.snapshots[LONG].version.digest != digest
    assert [v.digest for v in data.list_versions(runtime, "proj", LONG)][1] == digest
    # "other" triggers nothing, so it is never polled
    assert "other" not in third.snapshots


def test_a_version_recorded_without_a_run_is_still_trained_on(setup: tuple[Path, Runtime]):
    """A version known from `data snapshot` (or from a watcher that stopped before starting its
    runs) has not been trained on yet: the next poll runs the pipeline on it, once."""
    root, runtime = setup
    project = load_project(root)
    known = data.snapshot(runtime, project, LONG)
    assert known.new
    started = data.poll(runtime, project)
    assert [r.pipeline for r in started.runs] == ["train"]
    assert started.snapshots[LONG].version.digest == known.version.digest
    assert data.poll(runtime, project).runs == []


def test_a_given_version_must_be_recorded_and_belong_to_the_pipeline(
    setup: tuple[Path, Runtime],
):
    root, runtime = setup
    project = load_project(root)
    with pytest.raises(NotFound, match="has no recorded version"):
        service.create_run(
            runtime,
            project,
            "train",
            {},
            service.RunOptions(data_versions={LONG: "sha256:" + "0" * 64}),
        )
    other = data.snapshot(runtime, project, "other")
    with pytest.raises(ConfigError, match="neither reads nor is triggered by data source"):
        service.create_run(
            runtime,
            project,
            "train",
            {},
            service.RunOptions(data_versions={"other": other.version.digest}),
        )


def test_racing_snapshots_record_a_version_once(
    setup: tuple[Path, Runtime], monkeypatch: pytest.MonkeyPatch
):
    root, runtime = setup
    project = load_project(root)
    source = project.data_source("other")
    first = take_snapshot(runtime.db, runtime.store, project.name, root, source)
    # the next snapshot does not see that version at first, as if another process had just
    # inserted it: its insert hits the unique constraint, and it looks again
    real = dataversions.get_version
    calls: list[int] = []

    def blind_once(*args: object) -> object:
        calls.append(1)
        return None if len(calls) == 1 else real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dataversions, "get_version", blind_once)
    again = take_snapshot(runtime.db, runtime.store, project.name, root, source)
    assert len(calls) == 2
    assert not again.new and again.version.id == first.version.id
    assert len(data.list_versions(runtime, project.name, "other")) == 1
