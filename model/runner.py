"""What the fast path runs: a *runner* maps a batch of images and style weights to stylized images.

Everything above `model` holds a `Runner` and never learns which engine is behind
it: the eager `TorchRunner` (CPU or CUDA) and the onnxruntime export
(`model.onnx_backend.OnnxNetwork`) both implement it. `as_runner` lets callers
that hold a bare `TransformerNet` (training, evaluation, the CLI) pass it anyway.
"""

from typing import Protocol, runtime_checkable

import torch

from model.transformer import TransformerNet

BACKENDS = ("torch", "onnx")


@runtime_checkable
class Runner(Protocol):
    """Images (B, 3, H, W) in [0, 1] and style weights (B, n_styles) -> stylized (B, 3, H, W)."""

    device: torch.device  # where the inputs must be
    dtype: torch.dtype  # what dtype the inputs must have
    n_styles: int  # columns of the style weights

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor: ...


class TorchRunner:
    """The eager network, gradient-free."""

    def __init__(self, network: TransformerNet) -> None:
        self.network = network.eval()
        parameter = next(network.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.n_styles = network.config.n_styles

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return self.network(image, style_weights)


def as_runner(network: "TransformerNet | Runner") -> Runner:
    """A `TransformerNet` wrapped as a `TorchRunner`; a runner as it is."""
    if isinstance(network, TransformerNet):
        return TorchRunner(network)
    if not isinstance(network, Runner):
        raise TypeError(f"expected a TransformerNet or a Runner, got {type(network).__name__}")
    return network


def make_runner(network: TransformerNet, backend: str, threads: int | None = None) -> Runner:
    """The runner of ``backend`` for ``network`` (the onnx export is built here: ~1 s, call it off the event loop)."""
    if backend == "torch":
        return TorchRunner(network)
    if backend == "onnx":
        from model.onnx_backend import OnnxNetwork

        return OnnxNetwork(network, threads=threads)
    raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
