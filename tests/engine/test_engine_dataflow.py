"""Files in, files out: what a step is given and what the engine records from it.

`run` steps with modelyard's own contract and with the SageMaker training contract, and `python`
steps in a separate process and inline; every run goes through the real driver, real processes
and the real metadata DB (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_harness import EngineHarness

from modelyard.store.artifacts import ArtifactRef
from modelyard.testing import open_runtime, run_pipeline, write_project

LINEAR = """
name: linear
pipelines:
  chain:
    parameters:
      greeting: hello
      repeat: 3
      scale: 0.5
    steps:
      produce:
        run: @PY@ produce.py --greeting ${{ params.greeting }} --repeat ${{ params.repeat }}
        inputs:
          raw: data/raw.txt
        outputs: [words]
        values: [lines]
      transform:
        run: @PY@ transform.py ${{ inputs.words }} ${{ outputs.scaled }}
        inputs:
          words: ${{ steps.produce.outputs.words }}
        params:
          scale: ${{ params.scale }}
          label: run-${{ params.greeting }}
        outputs: [scaled]
        values: [total, label]
      summarize:
        run: @PY@ summarize.py
        inputs:
          scaled: ${{ steps.transform.outputs.scaled }}
          words: ${{ steps.produce.outputs.words }}
        outputs: [report]
"""

LINEAR_FILES = {
    "data/raw.txt": "alpha\nbeta\n",
    "produce.py": """
        import argparse, json, os
        from pathlib import Path

        parser = argparse.ArgumentParser()
        parser.add_argument("--greeting")
        parser.add_argument("--repeat", type=int)
        args = parser.parse_args()
        raw = Path(os.environ["MODELYARD_INPUT_RAW"])  # a file input: the file itself
        assert raw.is_file() and raw.name == "raw.txt", raw
        out = Path(os.environ["MODELYARD_OUTPUT_WORDS"])
        lines = [f"{args.greeting} {w}" for w in raw.read_text().split()] * args.repeat
        (out / "sub").mkdir()
        (out / "sub" / "words.txt").write_text("\\n".join(lines))
        with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
            json.dump({"lines": len(lines)}, f)
    """,
    "transform.py": """
        import json, os, sys
        from pathlib import Path

        words_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
        assert str(words_dir) == os.environ["MODELYARD_INPUT_WORDS"]
        assert str(out_dir) == os.environ["MODELYARD_OUTPUT_SCALED"]
        scale = float(os.environ["MODELYARD_PARAM_SCALE"])
        label = os.environ["MODELYARD_PARAM_LABEL"]
        lines = (words_dir / "sub" / "words.txt").read_text().splitlines()
        (out_dir / "scaled.json").write_text(json.dumps({"n": len(lines) * scale}))
        params = json.loads(os.environ["MODELYARD_PARAMS"])
        with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
            json.dump({"total": len(lines) * scale, "label": label + "/" + params["label"]}, f)
    """,
    "summarize.py": """
        import json, os
        from pathlib import Path

        scaled_dir = Path(os.environ["MODELYARD_INPUT_SCALED"])
        scaled = json.loads((scaled_dir / "scaled.json").read_text())
        words = Path(os.environ["MODELYARD_INPUT_WORDS"]) / "sub" / "words.txt"
        report = Path(os.environ["MODELYARD_OUTPUT_REPORT"]) / "report.txt"
        report.write_text(f"{scaled['n']} from {len(words.read_text().splitlines())} lines")
    """,
}


def test_linear_pipeline_passes_folders_params_and_values(engine: EngineHarness) -> None:
    engine.write(LINEAR, LINEAR_FILES)

    run = engine.run("chain", {"greeting": "hi", "repeat": "2"})

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    assert {s.status for s in steps.values()} == {"succeeded"}
    assert steps["produce"].values == {"lines": 4}
    assert steps["transform"].values == {"total": 2.0, "label": "run-hi/run-hi"}
    store = engine.runtime.store
    words = ArtifactRef.from_json(steps["produce"].outputs["words"])
    assert store.read_file(words, "sub/words.txt").decode().splitlines() == [
        "hi alpha",
        "hi beta",
        "hi alpha",
        "hi beta",
    ]
    scaled = ArtifactRef.from_json(steps["transform"].outputs["scaled"])
    assert json.loads(store.read_file(scaled, "scaled.json")) == {"n": 2.0}
    report = ArtifactRef.from_json(steps["summarize"].outputs["report"])
    assert store.read_file(report, "report.txt") == b"2.0 from 4 lines"


def test_undeclared_value_fails_the_step(engine: EngineHarness) -> None:
    engine.write(
        """
        pipelines:
          p:
            steps:
              chatty:
                run: @PY@ chatty.py
                values: [score]
        """,
        {
            "chatty.py": """
                import json, os
                with open(os.environ["MODELYARD_VALUES_FILE"], "w") as f:
                    json.dump({"score": 1, "surprise": 2}, f)
            """
        },
    )
    run = engine.run("p")
    assert run.status == "failed"
    assert "value 'surprise'" in engine.steps(run.id)["chatty"].message


SAGEMAKER = """
pipelines:
  train:
    parameters:
      epochs: 4
    steps:
      fit:
        run: @PY@ train_sm.py
        contract: sagemaker
        inputs:
          train: data/train.csv
        params:
          epochs: ${{ params.epochs }}
          learning-rate: 0.1
        outputs: [model, output_data]
