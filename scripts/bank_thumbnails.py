"""Write a bank's painting thumbnails (``<bank>/paintings/<style>.jpg``, at most 256 px) from its source paintings.

The bank's manifest records each style's ``source_file``; this finds it in ``--styles-dir`` and checks its
SHA-256 against the manifest before writing, so a thumbnail always shows the painting the style was trained on.
``cinstyle train`` writes them itself; this is for banks trained before it did.

    python scripts/bank_thumbnails.py --bank model/checkpoints/default --styles-dir ../shared/data/styles
"""

import argparse
import json
from pathlib import Path

from model.bank import MANIFEST_FILE, atomic_write_bytes, painting_thumbnail_path, sha256_file
from model.imageio import THUMBNAIL_SIDE, load_image_file, thumbnail_jpeg


def write_thumbnails(bank_dir: Path, styles_dir: Path) -> list[Path]:
    manifest = json.loads((bank_dir / MANIFEST_FILE).read_text())
    written = []
    for style in manifest["styles"]:
        source = styles_dir / style["source_file"]
        if sha256_file(source) != style["source_sha256"]:
            raise SystemExit(f"{source} is not the painting {style['name']!r} was trained on (SHA-256 differs)")
        path = painting_thumbnail_path(bank_dir, style["name"])
        atomic_write_bytes(path, thumbnail_jpeg(load_image_file(source, max_side=4 * THUMBNAIL_SIDE)))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True, help="the bank folder (with manifest.json)")
    parser.add_argument("--styles-dir", type=Path, required=True, help="where the source paintings are")
    args = parser.parse_args()
    for path in write_thumbnails(args.bank, args.styles_dir):
        print(f"{path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
