"""`data_sources:` and `triggers:` in modelyard.yaml: validation and lint located at file:line,
and what the compiled (and cached) project carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.project.loader import Problem, ProjectInvalid, load_project
from modelyard.testing import write_project

VALID = """\
name: demo
data_sources:
  raw: {url: data, include: ["*.csv"], exclude: ["tmp*"]}
  daily:
    url: s3://bucket/prefix
    date_prefix: YYYY/MM/DD
    storage_options: {anon: true}
  unused: {url: other}
pipelines:
  train:
    triggers: {data: [daily]}
    steps:
      read:
        run: echo ${{ inputs.data }}
        inputs: {data: "${{ data.raw }}"}
"""


def problems(root: Path) -> list[Problem]:
    with pytest.raises(ProjectInvalid) as info:
        load_project(root)
    return info.value.problems


def located(root: Path) -> dict[str, int]:
    return {p.message: int(p.where.rsplit(":", 1)[1]) for p in problems(root)}


@pytest.mark.parametrize("cached", [False, True])
def test_a_valid_project_carries_its_data_sources(tmp_path: Path, cached: bool):
    root = write_project(tmp_path, VALID)
    project = load_project(root)
    if cached:  # the second load comes from the compiled copy
        project = load_project(root)
    raw, daily = project.data_sources["raw"], project.data_sources["daily"]
    assert (raw.url, raw.include, raw.exclude, raw.date_prefix) == (
        "data",
        ("*.csv",),
        ("tmp*",),
        None,
    )
    assert (daily.date_prefix, daily.storage_options) == ("YYYY/MM/DD/", {"anon": True})
    assert project.data_sources["unused"].include == ("**/*",)
    pipeline = project.pipeline("train")
    # the pipeline carries the sources it reads or is triggered by, frozen with each run
    assert sorted(pipeline.data_sources) == ["daily", "raw"]
    assert pipeline.data_triggers == ("daily",)


def test_unknown_data_sources_are_located_errors(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        data_sources:
          raw: {url: data}
        pipelines:
          train:
            triggers:
              data: [raw, nightly]
            steps:
              read:
                run: echo ${{ inputs.a }} ${{ inputs.b }}
                inputs:
                  a: ${{ data.rwa }}
                  b: ${{ data.raw.digest }}
        """,
    )
    found = {p.message: (int(p.where.rsplit(":", 1)[1]), p.hint) for p in problems(root)}
    assert found["unknown data source 'nightly'"] == (
        6,
        "declare it under data_sources, or use one of: raw",
    )
    # like every reference in inputs, located at the step's `inputs:` key
    assert found["unknown data source 'rwa'"][0] == 10
    assert found["'data.raw.digest': refer to a data source as data.NAME"][0] == 10


def test_data_references_are_only_for_inputs(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        data_sources:
          raw: {url: data}
        pipelines:
          train:
            steps:
              read:
                run: echo ${{ data.raw }}
        """,
    )
    (problem,) = problems(root)
    assert problem.message.startswith("'data' cannot be used in run of step 'read'")
    assert problem.where.endswith(":7")


def test_without_data_sources_the_hint_says_how_to_declare_one(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        pipelines:
          train:
            steps:
              read:
                run: echo ${{ inputs.x }}
                inputs: {x: "${{ data.raw }}"}
        """,
    )
    (problem,) = problems(root)
    assert problem.message == "unknown data source 'raw'"
    assert "data_sources:" in problem.hint


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("raw: {url: data, include: ['/abs/*']}", 2, "relative POSIX path"),
        ("raw: {url: data, exclude: ['../x']}", 2, "'..'"),
        ("raw: {url: data, date_prefix: 'MM/DD/'}", 2, "no YYYY"),
        ("raw: {url: ''}", 2, "url is empty"),
        ("raw: {include: ['*.csv']}", 2, "missing key 'url'"),
        ("raw: {url: data, inculde: ['*.csv']}", 2, "unknown key 'inculde'"),
        ("'bad name': {url: data}", 2, "is not a valid value"),
    ],
)
def test_invalid_data_sources_are_located(tmp_path: Path, body: str, line: int, words: str):
    root = write_project(
        tmp_path,
        f"data_sources:\n  {body}\npipelines:\n  p:\n    steps:\n      a: {{run: echo}}\n",
    )
    (problem,) = problems(root)
    assert words in problem.message, problem
    assert problem.where == f"{root / 'modelyard.yaml'}:{line}"


def test_a_trigger_listed_twice_is_an_error(tmp_path: Path):
    root = write_project(
        tmp_path,
        """\
        data_sources:
          raw: {url: data}
        pipelines:
          p:
            triggers: {data: [raw, raw]}
            steps:
              a: {run: echo}
        """,
    )
    assert located(root) == {
        "pipelines.p.triggers.data: Value error, a data source is listed twice": 5
    }
