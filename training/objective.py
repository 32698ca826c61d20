"""The training objective: the shared losses of `model.losses`, weighted as in training.

Joint training, add-style and evaluation all score a network output with these
functions, so "the same losses and weights as training" holds by construction.
"""

from collections.abc import Mapping

import torch

from model.losses import CONTENT_LAYER, STYLE_LAYERS, content_change, gram_matrix, style_loss, total_variation
from model.vgg import VGG19Features
from training.config import LossWeights


def weighted_loss(output: torch.Tensor, output_grams: Mapping[str, torch.Tensor],
                  target_grams: Mapping[str, torch.Tensor], output_content: torch.Tensor,
                  content_target: torch.Tensor, weights: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective from precomputed features -> (total, {"total", "style", "content", "tv"} weighted terms).

    Style: relative Gram error summed over the layers of ``output_grams``; content:
    relative feature change; plus total variation of the ``output`` pixels.
    """
    loss_style = style_loss(output_grams, {l: target_grams[l] for l in output_grams},
                            layer_weights={l: weights.layer_weight(l) for l in output_grams}, relative=True)
    loss_content = content_change(output_content, content_target)
    loss_tv = total_variation(output)
    loss = weights.style * loss_style + weights.content * loss_content + weights.tv * loss_tv
    terms = {"total": loss.item(), "style": weights.style * loss_style.item(),
             "content": weights.content * loss_content.item(), "tv": weights.tv * loss_tv.item()}
    return loss, terms


def transfer_loss(loss_network: VGG19Features, output: torch.Tensor, content: torch.Tensor,
                  grams: Mapping[str, torch.Tensor], weights: LossWeights,
                  style_layers: tuple[str, ...] = STYLE_LAYERS,
                  content_layer: str = CONTENT_LAYER) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of a stylized batch ``output`` against the unstylized ``content`` batch.

    ``grams`` are the Gram targets per style layer, (B, C, C) or (1, C, C).
    Returns (total, weighted terms) as `weighted_loss`.
    """
    features = loss_network(output, (*style_layers, content_layer))
    with torch.no_grad():
        content_target = loss_network(content, (content_layer,))[content_layer]
    return weighted_loss(output, {l: gram_matrix(features[l]) for l in style_layers}, grams,
                         features[content_layer], content_target, weights)
