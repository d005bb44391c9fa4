"""Adaptive micro-batching of concurrent requests, inside the server's event loop.

A model predicts 16 rows in barely more time than one, so when requests arrive together they
should share one call. Waiting for company costs latency, though, and a lone request must not
wait at all. The batcher therefore never sleeps by default: a request is queued and a flush is
scheduled for the next turn of the event loop. Requests that arrived in the same turn (a burst,
or those whose bytes came in while the previous batch was predicting, which is exactly when the
server is busy) join that flush. Under load, batches grow by themselves; idle, a request is
predicted alone, one loop turn after it arrived. `max_wait` (seconds) trades latency for bigger
batches; `max_rows` caps a batch.

Predicting runs in the loop itself: a batch takes well under a millisecond, less than handing it
to a thread and back would cost, and one prediction at a time is what a CPU-bound model can do
per process anyway (more processes scale it out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# predict(columns, rows) -> one output per row (a numpy array or a list)
PredictFunction = Callable[[Mapping[str, Sequence[Any]], int], Any]


@dataclass
class _Pending:
    columns: Mapping[str, Sequence[Any]]
    rows: int
    future: asyncio.Future[Any]


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    requests: int = 0
    largest: int = 0  # rows of the largest batch
    sizes: list[int] = field(default_factory=list)  # requests per batch, for tests (last 1,000)


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFunction,
        *,
        max_rows: int = 256,
        max_wait: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must be 0 or more")
        self.predict = predict
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.on_batch = on_batch  # (requests, rows) of each batch, e.g. for metrics
        self.stats = BatchStats()
        self._pending: list[_Pending] = []
        self._rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None

    async def submit(self, columns: Mapping[str, Sequence[Any]], rows: int) -> Any:
        """The predictions for these rows, predicted together with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._pending and self._rows + rows > self.max_rows:
            self._flush()  # this request would overfill the batch: send the others first
        self._pending.append(_Pending(columns, rows, future))
        self._rows += rows
        if self._rows >= self.max_rows:
            self._flush()
        elif self._scheduled is None:
            if self.max_wait > 0:
                self._scheduled = loop.call_later(self.max_wait, self._flush)
            else:
                self._scheduled = loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        pending, self._pending, rows, self._rows = self._pending, [], self._rows, 0
        pending = [p for p in pending if not p.future.cancelled()]  # clients that went away
        if not pending:
            return
        self._record(len(pending), rows)
        if len(pending) == 1:
            self._predict_alone(pending[0])
            return
        try:
            outputs = self.predict(_merged(pending), sum(p.rows for p in pending))
        except Exception:
            # One bad request must not fail the others: predict each alone, so that the error
            # reaches the request that caused it.
            for item in pending:
                self._predict_alone(item)
            return
        start = 0
        for item in pending:
            item.future.set_result(outputs[start : start + item.rows])
            start += item.rows

    def _predict_alone(self, item: _Pending) -> None:
        try:
            item.future.set_result(self.predict(item.columns, item.rows))
        except Exception as exc:
            item.future.set_exception(exc)

    def _record(self, requests: int, rows: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.requests += requests
        stats.rows += rows
        stats.largest = max(stats.largest, rows)
        stats.sizes.append(requests)
        del stats.sizes[:-1000]
        if self.on_batch is not None:
            self.on_batch(requests, rows)


def _merged(pending: Sequence[_Pending]) -> dict[str, list[Any]]:
    """One column mapping for the whole batch, each column concatenated in request order."""
    names = list(pending[0].columns)
    merged: dict[str, list[Any]] = {name: [] for name in names}
    for item in pending:
        for name in names:
            merged[name].extend(item.columns[name])
    return merged
