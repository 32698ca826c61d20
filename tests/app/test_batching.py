"""The fast path's dynamic batcher: concurrent same-size requests share one network call, and each sample
gets exactly the result it would get alone (its own style row, never a neighbour's)."""

import threading

import pytest
import torch

from app.batching import Batcher
from model.runner import TorchRunner
from tests.conftest import make_tiny_network


class CountingRunner(TorchRunner):
    """The real network, counting the batch sizes it is called with."""

    def __init__(self, network) -> None:
        super().__init__(network)
        self.calls: list[int] = []

    def __call__(self, image, style_weights):
        self.calls.append(image.shape[0])
        return super().__call__(image, style_weights)


def run_together(batcher: Batcher, runner, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Each input from its own thread, all released at once."""
    results: list[torch.Tensor | None] = [None] * len(inputs)
    errors: list[BaseException] = []
    start = threading.Barrier(len(inputs))

    def one(index: int) -> None:
        start.wait()
        try:
            results[index] = batcher(runner, *inputs[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


@pytest.fixture
def runner() -> CountingRunner:
    return CountingRunner(make_tiny_network(n_styles=3))


def test_a_batch_of_different_styles_gives_each_sample_its_own_result(runner):
    torch.manual_seed(1)
    weights = [torch.eye(3)[i : i + 1] for i in range(3)] + [torch.tensor([[0.5, 0.5, 0.0]]), torch.full((1, 3), 1 / 3)]
    inputs = [(torch.rand(1, 3, 24, 32), w) for w in weights]
    batch_sizes: list[int] = []
    batcher = Batcher(max_batch=8, max_wait_ms=500, observe=batch_sizes.append)
    try:
        results = run_together(batcher, runner, inputs)
    finally:
        batcher.close()
    assert max(runner.calls) > 1, runner.calls  # they really shared calls
    assert sum(batch_sizes) == len(inputs) and sorted(runner.calls) == sorted(batch_sizes)
    for (image, style), result in zip(inputs, results, strict=True):
        alone = runner.network(image, style)
        assert result.shape == alone.shape
        torch.testing.assert_close(result, alone, rtol=0, atol=1e-5)
    # and a neighbour's row would have been visibly different: the check above can fail
    image, _ = inputs[0]
    assert (runner.network(image, weights[0]) - runner.network(image, weights[1])).abs().max() > 1e-2


def test_only_images_of_one_size_share_a_call(runner):
    sizes = [(24, 32), (32, 24), (24, 32), (32, 24), (24, 32), (16, 16)]
    inputs = [(torch.rand(1, 3, h, w), torch.eye(3)[i % 3 : i % 3 + 1]) for i, (h, w) in enumerate(sizes)]
    seen: list[tuple[int, int, int]] = []

    def recording(image, style_weights):
        seen.append((image.shape[0], image.shape[2], image.shape[3]))
        return runner(image, style_weights)

    batcher = Batcher(max_batch=8, max_wait_ms=300)
    try:
        results = run_together(batcher, recording, inputs)
    finally:
        batcher.close()
    assert sum(n for n, _, _ in seen) == len(inputs)
    assert max(n for n, _, _ in seen) > 1
    for (image, style), result in zip(inputs, results, strict=True):
        assert result.shape == image.shape
        torch.testing.assert_close(result, runner.network(image, style), rtol=0, atol=1e-5)


def test_max_batch_bounds_a_call_and_one_means_no_batching(runner):
    inputs = [(torch.rand(1, 3, 20, 20), torch.eye(3)[i % 3 : i % 3 + 1]) for i in range(7)]
    batcher = Batcher(max_batch=3, max_wait_ms=300)
    try:
        run_together(batcher, runner, inputs)
    finally:
        batcher.close()
    assert max(runner.calls) <= 3 and sum(runner.calls) == 7

    runner.calls.clear()
    single = Batcher(max_batch=1, max_wait_ms=300)
    run_together(single, runner, inputs)
    assert runner.calls == [1] * 7


def test_an_error_reaches_every_request_of_the_batch():
    def broken(image, weights):
        raise RuntimeError(f"out of memory for {image.shape[0]} images")

    batcher = Batcher(max_batch=4, max_wait_ms=300)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            run_together(batcher, broken, [(torch.rand(1, 3, 8, 8), torch.ones(1, 1)) for _ in range(3)])
        # and the batcher still works afterwards
        assert batcher(lambda image, weights: image * 2, torch.ones(1, 3, 4, 4), torch.ones(1, 1)).max() == 2
    finally:
        batcher.close()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError, match="max_wait_ms"):
        Batcher(max_batch=2, max_wait_ms=-1)
    batcher = Batcher(max_batch=2, max_wait_ms=1)
    with pytest.raises(ValueError, match="one image at a time"):
        batcher(lambda i, w: i, torch.rand(2, 3, 8, 8), torch.ones(2, 1))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(lambda i, w: i, torch.rand(1, 3, 8, 8), torch.ones(1, 1))
