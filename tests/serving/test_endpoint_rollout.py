"""The rollout state machine, driven by a fake clock: shares and events of every strategy,
rollbacks on breaches and failures, the ready timeout, odd observations, and JSON persistence."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import ConfigError
from modelyard.serving.endpoint.rollout import (
    Observation,
    RolloutPlan,
    RolloutState,
    Step,
    advance,
    start,
    stats_since,
)

TICK = 0.5  # the supervisor advances about twice a second


def healthy(now: float, ready: bool = True, **traffic: object) -> Observation:
    values: dict[str, object] = {"new_requests": 100, "new_errors": 0, "new_p99_ms": 20.0}
    values.update(traffic)
    return Observation(now, ready, None, **values)  # type: ignore[arg-type]


@dataclass
class Run:
    """A rollout driven tick by tick, recording every step that carried an event."""

    plan: RolloutPlan
    now: float = 1000.0
    state: RolloutState = field(init=False)
    log: list[tuple[float, tuple[float, float], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = start(self.plan, self.now, new_variant="v4")

    def tick(self, observation: Observation | None = None) -> Step:
        step = advance(self.plan, self.state, observation or healthy(self.now))
        assert step.weights == step.state.weights
        if step.event is not None:
            self.log.append((step.state.phase_started, step.weights, step.event))
        else:  # nothing changed, so nothing to apply or persist
            assert step.state == self.state
        self.state = step.state
        return step

    def until_done(self, limit: float = 10_000.0) -> None:
        deadline = self.now + limit
        while not self.state.done:
            assert self.now < deadline, f"the rollout did not end: {self.state}"
            self.tick()
            self.now += TICK

    def until_share(self, share: float) -> None:
        deadline = self.now + 10_000.0
        while not (self.state.phase == "baking" and self.state.new_percent == share):
            assert self.now < deadline and not self.state.done, self.state
            self.tick()
            self.now += TICK


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            RolloutPlan("all_at_once", bake_seconds=60),
            [
                (
                    (0, 100),
                    "all at once: 100% of traffic to v4 for 60s before retiring the old variant",
                ),
                ((0, 100), "completed: v4 takes all traffic"),
            ],
        ),
        (
            RolloutPlan("canary", canary_percent=10, bake_seconds=60),
            [
                ((90, 10), "canary: 10% of traffic to v4 for 60s"),
                ((0, 100), "canary: 100% of traffic to v4 for 60s before retiring the old variant"),
                ((0, 100), "completed: v4 takes all traffic"),
            ],
        ),
        (
            RolloutPlan("linear", linear_step_percent=25, bake_seconds=30),
            [
                ((75, 25), "linear: 25% of traffic to v4 for 30s"),
                ((50, 50), "linear: 50% of traffic to v4 for 30s"),
                ((25, 75), "linear: 75% of traffic to v4 for 30s"),
                ((0, 100), "linear: 100% of traffic to v4 for 30s before retiring the old variant"),
                ((0, 100), "completed: v4 takes all traffic"),
            ],
        ),
        (
            RolloutPlan("linear", linear_step_percent=40, bake_seconds=10),
            [
                ((60, 40), "linear: 40% of traffic to v4 for 10s"),
                ((20, 80), "linear: 80% of traffic to v4 for 10s"),
                ((0, 100), "linear: 100% of traffic to v4 for 10s before retiring the old variant"),
                ((0, 100), "completed: v4 takes all traffic"),
            ],
        ),
    ],
    ids=["all_at_once", "canary", "linear25", "linear40"],
)
def test_each_strategy_walks_its_shares_in_order_one_bake_apart(
    plan: RolloutPlan, expected: list[tuple[tuple[float, float], str]]
) -> None:
    run = Run(plan)
    # not ready yet: all traffic stays on the old variant, nothing to log
    for _ in range(10):
        assert run.tick(healthy(run.now, ready=False)).weights == (100, 0)
        run.now += TICK
    ready_at = run.now
    run.until_done()
    assert [(weights, event) for _, weights, event in run.log] == expected
    # each step began at the first tick once the previous one had baked for bake_seconds
    times = [when for when, _, _ in run.log]
    assert times[0] == ready_at
    for earlier, later in itertools.pairwise(times):
        assert plan.bake_seconds <= later - earlier < plan.bake_seconds + TICK
    assert run.state.phase == "completed"
    assert run.state.reason == f"v4 takes all traffic after {times[-1] - 1000:.0f}s"
    # final: further observations, even alarming ones, change nothing
    for observation in (healthy(run.now + 1), healthy(run.now + 2, new_errors=100)):
        assert advance(plan, run.state, observation) == Step(run.state, (0, 100), None)


def test_traffic_is_judged_from_the_start_of_the_current_step() -> None:
    run = Run(RolloutPlan("canary", bake_seconds=60))
    assert stats_since(run.state) == 1000.0
    run.now = 1002.0
    run.tick()
    assert stats_since(run.state) == 1002.0  # the canary step began
    run.now = 1062.0
    run.tick()
    assert run.state.new_percent == 100
    assert stats_since(run.state) == 1062.0  # the 100% step: the canary's traffic no longer counts


BAD = {"new_requests": 20, "new_errors": 10}


@pytest.mark.parametrize(
    ("strategy", "share"),
    [
        ("all_at_once", 100),
        ("canary", 10),
        ("canary", 100),
        ("linear", 25),
        ("linear", 50),
        ("linear", 100),
    ],
)
def test_an_error_breach_at_any_share_rolls_everything_back(strategy: str, share: float) -> None:
    run = Run(RolloutPlan(strategy, bake_seconds=60))  # type: ignore[arg-type]
    run.until_share(share)
    # half-way through the bake a healthy step holds; the breach then rolls back at once
    run.now += 30
    assert run.tick().event is None
    step = run.tick(healthy(run.now, **BAD))
    assert step.weights == (100, 0)
    assert step.state.phase == "rolled_back" and step.state.done
    assert step.event == "rolled back: v4 error rate 50.0% (10 of 20) > 5.0%"
    assert step.state.reason == "v4 error rate 50.0% (10 of 20) > 5.0%"
    # rolled back is final: a healthy, ready new variant does not bring traffic back
    assert advance(run.plan, step.state, healthy(run.now + 100)) == Step(step.state, (100, 0), None)


def test_a_breach_in_the_last_step_is_judged_before_moving_on() -> None:
    run = Run(RolloutPlan("canary", bake_seconds=60))
    run.until_share(10)
    # the bake is over, but the step's traffic breached: roll back rather than go to 100%
    run.now = run.state.phase_started + 60
    step = run.tick(healthy(run.now, **BAD))
    assert step.state.phase == "rolled_back"
    assert step.weights == (100, 0)


def test_thresholds_are_judged_only_on_min_requests() -> None:
    plan = RolloutPlan("canary", min_requests=10, bake_seconds=60)
    run = Run(plan)
    run.until_share(10)
    # 9 errors of 9 requests: too few to judge, so the canary bakes on and passes
    assert run.tick(healthy(run.now, new_requests=9, new_errors=9)).event is None
    run.now = run.state.phase_started + 60
    assert run.tick(healthy(run.now, new_requests=9, new_errors=9)).weights == (0, 100)
    # 10 of 10 is enough
    step = run.tick(healthy(run.now + 1, new_requests=10, new_errors=10))
    assert step.event == "rolled back: v4 error rate 100.0% (10 of 10) > 5.0%"


def test_an_error_rate_at_the_threshold_is_not_a_breach() -> None:
    run = Run(RolloutPlan("all_at_once", max_error_rate=0.05))
    run.until_share(100)
    assert run.tick(healthy(run.now, new_requests=100, new_errors=5)).event is None
    step = run.tick(healthy(run.now, new_requests=100, new_errors=6))
    assert step.event == "rolled back: v4 error rate 6.0% (6 of 100) > 5.0%"


def test_a_p99_breach_rolls_back_and_gives_the_numbers() -> None:
    plan = RolloutPlan("canary", max_p99_ms=200)
    run = Run(plan)
    run.until_share(10)
    assert run.tick(healthy(run.now, new_p99_ms=200.0)).event is None  # at the limit: fine
    assert run.tick(healthy(run.now, new_p99_ms=None)).event is None  # no latency known yet
    assert run.tick(healthy(run.now, new_requests=5, new_p99_ms=900.0)).event is None  # too few
    step = run.tick(healthy(run.now, new_requests=20, new_p99_ms=350.0))
    assert step.event == "rolled back: v4 p99 latency 350.0 ms > 200 ms (20 requests)"
    assert step.weights == (100, 0)


def test_p99_is_not_checked_without_a_limit_and_both_breaches_are_named() -> None:
    run = Run(RolloutPlan("all_at_once"))
    run.until_share(100)
    assert run.tick(healthy(run.now, new_p99_ms=10_000.0)).event is None
    both = Run(RolloutPlan("all_at_once", max_p99_ms=100))
    both.until_share(100)
    step = both.tick(healthy(both.now, new_requests=20, new_errors=10, new_p99_ms=150.0))
    assert step.event == (
        "rolled back: v4 error rate 50.0% (10 of 20) > 5.0% and "
        "v4 p99 latency 150.0 ms > 100 ms (20 requests)"
    )


def test_a_new_variant_not_ready_in_time_is_rolled_back() -> None:
    run = Run(RolloutPlan("canary", ready_timeout=120))
    run.now = 1119.5
    assert run.tick(healthy(run.now, ready=False)).event is None
    run.now = 1120.0
    step = run.tick(healthy(run.now, ready=False))
    assert step.state.phase == "rolled_back"
    assert step.weights == (100, 0)
    assert step.event == "rolled back: v4 not ready within 120s"


def test_a_new_variant_ready_just_in_time_goes_ahead() -> None:
    run = Run(RolloutPlan("canary", ready_timeout=120))
    run.now = 1120.0  # ready and timed out at once: it is ready, so it gets its canary
    assert run.tick(healthy(run.now, ready=True)).weights == (90, 10)


def test_traffic_numbers_while_waiting_are_not_judged() -> None:
    # the new variant gets no traffic before it is ready: whatever is counted is not its own
    run = Run(RolloutPlan("canary", max_p99_ms=100))
    run.now += 1
    bad = healthy(run.now, ready=False, new_requests=50, new_errors=50, new_p99_ms=900.0)
    assert run.tick(bad).event is None
    assert run.state.phase == "waiting_ready"


@pytest.mark.parametrize("ready", [False, True])
def test_a_failure_while_waiting_rolls_back_at_once(ready: bool) -> None:
    run = Run(RolloutPlan("linear"))
    run.now += 1
    step = run.tick(Observation(run.now, ready, "crash loop: 3 restarts in 60s", 0, 0, None))
    assert step.state.phase == "rolled_back"
    assert step.weights == (100, 0)
    assert step.event == "rolled back: v4 failed: crash loop: 3 restarts in 60s"


def test_a_failure_while_baking_rolls_back_even_without_traffic() -> None:
    run = Run(RolloutPlan("linear"))
    run.until_share(50)
    step = run.tick(Observation(run.now, False, "replicas exit with code 1", 0, 0, None))
    assert step.event == "rolled back: v4 failed: replicas exit with code 1"
    assert step.weights == (100, 0)


@pytest.mark.parametrize(
    ("plan", "shares"),
    [
        (RolloutPlan("all_at_once", bake_seconds=0), [100, 100]),
        (RolloutPlan("canary", canary_percent=5, bake_seconds=0), [5, 100, 100]),
        (RolloutPlan("linear", linear_step_percent=50, bake_seconds=0), [50, 100, 100]),
    ],
)
def test_a_zero_bake_still_passes_each_share_once(plan: RolloutPlan, shares: list[float]) -> None:
    state = start(plan, 0.0, new_variant="v4")
    seen = []
    for _ in range(len(shares)):  # the clock does not move: one step per advance
        step = advance(plan, state, healthy(0.0))
        assert step.event is not None
        seen.append(step.weights[1])
        state = step.state
    assert seen == shares
    assert state.phase == "completed"


def test_a_clock_going_back_restarts_the_bake_instead_of_stalling() -> None:
    run = Run(RolloutPlan("canary", bake_seconds=60))
    run.until_share(10)
    began = run.state.phase_started
    run.now = began + 50
    run.tick()
    run.now = began - 3600  # an hour back
    step = run.tick()
    assert step.event == "the clock went back to 3600s before this step began: the bake restarts"
    assert step.weights == (90, 10)
    assert stats_since(step.state) == run.now
    # a full bake from the new time, not from an hour in the future
    run.now += 59.5
    assert run.tick().event is None
    run.now += 0.5
    assert run.tick().weights == (0, 100)


def test_a_clock_going_back_restarts_the_ready_timeout() -> None:
    run = Run(RolloutPlan("canary", ready_timeout=120))
    run.now = 900.0
    step = run.tick(healthy(run.now, ready=False))
    assert (
        step.event
        == "the clock went back to 100s before the rollout began: the wait for readiness restarts"
    )
    run.now = 1019.5
    assert run.tick(healthy(run.now, ready=False)).event is None
    run.now = 1020.0
    assert run.tick(healthy(run.now, ready=False)).state.phase == "rolled_back"


def test_odd_observations_are_treated_sanely() -> None:
    run = Run(RolloutPlan("canary", bake_seconds=60, min_requests=10))
    run.until_share(10)
    held = run.state
    # negative counts are no traffic; a NaN p99 is no latency; a NaN clock moves nothing
    assert run.tick(healthy(run.now, new_requests=-5, new_errors=-1)).event is None
    assert run.tick(healthy(run.now, new_p99_ms=math.nan)).event is None
    assert run.tick(healthy(math.nan)).event is None
    assert run.tick(healthy(math.inf)).event is None
    assert run.state == held
    # more errors than requests: at least that many requests happened, all of them failed
    step = run.tick(healthy(run.now, new_requests=3, new_errors=12))
    assert step.event == "rolled back: v4 error rate 100.0% (12 of 12) > 5.0%"


def test_an_unknown_clock_still_rolls_back_on_trouble() -> None:
    run = Run(RolloutPlan("canary"))
    run.until_share(10)
    began = run.state.phase_started
    step = run.tick(Observation(math.nan, True, None, 20, 10, None))
    assert step.state.phase == "rolled_back"
    assert step.state.phase_started == began  # the last finite time known is kept
    json.dumps(step.state.to_json(), allow_nan=False)


def test_plan_and_state_survive_a_json_round_trip() -> None:
    plan = RolloutPlan("linear", 12.5, 33.3, 0.5, 0.01, 250.0, 3, 30.0)
    assert RolloutPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    run = Run(plan)
    states = [run.state]
    run.until_share(33.3)
    states.append(run.state)
    run.until_done()
    states.append(run.state)
    rolled = advance(plan, states[1], Observation(run.now, True, "oom", 0, 0, None)).state
    for state in [*states, rolled]:
        text = json.dumps(state.to_json(), allow_nan=False)
        assert RolloutState.from_json(json.loads(text)) == state
    assert [s.phase for s in states] == ["waiting_ready", "baking", "completed"]
    assert rolled.phase == "rolled_back" and rolled.reason == "v4 failed: oom"


def test_stored_json_from_other_versions_loads_and_garbage_is_refused() -> None:
    assert RolloutPlan.from_json({}) == RolloutPlan()
    loaded = RolloutPlan.from_json({"strategy": "canary", "min_requests": 5.0, "future": 1})
    assert loaded == RolloutPlan("canary", min_requests=5)
    old = RolloutState.from_json(
        {"phase": "baking", "new_percent": 10, "phase_started": 5, "started": 1}
    )
    assert old == RolloutState("baking", 10.0, 5.0, 1.0, None)
    with pytest.raises(ConfigError, match="no valid phase"):
        RolloutState.from_json({"phase": "exploded", "new_percent": 0})
    with pytest.raises(ConfigError, match="invalid started, new_percent"):
        RolloutState.from_json(
            {"phase": "baking", "new_percent": 150, "phase_started": 1, "started": "x"}
        )
    with pytest.raises(ConfigError, match="--canary-percent"):
        RolloutPlan.from_json({"canary_percent": "ten"})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"strategy": "blue_green"}, "--strategy 'blue_green' is not a rollout strategy"),
        ({"canary_percent": 0}, "--canary-percent 0 must be in (0, 100)"),
        ({"canary_percent": 100}, "--canary-percent 100 must be in (0, 100)"),
        ({"canary_percent": math.nan}, "--canary-percent nan must be in (0, 100)"),
        ({"linear_step_percent": 0}, "--linear-step-percent 0 must be in (0, 100]"),
        ({"linear_step_percent": 101}, "--linear-step-percent 101 must be in (0, 100]"),
        ({"bake_seconds": -1}, "--bake-seconds -1 must be 0 or more"),
        ({"bake_seconds": math.inf}, "--bake-seconds inf must be 0 or more"),
        ({"max_error_rate": 1.5}, "--max-error-rate 1.5 must be in [0, 1]"),
        ({"max_error_rate": -0.1}, "--max-error-rate -0.1 must be in [0, 1]"),
        ({"max_p99_ms": 0}, "--max-p99-ms 0 must be above 0"),
        ({"min_requests": 0}, "--min-requests 0 must be a whole number of 1 or more"),
        ({"min_requests": 2.5}, "--min-requests 2.5 must be a whole number of 1 or more"),
        ({"ready_timeout": 0}, "--ready-timeout 0 must be above 0"),
    ],
)
def test_invalid_plans_name_the_flag_and_the_value(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RolloutPlan(**values)  # type: ignore[arg-type]
    assert caught.value.message == message
    assert caught.value.hint


def test_the_edges_of_the_valid_ranges_are_accepted() -> None:
    RolloutPlan(linear_step_percent=100, bake_seconds=0, max_error_rate=0, min_requests=1)
    RolloutPlan(max_error_rate=1, canary_percent=99.9, max_p99_ms=0.1)


@pytest.mark.parametrize(
    ("plan", "text"),
    [
        (
            RolloutPlan("canary", max_p99_ms=200),
            "canary 10% for 60s, then 100% for 60s; roll back above 5% errors or p99 > 200 ms",
        ),
        (RolloutPlan(bake_seconds=300), "all at once 100% for 300s; roll back above 5% errors"),
        (
            RolloutPlan("linear", bake_seconds=30, max_error_rate=0.01),
            "linear 25%, 50%, 75% for 30s each, then 100% for 30s; roll back above 1% errors",
        ),
        (
            RolloutPlan("linear", linear_step_percent=5, bake_seconds=0.5),
            "linear +5% every 0.5s, then 100% for 0.5s; roll back above 5% errors",
        ),
    ],
)
def test_describe_says_what_will_happen(plan: RolloutPlan, text: str) -> None:
    assert plan.describe() == text


def test_many_small_linear_steps_reach_exactly_100_without_drift() -> None:
    plan = RolloutPlan("linear", linear_step_percent=0.1, bake_seconds=0)
    state = start(plan, 0.0)
    shares = []
    while not state.done:
        state = advance(plan, state, healthy(0.0)).state
        shares.append(state.new_percent)
    assert len(shares) == 1001  # 0.1 .. 99.9, 100, then completed
    assert shares[-2] == 100.0
    assert all(b - a > 0.0999 for a, b in itertools.pairwise(shares[:-1]))


# property: whatever the plan and the observations, the invariants hold

plans = st.builds(
    RolloutPlan,
    strategy=st.sampled_from(["all_at_once", "canary", "linear"]),
    canary_percent=st.floats(0.01, 99.99),
    linear_step_percent=st.floats(1.0, 100.0),
    bake_seconds=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    max_error_rate=st.floats(0.0, 1.0),
    max_p99_ms=st.none() | st.floats(1.0, 1000.0),
    min_requests=st.integers(1, 20),
    ready_timeout=st.sampled_from([0.5, 2.0, 10.0]),
)
observations = st.tuples(
    st.one_of(st.floats(-5.0, 5.0), st.just(math.nan)),  # time step, sometimes backwards
    st.booleans(),
    st.none() | st.none() | st.none() | st.just("crash loop"),
    st.integers(-5, 60),
    st.integers(-5, 30),
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=300, deadline=None)
@given(plan=plans, ticks=st.lists(observations, max_size=60))
def test_invariants_hold_for_any_observations(
    plan: RolloutPlan, ticks: list[tuple[float, bool, str | None, int, int, float | None]]
) -> None:
    now = 100.0
    state = start(plan, now, new_variant="v9")
    for delta, ready, failure, requests, errors, p99 in ticks:
        now = now + delta if math.isfinite(delta) else now
        clock = delta if math.isnan(delta) else now  # sometimes the clock is NaN
        step = advance(plan, state, Observation(clock, ready, failure, requests, errors, p99))
        old, new = step.weights
        assert old + new == 100 and 0 <= new <= 100
        assert step.weights == step.state.weights
        if state.done:  # final states are absorbing
            assert step == Step(state, state.weights, None)
        if step.state.phase == "rolled_back":
            assert new == 0
        else:  # the new share only grows, until a rollback
            assert new >= state.new_percent
        # every change is explained, and nothing is said when nothing changed
        assert (step.event is not None) == (step.state != state)
        text = json.dumps(step.state.to_json(), allow_nan=False)
        assert RolloutState.from_json(json.loads(text)) == step.state
        state = step.state
