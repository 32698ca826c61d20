"""Export a `TransformerNet` to ONNX (an alternative backend served by onnxruntime)."""

import warnings
from pathlib import Path
from typing import BinaryIO

import torch

from model.transformer import TransformerNet


def export_onnx(network: TransformerNet, path: Path | str | BinaryIO, opset: int = 17) -> Path | BinaryIO:
    """Write ``network`` as ONNX with inputs ``image`` (1,3,H,W) and ``style_weights`` (1,n_styles).

    ``path`` may be a binary file object (e.g. BytesIO). The graph is traced at
    64x64, so it expects sides that are multiples of 4 (`OnnxNetwork` pads)."""
    path = path if hasattr(path, "write") else Path(path)
    n_styles = network.config.n_styles
    example = (torch.rand(1, 3, 64, 64), torch.eye(n_styles)[:1])
    network = network.eval().cpu()
    with warnings.catch_warnings():
        # Tracing warns about the Python-level shape checks; they hold for every traced input.
        warnings.simplefilter("ignore")
        _export(network, example, path, opset)
    return path


def _export(network: TransformerNet, example: tuple, path, opset: int) -> None:
    torch.onnx.export(
        network,
        example,
        path if hasattr(path, "write") else str(path),
        input_names=["image", "style_weights"],
        output_names=["stylized"],
        dynamic_axes={
            "image": {0: "batch", 2: "height", 3: "width"},
            "style_weights": {0: "batch"},
            "stylized": {0: "batch", 2: "height", 3: "width"},
        },
        opset_version=opset,
        dynamo=False,
    )
