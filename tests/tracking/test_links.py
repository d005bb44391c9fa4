"""MLflow links: a server's page, or how to open a file or database store; never credentials.
And the setting that decides which outputs are logged to MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.errors import ConfigError
from modelyard.settings import DEFAULT_TRACKING_ARTIFACT_LIMIT, Settings
from modelyard.tracking.links import NOT_PUSHED, mlflow_link, redact


def test_a_tracking_server_has_a_page_per_run_and_credentials_are_dropped() -> None:
    link = mlflow_link("https://alice:s3cret@mlflow.example.com:5000/", "7", "abc")
    assert link.url == "https://mlflow.example.com:5000/#/experiments/7/runs/abc"
    assert link.hint is None and link.pushed
    assert link.uri == "https://mlflow.example.com:5000/"
    nested = mlflow_link("http://mlflow.internal", "7", "abc", nested_run_id="def")
    assert nested.url == "http://mlflow.internal/#/experiments/7/runs/def"
    assert nested.run_id == "def"


def test_a_file_or_database_store_gets_the_command_that_opens_it() -> None:
    uri = "sqlite:////srv/my project/.modelyard/mlflow.db"
    link = mlflow_link(
        uri, "1", "abc", artifact_root=Path("/srv/my project/.modelyard/mlartifacts")
    )
    assert link.url is None and link.uri == uri
    assert link.hint == (
        "run `mlflow ui --backend-store-uri 'sqlite:////srv/my project/.modelyard/mlflow.db' "
        "--default-artifact-root '/srv/my project/.modelyard/mlartifacts'`, "
        "then open http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )
    files = mlflow_link("file:///srv/mlruns", "1", "abc")
    assert files.hint is not None
    assert files.hint.startswith("run `mlflow ui --backend-store-uri file:///srv/mlruns`")
    database = mlflow_link("postgresql://ml:pw@db.internal/mlflow", "1", "abc")
    assert database.hint is not None and "pw" not in database.hint and "ml:" not in database.hint
    assert "postgresql://db.internal/mlflow" in database.hint
    assert "(add the store's credentials)" in database.hint


def test_a_run_not_pushed_yet_says_how_to_push_it() -> None:
    link = mlflow_link("https://u:p@mlflow.example.com", None, None)
    assert (link.url, link.hint, link.pushed) == (None, NOT_PUSHED, False)
    assert link.uri == "https://mlflow.example.com"
    assert link.to_json() == {
        "uri": "https://mlflow.example.com",
        "experiment_id": None,
        "run_id": None,
        "url": None,
        "hint": "not pushed yet: modelyard tracking push",
    }


def test_redact_removes_credentials_from_messages() -> None:
    text = "API request to https://bob:tok@mlflow.example.com/api failed; see http://x.org/a@b"
    assert redact(text) == (
        "API request to https://mlflow.example.com/api failed; see http://x.org/a@b"
    )
    assert redact("sqlite:////home/me/mlflow.db") == "sqlite:////home/me/mlflow.db"


def test_links_import_only_the_standard_library() -> None:
    code = (
        "import sys; import modelyard.tracking.links; "
        "print(sorted(m for m in ('mlflow', 'sqlalchemy', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- the artifact size limit ----------------------------------------------------------------------


def test_the_artifact_limit_setting(tmp_path: Path) -> None:
    def resolve(value: str | None, in_file: object = None) -> Settings:
        env = {"MODELYARD_TRACKING_ARTIFACT_LIMIT": value} if value is not None else {}
        project = {"tracking_artifact_limit": in_file} if in_file is not None else {}
        return Settings.resolve(tmp_path, project, environ=env)

    assert resolve(None).tracking_artifact_limit == DEFAULT_TRACKING_ARTIFACT_LIMIT == 20 * 2**20
    assert resolve("1048576").tracking_artifact_limit == 1048576
    assert resolve(None, 0).tracking_artifact_limit == 0
    assert resolve("5", 7).tracking_artifact_limit == 5  # the variable wins
    for bad in ("20MB", "-1", "1.5"):
        with pytest.raises(ConfigError) as caught:
            resolve(bad)
        assert caught.value.where == "MODELYARD_TRACKING_ARTIFACT_LIMIT"
        assert "whole number of bytes" in caught.value.message and bad in caught.value.message
    with pytest.raises(ConfigError, match="tracking_artifact_limit"):
        resolve(None, True)
