"""The style bank: a checkpoint format that rebuilds its own network.

A bank is a folder with two live files:

- ``manifest.json``: format name and version, the architecture config, the
  ordered style names with per-style metadata, ``weights_file`` (the name of the
  weights file), its SHA-256 and free-form training provenance;
- the weights file it names: the `TransformerNet` state dict as safetensors (no
  pickle, ever). `save_bank` names it by content,
  ``weights-<first 16 hex digits of its SHA-256>.safetensors``; older banks (the
  bundled one included) use ``weights.safetensors``, which loads the same way.

Styles learned later (``add-style``) are stored as their own small safetensors
files, ``<name>.safetensors``, holding one gamma/beta row per norm layer, with
their name and metadata in the safetensors header. `load_bank` appends them as
extra rows.

A learned style is tied to its bank by the bank's *network fingerprint*
(`network_fingerprint`): the SHA-256 of every weight except the per-style
gamma/beta rows, the only weights a learned row depends on. A bank that gains
built-in rows (`promote_learned_styles`) keeps it, so styles learned on the
smaller bank still load; retraining changes it. Learned styles written by earlier
versions used the SHA-256 of the whole weights file instead: a bank accepts
its own file's SHA-256 and those its manifest lists in
``compatible_weights_sha256`` (the files it grew from).

Crash safety (a kill -9 or a power cut at any moment):

- every file is written by `atomic_write_bytes`: a temporary ``.<name>.*.tmp``
  in the same folder, fsync, rename over the target, fsync of the folder. A kill
  leaves the old file (or none) and maybe a stray ``.tmp``, never a torn file;
- `save_bank` is atomic as a whole: the weights go to a new content-named file
  first (the old manifest still names the old one), then the manifest is
  replaced (the commit point), and only then are the weights files it does not
  name deleted. The bank on disk is always the old one or the new one. Stray
  ``.tmp`` and unnamed weights files are ignored by `load_bank` and removed by
  the next `save_bank` of that folder. One writer per bank folder at a time;
- `remove_file_durably` unlinks and fsyncs the folder.

Files are written with mode 0644 whatever the umask: banks and learned styles
are read by other users (a container's, a replica's on a shared volume).

`_after_step` is a fault-injection point for tests: it is called after every
create / write / fsync / rename / unlink step of these writes, and does nothing
unless a test replaces it (e.g. with one that kills the process at the N-th step).
"""

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from model.errors import BankFormatError, InvalidParameterError
from model.transformer import TransformerConfig, TransformerNet

log = logging.getLogger(__name__)

FORMAT_NAME = "cinstyle-bank"
FORMAT_VERSION = 1
LEARNED_FORMAT_NAME = "cinstyle-learned-style"
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"  # the legacy fixed name (the bundled bank); save_bank names by content
PAINTINGS_DIR = "paintings"  # <bank>/paintings/<style>.jpg: thumbnails of the paintings (optional, <= 256 px)
# A learned style's painting thumbnail rides in its safetensors file as this uint8 tensor (JPEG bytes).
_PAINTING_KEY = "painting.jpeg"
DEFAULT_BANK_DIR = Path(__file__).parent / "checkpoints" / "default"

STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Files of a bank folder that save_bank owns: weights files (legacy or content-named) and its temp files.
_WEIGHTS_NAME = re.compile(r"^weights(-[0-9a-f]{16})?\.safetensors$")
_BANK_TEMP_NAME = re.compile(r"^\.(weights(-[0-9a-f]{16})?\.safetensors|manifest\.json)\..+\.tmp$")


def validate_style_name(name: str) -> str:
    """Style names are also file names: lowercase letters, digits, '_' and '-'."""
    if not isinstance(name, str) or not STYLE_NAME.fullmatch(name):
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
    painting: bytes | None = field(default=None, repr=False)  # a JPEG thumbnail of the painting, if known

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.metadata}


@dataclass
class StyleBank:
    """A loaded bank: the network (eval mode) and the ordered styles of its rows."""

    config: TransformerConfig
    styles: list[StyleInfo]
    network: TransformerNet
    fingerprint: str  # network_fingerprint of the base weights: learned rows are tied to it
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # Older learned styles' fingerprints this bank also accepts: the SHA-256 of its weights file and of the
    # weights files it grew from (manifest "compatible_weights_sha256"), whose networks are the same.
    compatible_fingerprints: frozenset[str] = frozenset()
    weights_sha256: str = ""  # of the weights file as loaded ("" for a bank built in memory)

    def accepts(self, base_fingerprint: str) -> bool:
        """Whether a learned style fitted to ``base_fingerprint`` fits this bank's network."""
        return base_fingerprint == self.fingerprint or base_fingerprint in self.compatible_fingerprints

    @property
    def style_names(self) -> list[str]:
        return [s.name for s in self.styles]

    def index(self, name: str) -> int:
        return self.style_names.index(name)


