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
D = TypeVar("D")
R = TypeVar("R")


class InferenceGate:
    """``limit`` network slots, and a line of at most ``max_waiting`` requests in front of them.

    `run_stages` runs a request as decode -> network -> encode: the codecs in their own bounded pool
    (``codec_limiter``), so one request's decoding and encoding overlap another's network time. At most
    ``limit + codec_slots`` requests are past the line at once, so decoded pixels in memory stay bounded
    however many clients wait (the waiting ones hold only their upload's bytes). A *large* request (one
    stylized in tiles) also takes the one large-image place first: two print-size images never hold their
    pixels at once, while small requests keep flowing past.
    """

    def __init__(self, limit: int, max_waiting: int, metrics: Metrics, codec_slots: int = 0) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self.metrics = metrics
        self._slots = anyio.CapacityLimiter(limit)
        self._admitted = anyio.CapacityLimiter(limit + codec_slots)
        self._large = anyio.CapacityLimiter(1)
        self.waiting = 0
        self.in_flight = 0
        self.peak = 0
        metrics.concurrency_limit.set(limit)

    def retry_after_s(self) -> int:
        return max(1, round((self.waiting + self.in_flight) / self.limit))

    async def _enter(self, gone: Callable[[], Awaitable[bool]] | None, large: bool = False) -> None:
        """Take a place past the line (503 if the line is full); the caller releases ``_admitted`` (and
        ``_large`` when ``large``)."""
        if self.waiting >= self.max_waiting and self._admitted.available_tokens < 1:
            self.metrics.rejected.inc()
            raise OverloadedError(
                f"the server is busy: {self.in_flight} inferences running and {self.waiting} waiting "
                f"(limit {self.max_waiting} waiting); retry in a moment",
                retry_after_s=self.retry_after_s(),
            )
        self.waiting += 1
        self.metrics.waiting.set(self.waiting)
        try:
            if large:
                await self._large.acquire()
            try:
                await self._admitted.acquire()
            except BaseException:
                if large:
                    self._large.release()
                raise
        finally:
            self.waiting -= 1
            self.metrics.waiting.set(self.waiting)
        try:
            if gone is not None and await gone():
                raise ClientGoneError("the client disconnected while its request waited; not run")
        except BaseException:
            self._leave(large)
            raise

    def _leave(self, large: bool) -> None:
        self._admitted.release()
        if large:
            self._large.release()

    async def _on_network(self, work: Callable[[], T]) -> T:
        async with self._slots:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.metrics.in_flight.set(self.in_flight)
            self.metrics.in_flight_peak.set(self.peak)
            try:
                return await anyio.to_thread.run_sync(work)
            finally:
                self.in_flight -= 1
                self.metrics.in_flight.set(self.in_flight)

    async def run(self, work: Callable[[], T], gone: Callable[[], Awaitable[bool]] | None = None) -> T:
        """Run ``work()`` in a thread once a slot is free; ``gone()`` says whether the client left."""
        await self._enter(gone)
        try:
            return await self._on_network(work)
        finally:
            self._leave(False)

    async def run_stages(
        self,
        decode: Callable[[], D],
        infer: Callable[[D], R],
        encode: Callable[[D, R], T],
        codec_limiter: anyio.CapacityLimiter,
        gone: Callable[[], Awaitable[bool]] | None = None,
        large: bool = False,
    ) -> T:
        """decode() in the codec pool, infer(decoded) on a network slot, encode(decoded, result) in the codec pool."""
        await self._enter(gone, large)
        try:
            decoded = await anyio.to_thread.run_sync(decode, limiter=codec_limiter)
            result = await self._on_network(lambda: infer(decoded))
            return await anyio.to_thread.run_sync(lambda: encode(decoded, result), limiter=codec_limiter)
        finally:
            self._leave(large)
