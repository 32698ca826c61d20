"""Gram-matrix style loss, feature content loss and total variation.

The one implementation of each loss: training, add-style, the slow path,
evaluation and the benchmarks all import these.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTENT_LAYER = "relu4_2"


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix F F^T / (C*H*W) of a (B, C, H, W) feature map -> (B, C, C)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(
    output_grams: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float] | None = None,
    relative: bool = False,
) -> torch.Tensor:
    """Per-sample squared Frobenius distance between Gram matrices, summed over
    layers (weight 1 each unless given), averaged over the batch.

    Targets are (B, C, C) for one target per sample, or (1, C, C) to broadcast.
    ``relative`` divides each layer's distance by ||target||^2: with caffe VGG
    weights the absolute relu4_1 term is ~1000x the others, so training on
    relative errors keeps the colour/texture layers from being ignored.
    """
    total = None
    for layer, gram in output_grams.items():
        weight = 1.0 if layer_weights is None else layer_weights[layer]
        target = target_grams[layer]
        per_sample = (gram - target).pow(2).sum(dim=(1, 2))
        if relative:
            per_sample = per_sample / target.pow(2).sum(dim=(1, 2)).clamp_min(1e-12)
        term = weight * per_sample.mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one layer")
    return total


def content_loss(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of feature maps (Johnson et al.'s feature loss)."""
    return (output_features - target_features).pow(2).mean()


def content_change(output_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Relative content change ||F(out) - F(photo)||^2 / ||F(photo)||^2 per sample, batch mean.

    Scale-free, so it can be compared across images and layers (evaluation metric)."""
    diff = (output_features - target_features).pow(2).flatten(1).sum(1)
    norm = target_features.pow(2).flatten(1).sum(1).clamp_min(1e-12)
    return (diff / norm).mean()


def total_variation(image: torch.Tensor, circular: bool = False) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (smoothness prior).

    ``circular``: the last row and column are neighbours of the first (a tileable image)."""
    if circular:
        dh = (image - image.roll(1, dims=-2)).abs().mean()
        dw = (image - image.roll(1, dims=-1)).abs().mean()
        return dh + dw
    dh = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dw = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dh + dw


@dataclass(frozen=True)
class WeightedTerms:
    """The weighted terms of the style-transfer objective (tensors; ``total`` is their sum)."""

    total: torch.Tensor
    style: torch.Tensor
    content: torch.Tensor
    tv: torch.Tensor


def transfer_objective(
    image: torch.Tensor,
    output_grams: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    output_content: torch.Tensor | None,
    content_target: torch.Tensor | None,
    *,
    style_weight: float,
    content_weight: float,
    tv_weight: float,
    layer_weights: Mapping[str, float] | None = None,
    circular: bool = False,
) -> WeightedTerms:
    """The objective training, add-style, evaluation and the slow path all minimise, from precomputed features.

    Style: relative Gram error summed over the layers of ``output_grams`` (each times its
    ``layer_weights`` entry, default 1); content: relative feature change (zero without a
    content target: texture synthesis); plus total variation of the ``image`` pixels
    (wrapping around with ``circular``).
    """
    weights = {layer: 1.0 if layer_weights is None else layer_weights.get(layer, 1.0) for layer in output_grams}
    style = style_weight * style_loss(
        output_grams, {l: target_grams[l] for l in output_grams}, layer_weights=weights, relative=True
    )
    if output_content is None or content_target is None:
        content = style.new_zeros(())
    else:
        content = content_weight * content_change(output_content, content_target)
    tv = tv_weight * total_variation(image, circular=circular)
    return WeightedTerms(total=style + content + tv, style=style, content=content, tv=tv)


@torch.no_grad()
def target_grams(loss_network, image: torch.Tensor, layers=STYLE_LAYERS) -> dict[str, torch.Tensor]:
    """Gram targets of a style image (1, 3, H, W) for each style layer -> {layer: (1, C, C)}."""
    features = loss_network(image, tuple(layers))
    return {layer: gram_matrix(features[layer]) for layer in layers}
