"""Tiled inference with whole-image normalisation statistics: large images in bounded memory, without seams.

A `TilingRunner` wraps a `StatsRunner` (torch or onnx, CPU or CUDA). An image that fits in
one tile goes through the wrapped runner as it is. A larger one goes in two steps:

1. **Statistics** from a thumbnail (Thumbnail Instance Normalization, Chen et al., "Towards
   Ultra-Resolution Neural Style Transfer via Thumbnail Instance Normalization", AAAI 2022):
   one plain pass over the image shrunk to ``stats_side`` records the mean and variance every
   norm layer sees. A tile normalised with its own statistics would get its own contrast and
   colour cast (visible as blocks); with the thumbnail's, every tile is normalised alike.
   A thumbnail alone is biased: shrinking removes fine detail, so the early layers' variances
   (and some means) come out lower than the full-size image's (35 dB against a one-pass run at
   1536 px). The bias is measured and removed: a **mosaic** of 3 x 3 crops of the image at full
   size (336 px each) is run once as it is and once shrunk by the thumbnail's factor; per channel,
   the full-size mosaic's variance over the shrunk one's scales the thumbnail's variance, and the
   difference of their means shifts its mean (45 dB at 1536 px, for about 0.8 MP more work than
   the thumbnail's 0.6 MP).
2. **Tiles** of about ``tile_side`` px, each run with those statistics. Tiles start on the
   network's stride grid and overlap by twice a ``margin`` plus a ramp: a tile's outer
   ``margin`` px (which see the tile's padding instead of the neighbouring pixels) are dropped,
   and across the ramp the next tile is blended in linearly, so everything that is kept is what
   a one-pass run with the same statistics would give. The margin is measured on the loaded
   weights (`measure_margin`): the receptive radius (56 px for the bundled network) bounds it,
   but a tile's border stops mattering sooner (the bundled bank: 44 px, with which no written
   pixel moves by more than `MARGIN_TOLERANCE`), and every pixel of overlap is work done twice.

Memory: the float work is one tile at a time; the result is composited into a uint8
canvas (`stylize_image`, for PIL images) or into the float output (`__call__`).
"""

import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from model.cpu_memory import large_blocks_reused
from model.runner import Runner, StatsRunner
from model.transformer import STRIDE

DEFAULT_TILE_SIDE = 1152  # largest tile side (px): an image up to this size is one plain pass
DEFAULT_STATS_SIDE = 768  # the thumbnail's longer side for the statistics pass
MOSAIC_GRID = 3  # the resolution correction's mosaic: this many crops along each axis ...
MOSAIC_CROP = 336  # ... of this side (px, at full size)
VAR_RATIO_RANGE = (0.25, 4.0)  # a channel's variance correction is bounded (a flat mosaic says little)
THUMBNAIL_MIN_SIDE = 16  # as model.imageio.MIN_SIDE: enough for the network's reflection padding
RAMP = 16  # px over which neighbouring tiles are cross-faded, beyond the dropped margins
MARGIN_TOLERANCE = 5e-4  # the most a tile's border may move a kept pixel (an eighth of a uint8 level)
MARGIN_PROBE_BATCH = 8  # styles per probe run when measuring the margin (bounds its memory)
SHRINK_REDUCING_GAP = 2.0  # PIL: a box-filter reduce first, then Lanczos (4096 -> 768 px: 143 -> 66 ms)

Box = tuple[int, int, int, int]  # top, bottom, left, right
ReadTile = Callable[[Box], torch.Tensor]  # box -> (1, 3, h, w) float in [0, 1]
WriteTile = Callable[[Box, torch.Tensor, torch.Tensor | None], None]  # box, (1, 3, h, w), alpha (h, w) or None


