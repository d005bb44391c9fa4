"""The micro-batcher: concurrent requests share one model call, a lone one is predicted alone at
once, a failing request does not fail the others, and batches respect their row cap."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from modelyard.serving.batching import MicroBatcher


class Doubler:
    """A model: 2 * x per row; it refuses negative values, as a model refusing its input."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, columns: Mapping[str, Sequence[Any]], rows: int) -> list[float]:
        values = list(columns["x"])
        assert len(values) == rows
        self.calls.append(rows)
        if any(v < 0 for v in values):
            raise ValueError("x must not be negative")
        return [2.0 * v for v in values]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_that_arrive_together_share_one_call() -> None:
    model = Doubler()

    async def main() -> list[Any]:
        batcher = MicroBatcher(model)
        return await asyncio.gather(*(batcher.submit({"x": [i, i + 0.5]}, 2) for i in range(16)))

    results = run(main())
    assert results == [[2.0 * i, 2.0 * i + 1.0] for i in range(16)]
    assert model.calls == [32]  # one call for 16 requests of 2 rows


def test_a_lone_request_is_predicted_alone_without_waiting_for_company() -> None:
    model = Doubler()

    async def main() -> tuple[list[float], list[float]]:
        batcher = MicroBatcher(model, max_wait=0.0)
        first = await batcher.submit({"x": [1.0]}, 1)
        second = await batcher.submit({"x": [2.0]}, 1)
        assert batcher.stats.sizes == [1, 1]
        return first, second

    assert run(main()) == ([2.0], [4.0])
    assert model.calls == [1, 1]


def test_a_failing_request_gets_its_error_and_the_others_their_predictions() -> None:
    model = Doubler()

    async def main() -> list[Any]:
        batcher = MicroBatcher(model)
        requests = [batcher.submit({"x": [v]}, 1) for v in (1.0, -1.0, 3.0)]
        return await asyncio.gather(*requests, return_exceptions=True)

    good, bad, other = run(main())
    assert good == [2.0] and other == [6.0]
    assert isinstance(bad, ValueError) and "negative" in str(bad)
    assert model.calls == [3, 1, 1, 1]  # the shared call failed: each was then predicted alone


def test_batches_are_capped_at_max_rows() -> None:
    model = Doubler()

    async def main() -> list[Any]:
        batcher = MicroBatcher(model, max_rows=4)
        return await asyncio.gather(*(batcher.submit({"x": [i, i]}, 2) for i in range(5)))

    results = run(main())
    assert results == [[2.0 * i, 2.0 * i] for i in range(5)]
    assert model.calls == [4, 4, 2]
    assert max(model.calls) <= 4


def test_max_wait_gathers_requests_that_arrive_one_after_the_other() -> None:
    model = Doubler()

    async def main() -> list[Any]:
        batcher = MicroBatcher(model, max_wait=60.0, max_rows=3)  # flushed by the cap, not time
        first = asyncio.ensure_future(batcher.submit({"x": [1.0]}, 1))
        await asyncio.sleep(0)  # a turn of the loop: without max_wait, `first` would go alone
        second = asyncio.ensure_future(batcher.submit({"x": [2.0]}, 1))
        await asyncio.sleep(0)
        assert model.calls == []  # still waiting for company
        third = batcher.submit({"x": [3.0]}, 1)
        return await asyncio.gather(first, second, third)

    assert run(main()) == [[2.0], [4.0], [6.0]]
    assert model.calls == [3]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        MicroBatcher(Doubler(), max_rows=0)
    with pytest.raises(ValueError, match="max_wait"):
        MicroBatcher(Doubler(), max_wait=-1)
