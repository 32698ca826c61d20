"""Training crops at a chosen photo scale (``resize_range``), recorded in the bank and reused by add-style."""

import pytest
import torch

from model.bank import StyleInfo, load_bank, save_bank
from tests.training.conftest import tiny_network
from training.add_style import AddStyleConfig, bank_resize_range, learned_style_metadata
from training.config import TrainConfig
from training.data import ContentCrops


def half_black_half_white(size: int = 64) -> torch.Tensor:
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    image[:, :, size // 2 :] = 255
    return image


def crop_means(crops: ContentCrops, batches: int = 20) -> list[float]:
    generator = torch.Generator().manual_seed(0)
    return [m.item() for _ in range(batches) for m in crops.batch(4, generator).mean(dim=(1, 2, 3))]


def test_default_crops_show_the_whole_scene_and_a_resize_range_zooms_in():
    whole = crop_means(ContentCrops([half_black_half_white()], 32))
    assert all(abs(m - 0.5) < 0.02 for m in whole)  # every crop holds both halves
    zoomed = crop_means(ContentCrops([half_black_half_white()], 32, resize_range=(128, 160)))
    assert any(m < 0.02 for m in zoomed) and any(m > 0.98 for m in zoomed)  # some crops see one half only
    assert all(
        c.shape == (3, 32, 32)
        for c in ContentCrops([half_black_half_white()], 32, (128, 160)).batch(3, torch.Generator().manual_seed(1))
    )


@pytest.mark.parametrize("resize_range", [(16, 64), (64, 48)])
def test_a_resize_range_below_the_crop_or_reversed_is_refused(resize_range):
    with pytest.raises(ValueError, match="resize"):
        ContentCrops([half_black_half_white()], 32, resize_range=resize_range)
    with pytest.raises(ValueError, match="resize_range"):
        TrainConfig(styles=("a.png",), content_dir="c", out_dir="o", image_size=32, resize_range=resize_range)
    with pytest.raises(ValueError, match="resize_range"):
        AddStyleConfig(image_size=32, resize_range=resize_range)


def test_train_config_round_trips_the_resize_range():
    config = TrainConfig(styles=("a.png",), content_dir="c", out_dir="o", image_size=32, resize_range=(40, 56))
    data = config.to_dict()
    assert data["resize_range"] == [40, 56]
    assert TrainConfig.from_dict(data) == config


def bank_with(tmp_path, recorded):
    metadata = {} if recorded is None else {"resize_range": recorded}
    styles = [StyleInfo("a", metadata=metadata), StyleInfo("b", metadata=metadata)]
    save_bank(tmp_path / "bank", tiny_network(2), styles, {})
    return load_bank(tmp_path / "bank")


@pytest.mark.parametrize(
    ("recorded", "image_size", "expected"),
    [
        ([176, 256], 128, (176, 256)),
        ([176, 256], 200, None),  # the learner's crops are larger than the bank's photo scale
        (None, 128, None),  # an older bank without the record
        (["big", 256], 128, None),
    ],
)
def test_add_style_learns_at_the_banks_photo_scale(tmp_path, recorded, image_size, expected):
    bank = bank_with(tmp_path, recorded)
    assert bank_resize_range(bank, image_size) == expected
    if expected is not None:
        config = AddStyleConfig(image_size=image_size, resize_range=expected)
        assert learned_style_metadata("0" * 64, config)["resize_range"] == list(expected)


def _photos(count: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [
        torch.randint(0, 256, (3, 40 + 7 * i, 56 - 3 * i), generator=generator, dtype=torch.uint8) for i in range(count)
    ]


def test_crops_draw_only_from_their_generator():
    crops = ContentCrops(_photos(), 32, resize_range=(32, 48))
    global_state = torch.get_rng_state()
    first = crops.batch(4, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), global_state)  # safe to make in another thread
    torch.manual_seed(123)  # the global generator has no say
    assert torch.equal(crops.batch(4, torch.Generator().manual_seed(7)), first)
    assert not torch.equal(crops.batch(4, torch.Generator().manual_seed(8)), first)


@pytest.mark.parametrize("workers", [1, 3])
def test_prefetched_batches_are_the_inline_ones_and_leave_the_generator_where_inline_does(workers):
    from training.data import BatchPrefetcher
    from training.train import step_generator

    crops = ContentCrops(_photos(), 32, resize_range=(32, 48))
    with BatchPrefetcher(crops, 3, lambda step: step_generator(5, 0, step), start=10, workers=workers) as prefetcher:
        for step in range(10, 22):
            batch, generator = prefetcher.next()
            inline_generator = step_generator(5, 0, step)
            assert torch.equal(batch, crops.batch(3, inline_generator))
            # the caller's next draw (the styles of the crops) is the inline loop's
            assert torch.equal(
                torch.randint(9, (3,), generator=generator), torch.randint(9, (3,), generator=inline_generator)
            )
