"""Where the endpoint's proxy sends a request, and what each variant's traffic looked like.

Pure bookkeeping, no I/O: the supervisor tells the `Router` the variants' weights and replicas
(`Backend`s) as they change, the proxy asks it for a backend per request (`pick`) and records each
answer in the variant's `VariantStats`, which rollouts and autoscaling read.

- A variant is chosen by smooth weighted round robin (nginx's algorithm): deterministic, so the
  shares are exact over any run of picks instead of only on average, which keeps a 5% canary at
  5% even at low traffic. Weights are scaled to integers once, when set, so the arithmetic per
  pick is exact whatever scale the caller uses.
- A variant without a usable replica (all draining, or all already tried for this request) is
  left out of the rotation for that pick, so its share goes to the others: a request is never
  refused while some variant can answer it.
- Within the variant, the replica with the fewest requests in flight; ties go round robin, so
  sequential requests still spread over every replica (and warm every connection pool).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ConfigError

# Scaled integer weight of the heaviest variant: fine enough that any ratio a user types is kept
# to a millionth, small enough that the sums stay cheap small ints.
_WEIGHT_SCALE = 1_000_000


@dataclass(eq=False)
class Backend:
    """One replica as the proxy sees it. Compared and hashed by identity: the same object is
    shared by the supervisor (which drains and stops it) and the proxy (which counts in flight)."""

    key: str  # unique, e.g. "v3/1" (variant/slot)
    variant: str
    host: str
    port: int
    in_flight: int = 0  # requests forwarded and not yet answered (the proxy maintains it)
    draining: bool = False  # no new requests; the supervisor stops it once in_flight == 0
    prefix: str = ""  # put before every path: a replica behind a shared proxy (Ray Serve's)


@dataclass(frozen=True)
class TrafficStats:
    """What a rollout judges a variant by, over some recent time."""

    requests: int  # invocations answered (any status)
    errors: int  # of those, server errors (see `is_error`)
    p50_ms: float | None  # latency percentiles, None without requests
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def is_error(status: int) -> bool:
    """Whether an answer counts against the variant: a 5xx, except 503, which replicas answer
    when they shed load (their guards: capacity, not a fault). A 4xx is the client's fault. The
    proxy's own 502/503/504 about a variant are recorded with `error=True` explicitly."""
    return status >= 500 and status != 503


# Latency histogram: log-scale bins of ratio 1.05 from 10 us (a percentile is reported as its
# bin's geometric middle, within 2.5% of the truth), sparse per 1-second bucket.
_MIN_SECONDS = 1e-5
_LOG_RATIO = math.log(1.05)
_MAX_BIN = 400  # 1.05**400 * 10 us: hours; anything slower is clamped


def _bin(seconds: float) -> int:
    if seconds <= _MIN_SECONDS:
        return 0
    return min(_MAX_BIN, int(math.log(seconds / _MIN_SECONDS) / _LOG_RATIO))


def _bin_ms(index: int) -> float:
    return _MIN_SECONDS * math.exp((index + 0.5) * _LOG_RATIO) * 1000.0


class _Second:
    __slots__ = ("errors", "latency", "requests", "second")

    def __init__(self, second: int):
        self.second = second
        self.requests = 0
        self.errors = 0
        self.latency: dict[int, int] = {}  # bin -> count


