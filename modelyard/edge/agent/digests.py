"""Artifact digests as recipes write them (base64 of the hash) and their verification: an
artifact whose bytes do not match is refused before anything runs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from pathlib import Path

from modelyard.edge.agent.errors import ArtifactError
from modelyard.edge.agent.model import (
    Artifact,
    Component,
)

DIGEST_BYTES = {"SHA-256": 32, "SHA-384": 48, "SHA-512": 64}  # the size of each hash


def artifact_digest(path: str | Path, algorithm: str = "SHA-256") -> str:
    """The base64 digest of a file, as recipes write it."""
    if algorithm not in DIGEST_BYTES:
        raise ArtifactError(f"unsupported digest algorithm {algorithm!r}")
    digest = hashlib.new(algorithm.replace("-", "").lower())
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc}") from None
    return base64.b64encode(digest.digest()).decode("ascii")


def verify_artifact(path: str | Path, artifact: Artifact, *, field: str | None = None) -> None:
    """Raise ArtifactError unless the file has the recipe's digest (no digest: nothing to check)."""
    if artifact.digest is None:
        return
    try:
        expected = base64.b64decode(artifact.digest, validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactError(
            f"the digest of {artifact.uri} is not base64: {artifact.digest!r}", path=field
        ) from None
    if not Path(path).is_file():
        raise ArtifactError(f"artifact {artifact.uri} is missing: no file {path}", path=field)
    actual = artifact_digest(path, artifact.algorithm)
    if not hmac.compare_digest(base64.b64decode(actual), expected):
        raise ArtifactError(
            f"{path} does not match the digest of {artifact.uri}: the recipe says "
            f"{artifact.algorithm} {artifact.digest}, the file has {actual}",
            path=field,
            hint="download the artifact again, or update the recipe's Digest if the file changed",
        )


def verify_component_artifacts(component: Component, artifacts_dir: str | Path) -> None:
    """Check each (non-docker) artifact of the component in its artifacts folder."""
    index = next(
        (i for i, m in enumerate(component.recipe.manifests) if m is component.manifest), None
    )
    prefix = f"Manifests[{index}]." if index is not None else ""
    for i, artifact in enumerate(component.artifacts):
        if not artifact.is_docker:
            file = Path(artifacts_dir) / artifact.file_name
            verify_artifact(file, artifact, field=f"{prefix}Artifacts[{i}].Digest")
