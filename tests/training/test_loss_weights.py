"""Per-layer style weights of the training objective (the default model up-weights relu4_1)."""

import json

import pytest
import torch

from model.losses import STYLE_LAYERS
from training.config import LossWeights, TrainConfig
from training.objective import weighted_loss


def _grams(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {layer: torch.rand(1, 4, 4, generator=generator) for layer in STYLE_LAYERS}


def _style_term(weights: LossWeights) -> float:
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    content = torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    _, terms = weighted_loss(image, _grams(2), _grams(3), content, content, weights)
    return terms["style"]


def test_a_layer_weight_adds_exactly_that_layers_relative_error():
    plain = _style_term(LossWeights(content=1, style=1, tv=0))
    boosted = _style_term(LossWeights(content=1, style=1, tv=0, style_layer_weights={"relu4_1": 3.0}))
    only = _style_term(
        LossWeights(
            content=1,
            style=1,
            tv=0,
            style_layer_weights={layer: (1.0 if layer == "relu4_1" else 0.0) for layer in STYLE_LAYERS},
        )
    )
    assert only > 0
    assert boosted == pytest.approx(plain + 2 * only, rel=1e-5)


@pytest.mark.parametrize(
    "layer_weights, message",
    [
        ({"relu9_1": 1.0}, "relu9_1"),
        ({"relu4_1": -1.0}, "-1.0"),
    ],
)
def test_bad_layer_weights_are_refused_naming_them(layer_weights, message):
    with pytest.raises(ValueError, match=message):
        LossWeights(style_layer_weights=layer_weights)


def test_layer_weights_round_trip_through_the_saved_train_config(tmp_path):
    config = TrainConfig(
        styles=("a.jpg",),
        content_dir="photos",
        out_dir=str(tmp_path),
        decoder_channels=(16, 8),
        loss_weights=LossWeights(content=6, style=3, style_layer_weights={"relu4_1": 4}),
    )
    config.save(tmp_path / "train_config.json")
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["loss_weights"]["style_layer_weights"] == {"relu4_1": 4.0}
    assert TrainConfig.from_dict(saved) == config
    # Configs written before the field existed still load, with every layer at weight 1.
    del saved["loss_weights"]["style_layer_weights"], saved["decoder_channels"]
    old = TrainConfig.from_dict(saved)
    assert old.loss_weights.layer_weight("relu4_1") == 1.0 and old.decoder_channels is None
