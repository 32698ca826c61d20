"""Encoding and decoding costs of results: PNG zlib levels, JPEG and WebP quality, at 512 and 1024 px.

The picture is what the service sends back: scikit-image's astronaut (public domain) stylized by the
bundled bank's first style. Median of ``--repeats`` runs per row, one thread (the codec pool's view).
Prints a table and writes ``benchmarks/results/codecs.json`` (command, commit, machine, date).

    python -m benchmarks.codecs
"""

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from model.bank import load_bank
from model.imageio import EncodeOptions, encode_image, image_to_tensor
from model.stylize import stylize_image

RESULTS = Path(__file__).parent / "results" / "codecs.json"
ROWS = [
    ("png", EncodeOptions(png_compress_level=0)),
    ("png", EncodeOptions(png_compress_level=1)),
    ("png", EncodeOptions(png_compress_level=6)),
    ("png", EncodeOptions(png_compress_level=9)),
    ("jpeg", EncodeOptions(jpeg_quality=92)),
    ("webp", EncodeOptions(webp_quality=92)),
]


def timed(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from skimage import data

    torch.set_num_threads(1)
    bank = load_bank()
    weights = torch.eye(bank.config.n_styles)[:1]
    rows = []
    for size in args.sizes:
        photo = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
        stylized = stylize_image(bank.network, photo, weights)
        assert image_to_tensor(stylized).shape[-1] == size
        for fmt, options in ROWS:
            encoded = encode_image(stylized, fmt, options=options)
            encode_ms = timed(
                lambda fmt=fmt, options=options, image=stylized: encode_image(image, fmt, options=options),
                args.repeats,
            )
            decode_ms = timed(lambda encoded=encoded: Image.open(io.BytesIO(encoded)).load(), args.repeats)
            label = {
                "png": f"png level {options.png_compress_level}",
                "jpeg": f"jpeg q{options.jpeg_quality}",
                "webp": f"webp q{options.webp_quality}",
            }[fmt]
            rows.append(
                {
                    "size": size,
                    "format": label,
                    "bytes": len(encoded),
                    "encode_ms": round(encode_ms, 2),
                    "decode_ms": round(decode_ms, 2),
                }
            )
            print(
                f"{size:>5} {label:14} {len(encoded) / 1024:>8.0f} KB  "
                f"encode {encode_ms:7.1f} ms  decode {decode_ms:6.1f} ms"
            )
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = None
    report = {
        "benchmark": "codecs",
        "command": " ".join(["python -m benchmarks.codecs", *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "picture": "skimage.data.astronaut stylized by the bundled bank's first style",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
