"""`modelyard outputs`: a step's outputs listed, one written out as plain files (checked against
its digest), and clear errors for an unknown step, output, or a missing --dest."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.testing import write_project

PROJECT = f"""\
name: shop
pipelines:
  build:
    steps:
      make:
        run: {sys.executable} make.py ${{{{ outputs.bundle }}}} ${{{{ outputs.note }}}}
        outputs: [bundle, note]
"""
MAKE = """\
import sys
from pathlib import Path

bundle, note = Path(sys.argv[1]), Path(sys.argv[2])
(bundle / "recipes").mkdir(parents=True)
(bundle / "recipes" / "a.yaml").write_text("ComponentName: a\\n")
note.mkdir(parents=True, exist_ok=True)
(note / "readme.txt").write_text("hello\\n")
"""


def test_outputs_are_listed_and_written_out(tmp_path: Path, cli: Callable[..., Any]) -> None:
    root = write_project(tmp_path / "shop", PROJECT, {"make.py": MAKE})
    assert cli(root, "run", "build", "--quiet").code == 0

    listed = cli(root, "outputs", "1", "make", "--json")
    assert listed.code == 0, listed.err
    assert set(listed.json()) == {"bundle", "note"}
    assert listed.json()["bundle"]["kind"] == "dir"
    text = cli(root, "outputs", "1", "make")
    assert text.out.startswith("OUTPUT") and "bundle" in text.out and "sha256:" in text.out

    dest = tmp_path / "out" / "bundle"
    written = cli(root, "outputs", "1", "make", "bundle", "--dest", str(dest), "--json")
    assert written.code == 0, written.err
    assert json.loads(written.out)["path"] == str(dest.resolve())
    assert (dest / "recipes" / "a.yaml").read_text() == "ComponentName: a\n"

    again = cli(root, "outputs", "1", "make", "bundle", "--dest", str(dest))
    assert again.code == 5 and "already exists" in again.err  # never overwritten
    assert (dest / "recipes" / "a.yaml").exists()


def test_unknown_step_or_output_and_a_missing_dest_are_clear_errors(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    root = write_project(tmp_path / "shop", PROJECT, {"make.py": MAKE})
    assert cli(root, "run", "build", "--quiet").code == 0

    step = cli(root, "outputs", "1", "nope")
    assert step.code == 3 and "no step 'nope'" in step.err and "steps: make" in step.err
    output = cli(root, "outputs", "1", "make", "nope", "--dest", str(tmp_path / "x"))
    assert output.code == 3 and "its outputs: bundle, note" in output.err
    nowhere = cli(root, "outputs", "1", "make", "bundle")
    assert nowhere.code == 2 and "--dest" in nowhere.err
    assert not (tmp_path / "x").exists()
    for result in (step, output, nowhere):
        assert "Traceback" not in result.err