STYLE_ROW_SUFFIXES = (".gamma", ".beta")  # the per-style rows of a state dict; everything else is shared


def is_style_row_key(key: str) -> bool:
    return key.endswith(STYLE_ROW_SUFFIXES)


def network_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a bank's shared weights: every tensor's name, dtype, shape and bytes, but only the
    width of the per-style gamma/beta rows (not how many there are nor their values).

    A learned row depends on nothing else, so a bank that gains or loses style rows keeps its fingerprint."""
    digest = hashlib.sha256(b"cinstyle-network-fingerprint-v1\n")
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        if is_style_row_key(key):
            digest.update(json.dumps([key, str(tensor.dtype), list(tensor.shape[1:])]).encode() + b"\n")
            continue
        digest.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode() + b"\n")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _no_step(step: str, path: Path) -> None:
    pass


# Fault-injection point (tests only): called as _after_step(step, path) after each step of a durable
# write or removal, with step one of "dir-created", "temp-created", "temp-written", "temp-synced",
# "replaced", "unlinked", "dir-synced". Replace it to kill the process at a chosen step.
_after_step: Callable[[str, Path], None] = _no_step


def _fsync_dir(directory: Path) -> None:
    """Make renames, creations and unlinks in ``directory`` durable."""
    if os.name == "nt":  # directories cannot be opened for fsync there
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems cannot fsync a directory; nothing more can be done there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)
    _after_step("dir-synced", directory)


def _ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents), each durably recorded in its parent."""
    if directory.is_dir():
        return
    missing = []
    probe = directory
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _after_step("dir-created", created)
        _fsync_dir(created.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any moment leaves the old file or the new one.

    Writes a temporary ``.<name>.*.tmp`` next to ``path``, fsyncs it, renames it over ``path`` and fsyncs
    the folder (so the rename itself is durable); missing folders are created. A kill leaves at most a
    stray ``.tmp`` file behind. The file gets mode 0644 whatever the process umask: banks, learned
    styles and job results are read by other users (a container's, a replica's on a shared volume).
    """
    path = Path(path)
    _ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; fchmod is not masked by the umask
        with os.fdopen(fd, "wb") as handle:
            _after_step("temp-created", Path(tmp))
            handle.write(data)
            handle.flush()
            _after_step("temp-written", Path(tmp))
            os.fsync(handle.fileno())
            _after_step("temp-synced", Path(tmp))
        os.replace(tmp, path)
        _after_step("replaced", path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_file_durably(path: Path | str) -> None:
    """Unlink ``path`` and fsync its folder, so the removal survives a crash; a missing file is fine."""
    path = Path(path)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _after_step("unlinked", path)
    _fsync_dir(path.parent)


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bytes:
    return save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def _atomic_save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as a safetensors file with `atomic_write_bytes` (same guarantees, mode 0644)."""
    atomic_write_bytes(path, _safetensors_bytes(tensors, metadata))


def save_bank(
    bank_dir: Path | str,
    network: TransformerNet,
    styles: Iterable[StyleInfo],
    provenance: dict[str, Any] | None = None,
    compatible_weights_sha256: Iterable[str] = (),
) -> Path:
    """Write ``network`` and its style list as a bank folder; returns the folder.

    ``compatible_weights_sha256``: the weights files' SHA-256 this bank grew from (same network), whose learned
    styles, written by earlier versions with that fingerprint, it should still accept.

    Atomic as a whole (see the module docstring): the new weights go to
    ``weights-<sha256[:16]>.safetensors``, then ``manifest.json`` is replaced to name them, then the
    weights files and temp files it leaves behind are deleted. A kill at any moment leaves the old
    bank (or, for a new folder, no manifest) or the new one, either of them loadable.
    """
    bank_dir = Path(bank_dir)
    styles = list(styles)
    if len(styles) != network.config.n_styles:
        raise ValueError(f"{len(styles)} style names for a network with {network.config.n_styles} styles")
    names = [validate_style_name(s.name) for s in styles]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate style names: {names}")
    for style in styles:  # cosmetic and one file per name: written before the commit point, never torn
        if style.painting is not None:
            atomic_write_bytes(painting_thumbnail_path(bank_dir, style.name), style.painting)
    data = _safetensors_bytes(network.state_dict(), {"format": FORMAT_NAME})
    digest = hashlib.sha256(data).hexdigest()
    weights_name = f"weights-{digest[:16]}.safetensors"
    atomic_write_bytes(bank_dir / weights_name, data)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": network.config.to_dict(),
        "styles": [{"name": s.name, **s.metadata} for s in styles],
        "weights_file": weights_name,
        "weights_sha256": digest,
        "provenance": provenance or {},
    }
    compatible = sorted(set(compatible_weights_sha256) - {digest})
    if compatible:
        manifest["compatible_weights_sha256"] = compatible
    atomic_write_bytes(bank_dir / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())  # the commit point
    removed = False
    for entry in sorted(bank_dir.iterdir()):
        stale_weights = _WEIGHTS_NAME.fullmatch(entry.name) and entry.name != weights_name
        if (stale_weights or _BANK_TEMP_NAME.fullmatch(entry.name)) and entry.is_file():
            entry.unlink(missing_ok=True)
            _after_step("unlinked", entry)
            removed = True
    if removed:
        _fsync_dir(bank_dir)
    return bank_dir


