"""Training data: style images in bank order and content photos as random crops."""

import logging
import random
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
    exactly the batches an uninterrupted run would have drawn.
    """

    def __init__(self, images: list[torch.Tensor], size: int, resize_range: tuple[int, int] | None = None) -> None:
        """``resize_range=(lo, hi)`` scales each photo's shorter side to a random
        value in [lo, hi] before cropping, so crops show the scale the network
        will meet at inference; ``None`` scales it to ``size`` (whole-scene crops)."""
        self.images = images
        self.size = size
        if resize_range is None:
            resize = v2.Resize(size, antialias=True)  # shorter side -> size
        else:
            low, high = check_resize_range(size, resize_range)
            resize = v2.RandomResize(low, high + 1, antialias=True)  # shorter side, upper end exclusive
        self.transform = v2.Compose(
            [
                resize,
                v2.RandomCrop(size),
                v2.RandomHorizontalFlip(),
            ]
        )

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        indices = torch.randint(len(self.images), (batch_size,), generator=generator).tolist()
        # torchvision's random transforms draw from the global RNG; seed it from ours.
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        crops = [self.transform(self.images[i]) for i in indices]
        return torch.stack(crops).float().div(255.0)
