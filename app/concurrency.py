"""The fast-path gate: at most ``limit`` inferences at once, at most ``max_waiting`` in line.

Work runs in a worker thread (never on the event loop). A request that finds
the line full gets `OverloadedError` (503 + Retry-After) instead of waiting
without bound; one whose client has gone away while it waited is dropped
before it runs.
"""

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from app.errors import ClientGoneError, OverloadedError
from app.metrics import Metrics

T = TypeVar("T")


class InferenceGate:
    def __init__(self, limit: int, max_waiting: int, metrics: Metrics) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.metrics = metrics
        self._limiter = anyio.CapacityLimiter(limit)
        self.waiting = 0
        self.in_flight = 0
        self.peak = 0
        metrics.concurrency_limit.set(limit)

    def retry_after_s(self) -> int:
        return max(1, round((self.waiting + self.in_flight) / self.limit))

    async def run(self, work: Callable[[], T], gone: Callable[[], Awaitable[bool]] | None = None) -> T:
        """Run ``work()`` in a thread once a slot is free; ``gone()`` says whether the client left."""
        if self.waiting >= self.max_waiting and self._limiter.available_tokens < 1:
            self.metrics.rejected.inc()
            raise OverloadedError(
                f"the server is busy: {self.in_flight} inferences running and {self.waiting} waiting "
                f"(limit {self.max_waiting} waiting); retry in a moment",
                retry_after_s=self.retry_after_s(),
            )
        self.waiting += 1
        self.metrics.waiting.set(self.waiting)
        try:
            await self._limiter.acquire()
        finally:
            self.waiting -= 1
            self.metrics.waiting.set(self.waiting)
        try:
            if gone is not None and await gone():
                raise ClientGoneError("the client disconnected while its request waited; not run")
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.metrics.in_flight.set(self.in_flight)
            self.metrics.in_flight_peak.set(self.peak)
            try:
                return await anyio.to_thread.run_sync(work)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.set(self.in_flight)
        finally:
            self._limiter.release()
