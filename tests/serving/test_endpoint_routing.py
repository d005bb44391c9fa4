"""The endpoint's router: smooth weighted round robin gives exact shares over any run of picks, a
variant without a usable replica gives its share away, weight 0 gets nothing, draining and
excluded replicas are skipped, the least loaded replica wins; and each variant's traffic
statistics (window, since, per minute, percentiles, what counts as an error) on a fake clock."""

from __future__ import annotations

from collections import Counter

import pytest

from modelyard.errors import ConfigError
from modelyard.serving.endpoint.routing import Backend, Router, TrafficStats, VariantStats


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def backends(variant: str, count: int = 1) -> list[Backend]:
    return [Backend(f"{variant}/{i}", variant, "127.0.0.1", 9000 + i) for i in range(count)]


def router(weights: dict[str, float], replicas: int = 1) -> Router:
    routed = Router()
    for variant in weights:
        routed.set_backends(variant, backends(variant, replicas))
    routed.set_weights(weights)
    return routed


def shares(routed: Router, picks: int) -> Counter[str]:
    chosen = [routed.pick() for _ in range(picks)]
    assert all(backend is not None for backend in chosen)
    return Counter(backend.variant for backend in chosen if backend is not None)


def test_80_20_is_exact_over_any_100_consecutive_picks() -> None:
    routed = router({"a": 80, "b": 20})
    sequence = [backend.variant for _ in range(300) if (backend := routed.pick()) is not None]
    for start in range(0, 200, 7):  # every window of 100, wherever it starts
        assert Counter(sequence[start : start + 100]) == {"a": 80, "b": 20}
    # smooth: the canary is spread out, never in a burst
    assert "bb" not in "".join(sequence)


def test_three_variants_and_any_weight_scale() -> None:
    assert shares(router({"a": 50, "b": 30, "c": 20}), 100) == {"a": 50, "b": 30, "c": 20}
    assert shares(router({"a": 0.5, "b": 0.3, "c": 0.2}), 100) == {"a": 50, "b": 30, "c": 20}
    assert shares(router({"a": 1, "b": 1, "c": 2}), 100) == {"a": 25, "b": 25, "c": 50}


def test_weight_zero_and_unweighted_variants_get_nothing() -> None:
    routed = router({"a": 1, "b": 0})
    routed.set_backends("c", backends("c"))  # replicas, but no weight at all
    assert shares(routed, 50) == {"a": 50}
    routed.set_weights({"a": 0, "b": 0})
    assert routed.pick() is None
    assert not routed.available()


def test_a_variant_without_a_usable_replica_gives_its_share_to_the_others() -> None:
    routed = router({"a": 80, "b": 20})
    [b] = routed.backends("b")
    b.draining = True
    assert shares(routed, 100) == {"a": 100}
    b.draining = False
    routed.set_backends("a", [])  # replicas of a all gone
    assert shares(routed, 10) == {"b": 10}
    routed.set_backends("b", [])
    assert routed.pick() is None


def test_draining_and_excluded_replicas_are_skipped() -> None:
    routed = router({"a": 1}, replicas=3)
    first, second, third = routed.backends("a")
    second.draining = True
    picked = {routed.pick() for _ in range(10)}
    assert picked == {first, third}
    assert routed.pick(exclude=[first]) is third
    assert routed.pick(exclude=(first, third)) is None
    assert routed.available()
    # a retry excludes what it tried: another variant answers rather than nobody
    both = router({"a": 99, "b": 1})
    [a] = both.backends("a")
    picked_b = both.pick(exclude=[a])
    assert picked_b is not None and picked_b.variant == "b"


def test_least_in_flight_wins_and_ties_go_round_robin() -> None:
    routed = router({"a": 1}, replicas=3)
    first, second, third = routed.backends("a")
    assert [routed.pick() for _ in range(6)] == [first, second, third] * 2
    first.in_flight, second.in_flight, third.in_flight = 3, 1, 2
    assert routed.pick() is second
    second.in_flight = 5
    assert routed.pick() is third
    assert routed.in_flight("a") == 10 and routed.in_flight() == 10
    assert routed.in_flight("nope") == 0


