"""The network exported to ONNX and run by onnxruntime: the faster CPU backend.

On this project's 2-core CPU, onnxruntime runs the same network 2-3x faster
than eager PyTorch (fused conv kernels, no Python dispatch per op). The export
is made in memory from the live `TransformerNet`, so it always matches the
loaded bank (learned styles included: they are just more gamma/beta rows).
"""

import io
import os

import torch
from torch.nn import functional as F

from model.errors import InvalidParameterError
from model.export import export_onnx
from model.transformer import TransformerConfig, TransformerNet


def onnx_backend_available() -> bool:
    """Both halves of the backend import: onnx (torch's exporter needs it) and onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxNetwork:
    """A `model.runner.Runner`: image (B,3,H,W) in [0,1], style weights (B,n_styles) -> image; CPU fp32."""

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, network: TransformerNet, threads: int | None = None) -> None:
        try:
            import onnx  # noqa: F401 - torch's exporter imports it; fail here with a clear message
            import onnxruntime as ort
        except ImportError as exc:
            raise InvalidParameterError(
                "the onnx backend needs onnx and onnxruntime: pip install onnx onnxruntime"
            ) from exc
        self.config: TransformerConfig = network.config
        self.n_styles = network.config.n_styles
        buffer = io.BytesIO()
        export_onnx(_cpu_fp32_copy(network), buffer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if style_weights.shape != (image.shape[0], self.config.n_styles):
            raise ValueError(
                f"style_weights must have shape (batch={image.shape[0]}, "
                f"n_styles={self.config.n_styles}), got {tuple(style_weights.shape)}"
            )
        height, width = image.shape[-2:]
        # The export is traced at a multiple of 4, so pad here exactly as TransformerNet.forward does.
        pad_h, pad_w = (-height) % 4, (-width) % 4
        source = image.detach().to("cpu", torch.float32)
        if pad_h or pad_w:
            source = F.pad(source, (0, pad_w, 0, pad_h), mode="reflect")
        feeds = {
            "image": source.contiguous().numpy(),
            "style_weights": style_weights.detach().to("cpu", torch.float32).contiguous().numpy(),
        }
        output = torch.from_numpy(self._session.run(None, feeds)[0])
        return output[..., :height, :width]


def _cpu_fp32_copy(network: TransformerNet) -> TransformerNet:
    copy = TransformerNet(network.config)
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in network.state_dict().items()})
    return copy.eval()
