"""A pipeline run whose artifacts live in an S3-compatible store (moto on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from modelyard.engine.service import run_detail
from modelyard.testing import open_runtime, run_pipeline, write_project

pytestmark = pytest.mark.s3

PROJECT = """
pipelines:
  p:
    parameters: {n: 3}
    steps:
      make:
        run: python make.py ${{ outputs.data }} ${{ params.n }}
        outputs: [data]
      check:
        condition: json(steps.make.outputs.data, "n.json").n == params.n
        then: [use]
      use:
        run: python use.py ${{ inputs.data }}
        inputs: {data: "${{ steps.make.outputs.data }}"}
"""

FILES = {
    "make.py": """
    import json, pathlib, sys
    pathlib.Path(sys.argv[1], "n.json").write_text(json.dumps({"n": int(sys.argv[2])}))
    """,
    "use.py": """
    import json, pathlib, sys
    print("n is", json.loads(pathlib.Path(sys.argv[1], "n.json").read_text())["n"])
    """,
}


def test_run_and_cache_with_artifacts_on_s3(
    tmp_path: Path, s3_bucket: str, s3_options: dict[str, Any]
) -> None:
    root = write_project(tmp_path / "proj", PROJECT, FILES)
    store_url = f"s3://{s3_bucket}/{uuid.uuid4().hex}"
    runtime = open_runtime(root, artifact_store=store_url, artifact_store_options=s3_options)

    first = run_pipeline(runtime, root, "p")
    assert first.status == "succeeded", first.message
    detail = run_detail(runtime, first.id)
    assert detail.steps["use"].status == "succeeded"
    digest = detail.steps["make"].outputs["data"]["digest"]
    # the output really is in the bucket, under its content address
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    hexdigest = digest.removeprefix("sha256:")
    assert fs.exists(f"{store_url}/blobs/sha256/{hexdigest[:2]}/{hexdigest[2:]}")
    assert not (root / ".modelyard" / "artifacts").exists()

    second = run_pipeline(runtime, root, "p")
    steps = run_detail(runtime, second.id).steps
    assert steps["make"].cached and steps["use"].cached
