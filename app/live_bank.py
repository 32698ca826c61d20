"""The live bank: one immutable snapshot (runner, styles, version), swapped whole.

Requests read ``live_bank.current`` (a plain attribute read, no lock) and keep
that snapshot for the whole request, so a weight vector always meets the rows it
was built for. A change -- a style learned or removed here, or a new store
version announced by another replica -- builds the *next* snapshot in the
calling thread (a job thread or a worker thread, never the event loop: the onnx
export takes about a second), after the store has been written, and then swaps
the reference. Builders are serialised by a lock readers never take.
"""

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.errors import ConflictError, NotFoundError
from app.style_store import LearnedStyle, StyleStore
from model.bank import StyleBank, StyleInfo, add_learned_style, remove_style, validate_style_name
from model.errors import BankFormatError
from model.runner import Runner
from model.transformer import TransformerNet

log = logging.getLogger(__name__)

MakeRunner = Callable[[TransformerNet], Runner]


@dataclass(frozen=True)
class BankSnapshot:
    """Everything one request needs, consistent with itself. Never mutated once built."""

    bank: StyleBank  # the torch network and its ordered styles (for learning, and the nearest blend)
    runner: Runner  # what the fast path runs (the torch network, or its onnx export)
    version: int  # the store version it reflects
    styles: tuple[StyleInfo, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(style.name for style in self.styles)

    @property
    def device(self) -> torch.device:
        return self.runner.device


def _copy(bank: StyleBank) -> StyleBank:
    """A shallow copy whose style list can grow or shrink; `add_learned_style` / `remove_style`
    replace its network with a new one, so the source snapshot's network is never touched."""
    return dataclasses.replace(bank, styles=list(bank.styles))


class LiveBank:
    def __init__(self, base: StyleBank, store: StyleStore, make_runner: MakeRunner) -> None:
        """``base``: the loaded checkpoint (on its device and dtype); learned styles come from ``store``.

        Builds the first snapshot (with the runner) here: call it off the event loop."""
        self._base = base
        self._store = store
        self._make_runner = make_runner
        parameter = next(base.network.parameters())
        self._device, self._dtype = parameter.device, parameter.dtype
        self._change_lock = threading.Lock()  # serialises builders; readers never take it
        self.listeners: list[Callable[[set[str]], None]] = []  # called with the names that changed
        version, learned = store.load_all()
        self.current: BankSnapshot = self._snapshot(self._with_learned(learned), version)

    # -- reading (plain attribute reads) ------------------------------------------------------------------------------

    def view(self) -> BankSnapshot:
        return self.current

    @property
    def fingerprint(self) -> str:
        return self._base.fingerprint

    @property
    def device(self) -> torch.device:
        return self.current.device

    def styles(self) -> list[StyleInfo]:
        return list(self.current.styles)

    def info(self, name: str) -> StyleInfo:
        for style in self.current.styles:
            if style.name == name:
                return style
        raise NotFoundError(f"style {name!r} not found; GET /v1/styles lists the available styles")

    # -- learning a style: reserve the name, then commit from the job's thread -----------------------------------------

    def reserve(self, name: str) -> None:
        """Claim ``name`` for a learn job: 409 if a style or another job already has it."""
        validate_style_name(name)
        if name in self.current.names:
            raise ConflictError(f"a style named {name!r} already exists; pick another name or DELETE it first")
        self._store.reserve_name(name)

    def release(self, name: str) -> None:
        self._store.release_name(name)

    def commit_learned(self, style: LearnedStyle) -> None:
        """Store ``style`` durably, then build and swap in the snapshot that serves it."""
        with self._change_lock:
            current = self.current
            if style.name in current.names:
                raise ConflictError(f"a style named {style.name!r} already exists")
            bank = _copy(current.bank)
            add_learned_style(bank, style.name, style.rows, style.fingerprint, style.metadata, style.painting)
            version = self._store.save(style)
            try:
                snapshot = self._snapshot(bank, version)
            except BaseException:
                self._store.delete(style.name)
                raise
            self._swap(snapshot, {style.name})

    def remove(self, name: str) -> None:
        """Delete a learned style from the store first, then serve the bank without it."""
        validate_style_name(name)
        with self._change_lock:
            style = self.info(name)
            if style.kind != "learned":
                raise ConflictError(f"style {name!r} is built into the checkpoint; only learned styles can be removed")
            version = self._store.delete(name)
            bank = _copy(self.current.bank)
            remove_style(bank, name)
            self._swap(self._snapshot(bank, version), {name})

    # -- following the store (fleet mode: other replicas change it) ---------------------------------------------------

    def refresh(self) -> bool:
        """Rebuild from the store if its version moved; True if a new snapshot was swapped in."""
        if self._store.version() == self.current.version:
            return False
        with self._change_lock:
            version, learned = self._store.load_all()
            if version == self.current.version:
                return False
            before = set(self.current.names)
            snapshot = self._snapshot(self._with_learned(learned), version)
            self._swap(snapshot, before ^ set(snapshot.names))
            return True

    # -- building ---------------------------------------------------------------------------------------------------

    def _with_learned(self, learned: list[LearnedStyle]) -> StyleBank:
        bank = _copy(self._base)
        for style in learned:
            if style.name in bank.style_names:
                # Already in a bank handed in with it, or since promoted to a built-in style of the checkpoint.
                if bank.styles[bank.index(style.name)].kind == "builtin":
                    log.warning(
                        "learned style %s is not served: the checkpoint has a built-in style of that name", style.name
                    )
                continue
            try:
                add_learned_style(bank, style.name, style.rows, style.fingerprint, style.metadata, style.painting)
            except BankFormatError as exc:
                log.warning("skipping learned style %s: %s", style.name, exc)
        return bank

    def _snapshot(self, bank: StyleBank, version: int) -> BankSnapshot:
        if bank.network is not self._base.network:
            bank.network.to(device=self._device, dtype=self._dtype)  # a new network: never one in use
        return BankSnapshot(
            bank=bank,
            runner=self._make_runner(bank.network),
            version=version,
            styles=tuple(dataclasses.replace(s, metadata=dict(s.metadata)) for s in bank.styles),
        )

    def _swap(self, snapshot: BankSnapshot, changed: set[str]) -> None:
        self.current = snapshot  # one reference assignment: readers see the old or the new snapshot
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # noqa: BLE001 - a listener (cache, gauge) must not undo a committed change
                log.exception("a live-bank listener failed")
