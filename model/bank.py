"""The style bank: a checkpoint format that rebuilds its own network.

A bank is a folder with two files:

- ``weights.safetensors``: the `TransformerNet` state dict (no pickle, ever);
- ``manifest.json``: format name and version, the architecture config, the
  ordered style names with per-style metadata, the SHA-256 of the weights file
  and free-form training provenance.

Styles learned later (``add-style``) are stored as their own small safetensors
files holding one gamma/beta row per norm layer, with their metadata in the
safetensors header. `load_bank` appends them as extra rows. Every file is
written to a temporary name and renamed, so a kill mid-write leaves the old
file (or nothing), never a torn one.
"""

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.errors import BankFormatError, InvalidParameterError
from model.transformer import TransformerConfig, TransformerNet

log = logging.getLogger(__name__)

FORMAT_NAME = "cinstyle-bank"
FORMAT_VERSION = 1
LEARNED_FORMAT_NAME = "cinstyle-learned-style"
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_BANK_DIR = Path(__file__).parent / "checkpoints" / "default"

_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def validate_style_name(name: str) -> str:
    """Style names are also file names: lowercase letters, digits, '_' and '-'."""
    if not isinstance(name, str) or not _STYLE_NAME.fullmatch(name):
        raise InvalidParameterError(
            f"invalid style name {name!r}: use 1-64 characters of lowercase a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass
class StyleInfo:
    name: str
    kind: str = "builtin"  # "builtin" (trained into the bank) or "learned" (added later)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.metadata}


@dataclass
class StyleBank:
    """A loaded bank: the network (eval mode) and the ordered styles of its rows."""

    config: TransformerConfig
    styles: list[StyleInfo]
    network: TransformerNet
    fingerprint: str  # SHA-256 of the base weights file; learned rows are tied to it
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def style_names(self) -> list[str]:
        return [s.name for s in self.styles]

    def index(self, name: str) -> int:
        return self.style_names.index(name)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; banks are read by other users (e.g. a container's)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                             metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_bank(
    bank_dir: Path | str,
    network: TransformerNet,
    styles: Iterable[StyleInfo],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``network`` and its style list as a bank folder; returns the folder."""
    bank_dir = Path(bank_dir)
    styles = list(styles)
    if len(styles) != network.config.n_styles:
        raise ValueError(f"{len(styles)} style names for a network with {network.config.n_styles} styles")
    names = [validate_style_name(s.name) for s in styles]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate style names: {names}")
    weights_path = bank_dir / WEIGHTS_FILE
    _atomic_save_safetensors(network.state_dict(), weights_path, metadata={"format": FORMAT_NAME})
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": network.config.to_dict(),
        "styles": [{"name": s.name, **s.metadata} for s in styles],
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_file(weights_path),
        "provenance": provenance or {},
    }
    atomic_write_bytes(bank_dir / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    return bank_dir


def _read_manifest(bank_dir: Path) -> dict[str, Any]:
    manifest_path = bank_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BankFormatError(f"{bank_dir} is not a cinstyle bank: {MANIFEST_FILE} not found")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BankFormatError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BankFormatError(f"{manifest_path} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BankFormatError(
            f"{manifest_path} has format_version {manifest.get('format_version')!r}; "
            f"this cinstyle reads {FORMAT_VERSION}"
        )
    return manifest


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BankFormatError(f"{path} is not a readable safetensors file: {exc}") from exc


def load_bank(path: Path | str | None = None, learned_dir: Path | str | None = None,
              device: str | torch.device = "cpu") -> StyleBank:
    """Load a bank folder (or its manifest path), merging learned styles from ``learned_dir``."""
    bank_dir = Path(path) if path is not None else DEFAULT_BANK_DIR
    if bank_dir.is_file() and bank_dir.name == MANIFEST_FILE:
        bank_dir = bank_dir.parent
    if not bank_dir.is_dir():
        raise BankFormatError(f"checkpoint {bank_dir} is not a bank folder (expected {MANIFEST_FILE} + {WEIGHTS_FILE})")
    manifest = _read_manifest(bank_dir)
    try:
        config = TransformerConfig.from_dict(manifest["config"])
        styles = [StyleInfo(name=validate_style_name(s["name"]), kind="builtin",
                            metadata={k: v for k, v in s.items() if k != "name"}) for s in manifest["styles"]]
    except (KeyError, TypeError, ValueError, InvalidParameterError) as exc:
        raise BankFormatError(f"{bank_dir / MANIFEST_FILE} has a bad config or style list: {exc}") from exc
    if len(styles) != config.n_styles:
        raise BankFormatError(f"manifest lists {len(styles)} styles but the config says {config.n_styles}")
    weights_path = bank_dir / manifest.get("weights_file", WEIGHTS_FILE)
    if weights_path.parent != bank_dir:
        raise BankFormatError("weights_file must be a file inside the bank folder")
    if not weights_path.is_file():
        raise BankFormatError(f"weights file {weights_path} not found")
    fingerprint = sha256_file(weights_path)
    if manifest.get("weights_sha256") not in (None, fingerprint):
        raise BankFormatError(
            f"{weights_path} does not match the SHA-256 recorded in the manifest (corrupt or replaced)")
    state = _load_safetensors(weights_path)

    network = TransformerNet(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BankFormatError(f"{weights_path} does not fit the manifest's architecture: {exc}") from exc

    bank = StyleBank(config=config, styles=styles, network=network, fingerprint=fingerprint,
                     provenance=manifest.get("provenance", {}), path=bank_dir)
    if learned_dir is not None:
        for learned_path in sorted(Path(learned_dir).glob("*.safetensors")):
            try:
                add_learned_style(bank, *load_learned_style(learned_path))
            except BankFormatError as exc:
                log.warning("skipping learned style %s: %s", learned_path, exc)
    bank.network.eval().requires_grad_(False)
    bank.network.to(device)
    return bank


def style_rows(network: TransformerNet, index: int) -> dict[str, torch.Tensor]:
    """The gamma/beta row of one style, keyed like the state dict ('<layer>.gamma')."""
    rows = {}
    for name, module in network.named_modules():
        if hasattr(module, "gamma") and hasattr(module, "beta") and module is not network:
            rows[f"{name}.gamma"] = module.gamma[index].detach().clone()
            rows[f"{name}.beta"] = module.beta[index].detach().clone()
    return rows


def save_learned_style(path: Path | str, name: str, rows: dict[str, torch.Tensor],
                       base_fingerprint: str, metadata: dict[str, Any] | None = None) -> Path:
    """Write one learned style (its gamma/beta rows) as a small safetensors file."""
    path = Path(path)
    validate_style_name(name)
    header = {
        "format": LEARNED_FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "name": name,
        "base_fingerprint": base_fingerprint,
        "metadata": json.dumps(metadata or {}),
    }
    _atomic_save_safetensors(rows, path, metadata=header)
    return path


def load_learned_style(path: Path | str) -> tuple[str, dict[str, torch.Tensor], str, dict[str, Any]]:
    """Read a learned-style file -> (name, rows, base_fingerprint, metadata)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            rows = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BankFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    if header.get("format") != LEARNED_FORMAT_NAME:
        raise BankFormatError(f"{path} is not a {LEARNED_FORMAT_NAME} file")
    try:
        name = validate_style_name(header["name"])
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError, InvalidParameterError) as exc:
        raise BankFormatError(f"{path} has a bad header: {exc}") from exc
    return name, rows, header.get("base_fingerprint", ""), metadata


def add_learned_style(bank: StyleBank, name: str, rows: dict[str, torch.Tensor],
                      base_fingerprint: str, metadata: dict[str, Any] | None = None) -> None:
    """Append a learned style as a new row of every norm layer of ``bank.network``."""
    if base_fingerprint != bank.fingerprint:
        raise BankFormatError(f"learned style {name!r} was fitted to a different bank (fingerprint mismatch)")
    if name in bank.style_names:
        raise BankFormatError(f"style {name!r} is already in the bank")
    network = bank.network
    state = network.state_dict()
    row_keys = {k for k in state if k.endswith((".gamma", ".beta"))}
    if set(rows) != row_keys:
        raise BankFormatError(f"learned style {name!r} does not have one row per norm layer of this bank")
    for key in row_keys:
        if rows[key].shape != state[key].shape[1:]:
            raise BankFormatError(f"learned style {name!r}: {key} has shape {tuple(rows[key].shape)}")
        state[key] = torch.cat([state[key], rows[key].to(state[key]).unsqueeze(0)])
    config = TransformerConfig.from_dict({**bank.config.to_dict(), "n_styles": bank.config.n_styles + 1})
    grown = TransformerNet(config).to(next(network.parameters()).device)
    grown.load_state_dict(state)
    grown.eval().requires_grad_(False)
    bank.network, bank.config = grown, config
    bank.styles.append(StyleInfo(name=name, kind="learned", metadata=metadata or {}))


def remove_style(bank: StyleBank, name: str) -> None:
    """Drop a learned style's row from the loaded network (built-ins stay)."""
    index = bank.index(name)
    if bank.styles[index].kind != "learned":
        raise InvalidParameterError(f"style {name!r} is built in and cannot be removed")
    state = bank.network.state_dict()
    for key in [k for k in state if k.endswith((".gamma", ".beta"))]:
        state[key] = torch.cat([state[key][:index], state[key][index + 1:]])
    config = TransformerConfig.from_dict({**bank.config.to_dict(), "n_styles": bank.config.n_styles - 1})
    shrunk = TransformerNet(config).to(next(bank.network.parameters()).device)
    shrunk.load_state_dict(state)
    shrunk.eval().requires_grad_(False)
    bank.network, bank.config = shrunk, config
    del bank.styles[index]