"""

# An unmodified SageMaker training script: channels, model dir, output dir, hyperparameters.
SAGEMAKER_SCRIPT = """
    import argparse, json, os

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--learning-rate", type=float, required=True)
    parser.add_argument("--train", default=os.environ["SM_CHANNEL_TRAIN"])
    parser.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--output-data-dir", default=os.environ["SM_OUTPUT_DATA_DIR"])
    args = parser.parse_args()

    hps = json.loads(os.environ["SM_HPS"])
    rows = open(os.path.join(args.train, "train.csv")).read().split()
    model = {
        "epochs": args.epochs,
        "lr": args.learning_rate,
        "rows": len(rows),
        "hps": hps,
        "hosts": json.loads(os.environ["SM_HOSTS"]),
    }
    with open(os.path.join(args.model_dir, "model.json"), "w") as f:
        json.dump(model, f)
    with open(os.path.join(args.output_data_dir, "history.txt"), "w") as f:
        f.write("\\n".join(f"epoch {i}" for i in range(args.epochs)))
"""


def test_sagemaker_script_runs_unchanged(engine: EngineHarness) -> None:
    engine.write(SAGEMAKER, {"train_sm.py": SAGEMAKER_SCRIPT, "data/train.csv": "1,2\n3,4\n5,6\n"})

    run = engine.run("train", {"epochs": "3"})

    assert run.status == "succeeded", run.message
    fit = engine.steps(run.id)["fit"]
    store = engine.runtime.store
    model = json.loads(store.read_file(ArtifactRef.from_json(fit.outputs["model"]), "model.json"))
    assert model == {
        "epochs": 3,
        "lr": 0.1,
        "rows": 3,
        "hps": {"epochs": "3", "learning-rate": "0.1"},
        "hosts": ["algo-1"],
    }
    history = ArtifactRef.from_json(fit.outputs["output_data"])
    assert store.read_file(history, "history.txt").decode().splitlines() == [
        "epoch 0",
        "epoch 1",
        "epoch 2",
    ]


PYTHON_STEPS = """
pipelines:
  fn:
    parameters:
      factor: 3
    steps:
      make:
        python: {module}:make
        executor: {executor}
        params:
          factor: ${{{{ params.factor }}}}
        outputs: [numbers]
        values: [count]
      total:
        python: {module}:total
        executor: {executor}
        inputs:
          numbers: ${{{{ steps.make.outputs.numbers }}}}
        values: [sum, input_kind, attempt]
"""

PYTHON_MODULE = """
    import json
    from pathlib import Path

    def make(numbers, factor):
        assert isinstance(numbers, Path), type(numbers)
        values = [i * factor for i in range(1, 5)]
        (numbers / "numbers.json").write_text(json.dumps(values))
        return {"count": len(values)}

    def total(numbers: Path, context, **extra):
        values = json.loads((numbers / "numbers.json").read_text())
        kind = type(numbers).__name__
        return {"sum": sum(values), "input_kind": kind, "attempt": context.attempt}