def test_the_same_backend_objects_are_kept_and_the_weights_read_back() -> None:
    routed = Router()
    mine = backends("a", 2)
    routed.set_backends("a", mine)
    routed.set_weights({"a": 3.0})
    assert routed.backends("a")[0] is mine[0] and routed.backends("a")[1] is mine[1]
    assert routed.weights() == {"a": 3.0}
    picked = routed.pick()
    assert picked is not None and any(picked is b for b in mine)
    routed.stats("a").record(200, 0.01)
    routed.remove_variant("a")
    assert routed.backends("a") == [] and routed.weights() == {} and routed.pick() is None
    assert routed.stats("a").since(0).requests == 0  # statistics went with the variant


def test_bad_weights_are_a_config_error() -> None:
    routed = Router()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError) as error:
            routed.set_weights({"a": bad})
        assert "'a'" in error.value.message


def test_changed_weights_start_a_fresh_rotation_with_exact_shares() -> None:
    routed = router({"a": 50, "b": 50})
    for _ in range(3):
        routed.pick()
    routed.set_weights({"a": 90, "b": 10})
    assert shares(routed, 100) == {"a": 90, "b": 10}
    routed.set_weights({"a": 90, "b": 10})  # the same again: the rotation goes on
    assert shares(routed, 100) == {"a": 90, "b": 10}


def test_errors_are_server_faults_only() -> None:
    stats = VariantStats(clock=FakeClock())
    for status in (200, 201, 400, 404, 413, 422, 429):
        stats.record(status, 0.001)
    assert stats.since(0).errors == 0  # the client's fault, or throttling
    stats.record(503, 0.001)  # a replica shedding load (its guards): capacity, not a fault
    assert stats.since(0).errors == 0
    stats.record(500, 0.001)
    stats.record(503, 0.001, error=True)  # the proxy's own "no replica" of this variant
    stats.record(502, 0.001)
    stats.record(504, 0.001)
    got = stats.since(0)
    assert got.requests == 12 and got.errors == 4
    assert got.error_rate == pytest.approx(4 / 12)
    assert TrafficStats(0, 0, None, None).error_rate == 0.0


def test_since_and_the_sliding_window() -> None:
    clock = FakeClock(1000.0)
    stats = VariantStats(window=600.0, clock=clock)
    stats.record(200, 0.010)
    clock.now = 1100.0
    stats.record(500, 0.020)
    stats.record(200, 0.030)
    assert stats.since(1000.0).requests == 3
    recent = stats.since(1050.0)
    assert (recent.requests, recent.errors) == (2, 1)
    assert stats.since(1100.5).requests == 2  # to the second: the bucket of 1100 counts
    assert stats.since(1101.0) == TrafficStats(0, 0, None, None)
    clock.now = 1650.0  # 1000 has left the 600 s window, 1100 has not
    assert stats.since(0).requests == 2
    clock.now = 1750.0
    assert stats.since(0).requests == 0


def test_latency_percentiles() -> None:
    clock = FakeClock()
    stats = VariantStats(clock=clock)
    for _ in range(99):
        stats.record(200, 0.010)
    stats.record(200, 1.0)  # one slow request of 100
    got = stats.since(0)
    assert got.p50_ms == pytest.approx(10.0, rel=0.05)
    assert got.p99_ms == pytest.approx(10.0, rel=0.05)  # 99% are at most 10 ms
    for _ in range(10):
        clock.now += 1
        stats.record(200, 1.0)
    slow = stats.since(0)
    assert slow.p99_ms == pytest.approx(1000.0, rel=0.05)
    assert stats.since(clock.now - 5).p50_ms == pytest.approx(1000.0, rel=0.05)
    stats.record(200, 0.0)  # zero and sub-resolution latencies are kept, not lost
    assert stats.since(clock.now).requests == 2


def test_per_minute() -> None:
    clock = FakeClock(1000.0)
    stats = VariantStats(clock=clock)
    assert stats.per_minute(60) == 0.0
    for _ in range(10):
        stats.record(200, 0.001)
    assert stats.per_minute(60) == pytest.approx(600.0)  # 10 in the first second (>= 1 s)
    clock.now = 1030.0
    assert stats.per_minute(60) == pytest.approx(20.0)  # 10 over the 30 s since creation
    clock.now = 1050.0
    for _ in range(5):
        stats.record(200, 0.001)
    assert stats.per_minute(60) == pytest.approx(18.0)  # 15 over the 50 s since creation
    assert stats.per_minute(10) == pytest.approx(30.0)  # 5 over the last 10 s
    clock.now = 1080.0
    assert stats.per_minute(60) == pytest.approx(5.0)  # the first 10 left the minute
    clock.now = 1200.0
    assert stats.per_minute(60) == 0.0
