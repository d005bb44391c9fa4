"""What a deploy step does, as plain data (pure): deploy the version a register step made to an
endpoint. Part of `Step.deployment`; it round-trips through JSON with the run's definition.

The autoscaling policy and the rollout plan are kept as the keyword arguments of
`modelyard.serving.autoscale.AutoscalePolicy` and `modelyard.serving.endpoint.rollout.RolloutPlan`
(only the rollout keys that were given: the others take the stage's defaults when the step runs),
so this module imports nothing of serving: every command imports the pipeline model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Deployment:
    """Deploy the version that register step `model` made to endpoint `endpoint` in `stage`."""

    model: str  # the register step (not a registry model's name)
    endpoint: str
    stage: str
    replicas: int | None = None  # None: keep (1 for a new endpoint)
    autoscale: dict[str, Any] | None = None  # AutoscalePolicy's fields
    rollout: dict[str, Any] | None = None  # the RolloutPlan fields that were given
    allow_unapproved: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        values = dict(data)
        for key in ("autoscale", "rollout"):
            if values.get(key) is not None:
                values[key] = dict(values[key])
        return cls(**values)
