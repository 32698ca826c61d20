"""The network exported to ONNX and run by onnxruntime: the faster CPU backend.

On this project's 2-core CPU, onnxruntime runs the same network 1.3x (1024 px) to
2.0x (256 px) faster than eager PyTorch (fused conv kernels, no Python dispatch per
op; `benchmarks/results/latency.json`). The export
is made in memory from the live `TransformerNet`, so it always matches the
loaded bank (learned styles included: they are just more gamma/beta rows).

Three graphs share the weights (`model.export`): the plain network, the statistics
graph and the given-statistics graph, so the tiling runner works on this backend
too. Their height and width axes are dynamic; sides that are not multiples of 4
are reflection-padded here and cropped back, exactly as `TransformerNet.forward` does.
"""

import io
import os

import numpy as np
import torch

from model.errors import InvalidParameterError
from model.export import export_onnx, export_stats_onnx, export_with_stats_onnx
from model.transformer import STRIDE, TransformerConfig, TransformerNet, receptive_radius


def onnx_backend_available() -> bool:
    """Both halves of the backend import: onnx (torch's exporter needs it) and onnxruntime."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# Runs of up to this many pixels (batch x height x width) keep their working memory for the next run:
# about 340 bytes per pixel, 85 MB for a 512 x 512 image, per run in flight.
KEEP_MEMORY_PIXELS = 512 * 512


class OnnxNetwork:
    """A `model.runner.Runner`: image (B,3,H,W) in [0,1], style weights (B,n_styles) -> image; CPU fp32."""

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(
        self, network: TransformerNet, threads: int | None = None, keep_memory_pixels: int = KEEP_MEMORY_PIXELS
    ) -> None:
        try:
            import onnx  # noqa: F401 - torch's exporter imports it; fail here with a clear message
            import onnxruntime as ort
        except ImportError as exc:
            raise InvalidParameterError(
                "the onnx backend needs onnx and onnxruntime: pip install onnx onnxruntime"
            ) from exc
        self.config: TransformerConfig = network.config
        self.n_styles = network.config.n_styles
        self.receptive_radius = receptive_radius(network.config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads() or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # A memory arena: without one, every intermediate buffer is a fresh mmap whose pages the kernel
        # faults in and zeroes, run after run (a third of a tiled run's time was system time). It is emptied
        # after every run larger than keep_memory_pixels, since an arena that is never emptied keeps each
        # graph's largest run for good (+660 MB after one tiled 4096 px image); smaller runs keep theirs,
        # because handing it back and faulting it in again made a 512 px run ~40 % slower (70 vs 50 ms).
        # The memory pattern (one block per input shape, planned once) is
        # kept for the plain graph, whose concurrent small runs it keeps from fragmenting the arena (512 px,
        # 48 clients: 1441 MB peak with it, 2394 MB without), and dropped for the tile graphs, where its
        # blocks raised a tiled 4096 px run's peak by 280 MB (1638 against 1358 MB in-process) for no speed.
        options.enable_cpu_mem_arena = True
        self.keep_memory_pixels = keep_memory_pixels
        self._keep_options = ort.RunOptions()
        self._shrink_options = ort.RunOptions()
        self._shrink_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        copy = _cpu_fp32_copy(network)
        sessions = []
        for export in (export_onnx, export_stats_onnx, export_with_stats_onnx):
            buffer = io.BytesIO()
            export(copy, buffer)
            options.enable_mem_pattern = export is export_onnx
            sessions.append(ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"]))
        self._session, self._stats_session, self._with_stats_session = sessions

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return self._run(self._session, image, style_weights)

    def norm_stats(self, image: torch.Tensor, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self._run(self._stats_session, image, style_weights, crop=False)
        return mean, var

    def run_with_stats(
        self, image: torch.Tensor, style_weights: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        extra = {"norm_mean": _numpy(mean), "norm_var": _numpy(var)}
        return self._run(self._with_stats_session, image, style_weights, extra=extra)

    def _run(self, session, image: torch.Tensor, style_weights: torch.Tensor, crop: bool = True, extra=None):
        if style_weights.shape != (image.shape[0], self.config.n_styles):
            raise ValueError(
                f"style_weights must have shape (batch={image.shape[0]}, "
                f"n_styles={self.config.n_styles}), got {tuple(style_weights.shape)}"
            )
        height, width = image.shape[-2:]
        feeds = {"image": _padded_pixels(image), **(extra or {})}
        feeds["style_weights"] = _numpy(style_weights)
        batch, _, padded_height, padded_width = feeds["image"].shape
        keep = batch * padded_height * padded_width <= self.keep_memory_pixels
        run_options = self._keep_options if keep else self._shrink_options
        outputs = [torch.from_numpy(array) for array in session.run(None, feeds, run_options)]
        if not crop:
            return outputs
        return outputs[0][..., :height, :width]


def _padded_pixels(image: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) -> contiguous float32, reflection-padded at the bottom and right to the stride grid
    (as `pad_to_stride`), in numpy: a torch op here (the copy of a permuted decoded image) left torch's
    OpenMP threads spinning on the cores onnxruntime was about to use, +8 ms on a 12 ms 256 px run."""
    pixels = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
    pad_height, pad_width = (-pixels.shape[-2]) % STRIDE, (-pixels.shape[-1]) % STRIDE
    if pad_height or pad_width:
        pixels = np.pad(pixels, ((0, 0), (0, 0), (0, pad_height), (0, pad_width)), mode="reflect")
    return pixels


def _numpy(tensor: torch.Tensor):
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def _cpu_fp32_copy(network: TransformerNet) -> TransformerNet:
    copy = TransformerNet(network.config)
    copy.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in network.state_dict().items()})
    return copy.eval()
