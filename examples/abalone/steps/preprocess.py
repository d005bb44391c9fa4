"""Preprocess the abalone data: validate, shuffle, split 70/15/15 and fit a feature transformer.

Step contract (files in, files out)::

    python preprocess.py --input PATH --train DIR --validation DIR --test DIR \
        --preprocessor DIR [--test-raw DIR] [--seed 42] [--train-fraction 0.7] \
        [--validation-fraction 0.15]

``--input`` is one header-less CSV file, or a folder whose ``*.csv`` and ``*.data`` files are read
in name order and concatenated. Each row has 9 columns: sex, 7 measurements, rings (the label).
Empty fields are missing values; a missing feature is imputed, a missing label is an error.

Outputs: ``train/train.csv``, ``validation/validation.csv`` and ``test/test.csv`` hold the label
first and then the transformed features, with no header (the XGBoost / SageMaker convention), and
``preprocessor/preprocessor.joblib`` holds the fitted ``ColumnTransformer``. That transformer takes
a pandas DataFrame with the 8 raw feature columns (``FEATURE_COLUMNS``, also stored in its
``feature_names_in_``) and returns the features in the order the model was trained on.
With ``--test-raw``, ``test_raw/test_raw.csv`` holds the same test rows untransformed, with a
header (``COLUMNS``): what the registered inference pipeline takes, so that the approval evidence
can compare the candidate and the champion on them.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from abalone_io import InputError, list_files, read_errors, run_step
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CATEGORICAL_COLUMNS = ["sex"]
NUMERIC_COLUMNS = [
    "length",
    "diameter",
    "height",
    "whole_weight",
    "shucked_weight",
    "viscera_weight",
    "shell_weight",
]
FEATURE_COLUMNS = CATEGORICAL_COLUMNS + NUMERIC_COLUMNS
LABEL_COLUMN = "rings"
COLUMNS = [*FEATURE_COLUMNS, LABEL_COLUMN]
INPUT_SUFFIXES = (".csv", ".data")

TRAIN_FILE = "train.csv"
VALIDATION_FILE = "validation.csv"
TEST_FILE = "test.csv"
TEST_RAW_FILE = "test_raw.csv"
PREPROCESSOR_FILE = "preprocessor.joblib"


def _parse_number(path: Path, lineno: int, column: str, raw: str) -> float:
    if raw == "":
        if column == LABEL_COLUMN:
            raise InputError(f"{path}: line {lineno}: the label column '{column}' is empty")
        return math.nan
    try:
        value = float(raw)
    except ValueError:
        hint = " (the file must not have a header row)" if lineno == 1 else ""
        raise InputError(
            f"{path}: line {lineno}: column '{column}' is not a number: {raw!r}{hint}"
        ) from None
    if not math.isfinite(value):
        raise InputError(f"{path}: line {lineno}: column '{column}' is not finite: {raw!r}")
    return value


def read_csv_file(path: Path) -> pd.DataFrame:
    """Read and validate one header-less abalone CSV file into a DataFrame with ``COLUMNS``."""
    records: list[list[object]] = []
    with read_errors(path), path.open(newline="", encoding="utf-8") as handle:
        for lineno, fields in enumerate(csv.reader(handle), start=1):
            if not any(field.strip() for field in fields):
                continue  # blank line
            if len(fields) != len(COLUMNS):
                raise InputError(
                    f"{path}: line {lineno}: expected {len(COLUMNS)} comma-separated columns "
                    f"({', '.join(COLUMNS)}), found {len(fields)}"
                )
            sex = fields[0].strip() or math.nan
            numbers = [
                _parse_number(path, lineno, column, raw.strip())
                for column, raw in zip(COLUMNS[1:], fields[1:], strict=True)
            ]
            records.append([sex, *numbers])
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    number_columns = [*NUMERIC_COLUMNS, LABEL_COLUMN]
    frame[number_columns] = frame[number_columns].astype(float)
    return frame


def read_input(path: Path) -> pd.DataFrame:
    """Read a file, or every input file of a folder (in name order), into one DataFrame."""
    frames = []
    for file in list_files(path, INPUT_SUFFIXES):
        frame = read_csv_file(file)
        print(f"read {len(frame)} rows from {file}")
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    if data.empty:
        raise InputError(f"{path}: no data rows")
    return data


def build_preprocessor() -> ColumnTransformer:
    """The unfitted feature transformer: scaled numbers, then a one-hot of sex."""
    numeric = Pipeline(
        [
            ("imputer", SimpleImputer(strategy="median")),
            ("scaler", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("imputer", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, NUMERIC_COLUMNS),
            ("categorical", categorical, CATEGORICAL_COLUMNS),
        ],
        sparse_threshold=0.0,
    )


def split_sizes(
    n_rows: int, train_fraction: float, validation_fraction: float
) -> tuple[int, int, int]:
    """Row counts of the train, validation and test splits; the test split takes the rest."""
    n_train = round(n_rows * train_fraction)
    n_validation = round(n_rows * validation_fraction)
    n_test = n_rows - n_train - n_validation
    return n_train, n_validation, n_test


def shuffle_and_split(
    data: pd.DataFrame, seed: int, train_fraction: float, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle the rows with ``seed`` and cut them into train, validation and test."""
    n_train, n_validation, n_test = split_sizes(len(data), train_fraction, validation_fraction)
    if min(n_train, n_validation, n_test) < 1:
        raise InputError(
            f"{len(data)} rows are too few for a {train_fraction}/{validation_fraction}/"
            f"{1 - train_fraction - validation_fraction:.2f} split: every split needs a row"
        )
    order = np.random.default_rng(seed).permutation(len(data))
    shuffled = data.iloc[order].reset_index(drop=True)
    train = shuffled.iloc[:n_train]
    validation = shuffled.iloc[n_train : n_train + n_validation]
    test = shuffled.iloc[n_train + n_validation :]
    return train, validation, test


