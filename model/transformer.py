"""The feed-forward style transfer network: encoder, residual blocks, decoder.

Johnson et al. (2016) layout as adapted by Dumoulin et al. (2017): reflection
padding everywhere, nearest-neighbour upsampling followed by a convolution
instead of transposed convolutions (no checkerboard artefacts), and a
`ConditionalInstanceNorm2d` after every convolution but the last.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from model.cin import ConditionalInstanceNorm2d


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a `TransformerNet`; stored in every bank manifest."""

    n_styles: int
    channels: tuple[int, int, int] = (32, 64, 128)  # encoder widths at 1x, 1/2x, 1/4x
    n_residual: int = 5
    outer_kernel: int = 9  # kernel of the first and last convolution
    # Decoder widths at 1/2x and 1x; None mirrors the encoder. A narrow decoder
    # is where most of the full-resolution cost goes, so it is the speed knob.
    decoder_channels: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.n_styles < 1:
            raise ValueError(f"n_styles must be >= 1, got {self.n_styles}")
        if len(self.channels) != 3 or any(int(c) < 1 for c in self.channels):
            raise ValueError(f"channels must be three positive widths, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.decoder_channels is not None:
            if len(self.decoder_channels) != 2 or any(int(c) < 1 for c in self.decoder_channels):
                raise ValueError(f"decoder_channels must be two positive widths, got {self.decoder_channels!r}")
            object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if self.n_residual < 0:
            raise ValueError(f"n_residual must be >= 0, got {self.n_residual}")
        if self.outer_kernel < 1 or self.outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be a positive odd number, got {self.outer_kernel}")

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "channels": list(self.channels)}
        if self.decoder_channels is None:
            del data["decoder_channels"]  # banks written before the field existed stay byte-identical
        else:
            data["decoder_channels"] = list(self.decoder_channels)
        return data

    @property
    def decoder_widths(self) -> tuple[int, int]:
        return self.decoder_channels or (self.channels[1], self.channels[0])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TransformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields: {sorted(unknown)}")
        values = dict(data)
        for key in ("channels", "decoder_channels"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


class ConvCIN(nn.Module):
    """Reflection-padded convolution, optional 2x nearest upsampling before it,
    conditional instance norm and ReLU after it."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, n_styles: int, upsample: bool = False, relu: bool = True
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)
        self.norm = ConditionalInstanceNorm2d(c_out, n_styles)
        self.relu = relu

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), style_weights)
        return torch.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, n_styles: int) -> None:
        super().__init__()
        self.first = ConvCIN(channels, channels, 3, 1, n_styles)
        self.second = ConvCIN(channels, channels, 3, 1, n_styles, relu=False)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x, style_weights), style_weights)


class TransformerNet(nn.Module):
    """Maps an RGB batch in [0, 1] and style weights (B x n_styles) to RGB in [0, 1]."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3, k, n = *config.channels, config.outer_kernel, config.n_styles
        d2, d1 = config.decoder_widths
        self.encoder = nn.ModuleList(
            [
                ConvCIN(3, c1, k, 1, n),
                ConvCIN(c1, c2, 3, 2, n),
                ConvCIN(c2, c3, 3, 2, n),
            ]
        )
        self.residuals = nn.ModuleList([ResidualBlock(c3, n) for _ in range(config.n_residual)])
        self.decoder = nn.ModuleList(
            [
                ConvCIN(c3, d2, 3, 1, n, upsample=True),
                ConvCIN(d2, d1, 3, 1, n, upsample=True),
            ]
        )
        self.out_pad = nn.ReflectionPad2d(k // 2)
        self.out_conv = nn.Conv2d(d1, 3, k)

    def forward(self, image: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._body(image, style_weights)  # the ONNX runner pads and crops outside the graph
        height, width = image.shape[-2:]
        # Pad to a multiple of 4 so the two stride-2 stages and the upsampling
        # give back exactly the input size; reflection keeps borders clean.
        pad_h, pad_w = (-height) % 4, (-width) % 4
        x = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image
        return self._body(x, style_weights)[..., :height, :width]

    def _body(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder:
            x = layer(x, style_weights)
        for block in self.residuals:
            x = block(x, style_weights)
        for layer in self.decoder:
            x = layer(x, style_weights)
        return torch.sigmoid(self.out_conv(self.out_pad(x)))

    def norm_layers(self) -> list[ConditionalInstanceNorm2d]:
        return [m for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d)]
