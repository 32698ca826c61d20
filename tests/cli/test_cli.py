"""`cinstyle stylize` / `cinstyle styles` end to end, in a real subprocess."""

import subprocess
import sys

import torch
from PIL import Image

from model.bank import load_bank
from model.imageio import image_to_tensor
from model.stylize import stylize_tensor
from tests.conftest import TINY_STYLES, gradient_image


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=120)


def test_styles_lists_the_bank(tiny_bank):
    result = run_cli("styles", "--checkpoint", str(tiny_bank))
    assert result.returncode == 0, result.stderr
    assert [line.split("\t") for line in result.stdout.splitlines()] == [[n, "builtin"] for n in TINY_STYLES]


def test_stylize_writes_the_network_output(tiny_bank, tmp_path):
    source = tmp_path / "in.png"
    gradient_image(40, 24).save(source)
    out = tmp_path / "out" / "styled.png"
    result = run_cli(
        "stylize",
        str(source),
        "-s",
        f"{TINY_STYLES[1]}:3,{TINY_STYLES[0]}:1",
        "-o",
        str(out),
        "--checkpoint",
        str(tiny_bank),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert f"{TINY_STYLES[1]}:0.75,{TINY_STYLES[0]}:0.25" in result.stderr
    written = Image.open(out)
    assert written.size == (40, 24) and written.mode == "RGB"
    bank = load_bank(tiny_bank)
    expected = stylize_tensor(bank.network, image_to_tensor(gradient_image(40, 24)), torch.tensor([[0.25, 0.75, 0.0]]))
    diff = (image_to_tensor(written) - expected).abs().max().item()
    assert diff <= 1 / 255 + 1e-6


def test_stylize_strength_zero_returns_the_input(tiny_bank, tmp_path):
    source = tmp_path / "in.png"
    gradient_image(32, 32).save(source)
    out = tmp_path / "same.png"
    result = run_cli(
        "stylize", str(source), "-s", TINY_STYLES[0], "-o", str(out), "--checkpoint", str(tiny_bank), "--strength", "0"
    )
    assert result.returncode == 0, result.stderr
    assert list(Image.open(out).getdata()) == list(gradient_image(32, 32).getdata())


def test_user_errors_exit_2_without_traceback(tiny_bank, tmp_path):
    source = tmp_path / "in.png"
    gradient_image().save(source)
    cases = [
        (["-s", "no_such_style"], "unknown style 'no_such_style'"),
        (["-s", f"{TINY_STYLES[0]}:-1"], ">= 0"),
        (["-s", TINY_STYLES[0], "--strength", "1.5"], "strength must be between 0 and 1"),
    ]
    for extra, message in cases:
        result = run_cli("stylize", str(source), "-o", str(tmp_path / "x.png"), "--checkpoint", str(tiny_bank), *extra)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    result = run_cli(
        "stylize", str(garbage), "-s", TINY_STYLES[0], "-o", str(tmp_path / "x.png"), "--checkpoint", str(tiny_bank)
    )
    assert result.returncode == 2 and "not an image format" in result.stderr
    result = run_cli("styles", "--checkpoint", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "not a bank folder" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(
        "stylize", str(source), "-s", TINY_STYLES[0], "-o", str(tmp_path / "x.gif"), "--checkpoint", str(tiny_bank)
    )
    assert result.returncode == 2 and "use one of png, jpeg, webp" in result.stderr


def test_train_takes_the_architecture_and_layer_weight_options(tmp_path):
    from tests.training.conftest import write_paintings, write_photos

    styles = write_paintings(tmp_path / "styles", ["one", "two"])
    write_photos(tmp_path / "photos", 3)
    common = [
        "train",
        "--styles",
        *map(str, styles),
        "--content",
        str(tmp_path / "photos"),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--image-size",
        "32",
        "--style-size",
        "64",
        "--channels",
        "4",
        "8",
        "8",
        "--n-residual",
        "1",
        "--device",
        "cpu",
    ]
    result = run_cli(*common, "--out", str(tmp_path / "bad"), "--style-layer-weight", "relu4_1")
    assert result.returncode == 2 and "LAYER=WEIGHT" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(*common, "--out", str(tmp_path / "bad2"), "--style-layer-weight", "relu9_1=2")
    assert result.returncode == 2 and "relu9_1" in result.stderr

    result = run_cli(
        *common,
        "--out",
        str(tmp_path / "run"),
        "--decoder-channels",
        "6",
        "2",
        "--outer-kernel",
        "3",
        "--style-layer-weight",
        "relu4_1=4",
        "--resize-range",
        "40",
        "56",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    bank = load_bank(tmp_path / "run" / "bank")
    assert bank.config.decoder_channels == (6, 2) and bank.config.outer_kernel == 3
    assert bank.styles[0].metadata["loss_weights"]["style_layer_weights"] == {"relu4_1": 4.0}
    assert bank.styles[0].metadata["resize_range"] == [40, 56]
    result = run_cli(*common, "--out", str(tmp_path / "bad3"), "--resize-range", "24", "56")
    assert result.returncode == 2 and "resize_range" in result.stderr and "Traceback" not in result.stderr


def test_stylize_with_a_style_image_runs_the_slow_path_from_either_start(tiny_bank, tmp_path):
    source, painting = tmp_path / "in.png", tmp_path / "painting.png"
    gradient_image(40, 32).save(source)
    gradient_image(48, 48).rotate(90).save(painting)
    outputs = {}
    for init in ("content", "nearest"):
        out = tmp_path / f"{init}.png"
        result = run_cli(
            "stylize",
            str(source),
            "--style-image",
            str(painting),
            "-o",
            str(out),
            "--steps",
            "3",
            "--init",
            init,
            "--checkpoint",
            str(tiny_bank),
            "--device",
            "cpu",
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("nearest blend" in result.stderr) == (init == "nearest")
        outputs[init] = image_to_tensor(Image.open(out))
        assert outputs[init].shape == (1, 3, 32, 40)
    assert not torch.equal(outputs["content"], outputs["nearest"])
    result = run_cli(
        "stylize", str(source), "--style-image", str(painting), "-o", str(tmp_path / "x.png"), "--init", "elsewhere"
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr
