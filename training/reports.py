"""What a person looks at during a run: sample grids and loss curves."""

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from model.transformer import TransformerNet


@torch.inference_mode()
def sample_grid(
    network: TransformerNet, photos: torch.Tensor, path: Path, blend_pairs: list[tuple[int, int]] | None = None
) -> Path:
    """Rows = photos; columns = the photo then every style (then optional 50/50 blends)."""
    was_training = network.training
    network.eval()
    n_styles = network.config.n_styles
    device = next(network.parameters()).device
    tiles = []
    for photo in photos:
        photo = photo.unsqueeze(0).to(device)
        tiles.append(photo[0].cpu())
        eye = torch.eye(n_styles, device=device)
        columns = [eye[i : i + 1] for i in range(n_styles)]
        for a, b in blend_pairs or []:
            columns.append(0.5 * (eye[a : a + 1] + eye[b : b + 1]))
        for weights in columns:
            tiles.append(network(photo, weights)[0].cpu())
    network.train(was_training)
    ncol = len(tiles) // len(photos)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(torch.stack(tiles), nrow=ncol, padding=2, pad_value=1.0), str(path))
    return path


def loss_plot(history: list[dict[str, float]], path: Path) -> Path | None:
    """Loss curves (log scale) of the logged steps; None when nothing is logged yet."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key in ("total", "style", "content", "tv"):
        if key in history[0]:
            ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