def to_model_matrix(preprocessor: ColumnTransformer, rows: pd.DataFrame) -> np.ndarray:
    """Label first, then the transformed features (the layout XGBoost's CSV input expects)."""
    features = preprocessor.transform(rows[FEATURE_COLUMNS])
    labels = rows[LABEL_COLUMN].to_numpy(dtype=float).reshape(-1, 1)
    return np.hstack([labels, np.asarray(features, dtype=float)])


def write_matrix(matrix: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, matrix, delimiter=",", fmt="%.10g")


def preprocess(
    input_path: Path,
    train_dir: Path,
    validation_dir: Path,
    test_dir: Path,
    preprocessor_dir: Path,
    seed: int = 42,
    train_fraction: float = 0.7,
    validation_fraction: float = 0.15,
    test_raw_dir: Path | None = None,
) -> dict[str, int]:
    """Run the whole step; returns the row counts of the splits and the number of features."""
    data = read_input(Path(input_path))
    print(f"read {len(data)} rows in total")
    train, validation, test = shuffle_and_split(data, seed, train_fraction, validation_fraction)

    # Fit the transformer on the training rows only: the imputer medians, the scaler's means and
    # standard deviations and the one-hot categories must not see validation or test rows,
    # otherwise information from the held-out data leaks into training and the metrics flatter.
    preprocessor = build_preprocessor()
    preprocessor.fit(train[FEATURE_COLUMNS])

    outputs = [
        (train, Path(train_dir) / TRAIN_FILE),
        (validation, Path(validation_dir) / VALIDATION_FILE),
        (test, Path(test_dir) / TEST_FILE),
    ]
    n_features = 0
    for rows, path in outputs:
        matrix = to_model_matrix(preprocessor, rows)
        n_features = matrix.shape[1] - 1
        write_matrix(matrix, path)
        print(f"wrote {len(rows)} rows x {n_features} features (label first) to {path}")

    if test_raw_dir is not None:
        raw_path = Path(test_raw_dir) / TEST_RAW_FILE
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        test[COLUMNS].to_csv(raw_path, index=False)
        print(f"wrote the {len(test)} raw test rows (with a header) to {raw_path}")

    preprocessor_path = Path(preprocessor_dir) / PREPROCESSOR_FILE
    preprocessor_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(preprocessor, preprocessor_path)
    print(f"saved the fitted preprocessor to {preprocessor_path}")
    return {
        "rows": len(data),
        "train": len(train),
        "validation": len(validation),
        "test": len(test),
        "features": n_features,
    }


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="a CSV file or a folder of them")
    parser.add_argument("--train", required=True, type=Path, help="output folder for train.csv")
    parser.add_argument(
        "--validation", required=True, type=Path, help="output folder for validation.csv"
    )
    parser.add_argument("--test", required=True, type=Path, help="output folder for test.csv")
    parser.add_argument(
        "--preprocessor", required=True, type=Path, help="output folder for preprocessor.joblib"
    )
    parser.add_argument(
        "--test-raw", type=Path, help="output folder for test_raw.csv (raw rows, with a header)"
    )
    parser.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42)")
    parser.add_argument(
        "--train-fraction", "--train_fraction", type=_fraction, default=0.7, dest="train_fraction"
    )
    parser.add_argument(
        "--validation-fraction",
        "--validation_fraction",
        type=_fraction,
        default=0.15,
        dest="validation_fraction",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train_fraction + args.validation_fraction >= 1.0:
        parser.error(
            "--train-fraction + --validation-fraction must be below 1 (test gets the rest)"
        )
    return run_step(
        "preprocess",
        preprocess,
        args.input,
        args.train,
        args.validation,
        args.test,
        args.preprocessor,
        seed=args.seed,
        train_fraction=args.train_fraction,
        validation_fraction=args.validation_fraction,
        test_raw_dir=args.test_raw,
    )


if __name__ == "__main__":
    sys.exit(main())