def bank_weights_path(bank_dir: Path | str) -> Path:
    """The weights file the manifest of ``bank_dir`` names (``weights_file``; legacy banks: weights.safetensors)."""
    bank_dir = Path(bank_dir)
    return _weights_path(bank_dir, _read_manifest(bank_dir)[1])


def _read_manifest(bank_dir: Path) -> tuple[bytes, dict[str, Any]]:
    """The manifest's raw bytes (to notice a concurrent save) and its parsed, checked content."""
    manifest_path = bank_dir / MANIFEST_FILE
    try:
        raw = manifest_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BankFormatError(f"{bank_dir} is not a cinstyle bank: {MANIFEST_FILE} not found") from None
    try:
        manifest = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BankFormatError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BankFormatError(f"{manifest_path} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BankFormatError(
            f"{manifest_path} has format_version {manifest.get('format_version')!r}; "
            f"this cinstyle reads {FORMAT_VERSION}"
        )
    return raw, manifest


def _weights_path(bank_dir: Path, manifest: dict[str, Any]) -> Path:
    name = manifest.get("weights_file", WEIGHTS_FILE)
    if not isinstance(name, str) or not name or (bank_dir / name).parent != bank_dir or name in (".", ".."):
        raise BankFormatError("weights_file must be a file inside the bank folder")
    return bank_dir / name


def _read_weights(bank_dir: Path, manifest: dict[str, Any]) -> tuple[Path, dict[str, torch.Tensor], str]:
    """(path, state dict, SHA-256) of the manifest's weights file, hashed and parsed from the same bytes."""
    weights_path = _weights_path(bank_dir, manifest)
    try:
        data = weights_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BankFormatError(f"weights file {weights_path} not found") from None
    fingerprint = hashlib.sha256(data).hexdigest()
    if manifest.get("weights_sha256") not in (None, fingerprint):
        raise BankFormatError(
            f"{weights_path} does not match the SHA-256 recorded in the manifest (corrupt or replaced)"
        )
    try:
        state = load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as exc:
        raise BankFormatError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    return weights_path, state, fingerprint


def _manifest_bytes(bank_dir: Path) -> bytes | None:
    try:
        return (bank_dir / MANIFEST_FILE).read_bytes()
    except OSError:
        return None


