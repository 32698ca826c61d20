"""The live style bank: consistent snapshots for requests, locked changes for jobs.

`model.bank.add_learned_style` / `remove_style` replace ``bank.network`` and
edit ``bank.styles`` in place; every reader takes a `BankView` (network +
names, captured together under the lock) so a request never pairs a weight
vector with the wrong rows. Learned styles are persisted as
``<data_dir>/styles/<name>.safetensors`` before they join the bank.
"""

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.errors import ConflictError, NotFoundError
from model.bank import (
    StyleBank,
    StyleInfo,
    add_learned_style,
    load_learned_style,
    remove_style,
    save_learned_style,
    validate_style_name,
)
from model.errors import BankFormatError
from model.transformer import TransformerNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BankView:
    """What one request needs, captured atomically."""

    network: Any  # a TransformerNet, or its OnnxNetwork export with the onnx backend
    names: tuple[str, ...]
    device: torch.device


class StyleRegistry:
    def __init__(self, bank: StyleBank, styles_dir: Path,
                 make_runner: Callable[[TransformerNet], Any] | None = None) -> None:
        self._bank = bank
        self._styles_dir = styles_dir
        # Turns the torch network into what requests run (the onnx backend's export);
        # rebuilt lazily whenever the bank's network or style list changes.
        self._make_runner = make_runner
        self._runner_key: tuple | None = None
        self._runner: Any = None
        self._lock = threading.RLock()
        self._pending: set[str] = set()  # names being learned right now
        self._dtype = next(bank.network.parameters()).dtype
        self.listeners: list[Callable[[str], None]] = []  # called with a style name after it changes

    @property
    def fingerprint(self) -> str:
        return self._bank.fingerprint

    @property
    def device(self) -> torch.device:
        return next(self._bank.network.parameters()).device

    def view(self) -> BankView:
        with self._lock:
            network, names = self._bank.network, tuple(self._bank.style_names)
            if self._make_runner is None:
                return BankView(network, names, next(network.parameters()).device)
            key = (network, names)
            if self._runner_key is None or self._runner_key[0] is not network or self._runner_key[1] != names:
                self._runner = self._make_runner(network)
                self._runner_key = key
            return BankView(self._runner, names, self._runner.device)

    def styles(self) -> list[StyleInfo]:
        with self._lock:
            return [dataclasses.replace(s, metadata=dict(s.metadata)) for s in self._bank.styles]

    def info(self, name: str) -> StyleInfo:
        with self._lock:
            for style in self._bank.styles:
                if style.name == name:
                    return style
        raise NotFoundError(f"style {name!r} not found; GET /v1/styles lists the available styles")

    def snapshot(self) -> StyleBank:
        """A shallow copy of the bank that later changes do not touch (for learning against it)."""
        with self._lock:
            return dataclasses.replace(self._bank, styles=list(self._bank.styles))

    def learned_path(self, name: str) -> Path:
        path = self._styles_dir / f"{validate_style_name(name)}.safetensors"
        if path.resolve().parent != self._styles_dir.resolve():  # belt and braces: names are file names
            raise ConflictError(f"style name {name!r} does not map to a file inside the data dir")
        return path

    def reserve(self, name: str) -> None:
        """Claim ``name`` for a learn job: 409 if a style or another job already has it."""
        validate_style_name(name)
        with self._lock:
            if name in self._bank.style_names:
                raise ConflictError(f"a style named {name!r} already exists; pick another name or DELETE it first")
            if name in self._pending:
                raise ConflictError(f"a style named {name!r} is being learned by another job")
            self._pending.add(name)

    def release(self, name: str) -> None:
        with self._lock:
            self._pending.discard(name)

    def commit_learned(self, name: str, rows: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        """Persist a learned style (atomically), then make it usable at once."""
        with self._lock:
            path = self.learned_path(name)
            save_learned_style(path, name, rows, self._bank.fingerprint, metadata)
            try:
                add_learned_style(self._bank, name, rows, self._bank.fingerprint, metadata)
            except BankFormatError:
                path.unlink(missing_ok=True)
                raise
            self._bank.network.to(self._dtype)
            self._pending.discard(name)
        self._notify(name)

    def remove(self, name: str) -> None:
        with self._lock:
            style = self.info(name)
            if style.kind != "learned":
                raise ConflictError(f"style {name!r} is built into the checkpoint; only learned styles can be removed")
            remove_style(self._bank, name)
            self._bank.network.to(self._dtype)
            self.learned_path(name).unlink(missing_ok=True)
        self._notify(name)

    def merge_learned(self) -> None:
        """Add the learned styles found in the data dir (for a bank handed in already loaded)."""
        for path in sorted(self._styles_dir.glob("*.safetensors")):
            try:
                name, rows, fingerprint, metadata = load_learned_style(path)
                with self._lock:
                    if name not in self._bank.style_names:
                        add_learned_style(self._bank, name, rows, fingerprint, metadata)
                        self._bank.network.to(self._dtype)
            except BankFormatError as exc:
                log.warning("skipping learned style %s: %s", path, exc)

    def _notify(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)
