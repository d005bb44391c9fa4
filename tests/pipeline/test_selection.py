"""Which files of a data source are selected: glob patterns and dated folders."""

from __future__ import annotations

import pytest

from modelyard.pipeline.selection import check_pattern, parse_date_prefix, select


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*", "a.csv", True),
        ("**/*", "x/y/z.bin", True),
        ("*.csv", "a.csv", True),
        ("*.csv", "sub/a.csv", False),  # `*` stays inside one folder level
        ("**/*.csv", "a.csv", True),  # `**/` may match no folder at all
        ("**/*.csv", "a/b/c.csv", True),
        ("**/*.csv", "a/b/c.csv.bak", False),
        ("raw/**", "raw/a/b", True),
        ("raw/**", "rawx/a", False),
        ("part-?.csv", "part-1.csv", True),
        ("part-?.csv", "part-10.csv", False),
        ("[ab].txt", "a.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("a+b(1).csv", "a+b(1).csv", True),  # regex characters are literal
    ],
)
def test_glob_patterns(pattern: str, path: str, expected: bool):
    assert select(path, include=[pattern])[0] is expected


def test_exclude_wins_over_include():
    assert select("a/tmp.csv", ["**/*.csv"], ["**/tmp.csv"]) == (False, None)
    assert select("a/real.csv", ["**/*.csv"], ["**/tmp.csv"]) == (True, None)


@pytest.mark.parametrize("bad", ["", "/abs/*.csv", "../up/*", "a/./b", "win\\path", "[abc"])
def test_invalid_patterns_are_refused(bad: str):
    with pytest.raises(ValueError):
        check_pattern(bad)


def test_date_prefix_selects_dated_folders_and_records_the_date():
    prefix = "YYYY/MM/DD/"
    assert select("2024/05/01/a.csv", date_prefix=prefix) == (True, "2024-05-01")
    assert select("2024/05/01/deep/a.csv", date_prefix=prefix) == (True, "2024-05-01")
    assert select("a.csv", date_prefix=prefix) == (False, None)  # not below a dated folder
    assert select("2024/13/01/a.csv", date_prefix=prefix) == (False, None)  # not a date
    assert select("2024/02/30/a.csv", date_prefix=prefix) == (False, None)
    assert select("2024/5/1/a.csv", date_prefix=prefix) == (False, None)  # two digits
    # patterns match the path below the dated folder
    assert select("2024/05/01/a.csv", ["*.csv"], date_prefix=prefix) == (True, "2024-05-01")
    assert select("2024/05/01/a.txt", ["*.csv"], date_prefix=prefix) == (False, None)


def test_date_prefix_variants():
    assert parse_date_prefix("YYYY/MM/DD").pattern == "YYYY/MM/DD/"  # a folder: "/" added
    assert select("dt=2024-05/x", date_prefix="dt=YYYY-MM/") == (True, "2024-05")
    assert select("2023/x", date_prefix="YYYY/") == (True, "2023")


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("MM/DD/", "no YYYY"),
        ("YYYY/YYYY/", "repeats"),
        ("YYYY/DD/", "DD without MM"),
        ("YYYY/*/", "glob"),
        ("/YYYY/", "relative"),
    ],
)
def test_invalid_date_prefixes_say_why(bad: str, why: str):
    with pytest.raises(ValueError, match=why):
        parse_date_prefix(bad)
