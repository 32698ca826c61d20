"""Parsing and validating style specs: ``starry_night`` or ``a:0.7,b:0.3``."""

import math
from dataclasses import dataclass

import torch

from model.errors import InvalidStyleWeightsError, UnknownStyleError


@dataclass(frozen=True)
class StyleMix:
    """Normalised style weights (sum 1), in the order the user gave them."""

    weights: tuple[tuple[str, float], ...]

    def header(self) -> str:
        """``name:w,name:w`` with up to 4 decimals (the X-Style-Weights header)."""
        return ",".join(f"{name}:{round(weight, 4):g}" for name, weight in self.weights)

    def vector(self, style_names: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """(1, n_styles) weight row for the network."""
        row = torch.zeros(1, len(style_names), device=device)
        for name, weight in self.weights:
            row[0, style_names.index(name)] = weight
        return row


def parse_style_spec(spec: str, known: list[str]) -> StyleMix:
    """Parse ``name`` or ``name:w,name:w,...`` against the known style names.

    Weights must be finite and >= 0, not all zero, each name at most once; they
    are normalised to sum to one. A bare name means weight 1.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidStyleWeightsError("the style spec is empty; give a style name or name:weight,name:weight")
    entries: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise InvalidStyleWeightsError(f"empty entry in style spec {spec!r}")
        name, sep, raw_weight = part.partition(":")
        name = name.strip()
        if sep:
            try:
                weight = float(raw_weight)
            except ValueError:
                raise InvalidStyleWeightsError(f"weight {raw_weight!r} for style {name!r} is not a number") from None
        else:
            weight = 1.0
        if not math.isfinite(weight):
            raise InvalidStyleWeightsError(f"weight for style {name!r} must be finite, got {raw_weight.strip()}")
        if weight < 0:
            raise InvalidStyleWeightsError(f"weight for style {name!r} must be >= 0, got {weight:g}")
        if name not in known:
            shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
            raise UnknownStyleError(f"unknown style {name!r}; available styles: {shown}")
        if any(name == seen for seen, _ in entries):
            raise InvalidStyleWeightsError(f"style {name!r} appears more than once in {spec!r}")
        entries.append((name, weight))
    total = sum(weight for _, weight in entries)
    if total <= 0:
        raise InvalidStyleWeightsError(f"style weights in {spec!r} are all zero; at least one must be > 0")
    return StyleMix(tuple((name, weight / total) for name, weight in entries))
