"""The bank blend nearest to an unseen painting: a head start for the slow path.

Every built-in style is run on the photo (at a small working size, so this costs
a few network passes), each output is scored by the slow path's own style term
(relative Gram error against the painting), and 25/50/75 % blends of the two
best styles are tried as well. The winner's output at full size is where the
pixel optimisation starts instead of the bare photo.
"""

from dataclasses import dataclass

import torch

from model.imageio import downscale_tensor
from model.losses import STYLE_LAYERS, gram_matrix, style_loss, target_grams
from model.runner import as_runner
from model.stylize import stylize_tensor
from model.vgg import VGG19Features

SCORING_SIDE = 256  # longer side the candidates are scored at
STYLE_MAX_SIDE = 512  # as SlowConfig.style_max_side


@dataclass(frozen=True)
class NearestBlend:
    weights: torch.Tensor  # (1, n_styles), sums to 1
    image: torch.Tensor  # the network's output for the content at full size, (1, 3, H, W) in [0, 1]
    style_loss: float  # relative Gram error of the winner at the scoring size

    def spec(self, names: list[str] | tuple[str, ...]) -> str:
        """The blend as a style spec string (``name:weight,...``)."""
        return ",".join(f"{names[i]}:{w:g}" for i, w in enumerate(self.weights[0].tolist()) if w > 0)


def _shrink(image: torch.Tensor, side: int) -> torch.Tensor:
    return downscale_tensor(image, side, min_side=16)


@torch.no_grad()
def nearest_blend(
    network,
    content: torch.Tensor,
    style: torch.Tensor,
    loss_network: VGG19Features,
    style_layers: tuple[str, ...] = STYLE_LAYERS,
) -> NearestBlend:
    """The single style or two-style blend of ``network`` whose output on ``content`` is closest to ``style``.

    ``network`` is a `TransformerNet` or any `model.runner.Runner` (the onnx backend).
    """
    network = as_runner(network)
    n_styles = network.n_styles
    device = next(loss_network.parameters()).device
    small = _shrink(content, SCORING_SIDE)
    # Shrink the painting by the photo's factor, as the slow path's coarse stages do,
    # so brush strokes keep their size relative to the picture.
    factor = max(small.shape[-2:]) / max(content.shape[-2:])
    style = _shrink(style.to(device), max(STYLE_MAX_SIDE, 16))
    targets = target_grams(loss_network, _shrink(style, max(16, round(max(style.shape[-2:]) * factor))), style_layers)

    def score(weights: torch.Tensor) -> float:
        output = stylize_tensor(network, small, weights).to(device)
        features = loss_network(output, style_layers)
        return style_loss({l: gram_matrix(features[l]) for l in style_layers}, targets, relative=True).item()

    singles = sorted((score(torch.eye(n_styles)[i : i + 1]), i) for i in range(n_styles))
    candidates = [(loss, torch.eye(n_styles)[i : i + 1]) for loss, i in singles[:1]]
    if n_styles > 1:
        (_, first), (_, second) = singles[0], singles[1]
        for share in (0.25, 0.5, 0.75):
            weights = torch.zeros(1, n_styles)
            weights[0, first], weights[0, second] = 1 - share, share
            candidates.append((score(weights), weights))
    loss, weights = min(candidates, key=lambda c: c[0])
    image = stylize_tensor(network, content, weights).to(device=content.device, dtype=content.dtype)
    return NearestBlend(weights=weights, image=image, style_loss=loss)
