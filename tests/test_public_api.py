"""The public API: what `modelyard` exports, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import modelyard


def test_all_names_resolve_and_are_curated() -> None:
    assert sorted(modelyard.__all__) == [
        "ModelyardError",
        "PipelineBuilder",
        "StepContext",
        "define_pipeline",
        "log_metric",
        "log_metrics",
        "log_params",
        "step",
    ]
    for name in modelyard.__all__:
        assert getattr(modelyard, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        modelyard.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, modelyard, modelyard.cli.main; "
        "heavy = [m for m in ('sqlalchemy', 'pydantic', 'fsspec', 'rich', 'yaml', 'alembic', "
        "'mlflow') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
