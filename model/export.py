"""Export a `TransformerNet` to ONNX (an alternative backend served by onnxruntime)."""

from pathlib import Path

import torch

from model.transformer import TransformerNet


def export_onnx(network: TransformerNet, path: Path | str, opset: int = 17) -> Path:
    """Write ``network`` as ONNX with inputs ``image`` (1,3,H,W) and ``style_weights`` (1,n_styles)."""
    path = Path(path)
    n_styles = network.config.n_styles
    example = (torch.rand(1, 3, 64, 64), torch.eye(n_styles)[:1])
    network = network.eval().cpu()
    torch.onnx.export(network, example, str(path), input_names=["image", "style_weights"], output_names=["stylized"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "style_weights": {0: "batch"},
                                    "stylized": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=opset, dynamo=False)
    return path
