"""Tests of steps/prepare.py: joining red + white, the colour one-hot, the split, bad input."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

N_RED, N_WHITE = 1599, 4898


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def source_rows(lines: list[str]) -> list[tuple[float, ...]]:
    return [tuple(float(v) for v in line.split(";")) for line in lines[1:]]


@pytest.fixture(scope="module")
def full_run(prepare_step: ModuleType, data_dir: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared")
    counts = prepare_step.prepare(data_dir, out / "train", out / "test", seed=42)
    return out, counts


def test_joins_both_files_with_the_colour_one_hot(full_run, red_lines, white_lines):
    out, counts = full_run
    assert counts == {
        "rows": N_RED + N_WHITE,
        "red": N_RED,
        "white": N_WHITE,
        "train": 5198,
        "test": 1299,  # round(0.2 * 6497)
    }
    header, train = read_rows(out / "train" / "train.csv")
    _, test = read_rows(out / "test" / "test.csv")
    assert header[-3:] == ["color_red", "color_white", "quality"]
    assert header[:11] == red_lines[0].replace('"', "").split(";")[:11]
    rows = [tuple(float(v) for v in row) for row in train + test]
    assert len(rows) == N_RED + N_WHITE
    # every row is exactly one colour, and each colour's rows are exactly its file's rows
    assert all(row[11] + row[12] == 1 for row in rows)
    reds = Counter(row[:11] + row[13:] for row in rows if row[11] == 1)
    whites = Counter(row[:11] + row[13:] for row in rows if row[12] == 1)
    assert reds == Counter(source_rows(red_lines))
    assert whites == Counter(source_rows(white_lines))


def test_values_are_written_exactly(full_run, data_dir):
    out, _ = full_run
    text = (out / "train" / "train.csv").read_text() + (out / "test" / "test.csv").read_text()
    # a long decimal of the original file survives as written (repr of the same float)
    assert "11.0666666666667" in (data_dir / "winequality-white.csv").read_text()
    assert "11.0666666666667" in text


def test_same_seed_same_split_other_seed_other_split(prepare_step, small_data, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        prepare_step.prepare(small_data, tmp_path / name / "train", tmp_path / name / "test", seed)
    a, b, c = ((tmp_path / n / "test" / "test.csv").read_text() for n in "abc")
    assert a == b
    assert a != c


def test_colour_comes_from_the_file_name(prepare_step, small_data, tmp_path):
    (small_data / "winequality-red.csv").rename(small_data / "RED-batch-2.csv")
    data, counts = prepare_step.load_wines(small_data)
    assert counts == {"red": 150, "white": 150}
    assert data[:150, 11].tolist() == [1.0] * 150  # files are read in name order: RED first

    (small_data / "rose.csv").write_text((small_data / "RED-batch-2.csv").read_text())
    with pytest.raises(prepare_step.InputError, match="cannot tell the wine colour"):
        prepare_step.wine_files(small_data)


def test_both_colours_are_required(prepare_step, small_data, tmp_path):
    (small_data / "winequality-white.csv").unlink()
    with pytest.raises(prepare_step.InputError, match="no white wine file"):
        prepare_step.wine_files(small_data)
    with pytest.raises(prepare_step.InputError, match="no such folder"):
        prepare_step.wine_files(small_data / "winequality-red.csv")
    (small_data / "winequality-red.csv").unlink()
    with pytest.raises(prepare_step.InputError, match=r"folder has no \*\.csv files"):
        prepare_step.wine_files(small_data)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4,5", "is it comma-separated?"),
        ("7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4", "expected 12 semicolon-separated"),
        (
            "7.4;0.7;x;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5",
            "column 'citric acid' is not a number",
        ),
        ("7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;inf;5", "column 'alcohol' is not finite"),
        ("7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5.5", "quality must be a whole score"),
    ],
    ids=["comma", "short", "text", "infinite", "fractional-quality"],
)
def test_bad_rows_name_the_file_line_and_column(prepare_step, small_data, red_lines, row, problem):
    bad = small_data / "winequality-red.csv"
    bad.write_text("\n".join([*red_lines[:3], row, *red_lines[3:10]]) + "\n")
    with pytest.raises(prepare_step.InputError) as error:
        prepare_step.load_wines(small_data)
    assert str(error.value).startswith(f"{bad}: line 4: ")
    assert problem in str(error.value)


def test_a_wrong_header_is_refused(prepare_step, small_data, red_lines):
    bad = small_data / "winequality-red.csv"
    bad.write_text("\n".join([red_lines[0].replace("pH", "ph"), *red_lines[1:5]]) + "\n")
    with pytest.raises(prepare_step.InputError, match="line 1: expected the semicolon-separated"):
        prepare_step.load_wines(small_data)


def test_a_failing_step_prints_one_line_and_writes_nothing(run_script, small_data, tmp_path):
    (small_data / "winequality-white.csv").write_text("")
    out = tmp_path / "out"
    result = run_script(
        "prepare", "--input", small_data, "--train", out / "train", "--test", out / "test"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"prepare: error: {small_data / 'winequality-white.csv'}: line 1: expected the "
        "semicolon-separated header fixed acidity;volatile acidity;citric acid;residual sugar;"
        "chlorides;free sulfur dioxide;total sulfur dioxide;density;pH;sulphates;alcohol;quality, "
        "found an empty file"
    )
    assert not (out / "train" / "train.csv").exists()


def test_a_bad_test_fraction_is_a_usage_error(run_script, small_data, tmp_path):
    result = run_script(
        "prepare", "--input", small_data, "--train", tmp_path / "a", "--test", tmp_path / "b",
        "--test-fraction", "1.5",
    )  # fmt: skip
    assert result.returncode == 2
    assert "--test-fraction" in result.stderr and "Traceback" not in result.stderr
