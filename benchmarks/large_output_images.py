"""The pictures of docs/large-output.md: a style_scale strip and a 4096 px example (whole + full-size crop).

Public-domain photos from scikit-image; the bundled bank; the onnx backend on the CPU.

    python -m benchmarks.large_output_images
"""

import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model.bank import DEFAULT_BANK_DIR, load_bank  # noqa: E402
from model.runner import make_runner  # noqa: E402
from model.stylize import stylize_image  # noqa: E402
from model.tiling import TilingRunner, tile_spans  # noqa: E402

OUT = REPO / "docs" / "large-output"
STYLE_INDEX = 3
SCALES = (0.5, 1.0, 2.0, 4.0)


def labelled(image: Image.Image, text: str) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 8 * len(text) + 12, 22), fill=(0, 0, 0))
    draw.text((6, 5), text, fill=(255, 255, 255))
    return image


def main() -> int:
    from skimage import data

    OUT.mkdir(parents=True, exist_ok=True)
    bank = load_bank(DEFAULT_BANK_DIR)
    runner = make_runner(bank.network, "onnx")
    assert isinstance(runner, TilingRunner)
    weights = torch.zeros(1, runner.n_styles)
    weights[0, STYLE_INDEX] = 1
    name = bank.style_names[STYLE_INDEX]

    # the strip: one photo, the same output size, several stroke sizes
    photo = Image.fromarray(data.chelsea()).resize((600, 400), Image.Resampling.LANCZOS)
    panels = [labelled(photo, "photo")]
    panels += [labelled(stylize_image(runner, photo, weights, style_scale=s), f"style_scale={s:g}") for s in SCALES]
    strip = Image.new("RGB", (sum(p.width for p in panels), photo.height))
    for index, panel in enumerate(panels):
        strip.paste(panel, (index * photo.width, 0))
    strip.save(OUT / "style_scale_strip.jpg", quality=85)

    # 4096 px: the whole result shrunk to 1024, and a 1024 px crop at full size across tile borders
    big = Image.fromarray(data.astronaut()).resize((4096, 4096), Image.Resampling.LANCZOS)
    result = stylize_image(runner, big, weights)
    result.resize((1024, 1024), Image.Resampling.LANCZOS).save(OUT / "astronaut_4096_whole.jpg", quality=85)
    spans = tile_spans(4096, runner.tile_side, runner.margin, runner.ramp)
    border = spans[1][0] + runner.margin  # where the second tile column starts being written
    left, top = border - 512, spans[1][0] + runner.margin - 512
    crop = result.crop((left, top, left + 1024, top + 1024))
    crop.save(OUT / "astronaut_4096_crop.jpg", quality=88)
    print(f"style {name}; tile borders near x={border}, y={border} sit at the middle of the crop")
    for path in sorted(OUT.iterdir()):
        print(path, path.stat().st_size // 1024, "KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
