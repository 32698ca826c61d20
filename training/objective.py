"""The training objective: the shared losses of `model.losses`, weighted as in training.

Joint training, add-style and evaluation all score a network output with these
functions, so "the same losses and weights as training" holds by construction.
"""

from collections.abc import Mapping

import torch

from model.losses import CONTENT_LAYER, STYLE_LAYERS, gram_matrix, transfer_objective
from model.vgg import VGG19Features
from training.config import LossWeights


def weighted_loss(
    output: torch.Tensor,
    output_grams: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    output_content: torch.Tensor,
    content_target: torch.Tensor,
    weights: LossWeights,
    as_tensors: bool = False,
) -> tuple[torch.Tensor, dict[str, float]] | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`model.losses.transfer_objective` with training's `LossWeights` -> (total, weighted terms as floats, or
    with ``as_tensors`` as detached 0-d tensors: reading a float waits for a GPU to finish the step)."""
    terms = transfer_objective(
        output,
        output_grams,
        target_grams,
        output_content,
        content_target,
        style_weight=weights.style,
        content_weight=weights.content,
        tv_weight=weights.tv,
        layer_weights=weights.style_layer_weights,
    )
    tensors = {"total": terms.total, "style": terms.style, "content": terms.content, "tv": terms.tv}
    if as_tensors:
        return terms.total, {name: value.detach() for name, value in tensors.items()}
    return terms.total, dict(zip(tensors, torch.stack(list(tensors.values())).tolist(), strict=True))


def transfer_loss(
    loss_network: VGG19Features,
    output: torch.Tensor,
    content: torch.Tensor,
    grams: Mapping[str, torch.Tensor],
    weights: LossWeights,
    style_layers: tuple[str, ...] = STYLE_LAYERS,
    content_layer: str = CONTENT_LAYER,
    as_tensors: bool = False,
) -> tuple[torch.Tensor, dict[str, float]] | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted loss of a stylized batch ``output`` against the unstylized ``content`` batch.

    ``grams`` are the Gram targets per style layer, (B, C, C) or (1, C, C).
    Returns (total, weighted terms) as `weighted_loss`.
    """
    features = loss_network(output, (*style_layers, content_layer))
    with torch.no_grad():
        content_target = loss_network(content, (content_layer,))[content_layer]
    return weighted_loss(
        output,
        {l: gram_matrix(features[l]) for l in style_layers},
        grams,
        features[content_layer],
        content_target,
        weights,
        as_tensors,
    )
