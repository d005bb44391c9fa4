"""Step caching: a hit skips the step, anything that can change an output is a miss, and a
missing or corrupt artifact in the store is a miss too, never a wrong result."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import EngineHarness

from modelyard.store.artifacts import ArtifactRef, blob_key
from modelyard.store.runs import RunRow

CHAIN = """
pipelines:
  chain:
    parameters:
      k: 1
    steps:
      first:
        run: @PY@ first.py
        inputs:
          data: data.txt
        outputs: [out]
      second:
        run: @PY@ second.py
        inputs:
          upstream: ${{ steps.first.outputs.out }}
        params:
          k: ${{ params.k }}
        outputs: [out]
      third:
        run: @PY@ third.py
        inputs:
          upstream: ${{ steps.second.outputs.out }}
        outputs: [out]
        values: [length]
"""

FILES = {
    "data.txt": "some data\n",
    "first.py": """
        import os
        text = open(os.environ["MODELYARD_INPUT_DATA"]).read()
        open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "first.txt"), "w").write(text.upper())
    """,
    "second.py": """
        import os
        src = os.path.join(os.environ["MODELYARD_INPUT_UPSTREAM"], "first.txt")
        text = open(src).read() + "k=" + os.environ["MODELYARD_PARAM_K"]
        open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "second.txt"), "w").write(text)
    """,
    "third.py": """
        import json, os
        text = open(os.path.join(os.environ["MODELYARD_INPUT_UPSTREAM"], "second.txt")).read()
        open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "third.txt"), "w").write(text[::-1])
        with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
            json.dump({"length": len(text)}, f)
    """,
}


def executed(engine: EngineHarness, run: RunRow) -> set[str]:
    """The steps of `run` that ran a process (each has exactly one attempt) rather than cached."""
    detail = engine.detail(run.id)
    ran = set()
    for name, step in detail.steps.items():
        assert step.status == "succeeded", (name, step.message)
        attempts = detail.attempts[name]
        if step.cached:
            assert attempts == [], name
        else:
            assert [a.status for a in attempts] == ["succeeded"], name
            ran.add(name)
    return ran


def read(engine: EngineHarness, run: RunRow, step: str, filename: str) -> str:
    ref = ArtifactRef.from_json(engine.steps(run.id)[step].outputs["out"])
    return engine.runtime.store.read_file(ref, filename).decode()


@pytest.fixture
def chain(engine: EngineHarness) -> tuple[EngineHarness, RunRow]:
    engine.write(CHAIN, FILES)
    first = engine.run("chain")
    assert first.status == "succeeded", first.message
    assert executed(engine, first) == {"first", "second", "third"}
    return engine, first


def test_identical_run_is_all_cached(chain: tuple[EngineHarness, RunRow]) -> None:
    engine, first = chain
    attempts_before = engine.total_attempts()

    second = engine.run("chain")

    assert second.status == "succeeded", second.message
    assert executed(engine, second) == set()
    assert engine.total_attempts() == attempts_before
    before, after = engine.steps(first.id), engine.steps(second.id)
    for name in ("first", "second", "third"):
        assert after[name].cached
        assert after[name].outputs == before[name].outputs
        assert after[name].cache_key == before[name].cache_key
    assert after["third"].values == before["third"].values == {"length": len("SOME DATA\nk=1")}
    assert any(
        kind == "step-succeeded" and "cache hit" in msg for kind, _, msg in engine.events(second.id)
    )


def test_changed_parameter_reruns_its_step_and_those_after(
    chain: tuple[EngineHarness, RunRow],
) -> None:
    engine, _ = chain

    changed = engine.run("chain", {"k": "2"})

    assert executed(engine, changed) == {"second", "third"}
    assert read(engine, changed, "third", "third.txt") == "SOME DATA\nk=2"[::-1]
    assert engine.steps(changed.id)["third"].values == {"length": len("SOME DATA\nk=2")}
    # and going back to k=1 is a hit again for every step
    assert executed(engine, engine.run("chain", {"k": "1"})) == set()


def test_edited_script_reruns_its_step(chain: tuple[EngineHarness, RunRow]) -> None:
    engine, _ = chain
    engine.edit(
        "second.py",
        """
        import os
        src = os.path.join(os.environ["MODELYARD_INPUT_UPSTREAM"], "first.txt")
        text = open(src).read() + "K=" + os.environ["MODELYARD_PARAM_K"]
        open(os.path.join(os.environ["MODELYARD_OUTPUT_OUT"], "second.txt"), "w").write(text)
        """,
    )

    edited = engine.run("chain")

    assert executed(engine, edited) == {"second", "third"}
    assert read(engine, edited, "second", "second.txt") == "SOME DATA\nK=1"


def test_edit_that_keeps_the_output_reruns_only_that_step(
    chain: tuple[EngineHarness, RunRow],
) -> None:
    engine, _ = chain
    engine.edit("first.py", FILES["first.py"] + "        # a comment changes the code digest\n")

    edited = engine.run("chain")

    # same output digest, so what reads it is still a hit
    assert executed(engine, edited) == {"first"}


def test_changed_input_file_reruns_the_step(chain: tuple[EngineHarness, RunRow]) -> None:
    engine, _ = chain
    engine.edit("data.txt", "other data\n")

    changed = engine.run("chain")

    assert executed(engine, changed) == {"first", "second", "third"}
    assert read(engine, changed, "third", "third.txt") == "OTHER DATA\nk=1"[::-1]


def test_no_cache_runs_every_step(chain: tuple[EngineHarness, RunRow]) -> None:
    engine, first = chain

    forced = engine.run("chain", no_cache=True)

    assert executed(engine, forced) == {"first", "second", "third"}
    # deterministic steps give the same outputs again
    before, after = engine.steps(first.id), engine.steps(forced.id)
    assert {n: s.outputs for n, s in after.items()} == {n: s.outputs for n, s in before.items()}


def test_no_cache_steps_reruns_only_those(chain: tuple[EngineHarness, RunRow]) -> None:
    engine, _ = chain

    forced = engine.run("chain", no_cache_steps=("second",))

    # `second` gives the same output again, so `third` is still a hit
    assert executed(engine, forced) == {"second"}


def blob_paths(engine: EngineHarness, ref: ArtifactRef) -> tuple[Path, Path]:
    """The tree manifest's blob and the blob of the folder's only file."""
    store = engine.runtime.store
    (entry,) = store.tree(ref)
    base = engine.root / ".modelyard" / "artifacts"
    return base / blob_key(ref.digest), base / blob_key(entry.digest)


@pytest.mark.parametrize("damage", ["delete-file", "delete-manifest", "corrupt-file"])
def test_damaged_cached_output_is_a_miss(chain: tuple[EngineHarness, RunRow], damage: str) -> None:
    engine, first = chain
    ref = ArtifactRef.from_json(engine.steps(first.id)["second"].outputs["out"])
    manifest, content = blob_paths(engine, ref)
    assert manifest.is_file() and content.is_file()
    if damage == "delete-file":
        content.unlink()
    elif damage == "delete-manifest":
        manifest.unlink()
    else:
        data = content.read_bytes()
        content.chmod(0o644)
        content.write_bytes(data.replace(b"k=1", b"k=9"))  # same size, other content
    assert not engine.runtime.store.verify(ref)

    again = engine.run("chain")

    # `second` ran again and stored its output anew; `first` and `third` were still hits
    assert executed(engine, again) == {"second"}
    assert engine.steps(again.id)["second"].outputs == engine.steps(first.id)["second"].outputs
    assert engine.runtime.store.verify(ref)
    assert read(engine, again, "second", "second.txt") == "SOME DATA\nk=1"
    assert ("cache-invalid", "second") in {(k, s) for k, s, _ in engine.events(again.id)}
    # the repaired store serves later runs: all hits, and a forced downstream step can read it
    assert executed(engine, engine.run("chain")) == set()
    forced = engine.run("chain", no_cache_steps=("third",))
    assert executed(engine, forced) == {"third"}
