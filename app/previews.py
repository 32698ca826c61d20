"""Style previews: each style applied to one sample picture, rendered once and cached."""

import threading
from functools import lru_cache

from PIL import Image, ImageDraw

PREVIEW_SIDE = 192


@lru_cache(maxsize=1)
def sample_image(side: int = PREVIEW_SIDE) -> Image.Image:
    """scikit-image's astronaut when installed, else a drawn landscape (no files needed)."""
    try:
        from skimage import data

        image = Image.fromarray(data.astronaut())
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
        return image.convert("RGB")
    except ImportError:
        return _landscape(side, side * 2 // 3)


def _landscape(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = height * 3 // 5
    for y in range(horizon):  # sky: deep blue to pale orange
        t = y / max(horizon - 1, 1)
        draw.line([(0, y), (width, y)], fill=(int(40 + 200 * t), int(90 + 110 * t), int(200 - 60 * t)))
    sun = (width * 0.68, height * 0.18, width * 0.86, height * 0.18 + width * 0.18)
    draw.ellipse(sun, fill=(250, 220, 120))
    draw.polygon([(0, horizon), (width * 0.25, height * 0.28), (width * 0.5, horizon)], fill=(90, 80, 110))
    draw.polygon([(width * 0.3, horizon), (width * 0.62, height * 0.22), (width, horizon)], fill=(70, 60, 95))
    for y in range(horizon, height):  # water: darker towards the bottom, with ripples
        t = (y - horizon) / max(height - horizon - 1, 1)
        shade = 12 if y % 4 == 0 else 0
        draw.line([(0, y), (width, y)], fill=(int(30 + 40 * (1 - t)) + shade, int(110 - 50 * t), int(150 - 40 * t)))
    trunk_x = int(width * 0.15)
    draw.rectangle([trunk_x - 3, int(height * 0.55), trunk_x + 3, horizon + 6], fill=(80, 50, 30))
    draw.ellipse([trunk_x - 18, int(height * 0.32), trunk_x + 18, int(height * 0.6)], fill=(40, 120, 50))
    return image


class PreviewCache:
    """PNG bytes per style name; an entry is dropped when its style changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._png: dict[str, bytes] = {}

    def get(self, name: str) -> bytes | None:
        with self._lock:
            return self._png.get(name)

    def put(self, name: str, png: bytes) -> None:
        with self._lock:
            self._png[name] = png

    def invalidate(self, name: str) -> None:
        with self._lock:
            self._png.pop(name, None)

    def invalidate_all(self, names: set[str]) -> None:
        with self._lock:
            for name in names:
                self._png.pop(name, None)