class VariantStats:
    """A variant's answers in 1-second buckets over a sliding window (600 s by default)."""

    def __init__(self, window: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self.created = clock()
        self._seconds: deque[_Second] = deque()

    def record(self, status: int, seconds: float, error: bool | None = None) -> None:
        """One answered invocation (O(1): on the hot path). `error` overrides `is_error(status)`
        for the proxy's own answers about the variant (502/503/504)."""
        now = int(self.clock())
        buckets = self._seconds
        if buckets and buckets[-1].second == now:
            bucket = buckets[-1]
        else:
            bucket = _Second(now)
            buckets.append(bucket)
            self._expire(now)
        bucket.requests += 1
        if error is None:
            error = is_error(status)
        if error:
            bucket.errors += 1
        index = _bin(seconds)
        latency = bucket.latency
        latency[index] = latency.get(index, 0) + 1

    def since(self, start: float) -> TrafficStats:
        """The answers recorded at clock time >= start (to the second), within the window."""
        self._expire(int(self.clock()))
        first = math.floor(start)
        requests = errors = 0
        merged: dict[int, int] = {}
        for bucket in self._seconds:
            if bucket.second < first:
                continue
            requests += bucket.requests
            errors += bucket.errors
            for index, count in bucket.latency.items():
                merged[index] = merged.get(index, 0) + count
        if not requests:
            return TrafficStats(0, 0, None, None)
        return TrafficStats(
            requests,
            errors,
            _percentile(merged, requests, 0.5),
            _percentile(merged, requests, 0.99),
        )

    def last(self, seconds: float) -> TrafficStats:
        return self.since(self.clock() - seconds)

    def per_minute(self, seconds: float) -> float:
        """Invocations per minute over the last `seconds` (over the time since this was created
        when that is shorter; at least 1 s, so a first request is not a huge rate)."""
        now = self.clock()
        self._expire(int(now))
        oldest = math.floor(now - seconds)
        count = sum(b.requests for b in self._seconds if b.second > oldest)
        elapsed = max(1.0, min(seconds, now - self.created))
        return count * 60.0 / elapsed

    def _expire(self, now: int) -> None:
        oldest = now - self.window
        buckets = self._seconds
        while buckets and buckets[0].second <= oldest:
            buckets.popleft()


def _percentile(histogram: Mapping[int, int], total: int, quantile: float) -> float:
    rank = max(1, math.ceil(quantile * total))  # the smallest value with `rank` values <= it
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(_bin_ms(index), 4)
    raise AssertionError("the histogram holds fewer values than its total")  # pragma: no cover


class _Variant:
    """A variant's routing state: its replicas and its place in the weighted rotation."""

    __slots__ = ("backends", "current", "name", "next", "weight")

    def __init__(self, name: str):
        self.name = name
        self.weight = 0  # scaled integer weight
        self.current = 0  # smooth WRR's running weight
        self.backends: list[Backend] = []
        self.next = 0  # where the round robin among equally loaded replicas starts


class Router:
    """Variants' weights and replicas, and the choice of a replica per request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._variants: dict[str, _Variant] = {}
        self._weights: dict[str, float] = {}
        self._weighted: list[_Variant] = []  # those with weight > 0, in a stable order
        self._stats: dict[str, VariantStats] = {}

    # -- what the supervisor changes -------------------------------------------------------------

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Every variant's weight (any scale; a variant left out gets no traffic)."""
        for name, weight in weights.items():
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
                raise ConfigError(
                    f"the traffic weight of variant '{name}' must be a number >= 0, not {weight!r}",
                    hint="e.g. 90 and 10, or 0.9 and 0.1: weights are relative",
                )
        new = {name: float(weight) for name, weight in weights.items()}
        if new == self._weights:
            return  # unchanged: keep the rotation where it is
        self._weights = new
        heaviest = max(new.values(), default=0.0)
        for variant in self._variants.values():
            variant.weight = 0
        for name, weight in new.items():
            if weight > 0:
                variant = self._variant(name)
                # a tiny positive weight still gets some traffic rather than rounding to none
                variant.weight = max(1, round(weight / heaviest * _WEIGHT_SCALE))
        for variant in self._variants.values():
            variant.current = 0  # start the new rotation afresh: exact shares from here on
        self._weighted = [v for v in self._variants.values() if v.weight > 0]

    def set_backends(self, variant: str, backends: Sequence[Backend]) -> None:
        """Replace the variant's replicas with these (the very objects: the caller drains them
        and reads their in_flight)."""
        state = self._variant(variant)
        state.backends = list(backends)
        if state.next >= len(state.backends):
            state.next = 0

    def remove_variant(self, variant: str) -> None:
        self._variants.pop(variant, None)
        self._weights.pop(variant, None)
        self._stats.pop(variant, None)
        self._weighted = [v for v in self._weighted if v.name != variant]

    # -- the hot path ----------------------------------------------------------------------------

    def pick(self, exclude: Collection[Backend] = ()) -> Backend | None:
        """The replica for the next request: a variant by smooth weighted round robin among those
        with a usable replica, then its least loaded replica. None if no replica can answer."""
        total = 0
        best: _Variant | None = None
        for variant in self._weighted:
            if not _usable(variant.backends, exclude):
                continue  # its share goes to the others for this pick
            variant.current += variant.weight
            total += variant.weight
            if best is None or variant.current > best.current:
                best = variant
        if best is None:
            return None
        best.current -= total
        return _least_loaded(best, exclude)

    def pick_any(self, exclude: Collection[Backend] = ()) -> Backend | None:
        """A replica for a request that is not an invocation (its OpenAPI document, its version),
        without moving the weighted rotation: the least loaded of the heaviest usable variant."""
        for variant in sorted(self._weighted, key=lambda v: -v.weight):
            if _usable(variant.backends, exclude):
                return _least_loaded(variant, exclude)
        return None

    def available(self) -> bool:
        """Whether a variant with traffic has a replica not draining (a load balancer's probe)."""
        return any(_usable(v.backends, ()) for v in self._weighted)

    # -- what others read ------------------------------------------------------------------------

    def stats(self, variant: str) -> VariantStats:
        """The variant's traffic statistics (kept until `remove_variant`)."""
        stats = self._stats.get(variant)
        if stats is None:
            stats = self._stats[variant] = VariantStats(clock=self.clock)
        return stats

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def backends(self, variant: str) -> list[Backend]:
        state = self._variants.get(variant)
        return list(state.backends) if state is not None else []

    def variants(self) -> list[str]:
        """Every variant known: weighted, with replicas, or with statistics."""
        return list(dict.fromkeys([*self._weights, *self._variants, *self._stats]))

    def in_flight(self, variant: str | None = None) -> int:
        """Requests forwarded and not yet answered, of one variant or of all."""
        if variant is not None:
            state = self._variants.get(variant)
            return sum(b.in_flight for b in state.backends) if state is not None else 0
        return sum(b.in_flight for v in self._variants.values() for b in v.backends)

    def _variant(self, name: str) -> _Variant:
        state = self._variants.get(name)
        if state is None:
            state = self._variants[name] = _Variant(name)
        return state


def _usable(backends: list[Backend], exclude: Collection[Backend]) -> bool:
    for backend in backends:
        if not backend.draining and (not exclude or backend not in exclude):
            return True
    return False


def _least_loaded(variant: _Variant, exclude: Collection[Backend]) -> Backend:
    """The usable replica with the fewest in flight; among equals, the first from `next` on."""
    backends = variant.backends
    count = len(backends)
    start = variant.next
    chosen = -1
    fewest = 0
    for step in range(count):
        index = (start + step) % count
        backend = backends[index]
        if backend.draining or (exclude and backend in exclude):
            continue
        if chosen < 0 or backend.in_flight < fewest:
            chosen, fewest = index, backend.in_flight
            if fewest == 0:
                break  # nobody has fewer than none
    variant.next = (chosen + 1) % count
    return backends[chosen]
