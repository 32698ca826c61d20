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

Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, var) of one norm layer, each (B, C)


class NormPlan:
    """The statistics every norm layer of one forward pass uses, in execution order.

    Without ``given`` each layer uses its input's own statistics (plain instance norm) and the
    plan records them; with ``given`` (the statistics of a whole image) each layer uses those
    instead: a tile then comes out as it would inside the whole-image pass."""

    def __init__(self, given: list[Stats] | None = None) -> None:
        self._given = iter(given) if given is not None else None
        self.seen: list[Stats] = []

    def folds_norms(self, x: torch.Tensor) -> bool:
        """Whether a convolution may take the next norm into its weights (`ConvCIN`): given statistics, one
        sample, and not while exporting to ONNX (whose graph takes the statistics as inputs)."""
        return self._given is not None and x.shape[0] == 1 and not torch.onnx.is_in_onnx_export()

    def take_given(self) -> Stats | None:
        """The next norm layer's given statistics (recorded as seen); None where each layer measures its own."""
        if self._given is None:
            return None
        stats = next(self._given)
        self.seen.append(stats)
        return stats

    def normalize(self, norm: ConditionalInstanceNorm2d, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """``norm`` applied to ``x`` with the given statistics, or with its own (recorded)."""
        stats = self.take_given()
        if stats is not None:
            return norm(x, style_weights, stats)
        output, stats = norm.forward_measured(x, style_weights)
        self.seen.append(stats)
        return output


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
    # Dilation of the residual blocks' 3x3 convolutions: each block sees 2 * dilation px further at 1/4x
    # for the same cost, so the network can paint larger structures (issue #19).
    residual_dilation: int = 1

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
        if self.residual_dilation < 1:
            raise ValueError(f"residual_dilation must be >= 1, got {self.residual_dilation}")

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "channels": list(self.channels)}
        if self.decoder_channels is None:
            del data["decoder_channels"]  # banks written before the field existed stay byte-identical
        else:
            data["decoder_channels"] = list(self.decoder_channels)
        if self.residual_dilation == 1:
            del data["residual_dilation"]  # likewise
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
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        n_styles: int,
        upsample: bool = False,
        relu: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(dilation * (kernel // 2))
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, dilation=dilation)
        self.norm = ConditionalInstanceNorm2d(c_out, n_styles)
        self.relu = relu

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, plan: NormPlan | None = None) -> torch.Tensor:
        if self.upsample:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        x = self.pad(x)
        if plan is None:
            x = self.norm(self.conv(x), style_weights)
        elif plan.folds_norms(x):
            x = self._conv_with_norm_folded_in(x, style_weights, plan.take_given())
        else:
            x = plan.normalize(self.norm, self.conv(x), style_weights)
        return x.relu_() if self.relu else x  # in place: one full-size buffer fewer per layer

    def _conv_with_norm_folded_in(self, x: torch.Tensor, style_weights: torch.Tensor, stats: Stats) -> torch.Tensor:
        """Convolution then norm with given statistics, as one convolution: the norm is then a scale and shift
        per channel, which the convolution's weights and bias take in (one full-size pass fewer per layer,
        ~12 % of a tile's time in eager torch on the CPU). One sample: the weights are that sample's."""
        scale, shift = self.norm.scale_shift(style_weights, stats, x.dtype)
        weight = self.conv.weight * scale[0, :, None, None, None]
        bias = torch.addcmul(shift[0], self.conv.bias, scale[0])
        return nn.functional.conv2d(x, weight, bias, self.conv.stride, dilation=self.conv.dilation)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, n_styles: int, dilation: int = 1) -> None:
        super().__init__()
        self.first = ConvCIN(channels, channels, 3, 1, n_styles, dilation=dilation)
        self.second = ConvCIN(channels, channels, 3, 1, n_styles, relu=False, dilation=dilation)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor, plan: NormPlan | None = None) -> torch.Tensor:
        return x + self.second(self.first(x, style_weights, plan), style_weights, plan)


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
        self.residuals = nn.ModuleList(
            [ResidualBlock(c3, n, config.residual_dilation) for _ in range(config.n_residual)]
        )
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
        return self._body(pad_to_stride(image), style_weights)[..., :height, :width]

    def forward_with_stats(
        self, image: torch.Tensor, style_weights: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        """`forward`, every norm layer using the given statistics (flat, as `norm_stats` returns them)."""
        plan = NormPlan(self.split_stats(mean, var))
        if torch.onnx.is_in_onnx_export():
            return self._body(image, style_weights, plan)
        height, width = image.shape[-2:]
        return self._body(pad_to_stride(image), style_weights, plan)[..., :height, :width]

    def norm_stats(self, image: torch.Tensor, style_weights: torch.Tensor) -> Stats:
        """The statistics every norm layer sees in a plain `forward` of ``image``: (mean, var), each
        (B, sum of the norm layers' widths), layers in execution order."""
        plan = NormPlan()
        x = image if torch.onnx.is_in_onnx_export() else pad_to_stride(image)
        self._body(x, style_weights, plan, through_norms_only=True)
        return torch.cat([m for m, _ in plan.seen], dim=1), torch.cat([v for _, v in plan.seen], dim=1)

    def norm_widths(self) -> list[int]:
        return [layer.num_features for layer in self.norm_layers()]

    def split_stats(self, mean: torch.Tensor, var: torch.Tensor) -> list[Stats]:
        widths = self.norm_widths()
        if mean.shape[-1] != sum(widths) or var.shape != mean.shape:
            raise ValueError(
                f"norm statistics must be two (B, {sum(widths)}) tensors, got {tuple(mean.shape)}, {tuple(var.shape)}"
            )
        return list(zip(mean.split(widths, dim=1), var.split(widths, dim=1), strict=True))

    def _body(
        self,
        x: torch.Tensor,
        style_weights: torch.Tensor,
        plan: NormPlan | None = None,
        through_norms_only: bool = False,
    ) -> torch.Tensor:
        for layer in self.encoder:
            x = layer(x, style_weights, plan)
        for block in self.residuals:
            x = block(x, style_weights, plan)
        for layer in self.decoder:
            x = layer(x, style_weights, plan)
        if through_norms_only:
            return x  # the last norm layer is done: the output convolution is not needed
        return torch.sigmoid(self.out_conv(self.out_pad(x)))

    def norm_layers(self) -> list[ConditionalInstanceNorm2d]:
        return [m for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d)]


STRIDE = 4  # two stride-2 stages: a side that is a multiple of this comes back exactly


def pad_to_stride(image: torch.Tensor) -> torch.Tensor:
    """Reflection-pad bottom and right to a multiple of `STRIDE` (crop the output back to the input size)."""
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % STRIDE, (-width) % STRIDE
    return nn.functional.pad(image, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else image


def receptive_radius(config: TransformerConfig) -> int:
    """How far (in input pixels) an output pixel sees: a tile's outer this-many pixels differ from the
    whole-image pass; everything further in is identical when the norm statistics are the whole image's."""
    outer = config.outer_kernel // 2
    # first and last convolution, the two 3x3 at 1x (stride-2 conv, last decoder conv), the two at 1/2x,
    # the residual 3x3s at 1/4x; plus one stride of slack for the sampling grid
    return 2 * outer + 1 + 1 + 2 * (1 + 1) + 4 * 2 * config.n_residual * config.residual_dilation + STRIDE
