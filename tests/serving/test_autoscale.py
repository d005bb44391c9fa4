"""The autoscaling policy on a fake clock, with scenario S2's numbers (target 750 invocations per
replica per minute, 2 to 10 replicas, 60 s cooldowns), and the sliding invocation window."""

from __future__ import annotations

import pytest

from modelyard.errors import ConfigError
from modelyard.serving.autoscale import (
    AutoscalePolicy,
    InvocationWindow,
    ScalingState,
    apply,
    decide,
)

S2 = AutoscalePolicy.parse("2,10,750", cooldown=60)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_load_over_the_target_adds_the_replicas_it_needs() -> None:
    state = ScalingState(2)
    decision = decide(S2, state, per_replica_per_minute=1500, now=0)  # 3000/min in all
    assert decision.replicas == 4 and "2 -> 4" in decision.reason
    assert decide(S2, state, per_replica_per_minute=760, now=0).replicas == 3  # ceil(1520/750)
    assert decide(S2, state, per_replica_per_minute=10_000, now=0).replicas == 10  # the max


def test_a_second_scale_out_waits_for_the_cooldown() -> None:
    state = apply(ScalingState(2), decide(S2, ScalingState(2), 1500, now=100), now=100)
    assert state == ScalingState(4, last_scale_out=100)
    held = decide(S2, state, per_replica_per_minute=1500, now=130)
    assert held.replicas == 4 and "cooling down 30s" in held.reason
    assert decide(S2, state, per_replica_per_minute=1500, now=160).replicas == 8


def test_scaling_in_waits_for_the_cooldown_after_any_change_and_keeps_the_minimum() -> None:
    state = ScalingState(8, last_scale_out=100)
    assert decide(S2, state, per_replica_per_minute=10, now=150).replicas == 8  # 50 s after
    decision = decide(S2, state, per_replica_per_minute=10, now=161)
    assert decision.replicas == 2  # what 80/min needs is 1: the minimum is 2
    state = apply(state, decision, now=161)
    assert state == ScalingState(2, last_scale_out=100, last_scale_in=161)


def test_no_scale_in_within_the_tolerance_below_the_target() -> None:
    state = ScalingState(4)
    # 4 x 700 = 2800/min would fit on 4 (ceil 3.73): 700 is within 10% of 750, keep 4
    assert decide(S2, state, per_replica_per_minute=700, now=0).replicas == 4
    # 4 x 500 = 2000/min: 3 replicas carry it at 667 each
    assert decide(S2, state, per_replica_per_minute=500, now=0).replicas == 3


def test_load_at_the_target_changes_nothing() -> None:
    decision = decide(S2, ScalingState(3), per_replica_per_minute=750, now=0)
    assert decision.replicas == 3 and not decision.changes(ScalingState(3))


def test_a_count_outside_the_bounds_is_brought_back_at_once() -> None:
    assert decide(S2, ScalingState(1), 0, now=0).replicas == 2
    assert decide(S2, ScalingState(12), 10_000, now=0).replicas == 10


def test_a_bounded_load_run_scales_out_then_back_in_after_cooldown() -> None:
    """Two minutes at 3,000 invocations/min, then idle: 2 -> 4 replicas, then back to 2."""
    clock = FakeClock(0)
    state = ScalingState(2)
    history = []
    for second in range(0, 400, 10):
        clock.now = second
        total = 3000 if second < 120 else 0
        decision = decide(S2, state, total / state.replicas, clock.now)
        state = apply(state, decision, clock.now)
        history.append(state.replicas)
    assert max(history) == 4 and history[0] == 4  # out at once
    assert history[-1] == 2  # back to the minimum
    first_in = history.index(2, 1)
    assert first_in * 10 >= 120  # not before the load stopped


def test_the_window_counts_the_last_minute() -> None:
    clock = FakeClock(0)
    window = InvocationWindow(60, clock=clock)
    for second in range(60):
        clock.now = second
        window.record(10)  # 10 a second: 600 a minute
    assert window.per_minute() == pytest.approx(600, rel=0.02)
    clock.now = 90  # half the window has gone by without calls
    assert window.per_minute() == pytest.approx(300, rel=0.05)
    clock.now = 200
    assert window.per_minute() == 0


def test_a_young_window_reports_the_rate_so_far() -> None:
    clock = FakeClock(0)
    window = InvocationWindow(60, clock=clock)
    clock.now = 10
    window.record(100)  # 100 in the first 10 s: 600 a minute, not 100
    assert window.per_minute() == pytest.approx(600)


@pytest.mark.parametrize("text", ["2,10", "a,b,c", "0,10,750", "5,2,750", "2,10,0", "2,10,750,1"])
def test_bad_policies_are_clear_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        AutoscalePolicy.parse(text)
