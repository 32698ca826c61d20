"""Tiled inference: tiles normalised with whole-image statistics match one pass, no seams, any tile size."""

import math
import platform
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from model.bank import DEFAULT_BANK_DIR, load_bank
from model.onnx_backend import OnnxNetwork, onnx_backend_available
from model.runner import TorchRunner, make_runner
from model.tiling import (
    MARGIN_TOLERANCE,
    MOSAIC_CROP,
    MOSAIC_GRID,
    RAMP,
    TilingRunner,
    measure_margin,
    mosaic_boxes,
    tile_spans,
)
from model.transformer import STRIDE, TransformerConfig, TransformerNet, receptive_radius

needs_onnx = pytest.mark.skipif(not onnx_backend_available(), reason="onnx/onnxruntime not installed")


def tiny_network(seed: int = 0, n_styles: int = 2, residual_dilation: int = 1) -> TransformerNet:
    torch.manual_seed(seed)
    config = TransformerConfig(
        n_styles=n_styles, channels=(4, 8, 8), n_residual=1, outer_kernel=3, residual_dilation=residual_dilation
    )
    network = TransformerNet(config)
    with torch.no_grad():  # styles that really differ, so the statistics matter
        for layer in network.norm_layers():
            layer.gamma.copy_(1 + 0.5 * torch.randn(layer.gamma.shape))
            layer.beta.copy_(0.5 * torch.randn(layer.beta.shape))
    return network.eval()


def textured(width: int, height: int, seed: int = 0, contrast_step: bool = True, noise: float = 0.06) -> Image.Image:
    """Gradients and noise; with ``contrast_step`` the left half has more contrast (statistics that vary)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 4 * x), np.sin(13 * x * y)], axis=-1) * 0.3 + 0.5
    if contrast_step:
        base = base * (0.4 + 0.6 * (x < 0.5)[..., None])
    grain = rng.normal(0, noise, base.shape)
    return Image.fromarray((np.clip(base + grain, 0, 1) * 255).astype(np.uint8), "RGB")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize("length", [200, 300, 1001, 4096, 8192])
@pytest.mark.parametrize("tile", [144, 512, 1152])
def test_tile_spans_cover_on_the_stride_grid_with_enough_overlap(length, tile):
    margin = 28
    spans = tile_spans(length, tile, margin)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for start, end in spans:
        assert start % STRIDE == 0 and end - start <= tile + 2 * STRIDE
    for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert end - next_start >= 2 * margin + RAMP  # the kept parts overlap by at least the ramp


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_receptive_radius_bounds_what_a_pixel_sees(dilation):
    """A change beyond the radius leaves a pixel as it was (with fixed statistics); dilated residual blocks
    see further."""
    network = tiny_network(residual_dilation=dilation)
    radius = receptive_radius(network.config)
    assert radius == receptive_radius(tiny_network().config) + 8 * (dilation - 1)
    image = torch.rand(1, 3, 160, 160)
    weights = torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        mean, var = network.norm_stats(image, weights)
        changed = image.clone()
        changed[..., :, 80 + radius :] = torch.rand(3, 160, 160 - 80 - radius)
        a = network.forward_with_stats(image, weights, mean, var)[..., 80]
        b = network.forward_with_stats(changed, weights, mean, var)[..., 80]
    assert torch.equal(a, b)


def tensor_from(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255


def _pixels(output: torch.Tensor) -> np.ndarray:
    return output[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def _runners(network: TransformerNet, backend: str):
    return TorchRunner(network) if backend == "torch" else OnnxNetwork(network, threads=1)


@pytest.mark.parametrize(
    "backend, dilation",
    [("torch", 1), ("torch", 2), pytest.param("onnx", 1, marks=needs_onnx), pytest.param("onnx", 2, marks=needs_onnx)],
)
def test_tiles_with_the_whole_image_statistics_equal_one_pass(backend, dilation):
    """Statistics of the image itself (thumbnail = the image): the tiling alone adds nothing."""
    network = tiny_network(residual_dilation=dilation)
    base = _runners(network, backend)
    image = textured(301, 222)  # odd sizes: tiles of odd lengths at the right and bottom
    weights = torch.tensor([[0.3, 0.7]])
    one_pass = TilingRunner(base, tile_side=4096).stylize_array(image, weights)
    tiled_runner = TilingRunner(base, tile_side=144, stats_side=4096)
    tiled = tiled_runner.stylize_array(image, weights)
    assert len(tile_spans(301, 144, tiled_runner.margin)) >= 3
    assert psnr(tiled, one_pass) > 55
    # the float Runner protocol tiles the same way
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    assert (tiled_runner(tensor, weights) - base(tensor, weights)).abs().max() < 1e-3


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnx", marks=needs_onnx)])
def test_thumbnail_statistics_stay_close_to_one_pass_with_the_bundled_bank(backend):
    """The shipped network, statistics from a thumbnail at 2/3 of the size (as 1024 for a 1536 px image)."""
    bank = load_bank(DEFAULT_BANK_DIR)
    base = _runners(bank.network, backend)
    skimage_data = pytest.importorskip("skimage.data")
    image = Image.fromarray(skimage_data.astronaut()).resize((384, 384), Image.Resampling.LANCZOS)
    weights = torch.zeros(1, base.n_styles)
    weights[0, 0] = 1
    one_pass = TilingRunner(base, tile_side=4096).stylize_array(image, weights)
    thumbnail = TilingRunner(base, tile_side=256, stats_side=256).stylize_array(image, weights)
    own_stats = TilingRunner(_OwnStats(base), tile_side=256).stylize_array(image, weights)
    assert psnr(thumbnail, one_pass) > 30  # 45 dB on photos at 1536 px (docs/large-output.md)
    assert psnr(thumbnail, one_pass) > psnr(own_stats, one_pass) + 3  # the statistics are what matters


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnx", marks=needs_onnx)])
def test_the_mosaic_correction_removes_what_shrinking_loses(backend):
    """A thumbnail's own statistics against the corrected ones, each used for the whole image at once."""
    bank = load_bank(DEFAULT_BANK_DIR)
    base = _runners(bank.network, backend)
    skimage_data = pytest.importorskip("skimage.data")
    image = Image.fromarray(skimage_data.astronaut()).resize((768, 768), Image.Resampling.LANCZOS)
    tensor = tensor_from(image)
    weights = torch.zeros(1, base.n_styles)
    weights[0, 3] = 1
    one_pass = base(tensor, weights)
    thumbnail = tensor_from(image.resize((384, 384), Image.Resampling.LANCZOS, reducing_gap=3.0))
    plain = base.run_with_stats(tensor, weights, *base.norm_stats(thumbnail, weights))
    corrected = base.run_with_stats(
        tensor, weights, *TilingRunner(base, stats_side=384).stats_for_image(image, weights)
    )

    def db(output):
        return psnr(_pixels(output), _pixels(one_pass))

    assert db(corrected) > db(plain) + 4, (db(corrected), db(plain))


