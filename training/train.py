"""Joint multi-style training of one CIN network (Dumoulin et al. 2017).

Runs the same on CPU, one GPU, or under ``torchrun`` (DistributedDataParallel).
Only the main process logs and writes files. Phases per step: draw a batch,
step, then (periodically) save state / write samples / write the bank.
"""

import logging
import math
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.bank import StyleInfo, load_bank, save_bank, sha256_file
from model.imageio import THUMBNAIL_SIDE, image_to_tensor, load_image_file, thumbnail_jpeg
from model.losses import target_grams
from model.transformer import TransformerConfig, TransformerNet
from model.vgg import load_vgg19
from training.config import TrainConfig
from training.data import (
    BatchPrefetcher,
    ContentCrops,
    list_content_images,
    list_style_images,
    load_images,
    photo_load_side,
    split_holdout,
    style_name_from_path,
)
from training.distributed import init_distributed, shutdown_distributed
from training.objective import transfer_loss
from training.reports import loss_plot, sample_grid
from training.state import load_state, save_state

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
DATA_THREADS = 4  # crop-making threads on a GPU (one on the CPU, whose cores the step itself uses)
BANK_DIR = "bank"


@dataclass
class TrainResult:
    bank_dir: Path
    step: int
    history: list[dict[str, float]]
    interrupted: bool
    is_main: bool = True  # False on the other torchrun ranks (they write nothing)


class _StopFlag:
    """Set by SIGINT/SIGTERM so the loop writes its state before exiting."""

    def __init__(self) -> None:
        self.stop = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.stop = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The RNG of one step on one rank: a pure function of (seed, rank, step)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1))


def style_names_for(config: TrainConfig, files: list[Path]) -> list[str]:
    return list(config.style_names) if config.style_names else [style_name_from_path(p) for p in files]


