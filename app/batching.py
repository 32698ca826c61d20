"""Dynamic batching for the fast path: concurrent requests of the same size run as one network call.

On a GPU one forward pass over 8 images costs little more than over 1, so requests that
arrive within ``max_wait_ms`` of each other with the same image size (same runner, dtype
and device) are stacked, each with its own style-weight row, run once, and split again.
Only identical sizes are grouped: padding would change every instance-norm statistic, so
grouping by exact size is what lets each sample get exactly the result it would get alone.

One thread runs the network: request threads hand it their tensors and wait. The first
request of a batch waits at most ``max_wait_ms`` for company (a lone request pays only
that); a full batch goes at once. With ``max_batch`` 1 the batcher is bypassed entirely.
"""

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from model.runner import Runner

BatchObserver = Callable[[int], None]


@dataclass
class _Request:
    runner: Runner
    image: torch.Tensor  # (1, 3, H, W)
    weights: torch.Tensor  # (1, n_styles)
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None

    def key(self) -> tuple:
        return (id(self.runner), tuple(self.image.shape[1:]), self.image.dtype, self.image.device)


class Batcher:
    """``batcher(runner, image, weights)`` has the meaning of ``runner(image, weights)`` for one image."""

    def __init__(self, max_batch: int, max_wait_ms: float, observe: BatchObserver | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._observe = observe
        self._inbox: queue.Queue[_Request | None] = queue.Queue()
        self._held: list[_Request] = []  # taken from the inbox while filling a batch of another size
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def __call__(self, runner: Runner, image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[0] != 1 or weights.shape[0] != 1:
            raise ValueError(f"the batcher takes one image at a time, got images {tuple(image.shape)}")
        if self.max_batch == 1:
            result = runner(image, weights)
            if self._observe is not None:
                self._observe(1)
            return result
        request = _Request(runner, image, weights)
        self._ensure_thread()
        self._inbox.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        """Stop the network thread once the requests already handed in are done."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._inbox.put(None)
            thread.join()

    # -- the network thread ------------------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="cinstyle-batcher", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._held.pop(0) if self._held else self._inbox.get()
            if first is None:
                return
            key = first.key()
            same = [r for r in self._held if r.key() == key][: self.max_batch - 1]
            self._held = [r for r in self._held if all(r is not s for s in same)]
            batch, others = [first, *same], []
            deadline = time.monotonic() + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                (batch if item.key() == key else others).append(item)  # other sizes go in a later batch
            self._held.extend(others)
            self._run(batch)
            if stop:
                while self._held:
                    self._run([self._held.pop(0)])
                return

    def _run(self, batch: list[_Request]) -> None:
        try:
            images = torch.cat([r.image for r in batch]) if len(batch) > 1 else batch[0].image
            weights = torch.cat([r.weights for r in batch]) if len(batch) > 1 else batch[0].weights
            results = batch[0].runner(images, weights)
            for index, request in enumerate(batch):
                request.result = results[index : index + 1]
        except BaseException as exc:  # every waiter learns what went wrong
            for request in batch:
                request.error = exc
        finally:
            if self._observe is not None:
                self._observe(len(batch))
            for request in batch:
                request.done.set()


class BatchedRunner:
    """A runner whose single-image calls go through a `Batcher`; everything else (batches, the norm
    statistics tiled inference asks for) goes to ``inner`` as it is."""

    def __init__(self, inner: Runner, batcher: Batcher) -> None:
        self.inner = inner
        self.batcher = batcher
        self.device, self.dtype, self.n_styles = inner.device, inner.dtype, inner.n_styles

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if image.shape[0] != 1:
            return self.inner(image, style_weights)
        return self.batcher(self.inner, image, style_weights)

    def __getattr__(self, name: str):  # norm_stats, run_with_stats, receptive_radius, ...
        return getattr(self.inner, name)
