"""Where learned styles outlive a process: the local data dir (embedded mode) or Redis (fleet mode).

A learned style is a few KB: one gamma/beta row per norm layer, the fingerprint of
the bank it was fitted to, and its metadata. A store keeps them durably and has a
*version* that changes whenever the set changes, so a live bank can tell that it
is stale. `LocalStyleStore` keeps ``<data_dir>/styles/<name>.safetensors`` (one
process owns the dir); `app.fleet.RedisStyleStore` keeps them in Redis for every
replica and worker.
"""

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from app.errors import ConflictError
from model.bank import load_learned_style, remove_file_durably, save_learned_style, validate_style_name
from model.errors import BankFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnedStyle:
    name: str
    rows: dict[str, torch.Tensor]
    fingerprint: str  # SHA-256 of the base bank's weights the rows were fitted to
    metadata: dict[str, Any] = field(default_factory=dict)
    painting: bytes | None = field(default=None, repr=False)  # a JPEG thumbnail of the painting it was learned from


class StyleStore(Protocol):
    def prepare(self) -> None:
        """Get ready at start-up (e.g. clean up writes torn by a kill)."""
        ...

    def version(self) -> int:
        """A number that changes whenever a style is saved or deleted."""
        ...

    def load_all(self) -> tuple[int, list[LearnedStyle]]:
        """The version and every learned style, in a stable order."""
        ...

    def save(self, style: LearnedStyle) -> int:
        """Store ``style`` durably (`ConflictError` if the name is taken); returns the new version."""
        ...

    def delete(self, name: str) -> int:
        """Remove ``name`` durably (no error if absent); returns the new version."""
        ...

    def job_of(self, name: str) -> str | None:
        """The id of the job that learned ``name``, if it is stored (to reconcile jobs after a kill)."""
        ...

    def reserve_name(self, name: str) -> None:
        """Claim ``name`` for a learn job: `ConflictError` if it is stored or being learned already."""
        ...

    def release_name(self, name: str) -> None: ...


class LocalStyleStore:
    """``<styles_dir>/<name>.safetensors``, written atomically (temp file, fsync, rename, fsync dir)."""

    def __init__(self, styles_dir: Path) -> None:
        self.styles_dir = styles_dir
        self._version = 0
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # names being learned right now (one process owns the dir)

    def path(self, name: str) -> Path:
        path = self.styles_dir / f"{validate_style_name(name)}.safetensors"
        if path.resolve().parent != self.styles_dir.resolve():  # belt and braces: names are file names
            raise ConflictError(f"style name {name!r} does not map to a file inside the data dir")
        return path

    def prepare(self) -> None:
        self.styles_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.styles_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write torn by a kill; never loaded anyway

    def version(self) -> int:
        return self._version

    def load_all(self) -> tuple[int, list[LearnedStyle]]:
        styles = []
        for path in sorted(self.styles_dir.glob("*.safetensors")):
            try:
                parts = load_learned_style(path)
            except BankFormatError as exc:
                log.warning("skipping learned style %s: %s", path.name, exc)
                continue
            styles.append(LearnedStyle(*parts))
        return self._version, styles

    def save(self, style: LearnedStyle) -> int:
        with self._lock:
            path = self.path(style.name)
            if path.exists():
                raise ConflictError(f"a style named {style.name!r} already exists")
            save_learned_style(path, style.name, style.rows, style.fingerprint, style.metadata, style.painting)
            self._version += 1
            return self._version

    def delete(self, name: str) -> int:
        with self._lock:
            remove_file_durably(self.path(name))
            self._version += 1
            return self._version

    def job_of(self, name: str) -> str | None:
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            return load_learned_style(path)[3].get("job_id")
        except BankFormatError:
            return None

    def reserve_name(self, name: str) -> None:
        with self._lock:
            if self.path(name).exists():
                raise ConflictError(f"a style named {name!r} already exists; pick another name or DELETE it first")
            if name in self._pending:
                raise ConflictError(f"a style named {name!r} is being learned by another job")
            self._pending.add(name)

    def release_name(self, name: str) -> None:
        with self._lock:
            self._pending.discard(name)
