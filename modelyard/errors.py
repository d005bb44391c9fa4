"""One error tree for modelyard.

Every error carries what went wrong, where, and how to fix it, plus the exit code the CLI uses and
the HTTP status the server uses. The CLI prints these without a traceback.
"""

from __future__ import annotations


class ModelyardError(Exception):
    """Base of all errors that modelyard reports to a user."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class ConfigError(ModelyardError):
    """The project file, a parameter or a setting is invalid."""

    exit_code = 2
    http_status = 422


class ProjectNotFound(ConfigError):
    """No modelyard.yaml where one was expected."""


class ExpressionError(ConfigError):
    """A `${{ ... }}` reference or a condition expression is malformed or not allowed."""

    def __init__(
        self, message: str, *, expression: str, column: int | None = None, hint: str | None = None
    ):
        super().__init__(message, hint=hint)
        self.expression = expression
        self.column = column


class NotFound(ModelyardError):
    """A run, step or artifact that was asked for does not exist."""

    exit_code = 3
    http_status = 404


class StateConflict(ModelyardError):
    """The action does not fit the current state (approving a step that is not waiting, ...)."""

    exit_code = 4
    http_status = 409


class ArtifactError(ModelyardError):
    """An artifact is missing, corrupt, or cannot be stored."""

    exit_code = 5
    http_status = 500


class StepFailed(ModelyardError):
    """A step's code failed; the message carries the reason and where the log is."""

    exit_code = 6


class MissingDependency(ModelyardError):
    """An optional dependency is needed for this feature but not installed."""

    exit_code = 7

    def __init__(self, package: str, extra: str, feature: str):
        super().__init__(
            f"{feature} needs the Python package '{package}', which is not installed",
            hint=f"pip install 'modelyard[{extra}]'",
        )


class DatabaseError(ModelyardError):
    """The metadata database cannot be reached or migrated."""

    exit_code = 8
    http_status = 503
