"""The fast path's stages: one request's decoding overlaps another's network time, and no more than
``limit + codec_slots`` requests hold decoded pixels at once (the rest wait holding only their bytes)."""

import threading
import time

import anyio
import pytest

from app.concurrency import InferenceGate
from app.errors import OverloadedError
from app.metrics import Metrics


def run_requests(gate: InferenceGate, count: int, codec_limiter_size: int, network_blocks_until=None):
    """``count`` requests through ``gate.run_stages``; returns the event log (stage, request index)."""
    log: list[tuple[str, int]] = []
    lock = threading.Lock()

    def note(event: str, index: int) -> None:
        with lock:
            log.append((event, index))

    async def main() -> None:
        limiter = anyio.CapacityLimiter(codec_limiter_size)

        async def one(index: int) -> None:
            def decode() -> int:
                note("decode", index)
                return index

            def infer(decoded: int) -> int:
                note("network-start", index)
                if network_blocks_until is not None:
                    assert network_blocks_until(index, log), f"request {index}'s network gave up waiting"
                note("network-end", index)
                return decoded * 10

            def encode(decoded: int, result: int) -> int:
                note("encode", index)
                return result + decoded

            assert await gate.run_stages(decode, infer, encode, limiter) == index * 11

        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, index)
                await anyio.sleep(0.01)  # arrive in order

    anyio.run(main)
    return log


def test_the_next_request_decodes_while_the_network_runs():
    gate = InferenceGate(limit=1, max_waiting=8, metrics=Metrics(), codec_slots=1)

    def wait_for_second_decode(index: int, log: list) -> bool:
        if index != 0:
            return True
        deadline = time.monotonic() + 10
        while ("decode", 1) not in log:  # request 1 must be decoding while request 0 is on the network
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    log = run_requests(gate, 2, codec_limiter_size=1, network_blocks_until=wait_for_second_decode)
    assert log.index(("decode", 1)) < log.index(("network-end", 0))
    assert gate.peak == 1  # never two on the network


def test_decoded_pixels_are_bounded_to_limit_plus_codec_slots():
    gate = InferenceGate(limit=1, max_waiting=8, metrics=Metrics(), codec_slots=1)
    holding = []
    most = [0]
    lock = threading.Lock()
    original_run_stages = gate.run_stages

    async def counting(decode, infer, encode, limiter, gone=None):
        def counted_decode():
            with lock:
                holding.append(1)
                most[0] = max(most[0], len(holding))
            return decode()

        def counted_encode(decoded, result):
            try:
                return encode(decoded, result)
            finally:
                with lock:
                    holding.pop()

        return await original_run_stages(counted_decode, infer, counted_encode, limiter, gone)

    gate.run_stages = counting  # type: ignore[method-assign]

    def slow_network(index: int, log: list) -> bool:
        time.sleep(0.05)
        return True

    log = run_requests(gate, 6, codec_limiter_size=4, network_blocks_until=slow_network)
    assert most[0] == 2, most  # 1 on the network + 1 decoded beside it, never more
    assert sorted(i for event, i in log if event == "encode") == list(range(6))


def test_a_full_line_is_refused_before_anything_is_decoded():
    gate = InferenceGate(limit=1, max_waiting=0, metrics=Metrics(), codec_slots=0)
    decoded = []

    async def main() -> None:
        release = anyio.Event()
        limiter = anyio.CapacityLimiter(1)

        async def blocker() -> None:
            await gate.run(lambda: anyio.from_thread.run(release.wait))

        async with anyio.create_task_group() as group:
            group.start_soon(blocker)
            await anyio.sleep(0.05)
            with pytest.raises(OverloadedError, match="busy"):
                await gate.run_stages(lambda: decoded.append(1), lambda d: d, lambda d, r: r, limiter)
            release.set()

    anyio.run(main)
    assert decoded == []


def test_two_large_requests_never_hold_pixels_together_while_small_ones_pass():
    gate = InferenceGate(limit=2, max_waiting=8, metrics=Metrics(), codec_slots=2)
    holding: list[str] = []
    most_large = [0]
    lock = threading.Lock()

    async def main() -> None:
        limiter = anyio.CapacityLimiter(4)

        async def one(kind: str) -> None:
            def decode() -> str:
                with lock:
                    holding.append(kind)
                    most_large[0] = max(most_large[0], holding.count("large"))
                return kind

            def infer(decoded: str) -> str:
                time.sleep(0.05)
                return decoded

            def encode(decoded: str, result: str) -> str:
                with lock:
                    holding.remove(kind)
                return result

            assert await gate.run_stages(decode, infer, encode, limiter, large=kind == "large") == kind

        async with anyio.create_task_group() as group:
            for kind in ("large", "large", "small", "large", "small", "small"):
                group.start_soon(one, kind)

    anyio.run(main)
    assert most_large[0] == 1 and holding == []
    assert gate.peak == 2  # the small ones used the second slot meanwhile
