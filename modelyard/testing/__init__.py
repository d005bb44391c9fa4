"""Helpers for tests of modelyard itself and of users' projects."""

from modelyard.testing.projects import open_runtime, run_pipeline, write_project

__all__ = ["open_runtime", "run_pipeline", "write_project"]