def load_bank(
    path: Path | str | None = None, learned_dir: Path | str | None = None, device: str | torch.device = "cpu"
) -> StyleBank:
    """Load a bank folder (or its manifest path), merging learned styles from ``learned_dir``."""
    bank_dir = Path(path) if path is not None else DEFAULT_BANK_DIR
    if bank_dir.is_file() and bank_dir.name == MANIFEST_FILE:
        bank_dir = bank_dir.parent
    if not bank_dir.is_dir():
        raise BankFormatError(f"checkpoint {bank_dir} is not a bank folder (expected {MANIFEST_FILE} + weights)")
    for attempt in range(3):
        raw, manifest = _read_manifest(bank_dir)
        try:
            weights_path, state, weights_sha256 = _read_weights(bank_dir, manifest)
            break
        except BankFormatError:
            # A save_bank that replaced the manifest (and deleted the old weights) while we read: read again.
            if attempt == 2 or _manifest_bytes(bank_dir) in (None, raw):
                raise
    try:
        config = TransformerConfig.from_dict(manifest["config"])
        styles = [
            StyleInfo(
                name=validate_style_name(s["name"]),
                kind="builtin",
                metadata={k: v for k, v in s.items() if k != "name"},
                painting=_read_painting_thumbnail(bank_dir, s["name"]),
            )
            for s in manifest["styles"]
        ]
    except (KeyError, TypeError, ValueError, InvalidParameterError) as exc:
        raise BankFormatError(f"{bank_dir / MANIFEST_FILE} has a bad config or style list: {exc}") from exc
    if len(styles) != config.n_styles:
        raise BankFormatError(f"manifest lists {len(styles)} styles but the config says {config.n_styles}")

    network = TransformerNet(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BankFormatError(f"{weights_path} does not fit the manifest's architecture: {exc}") from exc

    compatible = manifest.get("compatible_weights_sha256", [])
    if not isinstance(compatible, list) or not all(isinstance(c, str) for c in compatible):
        raise BankFormatError(f"{bank_dir / MANIFEST_FILE}: compatible_weights_sha256 must be a list of strings")
    bank = StyleBank(
        config=config,
        styles=styles,
        network=network,
        fingerprint=network_fingerprint(state),
        provenance=manifest.get("provenance", {}),
        path=bank_dir,
        compatible_fingerprints=frozenset([weights_sha256, *compatible]),
        weights_sha256=weights_sha256,
    )
    if learned_dir is not None:
        for learned_path in sorted(Path(learned_dir).glob("*.safetensors")):
            try:
                add_learned_style(bank, *load_learned_style(learned_path))
            except BankFormatError as exc:
                log.warning("skipping learned style %s: %s", learned_path, exc)
    bank.network.eval().requires_grad_(False)
    bank.network.to(device)
    return bank


def painting_thumbnail_path(bank_dir: Path | str, name: str) -> Path:
    return Path(bank_dir) / PAINTINGS_DIR / f"{validate_style_name(name)}.jpg"


def _read_painting_thumbnail(bank_dir: Path, name: str) -> bytes | None:
    try:
        return painting_thumbnail_path(bank_dir, name).read_bytes()
    except (OSError, InvalidParameterError):
        return None  # thumbnails are optional: a bank trained elsewhere may have none


def style_rows(network: TransformerNet, index: int) -> dict[str, torch.Tensor]:
    """The gamma/beta row of one style, keyed like the state dict ('<layer>.gamma')."""
    rows = {}
    for name, module in network.named_modules():
        if hasattr(module, "gamma") and hasattr(module, "beta") and module is not network:
            rows[f"{name}.gamma"] = module.gamma[index].detach().clone()
            rows[f"{name}.beta"] = module.beta[index].detach().clone()
    return rows


def learned_style_to_bytes(
    name: str,
    rows: dict[str, torch.Tensor],
    base_fingerprint: str,
    metadata: dict[str, Any] | None = None,
    painting: bytes | None = None,
) -> bytes:
    """One learned style (its gamma/beta rows, the base bank's fingerprint, metadata, and a JPEG thumbnail of its
    painting) as safetensors bytes: the content of a ``<name>.safetensors`` file, and of a learned style kept in
    Redis (fleet mode)."""
    validate_style_name(name)
    if painting is not None:
        rows = {**rows, _PAINTING_KEY: torch.frombuffer(bytearray(painting), dtype=torch.uint8)}
    header = {
        "format": LEARNED_FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "name": name,
        "base_fingerprint": base_fingerprint,
        "metadata": json.dumps(metadata or {}),
    }
    return _safetensors_bytes(rows, header)


LearnedStyleParts = tuple[str, dict[str, torch.Tensor], str, dict[str, Any], bytes | None]


def learned_style_from_bytes(data: bytes, expected_name: str, source: str = "learned style") -> LearnedStyleParts:
    """Parse `learned_style_to_bytes` output -> (name, rows, base_fingerprint, metadata, painting thumbnail or None).

    The name in the header must be ``expected_name`` (the file name, or the Redis field), else `BankFormatError`.
    """
    try:
        header = _safetensors_header(data)
        rows = load_safetensors_bytes(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise BankFormatError(f"{source} is not a readable safetensors file: {exc}") from exc
    if header.get("format") != LEARNED_FORMAT_NAME:
        raise BankFormatError(f"{source} is not a {LEARNED_FORMAT_NAME} file")
    try:
        name = validate_style_name(header["name"])
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError, InvalidParameterError) as exc:
        raise BankFormatError(f"{source} has a bad header: {exc}") from exc
    if name != expected_name:
        raise BankFormatError(
            f"{source} holds the learned style {name!r} but is named {expected_name!r}; "
            f"a learned style's file must be named {name}.safetensors"
        )
    painting = rows.pop(_PAINTING_KEY, None)
    painting_bytes = painting.numpy().tobytes() if painting is not None else None
    return name, rows, header.get("base_fingerprint", ""), metadata, painting_bytes


def _safetensors_header(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (the 8-byte length, then the JSON header)."""
    if len(data) < 8:
        raise ValueError("too short for a safetensors header")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError("header length beyond the end of the data")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def save_learned_style(
    path: Path | str,
    name: str,
    rows: dict[str, torch.Tensor],
    base_fingerprint: str,
    metadata: dict[str, Any] | None = None,
    painting: bytes | None = None,
) -> Path:
    """Write one learned style (its gamma/beta rows, and its painting's thumbnail if given) as a small
    safetensors file, atomically, mode 0644.

    ``path`` should be ``<name>.safetensors``: `load_learned_style` refuses a file whose name differs.
    """
    path = Path(path)
    atomic_write_bytes(path, learned_style_to_bytes(name, rows, base_fingerprint, metadata, painting))
    return path


def load_learned_style(path: Path | str) -> LearnedStyleParts:
    """Read a learned-style file -> (name, rows, base_fingerprint, metadata, painting thumbnail or None).

    The name in the header must match the file name (``<name>.safetensors``), else `BankFormatError`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BankFormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    return learned_style_from_bytes(data, expected_name=path.stem, source=str(path))


def add_learned_style(
    bank: StyleBank,
    name: str,
    rows: dict[str, torch.Tensor],
    base_fingerprint: str,
    metadata: dict[str, Any] | None = None,
    painting: bytes | None = None,
) -> None:
    """Append a learned style as a new row of every norm layer of ``bank.network``."""
    if not bank.accepts(base_fingerprint):
        raise BankFormatError(f"learned style {name!r} was fitted to a different bank (fingerprint mismatch)")
    if name in bank.style_names:
        raise BankFormatError(f"style {name!r} is already in the bank")
    network = bank.network
    state = network.state_dict()
    row_keys = {k for k in state if is_style_row_key(k)}
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
    bank.styles.append(StyleInfo(name=name, kind="learned", metadata=metadata or {}, painting=painting))


def promote_learned_styles(bank: StyleBank, bank_dir: Path | str, note: str | None = None) -> Path:
    """Save ``bank`` with its learned styles (rows already merged) as built-in styles, as a bank folder.

    The network is unchanged but for the new rows, so the saved bank keeps ``bank``'s network fingerprint
    and lists the weights files it grew from as compatible: styles users learned on ``bank`` still load.
    """
    styles = [
        dataclasses.replace(s, kind="builtin", metadata={**s.metadata, "promoted_from_learned": True})
        if s.kind == "learned"
        else s
        for s in bank.styles
    ]
    promoted = [s.name for s in bank.styles if s.kind == "learned"]
    entry = {"styles": promoted, "grew_from": bank.weights_sha256, **({"note": note} if note else {})}
    history = [*bank.provenance.get("promoted_styles", []), entry]
    return save_bank(
        bank_dir,
        bank.network,
        styles,
        provenance={**bank.provenance, "promoted_styles": history},
        compatible_weights_sha256=bank.compatible_fingerprints - {""},
    )


def remove_style(bank: StyleBank, name: str) -> None:
    """Drop a learned style's row from the loaded network (built-ins stay)."""
    index = bank.index(name)
    if bank.styles[index].kind != "learned":
        raise InvalidParameterError(f"style {name!r} is built in and cannot be removed")
    state = bank.network.state_dict()
    for key in [k for k in state if is_style_row_key(k)]:
        state[key] = torch.cat([state[key][:index], state[key][index + 1 :]])
    config = TransformerConfig.from_dict({**bank.config.to_dict(), "n_styles": bank.config.n_styles - 1})
    shrunk = TransformerNet(config).to(next(bank.network.parameters()).device)
    shrunk.load_state_dict(state)
    shrunk.eval().requires_grad_(False)
    bank.network, bank.config = shrunk, config
    del bank.styles[index]
