"""Export a `TransformerNet` to ONNX (an alternative backend served by onnxruntime).

Three graphs, all with dynamic batch, height and width (any side that is a multiple
of `model.transformer.STRIDE`; `OnnxNetwork` pads other sizes, as `TransformerNet.forward` does):

- `export_onnx`: ``image``, ``style_weights`` -> ``stylized`` (the plain network);
- `export_stats_onnx`: ``image``, ``style_weights`` -> ``norm_mean``, ``norm_var`` (what every norm
  layer sees, flattened in execution order: `TransformerNet.norm_stats`);
- `export_with_stats_onnx`: ``image``, ``style_weights``, ``norm_mean``, ``norm_var`` -> ``stylized``
  (every norm layer uses the given statistics: a tile of a larger image, `model.tiling`).
"""

import warnings
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from model.transformer import TransformerNet

# Traced at a size that is not square and not a power of two, so no shape gets baked in by accident.
_TRACE_SIZE = (72, 56)


def export_onnx(network: TransformerNet, path: Path | str | BinaryIO, opset: int = 17) -> Path | BinaryIO:
    """Write ``network`` as ONNX with inputs ``image`` (B,3,H,W) and ``style_weights`` (B,n_styles).

    ``path`` may be a binary file object (e.g. BytesIO)."""
    return _export(network, _example(network), path, opset, ["image", "style_weights"], ["stylized"])


def export_stats_onnx(network: TransformerNet, path: Path | str | BinaryIO, opset: int = 17) -> Path | BinaryIO:
    """The statistics graph: ``image``, ``style_weights`` -> ``norm_mean``, ``norm_var`` (B, total width)."""
    return _export(
        _StatsGraph(network), _example(network), path, opset, ["image", "style_weights"], ["norm_mean", "norm_var"]
    )


def export_with_stats_onnx(network: TransformerNet, path: Path | str | BinaryIO, opset: int = 17) -> Path | BinaryIO:
    """The given-statistics graph: ``image``, ``style_weights``, ``norm_mean``, ``norm_var`` -> ``stylized``."""
    image, weights = _example(network)
    with torch.no_grad():
        mean, var = network.eval().cpu().norm_stats(image, weights)
    return _export(
        _WithStatsGraph(network),
        (image, weights, mean, var),
        path,
        opset,
        ["image", "style_weights", "norm_mean", "norm_var"],
        ["stylized"],
    )


class _StatsGraph(nn.Module):
    def __init__(self, network: TransformerNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.norm_stats(image, style_weights)


class _WithStatsGraph(_StatsGraph):
    def forward(  # type: ignore[override]
        self, image: torch.Tensor, style_weights: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        return self.network.forward_with_stats(image, style_weights, mean, var)


def _example(network: TransformerNet) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(1, 3, *_TRACE_SIZE), torch.eye(network.config.n_styles)[:1]


def _export(
    module: nn.Module, example: tuple, path: Path | str | BinaryIO, opset: int, inputs: list[str], outputs: list[str]
) -> Path | BinaryIO:
    path = path if hasattr(path, "write") else Path(path)
    module = module.eval().cpu()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "stylized": {0: "batch", 2: "height", 3: "width"}}
    axes |= {name: {0: "batch"} for name in ("style_weights", "norm_mean", "norm_var")}
    with warnings.catch_warnings():
        # Tracing warns about the Python-level shape checks; they hold for every traced input.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            path if hasattr(path, "write") else str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes={name: axes[name] for name in inputs + outputs},
            opset_version=opset,
            dynamo=False,
        )
    return path
