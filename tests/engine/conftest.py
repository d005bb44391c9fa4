"""The `engine` fixture: an `EngineHarness` on each metadata DB backend (see engine_harness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import EngineHarness


@pytest.fixture
def engine(tmp_path: Path, database_url: str) -> Iterator[EngineHarness]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    harness = EngineHarness(tmp_path / "project", database_url, scratch)
    try:
        yield harness
    finally:
        harness.close()
