"""The rollout of a new variant on an endpoint: a pure state machine of traffic shares.

Deploying a new model version to an endpoint that already serves one shifts traffic from the old
variant to the new, like SageMaker's deployment guardrails (blue/green):

- `all_at_once`: 100% to the new variant as soon as it is ready;
- `canary`: `canary_percent` first, then 100%;
- `linear`: `linear_step_percent` more at each step, up to 100%.

Each traffic step is watched for `bake_seconds`; at 100% there is a final bake before the old
variant is retired. During a bake the new variant's own traffic (counted from `stats_since()`, the
start of the current step, so a breach is judged on the current share) is checked against the
error-rate and p99 thresholds; a breach, a failure of the new variant, or a new variant that is
not ready within `ready_timeout` rolls back: all traffic returns to the old variant.

The supervisor calls `advance()` about twice a second with what it observes, applies the weights
it returns, logs the event, and persists the state (`to_json`). Nothing here reads a clock or does
I/O, so tests drive it with a fake clock; odd observations (negative counts, a clock going back,
NaN) never raise.

The CLI flags are the field names with dashes (`--canary-percent`, `--bake-seconds`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, cast, get_args

from modelyard.errors import ConfigError

Strategy = Literal["all_at_once", "canary", "linear"]
Phase = Literal["waiting_ready", "baking", "completed", "rolled_back"]

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
PHASES: tuple[Phase, ...] = get_args(Phase)
_LABELS: dict[Strategy, str] = {
    "all_at_once": "all at once",
    "canary": "canary",
    "linear": "linear",
}
_FINAL: frozenset[Phase] = frozenset({"completed", "rolled_back"})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class RolloutPlan:
    """How traffic moves to the new variant and when it rolls back (stored with the rollout)."""

    strategy: Strategy = "all_at_once"
    canary_percent: float = 10.0  # canary: the new variant's share during the first bake
    linear_step_percent: float = 25.0  # linear: the share added at each step
    bake_seconds: float = 60.0  # each step is watched this long; also the final bake at 100%
    max_error_rate: float = 0.05  # server errors / requests of the new variant
    max_p99_ms: float | None = None  # the new variant's p99 latency; None: not checked
    min_requests: int = 10  # judge a threshold only with at least this many requests
    ready_timeout: float = 120.0  # the new variant must have its replicas ready within this

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"--strategy '{self.strategy}' is not a rollout strategy",
                hint="use one of: " + ", ".join(STRATEGIES),
            )
        self._check("canary_percent", lambda v: 0 < v < 100, "must be in (0, 100)", "e.g. 10")
        self._check("linear_step_percent", lambda v: 0 < v <= 100, "must be in (0, 100]", "e.g. 25")
        self._check("bake_seconds", lambda v: 0 <= v < math.inf, "must be 0 or more", "e.g. 60")
        self._check("max_error_rate", lambda v: 0 <= v <= 1, "must be in [0, 1]", "e.g. 0.05")
        if self.max_p99_ms is not None:
            self._check("max_p99_ms", lambda v: 0 < v < math.inf, "must be above 0", "e.g. 200")
        self._check("ready_timeout", lambda v: 0 < v < math.inf, "must be above 0", "e.g. 120")
        count = self.min_requests
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
            raise ConfigError(
                f"--min-requests {count!r} must be a whole number of 1 or more",
                hint="e.g. 10: thresholds are judged only on at least 10 requests",
            )

    def _check(self, name: str, ok: Callable[[float], bool], rule: str, example: str) -> None:
        value = getattr(self, name)
        # `ok` is only called on real numbers; NaN fails every comparison, so it is rejected too
        if not (_is_number(value) and ok(value)):
            raise ConfigError(f"{_flag(name)} {value!r} {rule}", hint=f"{_flag(name)} {example}")

    def describe(self) -> str:
        """One line for humans, e.g. 'canary 10% for 60s, then 100% for 60s; roll back above 5%
        errors or p99 > 200 ms'."""
        bake = _seconds(self.bake_seconds)
        # the shares before 100%; at most 6 are looked at, since a long ramp is summarised
        before: list[float] = []
        share = _next_share(self, 0.0)
        while share < 100 and len(before) < 6:
            before.append(share)
            share = _next_share(self, share)
        label = _LABELS[self.strategy]
        if not before:
            steps = f"{label} 100% for {bake}"
        elif len(before) == 1:
            steps = f"{label} {_percent(before[0])} for {bake}, then 100% for {bake}"
        elif len(before) <= 5:
            listed = ", ".join(_percent(s) for s in before)
            steps = f"{label} {listed} for {bake} each, then 100% for {bake}"
        else:
            step = _percent(self.linear_step_percent)
            steps = f"{label} +{step} every {bake}, then 100% for {bake}"
        limits = f"roll back above {_percent(self.max_error_rate * 100)} errors"
        if self.max_p99_ms is not None:
            limits += f" or p99 > {self.max_p99_ms:g} ms"
        return f"{steps}; {limits}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutPlan:
        """The plan from `to_json()`; missing keys take the defaults, unknown keys are ignored
        (so plans stored by an older or newer modelyard still load)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a rollout plan must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        # JSON has one number type: 10 stored for 10.0 is fine, 10.0 for min_requests too
        if isinstance(values.get("min_requests"), float) and values["min_requests"].is_integer():
            values["min_requests"] = int(values["min_requests"])
        return cls(**values)


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout is; persisted by the supervisor after every change."""

    phase: Phase
    new_percent: float  # the new variant's current share (0..100)
    phase_started: float  # clock seconds when this phase or traffic step began
    started: float  # when the rollout began
    reason: str | None = None  # why it ended (completed: summary; rolled back: the breach)
    new_variant: str = "the new variant"  # its name, for the events ("v4")

    @property
    def done(self) -> bool:
        return self.phase in _FINAL

    @property
    def weights(self) -> tuple[float, float]:
        """(old %, new %) for this state: what to apply, e.g. after loading it from the DB."""
        return (100.0 - self.new_percent, self.new_percent)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutState:
        if not isinstance(data, Mapping) or data.get("phase") not in PHASES:
            raise ConfigError(
                f"stored rollout state {data!r} has no valid phase",
                hint="the phases are: " + ", ".join(PHASES),
            )
        numbers = {k: _finite(data.get(k)) for k in ("new_percent", "phase_started", "started")}
        share = numbers["new_percent"]
        bad = [k for k, v in numbers.items() if v is None]
        if share is not None and not 0 <= share <= 100:
            bad.append("new_percent")
        if bad:
            raise ConfigError(f"stored rollout state {dict(data)!r}: invalid {', '.join(bad)}")
        reason = data.get("reason")
        return cls(
            phase=cast(Phase, data["phase"]),
            new_percent=cast(float, share),
            phase_started=cast(float, numbers["phase_started"]),
            started=cast(float, numbers["started"]),
            reason=None if reason is None else str(reason),
            new_variant=str(data.get("new_variant", "the new variant")),
        )


