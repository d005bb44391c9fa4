"""Where to see a run in MLflow: a link to the tracking server's page, or how to open the store.

Standard library only: `show`, `models show` and approval evidence print links without importing
MLflow (~2 s). A tracking URI may carry credentials (`https://user:token@host`): nothing here
returns them, and `redact` removes them from any message.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from modelyard.settings import Settings
    from modelyard.store.runs import RunRow

NOT_PUSHED = "not pushed yet: modelyard tracking push"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


@dataclass(frozen=True)
class Link:
    """A run in MLflow: its store (without credentials), ids, and a URL or a hint to see it."""

    uri: str | None
    experiment_id: str | None
    run_id: str | None  # None until the pusher has created the MLflow run
    url: str | None  # a page of the tracking server's UI
    hint: str | None  # when there is no URL: how to see the run

    @property
    def pushed(self) -> bool:
        return self.run_id is not None

    def text(self) -> str:
        return self.url or self.hint or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "url": self.url,
            "hint": self.hint,
        }


def redact(text: str) -> str:
    """`text` with the user name and password of every URL in it removed."""
    return _USERINFO.sub(r"\g<scheme>", text)


def mlflow_link(
    uri: str | None,
    experiment_id: str | None,
    run_id: str | None,
    *,
    nested_run_id: str | None = None,
    artifact_root: str | PathLike[str] | None = None,
) -> Link:
    """The link of MLflow run `run_id` (or of its nested run `nested_run_id`).

    An http(s) tracking server has a page per run; a file or database store has none until
    someone runs `mlflow ui` on it, so the hint says how (`artifact_root`: the store's default
    artifact folder, for the embedded store).
    """
    safe = redact(uri) if uri else None
    if not (uri and experiment_id and run_id):
        return Link(safe, experiment_id, None, None, NOT_PUSHED)
    shown = nested_run_id or run_id
    fragment = f"#/experiments/{experiment_id}/runs/{shown}"
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return Link(safe, experiment_id, shown, f"{(safe or '').rstrip('/')}/{fragment}", None)
    if scheme.startswith("databricks"):
        hint = f"open experiment {experiment_id}, run {shown} in the Databricks workspace"
        return Link(safe, experiment_id, shown, None, hint)
    command = f"mlflow ui --backend-store-uri {shlex.quote(safe or '')}"
    if artifact_root is not None:
        command += f" --default-artifact-root {shlex.quote(str(artifact_root))}"
    credentials = " (add the store's credentials)" if safe != uri else ""
    hint = f"run `{command}`{credentials}, then open {LOCAL_UI}/{fragment}"
    return Link(safe, experiment_id, shown, None, hint)


def run_link(run: RunRow, settings: Settings, nested_run_id: str | None = None) -> Link:
    """The link of a pipeline run (or of one of its steps' nested runs) as recorded on its row."""
    uri = run.tracking_uri or settings.effective_tracking_uri
    return mlflow_link(
        uri,
        run.mlflow_experiment_id,
        run.mlflow_run_id,
        nested_run_id=nested_run_id,
        artifact_root=settings.embedded_artifact_root(uri),
    )
