"""What the fast path runs: a *runner* maps a batch of images and style weights to stylized images.

Everything above `model` holds a `Runner` and never learns which engine is behind
it: the eager `TorchRunner` (CPU or CUDA) and the onnxruntime export
(`model.onnx_backend.OnnxNetwork`) both implement it, and both are also a
`StatsRunner` (they can report the statistics every norm layer sees, and run with
given ones), which is what `model.tiling.TilingRunner` needs to wrap them: the
service's runner is a tiling runner around one of the two. `as_runner` lets
callers that hold a bare `TransformerNet` (training, evaluation, the CLI) pass it anyway.
"""

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from model.transformer import TransformerNet, receptive_radius

BACKENDS = ("torch", "onnx")


@runtime_checkable
class Runner(Protocol):
    """Images (B, 3, H, W) in [0, 1] and style weights (B, n_styles) -> stylized (B, 3, H, W)."""

    device: torch.device  # where the inputs must be
    dtype: torch.dtype  # what dtype the inputs must have
    n_styles: int  # columns of the style weights

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class StatsRunner(Runner, Protocol):
    """A runner whose norm layers can use given statistics: what tiled inference needs."""

    receptive_radius: int  # input pixels an output pixel depends on, each way

    def norm_stats(self, image: torch.Tensor, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var), each (B, total norm width): what every norm layer sees in a plain pass of ``image``."""
        ...

    def run_with_stats(
        self, image: torch.Tensor, style_weights: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """Like calling the runner, but every norm layer normalises with the given statistics."""
        ...


class TorchRunner:
    """The eager network, gradient-free."""

    def __init__(self, network: TransformerNet) -> None:
        self.network = network.eval()
        parameter = next(network.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.n_styles = network.config.n_styles
        self.receptive_radius = receptive_radius(network.config)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return self.network(image, style_weights)

    @torch.inference_mode()
    def norm_stats(self, image: torch.Tensor, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.norm_stats(image, style_weights)

    @torch.inference_mode()
    def run_with_stats(
        self, image: torch.Tensor, style_weights: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        return self.network.forward_with_stats(image, style_weights, mean, var)


def as_runner(network: "TransformerNet | Runner") -> Runner:
    """A `TransformerNet` wrapped as a `TorchRunner`; a runner as it is."""
    if isinstance(network, TransformerNet):
        return TorchRunner(network)
    if not isinstance(network, Runner):
        raise TypeError(f"expected a TransformerNet or a Runner, got {type(network).__name__}")
    return network


def make_base_runner(
    network: TransformerNet, backend: str, threads: int | None = None, keep_memory_pixels: int | None = None
) -> StatsRunner:
    """The whole-image runner of ``backend`` for ``network`` (the onnx export is built here: ~1 s).
    ``keep_memory_pixels``: see `model.onnx_backend.OnnxNetwork` (None: its default)."""
    if backend == "torch":
        return TorchRunner(network)
    if backend == "onnx":
        from model.onnx_backend import KEEP_MEMORY_PIXELS, OnnxNetwork

        keep = KEEP_MEMORY_PIXELS if keep_memory_pixels is None else keep_memory_pixels
        return OnnxNetwork(network, threads=threads, keep_memory_pixels=keep)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def make_runner(
    network: TransformerNet,
    backend: str,
    threads: int | None = None,
    tile_side: int | None = None,
    stats_side: int | None = None,
    wrap: "Callable[[StatsRunner], StatsRunner] | None" = None,
    keep_memory_pixels: int | None = None,
) -> Runner:
    """What the service runs: ``backend``'s runner inside a `model.tiling.TilingRunner` (images larger than
    ``tile_side`` go through in tiles normalised with the statistics of a ``stats_side`` thumbnail).
    ``wrap`` puts something between the two (the service's request batcher). Call it off the event loop."""
    from model.tiling import DEFAULT_STATS_SIDE, DEFAULT_TILE_SIDE, TilingRunner

    base = make_base_runner(network, backend, threads, keep_memory_pixels)
    return TilingRunner(
        wrap(base) if wrap is not None else base,
        tile_side=tile_side or DEFAULT_TILE_SIDE,
        stats_side=stats_side or DEFAULT_STATS_SIDE,
    )