"""


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_python_steps_get_paths_and_params_and_return_values(
    engine: EngineHarness, executor: str
) -> None:
    # a module name of this test's own: inline steps import into the test process
    module = f"fnsteps_{executor}_{engine.root.parent.name}"
    engine.write(
        PYTHON_STEPS.format(module=module, executor=executor), {f"{module}.py": PYTHON_MODULE}
    )

    run = engine.run("fn", {"factor": "2"})

    assert run.status == "succeeded", run.message
    steps = engine.steps(run.id)
    assert steps["make"].values == {"count": 4}
    assert steps["total"].values == {"sum": 20, "input_kind": "PosixPath", "attempt": 1}
    numbers = ArtifactRef.from_json(steps["make"].outputs["numbers"])
    assert json.loads(engine.runtime.store.read_file(numbers, "numbers.json")) == [2, 4, 6, 8]


FAILING_FUNCTIONS = """
    def explode(threshold):
        raise ValueError(f"threshold {threshold} is too low")

    def wants_more(threshold, missing_argument):
        return {}

    def wants_less():
        return {}
"""


@pytest.mark.parametrize("executor", ["process", "inline"])
@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("explode", "ValueError: threshold 7 is too low"),
        ("wants_more", "needs argument 'missing_argument'"),
        ("wants_less", "passes 'threshold' but"),
    ],
)
def test_python_step_failures_are_reported_by_name(
    engine: EngineHarness, executor: str, function: str, expected: str
) -> None:
    module = f"failing_{executor}_{function}_{engine.root.parent.name}"
    engine.write(
        f"""
        pipelines:
          p:
            steps:
              broken:
                python: {module}:{function}
                executor: {executor}
                params:
                  threshold: 7
              after:
                run: "@PY@ -c pass"
                after: [broken]
        """,
        {f"{module}.py": FAILING_FUNCTIONS},
    )

    run = engine.run("p")

    assert run.status == "failed"
    steps = engine.steps(run.id)
    assert steps["broken"].status == "failed"
    assert expected in steps["broken"].message
    assert expected in run.message and "'broken'" in run.message
    assert steps["after"].status == "pending"
    assert engine.attempts(run.id, "after") == []
    (attempt,) = engine.attempts(run.id, "broken")
    assert attempt.status == "failed"
    assert expected in attempt.error


SAME_NAME = """
pipelines:
  p:
    steps:
      which:
        python: shared_steps_module:which
        executor: inline
        values: [project]
"""


def test_inline_steps_use_their_own_projects_module(engine: EngineHarness) -> None:
    """Two projects with a module of the same name, driven by one process, in turn."""
    from modelyard.testing.projects import open_runtime, run_pipeline, write_project

    roots = {}
    for name in ("alpha", "beta"):
        roots[name] = write_project(
            engine.root.parent / name,
            SAME_NAME,
            {"shared_steps_module.py": f"def which():\n    return {{'project': '{name}'}}\n"},
        )
    runtimes = {n: open_runtime(root, engine.database_url) for n, root in roots.items()}
    try:
        for name in ("alpha", "beta", "alpha", "beta"):
            run = run_pipeline(runtimes[name], roots[name], "p", no_cache=True)
            assert run.status == "succeeded", run.message
            assert engine.steps(run.id)["which"].values == {"project": name}
    finally:
        for runtime in runtimes.values():
            runtime.close()


def test_edited_inline_module_runs_the_new_code(engine: EngineHarness) -> None:
    module = f"edited_{engine.root.parent.name}"
    engine.write(
        SAME_NAME.replace("shared_steps_module", module),
        {f"{module}.py": "def which():\n    return {'project': 'old'}\n"},
    )
    first = engine.run("p")
    assert engine.steps(first.id)["which"].values == {"project": "old"}

    engine.edit(f"{module}.py", "def which():\n    return {'project': 'new code'}\n")
    second = engine.run("p")

    assert second.status == "succeeded", second.message
    assert not engine.steps(second.id)["which"].cached
    assert engine.steps(second.id)["which"].values == {"project": "new code"}


def test_inline_step_calling_sys_exit_fails_the_step_not_the_driver(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        """
        pipelines:
          p:
            steps:
              quits:
                python: quitter:quit
                executor: inline
        """,
        {"quitter.py": "import sys\n\ndef quit():\n    sys.exit(3)\n"},
    )
    run = run_pipeline(open_runtime(root), root, "p")
    assert run.status == "failed"
    assert "exit(3)" in (run.message or "")
