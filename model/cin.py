"""Conditional instance normalisation (Dumoulin, Shlens & Kudlur, ICLR 2017)."""

import torch
from torch import nn


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose scale and shift are chosen by a style-weight vector.

    ``gamma`` and ``beta`` hold one row per style. A (batch x n_styles) weight
    tensor mixes the rows, so a one-hot row is a single style and a convex
    combination is a blend (the paper's Section 4.3).
    """

    def __init__(self, num_features: int, n_styles: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_features < 1 or n_styles < 1:
            raise ValueError(f"num_features and n_styles must be >= 1, got {num_features}, {n_styles}")
        self.num_features = num_features
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(n_styles, num_features))
        self.beta = nn.Parameter(torch.zeros(n_styles, num_features))

    @property
    def n_styles(self) -> int:
        return self.gamma.shape[0]

    def forward(
        self, x: torch.Tensor, style_weights: torch.Tensor, stats: "tuple[torch.Tensor, torch.Tensor] | None" = None
    ) -> torch.Tensor:
        """Normalise ``x`` with its own statistics, or with ``stats`` = (mean, var), each (B, C): the
        statistics of a larger image that ``x`` is a tile of (tiled inference, `model.tiling`)."""
        if style_weights.shape != (x.shape[0], self.n_styles):
            raise ValueError(
                f"style_weights must have shape (batch={x.shape[0]}, n_styles={self.n_styles}), "
                f"got {tuple(style_weights.shape)}"
            )
        weights = style_weights.to(self.gamma.dtype)
        gamma = weights @ self.gamma  # (B, C)
        beta = weights @ self.beta
        if stats is None:
            out = nn.functional.instance_norm(x, eps=self.eps)
        else:
            mean, var = (s.to(x.dtype)[:, :, None, None] for s in stats)
            out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * gamma[:, :, None, None].to(x.dtype) + beta[:, :, None, None].to(x.dtype)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and (biased) variance of ``x`` (B, C, H, W): what instance norm uses."""
    var, mean = torch.var_mean(x, dim=(2, 3), unbiased=False)
    return mean, var
