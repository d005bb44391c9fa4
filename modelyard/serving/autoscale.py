"""Autoscaling of an endpoint's replicas: target tracking on invocations per replica per minute.

Like SageMaker's target-tracking policy on `InvocationsPerInstance` (scenario S2: target 750,
min 2, max 10, 60 s cooldowns): the wanted replica count is the one that brings the observed
load per replica to the target, `ceil(replicas * observed / target)`, kept within min and max.

- Scaling out is prompt: once the scale-out cooldown has passed since the last scale-out (a new
  replica needs time to take load before the metric says whether it was enough).
- Scaling in is cautious: only after the scale-in cooldown since the last change in either
  direction (capacity added a moment ago must not be taken away on a lull), only when the load is
  below the target by more than the tolerance (no flapping around the target), and never below
  what the load needs.

The decision is a pure function of the policy, the state and the observation: the endpoint
manager feeds it the measured rate and a clock, and tests feed it a fake clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from modelyard.errors import ConfigError


@dataclass(frozen=True)
class AutoscalePolicy:
    min_replicas: int
    max_replicas: int
    target: float  # invocations per replica per minute
    scale_out_cooldown: float = 60.0  # seconds
    scale_in_cooldown: float = 60.0
    tolerance: float = 0.1  # no scale-in while the load is within 10% below the target
    window: float = 60.0  # seconds of traffic the invocation rate is measured over

    def __post_init__(self) -> None:
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ConfigError(
                f"autoscaling min {self.min_replicas}, max {self.max_replicas}: need "
                "1 <= min <= max",
                hint="e.g. --autoscale 2,10,750 (min, max, target invocations/replica/minute)",
            )
        if not (math.isfinite(self.target) and self.target > 0):
            raise ConfigError(f"the autoscaling target must be above 0, not {self.target}")
        if self.scale_out_cooldown < 0 or self.scale_in_cooldown < 0:
            raise ConfigError("autoscaling cooldowns must be 0 or more seconds")
        if not (math.isfinite(self.window) and self.window >= 1):
            raise ConfigError(f"the autoscaling window must be 1 second or more, not {self.window}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"the autoscaling tolerance must be in [0, 1), not {self.tolerance}")

    @classmethod
    def parse(cls, text: str, cooldown: float = 60.0, window: float = 60.0) -> AutoscalePolicy:
        """`MIN,MAX,TARGET` as the CLI takes it."""
        parts = [p.strip() for p in text.split(",")]
        try:
            low, high, target = int(parts[0]), int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise ConfigError(
                f"'{text}' is not MIN,MAX,TARGET",
                hint="e.g. 2,10,750: 2 to 10 replicas, 750 invocations per replica per minute",
            ) from None
        if len(parts) != 3:
            raise ConfigError(f"'{text}' has {len(parts)} parts, not MIN,MAX,TARGET")
        return cls(low, high, target, cooldown, cooldown, window=window)


@dataclass(frozen=True)
class ScalingState:
    replicas: int
    last_scale_out: float | None = None  # when (clock seconds) replicas were last added
    last_scale_in: float | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int  # what there should be now (== state.replicas: no change)
    reason: str

    def changes(self, state: ScalingState) -> bool:
        return self.replicas != state.replicas


def decide(
    policy: AutoscalePolicy, state: ScalingState, per_replica_per_minute: float, now: float
) -> Decision:
    """How many replicas there should be, given the observed load per replica."""
    current = state.replicas
    if current < policy.min_replicas or current > policy.max_replicas:
        bounded = min(max(current, policy.min_replicas), policy.max_replicas)
        return Decision(
            bounded, f"{current} replicas is outside {policy.min_replicas}..{policy.max_replicas}"
        )
    load = max(0.0, per_replica_per_minute) * current  # invocations per minute in all
    needed = max(1, math.ceil(load / policy.target - 1e-9))
    wanted = min(max(needed, policy.min_replicas), policy.max_replicas)
    observed = f"{per_replica_per_minute:.0f}/replica/min (target {policy.target:g})"
    if wanted > current:
        since = _since(state.last_scale_out, now)
        if since < policy.scale_out_cooldown:
            wait = policy.scale_out_cooldown - since
            return Decision(current, f"{observed}: would add replicas, cooling down {wait:.0f}s")
        return Decision(wanted, f"{observed}: {current} -> {wanted} replicas")
    if wanted < current:
        if per_replica_per_minute > policy.target * (1 - policy.tolerance):
            return Decision(current, f"{observed}: within the tolerance, keeping {current}")
        last_change = max(state.last_scale_out or -math.inf, state.last_scale_in or -math.inf)
        since = _since(None if last_change == -math.inf else last_change, now)
        if since < policy.scale_in_cooldown:
            wait = policy.scale_in_cooldown - since
            return Decision(current, f"{observed}: would remove replicas, cooling down {wait:.0f}s")
        return Decision(wanted, f"{observed}: {current} -> {wanted} replicas")
    return Decision(current, f"{observed}: {current} replicas fit")


def apply(state: ScalingState, decision: Decision, now: float) -> ScalingState:
    """The state after carrying out a decision."""
    if decision.replicas > state.replicas:
        return ScalingState(decision.replicas, now, state.last_scale_in)
    if decision.replicas < state.replicas:
        return ScalingState(decision.replicas, state.last_scale_out, now)
    return state


def _since(when: float | None, now: float) -> float:
    return math.inf if when is None else now - when


class InvocationWindow:
    """Invocations counted over the last `seconds`, in one-second buckets (a sliding minute)."""

    def __init__(self, seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self._buckets: deque[tuple[int, int]] = deque()  # (whole second, count)
        self._total = 0
        self.started = clock()

    def record(self, count: int = 1) -> None:
        second = int(self.clock())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + count)
        else:
            self._buckets.append((second, count))
        self._total += count
        self._expire()

    def per_minute(self) -> float:
        """The rate over the window (over the time since start while the window is not full)."""
        self._expire()
        elapsed = min(self.seconds, max(1.0, self.clock() - self.started))
        return self._total * 60.0 / elapsed

    def _expire(self) -> None:
        oldest = int(self.clock() - self.seconds)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._total -= self._buckets.popleft()[1]