def _ceil_to(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


def tile_spans(length: int, tile: int, margin: int, ramp: int = RAMP) -> list[tuple[int, int]]:
    """(start, end) of the tiles along one axis: starts on the stride grid, neighbours overlapping by
    at least ``2 * margin + ramp``, all about the same length (the last one ends at the image's end)."""
    if length <= tile:
        return [(0, length)]
    overlap = 2 * margin + ramp
    if tile <= overlap + STRIDE:
        raise ValueError(f"tile side {tile} must exceed the overlap {overlap} + {STRIDE}")
    count = math.ceil((length - overlap) / (tile - overlap))
    side = min(length, _ceil_to((length + (count - 1) * overlap) / count, STRIDE) + STRIDE)
    spans = []
    for index in range(count):
        start = (index * (length - side) // (count - 1)) // STRIDE * STRIDE if count > 1 else 0
        spans.append((start, length if index == count - 1 else min(length, start + side)))
    return spans


def _kept(spans: list[tuple[int, int]], index: int, margin: int) -> tuple[int, int, torch.Tensor | None]:
    """The part of tile ``index`` that is written (without its margins, except at the image's edges)
    and its blend weight along the axis: a ramp up across the previous tile's kept part, then 1."""
    start, end = spans[index]
    low = start + margin if index > 0 else start
    high = end - margin if index < len(spans) - 1 else end
    previous_high = spans[index - 1][1] - margin if index > 0 else low
    if previous_high <= low:  # the first tile, or no ramp: a hard cut
        return low, high, None
    positions = torch.arange(low, high, dtype=torch.float32) + 0.5
    return low, high, ((positions - low) / (previous_high - low)).clamp(0, 1)


class TilingRunner:
    """A `model.runner.Runner` that runs images larger than ``tile_side`` in tiles with whole-image
    normalisation statistics (see the module docstring); smaller ones go through ``inner`` as they are."""

    def __init__(
        self,
        inner: StatsRunner,
        tile_side: int = DEFAULT_TILE_SIDE,
        stats_side: int = DEFAULT_STATS_SIDE,
        ramp: int = RAMP,
        margin: int | None = None,
        correct_stats: bool = True,
    ) -> None:
        """``margin``: tile pixels dropped at inner tile borders (default: measured on ``inner``'s weights
        by `measure_margin` when the first image is tiled; the receptive radius makes the kept pixels exact,
        smaller values than the measured one are only for showing what goes wrong).
        ``correct_stats=False`` uses the thumbnail's statistics as they are (to measure what the
        mosaic correction buys)."""
        if not isinstance(inner, StatsRunner):
            raise TypeError(f"tiling needs a runner that takes norm statistics, got {type(inner).__name__}")
        self.inner = inner
        self.device, self.dtype, self.n_styles = inner.device, inner.dtype, inner.n_styles
        self._margin = margin
        self.ramp = ramp
        smallest = 2 * (2 * (_ceil_to(inner.receptive_radius, STRIDE) if margin is None else margin) + ramp)
        if tile_side < smallest:
            raise ValueError(f"tile_side must be at least {smallest} for this network, got {tile_side}")
        self.tile_side = tile_side
        self.stats_side = stats_side
        self.correct_stats = correct_stats

    @property
    def margin(self) -> int:
        """Tile pixels dropped at inner tile borders (measured once, on first use)."""
        if self._margin is None:
            self._margin = measure_margin(self.inner, self.ramp)
        return self._margin

    # -- the Runner protocol: float tensors in and out ----------------------------------------------------------------

    def __call__(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        if max(height, width) <= self.tile_side:
            with self._working_memory_reused():
                return self.inner(image, style_weights)
        # Zeros, not empty: a tile's inner part is blended in with weight 1 over what is there, and
        # 1 x NaN is NaN (uninitialised memory can hold NaNs; fresh pages happened to be zero).
        output = torch.zeros(image.shape, dtype=torch.float32, device=self.device)
        with self._working_memory_reused():
            self._run_batch_in_tiles(image, style_weights, output)
        return output.to(image.dtype)

    def _run_batch_in_tiles(self, image: torch.Tensor, style_weights: torch.Tensor, output: torch.Tensor) -> None:
        height, width = image.shape[-2:]
        for b in range(image.shape[0]):
            single = image[b : b + 1]

            def read(box: Box, single: torch.Tensor = single) -> torch.Tensor:
                return single[..., box[0] : box[1], box[2] : box[3]]

            def write(box: Box, tile: torch.Tensor, alpha: torch.Tensor | None, b: int = b) -> None:
                region = output[b : b + 1, :, box[0] : box[1], box[2] : box[3]]
                if alpha is None:
                    region.copy_(tile)
                else:
                    region.lerp_(tile.float(), alpha.to(region.device))

            stats = self._stats_tensor(single, style_weights[b : b + 1])
            self._tiles((height, width), stats, style_weights[b : b + 1], read, write)

    def _working_memory_reused(self) -> AbstractContextManager[None]:
        """On the CPU, in a process's main thread (the CLI, a script), the passes of one image reuse each other's
        freed memory (`large_blocks_reused`). Not in other threads: glibc's thresholds are process-wide, so in a
        server every other thread's large blocks (uploads being decoded, other requests) would be kept too (a
        burst of 6300 px uploads peaked at 1865 instead of ~1400 MB), and a worker thread's heap is capped at
        64 MiB, so a tile's largest buffers are mapped afresh there anyway."""
        reuse = self.device.type == "cpu" and threading.current_thread() is threading.main_thread()
        return large_blocks_reused() if reuse else nullcontext()

    # -- uint8 images in and out: what the service and the CLI use -----------------------------------------------------

    def stylize_array(self, image: Image.Image, style_weights: torch.Tensor) -> np.ndarray:
        """An RGB image -> its stylized pixels, (H, W, 3) uint8 (writable), holding no full-size float copy."""
        width, height = image.size
        if max(width, height) <= self.tile_side:
            with self._working_memory_reused():
                return _to_array(self.inner(_to_tensor(np.asarray(image), self.device, self.dtype), style_weights))
        # Allocated before the passes' memory is reused: it outlives them, and would keep what they free in place.
        canvas = np.empty((height, width, 3), dtype=np.uint8)

        def read(box: Box) -> torch.Tensor:
            top, bottom, left, right = box
            return _to_tensor(np.asarray(image.crop((left, top, right, bottom))), self.device, self.dtype)

        def write(box: Box, tile: torch.Tensor, alpha: torch.Tensor | None) -> None:
            top, bottom, left, right = box
            pixels = tile[0].float().clamp(0, 1).mul_(255)
            if alpha is not None:
                # Only the ramps mix with what is there: the first rows and columns (alpha < 1 on the last
                # column and row respectively, since a tile's ramps are at its top and left); a whole-tile
                # blend was 5 % of a 4096 px run.
                alpha = alpha.to(pixels.device)
                ramp_rows, ramp_columns = int((alpha[:, -1] < 1).sum()), int((alpha[-1] < 1).sum())
                for y0, y1, x0, x1 in ((0, ramp_rows, 0, right - left), (ramp_rows, bottom - top, 0, ramp_columns)):
                    if y1 > y0 and x1 > x0:
                        before = torch.from_numpy(canvas[top + y0 : top + y1, left + x0 : left + x1])
                        part = pixels[:, y0:y1, x0:x1]
                        part.copy_(before.permute(2, 0, 1).to(pixels).lerp_(part, alpha[y0:y1, x0:x1]))
            canvas[top:bottom, left:right] = pixels.round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

        with self._working_memory_reused():
            self._tiles((height, width), self.stats_for_image(image, style_weights), style_weights, read, write)
        return canvas

    # -- whole-image statistics: a thumbnail, corrected for what shrinking loses ---------------------------------------

    def stats_for_image(self, image: Image.Image, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, var) every norm layer is given for the tiles of ``image``: the thumbnail's, corrected."""

        def tensor(picture: Image.Image) -> torch.Tensor:
            return _to_tensor(np.asarray(picture), self.device, self.dtype)

        thumbnail = tensor(_shrink_image(image, self.stats_side))
        crops, grid = mosaic_boxes(image.height, image.width)
        mosaic = Image.new("RGB", (grid[1], grid[0]))
        for (top, bottom, left, right), (at_top, at_left) in crops:
            mosaic.paste(image.crop((left, top, right, bottom)), (at_left, at_top))
        shrunk = _shrunk_mosaic_size(image.height, image.width, grid, self.stats_side)
        small = (
            None
            if shrunk is None
            else tensor(mosaic.resize(shrunk[::-1], Image.Resampling.LANCZOS, reducing_gap=SHRINK_REDUCING_GAP))
        )
        return self._corrected_stats(thumbnail, tensor(mosaic) if small is not None else None, small, style_weights)

    def _stats_tensor(self, image: torch.Tensor, style_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        thumbnail = _shrink_tensor(image, self.stats_side)
        crops, grid = mosaic_boxes(height, width)
        mosaic = image.new_empty((1, 3, *grid))
        for (top, bottom, left, right), (at_top, at_left) in crops:
            mosaic[..., at_top : at_top + bottom - top, at_left : at_left + right - left] = image[
                ..., top:bottom, left:right
            ]
        shrunk = _shrunk_mosaic_size(height, width, grid, self.stats_side)
        small = None
        if shrunk is not None:
            small = F.interpolate(mosaic.float(), size=shrunk, mode="bilinear", antialias=True, align_corners=False)
            small = small.clamp(0, 1).to(image.dtype)
        return self._corrected_stats(thumbnail, mosaic if small is not None else None, small, style_weights)

    def _corrected_stats(
        self,
        thumbnail: torch.Tensor,
        mosaic: torch.Tensor | None,
        small_mosaic: torch.Tensor | None,
        style_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The thumbnail's statistics, with each channel's mean shifted and variance scaled by how the
        full-size mosaic's differ from the shrunk mosaic's (None: no correction, e.g. a thin image)."""
        mean, var = self.inner.norm_stats(thumbnail, style_weights)
        if mosaic is None or small_mosaic is None or not self.correct_stats:
            return mean, var
        full_mean, full_var = self.inner.norm_stats(mosaic, style_weights)
        small_mean, small_var = self.inner.norm_stats(small_mosaic, style_weights)
        ratio = (full_var / small_var.clamp_min(1e-12)).clamp(*VAR_RATIO_RANGE)
        return mean + (full_mean - small_mean), var * ratio

    def _tiles(
        self,
        size: tuple[int, int],
        stats: tuple[torch.Tensor, torch.Tensor],
        style_weights: torch.Tensor,
        read: ReadTile,
        write: WriteTile,
    ) -> None:
        mean, var = stats
        rows = tile_spans(size[0], self.tile_side, self.margin, self.ramp)
        columns = tile_spans(size[1], self.tile_side, self.margin, self.ramp)
        for row in range(len(rows)):
            top, bottom, alpha_y = _kept(rows, row, self.margin)
            for column in range(len(columns)):
                left, right, alpha_x = _kept(columns, column, self.margin)
                box = (*rows[row], *columns[column])
                tile = self.inner.run_with_stats(read(box), style_weights, mean, var)
                kept = tile[..., top - box[0] : bottom - box[0], left - box[2] : right - box[2]]
                write((top, bottom, left, right), kept, _outer(alpha_y, alpha_x, bottom - top, right - left))


@torch.inference_mode()
def measure_margin(runner: StatsRunner, ramp: int = RAMP, tolerance: float = MARGIN_TOLERANCE) -> int:
    """The smallest margin (a multiple of the stride, at most the receptive radius) with which no written
    pixel is more than ``tolerance`` off a one-pass result, for any of ``runner``'s styles.

    A probe texture of 3 receptive radii a side is run whole and cropped at one radius from its top-left
    corner, both with the whole probe's statistics (as tiles are run): the two differ only near the crop's
    border, by how much the border's padding reaches in; ``error[d]`` is the largest difference at ``d`` px
    or more from both borders. A written pixel ``k`` px into a ramp mixes the new tile (``margin + k`` px from
    its border, weight ``(k + 0.5) / ramp``) with the previous one (``margin + ramp - k`` px from its border);
    past the ramp the new tile stands alone. Falls back to the receptive radius when nothing closer is within
    tolerance (e.g. fp16, whose rounding alone exceeds it)."""
    radius = _ceil_to(runner.receptive_radius, STRIDE)
    side = 3 * radius
    generator = torch.Generator().manual_seed(0)
    # smooth shapes plus fine grain: borders matter most where the image has structure
    coarse = torch.rand(1, 3, side // 16 + 1, side // 16 + 1, generator=generator)
    probe = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    probe = (probe + 0.15 * torch.rand(1, 3, side, side, generator=generator)).clamp(0, 1)
    probe = probe.to(runner.device, runner.dtype)
    worst = torch.zeros(2 * radius, 2 * radius)
    styles = torch.eye(runner.n_styles)
    for start in range(0, runner.n_styles, MARGIN_PROBE_BATCH):
        weights = styles[start : start + MARGIN_PROBE_BATCH].to(runner.device, runner.dtype)
        batch = probe.expand(weights.shape[0], -1, -1, -1).contiguous()
        mean, var = runner.norm_stats(batch, weights)
        whole = runner.run_with_stats(batch, weights, mean, var)[..., radius:, radius:]
        cropped = runner.run_with_stats(batch[..., radius:, radius:].contiguous(), weights, mean, var)
        difference = (whole.float() - cropped.float()).abs().amax(dim=(0, 1)).cpu()
        worst = torch.maximum(worst, difference)
    error = [worst[d:, d:].max().item() for d in range(2 * radius)]
    for margin in range(0, radius, STRIDE):
        if margin + ramp >= 2 * radius or error[margin + ramp] > tolerance:
            continue
        alphas = [(k + 0.5) / ramp for k in range(ramp)]
        mixed = [a * error[margin + k] + (1 - a) * error[margin + ramp - k] for k, a in enumerate(alphas)]
        if max(mixed, default=0.0) <= tolerance:
            return margin
    return radius


def mosaic_boxes(height: int, width: int) -> tuple[list[tuple[Box, tuple[int, int]]], tuple[int, int]]:
    """The full-size crops of the resolution correction's mosaic (`MOSAIC_GRID` per axis, spread
    evenly from edge to edge, `MOSAIC_CROP` px or the image's side if smaller), each with its
    (top, left) in the mosaic; and the mosaic's (height, width)."""
    crop_h, crop_w = min(MOSAIC_CROP, height), min(MOSAIC_CROP, width)
    tops = [round(i * (height - crop_h) / (MOSAIC_GRID - 1)) for i in range(MOSAIC_GRID)]
    lefts = [round(i * (width - crop_w) / (MOSAIC_GRID - 1)) for i in range(MOSAIC_GRID)]
    crops = [
        ((top, top + crop_h, left, left + crop_w), (row * crop_h, column * crop_w))
        for row, top in enumerate(tops)
        for column, left in enumerate(lefts)
    ]
    return crops, (MOSAIC_GRID * crop_h, MOSAIC_GRID * crop_w)


def _shrunk_mosaic_size(height: int, width: int, grid: tuple[int, int], stats_side: int) -> tuple[int, int] | None:
    """The mosaic's (height, width) shrunk by the thumbnail's factor; None when there is nothing to
    correct (the image is its own thumbnail) or too little left to measure (under 16 px a side)."""
    scale = stats_side / max(height, width)
    if scale >= 1:
        return None
    size = (round(grid[0] * scale), round(grid[1] * scale))
    return size if min(size) >= THUMBNAIL_MIN_SIDE else None


def _outer(alpha_y: torch.Tensor | None, alpha_x: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
    """The 2-D blend weight of a tile (None: it covers what it writes)."""
    if alpha_y is None and alpha_x is None:
        return None
    y = alpha_y if alpha_y is not None else torch.ones(height)
    x = alpha_x if alpha_x is not None else torch.ones(width)
    return y[:, None] * x[None, :]


def _to_tensor(pixels: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h, w, 3) uint8 -> (1, 3, h, w) in [0, 1] on ``device``."""
    tensor = torch.from_numpy(np.array(pixels, copy=True)).to(device).permute(2, 0, 1).unsqueeze(0)
    return tensor.to(dtype).div_(255.0)


def _to_array(tensor: torch.Tensor) -> np.ndarray:
    pixels = tensor[0].float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(pixels)


def as_tiling_runner(runner: Runner) -> "TilingRunner":
    """``runner`` if it tiles already, else a `TilingRunner` around it (it must take norm statistics)."""
    return runner if isinstance(runner, TilingRunner) else TilingRunner(runner)  # type: ignore[arg-type]


def _thumbnail_size(width: int, height: int, side: int) -> tuple[int, int] | None:
    """The thumbnail's size: longer side ``side``; a thin image's short side is kept at up to
    `THUMBNAIL_MIN_SIDE` px (the network's padding needs a few pixels). None: no need to shrink."""
    scale = side / max(width, height)
    if scale >= 1:
        return None
    return (
        max(min(width, THUMBNAIL_MIN_SIDE), round(width * scale)),
        max(min(height, THUMBNAIL_MIN_SIDE), round(height * scale)),
    )


def _shrink_image(image: Image.Image, side: int) -> Image.Image:
    size = _thumbnail_size(*image.size, side)
    return image if size is None else image.resize(size, Image.Resampling.LANCZOS, reducing_gap=SHRINK_REDUCING_GAP)


def _shrink_tensor(image: torch.Tensor, side: int) -> torch.Tensor:
    size_wh = _thumbnail_size(image.shape[-1], image.shape[-2], side)
    if size_wh is None:
        return image
    size = (size_wh[1], size_wh[0])
    return F.interpolate(image.float(), size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
