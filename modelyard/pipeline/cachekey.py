"""Cache keys: one digest over everything that can change a step's outputs.

The key covers the step's definition (minus fields that cannot change its result, such as retries),
the digest of its code, its resolved parameters and command, the digests of its inputs and the
environment's digest. Pure: callers pass the digests in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelyard.pipeline.model import Step

CACHE_FORMAT = 1
# Fields that change how a step is run or shown, never what it produces.
_NOT_IN_KEY = frozenset({"description", "retry", "timeout", "cache", "after", "executor"})


def cache_key(
    step: Step,
    *,
    code_digest: str,
    resolved: Mapping[str, Any],
    input_digests: Mapping[str, str],
    environment_digest: str,
) -> str:
    definition = {k: v for k, v in step.to_json().items() if k not in _NOT_IN_KEY}
    document = {
        "format": CACHE_FORMAT,
        "definition": definition,
        "code": code_digest,
        "resolved": resolved,
        "inputs": dict(sorted(input_digests.items())),
        "environment": environment_digest,
    }
    payload = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()
