"""A small but real abalone model for tests: scenario S1's preprocessor and booster, made by the
example's own step scripts on a slice of its data, and packaged like the register step does.

Needs the `examples` extra (pandas, scikit-learn, XGBoost) and the repository's `examples/abalone`
folder (tests only).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from modelyard.registry.packaging import PackageInfo

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "abalone"
DATA = EXAMPLE / "data" / "abalone.data"
COLUMNS = [
    "sex",
    "length",
    "diameter",
    "height",
    "whole_weight",
    "shucked_weight",
    "viscera_weight",
    "shell_weight",
]


@dataclass(frozen=True)
class Abalone:
    preprocessor: Path
    booster: Path
    raw_rows: list[list[str]]  # the 8 feature fields of CSV lines, as strings
    frame: pd.DataFrame  # the same rows with typed columns

    def expected(self, frame: pd.DataFrame | None = None) -> np.ndarray:
        """Predictions made by hand: the preprocessor's transform, then the booster."""
        import joblib  # type: ignore[import-untyped]
        import numpy as np
        import xgboost

        features = joblib.load(self.preprocessor).transform(self.frame if frame is None else frame)
        booster = xgboost.Booster(model_file=str(self.booster))
        return np.asarray(booster.predict(xgboost.DMatrix(np.asarray(features, dtype=float))))

    def package(self, dest: Path, **extra: Any) -> PackageInfo:
        """The inference pipeline packaged into `dest`, as the register step packages it."""
        from modelyard.registry.packaging import package_inference_pipeline

        return package_inference_pipeline(
            dest,
            preprocessor=self.preprocessor,
            model=self.booster,
            input_example=self.frame.head(3),
            column_names=COLUMNS,
            metadata={"model": "abalone", "version": 1},
            **extra,
        )


def run_step(script: str, *args: str | Path) -> None:
    """Run one of the example's step scripts, as a pipeline would: files in, files out."""
    command = [sys.executable, str(EXAMPLE / "steps" / script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed: {done.stderr[-2000:]}")


def read_rows(first: int, last: int) -> pd.DataFrame:
    """Rows `first` to `last` of the shipped data: the 8 raw columns, typed (sex as objects)."""
    import pandas as pd

    lines = DATA.read_text().splitlines()[first:last]
    frame = pd.DataFrame([fields[:8] for fields in csv.reader(lines)], columns=COLUMNS)
    frame[COLUMNS[1:]] = frame[COLUMNS[1:]].astype(float)
    frame["sex"] = frame["sex"].astype(object)
    return frame


def make_abalone(root: Path, *, rows: int = 300, rounds: int = 5) -> Abalone:
    """Preprocess and train on the first `rows` rows of the shipped data, in `root`."""
    lines = DATA.read_text().splitlines()[:rows]
    data = root / "slice.data"
    data.write_text("\n".join(lines) + "\n")
    run_step(
        "preprocess.py",
        "--input", data, "--train", root / "train", "--validation", root / "validation",
        "--test", root / "test", "--preprocessor", root / "pre",
    )  # fmt: skip
    run_step(
        "train.py",
        "--train", root / "train", "--validation", root / "validation", "--model", root / "model",
        "--num-round", str(rounds),
    )  # fmt: skip
    return Abalone(
        preprocessor=root / "pre" / "preprocessor.joblib",
        booster=root / "model" / "xgboost-model.json",
        raw_rows=[fields[:8] for fields in csv.reader(lines[:40])],
        frame=read_rows(0, 40),
    )
