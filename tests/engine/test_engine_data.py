"""Steps reading a data version (`${{ data.SOURCE }}`): the files of the snapshot taken when the
run was created, checked against the manifest; the manifest's digest is the input's digest for
the cache, so a new data version re-runs the step and an unchanged one hits the cache."""

from __future__ import annotations

import json

import pytest
from engine_harness import EngineHarness

from modelyard.engine import service
from modelyard.errors import ArtifactError
from modelyard.store import dataversions
from modelyard.store.artifacts import ArtifactRef

PROJECT = """
data_sources:
  raw: {url: raw, include: ["**/*.csv"]}
pipelines:
  p:
    steps:
      read:
        run: @PY@ read.py ${{ inputs.data }} ${{ outputs.listing }}
        inputs: {data: "${{ data.raw }}"}
        outputs: [listing]
      use:
        run: @PY@ use.py ${{ inputs.listing }}
        inputs: {listing: "${{ steps.read.outputs.listing }}"}
"""

FILES = {
    "raw/a.csv": "1,2\n",
    "raw/sub/b.csv": "3,4\n",
    "raw/notes.txt": "not data\n",
    "read.py": """
        import json, os, pathlib, sys
        data, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
        files = {p.relative_to(data).as_posix(): p.read_text()
                 for p in sorted(data.rglob("*")) if p.is_file()}
        manifest = json.loads(pathlib.Path(os.environ["MODELYARD_MANIFEST_DATA"]).read_text())
        (out / "seen.json").write_text(json.dumps({"files": files, "manifest": manifest}))
    """,
    "use.py": """
        import pathlib, sys
        print(pathlib.Path(sys.argv[1], "seen.json").read_text())
    """,
}


def seen(engine: EngineHarness, run_id: int) -> dict[str, object]:
    ref = ArtifactRef.from_json(engine.steps(run_id)["read"].outputs["listing"])  # type: ignore[index]
    return json.loads(engine.runtime.store.read_file(ref, "seen.json"))  # type: ignore[no-any-return]


def test_a_step_reads_the_files_of_the_data_version(engine: EngineHarness):
    engine.write(PROJECT, FILES)
    run = engine.run("p")
    assert run.status == "succeeded", run.message
    view = seen(engine, run.id)
    # exactly the selected files, at their relative paths; the manifest beside the folder
    assert view["files"] == {"a.csv": "1,2\n", "sub/b.csv": "3,4\n"}
    manifest = view["manifest"]
    assert [f["path"] for f in manifest["files"]] == ["a.csv", "sub/b.csv"]  # type: ignore[index]
    digest = run.data_versions["raw"]  # type: ignore[index]
    with engine.runtime.db.begin() as conn:
        version = dataversions.get_version(conn, engine.root.name, "raw", digest)
    assert version is not None and version.run_id == run.id  # the run that first used it
    assert (version.file_count, version.total_bytes) == (2, 8)


def test_an_unchanged_source_hits_the_cache_and_a_new_file_reruns(engine: EngineHarness):
    engine.write(PROJECT, FILES)
    first = engine.run("p")
    second = engine.run("p")
    assert second.data_versions == first.data_versions
    assert all(s.cached for s in engine.steps(second.id).values())
    (engine.root / "raw" / "notes.txt").write_text("changed, but excluded\n")
    assert engine.run("p").data_versions == first.data_versions
    (engine.root / "raw" / "c.csv").write_text("5,6\n")
    third = engine.run("p")
    assert third.status == "succeeded", third.message
    assert third.data_versions != first.data_versions
    steps = engine.steps(third.id)
    assert not steps["read"].cached and len(engine.attempts(third.id, "read")) == 1
    assert seen(engine, third.id)["files"] == {
        "a.csv": "1,2\n",
        "c.csv": "5,6\n",
        "sub/b.csv": "3,4\n",
    }


def test_a_file_changed_after_the_snapshot_fails_the_step_naming_it(engine: EngineHarness):
    engine.write(PROJECT, FILES)
    run_id = engine.create("p")  # the snapshot is taken here
    (engine.root / "raw" / "sub" / "b.csv").write_text("3,X\n")
    run = service.drive_run(engine.runtime, run_id)
    assert run.status == "failed"
    message = engine.steps(run_id)["read"].message or ""
    assert "file 'sub/b.csv' changed since data version sha256:" in message
    assert str(engine.root / "raw" / "sub" / "b.csv") in message
    assert engine.total_attempts() == 0  # nothing ran on the wrong data


def test_a_run_without_data_records_none(engine: EngineHarness):
    engine.write(
        """
        pipelines:
          p:
            steps:
              a: {run: "@PY@ -c pass"}
        """
    )
    run = engine.run("p")
    assert run.status == "succeeded" and run.data_versions is None


def test_a_missing_source_folder_records_no_run(engine: EngineHarness):
    engine.write(PROJECT, {k: v for k, v in FILES.items() if not k.startswith("raw/")})
    with pytest.raises(ArtifactError, match=r"data source 'raw': folder .* does not exist"):
        engine.create("p")
    assert service.list_runs(engine.runtime) == []