@dataclass(frozen=True)
class Observation:
    """What the supervisor sees of the new variant at `now` (its own clock, in seconds)."""

    now: float
    new_ready: bool  # the new variant has all its wanted replicas ready
    new_failure: str | None  # e.g. its replicas crash-loop: roll back at once
    new_requests: int  # the new variant's traffic since `stats_since(state)`
    new_errors: int
    new_p99_ms: float | None


@dataclass(frozen=True)
class Step:
    """The outcome of one `advance()`."""

    state: RolloutState
    weights: tuple[float, float]  # (old %, new %) to apply now; always sums to 100
    event: str | None  # a line for the endpoint's event log when something changed


def start(plan: RolloutPlan, now: float, *, new_variant: str = "the new variant") -> RolloutState:
    """A rollout that waits for the new variant's replicas to be ready; no traffic yet."""
    return RolloutState("waiting_ready", 0.0, now, now, None, new_variant)


def stats_since(state: RolloutState) -> float:
    """From when the supervisor counts the new variant's traffic for the next `advance()`: the
    start of the current traffic step, so a breach is judged on the current share's traffic."""
    return state.phase_started


def advance(plan: RolloutPlan, state: RolloutState, observation: Observation) -> Step:
    """The next state given what the supervisor observes; `event` says what changed and why."""
    if state.done:
        return Step(state, state.weights, None)
    now = _finite(observation.now)
    trouble = _trouble(plan, state, observation)
    if trouble:
        return _roll_back(state, now, trouble)
    if now is None:  # no usable time: nothing that depends on time can happen
        return Step(state, state.weights, None)
    if state.phase == "waiting_ready" and observation.new_ready:
        return _shift(plan, state, _next_share(plan, 0.0), now)
    if not (state.phase_started <= now and state.started <= now):
        return _clock_went_back(state, now)
    if state.phase == "waiting_ready":
        if now - state.started >= plan.ready_timeout:
            wait = _seconds(plan.ready_timeout)
            return _roll_back(state, now, f"{state.new_variant} not ready within {wait}")
        return Step(state, state.weights, None)
    if now - state.phase_started < plan.bake_seconds:
        return Step(state, state.weights, None)
    if state.new_percent >= 100:
        name = state.new_variant
        reason = f"{name} takes all traffic after {_seconds(now - state.started)}"
        done = RolloutState("completed", 100.0, now, state.started, reason, name)
        return Step(done, done.weights, f"completed: {name} takes all traffic")
    return _shift(plan, state, _next_share(plan, state.new_percent), now)