def train(
    config: TrainConfig, resume: bool = False, max_steps_this_run: int | None = None, show_progress: bool = True
) -> TrainResult:
    """Train (or resume) a bank as described by ``config``; returns where the bank is."""
    dist_info, device = init_distributed(config.device)
    out_dir = Path(config.out_dir)
    torch.manual_seed(config.seed)
    style_files = list_style_images(config.styles)
    names = style_names_for(config, style_files)
    if dist_info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        config.save(out_dir / "train_config.json")

    vgg = load_vgg19(config.vgg_source, device=device)
    layers = tuple(config.style_layers)
    grams = [
        target_grams(vgg, image_to_tensor(load_image_file(f, max_side=config.style_size)).to(device), layers)
        for f in style_files
    ]
    style_targets = {layer: torch.cat([g[layer] for g in grams]) for layer in layers}  # (n_styles, C, C)

    content_files = list_content_images(config.content_dir)
    train_files, holdout_files = split_holdout(content_files, config.holdout_fraction, config.seed)
    crops = ContentCrops(
        load_images(train_files, max_side=photo_load_side(config.image_size, config.resize_range)),
        config.image_size,
        config.resize_range,
    )
    sample_photos = _sample_photos(holdout_files or train_files, config.image_size)

    net_config = TransformerConfig(
        n_styles=len(style_files),
        channels=config.channels,
        n_residual=config.n_residual,
        outer_kernel=config.outer_kernel,
        residual_dilation=config.residual_dilation,
        decoder_channels=config.decoder_channels,
    )
    network = TransformerNet(net_config).to(device)
    if config.init_bank:
        new_rows = init_from_bank(network, load_bank(config.init_bank), names)
        if dist_info.is_main and new_rows:
            log.info("styles not in %s start from the mean of its rows: %s", config.init_bank, ", ".join(new_rows))
    optimizer = torch.optim.Adam(_param_groups(network, config), lr=config.lr)
    step, history = 0, []
    state_path = out_dir / STATE_FILE
    if resume and state_path.is_file():
        step, history = load_state(state_path, network, optimizer)
        # The config's rates win over the saved ones: ``--resume --lr`` lowers the rate for a final phase.
        for group, fresh in zip(optimizer.param_groups, _param_groups(network, config), strict=True):
            group["lr"] = fresh.get("lr", config.lr)
        if dist_info.is_main:
            log.info("resumed from %s at step %d", state_path, step)
    model = DistributedDataParallel(network) if dist_info.enabled else network
    network.train()

    weights = config.loss_weights
    last_state_time = time.monotonic()
    end_step = config.steps if max_steps_this_run is None else min(config.steps, step + max_steps_this_run)
    progress = tqdm(
        total=config.steps,
        initial=step,
        disable=not (dist_info.is_main and show_progress),
        dynamic_ncols=True,
        desc="train",
    )
    running: dict[str, torch.Tensor] = {}
    running_steps = 0
    interrupted = False
    started = time.monotonic()
    # Crops are made ahead in threads, and the loss terms stay on the device until a log point: on a GPU
    # both had the step wait for the host (the last H200 run was 12 % busy).
    prefetcher = BatchPrefetcher(
        crops,
        config.batch_size,
        lambda at: step_generator(config.seed, dist_info.rank, at),
        start=step,
        workers=DATA_THREADS if device.type == "cuda" else 1,
    )
    with _StopFlag() as flag, prefetcher:
        while step < end_step:
            batch, generator = prefetcher.next()
            content = batch.to(device, non_blocking=True)
            style_index = torch.randint(net_config.n_styles, (config.batch_size,), generator=generator).to(device)
            style_weights = torch.nn.functional.one_hot(style_index, net_config.n_styles).float()

            output = model(content, style_weights)
            loss, terms = transfer_loss(
                vgg,
                output,
                content,
                {l: style_targets[l][style_index] for l in layers},
                weights,
                layers,
                config.content_layer,
                as_tensors=True,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

            for key, value in terms.items():
                running[key] = running[key] + value if key in running else value
            running_steps += 1
            sampling = dist_info.is_main and (step % config.sample_every == 0 or step == end_step)
            saving = dist_info.is_main and (
                flag.stop or time.monotonic() - last_state_time > config.state_every_s or step == end_step
            )
            # The summed terms are read (one wait for the device) at log points and before anything is written,
            # and checked: a non-finite loss stops the run before its weights reach a bank or a state file.
            logging_now = step % config.log_every == 0 or step == end_step
            if logging_now or sampling or saving:
                sums = dict(zip(running, torch.stack(list(running.values())).tolist(), strict=True))
                if not all(math.isfinite(v) for v in sums.values()):
                    raise FloatingPointError(f"loss became non-finite by step {step}: {sums}")
            if logging_now:
                # Count the steps actually summed: a resumed run may start between log points.
                entry = {"step": step, **{k: v / running_steps for k, v in sums.items()}}
                history.append(entry)
                running, running_steps = {}, 0
                progress.set_postfix({k: f"{entry[k]:.3g}" for k in ("total", "style", "content")})
            progress.update(1)

            if dist_info.is_main:
                if sampling:
                    sample_grid(network, sample_photos, out_dir / "samples" / f"step_{step:06d}.png")
                    loss_plot(history, out_dir / "loss.png")
                    _write_bank(out_dir, network, names, style_files, config, step, time.monotonic() - started)
                if saving:
                    save_state(state_path, network, optimizer, step, history)
                    last_state_time = time.monotonic()
            if flag.stop:
                interrupted = True
                break
    progress.close()
    if dist_info.is_main and (step >= config.steps or interrupted):
        # An interrupted run leaves a usable bank at its last step, not only at the last sample.
        _write_bank(out_dir, network, names, style_files, config, step, time.monotonic() - started)
    shutdown_distributed()
    return TrainResult(
        bank_dir=out_dir / BANK_DIR, step=step, history=history, interrupted=interrupted, is_main=dist_info.is_main
    )


def init_from_bank(network: TransformerNet, bank, names: list[str]) -> list[str]:
    """Load ``bank``'s convolutions into ``network`` and its style rows by name.

    A style of ``names`` the bank does not have starts from the mean of the bank's
    rows (as add-style does), so a bank can grow by new paintings without training
    from scratch. Returns those new names. The architectures must match apart from
    the number of styles and the residual dilation (the same weights, spread wider)."""
    source = bank.network

    def shapes(config: TransformerConfig) -> dict:
        return {**config.to_dict(), "n_styles": 0, "residual_dilation": 1}

    if shapes(source.config) != shapes(network.config):
        raise ValueError(f"--init-bank {bank.path} has another architecture: {source.config} vs {network.config}")
    index = {name: i for i, name in enumerate(bank.style_names)}
    new_names = [name for name in names if name not in index]
    state = {}
    for key, value in source.state_dict().items():
        if key.endswith((".gamma", ".beta")):
            mean = value.mean(dim=0)
            value = torch.stack([value[index[name]] if name in index else mean for name in names])
        state[key] = value
    network.load_state_dict(state)
    return new_names


def machine_description() -> dict[str, str | int | None]:
    """Where a bank was trained, for its manifest."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _param_groups(network: TransformerNet, config: TrainConfig) -> list[dict]:
    """Shared weights at ``lr``; the per-style gamma/beta rows at ``lr * style_lr_scale``."""
    style_rows = [p for norm in network.norm_layers() for p in (norm.gamma, norm.beta)]
    ids = {id(p) for p in style_rows}
    shared = [p for p in network.parameters() if id(p) not in ids]
    return [{"params": shared}, {"params": style_rows, "lr": config.lr * config.style_lr_scale}]


def _sample_photos(files: list[Path], size: int, count: int = 4) -> torch.Tensor:
    from torchvision.transforms import v2

    prepare = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    return torch.stack([prepare(image_to_tensor(load_image_file(f))[0]) for f in files[:count]])


def _write_bank(
    out_dir: Path,
    network: TransformerNet,
    names: list[str],
    style_files: list[Path],
    config: TrainConfig,
    step: int,
    seconds: float,
) -> None:
    styles = [
        StyleInfo(
            name=name,
            metadata={
                "source_file": path.name,
                "source_sha256": sha256_file(path),
                "training_steps": step,
                "loss_weights": config.loss_weights.to_dict(),
                "resize_range": list(config.resize_range) if config.resize_range else None,
            },
            painting=thumbnail_jpeg(load_image_file(path, max_side=4 * THUMBNAIL_SIDE)),  # the gallery's card
        )
        for name, path in zip(names, style_files, strict=True)
    ]
    provenance = {
        "trainer": "cinstyle train",
        "steps": step,
        "train_config": config.to_dict(),
        "seconds_this_run": round(seconds, 1),
        "torch": torch.__version__,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": machine_description(),
    }
    save_bank(out_dir / BANK_DIR, network, styles, provenance)