def test_mosaic_crops_lie_inside_the_image_and_fill_the_mosaic():
    for height, width in [(4096, 4096), (200, 3000), (16, 4000), (1000, 337)]:
        crops, (grid_h, grid_w) = mosaic_boxes(height, width)
        assert len(crops) == MOSAIC_GRID**2
        covered = np.zeros((grid_h, grid_w), dtype=int)
        for (top, bottom, left, right), (at_top, at_left) in crops:
            assert 0 <= top < bottom <= height and 0 <= left < right <= width
            covered[at_top : at_top + bottom - top, at_left : at_left + right - left] += 1
        assert (covered == 1).all(), (height, width)  # every mosaic pixel comes from exactly one crop
    crops, grid = mosaic_boxes(4096, 4096)
    assert grid == (3 * MOSAIC_CROP, 3 * MOSAIC_CROP) and crops[-1][0] == (4096 - MOSAIC_CROP, 4096) * 2


@needs_onnx
@pytest.mark.parametrize("size", [(37, 53), (101, 67), (16, 203), (64, 64)])
def test_onnx_graphs_take_any_tile_size(size):
    network = tiny_network()
    torch_runner, onnx_runner = TorchRunner(network), OnnxNetwork(network, threads=1)
    image = torch.rand(2, 3, *size)
    weights = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    mean, var = torch_runner.norm_stats(image, weights)
    onnx_mean, onnx_var = onnx_runner.norm_stats(image, weights)
    assert (mean - onnx_mean).abs().max() < 1e-4 and (var - onnx_var).abs().max() < 1e-4
    # statistics of another image, so "given" really differs from "own"
    other_mean, other_var = torch_runner.norm_stats(torch.rand(2, 3, 40, 40), weights)
    expected = torch_runner.run_with_stats(image, weights, other_mean, other_var)
    got = onnx_runner.run_with_stats(image, weights, other_mean, other_var)
    assert got.shape == (2, 3, *size)
    assert (got - expected).abs().max() < 1e-4
    assert (got - torch_runner(image, weights)).abs().max() > 1e-3


