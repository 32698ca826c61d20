"""Process settings for torch's CPU memory, applied on import of `model` (before torch loads).

torch allocates every large CPU tensor with a fresh ``mmap``; the kernel then faults in and zeroes
each 4 KiB page on first touch, run after run. On the 2-core development VM that was half of an
eager 1024 px forward pass (798 ms, 2.1 M page faults; 386 ms and 0.17 M faults with huge pages).
``THP_MEM_ALLOC_ENABLE=1`` makes torch's CPU allocator align large blocks to 2 MiB and ask for
transparent huge pages (``madvise``), 512x fewer faults. It is read once, at torch's first
allocation, so it must be in the environment before ``import torch``; a value the user set wins.
(The onnx backend avoids the same cost with an onnxruntime memory arena, `model.onnx_backend`.)
"""

import os

DEFAULTS = {"THP_MEM_ALLOC_ENABLE": "1"}


def apply_defaults() -> None:
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
