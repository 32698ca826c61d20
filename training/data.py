"""Training data: style images in bank order and content photos as random crops."""

import collections
import logging
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.transforms import v2

from model.bank import validate_style_name
from model.errors import CinstyleError
from model.imageio import image_to_tensor, load_image_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def list_style_images(paths: list[str] | tuple[str, ...]) -> list[Path]:
    """Expand folders to their image files; order is the given order, folders sorted by name."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"style image or folder {path} not found")
    if not files:
        raise FileNotFoundError(f"no style images found in {list(paths)}")
    return files


def style_name_from_path(path: Path) -> str:
    name = path.stem.lower().replace(" ", "_")
    return validate_style_name(name)


def list_content_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"content folder {root} not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    return files


def split_holdout(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic train / held-out split of the content photos."""
    shuffled = list(files)
    random.Random(seed).shuffle(shuffled)
    n_holdout = int(round(len(files) * fraction))
    if fraction > 0 and len(files) > 1:
        n_holdout = max(1, n_holdout)
    return sorted(shuffled[n_holdout:]), sorted(shuffled[:n_holdout])


def load_images(files: list[Path], max_side: int | None = None) -> list[torch.Tensor]:
    """Decode images to (3, H, W) uint8 tensors; unreadable files are skipped with a warning."""
    images = []
    for path in files:
        try:
            tensor = image_to_tensor(load_image_file(path, max_side=max_side))[0]
        except (CinstyleError, OSError) as exc:
            log.warning("skipping unreadable image %s: %s", path, exc)
            continue
        images.append(tensor.mul(255).round().to(torch.uint8))
    if not images:
        raise FileNotFoundError("none of the content images could be read")
    return images


def check_resize_range(image_size: int, resize_range) -> tuple[int, int] | None:
    """``resize_range`` as a (low, high) tuple, checked against the crop side; None stays None."""
    if resize_range is None:
        return None
    resize_range = tuple(resize_range)
    if not (len(resize_range) == 2 and image_size <= resize_range[0] <= resize_range[1]):
        raise ValueError(
            f"resize_range must be (low, high) with image_size {image_size} <= low <= high, got {resize_range}"
        )
    return resize_range


def photo_load_side(image_size: int, resize_range: tuple[int, int] | None = None) -> int:
    """Longer side to decode training photos at: enough pixels for every crop scale, no more."""
    return max(2 * image_size, 512, 2 * resize_range[1] if resize_range else 0)


class ContentCrops:
    """Random square crops from an in-memory list of photos.

    A batch is a pure function of (seed, rank, step): resuming at step k draws
    exactly the batches an uninterrupted run would have drawn. Every random draw comes from the
    given generator (none from torch's global one), so batches can be made in other threads
    (`BatchPrefetcher`) while the main thread trains.
    """

    def __init__(self, images: list[torch.Tensor], size: int, resize_range: tuple[int, int] | None = None) -> None:
        """``resize_range=(lo, hi)`` scales each photo's shorter side to a random
        value in [lo, hi] before cropping, so crops show the scale the network
        will meet at inference; ``None`` scales it to ``size`` (whole-scene crops)."""
        self.images = images
        self.size = size
        self.resize_range = check_resize_range(size, resize_range) if resize_range is not None else None

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        indices = torch.randint(len(self.images), (batch_size,), generator=generator).tolist()
        crops = [self._crop(self.images[i], generator) for i in indices]
        return torch.stack(crops).float().div(255.0)

    def _crop(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Shorter side to ``size`` (or a random side in ``resize_range``), a random square, a coin-flip mirror."""
        low, high = self.resize_range or (self.size, self.size)
        shorter = int(torch.randint(low, high + 1, (1,), generator=generator))
        height, width = image.shape[-2:]
        scale = shorter / min(height, width)
        size = [max(self.size, round(height * scale)), max(self.size, round(width * scale))]
        resized = v2.functional.resize(image, size, antialias=True)
        top = int(torch.randint(size[0] - self.size + 1, (1,), generator=generator))
        left = int(torch.randint(size[1] - self.size + 1, (1,), generator=generator))
        crop = resized[..., top : top + self.size, left : left + self.size]
        return crop.flip(-1) if bool(torch.rand((), generator=generator) < 0.5) else crop


class BatchPrefetcher:
    """The batches of steps ``start``, ``start + 1``, ... made ahead in ``workers`` threads (torchvision's
    resize releases the GIL), so a GPU does not wait for the CPU's cropping between steps. Each comes with its
    step's generator as the batch left it, so the caller's further draws (the style of each crop) are the ones
    an inline loop would make: the batches and everything after them do not depend on the thread count."""

    def __init__(
        self,
        crops: ContentCrops,
        batch_size: int,
        make_generator: Callable[[int], torch.Generator],
        start: int,
        workers: int = 1,
    ) -> None:
        self._crops, self._batch_size, self._make_generator = crops, batch_size, make_generator
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cinstyle-crops")
        self._ahead = 2 * max(1, workers)
        self._pending: collections.deque[Future] = collections.deque()
        self._next_step = start

    def _make(self, step: int) -> tuple[torch.Tensor, torch.Generator]:
        generator = self._make_generator(step)
        return self._crops.batch(self._batch_size, generator), generator

    def next(self) -> tuple[torch.Tensor, torch.Generator]:
        """The next step's (batch, generator)."""
        while len(self._pending) < self._ahead:
            self._pending.append(self._pool.submit(self._make, self._next_step))
            self._next_step += 1
        return self._pending.popleft().result()

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "BatchPrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