class _Wrapped:
    """A stats runner passing everything to ``inner``; subclasses change one thing."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.device, self.dtype, self.n_styles = inner.device, inner.dtype, inner.n_styles
        self.receptive_radius = inner.receptive_radius

    def __call__(self, image, weights):
        return self.inner(image, weights)

    def norm_stats(self, image, weights):
        return self.inner.norm_stats(image, weights)

    def run_with_stats(self, image, weights, mean, var):
        return self.inner.run_with_stats(image, weights, mean, var)


class _OwnStats(_Wrapped):
    """A runner that ignores the statistics it is given: every tile normalised with its own (a seam maker)."""

    def run_with_stats(self, image, weights, mean, var):
        return self.inner(image, weights)


def seam_ratio(pixels: np.ndarray, borders: list[int], axis: int, window: int = 64) -> float:
    """The worst mean |difference| between the neighbouring columns (axis=1) or rows (axis=0) at
    ``borders``, over the median of that difference in the ``window`` columns (rows) around the border."""
    gray = pixels.astype(np.float32).mean(axis=2)
    steps = np.abs(np.diff(gray, axis=axis)).mean(axis=1 - axis)  # steps[i]: between i and i + 1
    worst = 0.0
    for border in borders:
        around = np.concatenate([steps[border - window : border - 2], steps[border + 2 : border + window]])
        worst = max(worst, float(steps[border - 1 : border + 1].mean()) / float(np.median(around)))
    return worst


def tile_borders(runner: TilingRunner, length: int) -> list[int]:
    """Where a tile's written part starts or the previous one's ends (the ramp's two ends)."""
    spans = tile_spans(length, runner.tile_side, runner.margin, runner.ramp)
    borders = []
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        borders += [start + runner.margin, end - runner.margin]
    return borders


def test_no_seam_at_4096_px():
    network = tiny_network(seed=3)
    image = textured(4096, 4096, seed=2, noise=0.01)  # smooth, like sky in a photo: where seams show
    weights = torch.tensor([[0.0, 1.0]])
    base = TorchRunner(network)
    runner = TilingRunner(base)  # the service's default tile and thumbnail sizes
    pixels = runner.stylize_array(image, weights)
    assert pixels.shape == (4096, 4096, 3)
    borders = tile_borders(runner, 4096)
    assert len(borders) >= 4
    assert seam_ratio(pixels, borders, axis=1) < 1.5
    assert seam_ratio(pixels, borders, axis=0) < 1.5
    # At every border the pixels are what one pass over a band around it gives with the same
    # (corrected thumbnail) statistics: the tiling itself leaves no trace.
    mean, var = runner.stats_for_image(image, weights)
    half = 2 * runner.margin
    for border in borders:
        band = np.asarray(image.crop((border - half, 0, border + half, 4096))).copy()
        band_tensor = torch.from_numpy(band).permute(2, 0, 1).unsqueeze(0).float() / 255
        expected = base.run_with_stats(band_tensor, weights, mean, var)[0, :, :, half - 1 : half + 1]
        got = torch.from_numpy(pixels[:, border - 1 : border + 1]).permute(2, 0, 1).float() / 255
        assert (got - expected).abs().max() <= 1.5 / 255


def test_make_runner_tiles_and_keeps_small_images_one_pass():
    network = tiny_network()
    runner = make_runner(network, "torch", tile_side=256)
    assert isinstance(runner, TilingRunner)
    image = torch.rand(1, 3, 100, 120)
    weights = torch.tensor([[1.0, 0.0]])
    assert torch.equal(runner(image, weights), TorchRunner(network)(image, weights))


@pytest.mark.parametrize("size", [(16, 4000), (4000, 20), (17, 1500)])
def test_thin_images_go_through_in_tiles(size):
    network = tiny_network()
    runner = TilingRunner(TorchRunner(network), tile_side=256, stats_side=256)
    pixels = runner.stylize_array(textured(*size, contrast_step=False), torch.tensor([[1.0, 0.0]]))
    assert pixels.shape == (size[1], size[0], 3)


class _NoisyOutputs(_Wrapped):
    """A runner whose outputs carry rounding-like noise (as fp16's): no margin is within tolerance."""

    def run_with_stats(self, image, weights, mean, var):
        output = self.inner.run_with_stats(image, weights, mean, var)
        return output + 2e-3 * torch.rand(output.shape)


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnx", marks=needs_onnx)])
def test_the_margin_is_measured_on_the_weights_and_holds_its_tolerance(backend):
    bank = load_bank(DEFAULT_BANK_DIR)
    base = _runners(bank.network, backend)
    radius = math.ceil(base.receptive_radius / STRIDE) * STRIDE
    margin = measure_margin(base)
    assert margin % STRIDE == 0 and 0 < margin < radius  # the bundled bank: 44 of 56 px
    assert measure_margin(base, tolerance=1e-2) <= margin <= measure_margin(base, tolerance=1e-4) <= radius
    assert TilingRunner(base).margin == margin
    # With it, a tiled photo is what one pass with the same statistics gives, to within the tolerance.
    skimage_data = pytest.importorskip("skimage.data")
    image = tensor_from(Image.fromarray(skimage_data.astronaut()).resize((512, 512), Image.Resampling.LANCZOS))
    weights = torch.eye(base.n_styles)[6:7]  # the style whose borders reach furthest in
    runner = TilingRunner(base, tile_side=2 * (2 * radius + RAMP), stats_side=512)
    assert len(tile_spans(512, runner.tile_side, runner.margin)) >= 3
    one_pass = base.run_with_stats(image, weights, *base.norm_stats(image, weights))
    assert (runner(image, weights) - one_pass).abs().max().item() <= 2 * MARGIN_TOLERANCE
    # too small a margin is visibly off: what the measurement protects
    narrow = TilingRunner(base, tile_side=runner.tile_side, stats_side=400, margin=8)
    assert (narrow(image, weights) - one_pass).abs().max().item() > 20 * MARGIN_TOLERANCE


def test_the_margin_falls_back_to_the_receptive_radius_when_nothing_is_within_tolerance():
    network = tiny_network()
    radius = math.ceil(TorchRunner(network).receptive_radius / STRIDE) * STRIDE
    assert measure_margin(_NoisyOutputs(TorchRunner(network))) == radius
    assert measure_margin(TorchRunner(network)) <= radius


class _RecordsMemoryReuse(_Wrapped):
    """Records, for every network pass, whether freed memory was being kept for reuse (`large_blocks_reused`)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.reusing: list[bool] = []

    def _record(self) -> None:
        from model import cpu_memory

        self.reusing.append(cpu_memory._reuse_users > 0)

    def __call__(self, image, weights):
        self._record()
        return super().__call__(image, weights)

    def norm_stats(self, image, weights):
        self._record()
        return super().norm_stats(image, weights)

    def run_with_stats(self, image, weights, mean, var):
        self._record()
        return super().run_with_stats(image, weights, mean, var)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_an_images_passes_reuse_each_others_memory_in_the_main_thread_and_hand_it_back_after():
    from model import cpu_memory

    runner = _RecordsMemoryReuse(TorchRunner(tiny_network()))
    tiling = TilingRunner(runner, tile_side=256, stats_side=128, margin=16)
    weights = torch.tensor([[1.0, 0.0]])
    tiling.stylize_array(textured(600, 500), weights)  # tiled: statistics passes, then tiles
    tiling.stylize_array(textured(200, 150), weights)  # one pass
    tiling(torch.rand(1, 3, 300, 600), weights)  # tensors in and out
    assert len(runner.reusing) > 10 and all(runner.reusing)
    assert cpu_memory._reuse_users == 0  # and handed back after each image
    # not from another thread (a server's request): there it would keep every other thread's blocks too
    runner.reusing.clear()
    worker = threading.Thread(target=tiling.stylize_array, args=(textured(600, 500), weights))
    worker.start()
    worker.join()
    assert len(runner.reusing) > 10 and not any(runner.reusing)
