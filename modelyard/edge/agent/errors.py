"""The device agent's own errors: what went wrong, in which recipe field, and how to fix it.

The agent imports nothing else of modelyard (see `modelyard.edge.agent`), so it cannot use
`modelyard.errors`; these mirror them in small. `str()` is the whole user-facing message,
"path: message (hint)", so a CLI prints it without a traceback.
"""

from __future__ import annotations

import datetime
from typing import Any


class AgentError(Exception):
    """Base of the errors the agent reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path  # a field path such as "Manifests[0].Lifecycle.Run.Timeout", or None
        self.hint = hint  # how to fix it, or None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} ({self.hint})" if self.hint else text


class RecipeError(AgentError):
    """A recipe is malformed, or cannot be used on this device (no manifest, bad variable)."""

    exit_code = 2


class ArtifactError(AgentError):
    """An artifact is missing or is not what its recipe says (digest mismatch)."""

    exit_code = 3


class DeploymentError(AgentError):
    """A deployment cannot go ahead: unsatisfiable versions, cycles, refused dependencies."""

    exit_code = 4


def describe_value(value: Any) -> str:
    """What a value in a document is, for "expected X, got Y" messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, datetime.date):  # YAML reads 2020-01-25 as a date
        return f"the date {value.isoformat()}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
