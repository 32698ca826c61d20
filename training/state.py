"""Resumable training state (network, optimizer, step, loss history) without pickle.

Tensors go to safetensors; the optimizer's non-tensor structure and the step
go to its JSON header. Written to a temp file and renamed.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from model.bank import _atomic_save_safetensors
from model.errors import BankFormatError

STATE_FORMAT = "cinstyle-train-state"


def save_state(
    path: Path,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> None:
    tensors = {f"net.{k}": v for k, v in network.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in opt_state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"opt.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    header = {
        "format": STATE_FORMAT,
        "step": str(step),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "opt_scalars": json.dumps(scalars),
        "history": json.dumps(history),
        "extra": json.dumps(extra or {}),
    }
    _atomic_save_safetensors(tensors, path, metadata=header)


def load_state(
    path: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, float]]]:
    """Restore network and optimizer in place; returns (step, history)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - anything unreadable is a format error
        raise BankFormatError(f"{path} is not a readable training state file: {exc}") from exc
    if header.get("format") != STATE_FORMAT:
        raise BankFormatError(f"{path} is not a {STATE_FORMAT} file")
    device = next(network.parameters()).device
    network.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value.to(device) if slot != "step" else value
    for index, slots in json.loads(header["opt_scalars"]).items():
        state.setdefault(int(index), {}).update(slots)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["param_groups"])})
    return int(header["step"]), json.loads(header["history"])
