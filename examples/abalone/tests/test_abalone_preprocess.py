"""Unit tests of steps/preprocess.py."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

N_FEATURES = 10  # 7 scaled measurements + one-hot of sex (F, I, M)


def run_preprocess(step, input_path: Path, out: Path, **kwargs) -> dict[str, int]:
    return step.preprocess(
        input_path,
        out / "train",
        out / "validation",
        out / "test",
        out / "preprocessor",
        **kwargs,
    )


def read_lines(out: Path) -> dict[str, list[str]]:
    return {
        split: (out / split / f"{split}.csv").read_text(encoding="utf-8").splitlines()
        for split in ("train", "validation", "test")
    }


@pytest.fixture(scope="module")
def full_run(preprocess_step, abalone_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    counts = run_preprocess(preprocess_step, abalone_file, out, seed=42)
    return out, counts


def test_split_sizes_are_70_15_15(full_run, abalone_lines):
    out, counts = full_run
    n = len(abalone_lines)
    assert counts["rows"] == n > 0
    lines = read_lines(out)
    sizes = {split: len(rows) for split, rows in lines.items()}
    assert sizes == {
        "train": counts["train"],
        "validation": counts["validation"],
        "test": counts["test"],
    }
    assert sum(sizes.values()) == n
    assert abs(sizes["train"] - 0.70 * n) <= 1
    assert abs(sizes["validation"] - 0.15 * n) <= 1
    assert abs(sizes["test"] - 0.15 * n) <= 1


def test_no_row_lost_or_duplicated(full_run, preprocess_step, abalone_file, tmp_path):
    out, _ = full_run
    # Transform every input row with the saved preprocessor, format it the way the step does, and
    # compare the multiset of rows with the union of the three splits.
    preprocessor = joblib.load(out / "preprocessor" / "preprocessor.joblib")
    data = preprocess_step.read_input(abalone_file)
    reference = tmp_path / "all.csv"
    preprocess_step.write_matrix(preprocess_step.to_model_matrix(preprocessor, data), reference)
    expected = Counter(reference.read_text(encoding="utf-8").splitlines())
    actual = Counter(line for rows in read_lines(out).values() for line in rows)
    assert actual == expected


def test_label_first_and_no_header(full_run, abalone_lines):
    out, _ = full_run
    lines = read_lines(out)
    for rows in lines.values():
        first = rows[0].split(",")
        assert len(first) == 1 + N_FEATURES
        float(first[0])  # a header would not parse as a number
        matrix = np.array([[float(v) for v in row.split(",")] for row in rows])
        assert matrix.shape[1] == 1 + N_FEATURES
        labels = matrix[:, 0]
        assert np.all(labels == np.round(labels)) and labels.min() >= 1 and labels.max() <= 29
        # the one-hot block of sex is the last 3 columns: exactly one 1 per row
        assert np.all(matrix[:, -3:].sum(axis=1) == 1)
    labels_out = Counter(int(float(row.split(",")[0])) for rows in lines.values() for row in rows)
    labels_in = Counter(int(line.split(",")[-1]) for line in abalone_lines)
    assert labels_out == labels_in


def test_preprocessor_is_fitted_on_train_rows_only(full_run):
    out, counts = full_run
    preprocessor = joblib.load(out / "preprocessor" / "preprocessor.joblib")
    assert (
        preprocessor.named_transformers_["numeric"].named_steps["scaler"].n_samples_seen_
        == (counts["train"])
    )
    train = np.loadtxt(out / "train" / "train.csv", delimiter=",")
    # scaled numeric columns of the training rows have mean 0 and standard deviation 1
    np.testing.assert_allclose(train[:, 1:8].mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(train[:, 1:8].std(axis=0), 1.0, atol=1e-6)


def test_preprocessor_handles_unseen_sex_and_missing_numbers(full_run, preprocess_step):
    out, _ = full_run
    preprocessor = joblib.load(out / "preprocessor" / "preprocessor.joblib")
    assert list(preprocessor.feature_names_in_) == preprocess_step.FEATURE_COLUMNS
    rows = pd.DataFrame(
        [
            ["M", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15],
            ["X", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15],  # unseen sex
            [np.nan, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15],  # missing sex
            ["M", np.nan, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15],  # missing length
        ],
        columns=preprocess_step.FEATURE_COLUMNS,
    )
    features = preprocessor.transform(rows)
    assert features.shape == (4, N_FEATURES)
    assert np.all(np.isfinite(features))
    assert features[0, -3:].tolist() == [0.0, 0.0, 1.0]  # categories F, I, M
    assert features[1, -3:].tolist() == [0.0, 0.0, 0.0]  # unknown category ignored
    assert features[2, -3:].tolist() == [0.0, 0.0, 0.0]
    # a missing length becomes the training median, then is scaled like any other value
    median_length = (
        preprocessor.named_transformers_["numeric"].named_steps["imputer"].statistics_[0]
    )
    imputed = rows.iloc[[3]].copy()
    imputed["length"] = median_length
    np.testing.assert_allclose(features[3], preprocessor.transform(imputed)[0])


def test_missing_values_in_the_input_are_imputed(preprocess_step, abalone_lines, tmp_path):
    lines = abalone_lines[:40]
    lines[3] = "," + lines[3].split(",", 1)[1]  # empty sex
    fields = lines[5].split(",")
    fields[2] = ""  # empty diameter
    lines[5] = ",".join(fields)
    source = tmp_path / "holes.csv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts = run_preprocess(preprocess_step, source, tmp_path / "out")
    assert counts["rows"] == 40
    for rows in read_lines(tmp_path / "out").values():
        for row in rows:
            assert all(math.isfinite(float(v)) for v in row.split(","))


def test_same_seed_same_output_other_seed_other_split(preprocess_step, abalone_lines, tmp_path):
    source = tmp_path / "slice.csv"
    source.write_text("\n".join(abalone_lines[:300]) + "\n", encoding="utf-8")
    run_preprocess(preprocess_step, source, tmp_path / "a", seed=7)
    run_preprocess(preprocess_step, source, tmp_path / "b", seed=7)
    run_preprocess(preprocess_step, source, tmp_path / "c", seed=8)
    a, b, c = (read_lines(tmp_path / name) for name in "abc")
    assert a == b
    assert a["train"] != c["train"]
    assert (tmp_path / "a/preprocessor/preprocessor.joblib").is_file()


def test_folder_input_is_read_in_name_order_and_concatenated(
    preprocess_step, abalone_lines, tmp_path
):
    folder = tmp_path / "data"
    folder.mkdir()
    # written out of order on purpose; "b" sorts after "a"
    (folder / "b-second.data").write_text("\n".join(abalone_lines[100:160]) + "\n")
    (folder / "a-first.csv").write_text("\n".join(abalone_lines[:100]) + "\n")
    (folder / "notes.txt").write_text("not data, ignored\n")
    (folder / "nested.csv").mkdir()  # a folder, not a file: ignored
    data = preprocess_step.read_input(folder)
    assert len(data) == 160
    assert data["rings"].tolist() == [float(line.split(",")[-1]) for line in abalone_lines[:160]]

    single = tmp_path / "single.csv"
    single.write_text("\n".join(abalone_lines[:160]) + "\n")
    run_preprocess(preprocess_step, folder, tmp_path / "from-folder")
    run_preprocess(preprocess_step, single, tmp_path / "from-file")
    assert read_lines(tmp_path / "from-folder") == read_lines(tmp_path / "from-file")


def test_malformed_csv_fails_with_one_clear_line(run_script, abalone_lines, tmp_path):
    bad = tmp_path / "bad.csv"
    short = "M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15"  # 8 columns: rings is missing
    bad.write_text("\n".join([*abalone_lines[:2], short, *abalone_lines[2:10]]) + "\n")
    out = tmp_path / "out"
    result = run_script(
        "preprocess",
        "--input", bad,
        "--train", out / "train",
        "--validation", out / "validation",
        "--test", out / "test",
        "--preprocessor", out / "preprocessor",
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message == (
        f"preprocess: error: {bad}: line 3: expected 9 comma-separated columns "
        "(sex, length, diameter, height, whole_weight, shucked_weight, viscera_weight, "
        "shell_weight, rings), found 8"
    )
    assert not (out / "train" / "train.csv").exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "sex,length,diameter,height,a,b,c,d,rings\n",
            "is not a number: 'length' (the file must not",
        ),
        ("M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15,\n", "the label column 'rings' is empty"),
        ("M,0.455,0.365,0.095,0.514,0.2245,0.101,inf,15\n", "is not finite"),
        ("\n\n", "no data rows"),
        (
            "M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15,15\n"
            "M,0.455,0.365,abc,0.514,0.2245,0.101,0.15,15\n",
            "line 2: column 'height' is not a number: 'abc'",
        ),
        ("M,0.4,0.3,0.1,0.5,0.2,0.1,0.1,15,extra\n", "expected 9 comma-separated columns"),
    ],
    ids=["header", "missing-label", "infinite", "empty", "non-numeric", "too-many-columns"],
)
def test_bad_input_in_process(preprocess_step, tmp_path, capsys, content, problem):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    out = tmp_path / "out"
    code = preprocess_step.main(
        [
            "--input", str(bad),
            "--train", str(out / "train"),
            "--validation", str(out / "validation"),
            "--test", str(out / "test"),
            "--preprocessor", str(out / "preprocessor"),
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err


def test_missing_input_and_empty_folder(preprocess_step, tmp_path):
    with pytest.raises(preprocess_step.InputError, match="no such file or folder"):
        preprocess_step.read_input(tmp_path / "nope.csv")
    with pytest.raises(preprocess_step.InputError, match=r"no \*\.csv or \*\.data files"):
        preprocess_step.read_input(tmp_path)


def test_too_few_rows_for_three_splits(preprocess_step, abalone_lines, tmp_path):
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("\n".join(abalone_lines[:3]) + "\n")
    with pytest.raises(preprocess_step.InputError, match="too few"):
        run_preprocess(preprocess_step, tiny, tmp_path / "out")