def _trouble(plan: RolloutPlan, state: RolloutState, observation: Observation) -> str | None:
    """Why the rollout must roll back now (a failure, or a breach while baking), or None."""
    name = state.new_variant
    if observation.new_failure is not None:
        detail = str(observation.new_failure).strip()
        return f"{name} failed: {detail}" if detail else f"{name} failed"
    if state.phase != "baking":  # no traffic reaches the new variant before it is ready
        return None
    return _breach(plan, observation, name)


def _clock_went_back(state: RolloutState, now: float) -> Step:
    # how long this step has been watched is unknown, so its bake (or the ready timeout)
    # restarts now rather than waiting for the clock to catch up, however far it went back
    back = _finite(max(state.phase_started, state.started) - now)
    started = state.started if state.started <= now else now
    rebased = replace(state, phase_started=now, started=started)
    if state.phase == "waiting_ready":
        what, began = "the wait for readiness", "the rollout began"
    else:
        what, began = "the bake", "this step began"
    when = "" if back is None else f" to {_seconds(back)} before {began}"
    return Step(rebased, rebased.weights, f"the clock went back{when}: {what} restarts")


def _shift(plan: RolloutPlan, state: RolloutState, share: float, now: float) -> Step:
    """Start baking at the new variant's next share."""
    moved = RolloutState("baking", share, now, state.started, None, state.new_variant)
    event = (
        f"{_LABELS[plan.strategy]}: {_percent(share)} of traffic to {state.new_variant} "
        f"for {_seconds(plan.bake_seconds)}"
    )
    if share >= 100:
        event += " before retiring the old variant"
    return Step(moved, moved.weights, event)


def _roll_back(state: RolloutState, now: float | None, reason: str) -> Step:
    when = state.phase_started if now is None else now
    back = RolloutState("rolled_back", 0.0, when, state.started, reason, state.new_variant)
    return Step(back, back.weights, f"rolled back: {reason}")


def _breach(plan: RolloutPlan, observation: Observation, name: str) -> str | None:
    """Why the new variant's traffic in this step breaches a threshold, or None."""
    errors = _count(observation.new_errors)
    # more errors than requests cannot be: there were at least as many requests as errors
    requests = max(_count(observation.new_requests), errors)
    if requests < plan.min_requests:
        return None
    found = []
    rate = errors / requests
    if rate > plan.max_error_rate:
        found.append(
            f"{name} error rate {rate:.1%} ({errors} of {requests}) > {plan.max_error_rate:.1%}"
        )
    p99 = observation.new_p99_ms
    if plan.max_p99_ms is not None and _is_number(p99) and cast(float, p99) > plan.max_p99_ms:
        found.append(
            f"{name} p99 latency {p99:.1f} ms > {plan.max_p99_ms:g} ms ({requests} requests)"
        )
    return " and ".join(found) or None


def _finite(value: object) -> float | None:
    """`value` as a float if it is a finite number (not a bool, string or NaN), else None."""
    if _is_number(value) and math.isfinite(cast(float, value)):
        return float(cast(float, value))
    return None


def _count(value: object) -> int:
    """A request or error count as observed, made sane: not a number or negative counts as 0."""
    number = _finite(value)
    return 0 if number is None else max(0, int(number))


def _next_share(plan: RolloutPlan, share: float) -> float:
    """The new variant's share after `share` (0: the first step); 100 is the last."""
    if plan.strategy == "linear":
        step = plan.linear_step_percent
        # the k-th step is k * step, not a running sum, so many small steps do not drift
        return min(100.0, (round(share / step) + 1) * step)
    if plan.strategy == "canary" and share <= 0:
        return float(plan.canary_percent)
    return 100.0


def _percent(value: float) -> str:
    return f"{value:g}%"


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if float(value).is_integer() or value >= 100 else f"{value:.3g}s"
