"""Loading YAML with the line of every key (`modelyard.project.yamlsource`)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.project.yamlsource import load_yaml

FILE = Path("/somewhere/modelyard.yaml")


def load(text: str):
    return load_yaml(FILE, textwrap.dedent(text))


NESTED = """\
# a comment on line 1
name: demo
pipelines:
  train:
    parameters:
      depth: 5
    steps:
      prepare:
        run: python prep.py
        outputs:
          - data
          - stats
        env: {A: "1", B: "2"}
      fit:
        python: fit:main
"""


def test_line_of_nested_keys():
    source = load(NESTED)
    assert source.data["pipelines"]["train"]["parameters"]["depth"] == 5
    assert source.line_of(("name",)) == 2
    assert source.line_of(("pipelines",)) == 3
    assert source.line_of(("pipelines", "train")) == 4
    assert source.line_of(("pipelines", "train", "parameters", "depth")) == 6
    assert source.line_of(("pipelines", "train", "steps", "prepare")) == 8
    assert source.line_of(("pipelines", "train", "steps", "prepare", "run")) == 9
    assert source.line_of(("pipelines", "train", "steps", "fit", "python")) == 15


def test_line_of_list_items_and_flow_mappings():
    source = load(NESTED)
    outputs = ("pipelines", "train", "steps", "prepare", "outputs")
    assert source.line_of(outputs) == 10
    assert source.line_of((*outputs, 0)) == 11
    assert source.line_of((*outputs, 1)) == 12
    env = ("pipelines", "train", "steps", "prepare", "env")
    assert source.line_of((*env, "B")) == 13


def test_line_of_unknown_path_falls_back_to_nearest_ancestor():
    source = load(NESTED)
    assert source.line_of(("pipelines", "train", "steps", "fit", "no", "such", "key")) == 14
    assert source.line_of(("nothing", "here")) == source.line_of(())
    assert source.line_of(()) == 2  # the root mapping starts at its first key


def test_where_is_file_colon_line():
    source = load(NESTED)
    assert source.where(("pipelines", "train", "steps", "fit")) == f"{FILE}:14"


def test_syntax_error_names_file_and_line():
    text = """\
    pipelines:
      train:
        steps:
          a:
            run: echo [
           b: x
    """
    with pytest.raises(ConfigError) as info:
        load(text)
    error = info.value
    assert error.where == f"{FILE}:6"
    assert "YAML syntax error" in error.message
    assert error.hint and "indentation" in error.hint
    assert str(error).startswith(f"{FILE}:6: YAML syntax error")


def test_syntax_error_of_unclosed_quote_points_into_the_file():
    with pytest.raises(ConfigError) as info:
        load('name: demo\npipelines:\n  train: "open\n')
    assert info.value.where is not None
    assert info.value.where.startswith(f"{FILE}:")
    line = int(info.value.where.rsplit(":", 1)[1])
    assert 3 <= line <= 4


def test_duplicate_step_names_report_both_lines():
    text = """\
    pipelines:
      train:
        steps:
          fit:
            run: echo one
          other:
            run: echo
          fit:
            run: echo two
    """
    with pytest.raises(ConfigError) as info:
        load(text)
    error = info.value
    assert error.where == f"{FILE}:8"
    assert "duplicate key 'fit'" in error.message
    assert "line 4" in error.message
    assert error.hint and "unique" in error.hint


def test_duplicate_keys_in_a_flow_mapping():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load("env: {a: 1, b: 2, a: 3}\n")


def test_keys_that_differ_only_by_type_are_duplicates():
    # both become the name "1"
    with pytest.raises(ConfigError, match="duplicate key '1'"):
        load('steps:\n  1: x\n  "1": y\n')


def test_merge_keys_are_refused_with_their_line():
    text = """\
    base: &base
      run: echo
    steps:
      a:
        <<: *base
    """
    with pytest.raises(ConfigError) as info:
        load(text)
    assert info.value.where == f"{FILE}:5"
    assert "merge" in info.value.message


def test_null_key_is_refused():
    with pytest.raises(ConfigError, match="plain names") as info:
        load("steps:\n  ~: x\n")
    assert info.value.where == f"{FILE}:2"


def test_empty_file_has_no_data():
    source = load("# only a comment\n")
    assert source.data is None
    assert source.line_of(("anything",)) == 1


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path / "modelyard.yaml")
    assert info.value.where == str(tmp_path / "modelyard.yaml")
    assert "not found" in info.value.message


def test_scalars_keep_their_yaml_types():
    source = load("a: 1\nb: 1.5\nc: true\nd: null\ne: '5'\nf: [1, x]\n")
    assert source.data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "5", "f": [1, "x"]}
