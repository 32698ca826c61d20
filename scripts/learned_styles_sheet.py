"""A picture of learned styles: each painting beside a public-domain photo stylized with the style learned from it.

Takes the styles `benchmarks/learned_styles.py --keep DIR` wrote (``learned_<painting>``) and the
paintings they came from; the photo is scikit-image's Chelsea (public domain), which is also one of
the five photos styles are learned on, so the picture shows what a user sees, not a held-out score.

    python scripts/learned_styles_sheet.py --learned /tmp/learned_final --styles-dir ../shared/data/styles \
        --out docs/evaluation/learned_styles_chelsea.jpg
"""

import argparse
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.utils import make_grid

from model.bank import DEFAULT_BANK_DIR, load_bank
from model.imageio import image_to_tensor, load_image_file
from model.stylize import stylize_image

PHOTO_SIZE = (384, 256)  # width, height
PREFIX = "learned_"


def painting_beside_result(painting: Image.Image, result: Image.Image) -> torch.Tensor:
    """(3, 256, 256 + 384): the painting fitted into 256 x 256 on white, then the stylized photo."""
    painting = painting.copy()
    painting.thumbnail((256, 256), Image.Resampling.LANCZOS)
    left = v2.functional.center_crop(image_to_tensor(painting)[0] - 1, [256, 256]) + 1  # pads with white
    return torch.cat([left, image_to_tensor(result)[0]], dim=-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK_DIR)
    parser.add_argument("--learned", type=Path, required=True, help="the folder of learned styles")
    parser.add_argument("--styles-dir", type=Path, required=True, help="the paintings, as <painting>.jpg")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from skimage import data

    bank = load_bank(args.bank, learned_dir=args.learned)
    photo = Image.fromarray(data.chelsea()).resize(PHOTO_SIZE, Image.Resampling.LANCZOS)
    rows = []
    for index, name in enumerate(bank.style_names):
        if not name.startswith(PREFIX):
            continue
        weights = torch.nn.functional.one_hot(torch.tensor([index]), len(bank.style_names)).float()
        painting = load_image_file(args.styles_dir / f"{name.removeprefix(PREFIX)}.jpg", max_side=1024)
        rows.append(painting_beside_result(painting, stylize_image(bank.network, photo, weights)))
    if not rows:
        raise SystemExit(f"no style named {PREFIX}* in {args.learned}")
    grid = make_grid(rows, nrow=2, padding=4, pad_value=1.0)
    pixels = grid.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(args.out, quality=82, optimize=True)
    print(f"wrote {args.out}: {len(rows)} learned styles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
