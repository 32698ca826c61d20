"""`cinstyle evaluate` on a tiny bank, tiny generated photos and paintings."""

import json
import math

import pytest
import torch
from PIL import Image

from app.cli import main as cli_main
from model.bank import load_bank
from model.imageio import image_to_tensor, load_image_file
from model.losses import STYLE_LAYERS
from tests.training.conftest import photo, write_paintings, write_photos, write_tiny_bank
from training.evaluate import EvalConfig, evaluate, resolve_style_files, sheet_shape

NAMES = ["red_stripes", "blue_stripes", "green_stripes"]


@pytest.fixture
def setup(tmp_path):
    paintings = write_paintings(tmp_path / "paintings", [f"painting_{i}" for i in range(len(NAMES))])
    bank_dir = write_tiny_bank(tmp_path / "bank", NAMES, source_files=paintings)
    write_photos(tmp_path / "photos", 3)
    return tmp_path, bank_dir, paintings


def test_evaluate_command_writes_report_and_contact_sheet(setup, capsys):
    root, bank_dir, _ = setup
    out = root / "eval"
    code = cli_main(
        [
            "evaluate",
            "--bank",
            str(bank_dir),
            "--content",
            str(root / "photos"),
            "--styles",
            str(root / "paintings"),
            "--out",
            str(out),
            "--max-photos",
            "2",
            "--slow-steps",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed

    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["styles"]] == NAMES
    assert report["photos"] == ["photo_00.png", "photo_01.png"]
    for scores in report["styles"]:
        for key, value in scores.items():
            if key.startswith("layer_ratios"):
                assert list(value) == list(STYLE_LAYERS) and all(v > 0 and math.isfinite(v) for v in value.values())
            elif key != "name":
                assert value is not None and math.isfinite(value), (key, value)
        assert scores["style_ratio_net"] > 0 and scores["content_change_net"] >= 0
        assert scores["layer_mean_net"] == pytest.approx(sum(scores["layer_ratios_net"].values()) / 5)
    assert set(report["average"]) >= {"style_ratio_net", "style_ratio_slow", "content_change_net"}
    assert report["worst"]["style_ratio_net"]["name"] in NAMES

    markdown = (out / "report.md").read_text()
    table = [line for line in markdown[: markdown.index("## Per layer")].splitlines() if line.startswith("| ")]
    assert table[0].startswith("| style | style ratio net | style ratio slow | content change net |")
    assert [line.split("|")[1].strip() for line in table[2:]] == [*NAMES, "**average**"]

    # The per-layer table: one row per style, then the average and the worst style of each column.
    layer_table = markdown[markdown.index("## Per layer") :].splitlines()
    layer_rows = [line for line in layer_table if line.startswith("| ") and "---" not in line]
    assert layer_rows[0] == "| style | relu1_1 | relu2_1 | relu3_1 | relu4_1 | relu5_1 | mean | mean slow |"
    assert [line.split("|")[1].strip() for line in layer_rows[1:]] == [*NAMES, "**average**", "**worst**"]
    worst_name = report["layer_worst"]["relu5_1"]["name"]
    assert worst_name == max(report["styles"], key=lambda s: s["layer_ratios_net"]["relu5_1"])["name"]
    assert f"({worst_name})" in layer_rows[-1]
    assert report["layer_average"]["layer_mean"] == pytest.approx(
        sum(s["layer_mean_net"] for s in report["styles"]) / len(NAMES)
    )

    with Image.open(out / "strokes.png") as strokes:  # 3 styles in one row of 6 columns, 48 x 64 crops at 1:1
        assert strokes.size == (6 * (64 + 4) + 4, 48 + 18 + 4 + 4)
        assert len(set(strokes.crop((4, 4 + 18, 4 + 64, 4 + 18 + 48)).getdata())) > 10  # a picture, not blank
        assert strokes.getpixel((5 * 68 + 10, 40)) == (255, 255, 255)  # the unused columns are blank
    rows, columns = sheet_shape(2, len(NAMES))
    assert (rows, columns) == (3, 4)  # 2 photos + a blend row; original + 3 styles (or 3 blends)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (columns * (128 + 2) + 2, rows * (128 + 2) + 2)


def test_evaluate_function_without_the_slow_path(setup, vgg):
    _, bank_dir, paintings = setup
    bank = load_bank(bank_dir)
    styles = [image_to_tensor(load_image_file(p)) for p in paintings]
    photos = [photo(i)[None].float() / 255 for i in range(2)]
    report = evaluate(bank, styles, photos, vgg, EvalConfig(slow_steps=0, photo_side=48, style_side=64))
    assert [s.name for s in report.styles] == NAMES
    assert all(s.style_ratio_slow is None and s.total_slow is None for s in report.styles)
    assert all(math.isfinite(s.style_ratio_net) and s.total_photo > 0 for s in report.styles)
    data = report.to_dict()
    assert data["average"]["style_ratio_slow"] is None
    json.dumps(data, allow_nan=False)


def test_strength_moves_the_scores_toward_the_photo(setup, vgg, capsys):
    _, bank_dir, paintings = setup
    bank = load_bank(bank_dir)
    styles = [image_to_tensor(load_image_file(p)) for p in paintings]
    photos = [photo(i)[None].float() / 255 for i in range(2)]
    config = dict(slow_steps=0, photo_side=48, style_side=64)
    full = evaluate(bank, styles, photos, vgg, EvalConfig(**config)).averages()
    half = evaluate(bank, styles, photos, vgg, EvalConfig(strength=0.5, **config)).averages()
    assert half["content_change_net"] < full["content_change_net"]
    # Almost the photo itself: every layer's ratio is close to the photo's 1, each layer on its own.
    faint = evaluate(bank, styles, photos, vgg, EvalConfig(strength=0.01, **config))
    for scores in faint.styles:
        assert all(0.9 < ratio < 1.1 for ratio in scores.layer_ratios_net.values()), scores.layer_ratios_net
    assert faint.layer_averages()["layer_mean"] == pytest.approx(1, abs=0.1)
    assert abs(half["style_ratio_net"] - 1) < abs(full["style_ratio_net"] - 1)  # the photo's ratio is 1
    with pytest.raises(ValueError, match="strength"):
        EvalConfig(strength=0)
    root = setup[0]
    code = cli_main(
        [
            "evaluate",
            "--bank",
            str(bank_dir),
            "--content",
            str(root / "photos"),
            "--styles",
            str(root / "paintings"),
            "--out",
            str(root / "eval"),
            "--strength",
            "1.5",
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "strength must be in (0, 1]" in capsys.readouterr().err


def test_style_files_resolve_from_files_folder_or_training_paths(setup):
    root, bank_dir, paintings = setup
    bank = load_bank(bank_dir)
    assert resolve_style_files(bank, [str(p) for p in paintings]) == paintings
    assert resolve_style_files(bank, [str(root / "paintings")]) == paintings
    with pytest.raises(ValueError, match="2 style images given for a bank with 3 styles"):
        resolve_style_files(bank, [str(p) for p in paintings[:2]])
    with pytest.raises(FileNotFoundError, match="red_stripes"):
        resolve_style_files(bank, None)  # this bank records no training paths
    bank.provenance["train_config"] = {"styles": [str(root / "paintings")]}
    assert resolve_style_files(bank, None) == paintings


def test_palette_distance_counts_colours_in_their_proportions():
    from training.evaluate import colour_histogram, palette_distance

    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 0.9
    blue = torch.zeros(1, 3, 8, 8)
    blue[:, 2] = 0.9
    half = torch.cat([red[..., :4], blue[..., 4:]], dim=-1)  # half red, half blue
    assert colour_histogram(red).sum().item() == pytest.approx(1)
    assert palette_distance(red, colour_histogram(red)) == 0
    assert palette_distance(red, colour_histogram(blue)) == pytest.approx(1)
    assert palette_distance(half, colour_histogram(red)) == pytest.approx(0.5)
    # The same colours in another layout are the same palette.
    assert palette_distance(half.flip(-1), colour_histogram(half)) == pytest.approx(0)


def test_evaluate_scores_only_the_named_styles(setup, vgg):
    _, bank_dir, paintings = setup
    bank = load_bank(bank_dir)
    style = image_to_tensor(load_image_file(paintings[2]))
    photos = [photo(0)[None].float() / 255]
    config = EvalConfig(slow_steps=0, photo_side=48, style_side=64)
    one = evaluate(bank, [style], photos, vgg, config, only=[NAMES[2]])
    every = evaluate(bank, [image_to_tensor(load_image_file(p)) for p in paintings], photos, vgg, config)
    assert [s.name for s in one.styles] == [NAMES[2]]
    assert one.styles[0].layer_ratios_net == pytest.approx(every.styles[2].layer_ratios_net)
    assert 0 <= one.styles[0].palette_distance_net <= 1 and 0 <= one.styles[0].palette_distance_photo <= 1
    with pytest.raises(ValueError, match="not in the bank"):
        evaluate(bank, [style], photos, vgg, config, only=["nope"])
